#!/usr/bin/env python
"""Training throughput on one GPU: SuperTransformer vs its largest subnet vs stock fairseq.

Every row trains through fairseq's own loop on the same synthetic corpus (32k joined
vocabulary, WMT-like lengths) for a short run in its own process, and reports the target tokens/s
that fairseq logs (``wps`` of the train_inner lines after the first ``--skip`` intervals), the
peak GPU memory, the loss curve and MFU (model FLOPs from hat.profile's analytic count incl.
the output projection, x3 for forward+backward, over the GPU's dense bf16/fp16 peak).

python -m bench.speed.train_throughput --out bench/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT

DIMS = ["--encoder-embed-dim", "640", "--decoder-embed-dim", "640", "--encoder-ffn-embed-dim",
        "3072", "--decoder-ffn-embed-dim", "3072", "--encoder-layers", "6", "--decoder-layers",
        "6", "--encoder-attention-heads", "8", "--decoder-attention-heads", "8"]
COMMON = ["--share-all-embeddings", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
          "--lr", "0.0007", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "20",
          "--warmup-init-lr", "1e-07", "--criterion", "label_smoothed_cross_entropy",
          "--label-smoothing", "0.1", "--dropout", "0.3", "--attention-dropout", "0.1",
          "--disable-validation", "--no-save", "--seed", "1", "--log-format", "simple",
          "--num-workers", "2", "--skip-invalid-size-inputs-valid-test"]
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense bf16/fp16 tensor cores

# name, kind (fairseq | largest | supernet), dtype, max_tokens, update_freq, updates, log interval
ROWS = [
    ("c_fairseq_transformer", "fairseq", "fp16", 4096, 16, 30, 2),
    ("b_largest_subnet_fixed", "largest", "fp16", 4096, 16, 30, 2),
    ("best_largest_fp16_mt32k", "largest", "fp16", 32768, 2, 30, 2),
    ("a_supertransformer_random_subnets", "supernet", "fp16", 4096, 16, 30, 2),
    ("best_supertransformer_fp16_mt32k", "supernet", "fp16", 32768, 2, 30, 2),
    ("c_fairseq_transformer_mt32k", "fairseq", "fp16", 32768, 2, 30, 2),
    ("best_largest_bf16_mt32k", "largest", "bf16", 32768, 2, 30, 2),
]


def make_corpus(out: Path, vocab: int = 32000, n_train: int = 70_000, n_valid: int = 200,
                seed: int = 0) -> Path:
    """Binarized synthetic parallel data (random tokens, lengths 5-60, mean ~28)."""
    import torch
    from fairseq.data import Dictionary, indexed_dataset

    if (out / "done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}", n=1000)
    for lang in ("src", "tgt"):
        d.save(str(out / f"dict.{lang}.txt"))
    import numpy as np

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        lengths = np.clip(rng.normal(28, 10, n).astype(int), 5, 60)
        for lang in ("src", "tgt"):
            prefix = str(out / f"{split}.src-tgt.{lang}")
            b = indexed_dataset.make_builder(prefix + ".bin", impl="mmap", vocab_size=len(d))
            tokens = rng.integers(d.nspecial, len(d), int(lengths.sum()), dtype=np.int32)
            start = 0
            for length in lengths:
                item = np.append(tokens[start:start + length], np.int32(d.eos()))
                b.add_item(torch.from_numpy(item))
                start += length
            b.finalize(prefix + ".idx")
    (out / "done").write_text("ok")
    return out


def largest_yaml(path: Path, arbitrary: int = -1) -> Path:
    """The largest SubTransformer; arbitrary -1 computes exactly what a stock Transformer does."""
    from hat.space import SearchSpace, write_subtransformer_yaml

    write_subtransformer_yaml(SearchSpace().largest(arbitrary=arbitrary), path)
    return path


def row_command(kind: str, dtype: str, max_tokens: int, update_freq: int, updates: int,
                log_interval: int, data: Path, sub_yml: Path) -> list[str]:
    """The training command of one row (run by this script's --child mode)."""
    prec = ["--fp16"] if dtype == "fp16" else (["--bf16"] if dtype == "bf16" else [])
    run = ["--max-tokens", str(max_tokens), "--update-freq", str(update_freq), "--max-update",
           str(updates), "--log-interval", str(log_interval), *prec]
    if kind == "fairseq":
        return ["fairseq", str(data), "--task", "translation", "--arch", "transformer",
                *DIMS, *COMMON, *run]
    hat = ["hat", str(data), "--task", "hat_translation", "--arch", "transformersuper_wmt_en_de",
           *COMMON, *run]
    if kind == "largest":
        hat += [f"--configs={sub_yml}", "--train-subtransformer"]
    return hat


def child(argv: list[str]) -> None:
    """Run one training in this process."""
    which, rest = argv[0], argv[1:]
    if which == "fairseq":
        from fairseq_cli.train import cli_main

        sys.argv = ["fairseq-train", *rest]
        cli_main()
    else:
        from hat.train_cli import main

        rc = main(rest)
        if rc:
            sys.exit(rc)


def parse_log(text: str, skip: int) -> dict:
    inner = [dict(re.findall(r"(\w+)=([\d.e+-]+)", ln)) for ln in text.splitlines()
             if "train_inner" in ln and "wps=" in ln]
    steady = inner[skip:] or inner[-1:]
    wps = [float(r["wps"]) for r in steady]
    free = [float(r["gb_free"]) for r in steady if "gb_free" in r]
    return {
        "tokens_per_s": sum(wps) / len(wps) if wps else None,
        "step_time_s": (sum(1 / float(r["ups"]) for r in steady) / len(steady)) if steady
        else None,
        "min_gb_free": min(free) if free else None,
        "loss_curve": [[int(r["num_updates"]), float(r["loss"])] for r in inner],
        "intervals_measured": len(steady),
    }


def model_flops_per_target_token(length: float = 28.0, vocab: int = 32000) -> float:
    """Training FLOPs per target token of the 640/3072/6+6 model (fwd+bwd = 3x forward)."""
    from hat.profile import count_macs
    from hat.space import SearchSpace

    n = int(round(length))
    macs = count_macs(SearchSpace().largest(), n, n, elementwise=False) + n * 640 * vocab
    return 3 * 2 * macs / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench/results/train_throughput.json"))
    p.add_argument("--data", default=str(ROOT / ".bench_data/synthetic32k"))
    p.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    p.add_argument("--skip", type=int, default=4, help="log intervals treated as warm-up")
    p.add_argument("--row-timeout", type=int, default=150, help="seconds per row")
    p.add_argument("--logs", default="", help="folder for each row's full log")
    p.add_argument("--child", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.child:
        child(args.child)
        return
    import torch

    t0 = time.time()
    data = make_corpus(Path(args.data))
    print(f"[bench] corpus ready in {time.time() - t0:.0f}s", flush=True)
    sub_yml = largest_yaml(Path(args.data) / "largest.yml")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    total_gib = (torch.cuda.get_device_properties(0).total_memory / 2**30
                 if torch.cuda.is_available() else None)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
    flops_tok = model_flops_per_target_token()
    wanted = set(filter(None, args.rows.split(",")))
    rows = []
    for name, kind, dtype, mt, uf, updates, li in ROWS:
        if wanted and name not in wanted:
            continue
        cmd = [sys.executable, __file__, "--child",
               *row_command(kind, dtype, mt, uf, updates, li, data, sub_yml)]
        t0 = time.time()
        print(f"[bench] {name}: {' '.join(cmd[3:])}", flush=True)
        try:
            res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                 timeout=args.row_timeout)
            log, rc = res.stdout + res.stderr, res.returncode
        except subprocess.TimeoutExpired as e:
            log, rc = (e.stdout or b"").decode() + (e.stderr or b"").decode(), "timeout"
        if args.logs:
            Path(args.logs, f"{name}.log").write_text(log)
        row = {"name": name, "model": kind, "dtype": dtype, "max_tokens": mt,
               "update_freq": uf, "updates": updates, "wall_s": round(time.time() - t0, 1),
               "returncode": rc, **parse_log(log, args.skip)}
        if row["min_gb_free"] is not None and total_gib:
            row["peak_mem_gib"] = round(total_gib - row["min_gb_free"], 2)
        if rc:
            row["error_tail"] = log[-1500:]
        if row["tokens_per_s"] and peak and kind != "supernet":
            row["mfu"] = row["tokens_per_s"] * flops_tok / (peak * 1e12)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "loss_curve"}), flush=True)
        write_result(args.out, summarize(rows, device, torch.__version__, flops_tok, peak))


def summarize(rows: list[dict], device: str, torch_version: str, flops_tok: float,
              peak: float | None) -> dict:
    """The JSON document: device, date, torch, rows and the headline ratios."""
    by = {r["name"]: r for r in rows}

    def ratio(a: str, b: str) -> float | None:
        if a in by and b in by and by[a]["tokens_per_s"] and by[b]["tokens_per_s"]:
            return by[a]["tokens_per_s"] / by[b]["tokens_per_s"]
        return None

    return {
        "device": device,
        "date": datetime.date.today().isoformat(),
        "torch": torch_version,
        "method": "fairseq train_inner wps (target tokens/s) after the first interval; each row "
                  "its own process; same synthetic 32k-vocab corpus; effective batch "
                  "max_tokens x update_freq",
        "model_flops_per_target_token": flops_tok,
        "peak_tflops_assumed": peak,
        "rows": rows,
        "ratios": {
            "largest_vs_fairseq": ratio("b_largest_subnet_fixed", "c_fairseq_transformer"),
            "supernet_vs_fairseq": ratio("a_supertransformer_random_subnets",
                                         "c_fairseq_transformer"),
            "best_vs_fairseq": ratio("best_largest_fp16_mt32k", "c_fairseq_transformer"),
            "best_vs_fairseq_same_batch": ratio("best_largest_fp16_mt32k",
                                                "c_fairseq_transformer_mt32k"),
            "best_bf16_vs_fairseq": ratio("best_largest_bf16_mt32k", "c_fairseq_transformer"),
            "best_supernet_vs_fairseq": ratio("best_supertransformer_fp16_mt32k",
                                              "c_fairseq_transformer"),
        },
    }


def write_result(out: str, result: dict) -> None:
    """Write the JSON atomically."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
