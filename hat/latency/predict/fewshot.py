"""Few-shot latency predictor for new hardware: a few measured rows on top of another device's
predictor or dataset.

Candidates, each a :class:`LatencyPredictor` (member MLPs and/or cost-term coefficients), so
the result saves, loads and predicts in batches like any predictor:

- ``scale``: ``y = a * src(x)``; ``affine``: ``y = a * src(x) + b`` (folded into the MLPs),
- ``finetune``: the affine model, then all layers fine-tuned on the rows (relative-error loss,
  a pull towards the starting weights, fixed small step count),
- ``cost``: a linear model on the analytic cost terms (:mod:`hat.latency.predict.costterms`),
  ridge on
  relative error; uses the new device's rows only and is the candidate that carries the
  device's own balance of matmul, attention and per-layer costs,
- ``cost+src``: the same with ``src(x)`` as one more term (the other device's predictor adds
  what the terms miss),
- ``finetune+cost``: the mean of ``finetune`` and ``cost`` (their errors differ in kind),
- ``components`` (needs the other device's *dataset*): separate encoder and decoder predictors of
  that device, combined as ``y = a * enc(x) + b * dec(x) + c``.

The candidate is chosen by K-fold cross-validation on the given rows only (mean squared relative
error), then refitted on all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from hat.latency.predict.costterms import cost_terms, fit_relative_ridge
from hat.latency.predict.fit import Recipe, train_predictor
from hat.latency.predict.predictor import (
    FEATURE_NORM,
    LatencyMLP,
    LatencyPredictor,
    combine_predictors,
    torch_threads,
)

METHODS: tuple[str, ...] = ("scale", "affine", "finetune", "cost", "cost+src", "finetune+cost")
SOURCE_METHODS: frozenset[str] = frozenset({"scale", "affine", "finetune", "cost+src",
                                            "finetune+cost"})
DATA_METHODS: tuple[str, ...] = ("components",)
MIN_ROWS = 5
RIDGE = 1e-3  # ridge strength of the cost-term fits (columns scaled to unit norm)


def _fit_affine(s: np.ndarray, y: np.ndarray, with_bias: bool) -> tuple[float, float]:
    """Least squares on relative error: minimise sum(((a*s + b - y) / y)^2)."""
    if with_bias:
        a_mat = np.c_[s / y, 1.0 / y]
        (a, b), *_ = np.linalg.lstsq(a_mat, np.ones_like(y), rcond=None)
        if a > 0:
            return float(a), float(b)
    a = float(np.sum(s / y) / np.sum((s / y) ** 2))
    return a, 0.0


def _finetune(p: LatencyPredictor, x: np.ndarray, y: np.ndarray, seed: int, steps: int = 200,
              lr: float = 1e-4, pull: float = 1e-2) -> LatencyPredictor:
    """Full-batch fine-tuning of each member network on relative error (its cost terms, if
    any, held fixed), with an L2 pull to the start weights."""
    if not p.members:
        raise ValueError("fine-tuning needs a predictor with member networks")
    torch.manual_seed(seed)
    xt = torch.tensor(x / p.feature_norm, dtype=torch.float32)
    yt = torch.tensor(y / p.lat_norm, dtype=torch.float32)[:, None]
    fixed = np.zeros(len(y)) if p.cost_coef is None else cost_terms(x) @ p.cost_coef
    ft = torch.tensor(fixed / p.lat_norm, dtype=torch.float32)[:, None]
    out = []
    with torch_threads(1):
        for m in p.members:
            n_hidden = len([k for k in m if k.startswith("layers.") and k.endswith(".weight")])
            net = LatencyMLP(hidden_dim=m["first_layer.weight"].shape[0], hidden_layer_num=n_hidden)
            net.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in m.items()})
            start = [q.detach().clone() for q in net.parameters()]
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            for _ in range(steps):
                loss = (((net(xt) + ft - yt) / yt) ** 2).mean()
                loss = loss + pull * sum(((q - q0) ** 2).sum()
                                         for q, q0 in zip(net.parameters(), start))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            out.append({k: v.detach().double().numpy().copy() for k, v in net.state_dict().items()})
    return LatencyPredictor(out, p.feature_norm, p.lat_norm, p.meta, cost_coef=p.cost_coef)


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
                    y: np.ndarray) -> tuple[LatencyPredictor, dict]:
    enc, dec = parts
    e, d = enc.predict(x), dec.predict(x)
    a_mat = np.c_[e / y, d / y, 1.0 / y]  # relative least squares
    (a, b, c), *_ = np.linalg.lstsq(a_mat, np.ones_like(y), rcond=None)
    if a <= 0 or b <= 0:  # a negative share of a component is not physical: one scale each
        (a, b), *_ = np.linalg.lstsq(a_mat[:, :2], np.ones_like(y), rcond=None)
        a, b, c = max(float(a), 0.0), max(float(b), 0.0), 0.0
    pred = combine_predictors([(float(a), enc), (float(b), dec)], bias_ms=float(c))
    return pred, {"a_encoder": float(a), "b_decoder": float(b), "c_ms": float(c),
                  "source_meta": enc.meta}


def _norms(src: LatencyPredictor | None,
           parts: tuple[LatencyPredictor, LatencyPredictor] | None,
           y: np.ndarray) -> tuple[np.ndarray, float]:
    ref = src or (parts[0] if parts else None)
    if ref is not None:
        return ref.feature_norm, ref.lat_norm
    return np.asarray(FEATURE_NORM, np.float64), float(np.median(y))


def _fit(method: str, src: LatencyPredictor | None, x: np.ndarray, y: np.ndarray,
         seed: int, parts: tuple[LatencyPredictor, LatencyPredictor] | None = None,
         ) -> LatencyPredictor:
    info: dict = {}
    if method == "components":
        if parts is None:
            raise ValueError("few-shot method 'components' needs the other device's dataset")
        pred, info = _fit_components(parts, x, y)
    elif method == "cost":
        fn, ln = _norms(src, parts, y)
        pred = LatencyPredictor([], fn, ln, cost_coef=fit_relative_ridge(cost_terms(x), y, RIDGE))
    else:
        if src is None:
            raise ValueError(f"few-shot method {method!r} needs the other device's predictor")
        s = src.predict(x)
        if method == "cost+src":
            c = fit_relative_ridge(np.c_[cost_terms(x), s], y, RIDGE)
            cost_only = LatencyPredictor([], src.feature_norm, src.lat_norm, cost_coef=c[:-1])
            pred = combine_predictors([(float(c[-1]), src), (1.0, cost_only)])
            info = {"a": float(c[-1])}
        else:
            a, b = _fit_affine(s, y, with_bias=method != "scale")
            pred = combine_predictors([(a, src)], bias_ms=b)
            info = {"a": a, "b_ms": b}
            if method in ("finetune", "finetune+cost"):
                pred = _finetune(pred, x, y, seed)
            if method == "finetune+cost":
                cost = _fit("cost", src, x, y, seed)
                pred = combine_predictors([(0.5, pred), (0.5, cost)])
        info["source_meta"] = src.meta
    pred.meta = {"method": method, "n_rows": int(len(y)), **info}
    return pred


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
    if source is None and components is None:
        raise ValueError("few-shot fitting needs another device's predictor or dataset")
    if methods is None:
        methods = tuple(m for m in METHODS if source is not None or m not in SOURCE_METHODS)
        if source is not None and not source.members:  # nothing to fine-tune
            methods = tuple(m for m in methods if not m.startswith("finetune"))
        methods += DATA_METHODS if components is not None else ()
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
