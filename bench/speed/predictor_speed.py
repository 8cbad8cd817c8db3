#!/usr/bin/env python
"""Latency-predictor query speed: single-query latency and batched throughput (queries/s).

Uses HAT's shipped TITAN Xp predictor when the reference data (or a fetched copy) is present,
otherwise a randomly initialised network of the same shape (speed does not depend on weights).
Writes bench/results/predictor_speed.json.

    python -m bench.speed.predictor_speed [--ckpt PATH --lat-norm 200]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import ROOT
from hat.atomic import atomic_write_json
from hat.latency.measure.machine import cpu_model
from hat.latency.predict.predictor import FEATURE_NORM, LatencyMLP, LatencyPredictor

BATCHES = (1, 125, 1000, 10_000, 100_000)


def random_features(n: int, seed: int = 0) -> np.ndarray:
    """Feature vectors in the range of HAT's WMT search space."""
    rng = np.random.default_rng(seed)
    return np.c_[
        rng.choice([512, 640], n), np.full(n, 6), rng.uniform(1024, 3072, n),
        rng.uniform(4, 8, n), rng.choice([512, 640], n), rng.integers(1, 7, n),
        rng.uniform(1024, 3072, n), rng.uniform(4, 8, n), rng.uniform(4, 8, n),
        rng.uniform(1, 3, n),
    ].astype(np.float32)


def _time(fn, min_seconds: float = 1.0) -> float:
    """Best-of-5 mean seconds per call, each round running for about min_seconds / 5."""
    fn()
    best = float("inf")
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_seconds / 5:
                break
        best = min(best, dt / n)
    return best


def main() -> int:
    """Measure and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--lat-norm", type=float, default=200.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "predictor_speed.json"))
    args = ap.parse_args()
    ref = Path(os.environ.get("HAT_REFERENCE_DIR", ROOT.parent / "shared" / "hat-reference"))
    ckpt = args.ckpt
    if ckpt is None:
        for c in (ref / "predictors" / "wmt14ende_gpu_titanxp.pt",
                  ROOT / "latency_dataset" / "predictors" / "hat" / "wmt14ende_gpu_titanxp.pt"):
            if c.is_file():
                ckpt = str(c)
                break
    if ckpt:
        pred = LatencyPredictor.load(ckpt, lat_norm=args.lat_norm)
    else:
        torch.manual_seed(0)
        pred = LatencyPredictor([LatencyMLP().state_dict()], FEATURE_NORM, args.lat_norm)
    feats = random_features(max(BATCHES))
    results: dict = {}
    one = feats[0].tolist()
    for threads in (1, 2):
        pred.threads = threads
        r: dict = {"batched": {}}
        s = _time(lambda: pred.predict_one(one))
        r["single_query"] = {"us_per_query": s * 1e6, "queries_per_s": 1 / s}
        for n in BATCHES:
            x = feats[:n]
            s = _time(lambda x=x: pred.predict(x))
            r["batched"][str(n)] = {"ms_per_call": s * 1e3, "queries_per_s": n / s}
            print(f"threads {threads} batch {n:>6}: {n / s:10.0f} queries/s "
                  f"({s * 1e3:.3f} ms/call)")
        print(f"threads {threads} single query: {r['single_query']['us_per_query']:.1f} us")
        results[f"threads_{threads}"] = r
    pred.threads = 1
    # reference point: the same network evaluated with torch
    net = LatencyMLP()
    net.load_state_dict(pred.state_dict())
    xt = torch.tensor(feats[:10_000] / np.asarray(FEATURE_NORM, dtype=np.float32))
    with torch.inference_mode():
        s = _time(lambda: net(xt))  # torch's own thread setting
    results["torch_forward_batch_10000_queries_per_s"] = 10_000 / s
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU: {cpu_model()} ({os.cpu_count()} cores), "
                  f"torch threads {torch.get_num_threads()}",
        "torch": torch.__version__, "numpy": np.__version__,
        "predictor": ckpt or "random init (same shape)", "n_members": len(pred.members),
        "load_average_1min": os.getloadavg()[0],
        "note": "float32 torch inference (LatencyPredictor.predict), chunks of 2048 rows; "
                "LatencyPredictor.threads = 1 by default; CPU may be shared with other jobs",
        "results": results,
        "target_batched_ge_100k_per_s": max(
            v["queries_per_s"] for r in results.values() if isinstance(r, dict)
            and "batched" in r for v in r["batched"].values()) >= 100_000,
    }
    print(f"wrote {atomic_write_json(args.out, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
