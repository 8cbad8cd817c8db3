#!/usr/bin/env python
"""Effect of the reference correction on predictor accuracy, from one measured latency dataset.

Our CSVs keep each row's uncorrected measurement (``latency_mean_*_raw``) next to the
reference-corrected one (HAT's columns). This trains the default predictor on each version (same
seeded 80/10/10 split) and reports test accuracy, plus how the residuals of a cross-fitted
predictor on the raw data drift over the run (blocks of consecutive rows) next to the reference's
correction factor for the same rows: where the two disagree, the reference did not track the
drift.

    python -m bench.studies.latency_noise \
        latency_dataset/noise_study/wmt14ende_cpu_epyc_shared_load.csv
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

from bench.common import ROOT
from hat.atomic import atomic_write_json
from hat.latency.csvio import load_latency_csv
from hat.latency.predict.drift import cross_fitted_predictions, measurement_order
from hat.latency.predict.fit import fit_recipe, mlp_fitter, split_indices, train_predictor
from hat.latency.predict.report import metrics


def main() -> int:
    """Run the study and write bench/results/latency_noise_<csv stem>.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--lat-norm", type=float, default=1000.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--block", type=int, default=50, help="rows per drift block")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, y, extra = load_latency_csv(args.csv)
    need = ("latency_mean_encoder_raw", "latency_mean_decoder_raw", "drift_factor_decoder")
    missing = [c for c in need if c not in extra]
    if missing:
        print(f"error: {args.csv} lacks the columns {missing} (not one of our measured CSVs)",
              file=sys.stderr)
        return 2
    raw = (np.asarray(extra["latency_mean_encoder_raw"], float)
           + np.asarray(extra["latency_mean_decoder_raw"], float))
    factor = np.asarray(extra["drift_factor_decoder"], float)
    tr, va, te = split_indices(len(y), args.seed)
    versions = {}
    for label, target in (("drift_corrected", y), ("raw", raw)):
        p = train_predictor(x, target, tr, va, fit_recipe("default"), lat_norm=args.lat_norm,
                            seed=args.seed, order=measurement_order(extra, len(y)))
        versions[label] = metrics(p.predict(x[te]), target[te])
        print(label, json.dumps(versions[label]))
    pred = cross_fitted_predictions(x, raw, mlp_fitter("mlp", args.lat_norm), seed=args.seed)
    rel = (pred - raw) / raw
    blocks = []
    for s in range(0, len(y), args.block):
        r, f = rel[s:s + args.block], factor[s:s + args.block]
        blocks.append({"rows": [s, s + len(r)], "timestamp": str(extra["timestamp"][s]),
                       "raw_residual_mean": float(r.mean()),
                       "implied_factor": float(1 + r.mean()),
                       "reference_factor_mean": float(f.mean()),
                       "raw_within10_pct": float(100 * np.mean(np.abs(r) <= 0.10))})
        b = blocks[-1]
        print(f"rows {s:4d}+: raw residual {b['raw_residual_mean']:+.3f} (implied factor "
              f"{b['implied_factor']:.3f}), reference factor {b['reference_factor_mean']:.3f}, "
              f"within 10% {b['raw_within10_pct']:.0f}%")
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "csv": str(args.csv), "rows": int(len(y)), "seed": args.seed,
        "rows_corrected": int(np.sum(factor != 1.0)),
        "test_split": {"n_test": int(len(te)), **versions},
        "cross_fitted_raw_within10_pct": float(100 * np.mean(np.abs(rel) <= 0.10)),
        "blocks": blocks,
        "how": "default predictor recipe, seeded 80/10/10 split; blocks: 5-fold cross-fitted "
               "relative residuals of the raw latency, mean per block of consecutive rows",
    }
    out = args.out or ROOT / "bench" / "results" / f"latency_noise_{Path(args.csv).stem}.json"
    print(f"wrote {atomic_write_json(out, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
