#!/usr/bin/env python
"""Drift over the measurement order in HAT's latency CSVs, and accuracy once it is removed.

HAT's CSVs list their rows in measurement order and sample SubTransformers independently of
time, so a run of consecutive rows that are all slower (or faster) than a model of the features
predicts is the device changing speed, not the architectures. For each CSV this reports the mean
ratio measured / predicted in blocks of 50 rows (predictions: least squares on the cost terms,
cross-fitted over 5 folds), the same ratio for the encoder and decoder columns, the neighbour
drift factors (``hat/latency/predict/drift.py``, window 15, factors relative to the median
row), and on
the test rows of split seed 1 the accuracy of our default recipe and of gradient boosting /
random forest against the measured latencies and against the drift-corrected ones (the data's
limit without the drift). Writes ``bench/results/hat_csv_drift.json``.

    python -m bench.studies.hat_csv_drift [--data DIR] [--seed 1] [--block 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np

from bench.common import NAMES, ROOT, baselines, data_bases, find_csv, run_info, train_on
from hat.atomic import atomic_write_json
from hat.latency.csvio import load_latency_csv
from hat.latency.predict.drift import cost_fitter, cross_fitted_predictions, estimate_drift
from hat.latency.predict.fit import fit_recipe, split_indices
from hat.latency.predict.report import metrics


def block_ratios(x: np.ndarray, y: np.ndarray, block: int) -> list[float]:
    """Mean measured / cross-fitted prediction over consecutive blocks of rows."""
    ratio = y / cross_fitted_predictions(x, y, cost_fitter)
    return [round(float(ratio[i:i + block].mean()), 3) for i in range(0, len(y), block)]


def main() -> int:
    """Run the analysis and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder with <name>_all.csv")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: recipe's)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "hat_csv_drift.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    bases = data_bases(args.data, ours=False)
    recipe = fit_recipe("default", steps=args.steps)
    results = {}
    for name in NAMES:
        csv = find_csv(name, bases)
        if csv is None:
            continue
        x, y, extra = load_latency_csv(csv)
        est = estimate_drift(x, y, fitter=cost_fitter, seed=args.seed)
        clean = y / est.factors
        tr, va, te = split_indices(len(y), args.seed)
        row: dict = {"csv": str(csv), "rows": len(y), "drift": est.summary(),
                     "block_rows": args.block, "ratio_per_block": block_ratios(x, y, args.block)}
        for part in ("encoder", "decoder"):
            row[f"ratio_per_block_{part}"] = block_ratios(
                x, np.asarray(extra[f"latency_mean_{part}"], float), args.block)
        for label, target in (("measured", y), ("drift_corrected", clean)):
            p = train_on(name, x, target, tr, va, recipe, args.seed)
            row[label] = {"ours_default": metrics(p.predict(x[te]), target[te])} | baselines(
                x, target, tr, te, args.seed)
        results[name] = row
        print(name, json.dumps({k: row[k] for k in ("drift", "measured", "drift_corrected")}))
        print("  ratio per block:", " ".join(f"{r:.2f}" for r in row["ratio_per_block"]))
    report = {
        **run_info(), "seed": args.seed,
        "metrics": "test split only; 'drift_corrected': trained and scored on the measured "
                   "latencies divided by the neighbour drift factors",
        "results": results,
    }
    atomic_write_json(args.out, report, indent=1)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
