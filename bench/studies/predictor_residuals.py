#!/usr/bin/env python
"""Where the test RMSE of a latency predictor comes from: ours vs HAT's recipe, per CSV.

Trains our default recipe and HAT's recipe on the same seeded split (as
``bench/studies/predictor_accuracy.py``) and reports, on the test rows, RMSE, RMSE without the
k rows
with the largest squared error of each predictor, median absolute error, mean signed error
(prediction - measurement), a paired bootstrap of the RMSE difference over the test rows and
the rows with the largest errors. On noisy CSVs a handful of
measurement spikes (rows measured far slower than any similar SubTransformer) decide RMSE; the
median tells how close a predictor is on typical rows. Writes
``bench/results/predictor_residuals.json``.

    python -m bench.studies.predictor_residuals [--data DIR] [--seed 1] [--top 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

from bench.common import NAMES, ROOT, data_bases, find_csv, run_info, train_on
from hat.atomic import atomic_write_json
from hat.latency.csvio import load_latency_csv
from hat.latency.predict.fit import split_indices


def residual_stats(pred: np.ndarray, true: np.ndarray, top: int) -> dict:
    """RMSE with and without the ``top`` largest squared errors, median |error|, mean error."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    sq = np.sort(err**2)
    return {
        "rmse_ms": float(np.sqrt(sq.mean())),
        f"rmse_without_top{top}_ms": float(np.sqrt(sq[:-top].mean())) if top else None,
        "median_abs_ms": float(np.median(np.abs(err))),
        "mean_signed_ms": float(err.mean()),
    }


def paired_bootstrap_rmse(pred_a: np.ndarray, pred_b: np.ndarray, true: np.ndarray,
                          n: int = 2000, seed: int = 0) -> dict:
    """RMSE(a) - RMSE(b) over ``n`` resamples of the test rows (the same rows for both)."""
    rng = np.random.default_rng(seed)
    ea, eb = ((np.asarray(p, np.float64) - true) ** 2 for p in (pred_a, pred_b))
    idx = rng.integers(0, len(true), size=(n, len(true)))
    diff = np.sqrt(ea[idx].mean(1)) - np.sqrt(eb[idx].mean(1))
    lo, hi = np.quantile(diff, [0.025, 0.975])
    return {"rmse_diff_ms": float(np.sqrt(ea.mean()) - np.sqrt(eb.mean())),
            "ci95_ms": [float(lo), float(hi)], "share_a_le_b": float((diff <= 0).mean()),
            "resamples": n}


def main() -> int:
    """Train both recipes per CSV and write the residual report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder with <name>_all.csv")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--top", type=int, default=5, help="largest errors left out / listed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "predictor_residuals.json"))
    args = ap.parse_args()
    if args.top < 0:
        ap.error(f"--top must be >= 0, got {args.top}")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    bases = data_bases(args.data)
    results = {}
    for name in NAMES:
        csv_path = find_csv(name, bases)
        if csv_path is None:
            continue
        x, y, _ = load_latency_csv(csv_path)
        tr, va, te = split_indices(len(y), args.seed)
        row: dict = {"n_test": len(te)}
        preds = {}
        for label, recipe in (("ours_default", "default"), ("hat_recipe", "hat")):
            p = train_on(name, x, y, tr, va, recipe, args.seed)
            preds[label] = p.predict(x[te])
            row[label] = residual_stats(preds[label], y[te], args.top)
        row["ours_minus_hat_bootstrap"] = paired_bootstrap_rmse(
            preds["ours_default"], preds["hat_recipe"], y[te], seed=args.seed)
        worst = np.argsort(-np.abs(preds["ours_default"] - y[te]))[: args.top]
        row["largest_errors_ours"] = [
            {"measured_ms": float(y[te][i]),
             **{f"{k}_error_ms": float(v[i] - y[te][i]) for k, v in preds.items()}}
            for i in worst]
        results[name] = row
        print(name, json.dumps(row))
    report = {
        **run_info(), "seed": args.seed, "top": args.top,
        "split": "as bench/studies/predictor_accuracy.py (seeded 80/10/10), test rows only",
        "results": results,
    }
    print(f"wrote {atomic_write_json(args.out, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
