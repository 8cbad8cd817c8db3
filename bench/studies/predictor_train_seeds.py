#!/usr/bin/env python
"""Our default recipe vs HAT's recipe over several training seeds (and split seeds).

A recipe's result on one split still depends on its training seed (initial weights, batch
order). ``bench/studies/predictor_accuracy.py`` compares one training seed per split; this
trains both
recipes with training seeds 1..N on split seed 1 of each of HAT's CSVs and reports, per CSV and
recipe, the test RMSE / MAPE / share within +-10 % of every seed, their mean, standard deviation,
minimum and maximum, and how often ours is at least as good as HAT's recipe at the same
training seed. With ``--split-seeds 1,...,10`` every (split seed, training seed) pair is one
paired run: a different test split of the same device, a stand-in for further datasets. Runs on
2 worker processes (one torch thread each). Writes ``bench/results/predictor_train_seeds.json``.

    python -m bench.studies.predictor_train_seeds [--data DIR] [--split-seeds 1] [--train-seeds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from multiprocessing import Pool

import numpy as np

from bench.common import NAMES, ROOT, data_bases, find_csv, run_info, train_on
from hat.atomic import atomic_write_json
from hat.latency.csvio import load_latency_csv
from hat.latency.predict.fit import split_indices
from hat.latency.predict.report import metrics

RECIPES = ("default", "hat")
KEYS = ("rmse_ms", "mape_pct", "within10_pct")


def _train(job: tuple[str, str, int, str, int]) -> tuple[str, str, int, int, dict]:
    name, csv, split_seed, recipe, train_seed = job
    warnings.filterwarnings("ignore")
    x, y, _ = load_latency_csv(csv)
    tr, va, te = split_indices(len(y), split_seed)
    p = train_on(name, x, y, tr, va, recipe, train_seed)
    return name, recipe, split_seed, train_seed, metrics(p.predict(x[te]), y[te]) | {
        "split_seed": split_seed, "train_seed": train_seed}


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per recipe: the runs and mean/sd/min/max of each metric; ours vs HAT's paired by seed."""
    out: dict = {}
    for recipe, ms in runs.items():
        out[recipe] = {"runs": ms}
        for k in KEYS:
            v = np.array([m[k] for m in ms])
            out[recipe][k] = {"mean": float(v.mean()), "sd": float(v.std()),
                              "min": float(v.min()), "max": float(v.max())}
    o, h = runs["default"], runs["hat"]
    out["ours_mean_rmse_le_hat_mean"] = out["default"]["rmse_ms"]["mean"] <= \
        out["hat"]["rmse_ms"]["mean"]
    out["ours_mean_within10_ge_hat_mean"] = out["default"]["within10_pct"]["mean"] >= \
        out["hat"]["within10_pct"]["mean"]
    out["runs_ours_rmse_gt_hat"] = [f"split {a['split_seed']} train {a['train_seed']}"
                                    for a, b in zip(o, h) if a["rmse_ms"] > b["rmse_ms"]]
    out["runs_ours_within10_lt_hat"] = [f"split {a['split_seed']} train {a['train_seed']}"
                                        for a, b in zip(o, h)
                                        if a["within10_pct"] < b["within10_pct"]]
    out["seeds_ours_rmse_le_hat"] = f"{sum(a['rmse_ms'] <= b['rmse_ms'] for a, b in zip(o, h))}" \
        f"/{len(o)}"
    out["seeds_ours_within10_ge_hat"] = \
        f"{sum(a['within10_pct'] >= b['within10_pct'] for a, b in zip(o, h))}/{len(o)}"
    return out


def main() -> int:
    """Run the benchmark and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder with <name>_all.csv")
    ap.add_argument("--split-seeds", default="1", help="comma-separated split seeds")
    ap.add_argument("--train-seeds", type=int, default=5, help="training seeds 1..N")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" /
                                         "predictor_train_seeds.json"))
    args = ap.parse_args()
    bases = data_bases(args.data)
    csvs = {n: find_csv(n, bases) for n in NAMES}
    csvs = {n: str(p) for n, p in csvs.items() if p is not None}
    if not csvs:
        print(f"no latency CSVs found under {[str(b) for b in bases]}", file=sys.stderr)
        return 1
    splits = [int(v) for v in args.split_seeds.split(",")]
    jobs = [(n, c, sp, r, s) for n, c in csvs.items() for r in RECIPES for sp in splits
            for s in range(1, args.train_seeds + 1)]
    with Pool(args.workers) as pool:
        done = pool.map(_train, jobs, chunksize=1)
    runs: dict[str, dict[str, list[dict]]] = {n: {r: [] for r in RECIPES} for n in csvs}
    for name, recipe, _, _, m in sorted(done, key=lambda d: d[:4]):
        runs[name][recipe].append(m)
    results = {n: {"csv": csvs[n]} | summarize(runs[n]) for n in csvs}
    for n, r in results.items():
        print(n, json.dumps({k: r[k] for k in r if k.startswith(("ours", "seeds"))}),
              " ".join(f"{rec}: RMSE {r[rec]['rmse_ms']['mean']:.2f}+-{r[rec]['rmse_ms']['sd']:.2f}"
                       for rec in RECIPES))
    report = {
        **run_info(), "split_seeds": splits,
        "train_seeds": list(range(1, args.train_seeds + 1)),
        "recipes": {"default": "ours (default)", "hat": "HAT's recipe, seeded"},
        "metrics": "test split only: RMSE (ms), MAPE (%), share of rows within +-10% (%)",
        "results": results,
    }
    atomic_write_json(args.out, report, indent=1)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
