"""Training latency predictors: seeded splits, the named recipes and the training loop.

Recipes (:data:`RECIPES`): ``hat`` (HAT's: Adam lr 1e-5, batch 128, 5000 steps, last weights;
seeded here), ``mlp`` (ours: the network started as the least-squares linear fit, then
warm-up + cosine Adam at lr 1e-3 on standardised inputs/targets, keeping the checkpoint with the
lowest validation error) and ``default`` (``mlp`` on top of a least-squares linear model of the
analytic cost terms, :mod:`hat.latency.predict.costterms`, both fitted to the training
latencies with the device's drift over the measurement order divided out,
:mod:`hat.latency.predict.drift`, then scaled by
least squares to the measured latencies). Standardisation is folded into the first/last layer
on export, so every member is a plain HAT state dict.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from hat.errors import HatConfigError
from hat.latency.predict.costterms import cost_terms, fit_relative_ridge
from hat.latency.predict.drift import Fitter, check_order, cost_fitter, estimate_drift, min_rows
from hat.latency.predict.predictor import (
    FEATURE_NORM,
    LatencyMLP,
    LatencyPredictor,
    check_norms,
    combine_predictors,
    torch_threads,
)


def split_indices(n: int, seed: int, fractions: tuple[float, float] = (0.8, 0.1),
                  groups: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded shuffle, then the first 80% train, next 10% validation, rest test.

    ``groups`` (one row of features per dataset row): rows with equal features stay in one
    split, so no test row is a copy of a training row; the unique configurations are shuffled
    and split by their cumulative row counts. Without repeats the split is the plain one.
    """
    n_tr, n_va = int(n * fractions[0]), int(n * fractions[1])
    if groups is not None:
        _, first, inverse = np.unique(np.asarray(groups), axis=0, return_index=True,
                                      return_inverse=True)
        inverse = inverse.reshape(-1)
        if len(first) < n:
            order = np.random.default_rng(seed).permutation(len(first))
            counts = np.bincount(inverse, minlength=len(first))[order]
            ends = np.cumsum(counts)
            which = np.searchsorted([n_tr, n_tr + n_va], ends, side="left")  # split of each group
            split_of = np.empty(len(first), dtype=int)
            split_of[order] = which
            parts = [np.flatnonzero(split_of[inverse] == k) for k in range(3)]
            rank = np.empty(len(first), dtype=int)
            rank[order] = np.arange(len(first))
            return tuple(p[np.argsort(rank[inverse[p]], kind="stable")] for p in parts)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]


@dataclass(frozen=True)
class Recipe:
    """How to train (squared error loss); ``select``: 'last' (HAT's) or 'best_val' (lowest
    validation relative error, checked every ``eval_every`` steps)."""

    name: str
    lr: float
    bsz: int
    steps: int
    schedule: str = "const"  # const | cosine
    warmup: int = 0
    select: str = "last"
    linear_init: bool = False  # start from the (loss-weighted) least-squares linear fit
    cost_base: bool = False  # add a least-squares linear model on the cost terms; MLP on the rest
    standardize: bool = False
    eval_every: int = 100
    members: int = 1
    drift_fit: bool = False  # fit drift-corrected labels, then rescale to the measured ones


RECIPES: dict[str, Recipe] = {
    "hat": Recipe("hat", lr=1e-5, bsz=128, steps=5000),
    # HAT's MLP alone (its files load in HAT's code): starts from the least-squares linear fit
    # (latency is nearly linear in HAT's features), then Adam with warm-up + cosine on the
    # squared error; keeps the checkpoint (the linear start included) with the lowest
    # validation relative error.
    "mlp": Recipe(
        "mlp", lr=1e-3, bsz=128, steps=3000, schedule="cosine", warmup=100,
        select="best_val", standardize=True, eval_every=50, linear_init=True,
    ),
    # The same MLP on top of a least-squares linear model of the 13 cost terms
    # (hat/latency/predict/costterms.py): the products of layers, widths and FFN sizes that
    # HAT's ten
    # averages leave to the network are given exactly; the MLP learns the remainder.
    "default": Recipe(
        "default", lr=1e-3, bsz=128, steps=3000, schedule="cosine", warmup=100,
        select="best_val", standardize=True, eval_every=50, linear_init=True,
        cost_base=True, drift_fit=True,
    ),
}


def fit_recipe(name: str, **overrides: Any) -> Recipe:
    """A named recipe with optional field overrides (``None`` values are ignored)."""
    if name not in RECIPES:
        raise HatConfigError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})


def _lr_at(r: Recipe, step: int) -> float:
    if r.warmup and step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    if r.schedule == "cosine":
        t = (step - r.warmup) / max(1, r.steps - r.warmup)
        return 0.5 * r.lr * (1 + math.cos(math.pi * min(1.0, t)))
    return r.lr


LINEAR_SHIFT = 10.0  # standardised inputs above -10 pass the first ReLU unchanged


def _init_as_linear_fit(net: LatencyMLP, x: torch.Tensor, y: torch.Tensor) -> None:
    """Set ``net`` to compute the least-squares linear fit of ``y`` on ``x``: the first ``d``
    units of every layer carry the inputs (shifted to stay positive through the ReLUs), the
    output layer reads the fit from them, and the other units start random with zero output
    weight. Noisy latency data is close to linear in HAT's
    features; training then adds only the curvature the data supports."""
    d = x.shape[1]
    a = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    aw, yw = a, y.double()
    coef = torch.linalg.solve(aw.T @ aw + 1e-6 * torch.eye(d + 1, dtype=torch.float64),
                              aw.T @ yw)[:, 0]
    with torch.no_grad():
        net.first_layer.weight[:d] = torch.eye(d)
        net.first_layer.bias[:d] = LINEAR_SHIFT
        for layer in net.layers:
            layer.weight[:d] = 0.0
            layer.weight[:d, :d] = torch.eye(d)
            layer.bias[:d] = 0.0
        net.predict.weight.zero_()
        net.predict.weight[0, :d] = coef[:d].float()
        net.predict.bias[0] = float(coef[d] - LINEAR_SHIFT * coef[:d].sum())


def _train_member(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, r: Recipe,
                  seed: int, hidden_dim: int, hidden_layer_num: int,
                  progress: Callable[[int, float], None] | None,
                  base: np.ndarray | None = None, base_v: np.ndarray | None = None,
                  ) -> dict[str, np.ndarray]:
    """Train one MLP on normalised x (x / feature_norm) and y (ms / lat_norm); with ``base``
    (``base_v`` on the validation rows) the MLP fits ``y - base`` and is judged on the sum."""
    yv_full = yv
    if base is not None:
        y, yv = y - base, yv - base_v
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = LatencyMLP(x.shape[1], hidden_dim, hidden_layer_num)
    mu, sd = np.zeros(x.shape[1]), np.ones(x.shape[1])
    if r.standardize:  # constant features (e.g. encoder_layer_num) keep scale 1
        mu, sd = x.mean(0), x.std(0)
        sd = np.where(sd > 1e-6, sd, 1.0)
    ym, ys = (float(y.mean()), float(y.std()) + 1e-12) if r.standardize else (0.0, 1.0)
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor((y - ym) / ys, dtype=torch.float32)[:, None]
    xvt = torch.tensor((xv - mu) / sd, dtype=torch.float32)
    if r.linear_init:
        _init_as_linear_fit(net, xt, yt)
    opt = torch.optim.Adam(net.parameters(), lr=r.lr)
    best, best_err = None, math.inf
    n = xt.shape[0]

    def val_error(model: LatencyMLP) -> float:
        with torch.no_grad():
            pv = model(xvt)[:, 0].double().numpy() * ys + ym
        res = (pv - yv) / yv_full
        return float(np.mean(res ** 2))

    if r.linear_init and r.select == "best_val" and len(xv):  # the linear start is a candidate
        best_err = val_error(net)
        best = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for step in range(r.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(r, step)
        idx = torch.randint(0, n, (min(r.bsz, n),), generator=gen)
        loss = ((net(xt[idx]) - yt[idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = step == r.steps - 1
        if r.select == "best_val" and len(xv) and ((step + 1) % r.eval_every == 0 or last):
            err = val_error(net)
            if err < best_err:
                best_err = err
                best = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if progress is not None and ((step + 1) % 100 == 0 or last):
            progress(step + 1, loss.item())
    if best is not None:
        net.load_state_dict(best)
    sd_out = {k: v.detach().double().numpy().copy() for k, v in net.state_dict().items()}
    # Fold standardisation into the first and last layers: plain HAT semantics afterwards.
    w0, b0 = sd_out["first_layer.weight"], sd_out["first_layer.bias"]
    sd_out["first_layer.weight"] = w0 / sd[None, :]
    sd_out["first_layer.bias"] = b0 - (w0 / sd[None, :]) @ mu
    sd_out["predict.weight"] = sd_out["predict.weight"] * ys
    sd_out["predict.bias"] = sd_out["predict.bias"] * ys + ym
    return sd_out


def train_predictor(features: np.ndarray, latency_ms: np.ndarray, train_idx: np.ndarray,
                    val_idx: np.ndarray, recipe: Recipe | str = "default", *,
                    feature_norm: Sequence[float] = FEATURE_NORM, lat_norm: float,
                    seed: int = 1, hidden_dim: int = 400, hidden_layer_num: int = 3,
                    progress: Callable[[int, float], None] | None = None,
                    order: np.ndarray | None = None) -> LatencyPredictor:
    """Train a predictor on ``train_idx`` rows (``val_idx`` used only for checkpoint choice).

    ``order``: the rows' measurement order (default: file order), used by ``drift_fit``."""
    r = fit_recipe(recipe) if isinstance(recipe, str) else recipe
    fn, ln = check_norms(feature_norm, lat_norm)
    latency_ms = np.asarray(latency_ms, np.float64)
    t0 = time.perf_counter()
    fit_ms, drift = latency_ms, None
    if r.drift_fit:
        fit_ms, drift = _drift_corrected(features, latency_ms, train_idx, val_idx, order, seed)
    x = np.asarray(features, np.float64) / fn
    y = fit_ms / ln
    coef = base = None
    if r.cost_base:  # least squares in ms on the training rows; the MLP learns what is left
        terms = cost_terms(features)
        coef = fit_relative_ridge(terms[train_idx], fit_ms[train_idx], 0.0, relative=False)
        base = terms @ coef / ln
    members = []
    with torch_threads(1):
        for k in range(r.members):
            members.append(_train_member(
                x[train_idx], y[train_idx], x[val_idx], y[val_idx], r, seed * 1000 + k,
                hidden_dim, hidden_layer_num, progress,
                None if base is None else base[train_idx], None if base is None else base[val_idx],
            ))
    meta = {"recipe": asdict(r), "seed": seed, "n_train": int(len(train_idx)),
            "n_val": int(len(val_idx))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = LatencyPredictor(members, fn, ln, meta, cost_coef=coef)
        if drift is not None:  # least-squares scale from drift-free to measured latencies
            p = pred.predict(features[train_idx])
            drift["scale"] = float(np.dot(latency_ms[train_idx], p) / np.dot(p, p))
            meta["drift"] = drift
            pred = combine_predictors([(drift["scale"], pred)], meta=meta)
    pred.meta["train_seconds"] = time.perf_counter() - t0
    return pred


DRIFT_WINDOW = 15  # neighbours on each side in measurement order


def _drift_corrected(features: np.ndarray, latency_ms: np.ndarray, train_idx: np.ndarray,
                     val_idx: np.ndarray, order: np.ndarray | None, seed: int
                     ) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Latencies with the drift divided out on the train+validation rows (neighbour factors
    estimated from those rows alone, in measurement order); too few rows: unchanged."""
    rows = np.concatenate([train_idx, val_idx]).astype(int)
    if len(rows) < min_rows(DRIFT_WINDOW):
        return latency_ms, None
    n = len(latency_ms)
    rank = np.arange(n)
    if order is not None:
        rank[check_order(order, n)] = np.arange(n)
    local = np.argsort(rank[rows], kind="stable")
    est = estimate_drift(features[rows], latency_ms[rows], local, fitter=cost_fitter,
                         window=DRIFT_WINDOW, seed=seed)
    out = latency_ms.copy()
    out[rows] = latency_ms[rows] / est.factors
    return out, est.summary()


def mlp_fitter(recipe: Recipe | str, lat_norm: float) -> Fitter:
    """A cross-fitting model for :func:`hat.latency.predict.drift.estimate_drift`: a predictor
    trained
    with ``recipe`` on the other folds (a tenth of them for checkpoint choice)."""

    def fit(x: np.ndarray, y: np.ndarray, rest: np.ndarray, held: np.ndarray,
            seed: int) -> np.ndarray:
        n_val = max(1, len(rest) // 10)
        p = train_predictor(x, y, rest[n_val:], rest[:n_val], recipe, lat_norm=lat_norm,
                            seed=seed)
        return p.predict(x[held])

    return fit
