"""Drift correction from the rows themselves ("neighbour referencing", the neighbour correction).

A latency dataset samples its SubTransformers independently of time, so any trend of the
prediction residuals along the measurement order is the device drifting (clock frequency, other
tenants of the host), not the architectures. Each row is divided by the device's relative speed
around it: the median ratio measured / predicted of its neighbours in measurement order (the row
itself excluded), with the predictions cross-fitted (no model saw the row it predicts). Every
neighbour is a reference measurement, so this follows drift on the time scale of a few rows, which
the periodic reference (re-measured every K rows) cannot. Without drift the slowdown factors
stay close to 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hat.latency.predict.costterms import cost_terms, fit_relative_ridge

# A cross-fitting model: (features, latency_ms, rows to fit on, rows to predict, seed) ->
# predictions (ms) of the rows to predict. :func:`cost_fitter` here; a trained predictor is
# :func:`hat.latency.predict.fit.mlp_fitter`.
Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def cost_fitter(features: np.ndarray, latency_ms: np.ndarray, rest: np.ndarray,
                held: np.ndarray, seed: int) -> np.ndarray:
    """A least-squares model of the relative error on the cost terms (fast, deterministic)."""
    terms = cost_terms(features)
    return terms[held] @ fit_relative_ridge(terms[rest], latency_ms[rest], 1e-3)


@dataclass(frozen=True)
class DriftEstimate:
    """Per-row slowdown factors (measured / drift-free: a row is divided by its factor), in the
    rows' original order."""

    factors: np.ndarray
    window: int
    passes: int

    def summary(self) -> dict[str, float]:
        """Spread of the slowdown factors (how much drift was removed): the sidecar's ``drift``."""
        f = self.factors
        return {"window": self.window, "passes": self.passes, "factor_min": float(f.min()),
                "factor_max": float(f.max()),
                "factor_p05": float(np.percentile(f, 5)), "factor_p95": float(np.percentile(f, 95)),
                "rows_changed_over_2pct": int(np.sum(np.abs(f - 1) > 0.02))}


def cross_fitted_predictions(features: np.ndarray, latency_ms: np.ndarray,
                             fitter: Fitter = cost_fitter, folds: int = 5,
                             seed: int = 1) -> np.ndarray:
    """Predict every row with ``fitter`` fitted on the other folds."""
    n = len(latency_ms)
    perm = np.random.default_rng(seed).permutation(n)
    chunks = np.array_split(perm, folds)
    pred = np.empty(n)
    for k, held in enumerate(chunks):
        rest = np.concatenate([c for j, c in enumerate(chunks) if j != k])
        pred[held] = fitter(features, latency_ms, rest, held, seed + k)
    return pred


def neighbour_factors(log_ratio: np.ndarray, order: np.ndarray, window: int) -> np.ndarray:
    """exp(median log_ratio of the ``window`` rows before and after each row in ``order``)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    seq = log_ratio[order]
    n = len(seq)
    out = np.empty(n)
    for i in range(n):
        lo, hi = max(0, i - window), min(n, i + window + 1)
        nb = np.r_[seq[lo:i], seq[i + 1:hi]]
        out[i] = np.exp(np.median(nb)) if len(nb) else 1.0
    factors = np.empty(n)
    factors[order] = out
    return factors


def min_rows(window: int) -> int:
    """Fewest rows a drift estimate with ``window`` neighbours on each side accepts."""
    return 4 * window


def check_order(order: np.ndarray, n: int) -> np.ndarray:
    """``order`` as an array, if it is a permutation of ``range(n)`` (else ValueError)."""
    order = np.asarray(order)
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"order must be a permutation of the {n} row indices "
                         f"(the measurement order), got shape {order.shape}")
    return order


def estimate_drift(features: np.ndarray, latency_ms: np.ndarray, order: np.ndarray | None = None,
                   *, fitter: Fitter = cost_fitter, window: int = 15, passes: int = 2,
                   folds: int = 5, seed: int = 1) -> DriftEstimate:
    """Per-row slowdown factors; ``order`` = the rows' measurement order (default: file order).

    Each pass refits the cross-fitted model on the latencies corrected so far. Factors are
    relative to the median row (a drift only fixes latencies up to one constant).
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(latency_ms, np.float64)
    if len(y) < min_rows(window):
        raise ValueError(f"drift correction needs at least {min_rows(window)} rows, got {len(y)}")
    order = np.arange(len(y)) if order is None else check_order(order, len(y))
    factors = np.ones(len(y))
    for p in range(passes):
        pred = cross_fitted_predictions(x, y / factors, fitter, folds, seed + 100 * p)
        factors = neighbour_factors(np.log(y / pred), order, window)
        factors /= np.median(factors)  # drift-free = the device's typical (median) state
    return DriftEstimate(factors, window, passes)


def measurement_order(extra: dict, n: int) -> np.ndarray:
    """Rows' measurement order from our CSVs' ``row``/``timestamp`` columns (else file order)."""
    if "timestamp" in extra and len(extra["timestamp"]) == n:
        ts = [str(t) for t in extra["timestamp"]]
        return np.array(sorted(range(n), key=lambda i: (ts[i], i)))
    return np.arange(n)
