#!/usr/bin/env python
"""Deployment speed of a SubTransformer: beam search with fairseq's generator vs hat.generate.

Beam 5, a dummy source of ``--steps`` tokens, exactly ``--steps`` decoder steps (generators forced
with min = max length), batch 1 and 64, fp32 and fp16. Rows:

* ``fairseq_stock``: fairseq's ``SequenceGenerator`` on fairseq's own ``transformer`` of the same
  dimensions (what fairseq-generate runs on a plain Transformer);
* ``fairseq_exported``: the same generator on the exported SubTransformer (``hat_subtransformer``);
* ``static_eager``: hat.generate's beam search, eager (``python -m hat.bleu --generator static``
  on a CPU);
* ``static_graph``: the same search replayed as one CUDA graph (GPU only), a whole
  ``generate`` call (input copy, replay, hypotheses read back); ``static_graph_replay``: the
  replay alone;
* ``meter_hat`` / ``meter_generate``: the latency meter's measurement of the same model (CUDA-graph
  replays) with HAT's protocol and with the ``generate`` deployment, encoder + decoder.

Also checks that the graph replay gives the eager search's hypotheses and that the eager search
gives fairseq's on the exported model. Times are medians of ``--iters`` runs after warm-up
(wall clock, with a device synchronize). Writes bench/results/generate_speed_<device>.json.

    python -m bench.speed.generate_speed            # GPU: the SubTransformer 512/2048/8, 6+6
    python -m bench.speed.generate_speed --quick --device cpu --out /tmp/g.json   # a smoke run
"""

from __future__ import annotations

import argparse
import argparse as _ap
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.common import RESULTS, run_info
from hat.atomic import atomic_write_json
from hat.checkpoint import ShapeTask, dummy_dictionary
from hat.export import build_compact
from hat.generate import BeamSettings, GraphBeamSearch, StaticBeamSearch
from hat.latency.measure.timing import LatencyMeter, Protocol
from hat.models import TransformerSuperModel
from hat.space import SubConfig

DIMS = {"embed": 512, "ffn": 2048, "heads": 8, "layers": 6, "vocab": 32768}
QUICK = {"embed": 32, "ffn": 64, "heads": 4, "layers": 2, "vocab": 200}


def models(d: dict[str, int]) -> tuple[Any, Any, SubConfig]:
    """(SubTransformer exported from a random SuperTransformer, fairseq ``transformer`` of the
    same dims, the SubTransformer's config)."""
    from fairseq.models.transformer import TransformerModel, base_architecture

    n, e, f, h = d["layers"], d["embed"], d["ffn"], d["heads"]
    vocab = dummy_dictionary(d["vocab"])
    task = ShapeTask(vocab, vocab)
    sargs = _ap.Namespace(
        arch="transformersuper", share_all_embeddings=True, dropout=0.0, attention_dropout=0.0,
        encoder_embed_dim=e, decoder_embed_dim=e, encoder_ffn_embed_dim=f,
        decoder_ffn_embed_dim=f, encoder_layers=n, decoder_layers=n, encoder_attention_heads=h,
        decoder_attention_heads=h, qkv_dim=e, encoder_embed_choice=[e], decoder_embed_choice=[e],
        encoder_layer_num_choice=[n], decoder_layer_num_choice=[n],
        encoder_ffn_embed_dim_choice=[f], decoder_ffn_embed_dim_choice=[f],
        encoder_self_attention_heads_choice=[h], decoder_self_attention_heads_choice=[h],
        decoder_ende_attention_heads_choice=[h], decoder_arbitrary_ende_attn_choice=[-1])
    torch.manual_seed(0)
    sup = TransformerSuperModel.build_model(sargs, task).eval()
    cfg = SubConfig(e, n, (f,) * n, (h,) * n, e, n, (f,) * n, (h,) * n, (h,) * n, (-1,) * n)
    sup.set_sample_config(cfg)
    sub = build_compact(sup, cfg).eval()
    targs = _ap.Namespace(
        arch="transformer", share_all_embeddings=True, encoder_embed_dim=e, decoder_embed_dim=e,
        encoder_ffn_embed_dim=f, decoder_ffn_embed_dim=f, encoder_layers=n, decoder_layers=n,
        encoder_attention_heads=h, decoder_attention_heads=h, dropout=0.0,
        max_source_positions=1024, max_target_positions=1024)
    base_architecture(targs)
    stock = TransformerModel.build_model(targs, task).eval()
    return sub, stock, cfg


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    """Median wall time (ms) of ``fn`` after ``warmup`` runs."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run(device: torch.device, dims: dict[str, int], steps: int, batches: list[int],
        dtypes: list[str], warmup: int, iters: int) -> list[dict[str, Any]]:
    sub, stock, cfg = models(dims)
    rows = []
    for dtype in dtypes:
        cast = (lambda m: m.half()) if dtype == "fp16" else (lambda m: m.float())
        for m in (sub, stock):
            cast(m).to(device)
        for bsz in batches:
            rows.append(one_batch(device, sub, stock, cfg, dtype, bsz, steps, warmup, iters))
    return rows


def one_batch(device: torch.device, sub: Any, stock: Any, cfg: SubConfig, dtype: str, bsz: int,
              steps: int, warmup: int, iters: int) -> dict[str, Any]:
    """Every row of one batch size and dtype."""
    from fairseq.sequence_generator import SequenceGenerator

    vocab = sub.decoder.dictionary
    tokens = steps - 1  # then EOS: `steps` decoder steps
    settings = BeamSettings(beam=5, min_len=tokens, max_len_b=tokens)
    src = torch.full((bsz, steps), 10, dtype=torch.long, device=device)
    src[:, -1] = vocab.eos()
    lengths = torch.full((bsz,), steps, dtype=torch.long, device=device)
    sample = {"net_input": {"src_tokens": src, "src_lengths": lengths}}
    row: dict[str, Any] = {"dtype": dtype, "batch": bsz, "steps": steps}
    for name, model in (("fairseq_stock", stock), ("fairseq_exported", sub)):
        gen = SequenceGenerator([model], vocab, beam_size=5, min_len=tokens,
                                max_len_b=tokens)
        with torch.inference_mode():
            row[name] = timed(lambda g=gen, m=model: g.generate([m], sample), device,
                              warmup, iters)
    eager = StaticBeamSearch(sub, vocab, settings)
    with torch.inference_mode():
        row["static_eager"] = timed(lambda: eager.generate(src, lengths, early_stop=False),
                                    device, warmup, iters)
        ours = eager.generate(src, lengths)
        theirs = SequenceGenerator([sub], vocab, beam_size=5, min_len=tokens,
                                   max_len_b=tokens).generate([sub], sample)
    row["eager_equals_fairseq"] = _same_tokens(ours, theirs)
    if device.type == "cuda":
        graph = GraphBeamSearch(sub, vocab, settings)
        row["static_graph"] = timed(lambda: graph.generate(src, lengths), device,
                                    warmup, iters)
        row["graph_equals_eager"] = _same_tokens(graph.generate(src, lengths), ours)
        (captured,) = graph.graphs.values()  # the replay alone: no input copy, no read-back
        row["static_graph_replay"] = timed(lambda: captured.graph.replay(), device, warmup, iters)
        row["stock_over_graph"] = row["fairseq_stock"] / row["static_graph"]
    if bsz == 1:  # the meter times one sentence
        for dep in ("hat", "generate"):
            p = Protocol(src_len=steps, beam=5, warmup=warmup, iters=iters,
                         device=str(device), cuda_graph=device.type == "cuda",
                         deployment=dep)
            m = LatencyMeter(sub, p).measure(cfg)
            row[f"meter_{dep}"] = m.enc_mean + m.dec_mean
            row[f"meter_{dep}_encoder"] = m.enc_mean
        if "static_graph" in row:
            row["graph_over_meter_generate"] = row["static_graph"] / row["meter_generate"]
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()},
          flush=True)
    return row


def _same_tokens(a: list, b: list) -> bool:
    return all(len(x) == len(y) and all(torch.equal(p["tokens"].cpu(), q["tokens"].cpu())
                                        for p, q in zip(x, y)) for x, y in zip(a, b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda or cpu (default: cuda when there is one)")
    ap.add_argument("--steps", type=int, default=30, help="decoder steps (the source length)")
    ap.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    ap.add_argument("--dtypes", default=None, help="default: fp32,fp16 on a GPU, fp32 on a CPU")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    ap.add_argument("--iters", type=int, default=10, help="timed runs (the median is reported)")
    ap.add_argument("--quick", action="store_true", help="tiny model, 4 steps (a smoke run)")
    ap.add_argument("--out", default=None, help="JSON path (default: "
                    "bench/results/generate_speed_<device>.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    dims = QUICK if args.quick else DIMS
    steps = 4 if args.quick else args.steps
    dtypes = (args.dtypes or ("fp32,fp16" if device.type == "cuda" else "fp32")).split(",")
    batches = [int(b) for b in args.batches.split(",")]
    rows = run(device, dims, steps, batches, dtypes, args.warmup, args.iters)
    info = run_info()
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
    out = args.out or str(RESULTS / f"generate_speed_{device.type}.json")
    atomic_write_json(out, {**info, "dims": dims, "beam": 5, "steps": steps,
                            "method": "median wall ms of --iters runs after --warmup, device "
                                      "synchronized; generators forced to exactly `steps` "
                                      "decoder steps (min = max length)", "rows": rows},
                      indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
