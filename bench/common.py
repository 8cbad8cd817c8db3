"""Helpers the benchmarks share: the repository root, a report header (date, device, versions),
and the latency-predictor benches' data lookup and training.

Run every benchmark from the repository root as a module: ``python -m bench.<name> [options]``.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hat.latency.measure.machine import cpu_model
from hat.latency.predict.fit import Recipe, train_predictor
from hat.latency.predict.predictor import FEATURE_NORM, LatencyPredictor
from hat.latency.predict.report import metrics
from hat.paths import ROOT, reference_dir

RESULTS = ROOT / "bench" / "results"

# HAT's published latency datasets (hat.latency.csvio.HAT_LATENCY_DATASETS names the files)
NAMES = ("wmt14ende_cpu_raspberrypi", "wmt14ende_cpu_xeon", "wmt14ende_gpu_titanxp",
         "iwslt14deen_gpu_titanxp")
LAT_NORM = {"titanxp": 200.0, "xeon": 300.0, "raspberrypi": 5000.0}
def find_file(bases: list[Path], candidates: list[str]) -> Path | None:
    """The first existing ``base / candidate``, bases in order (then candidates)."""
    return next((b / c for b in bases for c in candidates if (b / c).is_file()), None)


def find_csv(name: str, bases: list[Path]) -> Path | None:
    """``<name>_all.csv`` under the first base that has it (also under ``latency/``); prints a
    skip line when none does."""
    path = find_file(bases, [f"{name}_all.csv", f"latency/{name}_all.csv"])
    if path is None:
        print(f"skip {name}: CSV not found under {', '.join(map(str, bases))}")
    return path




def data_bases(data: str | None, ours: bool = True) -> list[Path]:
    """Folders to look for CSVs in: ``--data`` alone if given, else the reference data (and,
    with ``ours``, this repository's ``latency_dataset/``)."""
    if data:
        return [Path(data)]
    return [reference_dir(), ROOT / "latency_dataset"] if ours else [reference_dir()]


def run_info() -> dict:
    """Date (UTC), CPU, torch and Python versions for a report's header."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"CPU: {cpu_model()} ({os.cpu_count()} cores)",
            "torch": torch.__version__, "python": platform.python_version()}


def lat_norm_of(name: str) -> float:
    """HAT's lat-norm for the hardware a CSV name ends with (``..._raspberrypi`` -> 5000)."""
    return LAT_NORM[name.rsplit("_", 1)[1]]


def train_on(name: str, x: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray,
             recipe: Recipe | str, seed: int) -> LatencyPredictor:
    """``train_predictor`` with HAT's feature-norm and the lat-norm of CSV ``name``."""
    return train_predictor(x, y, tr, va, recipe, feature_norm=FEATURE_NORM,
                           lat_norm=lat_norm_of(name), seed=seed)


def baselines(x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, seed: int) -> dict:
    """Gradient boosting and random forest on the raw features (same split)."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    out = {}
    gbm = GradientBoostingRegressor(n_estimators=500, max_depth=4, learning_rate=0.05,
                                    subsample=0.8, random_state=seed)
    rf = RandomForestRegressor(n_estimators=300, random_state=seed, n_jobs=2)
    for label, model in (("gbm", gbm), ("random_forest", rf)):
        t0 = time.perf_counter()
        model.fit(x[tr], y[tr])
        out[label] = metrics(model.predict(x[te]), y[te]) | {
            "train_seconds": round(time.perf_counter() - t0, 2)}
    return out
