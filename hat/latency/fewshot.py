"""Few-shot latency predictor for new hardware: a few measured rows on top of another device's
predictor.

Candidates, all expressible as a plain HAT MLP (so the result saves/loads like any predictor):

- ``scale``: ``y = a * src(x)`` (one number; folded into the output layer),
- ``affine``: ``y = a * src(x) + b`` (folded into the output layer),
- ``finetune``: the affine model, then all layers fine-tuned on the rows (relative-error loss,
  a pull towards the starting weights, fixed small step count).
- ``components`` (needs the other device's *dataset*): separate encoder and decoder predictors of
  that device, combined as ``y = a * enc(x) + b * dec(x) + c``: devices differ most in how they
  split the time between encoder and decoder (an ensemble of the two networks' members).

The candidate is chosen by K-fold cross-validation on the given rows only (mean squared relative
error), then refitted on all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from hat.latency.predictor import (
    LatencyMLP,
    LatencyPredictor,
    Recipe,
    torch_threads,
    train_predictor,
)

METHODS: tuple[str, ...] = ("scale", "affine", "finetune")
DATA_METHODS: tuple[str, ...] = ("components",)
MIN_ROWS = 5


def _fit_affine(s: np.ndarray, y: np.ndarray, with_bias: bool) -> tuple[float, float]:
    """Least squares on relative error: minimise sum(((a*s + b - y) / y)^2)."""
    if with_bias:
        a_mat = np.c_[s / y, 1.0 / y]
        (a, b), *_ = np.linalg.lstsq(a_mat, np.ones_like(y), rcond=None)
        if a > 0:
            return float(a), float(b)
    a = float(np.sum(s / y) / np.sum((s / y) ** 2))
    return a, 0.0


def _affine_members(src: LatencyPredictor, a: float, b: float) -> list[dict[str, np.ndarray]]:
    out = []
    for m in src.members:
        m2 = {k: v.copy() for k, v in m.items()}
        m2["predict.weight"] = a * m["predict.weight"]
        m2["predict.bias"] = a * m["predict.bias"] + b / src.lat_norm
        out.append(m2)
    return out


def _finetune(src: LatencyPredictor, members: list[dict[str, np.ndarray]], x: np.ndarray,
              y: np.ndarray, seed: int, steps: int = 200, lr: float = 1e-4,
              pull: float = 1e-2) -> list[dict[str, np.ndarray]]:
    """Full-batch fine-tuning of each member on relative error, L2 pull to the start weights."""
    torch.manual_seed(seed)
    xt = torch.tensor(x / src.feature_norm, dtype=torch.float32)
    yt = torch.tensor(y / src.lat_norm, dtype=torch.float32)[:, None]
    out = []
    for m in members:
        n_hidden = len([k for k in m if k.startswith("layers.") and k.endswith(".weight")])
        net = LatencyMLP(hidden_dim=m["first_layer.weight"].shape[0], hidden_layer_num=n_hidden)
        net.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in m.items()})
        start = [p.detach().clone() for p in net.parameters()]
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(steps):
            loss = (((net(xt) - yt) / yt) ** 2).mean()
            loss = loss + pull * sum(((p - q) ** 2).sum() for p, q in zip(net.parameters(), start))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out.append({k: v.detach().double().numpy().copy() for k, v in net.state_dict().items()})
    return out


def component_predictors(features: np.ndarray, enc_ms: np.ndarray, dec_ms: np.ndarray,
                          lat_norm: float, seed: int = 1, recipe: str | Recipe = "default",
                          ) -> tuple[LatencyPredictor, LatencyPredictor]:
    """Encoder and decoder latency predictors of another device, trained on its whole dataset
    (10 % of the rows choose the checkpoint)."""
    perm = np.random.default_rng(seed).permutation(len(enc_ms))
    n_val = max(1, len(perm) // 10)
    tr, va = perm[n_val:], perm[:n_val]
    return tuple(  # type: ignore[return-value]
        train_predictor(features, target, tr, va, recipe, lat_norm=lat_norm, seed=seed)
        for target in (np.asarray(enc_ms, np.float64), np.asarray(dec_ms, np.float64)))


def _fit_components(parts: tuple[LatencyPredictor, LatencyPredictor], x: np.ndarray,
                    y: np.ndarray) -> LatencyPredictor:
    enc, dec = parts
    if len(enc.members) != len(dec.members) or enc.lat_norm != dec.lat_norm:
        raise ValueError("encoder and decoder predictors need the same members and lat-norm")
    e, d = enc.predict(x), dec.predict(x)
    a_mat = np.c_[e / y, d / y, 1.0 / y]  # relative least squares
    (a, b, c), *_ = np.linalg.lstsq(a_mat, np.ones_like(y), rcond=None)
    if a <= 0 or b <= 0:  # a negative share of a component is not physical: one scale each
        (a, b), *_ = np.linalg.lstsq(a_mat[:, :2], np.ones_like(y), rcond=None)
        a, b, c = max(float(a), 0.0), max(float(b), 0.0), 0.0
    k = len(enc.members)
    members = []
    for m, scale, bias in ([(m, a, 0.0) for m in enc.members]
                           + [(m, b, c) for m in dec.members]):
        m2 = {key: v.copy() for key, v in m.items()}
        m2["predict.weight"] = 2 * scale * m["predict.weight"]  # mean of 2k members
        m2["predict.bias"] = 2 * scale * m["predict.bias"] + 2 * bias / enc.lat_norm
        members.append(m2)
    meta = {"method": "components", "a_encoder": float(a), "b_decoder": float(b),
            "c_ms": float(c), "n_rows": int(len(y)), "members_per_component": k,
            "source_meta": enc.meta}
    return LatencyPredictor(members, enc.feature_norm, enc.lat_norm, meta)


def _fit(method: str, src: LatencyPredictor | None, x: np.ndarray, y: np.ndarray,
         seed: int, parts: tuple[LatencyPredictor, LatencyPredictor] | None = None,
         ) -> LatencyPredictor:
    if method == "components":
        if parts is None:
            raise ValueError("few-shot method 'components' needs the other device's dataset")
        return _fit_components(parts, x, y)
    if src is None:
        raise ValueError(f"few-shot method {method!r} needs the other device's predictor")
    s = src.predict(x)
    a, b = _fit_affine(s, y, with_bias=method != "scale")
    members = _affine_members(src, a, b)
    if method == "finetune":
        with torch_threads(1):
            members = _finetune(src, members, x, y, seed)
    meta = {"method": method, "a": a, "b_ms": b, "n_rows": int(len(y)),
            "source_meta": src.meta}
    return LatencyPredictor(members, src.feature_norm, src.lat_norm, meta)


def cv_errors(src: LatencyPredictor | None, x: np.ndarray, y: np.ndarray,
              methods: Sequence[str], folds: int = 5, seed: int = 1,
              parts: tuple[LatencyPredictor, LatencyPredictor] | None = None,
              ) -> dict[str, float]:
    """K-fold mean squared relative error of each candidate on the given rows."""
    perm = np.random.default_rng(seed).permutation(len(y))
    chunks = np.array_split(perm, min(folds, len(y)))
    errs: dict[str, float] = {}
    for method in methods:
        se = []
        for k, held in enumerate(chunks):
            fit_idx = np.concatenate([c for j, c in enumerate(chunks) if j != k])
            pred = _fit(method, src, x[fit_idx], y[fit_idx], seed + k, parts).predict(x[held])
            se.append(((pred - y[held]) / y[held]) ** 2)
        errs[method] = float(np.mean(np.concatenate(se)))
    return errs


def fit_fewshot(source: LatencyPredictor | None, features: np.ndarray, latency_ms: np.ndarray,
                seed: int = 1, methods: Sequence[str] | None = None,
                method: str | None = None,
                components: tuple[LatencyPredictor, LatencyPredictor] | None = None,
                ) -> LatencyPredictor:
    """Fit a predictor for new hardware from a few measured rows on top of ``source`` (another
    device's predictor) and/or ``components`` (its encoder and decoder predictors, see
    :func:`component_predictors`).

    ``method`` forces a candidate; otherwise the one with the lowest cross-validated relative
    error on the rows is used (its CV errors are kept in ``meta['cv_mse_rel']``).
    """
    if methods is None:
        methods = (METHODS if source is not None else ()) + (
            DATA_METHODS if components is not None else ())
    if not methods and method is None:
        raise ValueError("few-shot fitting needs another device's predictor or dataset")
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(latency_ms, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features [N,10] and latency [N] disagree: {x.shape} vs {y.shape}")
    if len(y) < MIN_ROWS:
        raise ValueError(f"few-shot fitting needs at least {MIN_ROWS} rows, got {len(y)}")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("few-shot latencies must be finite and > 0 ms")
    allowed = METHODS + DATA_METHODS
    unknown = set(methods if method is None else [method]) - set(allowed)
    if unknown:
        raise ValueError(f"unknown few-shot method(s) {sorted(unknown)}; choose from {allowed}")
    errs: dict[str, float] = {}
    if method is None:
        errs = cv_errors(source, x, y, methods, seed=seed, parts=components)
        method = min(errs, key=lambda k: (errs[k], k))
    pred = _fit(method, source, x, y, seed, components)
    pred.meta["cv_mse_rel"] = {k: (v if math.isfinite(v) else None) for k, v in errs.items()}
    return pred
