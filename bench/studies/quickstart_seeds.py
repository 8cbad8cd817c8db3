#!/usr/bin/env python
"""What a user of the quickstart should expect: ``python -m hat.pipeline`` over several seeds.

Runs the README's quickstart (``python -m hat.pipeline --out DIR --seed S``) once per seed, one
after another, and summarises each run's ``results.json``: the latency limits, every model's
predicted and measured latency and BLEU, and HAT's claim in miniature (the found model under the
baseline's latency against the baseline: BLEU difference and measured latency ratio), with the
wall time and the machine's load average while it ran. ``--load N`` runs N busy processes beside
the pipelines (a machine shared with other jobs); ``--label`` names the condition. Summaries
(min / median / max over the runs) are written with the rows; a second call with the same
``--out`` adds its runs to the file (one file for the idle and the loaded condition).

    python -m bench.studies.quickstart_seeds --seeds 1 2 3 --label idle \\
        --out bench/results/quickstart_seeds_cpu_epyc.json
    python -m bench.studies.quickstart_seeds --seeds 1 2 3 --label loaded --load 2 \\
        --out bench/results/quickstart_seeds_cpu_epyc.json
    python -m bench.studies.quickstart_seeds --preset tiny --seeds 1 --out /tmp/q.json   # CPU twin
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT


def _burn() -> None:  # pragma: no cover - killed by the parent
    while True:
        pass


def claim(models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """HAT's claim in miniature, as a user reads the quickstart's table: the best found model
    (highest BLEU) measured faster than the baseline, against the baseline: BLEU difference and
    measured latency ratio (None when no found model measured faster)."""
    base = next((m for m in models if m["latency_limit_ms"] is None), None)
    if base is None:
        return None
    faster = [m for m in models if m["latency_limit_ms"] is not None
              and m["measured_latency_ms"] < base["measured_latency_ms"]]
    if not faster:
        return None
    top = max(faster, key=lambda m: (m["bleu"], -m["measured_latency_ms"]))
    return {"found": top["name"], "baseline": base["name"],
            "bleu_found": top["bleu"], "bleu_baseline": base["bleu"],
            "bleu_difference": round(top["bleu"] - base["bleu"], 2),
            "measured_latency_ratio": round(top["measured_latency_ms"]
                                            / base["measured_latency_ms"], 3),
            "dominated_by": base.get("dominated_by")}


def summarize_run(res: dict[str, Any]) -> dict[str, Any]:
    """One pipeline run's rows and its claim."""
    models = [{k: m.get(k) for k in ("name", "latency_limit_ms", "predicted_latency_ms",
                                     "measured_latency_ms", "bleu", "dominated_by")}
              for m in res["models"]]
    errors = [100 * (m["predicted_latency_ms"] / m["measured_latency_ms"] - 1) for m in models]
    return {"limits_ms": sorted(m["latency_limit_ms"] for m in models
                                if m["latency_limit_ms"] is not None),
            "models": models, "claim": claim(models),
            "prediction_error_pct": [round(e, 1) for e in errors],
            "max_abs_prediction_error_pct": round(max(abs(e) for e in errors), 1),
            "total_seconds": res["total_seconds"], "stages": res["stages"]}


def spread(values: list[float]) -> dict[str, float] | None:
    return None if not values else {"min": min(values), "median": statistics.median(values),
                                    "max": max(values), "n": len(values)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Min / median / max of what the README states, per condition (label)."""
    out = {}
    for label in sorted({r["label"] for r in runs}):
        rs = [r for r in runs if r["label"] == label and r.get("rc") == 0]
        claims = [r["claim"] for r in rs if r.get("claim")]
        out[label] = {
            "runs": len(rs),
            "wall_s": spread([r["wall_s"] for r in rs]),
            "load_avg": spread([r["load_avg_mean"] for r in rs]),
            "bleu_difference": spread([c["bleu_difference"] for c in claims]),
            "measured_latency_ratio": spread([c["measured_latency_ratio"] for c in claims]),
            "baseline_bleu": spread([c["bleu_baseline"] for c in claims]),
            "max_abs_prediction_error_pct": spread([r["max_abs_prediction_error_pct"]
                                                    for r in rs]),
            "largest_limit_ms": spread([r["limits_ms"][-1] for r in rs if r["limits_ms"]]),
            "found_within_0.5_bleu_at_lower_latency": sum(
                c["bleu_difference"] >= -0.5 and c["measured_latency_ratio"] < 1
                for c in claims),
            "baseline_dominated": sum(bool(c.get("dominated_by")) for c in claims)}
    return out


def run_one(seed: int, out_dir: Path, preset: str | None) -> dict[str, Any]:
    """One quickstart run, its load average sampled every 5 s."""
    cmd = [sys.executable, "-m", "hat.pipeline", "--out", str(out_dir), "--seed", str(seed)]
    if preset:
        cmd += ["--preset", preset]
    loads: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(5):
            loads.append(os.getloadavg()[0])

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.monotonic()
    with open(out_dir.with_suffix(".log"), "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    done.set()
    row: dict[str, Any] = {"seed": seed, "rc": rc, "wall_s": round(wall, 1), "out": str(out_dir),
                           "load_avg_mean": round(statistics.mean(loads), 2) if loads
                           else round(os.getloadavg()[0], 2), "command": " ".join(cmd[1:])}
    if rc == 0:
        row.update(summarize_run(json.loads((out_dir / "results.json").read_text())))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--label", default="idle", help="the condition's name (idle, loaded, ...)")
    ap.add_argument("--load", type=int, default=0, help="busy processes beside the pipelines")
    ap.add_argument("--preset", default=None, help="the pipeline's preset (default: its own)")
    ap.add_argument("--work", type=Path, default=Path("runs/quickstart_seeds"))
    ap.add_argument("--out", type=Path, required=True, help="JSON to write (runs are added)")
    ap.add_argument("--resummarize", action="store_true",
                    help="no runs: rebuild every row of --out from its run folder's results")
    args = ap.parse_args(argv)
    if args.resummarize:
        rec = json.loads(args.out.read_text())
        for r in rec["runs"]:
            if r.get("rc") != 0:
                continue
            words = r["command"].split()
            r["out"] = r.get("out") or words[words.index("--out") + 1]
            r.update(summarize_run(json.loads((ROOT / r["out"] / "results.json").read_text())))
        rec["summary"] = summary(rec["runs"])
        args.out.write_text(json.dumps(rec, indent=1) + "\n")
        print(json.dumps(rec["summary"], indent=1))
        return 0
    from hat.atomic import atomic_write_json
    from hat.latency.measure.machine import cpu_model

    burners = [mp.Process(target=_burn, daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    prev = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    runs = prev["runs"]
    try:
        for seed in args.seeds:
            out_dir = args.work / f"{args.label}_seed{seed}"
            if out_dir.exists():
                raise SystemExit(f"{out_dir} exists: remove it or choose another --work/--label")
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            row = {"label": args.label, "busy_processes": args.load, **run_one(
                seed, out_dir, args.preset), "date": datetime.date.today().isoformat()}
            runs.append(row)
            print(json.dumps({k: row.get(k) for k in ("label", "seed", "rc", "wall_s",
                                                      "load_avg_mean", "limits_ms", "claim")}),
                  flush=True)
            result = {"how": __doc__.strip().splitlines()[0],
                      "machine": f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores",
                      "python": sys.version.split()[0], "torch": _torch_version(),
                      "runs": runs, "summary": summary(runs)}
            atomic_write_json(args.out, result, indent=1)
    finally:
        for b in burners:
            b.terminate()
    print(json.dumps(summary(runs), indent=1))
    return 0 if all(r["rc"] == 0 for r in runs) else 1


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
