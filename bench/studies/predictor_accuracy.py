#!/usr/bin/env python
"""Latency-predictor accuracy on HAT's four latency CSVs (test split of one seeded 80/10/10 split).

Compares our default recipe (HAT's MLP on a cost-term linear base), the MLP alone (``mlp``),
HAT's recipe (seeded; on other split and training seeds:
``bench.studies.predictor_train_seeds``), HAT's
shipped predictor (eval only; note it was trained on an unknown split, so it has probably seen
some of our test rows) and
nonparametric baselines (sklearn gradient boosting / random forest; bench-only dependency).
Also few-shot new-hardware fits from 50 rows. Writes bench/results/predictor_accuracy.json and a
small scatter-plot PNG.

    python -m bench.studies.predictor_accuracy [--data DIR] [--seed 1] [--quick] [--fewshot-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bench.common import (
    NAMES,
    ROOT,
    baselines,
    data_bases,
    find_csv,
    find_file,
    lat_norm_of,
    run_info,
    train_on,
)
from hat.atomic import atomic_write_json
from hat.latency.csvio import load_latency_csv
from hat.latency.predict.fewshot import (
    DATA_METHODS,
    METHODS,
    component_predictors,
    fit_fewshot,
)
from hat.latency.predict.fit import fit_recipe, split_indices
from hat.latency.predict.predictor import FEATURE_NORM, LatencyPredictor
from hat.latency.predict.report import metrics

FEWSHOT_PAIRS = (  # (source, target)
    ("wmt14ende_gpu_titanxp", "wmt14ende_cpu_xeon"),
    ("wmt14ende_cpu_xeon", "wmt14ende_cpu_raspberrypi"),
    ("wmt14ende_cpu_xeon", "wmt14ende_gpu_titanxp"),
    ("wmt14ende_gpu_titanxp", "iwslt14deen_gpu_titanxp"),
)
N_SHOTS = 50
N_DRAWS = 3  # the first 50 training rows, then 2 random draws of 50


def scatter_grid(panels: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    """One small PNG: predicted vs measured per CSV (our default recipe, test rows)."""
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.0), dpi=72)
    for ax, (title, pred, true) in zip(np.atleast_1d(axes), panels):
        m = metrics(pred, true)
        lo, hi = float(min(pred.min(), true.min())), float(max(pred.max(), true.max()))
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9")
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.scatter(true, pred, s=4, alpha=0.6)
        ax.set_title(f"{title}\nRMSE {m['rmse_ms']:.4g}ms, within ±10%: {m['within10_pct']:.1f}%",
                     fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("measured (ms)", fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("predicted (ms)", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    """Run the benchmark and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None,
                    help="folder with <name>_all.csv (default: hat-reference, latency_dataset)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="few steps (smoke test only)")
    ap.add_argument("--fewshot-only", action="store_true",
                    help="only redo the few-shot section of an existing --out JSON")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "predictor_accuracy.json"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    warnings.filterwarnings("ignore", category=UserWarning)

    bases = data_bases(args.data)
    steps = {"steps": 200} if args.quick else {}
    r_def, r_hat = fit_recipe("default", **steps), fit_recipe("hat", **steps)
    r_mlp = fit_recipe("mlp", **steps)
    results: dict = {}
    preds: dict[str, LatencyPredictor] = {}
    data: dict[str, tuple] = {}
    parts_data: dict[str, tuple] = {}
    panels = []
    for name in NAMES:
        csv_path = find_csv(name, bases)
        if csv_path is None:
            continue
        ln = lat_norm_of(name)
        x, y, extra = load_latency_csv(csv_path)
        tr, va, te = split_indices(len(y), args.seed)
        data[name] = (x, y, tr, va, te, ln)
        parts_data[name] = (x, extra["latency_mean_encoder"], extra["latency_mean_decoder"])
        row: dict = {"csv": str(csv_path), "n_train": len(tr), "n_val": len(va), "n_test": len(te)}
        recipes = (("ours_default", r_def), ("hat_recipe", r_hat), ("ours_mlp", r_mlp))
        for label, recipe in recipes[:1] if args.fewshot_only else recipes:
            p = train_on(name, x, y, tr, va, recipe, args.seed)
            row[label] = metrics(p.predict(x[te]), y[te]) | {
                "train_seconds": round(p.meta["train_seconds"], 1),
                "val_within10_pct": metrics(p.predict(x[va]), y[va])["within10_pct"]}
            if label == "ours_default":
                preds[name] = p
                panels.append((name, p.predict(x[te]), y[te]))
        if args.fewshot_only:
            continue
        shipped = find_file(bases, [f"predictors/{name}.pt", f"predictors/hat/{name}.pt"])
        if shipped is not None:
            hp = LatencyPredictor.load(shipped, feature_norm=FEATURE_NORM, lat_norm=ln)
            row["hat_shipped"] = metrics(hp.predict(x[te]), y[te])
        row.update(baselines(x, y, tr, te, args.seed))
        best_np = max(row["gbm"]["within10_pct"], row["random_forest"]["within10_pct"])
        o, h = row["ours_default"], row["hat_recipe"]
        row["targets"] = {
            "ours_rmse_le_hat_recipe": o["rmse_ms"] <= h["rmse_ms"],
            "ours_within10_ge_hat_recipe": o["within10_pct"] >= h["within10_pct"],
            "ours_within10_ge_best_nonparametric_minus_3": o["within10_pct"] >= best_np - 3,
        }
        results[name] = row
        print(name, json.dumps({k: row[k] for k in row if k not in ("csv",)}, default=str))

    fewshot = {}
    for src, tgt in FEWSHOT_PAIRS:
        if src not in preds or tgt not in data:
            continue
        x, y, tr, va, te, ln = data[tgt]
        shots = tr[:N_SHOTS]
        entry: dict = {"n_rows": N_SHOTS, "full_data_ours": metrics(preds[tgt].predict(x[te]),
                                                                     y[te])}
        t0 = time.perf_counter()
        sx, senc, sdec = parts_data[src]  # the other device's whole dataset
        parts = component_predictors(sx, senc, sdec, ln, seed=args.seed,
                                     recipe=fit_recipe("default", **steps))
        entry["components_train_seconds"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        fp = fit_fewshot(preds[src], x[shots], y[shots], seed=args.seed, components=parts)
        entry["chosen"] = metrics(fp.predict(x[te]), y[te]) | {
            "method": fp.meta["method"], "fit_seconds": round(time.perf_counter() - t0, 2),
            "cv_mse_rel": fp.meta["cv_mse_rel"]}
        fo = fit_fewshot(preds[src], x[shots], y[shots], seed=args.seed)
        entry["chosen_from_predictor_only"] = metrics(fo.predict(x[te]), y[te]) | {
            "method": fo.meta["method"]}
        for m in METHODS + DATA_METHODS:
            entry[m] = metrics(fit_fewshot(preds[src], x[shots], y[shots], seed=args.seed,
                                           method=m, components=parts).predict(x[te]), y[te])
        entry["source_unadapted"] = metrics(preds[src].predict(x[te]), y[te])
        need = entry["full_data_ours"]["within10_pct"] - 3
        entry["target_within3pts_of_full"] = entry["chosen"]["within10_pct"] >= need
        # robustness: other draws of 50 training rows (same test rows, same choice rule)
        draws = []
        for d in range(1, N_DRAWS):
            other = np.random.default_rng(1000 * args.seed + d).choice(tr, N_SHOTS, replace=False)
            fd = fit_fewshot(preds[src], x[other], y[other], seed=args.seed, components=parts)
            draws.append(metrics(fd.predict(x[te]), y[te]) | {"method": fd.meta["method"]})
        entry["other_draws"] = draws
        entry["draws_within3pts_of_full"] = (
            f"{sum(e['within10_pct'] >= need for e in [entry['chosen'], *draws])}/{N_DRAWS}")
        fewshot[f"{tgt}_from_{src}"] = entry
        print("fewshot", tgt, "<-", src, json.dumps(entry, default=str))

    import sklearn

    report = {
        **run_info(), "numpy": np.__version__, "sklearn": sklearn.__version__,
        "seed": args.seed, "quick": args.quick,
        "split": "seeded shuffle (numpy default_rng(seed).permutation), 80/10/10 train/val/test",
        "metrics": "test split only: RMSE (ms), MAPE (%), share of rows within +-10% (%)",
        "recipes": {"ours_default": asdict(r_def), "hat_recipe": asdict(r_hat),
                    "ours_mlp": asdict(r_mlp)},
        "results": results, "fewshot": fewshot,
    }
    if args.fewshot_only:
        old = json.loads(Path(args.out).read_text())
        report = old | {"fewshot": fewshot, "fewshot_date": report["date"]}
    out = atomic_write_json(args.out, report)
    if panels and not args.fewshot_only:
        scatter_grid(panels, out.with_name("predictor_scatter.png"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
