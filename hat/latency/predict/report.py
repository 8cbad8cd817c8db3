"""How good a latency predictor is: metrics and the predicted-vs-measured scatter plot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def metrics(pred_ms: np.ndarray, true_ms: np.ndarray) -> dict[str, float]:
    """RMSE (ms), MAPE (%) and the share of rows within +-10% (%)."""
    pred, true = np.asarray(pred_ms, float), np.asarray(true_ms, float)
    rel = np.abs(pred - true) / true
    return {
        "rmse_ms": float(np.sqrt(np.mean((pred - true) ** 2))),
        "mape_pct": float(100 * np.mean(rel)),
        "within10_pct": float(100 * np.mean(rel <= 0.10)),
    }


def save_scatter(pred_ms: np.ndarray, true_ms: np.ndarray, path: str | os.PathLike,
                 title: str = "") -> Path:
    """Write a small predicted-vs-measured scatter PNG (matplotlib, Agg backend)."""
    from hat.plots import pyplot, save_png

    plt = pyplot()
    m = metrics(pred_ms, true_ms)
    fig, ax = plt.subplots(figsize=(3.6, 3.6), dpi=80)
    lo = float(min(np.min(pred_ms), np.min(true_ms)))
    hi = float(max(np.max(pred_ms), np.max(true_ms)))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9")
    ax.scatter(true_ms, pred_ms, s=5, alpha=0.6)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{title}\nRMSE {m['rmse_ms']:.4g} ms, within ±10%: {m['within10_pct']:.1f}%",
                 fontsize=8)
    ax.tick_params(labelsize=7)
    return save_png(fig, path)
