#!/usr/bin/env python
"""Several trainings on one GPU: time-sliced (the default) vs sharing it through CUDA MPS.

The Debian En-De SuperTransformer trains launch-bound (small kernels, short sentences), so
trainings side by side leave the GPU's SMs idle; without MPS the GPU runs one process's kernels
at a time. This starts ``--jobs`` identical trainings (``train.py`` with the shipped debian
SuperTransformer config, fp16, 16k tokens) for ``--seconds`` of training each, once plainly and
once with an MPS control daemon of its own (pipe folder under /tmp: the GPU's settings are not
changed; the daemon quits afterwards), and reports each job's updates/s and target tokens/s
from fairseq's last "train" log line.

    python -m bench.speed.mps_side_by_side --jobs 4 --seconds 90 \
        --out bench/results/mps_side_by_side_h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROOT
from hat.atomic import atomic_write_json
from hat.mps import mps_daemon

CONFIG = "configs/debian.en-de/supertransformer/space0.yml"
TRAIN = ["--fp16", "--max-tokens", "16384", "--log-format", "json", "--log-interval", "25",
         "--max-update", "1000000", "--no-save", "--num-workers", "2"]


def last_train_stats(log: str) -> dict[str, float] | None:
    """updates/s, target tokens/s and updates of fairseq's last end-of-epoch "train" line."""
    for line in reversed(log.splitlines()):
        if "| train | {" in line:
            rec = json.loads(line.split("| train | ", 1)[1])
            return {"updates_per_s": float(rec["train_ups"]), "wps": float(rec["train_wps"]),
                    "updates": int(rec["train_num_updates"])}
    return None


def summarize(jobs: list[dict[str, float] | None]) -> dict[str, Any]:
    """Per-job stats, their sum (the GPU's aggregate) and the median job."""
    ok = [j for j in jobs if j]
    return {"jobs": jobs, "finished": len(ok),
            "aggregate_updates_per_s": round(sum(j["updates_per_s"] for j in ok), 2),
            "aggregate_wps": round(sum(j["wps"] for j in ok)),
            "median_updates_per_s": statistics.median(j["updates_per_s"] for j in ok)
            if ok else None}


def run_jobs(n: int, seconds: float, work: Path, env: dict[str, str]) -> dict[str, Any]:
    procs = []
    for k in range(n):
        argv = [sys.executable, str(ROOT / "train.py"), f"--configs={ROOT / CONFIG}", *TRAIN,
                "--stop-time-hours", f"{seconds / 3600:.5f}", "--save-dir", str(work / str(k)),
                "--seed", str(k + 1)]
        log = open(work / f"{k}.log", "w")
        procs.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, **env}, cwd=ROOT), log))
    for p, log in procs:
        p.wait()
        log.close()
    return summarize([last_train_stats((work / f"{k}.log").read_text()) for k in range(n)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=90.0, help="training time of each job")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench.speed.mps_side_by_side: needs a CUDA GPU (torch sees none)")
    work = Path(tempfile.mkdtemp(prefix="hat_mps_"))
    res: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                           "config": CONFIG, "train_args": TRAIN, "jobs": args.jobs,
                           "seconds_each": args.seconds}
    (work / "plain").mkdir()
    res["time_sliced"] = run_jobs(args.jobs, args.seconds, work / "plain", {})
    with mps_daemon(lambda m: print(m, flush=True)) as mps:
        if not mps:
            raise SystemExit("bench.speed.mps_side_by_side: no CUDA MPS daemon could start")
        (work / "mps").mkdir()
        res["mps"] = run_jobs(args.jobs, args.seconds, work / "mps", mps)
    a, b = res["time_sliced"]["aggregate_updates_per_s"], res["mps"]["aggregate_updates_per_s"]
    res["mps_speedup"] = round(b / a, 3) if a else None
    atomic_write_json(args.out, res, indent=1)
    print(json.dumps({k: res[k] for k in ("device", "jobs", "mps_speedup")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
