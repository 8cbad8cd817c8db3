#!/usr/bin/env python
"""Latency-dataset measurement speed (rows/minute) and, optionally, test-retest noise evidence.

Measures ``--rows`` rows of a latency dataset with the protocol of a latency_dataset YAML
(reference re-measurements and retries included, as in a real run) and writes
bench/results/latency_bench_<hardware>.json (hardware = the YAML's file stem).

``--retest N`` measures the same N SubTransformers in pass A, again in pass B (the machine as
it is) and, with ``--stress K``, in pass C (K busy-loop processes switching on/off every
``--stress-period`` s, mimicking other jobs on a shared machine); B and C continue A's periodic
reference baseline. Agreement with A is reported for "off" (each row's first attempt,
uncorrected: no noise control), "retry_only" (kept attempt, uncorrected) and "on" (kept, times
the correction factors).
``--timer wall|thread`` compares elapsed time with the measuring thread's CPU time.

    python -m bench.speed.latency_bench --configs configs/wmt14.en-de/latency_dataset/cpu_epyc.yml
    python -m bench.speed.latency_bench --configs configs/wmt14.en-de/latency_dataset/gpu_h100.yml
    python -m bench.speed.latency_bench --rows 4 --retest 16 --stress 1 --timer wall --out x.json
    python -m bench.speed.latency_bench --summary   # -> bench/results/latency_bench.json

``--summary`` measures nothing: it gathers rows/minute from the latency_bench_<hw>.json files,
from the sessions of the committed datasets' sidecars (rows and seconds of the real runs, e.g.
the H100's) and predictor queries/s from predictor_speed.json into one latency_bench.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import ROOT
from hat.atomic import atomic_write_json
from hat.latency.measure.cli import noise_from_args, parse_args, protocol_from_args
from hat.latency.measure.dataset import measure_dataset
from hat.latency.measure.machine import machine_info
from hat.latency.measure.model import build_model
from hat.latency.measure.noise import NoiseControl
from hat.latency.measure.timing import LatencyMeter, relative_agreement


def _burn(stop: float, period: float) -> None:
    """Busy for ``period`` s, idle for ``period`` s, ... until ``stop`` (period 0: always busy)."""
    t0 = time.time()
    while time.time() < stop:
        if period and int((time.time() - t0) / period) % 2:
            time.sleep(0.05)


def summarize(results: Path, datasets: Path) -> dict:
    """Collect measured rows/minute and predictor speed from earlier runs (see --summary)."""
    out: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "measurement": {}, "datasets": {}, "predictor": None}
    for f in sorted(results.glob("latency_bench_*.json")):
        d = json.loads(f.read_text())
        if "rows_per_min" in d:
            out["measurement"][f.stem.removeprefix("latency_bench_")] = {
                k: d.get(k) for k in ("date", "device", "torch", "threads", "timer", "latiter",
                                      "warmup", "rows", "rows_per_min", "seconds_per_row",
                                      "mean_row_ms", "load_avg_start")} | {"source": f.name}
    for f in sorted(datasets.glob("*.csv.meta.json")):
        d = json.loads(f.read_text())
        sessions = [s for s in d.get("sessions", []) if s.get("seconds")]
        rows = sum(s["rows_after"] - s["rows_before"] for s in sessions)
        secs = sum(s["seconds"] for s in sessions)
        if rows and secs:
            out["datasets"][d.get("csv", f.name)] = {
                "machine": d.get("machine"), "protocol": d.get("protocol"), "rows": rows,
                "seconds": round(secs, 1), "rows_per_min": round(60 * rows / secs, 3),
                "note": "whole dataset run(s): reference re-measurements and retries included"}
    speed = results / "predictor_speed.json"
    if speed.is_file():
        d = json.loads(speed.read_text())
        best = {k: max((v["queries_per_s"], int(n)) for n, v in r["batched"].items())
                for k, r in d["results"].items() if isinstance(r, dict) and "batched" in r}
        out["predictor"] = {
            "date": d["date"], "device": d["device"],
            "load_average_1min": d.get("load_average_1min"),
            "single_query_per_s": {k: r["single_query"]["queries_per_s"]
                                   for k, r in d["results"].items() if isinstance(r, dict)
                                   and "single_query" in r},
            "batched_best_per_s": {k: {"queries_per_s": q, "batch": n}
                                   for k, (q, n) in best.items()},
            "target_batched_ge_100k_per_s": d.get("target_batched_ge_100k_per_s"),
            "source": speed.name}
    return out


def _pass(meter, space, noise, n, seed, stress=0, period=0.0, baseline=None):  # noqa: ANN001, ANN202
    procs = []
    if stress:
        stop = time.time() + 24 * 3600
        procs = [mp.Process(target=_burn, args=(stop, period), daemon=True)
                 for _ in range(stress)]
        for p in procs:
            p.start()
    try:
        with tempfile.TemporaryDirectory() as d:
            return measure_dataset(meter, space, Path(d) / "retest.csv", n, seed=seed,
                                   noise=noise, progress=False, baseline=baseline)
    finally:
        for p in procs:
            p.terminate()


def _compare(a, b) -> dict:  # noqa: ANN001
    out: dict = {}
    for name, pick in (("off", lambda r: r.first), ("retry_only", lambda r: r.raw),
                       ("on", lambda r: r.value)):
        out[name] = {part: relative_agreement([getattr(pick(r), attr) for r in a.rows],
                                              [getattr(pick(r), attr) for r in b.rows])
                     for part, attr in (("total", "total"), ("encoder", "enc_mean"),
                                        ("decoder", "dec_mean"))}
    out["retried_rows"] = sum(r.attempts > 1 for r in b.rows)
    out["reference_ms"] = [round(m.total, 1) for m in b.references]
    out["drift_factors_decoder"] = sorted({round(r.factors[1], 3) for r in b.rows})
    return out


def retest(meter, space, noise: NoiseControl, n: int, seed: int, stress: int,  # noqa: ANN001
           period: float) -> dict:
    """Measure the same N configs in pass A, then again in pass B (the machine as it is) and,
    with ``stress``, pass C (K busy processes, on/off every ``period`` s). B and C continue A's
    periodic reference baseline, as a resumed or long run does. "off": each row's first
    attempt, uncorrected; "retry_only": the kept attempt, uncorrected; "on": the kept,
    corrected value."""
    t0 = time.perf_counter()
    a = _pass(meter, space, noise, n, seed)
    base = a.references[0] if a.references else None
    out: dict = {"n": n, "noise": noise.__dict__, "reference_ms_a": [
        round(m.total, 1) for m in a.references]}
    out["natural"] = _compare(a, _pass(meter, space, noise, n, seed, baseline=base))
    if stress:
        out["stress"] = _compare(a, _pass(meter, space, noise, n, seed, stress, period, base))
        out["stress"].update(procs=stress, period_s=period)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="configs/wmt14.en-de/latency_dataset/cpu_epyc.yml")
    ap.add_argument("--rows", type=int, default=10, help="rows timed for rows/minute")
    ap.add_argument("--latiter", type=int, help="override the YAML's latiter")
    ap.add_argument("--threads", type=int, help="override the YAML's latcpu-threads")
    ap.add_argument("--timer", choices=("wall", "thread"), help="override latcpu-timer")
    ap.add_argument("--retest", type=int, default=0, metavar="N", help="test-retest on N rows")
    ap.add_argument("--stress", type=int, default=0, metavar="K",
                    help="also a retest pass with K busy processes (on/off, --stress-period)")
    ap.add_argument("--stress-period", type=float, default=60.0, metavar="S")
    ap.add_argument("--retest-ref-every", type=int, default=4, metavar="K",
                    help="periodic reference interval during the retest (short runs)")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--out", help="JSON path (default bench/results/latency_bench_<hw>.json)")
    ap.add_argument("--summary", action="store_true",
                    help="only gather earlier results into bench/results/latency_bench.json")
    opts = ap.parse_args()
    if opts.summary:
        out = opts.out or ROOT / "bench" / "results" / "latency_bench.json"
        summary = summarize(ROOT / "bench" / "results", ROOT / "latency_dataset")
        print(json.dumps(summary, indent=2))
        print(f"wrote {atomic_write_json(out, summary, indent=2)}")
        return 0

    argv = ["--configs", opts.configs, "--latsilent"]
    if opts.latiter is not None:
        argv += ["--latiter", str(opts.latiter)]
    if opts.threads is not None:
        argv += ["--latcpu-threads", str(opts.threads)]
    if opts.timer is not None:
        argv += ["--latcpu-timer", opts.timer]
    args = parse_args(argv)
    protocol, noise = protocol_from_args(args), noise_from_args(args)
    model, space, info = build_model(args, 1)
    meter = LatencyMeter(model, protocol)
    hw = Path(opts.configs).stem
    print(f"protocol: device {protocol.device}, threads {protocol.threads}, timer "
          f"{protocol.timer}, length "
          f"{protocol.src_len}, beam {protocol.beam}, warmup {protocol.warmup}, latiter "
          f"{protocol.iters}, {'train mode' if protocol.train_mode else 'eval/inference_mode'}; "
          f"noise {noise}; model {info}")
    result: dict = {
        "hardware": hw,
        "device": machine_info(meter.device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": protocol.threads,
        "timer": protocol.timer,
        "latiter": protocol.iters,
        "warmup": protocol.warmup,
        "src_len": protocol.src_len,
        "beam": protocol.beam,
        "model": info,
        "noise": noise.__dict__,
        "load_avg_start": os.getloadavg(),
    }
    if opts.rows > 0:
        stamps: list[float] = []
        with tempfile.TemporaryDirectory() as d:
            res = measure_dataset(meter, space, Path(d) / "bench.csv", opts.rows,
                                  seed=opts.seed, noise=noise, progress=False,
                                  on_row=lambda row: stamps.append(time.perf_counter()))
        # steady state: between the first and the last row (the start-up reference excluded;
        # later references every ref_every rows are part of a real run and stay in)
        steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else res.seconds
        result.update(rows=opts.rows, seconds=round(res.seconds, 2),
                      rows_per_min=round(60 / steady, 3),
                      seconds_per_row=round(steady, 3),
                      rows_per_min_incl_startup=round(60 * opts.rows / res.seconds, 3),
                      mean_row_ms=round(sum(r.value.total for r in res.rows) / opts.rows, 3))
        print(f"{opts.rows} rows in {res.seconds:.1f} s: {result['rows_per_min']:.2f} rows/min "
              f"steady ({result['seconds_per_row']:.2f} s/row; "
              f"{result['rows_per_min_incl_startup']:.2f} incl. the start-up reference; mean "
              f"latency {result['mean_row_ms']} ms)")
    if opts.retest > 0:
        rt_noise = dataclasses.replace(noise, ref_every=opts.retest_ref_every)
        rt = retest(meter, space, rt_noise, opts.retest, opts.seed + 1, opts.stress,
                    opts.stress_period)
        result["retest"] = rt
        for case in ("natural", "stress"):
            for name in ("off", "retry_only", "on") if case in rt else ():
                t = rt[case][name]["total"]
                print(f"retest {case} {name:10s}: median |A-B|/A {t['median_rel_err_pct']:.2f}%, "
                      f"mean {t['mean_rel_err_pct']:.2f}%, within 10% {t['within10_pct']:.0f}%, "
                      f"within 5% {t['within5_pct']:.0f}% (n={t['n']})")
    result["load_avg_end"] = os.getloadavg()
    out = opts.out or ROOT / "bench" / "results" / f"latency_bench_{hw}.json"
    print(f"wrote {atomic_write_json(out, result, indent=2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
