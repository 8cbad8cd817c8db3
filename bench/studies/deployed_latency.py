#!/usr/bin/env python
"""Do SubTransformers run at the latency their dataset says (meter vs deployed beam search)?

The latency meter against the deployed beam search, over SubTransformers of one search space.

For ``--samples`` SubTransformers drawn from the space of a latency-dataset YAML (seeded, the
smallest and the largest first), each at batch 1 on the YAML's dummy source (its
``lat-sentence-length`` tokens, beam ``lat-beam``, generators forced to that many decoder steps):

* ``meter_generate``: what a dataset with ``lat-deployment: generate`` holds for it (the
  SuperTransformer sliced to the SubTransformer, CUDA-graph replays with ``latgpu-cuda-graph``);
* ``meter_hat``: HAT's protocol, for scale;
* ``deployed``: ``hat.generate`` on the SubTransformer exported on its own (``build_compact``),
  a whole ``generate`` call as ``python -m hat.bleu --generator graph`` makes it (median of
  ``--iters`` after warm-up; on a GPU wall time with the device synchronized, on a CPU the
  meter's own clock, e.g. the thread's CPU time with ``latcpu-timer thread``).

Writes JSON (per SubTransformer and the ratio deployed / meter_generate summarised) and a PNG.

    python -m bench.studies.deployed_latency                 # GPU, the Debian En-De space
    python -m bench.studies.deployed_latency --device cpu --samples 3 --iters 3 --out /tmp/d.json
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS, run_info
from bench.speed.generate_speed import timed
from hat.atomic import atomic_write_json
from hat.export import build_compact
from hat.generate import BeamSettings, GraphBeamSearch
from hat.latency.measure.cli import parse_args, protocol_from_args
from hat.latency.measure.model import build_model
from hat.latency.measure.timing import DUMMY_TOKEN, EOS, LatencyMeter, Timer
from hat.search.latency import calibration_configs
from hat.space import SubConfig

CONFIG = "configs/debian.en-de/latency_dataset/gpu_h200_generate.yml"


def deployed_ms(sup: Any, cfg: SubConfig, device: torch.device, src_len: int, beam: int,
                warmup: int, iters: int, clock: Timer) -> float:
    """Median time of one batch-1 ``generate`` call of the exported SubTransformer."""
    sub = build_compact(sup, cfg).eval().to(device)
    vocab = sub.decoder.dictionary
    src = torch.full((1, src_len), DUMMY_TOKEN, dtype=torch.long, device=device)
    src[0, -1] = EOS
    lengths = torch.tensor([src_len], device=device)
    settings = BeamSettings(beam=beam, min_len=src_len - 1, max_len_b=src_len - 1)
    search = GraphBeamSearch(sub, vocab, settings)
    if device.type == "cuda":
        return timed(lambda: search.generate(src, lengths), device, warmup, iters)
    for _ in range(warmup):
        search.generate(src, lengths)
    return statistics.median(clock(lambda: search.generate(src, lengths)) for _ in range(iters))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=CONFIG, help="a latency-dataset YAML (its space, "
                    "vocabulary and protocol)")
    ap.add_argument("--samples", type=int, default=24, help="SubTransformers")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--warmup", type=int, default=3, help="untimed generate calls first")
    ap.add_argument("--iters", type=int, default=20, help="timed generate calls (median)")
    ap.add_argument("--out", default=None, help="JSON path (default: "
                    "bench/results/deployed_latency_<device>.json; the PNG beside it)")
    a = ap.parse_args()
    device = torch.device(a.device)
    args = parse_args(["--configs", a.configs])
    if device.type == "cpu":  # the YAML's GPU settings off, so a CPU smoke run works
        args.latgpu, args.latgpu_cuda_graph, args.latcpu = False, False, True
    proto = replace(protocol_from_args(args), deployment="generate")
    sup, space, _ = build_model(args, args.seed)
    sup.eval()
    meters = {dep: LatencyMeter(sup, replace(proto, deployment=dep))
              for dep in ("generate", "hat")}
    rows = []
    for i, cfg in enumerate(calibration_configs(space, a.samples, a.seed)):
        row: dict[str, Any] = {"config": asdict(cfg)}
        for dep, meter in meters.items():
            row[f"meter_{dep}"] = float(meter.measure(cfg).total)
        row["deployed"] = deployed_ms(sup, cfg, device, proto.src_len, proto.beam, a.warmup,
                                      a.iters, meters["generate"].timer)
        row["ratio"] = row["deployed"] / row["meter_generate"]
        rows.append(row)
        print(f"{i + 1}/{a.samples} meter generate {row['meter_generate']:.2f} ms, hat "
              f"{row['meter_hat']:.2f} ms, deployed {row['deployed']:.2f} ms "
              f"(x{row['ratio']:.3f})", flush=True)
    sup.set_sample_config(space.largest())
    ratios = np.array([r["ratio"] for r in rows])
    summary = {"median_ratio": float(np.median(ratios)), "max_ratio": float(ratios.max()),
               "min_ratio": float(ratios.min()),
               "within10_pct": float(100 * np.mean(np.abs(ratios - 1) <= 0.10)),
               "median_hat_over_generate": statistics.median(
                   r["meter_hat"] / r["meter_generate"] for r in rows)}
    info = run_info()
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
    out = a.out or str(RESULTS / f"deployed_latency_{device.type}.json")
    atomic_write_json(out, {**info, "configs": a.configs, "protocol": asdict(proto),
                            "samples": a.samples, "seed": a.seed,
                            "deployed_warmup": a.warmup, "deployed_iters": a.iters,
                            "method": "meter: trimmed mean of the protocol's runs, encoder + "
                                      "decoder, the SuperTransformer sliced; deployed: median of "
                                      "--iters whole generate calls of the exported model at "
                                      "batch 1, after --warmup, device synchronized",
                            "summary": summary, "rows": rows}, indent=1)
    label = "hat.generate (CUDA graph)" if device.type == "cuda" else "hat.generate (eager)"
    plot(rows, out.removesuffix(".json") + ".png", info["device"], label)
    print("summary", {k: round(v, 3) for k, v in summary.items()})
    print("wrote", out)
    return 0


def plot(rows: list[dict[str, Any]], path: str, device: str, label: str) -> None:
    from hat.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    m = [r["meter_generate"] for r in rows]
    d = [r["deployed"] for r in rows]
    h = [r["meter_hat"] for r in rows]
    lim = [0, 1.15 * max(d + m)]
    ax.plot(lim, lim, "k-", lw=0.8, label="equal")
    ax.fill_between(lim, [0.9 * x for x in lim], [1.1 * x for x in lim], color="0.9",
                    label="±10 %")
    ax.scatter(m, d, s=14, label=f"{label}, exported")
    ax.scatter(m, h, s=14, marker="x", label="HAT's protocol (meter)")
    ax.set(xlim=lim, ylim=lim, xlabel="dataset latency, lat-deployment generate (ms)",
           ylabel="latency (ms)", title=f"Deployed vs measured, batch 1\n{device}")
    ax.legend(fontsize=8)
    save_png(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
