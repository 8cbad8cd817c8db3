#!/usr/bin/env python
"""Speed of the evolutionary search on one GPU: HAT's procedure vs this project's settings.

Setup: the WMT space0 SuperTransformer (640/3072/6+6, 32k joined vocabulary) trained briefly on a
synthetic task (Zipf-distributed source tokens, target = the source mapped through a fixed
permutation of the vocabulary), a synthetic valid set of newstest2013's size (3000 pairs,
lognormal lengths, mean ~25 tokens), a committed latency predictor with a limit at the median
predicted latency of the space (about half feasible), the standard 30 x 125 search, seed 1. Rows:

- ``naive``: HAT's procedure: every generation re-scored (parents too), no cache, the batch
  iterator rebuilt for each candidate, max-tokens 4096, an fp16 model, fairseq's criterion, a
  host sync per batch;
- ``default``: this project's defaults (cache, batches kept on the GPU, a bf16 model, the fused
  fp32 loss, 32k-token batches);
- ``fastest``: the fastest setting recommended: ``default`` with the batch size (max-tokens)
  that the probe found quickest.

A row that would not finish within ``--row-seconds`` stops at the end of a generation and is
extrapolated per generation (``extrapolated: true``, the generations measured). Also: the same
winner with and without the cache (a short search), the Spearman correlation of ``fastest`` and
``naive`` losses on fixed random SubTransformers, and a profile of one fitness evaluation.

    python -m bench.speed.search_bench --out bench/results/search_bench.json        # GPU
    python -m bench.speed.search_bench --tiny --out /tmp/sb.json                    # CPU smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import ROOT
from hat.atomic import atomic_write_json
from hat.evaluate import ValidLoss, _to
from hat.latency.measure.machine import cpu_model
from hat.search.evolution import Evolution, EvoSettings, Limits, SearchState
from hat.search.latency import LatencyModel, load_predictor, spearman
from hat.space import SubConfig, key_hash

SPACE0 = ROOT / "configs" / "wmt14.en-de" / "supertransformer" / "space0.yml"
PREDICTOR = ROOT / "latency_dataset" / "predictors" / "wmt14ende_gpu_h100.pt"


# ----------------------------------------------------------------------------- data
def write_split(prefix: Path, seqs: list[np.ndarray], vocab: int) -> None:
    from fairseq.data import indexed_dataset

    b = indexed_dataset.make_builder(str(prefix) + ".bin", impl="mmap", vocab_size=vocab)
    for s in seqs:
        b.add_item(torch.from_numpy(s.astype(np.int64)))
    b.finalize(str(prefix) + ".idx")


def make_data(out: Path, n_valid: int, n_train: int, vocab: int, seed: int = 0) -> Path:
    """Binarized synthetic en->de data: lognormal lengths (mean ~25), Zipf-distributed source
    tokens, target = the source through a fixed permutation of the vocabulary (learnable in a
    few hundred updates, so SubTransformers differ)."""
    from hat.checkpoint import dummy_dictionary

    if (out / "valid.en-de.de.idx").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    d = dummy_dictionary(vocab)
    d.save(str(out / "dict.en.txt"))
    d.save(str(out / "dict.de.txt"))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(vocab - 4) + 4
    zipf = 1.0 / np.arange(1, vocab - 3) ** 1.1
    zipf /= zipf.sum()
    for split, n in (("valid", n_valid), ("train", n_train)):
        lens = np.clip(rng.lognormal(3.1, 0.45, n).astype(int), 3, 150)
        src, tgt = [], []
        for n_tok in lens:
            s = rng.choice(vocab - 4, n_tok, p=zipf) + 4
            src.append(np.r_[s, 2])
            tgt.append(np.r_[perm[s - 4], 2])
        write_split(out / f"{split}.en-de.en", src, vocab)
        write_split(out / f"{split}.en-de.de", tgt, vocab)
    return out


def train_briefly(data: Path, save: Path, updates: int, log: Path) -> Path:
    """space0 SuperTransformer, ``updates`` updates of train.py (fairseq's loop)."""
    ckpt = save / "checkpoint_last.pt"
    if ckpt.is_file():
        return ckpt
    from hat.yamlio import load_yaml, write_yaml

    cfg = load_yaml(SPACE0)
    for key in ("lr-period-updates", "t-mult", "lr-shrink", "min-lr"):  # cosine-only keys
        cfg.pop(key, None)
    cfg["lr-scheduler"] = "inverse_sqrt"
    if not torch.cuda.is_available():
        cfg.pop("fp16", None)
        cfg["cpu"] = True
    conf = save.parent / "space0_bench.yml"
    write_yaml(conf, cfg)
    cmd = [sys.executable, str(ROOT / "train.py"), str(data), f"--configs={conf}",
           "--save-dir", str(save), "--max-update", str(updates), "--max-tokens", "16384",
           "--update-freq", "1", "--lr", "0.001",
           "--warmup-updates", str(max(10, updates // 5)), "--disable-validation",
           "--no-epoch-checkpoints", "--save-interval-updates", "0", "--log-interval", "25",
           "--num-workers", "0"]
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return ckpt


# ----------------------------------------------------------------------------- fitness
class NaiveLoss(ValidLoss):
    """HAT's evaluation loop: a fresh batch iterator per candidate, batches copied to the
    device one by one, fairseq's criterion on an fp16 model, the loss read back (a host sync)
    after every batch."""

    def __init__(self, task: Any, model: Any, max_tokens: int, device: str,
                 precision: str) -> None:
        self.task, self.max_tokens = task, max_tokens
        super().__init__(task, model, max_tokens=max_tokens, device=device, precision=precision,
                         fused=False)
        self.batches = []  # rebuilt per call

    @torch.inference_mode()
    def __call__(self, cfg: SubConfig | None = None) -> float:
        if cfg is not None:
            self.model.set_sample_config(cfg)
        itr = self.task.get_batch_iterator(
            dataset=self.task.dataset("valid"), max_tokens=self.max_tokens,
            max_positions=self.model.max_positions(), ignore_invalid_inputs=True, seed=1,
            disable_iterator_cache=True).next_epoch_itr(shuffle=False)
        total, size = 0.0, 0
        for sample in itr:
            loss, sample_size, _ = self.criterion(self.model, _to(sample, self.device))
            total += float(loss)
            size += int(sample_size)
        return total / max(size, 1) / math.log(2)


def load_model(ckpt: Path, data: Path, device: str) -> tuple[Any, Any]:
    from fairseq import tasks

    from hat.checkpoint import build_from_checkpoint, checkpoint_args, read_checkpoint

    state = read_checkpoint(ckpt)
    args = checkpoint_args(state, ckpt)
    args.data = str(data)
    args.task = "hat_translation"
    for k, v in (("subnet_seed", 0), ("subnet_log", "")):
        setattr(args, k, getattr(args, k, v))
    task = tasks.setup_task(args)
    task.load_dataset("valid")
    model = build_from_checkpoint(state, ckpt, task=task).to(device).eval()
    return task, model


def peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


class _Stop(Exception):
    pass


def run_search(space: Any, fitness: Any, latency: LatencyModel, limit: float, cache: bool,
               settings: EvoSettings, row_seconds: float, params: Any) -> dict[str, Any]:
    """One search; stops at a generation boundary after ``row_seconds`` (then extrapolated)."""
    t0 = time.perf_counter()
    holder: dict[str, SearchState] = {}

    def on_state(st: SearchState, boundary: bool) -> None:
        holder["st"] = st
        if boundary and time.perf_counter() - t0 > row_seconds and not st.done:
            raise _Stop

    evo = Evolution(space, settings, [Limits(limit)], fitness, latency, params, cache=cache,
                    log=lambda m: print("  " + m, flush=True), on_state=on_state,
                    save_every_s=1e9)
    try:
        st = evo.run()
        stopped = False
    except _Stop:
        st, stopped = holder["st"], True
    wall = time.perf_counter() - t0
    gens = len(st.history)
    best = min(st.history[-1]["best"], key=lambda b: b["loss"]) if gens else None
    row = {"wall_s": wall, "evaluations": st.evaluations, "unique_evaluations": len(st.scores),
           "cache_hits": st.cache_hits, "generations_measured": gens,
           "extrapolated": stopped, "best_loss": best["loss"] if best else None,
           "best_config_hash": key_hash(best["key"]) if best else None,
           "best_predicted_latency_ms": best["latency_ms"] if best else None}
    if stopped:
        per_gen = [h["seconds"] for h in st.history]
        init = wall - sum(per_gen)
        row["measured_wall_s"] = wall
        row["measured_evaluations"] = st.evaluations
        row["wall_s"] = init + float(np.mean(per_gen)) * settings.evo_iter
        row["evaluations"] = int(round(st.evaluations / gens * settings.evo_iter))
        row["unique_evaluations"] = None
        row["best_loss"] = None  # not the result of a full search
        row["best_config_hash"] = None
    row["evaluations_per_s"] = (row["measured_evaluations"] if stopped else st.evaluations) / (
        row.get("measured_wall_s", wall))
    return row


def profile_one(fitness: Any, cfg: SubConfig, device: str, path: Path) -> list[dict]:
    """Top CUDA kernels (by self time) of one fitness evaluation."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    fitness(cfg)
    with profile(activities=acts) as prof:
        fitness(cfg)
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25)
    attr = next((k for k in ("self_device_time_total", "self_cuda_time_total")
                 if device == "cuda" and hasattr(prof.key_averages()[0], k)),
                "self_cpu_time_total")
    path.write_text(table)
    out = []
    for e in sorted(prof.key_averages(), key=lambda e: -getattr(e, attr, 0))[:15]:
        out.append({"name": e.key[:80], "self_ms": getattr(e, attr) / 1000, "calls": e.count})
    return out


# ----------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "search_bench.json"))
    ap.add_argument("--work", default="/tmp/search_bench")
    ap.add_argument("--phases", default="probe,identical,naive,fastest,default",
                    help="comma list of: probe (speed, Spearman, profile), naive, identical, "
                         "default, fastest")
    ap.add_argument("--row-seconds", type=float, default=240.0,
                    help="stop a row after the generation that passes this (then extrapolate)")
    ap.add_argument("--naive-seconds", type=float, default=60.0)
    ap.add_argument("--fastest-seconds", type=float, default=1e9)
    ap.add_argument("--fastest-tokens", default="16384,65536",
                    help="batch sizes tried besides the default's; 'fastest' uses the quickest")
    ap.add_argument("--identical-iters", type=int, default=2)
    ap.add_argument("--train-updates", type=int, default=500)
    ap.add_argument("--spearman-n", type=int, default=200)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test at toy sizes")
    ap.add_argument("--merge", help="JSON of an earlier call whose rows are kept")
    a = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    t_start = time.perf_counter()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    n_valid, n_train, vocab = (60, 200, 300) if a.tiny else (3000, 40000, 32768)
    data = make_data(work / "data-bin", n_valid, n_train, vocab)
    updates = 3 if a.tiny else a.train_updates
    t0 = time.perf_counter()
    ckpt = train_briefly(data, work / "ckpt", updates, work / "train.log")
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    task, model = load_model(ckpt, data, device)
    load_s = time.perf_counter() - t0
    space = model.space
    predictor = load_predictor(str(PREDICTOR), None, None, "bench")
    latency = LatencyModel(predictor)
    rng = random.Random(0)
    sample = latency([space.sample(rng) for _ in range(4000)])
    limit = float(np.median(sample))

    def params(cfg: SubConfig) -> float:
        from hat.profile import count_params

        return count_params(cfg, space.qkv_dim) / 1e6

    settings = EvoSettings(seed=1) if not a.tiny else EvoSettings(evo_iter=3, population_size=10,
                                                                   parent_size=4, mutation_size=3,
                                                                   crossover_size=3, seed=1)
    lowp = "bf16" if device == "cuda" else "fp32"
    half = "fp16" if device == "cuda" else "fp32"
    master = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def fresh() -> Any:
        """The model back in fp32 with the checkpoint's weights (a setup casts it)."""
        model.float().load_state_dict(master)
        return model

    default_tokens = 32768 if not a.tiny else 2048
    tries = [int(v) for v in a.fastest_tokens.split(",")] if not a.tiny else [1024, 8192]
    chosen = {"fastest": default_tokens}

    setups = {
        "naive": lambda: NaiveLoss(task, fresh(), 4096, device, half),
        "default": lambda: ValidLoss(task, fresh(), max_tokens=default_tokens, device=device,
                                     precision=lowp),
        "fastest": lambda: ValidLoss(task, fresh(), max_tokens=chosen["fastest"], device=device,
                                     precision=lowp),
    }
    result: dict[str, Any] = {}
    if a.merge and Path(a.merge).is_file():
        import json

        result = json.loads(Path(a.merge).read_text())
    result.update({
        "device": torch.cuda.get_device_name() if device == "cuda" else cpu_model(),
        "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "setup": {"space": "space0 (640/3072, 6+6 layers, 40 genes)", "vocab": vocab,
                  "valid_pairs": n_valid, "valid_target_tokens": int(sum(
                      len(task.dataset("valid").tgt[i]) for i in range(n_valid))),
                  "train_updates": updates, "train_seconds": round(train_s, 1),
                  "load_s": round(load_s, 2),
                  "predictor": PREDICTOR.name, "latency_limit_ms": limit,
                  "feasible_share": float(np.mean(sample <= limit)),
                  "settings": dataclasses.asdict(settings),
                  "row_settings": {
                      "naive": "no cache (parents re-scored), iterator rebuilt per candidate, "
                               "max-tokens 4096, fp16 model, fairseq's criterion, host sync "
                               "per batch",
                      "default": "cache, batches kept on the GPU, bf16 model, fused fp32 loss, "
                                 "max-tokens 32768",
                      "fastest": "as default, with the max-tokens the probe found quickest"}},
    })
    rows = {r["name"]: r for r in result.get("rows", [])}
    phases = a.phases.split(",")
    fixed = [space.sample(random.Random(1000 + i)) for i in range(a.spearman_n if not a.tiny
                                                                   else 12)]
    if "probe" in phases:
        probe, losses = {}, {}

        def timed(name: str, fit: Any, n: int) -> list[float]:
            fit(fixed[0])
            peak_reset(device)
            t0 = time.perf_counter()
            out = [fit(c) for c in fixed[:n]]
            dt = time.perf_counter() - t0
            probe[name] = {"candidates_per_s": n / dt, "n": n, "peak_gib": peak_gib(device)}
            print(f"probe {name}: {n / dt:.2f} candidates/s", flush=True)
            return out

        n_speed = min(40, len(fixed))
        fit = setups["default"]()
        timed("default", fit, n_speed)
        result["profile_default"] = profile_one(fit, fixed[0], device,
                                                Path(a.out).with_suffix(".profile.txt"))
        for tokens in tries:
            timed(f"max_tokens_{tokens}", ValidLoss(task, fresh(), max_tokens=tokens,
                                                    device=device, precision=lowp), n_speed)
        rates = {default_tokens: probe["default"]["candidates_per_s"],
                 **{t: probe[f"max_tokens_{t}"]["candidates_per_s"] for t in tries}}
        chosen["fastest"] = max(rates, key=rates.get)
        result["fastest_max_tokens"] = chosen["fastest"]
        losses["fastest"] = timed("fastest", setups["fastest"](), len(fixed))
        losses["naive"] = timed("naive", setups["naive"](), len(fixed))
        result["probe"] = probe
        result["spearman_fastest_vs_naive"] = spearman(losses["fastest"], losses["naive"])
        result["spearman_n"] = len(fixed)
        result["max_abs_loss_diff_fastest_vs_naive"] = float(np.max(np.abs(
            np.array(losses["fastest"]) - np.array(losses["naive"]))))
        result["loss_range_naive"] = [min(losses["naive"]), max(losses["naive"])]
        atomic_write_json(a.out, result, indent=1)
    if "identical" in phases:
        short = dataclasses.replace(settings, evo_iter=min(a.identical_iters, settings.evo_iter))
        fit = setups["default"]()
        r_on = run_search(space, fit, latency, limit, True, short, 1e9, params)
        r_off = run_search(space, fit, latency, limit, False, short, 1e9, params)
        result["identical_result"] = (r_on["best_config_hash"] == r_off["best_config_hash"]
                                      and r_on["best_loss"] == r_off["best_loss"])
        result["identical_check"] = {"evo_iter": short.evo_iter, "cache": r_on,
                                     "no_cache": r_off}
        atomic_write_json(a.out, result, indent=1)
    def save() -> None:
        result["rows"] = [rows[k] for k in ("naive", "default", "fastest") if k in rows]
        if "naive" in rows and "fastest" in rows:
            result["speedup_vs_naive"] = rows["naive"]["end_to_end_s"] / rows["fastest"][
                "end_to_end_s"]
        result["bench_wall_s"] = time.perf_counter() - t_start
        atomic_write_json(a.out, result, indent=1)

    save()
    budgets = {"naive": a.naive_seconds, "default": a.row_seconds, "fastest": a.fastest_seconds}
    for name in [p for p in phases if p in setups]:
        t0 = time.perf_counter()
        fit = setups[name]()
        build = time.perf_counter() - t0
        peak_reset(device)
        if name == "fastest":
            result["setup"]["row_settings"]["fastest"] += f" ({chosen['fastest']})"
        row = run_search(space, fit, latency, limit, name != "naive", settings, budgets[name],
                         params)
        row.update(name=name, fitness_build_s=build, peak_gib=peak_gib(device),
                   end_to_end_s=row["wall_s"] + build + result["setup"].get("load_s", 0.0))
        rows[name] = row
        print(f"row {name}: {row}", flush=True)
        save()
    save()
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
