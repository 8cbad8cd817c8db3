"""HAT's latency predictor: a 5-Linear MLP on 10 normalised architecture features, and its files.

Network (state-dict compatible with HAT's ``.pt`` files): ``first_layer`` Linear(10,400)+ReLU,
``layers.{0,1,2}`` 3 x [Linear(400,400)+ReLU], ``predict`` Linear(400,1). Inputs are divided by
``feature_norm``; the output times ``lat_norm`` is the predicted encoder+decoder latency in ms.
A predictor may add a least-squares model of analytic cost terms (stored beside the network,
key ``cost.coef``) and combine several networks. Inference runs in numpy/torch (float32),
batched. Training recipes are in :mod:`hat.latency.predict.fit`, metrics and plots in
:mod:`hat.latency.predict.report`. The network and its checks are in
:mod:`hat.latency.predict.network`, the files (save/load, sidecar) in
:mod:`hat.latency.predict.predictor_file`; their names are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hat.latency.csvio import N_FEATURES
from hat.latency.predict.costterms import COST_TERMS, cost_terms
from hat.latency.predict.network import (
    FEATURE_NORM,
    LatencyMLP,
    PredictorError,
    _f32,
    _to_numpy,
    check_norms,
    check_state_dict,
    expected_shapes,
    torch_threads,
)
from hat.latency.predict.predictor_file import (
    COST_KEY,
    SIDECAR_SUFFIX,
    NotAPredictorError,
    check_predictor_file,
    load_predictor,
    not_a_predictor,
    save_predictor,
    sidecar_path,
)

__all__ = [
    "COST_KEY", "FEATURE_NORM", "SIDECAR_SUFFIX", "LatencyMLP", "LatencyPredictor",
    "NotAPredictorError", "PredictorError", "check_norms", "check_predictor_file",
    "check_state_dict", "combine_predictors", "expected_shapes", "load_predictor",
    "not_a_predictor", "save_predictor", "sidecar_path", "torch_threads",
]

_CHUNK = 2048


_SMALL = 16


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

    # ----- save / load (in :mod:`hat.latency.predict.predictor_file`) ------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Save as a plain HAT state dict plus sidecar: see
        :func:`~hat.latency.predict.predictor_file.save_predictor`."""
        return save_predictor(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, feature_norm: Sequence[float] | None = None,
             lat_norm: float | None = None) -> LatencyPredictor:
        """Load our checkpoint (plain state dict + sidecar) or one of HAT's plain ``.pt`` files:
        see :func:`~hat.latency.predict.predictor_file.load_predictor`."""
        return load_predictor(cls, path, feature_norm, lat_norm)


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
