#!/usr/bin/env python
"""Raw training-step speed of the SuperTransformer outside fairseq's trainer (GPU diagnostic).

Builds the 640/3072/8-head 6+6 SuperTransformer with a 32k vocabulary, and times forward +
backward + fused Adam on fixed batches for: the largest SubTransformer with arbitrary attention
-1 (the same computation as a stock Transformer), with arbitrary 1, and a new random
SubTransformer every step. Prints tokens/s, step time, peak memory and the top CUDA kernels.

python -m bench.speed.profile_step --out bench/results/profile_step.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import ROOT


def build(vocab: int, device: str, attn_impl: str = "sdpa"):
    import argparse as ap

    from hat.checkpoint import ShapeTask, dummy_dictionary
    from hat.models import TransformerSuperModel

    d = dummy_dictionary(vocab)
    args = ap.Namespace(arch="transformersuper_wmt_en_de", share_all_embeddings=True,
                        attn_impl=attn_impl)
    return TransformerSuperModel.build_model(args, ShapeTask(d, d)).to(device)


def step_time(model, batches, configs, dtype, steps: int, opt) -> float:
    """Mean seconds per step (after 3 warm-up steps)."""
    times = []
    for i in range(steps + 3):
        if configs is not None:
            model.set_sample_config(configs[i % len(configs)])
        src, prev, tgt = batches[i % len(batches)]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype):
            logits = model(src, None, prev)[0]
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), tgt.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(ROOT / "bench/results/profile_step.json"))
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--steps", type=int, default=15)
    args = p.parse_args()
    from hat.space import SearchSpace

    dev, vocab = "cuda", 32000
    model = build(vocab, dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    bsz = args.tokens // args.length
    g = torch.Generator(device=dev).manual_seed(0)
    batches = [tuple(torch.randint(4, vocab, (bsz, args.length), device=dev, generator=g)
                     for _ in range(3)) for _ in range(2)]
    space = SearchSpace()
    largest = space.largest()
    arb_m1 = largest.__class__.from_dict({**largest.to_dict(),
                                          "decoder_arbitrary_ende_attn": [-1] * 6})
    rng = random.Random(0)
    randoms = [space.sample(rng) for _ in range(64)]
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "tokens_per_step": bsz * args.length, "rows": []}
    for dtype_name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        for name, cfgs in (("largest_arb-1", [arb_m1]), ("largest_arb1", [largest]),
                           ("random_subnets", randoms)):
            torch.cuda.reset_peak_memory_stats()
            t = step_time(model, batches, cfgs, dtype, args.steps, opt)
            row = {"name": name, "dtype": dtype_name, "step_s": t,
                   "tokens_per_s": bsz * args.length / t,
                   "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    from torch.profiler import ProfilerActivity, profile

    for name, cfgs in (("largest_arb-1", [arb_m1]), ("random_subnets", randoms)):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step_time(model, batches, cfgs, torch.bfloat16, 3, opt)
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18,
                                          max_name_column_width=60)
        results[f"profile_{name}"] = table
        print(name, "\n", table, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
