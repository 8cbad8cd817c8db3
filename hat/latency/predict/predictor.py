"""HAT's latency predictor: a 5-Linear MLP on 10 normalised architecture features, and its files.

Network (state-dict compatible with HAT's ``.pt`` files): ``first_layer`` Linear(10,400)+ReLU,
``layers.{0,1,2}`` 3 x [Linear(400,400)+ReLU], ``predict`` Linear(400,1). Inputs are divided by
``feature_norm``; the output times ``lat_norm`` is the predicted encoder+decoder latency in ms.
A predictor may add a least-squares model of analytic cost terms (stored beside the network,
key ``cost.coef``) and combine several networks. Inference runs in numpy/torch (float32),
batched. Training recipes are in :mod:`hat.latency.predict.fit`, metrics and plots in
:mod:`hat.latency.predict.report`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hat.atomic import atomic_torch_save, atomic_write_json
from hat.errors import HatConfigError
from hat.latency.csvio import N_FEATURES
from hat.latency.predict.costterms import COST_TERMS, cost_terms

FEATURE_NORM: tuple[float, ...] = (640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2)


SIDECAR_SUFFIX = ".json"


COST_KEY = "cost.coef"  # cost-term coefficients (ms) inside a saved predictor


_CHUNK = 2048


_SMALL = 16


class PredictorError(HatConfigError):
    """A predictor file or its normalisation settings are unusable."""


class NotAPredictorError(PredictorError):
    """A readable model checkpoint of another kind (``arch`` says which) given as a predictor."""

    def __init__(self, message: str, arch: str) -> None:
        super().__init__(message)
        self.arch = arch

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (str(self), self.arch)


def not_a_predictor(path: Path) -> NotAPredictorError | None:
    """When ``path`` (which is no plain state dict) is a fairseq/HAT model checkpoint: the error
    saying so and what it is; else None. Read with the checkpoint reader that runs no code."""
    from hat.checkpoint import checkpoint_args, read_checkpoint

    try:
        arch = str(checkpoint_args(read_checkpoint(path), path).arch)
    except Exception:  # noqa: BLE001 - not a model checkpoint either: the caller's error stands
        return None
    if arch.startswith("transformersuper"):
        kind = "a SuperTransformer training checkpoint"
    elif arch == "hat_subtransformer":
        kind = "a standalone SubTransformer exported by hat.export"
    else:
        kind = "a fairseq model checkpoint"
    return NotAPredictorError(
        f"{path}: not a latency predictor: it is {kind} (arch {arch}, with fairseq's training "
        "arguments); a latency predictor is the small state dict that latency_predictor.py "
        f"writes (with its {SIDECAR_SUFFIX} sidecar)", arch)


def _torch_load_problem(e: Exception) -> str:
    """torch.load's weights-only refusal in a few words (its advice to turn off weights_only
    is not for predictors: they are plain state dicts)."""
    text = str(e)
    marker = "Unsupported global: GLOBAL "
    if marker in text:
        name = text.split(marker, 1)[1].split(" ", 1)[0]
        return f"its pickle holds {name}, which a predictor's plain state dict of tensors has not"
    return text.splitlines()[0] if text else type(e).__name__


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


class LatencyPredictor:
    """One or more HAT MLPs (averaged) plus their normalisation; predicts milliseconds.

    Optionally plus a linear model on analytic cost terms (``cost_coef``, ms per term of
    :func:`hat.latency.predict.costterms.cost_terms`), which the few-shot fits use; a predictor may
    also be that linear model alone (no members).
    """

    def __init__(self, members: Sequence[dict[str, Any]], feature_norm: Sequence[float],
                 lat_norm: float, meta: dict[str, Any] | None = None,
                 cost_coef: Sequence[float] | np.ndarray | None = None) -> None:
        if not members and cost_coef is None:
            raise PredictorError("a predictor needs at least one member network or cost terms")
        self.feature_norm, self.lat_norm = check_norms(feature_norm, lat_norm)
        self.meta: dict[str, Any] = dict(meta or {})
        self.members = [
            {k: _to_numpy(v) for k, v in m.items()} for m in members
        ]
        for i, m in enumerate(self.members):
            check_state_dict(m, f"member {i}")
        self.cost_coef: np.ndarray | None = None
        if cost_coef is not None:
            c = _to_numpy(cost_coef).reshape(-1)
            if c.shape[0] != len(COST_TERMS) or not np.all(np.isfinite(c)):
                raise PredictorError(
                    f"cost coefficients must be {len(COST_TERMS)} finite numbers "
                    f"({', '.join(COST_TERMS)}), got shape {c.shape}")
            self.cost_coef = c
        self.threads = 1
        self._compile()

    @property
    def deployment(self) -> str:
        """Which decode its latencies are for (``lat-deployment``, see
        :data:`hat.latency.measure.timing.DEPLOYMENTS`): its dataset's, else HAT's protocol (HAT's
        files and datasets measured before the key existed)."""
        proto = (self.meta.get("dataset") or {}).get("protocol") or {}
        return str(proto.get("deployment", "hat"))

    def _compile(self) -> None:
        inv = (1.0 / self.feature_norm).astype(np.float32)
        self._packed = []
        for m in self.members:
            n_hidden = len([k for k in m if k.startswith("layers.") and k.endswith(".weight")])
            ws = [m["first_layer.weight"].T * inv[:, None]]  # fold 1/feature_norm in
            ws += [m[f"layers.{i}.weight"].T for i in range(n_hidden)]
            bs = [m["first_layer.bias"]] + [m[f"layers.{i}.bias"] for i in range(n_hidden)]
            wp = m["predict.weight"].T * self.lat_norm  # fold lat_norm in
            bp = m["predict.bias"] * self.lat_norm
            self._packed.append((
                [_f32(w) for w in ws], [_f32(b) for b in bs], _f32(wp), _f32(bp),
            ))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) for raw (un-normalised) features, [N,10] -> [N] (float64).

        Runs in float32 on ``self.threads`` torch threads (default 1: robust on shared CPUs),
        in chunks of 2048 rows (numpy for <= 16 rows); ensemble members are averaged.
        """
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(f"features must have shape [N, {N_FEATURES}], got {x.shape}")
        out = self._predict_mlp(x) if self.members else np.zeros(x.shape[0])
        if self.cost_coef is not None:
            terms = cost_terms(np.asarray(features, np.float64).reshape(x.shape))
            out = out + terms @ self.cost_coef
        return out

    def _predict_mlp(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] <= _SMALL:  # tiny batches: numpy has less per-call overhead than torch
            acc = np.zeros(x.shape[0], dtype=np.float64)
            for ws, bs, wp, bp in self._packed:
                h = x
                for w, b in zip(ws, bs):
                    h = h @ w.numpy()
                    h += b.numpy()
                    np.maximum(h, 0, out=h)
                acc += (h @ wp.numpy())[:, 0] + bp.numpy()[0]
            return acc / len(self._packed)
        xt = torch.from_numpy(np.ascontiguousarray(x))
        out = torch.empty(x.shape[0], dtype=torch.float64)
        with torch_threads(self.threads), torch.inference_mode():
            for s in range(0, x.shape[0], _CHUNK):
                xc = xt[s:s + _CHUNK]
                acc = torch.zeros(xc.shape[0], dtype=torch.float64)
                for ws, bs, wp, bp in self._packed:
                    h = xc
                    for w, b in zip(ws, bs):
                        h = torch.addmm(b, h, w).clamp_(min=0)
                    acc += torch.addmm(bp, h, wp)[:, 0]
                out[s:s + _CHUNK] = acc / len(self._packed)
        return out.numpy()

    def predict_one(self, features: Sequence[float]) -> float:
        """Predicted latency (ms) for one feature vector."""
        return float(self.predict(np.asarray(features, dtype=np.float32)[None, :])[0])

    def state_dict(self, member: int = 0) -> dict[str, torch.Tensor]:
        """HAT-compatible plain state dict of one member."""
        if not 0 <= member < len(self.members):
            raise PredictorError(f"no member network {member} (this predictor has "
                                 f"{len(self.members)})")
        m = self.members[member]
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in m.items()}

    # ----- save / load --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Save member 0 as a plain HAT state dict at ``path`` (HAT's code can load it), any
        further ensemble members at ``<path>.members.pt``, and a JSON sidecar ``<path>.json``
        with feature_norm / lat_norm / recipe / metrics. All writes are atomic.

        Cost-term coefficients go into ``path`` too (key ``cost.coef``): HAT's strict loading
        then refuses the file instead of silently predicting only the MLP part."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = self.state_dict(0) if self.members else {}
        if self.cost_coef is not None:
            sd[COST_KEY] = torch.from_numpy(self.cost_coef.copy())
        atomic_torch_save(sd, path)
        extra = Path(str(path) + ".members.pt")
        if len(self.members) > 1:
            atomic_torch_save([self.state_dict(i) for i in range(1, len(self.members))], extra)
        elif extra.exists():
            extra.unlink()
        side = {
            "format": "hat-latency-predictor",
            "version": 1,
            "feature_norm": self.feature_norm.tolist(),
            "lat_norm": self.lat_norm,
            "n_members": len(self.members),
            "cost_terms": list(COST_TERMS) if self.cost_coef is not None else None,
            "meta": self.meta,
        }
        atomic_write_json(sidecar_path(path), side, indent=2)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, feature_norm: Sequence[float] | None = None,
             lat_norm: float | None = None) -> LatencyPredictor:
        """Load our checkpoint (plain state dict + sidecar) or one of HAT's plain ``.pt`` files.

        Without a sidecar, ``lat_norm`` must be given (``feature_norm`` defaults to HAT's). With
        a sidecar, given norms must agree with the stored ones.
        """
        path = Path(path)
        if not path.is_file():
            raise PredictorError(f"{path}: predictor file not found")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
            other = not_a_predictor(path)
            if other is not None:
                raise other from None
            raise PredictorError(f"{path}: cannot read predictor file "
                                 f"({_torch_load_problem(e)})") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        cost_coef = None
        if isinstance(sd, dict) and COST_KEY in sd:
            sd = dict(sd)
            cost_coef = sd.pop(COST_KEY)
        members = []
        if cost_coef is None or sd:
            check_state_dict(sd, str(path))
            members = [sd]
        side_path = sidecar_path(path)
        meta: dict[str, Any] = {}
        if side_path.is_file():
            try:
                side = json.loads(side_path.read_text())
                fn_s, ln_s = side["feature_norm"], side["lat_norm"]
            except (ValueError, KeyError) as e:
                raise PredictorError(f"{side_path}: unreadable predictor sidecar ({e})") from None
            fn_s, ln_s = check_norms(fn_s, ln_s, str(side_path))
            if feature_norm is not None:
                fn, _ = check_norms(feature_norm, 1.0)
                if not np.allclose(fn, fn_s):
                    raise PredictorError(
                        f"{path}: stored feature_norm {fn_s.tolist()} (in {side_path.name}) "
                        f"disagrees with the configured feature-norm {fn.tolist()}"
                    )
            if lat_norm is not None:
                _, ln = check_norms(FEATURE_NORM, lat_norm)
                if not math.isclose(ln, ln_s, rel_tol=1e-9):
                    raise PredictorError(
                        f"{path}: stored lat_norm {ln_s} (in {side_path.name}) disagrees with "
                        f"the configured lat-norm {ln}"
                    )
            feature_norm, lat_norm = fn_s, ln_s
            terms = side.get("cost_terms")
            if cost_coef is not None and terms is not None and list(terms) != list(COST_TERMS):
                raise PredictorError(
                    f"{path}: written with cost terms {terms}, this version has "
                    f"{list(COST_TERMS)}; refit the predictor")
            meta = dict(side.get("meta") or {})
            n_members = int(side.get("n_members", 1))
            if n_members > 1:
                extra_path = Path(str(path) + ".members.pt")
                if not extra_path.is_file():
                    raise PredictorError(
                        f"{path}: sidecar lists {n_members} members but {extra_path} is missing"
                    )
                extra = torch.load(extra_path, map_location="cpu", weights_only=True)
                for i, m in enumerate(extra):
                    check_state_dict(m, f"{extra_path} (member {i + 1})")
                members += list(extra)
        elif lat_norm is None:
            raise PredictorError(
                f"{path}: a plain state dict without a {side_path.name} sidecar needs lat-norm "
                "(e.g. 200 TITAN Xp, 300 Xeon, 5000 Raspberry Pi)"
            )
        if feature_norm is None:
            feature_norm = FEATURE_NORM
        try:
            return cls(members, feature_norm, lat_norm, meta, cost_coef=cost_coef)
        except PredictorError as e:
            raise PredictorError(f"{path}: {e}") from None


def combine_predictors(parts: Sequence[tuple[float, LatencyPredictor]], bias_ms: float = 0.0,
                       meta: dict[str, Any] | None = None) -> LatencyPredictor:
    """One predictor computing ``sum(w * p(x)) + bias_ms`` exactly: the parts' member networks
    (output layers rescaled so that their plain mean is the weighted sum) and cost terms.
    The parts must share ``feature_norm``; the first part's ``lat_norm`` is kept."""
    if not parts:
        raise ValueError("combine_predictors needs at least one part")
    fn, ln = parts[0][1].feature_norm, parts[0][1].lat_norm
    n_total = sum(len(p.members) for _, p in parts)
    members: list[dict[str, np.ndarray]] = []
    coef: np.ndarray | None = None
    for w, p in parts:
        if not np.allclose(p.feature_norm, fn):
            raise ValueError("combined predictors need the same feature_norm")
        k = w * n_total / max(1, len(p.members)) * p.lat_norm / ln
        for m in p.members:
            m2 = {key: v.copy() for key, v in m.items()}
            m2["predict.weight"] = k * m["predict.weight"]
            m2["predict.bias"] = k * m["predict.bias"]
            members.append(m2)
        if p.cost_coef is not None:
            coef = w * p.cost_coef + (0.0 if coef is None else coef)
    if bias_ms:
        if coef is not None:
            coef = coef.copy()
            coef[COST_TERMS.index("constant")] += bias_ms
        else:
            for m in members:
                m["predict.bias"] = m["predict.bias"] + bias_ms / ln
    return LatencyPredictor(members, fn, ln, meta, cost_coef=coef)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``foo.pt`` -> ``foo.pt.json``."""
    return Path(str(path) + SIDECAR_SUFFIX)


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


def check_predictor_file(path: str | os.PathLike) -> None:
    """Raise :class:`PredictorError` unless ``path`` holds a HAT-shaped predictor state dict."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise PredictorError(f"{path}: cannot read predictor file ({e})") from None
    check_state_dict(sd, str(path))
