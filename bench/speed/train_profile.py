#!/usr/bin/env python
"""Where a SuperTransformer training update spends its time (fairseq's own Trainer, real data).

Each variant runs in its own process: it builds fairseq's task, model, criterion and Trainer from
``train.py``'s options exactly as ``train.py`` would, runs ``--warmup`` updates, then times
``--updates`` updates (the wait for the next batch apart from ``trainer.train_step``, with the
GPU synchronised around each), then records ``--profile-updates`` updates with torch.profiler:
GPU kernel time and kernel launches per update, host-device synchronisations, the top CPU ops
and kernels. ``gpu_busy`` = kernel time / wall time per update: far below 1 means the GPU waits
on Python (launches, syncs, data). No validation or checkpointing is timed here
(``bench.studies.debian_convergence`` measures the whole loop).

python -m bench.speed.train_profile --variants today adam sandwich0 \
    --out bench/results/debian_en-de_train_profile_h200.json
python -m bench.speed.train_profile --smoke --out /tmp/profile.json    # CPU twin: toy data
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT
from bench.studies.debian_convergence import RECIPE, TASKS, _space, standalone_configs

RETRAIN = "@retrain-largest"  # marker: train the space's largest SubTransformer alone
# "today": the configs as shipped (the Debian ones: largest + smallest + 1 random per update
# since 2026-12-02); the results committed before that date ran uniform sampling under "today"
VARIANTS: dict[str, list[str]] = {
    "today": ["--optimizer", "hat_adam"],
    "uniform": ["--optimizer", "hat_adam", "--subnet-sampling", "uniform"],
    "adam": ["--optimizer", "adam", "--subnet-sampling", "uniform"],
    "sandwich0": ["--optimizer", "hat_adam", "--subnet-sampling", "sandwich",
                  "--sandwich-random", "0"],
    "bf16": ["--optimizer", "hat_adam", "--bf16"],
    "workers4": ["--optimizer", "hat_adam", "--num-workers", "4"],
    "tokens32k": ["--optimizer", "hat_adam", "--max-tokens", "32768", "--num-workers", "4"],
    "tokens64k": ["--optimizer", "hat_adam", "--max-tokens", "65536", "--num-workers", "6"],
    "sandwich0_tokens32k": ["--optimizer", "hat_adam", "--subnet-sampling", "sandwich",
                            "--sandwich-random", "0", "--max-tokens", "32768", "--num-workers",
                            "4"],
    "tokens32k_today": ["--max-tokens", "32768", "--num-workers", "4"],
    # retraining: the largest SubTransformer alone (the pipeline's retrain stage, the fidelity
    # check's from-scratch trainings)
    "retrain": [RETRAIN],
}
SYNC_OPS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync",
            "aten::_local_scalar_dense")


def task_recipe(task: str) -> tuple[Path, list[str]]:
    """The config folder of ``task`` and the recipe its profiles train with."""
    return ROOT / TASKS[task], [*RECIPE, "--dropout", "0.1", "--num-workers", "2"]


def child_args(cfg_dir: Path, recipe: list[str], extra: list[str], data: str | None,
               save_dir: str) -> list[str]:
    """train.py's options of one variant (a retraining one: the largest SubTransformer with
    the task's retraining options, as the pipeline retrains)."""
    space_yml = cfg_dir / "supertransformer" / _space(cfg_dir)
    configs = [f"--configs={space_yml}"]
    if extra[:1] == [RETRAIN]:
        configs = [*standalone_configs(cfg_dir, "largest", Path(save_dir + "_largest.yml")),
                   "--train-subtransformer"]
        extra = extra[1:]
    argv = [*configs, *recipe, "--no-save", "--disable-validation", "--save-dir", save_dir,
            "--seed", "1", *extra]
    return [data, *argv] if data else argv


def build_trainer(argv: list[str]):
    """fairseq's Trainer and its epoch iterator, built as train.py builds them."""
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    from hat.config import parse_fairseq_args
    from hat.training import prepare_args

    args = prepare_args(parse_fairseq_args(argv))
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    task.load_dataset("train", epoch=1)
    epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=False)
    return trainer, epoch_itr


def run_child(argv: list[str], warmup: int, updates: int, profile_updates: int) -> dict:
    """Time and profile one variant's updates."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    trainer, epoch_itr = build_trainer(argv)
    cuda = torch.cuda.is_available()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def batches():
        while True:
            yield from epoch_itr.next_epoch_itr(shuffle=True)

    it = batches()
    for _ in range(warmup):
        trainer.train_step([next(it)])
    sync()
    waits, step = [], 0.0
    tokens = 0
    start = time.perf_counter()
    for _ in range(updates):
        t0 = time.perf_counter()
        sample = next(it)
        t1 = time.perf_counter()
        trainer.train_step([sample])
        sync()
        t2 = time.perf_counter()
        waits.append(t1 - t0)
        step += t2 - t1
        tokens += int(sample["ntokens"])
    wall = time.perf_counter() - start
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(profile_updates):
            trainer.train_step([next(it)])
        sync()
        prof_wall = time.perf_counter() - t0
    return {"updates": updates, "updates_per_s": round(updates / wall, 3),
            "target_tokens_per_s": round(tokens / wall),
            "ms_per_update": round(1000 * wall / updates, 2),
            "data_wait_ms_per_update": round(1000 * sum(waits) / updates, 2),
            "data_waits_over_100ms": [round(w, 2) for w in waits if w > 0.1],
            "step_ms_per_update": round(1000 * step / updates, 2),
            **profile_summary(prof, profile_updates, prof_wall)}


def profile_summary(prof, n: int, wall: float) -> dict:
    """Kernel time and launches, syncs and the top ops per update, from torch.profiler."""
    from torch.autograd import DeviceType

    events = prof.key_averages()
    cpu_ops = [e for e in events if e.device_type == DeviceType.CPU]
    # a record_function range ("forward", "optimizer", ...) also shows on the GPU timeline as
    # the span of its kernels: not a kernel
    ranges = {e.key for e in cpu_ops}
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and e.key not in ranges]
    kernel_us = sum(e.self_device_time_total for e in kernels)
    out = {"profiled_updates": n, "profiled_ms_per_update": round(1000 * wall / n, 2),
           "kernel_ms_per_update": round(kernel_us / 1000 / n, 2),
           "kernel_launches_per_update": round(sum(e.count for e in kernels) / n, 1),
           "gpu_busy": round(kernel_us / 1e6 / wall, 3) if kernels else None,
           "syncs_per_update": {e.key: round(e.count / n, 1) for e in cpu_ops
                                if e.key in SYNC_OPS}}
    top = sorted(cpu_ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:20]
    out["top_cpu_ops"] = [{"op": e.key, "calls_per_update": round(e.count / n, 1),
                           "self_cpu_ms_per_update": round(e.self_cpu_time_total / 1000 / n, 3)}
                          for e in top]
    topk = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:15]
    out["top_kernels"] = [{"kernel": e.key[:120], "calls_per_update": round(e.count / n, 1),
                           "ms_per_update": round(e.self_device_time_total / 1000 / n, 3)}
                          for e in topk]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="debian.en-de", choices=sorted(TASKS))
    ap.add_argument("--variants", nargs="+", default=["today"], choices=sorted(VARIANTS))
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--updates", type=int, default=300,
                    help="timed updates (at 16k tokens an epoch of debian.en-de is ~190)")
    ap.add_argument("--profile-updates", type=int, default=10)
    ap.add_argument("--work", default="/tmp/hat_train_profile")
    ap.add_argument("--out", required=True, help="JSON to write")
    ap.add_argument("--smoke", action="store_true", help="CPU twin: toy task, a few updates")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        child = json.loads(args.child)
        result = run_child(child, args.warmup, args.updates, args.profile_updates)
        Path(args.out).write_text(json.dumps(result))
        return 0
    import torch

    data = None
    if args.smoke:
        from hat.data.toy_corpus import make_toy_corpus

        data = str(make_toy_corpus(work / "toy", n_train=600, n_valid=40, n_test=40))
        cfg_dir, recipe = ROOT / "configs" / "toy", ["--max-tokens", "1024", "--num-workers",
                                                     "0", "--cpu"]
    else:
        cfg_dir, recipe = task_recipe(args.task)
    rows = {}
    for name in args.variants:
        part = work / f"{name}.json"
        child = child_args(cfg_dir, recipe, VARIANTS[name], data, str(work / name))
        cmd = [sys.executable, "-m", "bench.speed.train_profile", "--child", json.dumps(child),
               "--warmup", str(args.warmup), "--updates", str(args.updates),
               "--profile-updates", str(args.profile_updates), "--work", str(work),
               "--out", str(part)]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "2"})
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            rows[name] = {"error": proc.stderr[-1500:], "args": VARIANTS[name]}
            continue
        rows[name] = {"args": VARIANTS[name], "process_wall_s": round(time.time() - t0, 1),
                      **json.loads(part.read_text())}
        r = rows[name]
        print(f"{name}: {r['updates_per_s']} upd/s, {r['target_tokens_per_s']} tok/s, "
              f"data wait {r['data_wait_ms_per_update']} ms, step {r['step_ms_per_update']} ms, "
              f"kernels {r['kernel_ms_per_update']} ms ({r['kernel_launches_per_update']} "
              f"launches), gpu_busy {r['gpu_busy']}", flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {"task": "toy" if args.smoke else args.task, "device": device,
              "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "recipe": recipe, "how": __doc__.strip().splitlines()[0],
              "warmup": args.warmup, "variants": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return 0 if all("error" not in r for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
