"""Neighbour-referenced drift correction: recovers a slow drift, leaves drift-free data alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hat.latency.predict.costterms import COST_TERMS, cost_terms
from hat.latency.predict.drift import (
    cost_fitter,
    estimate_drift,
    measurement_order,
    neighbour_factors,
)
from hat.latency.predict.fit import fit_recipe, mlp_fitter, split_indices, train_predictor
from tests.conftest import synthetic_features


def _rows(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = synthetic_features(n, np.random.default_rng(seed))
    return x, 5 + x[:, 5] * (10 + x[:, 6] / 200 + x[:, 4] / 40) + x[:, 2] / 300


QUICK = fit_recipe("mlp", steps=250)


@pytest.mark.slow
def test_recovers_slow_drift() -> None:
    x, true = _rows()
    t = np.arange(len(true))
    drift = 1 + 0.15 * np.sin(2 * np.pi * t / 240)
    measured = true * drift * np.random.default_rng(1).normal(1, 0.01, len(true))
    est = estimate_drift(x, measured, fitter=mlp_fitter(QUICK, 200), window=15, passes=1, folds=3)
    corrected = measured / est.factors
    rel = corrected / true / np.median(corrected / true)  # drift is known up to one constant
    before = np.mean(np.abs(measured / true - 1) <= 0.03)
    after = np.mean(np.abs(rel - 1) <= 0.03)
    assert before < 0.3 and after > 0.85, (before, after)
    assert np.corrcoef(est.factors, drift)[0, 1] > 0.9


@pytest.mark.slow
def test_leaves_drift_free_rows_nearly_alone() -> None:
    x, true = _rows(seed=2)
    measured = true * np.random.default_rng(3).normal(1, 0.01, len(true))
    est = estimate_drift(x, measured, fitter=mlp_fitter(QUICK, 200), window=15, passes=1, folds=3)
    assert np.percentile(np.abs(est.factors - 1), 90) < 0.03, est.summary()


def test_neighbour_factors_exclude_the_row_and_follow_order() -> None:
    log_ratio = np.log(np.array([1.0, 1.0, 2.0, 1.0, 1.0]))
    f = neighbour_factors(log_ratio, np.arange(5), window=1)
    assert f[2] == pytest.approx(1.0)  # its own outlier does not count
    assert f[1] == pytest.approx(np.sqrt(2))  # median of {1, 2} in log space
    rev = neighbour_factors(log_ratio[::-1], np.arange(5)[::-1], window=1)
    np.testing.assert_allclose(rev, f[::-1])
    order = measurement_order({"timestamp": ["b", "a", "c"]}, 3)
    assert order.tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="at least"):
        estimate_drift(np.zeros((10, 10)), np.ones(10), window=15)


def _cost_linear_rows(n: int = 600, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose drift-free latency is a positive combination of the cost terms."""
    rng = np.random.default_rng(seed)
    x = synthetic_features(n, rng)
    coef = np.abs(rng.normal(1, 0.5, len(COST_TERMS))) / cost_terms(x).mean(0)
    return x, 10 + cost_terms(x) @ coef * 20


def test_cost_model_cross_fit_finds_a_slow_segment() -> None:
    x, true = _cost_linear_rows()
    drift = np.where(np.arange(len(true)) < 80, 1.4, 1.0)
    measured = true * drift * np.random.default_rng(5).normal(1, 0.01, len(true))
    est = estimate_drift(x, measured, fitter=cost_fitter)
    assert np.median(est.factors[:70]) == pytest.approx(1.4, rel=0.03)
    assert np.percentile(np.abs(est.factors[100:] - 1), 90) < 0.02, est.summary()


def _drifted(n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, true = _cost_linear_rows(n)
    drift = np.where(np.arange(n) < 60, 1.4, 1.0)  # the first 10 % measured 40 % slower
    return x, true, true * drift * np.random.default_rng(6).normal(1, 0.01, n)


def test_default_recipe_fits_through_a_drift_segment() -> None:
    x, true, measured = _drifted()
    tr, va, te = split_indices(len(true), 1)
    quick = fit_recipe("default", steps=100)
    with_drift = train_predictor(x, measured, tr, va, quick, lat_norm=100, seed=0)
    without = train_predictor(x, measured, tr, va, replace(quick, drift_fit=False),
                              lat_norm=100, seed=0)
    d = with_drift.meta["drift"]
    assert d["factor_max"] > 1.3 and d["rows_changed_over_2pct"] >= 40
    # scaled back to the measured latencies: about the training rows' mean drift (~1.04)
    assert d["scale"] == pytest.approx(np.mean(measured[tr] / true[tr]), abs=0.01)
    spread = {k: np.std(np.log(p.predict(x[te]) / true[te]))
              for k, p in (("with", with_drift), ("without", without))}
    assert spread["with"] < 0.5 * spread["without"], spread
    assert "drift" not in without.meta


def test_drift_fit_follows_the_given_measurement_order() -> None:
    x, _, measured = _drifted()
    perm = np.random.default_rng(7).permutation(len(measured))  # file order != time order
    xs, ms = x[perm], measured[perm]
    tr, va, _ = split_indices(len(ms), 1)
    quick = fit_recipe("default", steps=20)
    blind = train_predictor(xs, ms, tr, va, quick, lat_norm=100, seed=0)
    timed = train_predictor(xs, ms, tr, va, quick, lat_norm=100, seed=0,
                            order=np.argsort(perm))
    assert timed.meta["drift"]["factor_max"] > 1.3
    assert blind.meta["drift"]["factor_max"] < 1.15
    few = train_predictor(x[:50], measured[:50], np.arange(40), np.arange(40, 45), quick,
                          lat_norm=100, seed=0)
    assert "drift" not in few.meta  # too few rows to estimate drift: fitted as measured
    with pytest.raises(ValueError, match="permutation"):
        train_predictor(xs, ms, tr, va, quick, lat_norm=100, order=np.zeros(len(ms), int))
