"""The search's outputs beside the winner's YAML: every evaluated SubTransformer (CSV), the
loss/latency front (CSV) and a plot of both (PNG). All written atomically."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from hat.atomic import atomic_write_text
from hat.plots import pyplot, save_png
from hat.search.evolution import Candidate
from hat.space import FEATURE_NAMES, SearchSpace, SubConfig, key_hash


def _cfg(space: SearchSpace, c: Candidate) -> SubConfig:
    return space.from_genes(c.genes)


def write_evaluations_csv(path: str | os.PathLike, space: SearchSpace,
                          cands: Sequence[Candidate]) -> Path:
    """One row per evaluated SubTransformer, in evaluation order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["iteration", "config_hash", *FEATURE_NAMES, "valid_loss", "predicted_latency_ms",
                "params_m"])
    for c in cands:
        feats = SearchSpace.features(_cfg(space, c))
        w.writerow([c.iteration, key_hash(c.key), *[f"{v:g}" for v in feats],
                    f"{c.loss:.6f}", f"{c.latency_ms:.6g}", f"{c.params_m:.4f}"])
    return atomic_write_text(path, buf.getvalue())


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """Non-dominated candidates (lower loss and lower latency are better), by latency."""
    front: list[Candidate] = []
    for c in sorted(cands, key=lambda c: (c.latency_ms, c.loss)):
        if not front or c.loss < front[-1].loss:
            front.append(c)
    return front


def write_front_csv(path: str | os.PathLike, space: SearchSpace,
                    front: Sequence[Candidate]) -> Path:
    """The front as CSV: latency, loss, #params, hash and the SubTransformer in words."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["predicted_latency_ms", "valid_loss", "params_m", "config_hash", "config"])
    for c in front:
        w.writerow([f"{c.latency_ms:.6g}", f"{c.loss:.6f}", f"{c.params_m:.4f}",
                    key_hash(c.key), _cfg(space, c).describe()])
    return atomic_write_text(path, buf.getvalue())


def save_search_plot(path: str | os.PathLike, cands: Sequence[Candidate],
                     winners: Sequence[tuple[float, Candidate]], title: str = "") -> Path:
    """Validation loss vs predicted latency of every evaluated SubTransformer, the front
    and each limit's winner (with the limit as a dashed line)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=100)
    ax.scatter([c.latency_ms for c in cands], [c.loss for c in cands], s=6, alpha=0.35,
               color="tab:blue", label=f"evaluated ({len(cands)})")
    front = pareto_front(cands)
    ax.plot([c.latency_ms for c in front], [c.loss for c in front], "-", color="tab:orange",
            lw=1.2, label="front")
    for i, (limit, w) in enumerate(winners):
        ax.axvline(limit, color="0.5", ls="--", lw=0.8)
        ax.scatter([w.latency_ms], [w.loss], s=60, marker="*", color="tab:red", zorder=5,
                   label="winner" if i == 0 else None)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation loss (inherited weights, base 2)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return save_png(fig, path)
