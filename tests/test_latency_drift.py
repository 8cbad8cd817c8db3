"""Neighbour-referenced drift correction: recovers a slow drift, leaves drift-free data alone."""

from __future__ import annotations

import numpy as np
import pytest

from hat.latency.drift import estimate_drift, measurement_order, neighbour_factors
from hat.latency.predictor import get_recipe
from tests.conftest import synthetic_features


def _rows(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = synthetic_features(n, np.random.default_rng(seed))
    return x, 5 + x[:, 5] * (10 + x[:, 6] / 200 + x[:, 4] / 40) + x[:, 2] / 300


QUICK = get_recipe("mlp", steps=250)


def test_recovers_slow_drift() -> None:
    x, true = _rows()
    t = np.arange(len(true))
    drift = 1 + 0.15 * np.sin(2 * np.pi * t / 240)
    measured = true * drift * np.random.default_rng(1).normal(1, 0.01, len(true))
    est = estimate_drift(x, measured, lat_norm=200, window=15, passes=1, folds=3, recipe=QUICK)
    corrected = measured / est.factors
    before = np.mean(np.abs(measured / true - 1) <= 0.03)
    after = np.mean(np.abs(corrected / true - 1) <= 0.03)
    assert before < 0.3 and after > 0.85, (before, after)
    assert np.corrcoef(est.factors, drift)[0, 1] > 0.9


def test_leaves_drift_free_rows_nearly_alone() -> None:
    x, true = _rows(seed=2)
    measured = true * np.random.default_rng(3).normal(1, 0.01, len(true))
    est = estimate_drift(x, measured, lat_norm=200, window=15, passes=1, folds=3, recipe=QUICK)
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
        estimate_drift(np.zeros((10, 10)), np.ones(10), lat_norm=1, window=15)
