"""HAT's latency-predictor network and its checks: the 5-Linear MLP (state-dict compatible with
HAT's ``.pt`` files), the expected state-dict shapes, the ``feature-norm`` / ``lat-norm``
validation, and small tensor helpers that :mod:`hat.latency.predict.predictor` and the fits use.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hat.errors import HatConfigError
from hat.latency.csvio import N_FEATURES

FEATURE_NORM: tuple[float, ...] = (640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2)


class PredictorError(HatConfigError):
    """A predictor file or its normalisation settings are unusable."""


class LatencyMLP(nn.Module):
    """HAT's predictor network (same module names, so HAT state dicts load)."""

    def __init__(self, feature_dim: int = N_FEATURES, hidden_dim: int = 400,
                 hidden_layer_num: int = 3) -> None:
        super().__init__()
        self.first_layer = nn.Linear(feature_dim, hidden_dim)
        self.layers = nn.ModuleList(
            nn.Linear(hidden_dim, hidden_dim) for _ in range(hidden_layer_num)
        )
        self.predict = nn.Linear(hidden_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.first_layer(x))
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.predict(x)


def expected_shapes(feature_dim: int = N_FEATURES, hidden_dim: int = 400,
                    hidden_layer_num: int = 3) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape for the given architecture."""
    shapes: dict[str, tuple[int, ...]] = {
        "first_layer.weight": (hidden_dim, feature_dim),
        "first_layer.bias": (hidden_dim,),
    }
    for i in range(hidden_layer_num):
        shapes[f"layers.{i}.weight"] = (hidden_dim, hidden_dim)
        shapes[f"layers.{i}.bias"] = (hidden_dim,)
    shapes["predict.weight"] = (1, hidden_dim)
    shapes["predict.bias"] = (1,)
    return shapes


def check_state_dict(sd: dict[str, Any], source: str, hidden_dim: int | None = None,
                     hidden_layer_num: int | None = None) -> None:
    """Raise :class:`PredictorError` naming file, key and expected/found shape on a mismatch."""
    if not isinstance(sd, dict):
        raise PredictorError(f"{source}: expected a state dict, found {type(sd).__name__}")
    if "first_layer.weight" not in sd:
        raise PredictorError(
            f"{source}: missing key 'first_layer.weight' (keys found: {sorted(sd)[:8]})"
        )
    hid = hidden_dim or int(sd["first_layer.weight"].shape[0])
    nl = hidden_layer_num
    if nl is None:
        nl = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    want = expected_shapes(N_FEATURES, hid, nl)
    for key, shape in want.items():
        if key not in sd:
            raise PredictorError(f"{source}: missing key {key!r} (expected shape {shape})")
        found = tuple(sd[key].shape)
        if found != shape:
            raise PredictorError(
                f"{source}: key {key!r} has shape {found}, expected {shape}"
            )
    extra = sorted(set(sd) - set(want))
    if extra:
        raise PredictorError(f"{source}: unexpected key(s) {extra} for a {nl}-hidden-layer MLP")


def check_norms(feature_norm: Sequence[float], lat_norm: float,
                source: str | None = None) -> tuple[np.ndarray, float]:
    """Validate HAT's ``feature-norm`` (10 positive numbers) and ``lat-norm`` (> 0)."""
    pre = f"{source}: " if source else ""
    fn = np.asarray(list(feature_norm), dtype=np.float64).reshape(-1)
    if fn.shape[0] != N_FEATURES:
        raise PredictorError(
            f"{pre}feature-norm must have {N_FEATURES} values (one per feature), got {fn.shape[0]}"
        )
    if not np.all(np.isfinite(fn)) or np.any(fn <= 0):
        raise PredictorError(f"{pre}feature-norm values must be finite and > 0, got {fn.tolist()}")
    try:
        ln = float(lat_norm)
    except (TypeError, ValueError):
        raise PredictorError(f"{pre}lat-norm must be a number > 0, got {lat_norm!r}") from None
    if not math.isfinite(ln) or ln <= 0:
        raise PredictorError(f"{pre}lat-norm must be > 0, got {lat_norm!r}")
    return fn, ln


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _to_numpy(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch ops on ``n`` threads. The predictor's matmuls are small: one thread is about as
    fast, and avoids a 10-50x slow-down from OpenMP spinning when the CPU is shared."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
