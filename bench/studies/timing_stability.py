#!/usr/bin/env python
"""Where the latency noise comes from: the same SubTransformers timed again and again.

Measures a few fixed SubTransformers (the smallest, the largest and ``--rows`` seeded rows of the
dataset) in rotation, ``--cycles`` times, with the dataset config's protocol, and reports for each
setting: the spread of single runs inside one measurement, the spread of one SubTransformer's
measurement across cycles (what a predictor sees as noise), and the spread of its ratio to the
largest SubTransformer measured right after it (what a reference measured next to every row
could remove). Settings (``--settings``): ``plain`` (as configured); ``pin`` (this process on one
core, ``--pin-core``); ``nogc`` (Python's garbage collector off; ``measure`` now pauses it
anyway); ``interleave`` (the dataset's interleaved reference: spread of the raw and of the
corrected values across cycles).

    python -m bench.studies.timing_stability configs/wmt14.en-de/latency_dataset/gpu_h100.yml \
        --cycles 10 --settings plain pin+nogc --out bench/results/timing_stability_h100.json
    (any other option is a latency_dataset.py key overriding the config, e.g. --latiter 5)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
from pathlib import Path

import numpy as np

from hat.atomic import atomic_write_json
from hat.latency.measure import cli as M
from hat.latency.measure import dataset as D
from hat.latency.measure import machine as H
from hat.latency.measure import timing as T


def cv(x: np.ndarray) -> float:
    """Relative standard deviation (%)."""
    return float(100 * np.std(x) / np.mean(x))


def run_setting(meter: T.LatencyMeter, configs: dict, cycles: int) -> dict:
    """Rotate over ``configs`` ``cycles`` times; per config: block means and single runs."""
    blocks: dict[str, list] = {k: [] for k in configs}
    runs: dict[str, list] = {k: [] for k in configs}
    for _ in range(cycles):
        for name, cfg in configs.items():
            m, dec_runs = meter.measure(cfg, return_runs=True)
            blocks[name].append((m.enc_mean, m.dec_mean))
            runs[name].append(dec_runs)
    out = {}
    big = np.asarray(blocks["largest"])
    for name in configs:
        b = np.asarray(blocks[name])
        tot = b.sum(1)
        within = [cv(np.asarray(r)) for r in runs[name]]
        out[name] = {
            "total_ms_median": float(np.median(tot)),
            "within_measurement_run_cv_pct": float(np.median(within)),
            "across_cycles_cv_pct": cv(tot),
            "ratio_to_largest_cv_pct": cv(tot / big.sum(1)) if name != "largest" else None,
            "totals_ms": [round(float(t), 3) for t in tot],
            "decoder_runs_ms_first_cycle": [round(float(t), 3) for t in runs[name][0]],
        }
    return out


def run_interleaved(meter: T.LatencyMeter, configs: dict, cycles: int, steps: int) -> dict:
    """The dataset's interleaved reference (smallest SubTransformer, ``steps`` decode steps):
    spread across cycles of each SubTransformer's own runs (raw) and of its reference-corrected
    value (per-run ratios x the first reference measured)."""
    ref_cfg = configs["smallest"]
    raw: dict[str, list] = {k: [] for k in configs if k != "smallest"}
    corrected: dict[str, list] = {k: [] for k in raw}
    base = None
    for _ in range(cycles):
        for name in raw:
            r, ref, ratio = meter.measure_interleaved(configs[name], ref_cfg, steps)
            base = base or ref
            raw[name].append(r.total)
            corrected[name].append(ratio.enc_mean * base.enc_mean + ratio.dec_mean * base.dec_mean)
    return {name: {"raw_across_cycles_cv_pct": cv(np.asarray(raw[name])),
                   "corrected_across_cycles_cv_pct": cv(np.asarray(corrected[name])),
                   "raw_ms": [round(float(t), 3) for t in raw[name]],
                   "corrected_ms": [round(float(t), 3) for t in corrected[name]]}
            for name in raw}


def graph_vs_eager(meter: T.LatencyMeter, cfg: object) -> float:
    """Largest |graph - eager| / max|eager| over the decoder's last-step output (random input)."""
    import torch

    model = meter.model
    model.set_sample_config(cfg)
    src = torch.randint(4, 1000, meter.src.shape, device=meter.device)
    prev = torch.randint(4, 1000, meter.prev.shape, device=meter.device)
    with torch.inference_mode():
        enc = model.encoder.reorder_encoder_out(model.encoder(src, None, has_padding=False),
                                                meter.beam_order)
        decode = meter.decoder_run(enc, prev.size(1), prev)
        eager = decode()[0].clone()
        graph = meter._capture(decode)()[0].clone()
    return float((graph - eager).abs().max() / eager.abs().max())


def main() -> int:
    """Measure and print/write the stability report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="a configs/<task>/latency_dataset/<hw>.yml")
    ap.add_argument("--cycles", type=int, default=8)
    ap.add_argument("--rows", type=int, default=2, help="seeded dataset rows to include")
    ap.add_argument("--settings", nargs="+", default=["plain", "pin+nogc"],
                    help="plain, pin, nogc, pin+nogc, interleave (in this order of running)")
    ap.add_argument("--pin-core", type=int, default=None,
                    help="core for 'pin' (default: the last one this process may use)")
    ap.add_argument("--out", default=None)
    a, overrides = ap.parse_known_args()  # the rest: latency_dataset.py keys (--latiter 5 ...)

    args = M.parse_args([f"--configs={a.config}", *overrides])
    proto = M.protocol_from_args(args)
    model, space, _ = M.build_model(args, args.seed)
    meter = T.LatencyMeter(model, proto)
    configs = {"smallest": space.smallest()}
    for i in range(a.rows):
        configs[f"row{i}"] = D.sample_row(space, args.seed, i)
    configs["largest"] = D.reference_config(space)
    cores = sorted(os.sched_getaffinity(0))
    pin = a.pin_core if a.pin_core is not None else cores[-1]
    report = {"what": "one process times the same SubTransformers in rotation",
              "config": a.config, "protocol": {"iters": proto.iters, "warmup": proto.warmup,
                                               "device": proto.device, "timer": proto.timer,
                                               "threads": proto.threads},
              "cycles": a.cycles, "machine": H.machine_info(meter.device),
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "settings": {}}
    if proto.cuda_graph:
        report["graph_vs_eager_max_rel_diff"] = graph_vs_eager(meter, configs["largest"])
        print(f"graph replay vs eager decode (largest): max rel diff "
              f"{report['graph_vs_eager_max_rel_diff']:.2e}", flush=True)
    for setting in a.settings:
        os.sched_setaffinity(0, {pin} if "pin" in setting else set(cores))
        (gc.disable if "nogc" in setting else gc.enable)()
        if setting == "interleave":
            res = run_interleaved(meter, configs, a.cycles, args.lat_ref_interleave_steps)
            report["settings"][setting] = res
            print(f"== interleaved reference (smallest, {args.lat_ref_interleave_steps} decode "
                  "steps)", flush=True)
            for name, r in res.items():
                print(f"  {name:9s} across cycles cv: raw {r['raw_across_cycles_cv_pct']:5.2f}% "
                      f" corrected {r['corrected_across_cycles_cv_pct']:5.2f}%", flush=True)
            continue
        report["settings"][setting] = run_setting(meter, configs, a.cycles)
        gc.enable()
        print(f"== {setting}", flush=True)
        for name, r in report["settings"][setting].items():
            ratio = r["ratio_to_largest_cv_pct"]
            print(f"  {name:9s} {r['total_ms_median']:9.2f} ms  runs cv "
                  f"{r['within_measurement_run_cv_pct']:5.2f}%  across cycles cv "
                  f"{r['across_cycles_cv_pct']:5.2f}%  ratio-to-largest cv "
                  f"{'-' if ratio is None else f'{ratio:5.2f}%'}", flush=True)
    if a.out:
        atomic_write_json(Path(a.out), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
