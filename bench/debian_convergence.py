#!/usr/bin/env python
"""Does the SuperTransformer reach its SubTransformers trained alone? Curves on real data.

Trains, side by side on one GPU and each in its own fairseq process for the same wall time,
SuperTransformers (HAT's Adam, ``hat_adam``, sandwich sampling, ...) and the largest and the
smallest SubTransformer alone with the same recipe. Every training validates at each epoch's end
(the SuperTransformer: its largest and smallest SubTransformer with inherited weights). Writes the
curves, updates/s and target tokens/s (fairseq's ``ups`` and ``wpb`` per train_inner line; with
sandwich sampling ``wpb`` counts each pass, so tokens/s divides by the passes) and, for every
SuperTransformer, ``gap_bits``: its inherited valid loss minus the standalone one, for the
largest and the smallest, with whether the standalone training had converged (less than 0.05
bits gained over its last 20 % of updates).

python -m bench.debian_convergence --minutes 7 --jobs ... \
    --out bench/results/debian_en-de_convergence_h200.json
python -m bench.debian_convergence --smoke --out /tmp/conv.json   # CPU twin: toy data
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

TASKS = {"debian.en-de": "configs/debian.en-de", "debian.en-fr": "configs/debian.en-fr"}
RECIPE = ["--max-tokens", "16384", "--warmup-updates", "1000", "--fp16"]
# name -> (kind, recipe overrides, method args); kind: super, largest, smallest. A
# SuperTransformer's gap is taken against the standalone trainings with the same overrides.
HAT_ADAM = ["--optimizer", "hat_adam"]
SANDWICH = [*HAT_ADAM, "--subnet-sampling", "sandwich"]
DO1 = ["--dropout", "0.1"]
R8K = ["--max-tokens", "8192", "--warmup-updates", "2000"]
# larger batches: the update is bound by Python and kernel launches, so a 32k-token update costs
# little more than a 16k one (bench.train_profile); lr scaled by sqrt(batch), warmup 500 updates
R32K = [*DO1, "--max-tokens", "32768", "--warmup-updates", "500", "--lr", "0.0007",
        "--num-workers", "4"]
R32K_LR5 = [*DO1, "--max-tokens", "32768", "--num-workers", "4"]  # today's lr and warmup
R64K = [*DO1, "--max-tokens", "65536", "--warmup-updates", "500", "--lr", "0.001",
        "--num-workers", "6"]
JOBS: dict[str, tuple[str, list[str], list[str]]] = {
    "super_adam": ("super", [], ["--optimizer", "adam"]),
    "super_hat_adam": ("super", [], HAT_ADAM),
    "super_sandwich": ("super", [], SANDWICH),
    "largest_alone": ("largest", [], []),
    "smallest_alone": ("smallest", [], []),
    "largest_alone_lr1e-3": ("largest", ["--lr", "0.001"], []),
    "largest_alone_4k_wu4000": ("largest", ["--max-tokens", "4096", "--warmup-updates", "4000"],
                                []),
    "largest_alone_8k_wu2000": ("largest", R8K, []),
    "largest_alone_wu4000_lr7e-4": ("largest", ["--warmup-updates", "4000", "--lr", "0.0007"],
                                    []),
    "largest_alone_lr2.5e-4": ("largest", ["--lr", "0.00025"], []),
    "largest_alone_dropout0.1": ("largest", ["--dropout", "0.1"], []),
    "smallest_alone_8k_wu2000": ("smallest", R8K, []),
    "super_sandwich1_8k_wu2000": ("super", R8K, [*SANDWICH, "--sandwich-random", "1"]),
    "super_hat_adam_8k_wu2000": ("super", R8K, HAT_ADAM),
    "super_adam_do0.1": ("super", DO1, ["--optimizer", "adam"]),
    "super_hat_adam_do0.1": ("super", DO1, HAT_ADAM),
    "super_sandwich_do0.1": ("super", DO1, SANDWICH),
    "super_sandwich0_do0.1": ("super", DO1, [*SANDWICH, "--sandwich-random", "0"]),
    "super_sandwich1_do0.1": ("super", DO1, [*SANDWICH, "--sandwich-random", "1"]),
    "super_sandwich1_distill_do0.1": ("super", DO1, [*SANDWICH, "--sandwich-random", "1",
                                                     "--distill-weight", "0.5"]),
    "super_sandwich0_distill_do0.1": ("super", DO1, [*SANDWICH, "--sandwich-random", "0",
                                                     "--distill-weight", "0.5"]),
    "super_sandwich0_32k": ("super", R32K, [*SANDWICH, "--sandwich-random", "0"]),
    "super_hat_adam_32k": ("super", R32K, HAT_ADAM),
    "largest_alone_32k": ("largest", R32K, []),
    "largest_alone_32k_lr5e-4": ("largest", R32K_LR5, []),
    "super_sandwich0_32k_lr5e-4": ("super", R32K_LR5, [*SANDWICH, "--sandwich-random", "0"]),
    "smallest_alone_32k": ("smallest", R32K, []),
    "largest_alone_64k": ("largest", R64K, []),
    "smallest_alone_64k": ("smallest", R64K, []),
    "largest_alone_do0.1": ("largest", DO1, []),
    "smallest_alone_do0.1": ("smallest", DO1, []),
}
CONVERGED_BITS = 0.05  # gained over the last 20 % of updates


def job_command(name: str, kind: str, extra: list[str], cfg_dir: Path, work: Path,
                recipe: list[str], minutes: float, data: str | None) -> list[str]:
    """The train.py command of one training."""
    from hat.config import parse_fairseq_args
    from hat.space import SearchSpace, write_subtransformer_yaml

    space_yml = cfg_dir / "supertransformer" / _space(cfg_dir)
    cmd = [sys.executable, "train.py", f"--configs={space_yml}"]
    if kind != "super":
        space = SearchSpace.from_args(parse_fairseq_args([f"--configs={space_yml}"]),
                                      source=str(space_yml))
        sub = work / f"{name}.yml"
        write_subtransformer_yaml(space.largest() if kind == "largest" else space.smallest(), sub)
        cmd = [sys.executable, "train.py", f"--configs={sub}",
               f"--sub-configs={cfg_dir / 'subtransformer' / 'common.yml'}"]
    if data:
        cmd.insert(2, data)
    return cmd + [*recipe, "--no-save", "--log-format", "json", "--log-interval", "25",
                  "--max-update", "1000000", "--stop-time-hours", f"{minutes / 60:.5f}",
                  "--save-dir", str(work / name), "--seed", "1", *extra]


def _space(cfg_dir: Path) -> str:
    names = sorted(p.name for p in (cfg_dir / "supertransformer").glob("*.yml"))
    return "space0.yml" if "space0.yml" in names else names[0]


def parse_log(text: str) -> tuple[list[dict], list[dict]]:
    """fairseq's json train_inner and valid lines."""
    train, valid = [], []
    for line in text.splitlines():
        for tag, out in (("| train_inner | ", train), ("| valid | ", valid)):
            if tag in line:
                try:
                    out.append(json.loads(line.split(tag, 1)[1]))
                except json.JSONDecodeError:
                    pass
    return train, valid


def summarize(name: str, kind: str, overrides: list[str], extra: list[str], log: str,
              wall: float) -> dict:
    """Curves and speeds of one training."""
    train, valid = parse_log(log)
    passes = 1
    if "sandwich" in extra:
        k = int(extra[extra.index("--sandwich-random") + 1]) if "--sandwich-random" in extra \
            else 2
        passes = 2 + k
    curve = []
    walls = [(int(t["num_updates"]), float(t["wall"])) for t in train if "wall" in t]
    for v in valid:
        update = int(v["valid_num_updates"])
        row = {"update": update,
               "wall_s": max([w for u, w in walls if u <= update], default=0.0)}
        if kind == "super":
            row["loss_largest"] = float(v["valid_loss_largest"])
            row["loss_smallest"] = float(v["valid_loss_smallest"])
        else:
            row["loss"] = float(v["valid_loss"])
        curve.append(row)
    speeds = train[2:]  # skip the first intervals (start-up)
    ups = sum(float(t["ups"]) for t in speeds) / len(speeds) if speeds else None
    wpb = sum(float(t["wpb"]) for t in speeds) / len(speeds) if speeds else None
    return {"kind": kind, "recipe_overrides": overrides, "method_args": extra,
            "passes_per_update": passes, "wall_s": round(wall, 1),
            "updates": curve[-1]["update"] if curve else 0, "curve": curve,
            "updates_per_s": round(ups, 3) if ups else None,
            "target_tokens_per_s": round(ups * wpb / passes) if ups and wpb else None}


def converged(curve: list[dict], key: str) -> dict:
    """Gain over the last 20 % of updates (``converged``: under :data:`CONVERGED_BITS`), by the
    rule ``train.py --stop-converged-bits`` stops with (:mod:`hat.convergence`)."""
    from hat.convergence import gain_over_window

    gain = gain_over_window([(r["update"], r[key]) for r in curve], 0.2)
    return {"gain_last_20pct_bits": None if gain is None else round(gain, 3),
            "converged": gain is not None and gain < CONVERGED_BITS}


def gaps(jobs: dict[str, dict]) -> dict:
    """For each SuperTransformer: inherited minus standalone valid loss (largest, smallest),
    against the standalone training with the same recipe args where there is one."""
    out = {}
    for name, j in jobs.items():
        if j["kind"] != "super" or not j["curve"]:
            continue
        row = {}
        for which in ("largest", "smallest"):
            alone = [n for n, a in jobs.items() if a["kind"] == which and a["curve"]
                     and a["recipe_overrides"] == j["recipe_overrides"]]
            if not alone:
                continue
            a = jobs[alone[0]]
            row[which] = {"standalone": alone[0],
                          "inherited_loss": j["curve"][-1][f"loss_{which}"],
                          "standalone_loss": a["curve"][-1]["loss"],
                          "gap_bits": round(j["curve"][-1][f"loss_{which}"]
                                            - a["curve"][-1]["loss"], 3),
                          **converged(a["curve"], "loss")}
        out[name] = row
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, which in zip(axes, ("largest", "smallest")):
        for name, j in result["jobs"].items():
            if not j["curve"]:
                continue
            if j["kind"] == "super":
                ys = [r[f"loss_{which}"] for r in j["curve"]]
                style = "-"
            elif j["kind"] == which:
                ys, style = [r["loss"] for r in j["curve"]], "--"
            else:
                continue
            ax.plot([r["update"] for r in j["curve"]], ys, style, marker=".",
                    label=f"{name} ({j['updates_per_s'] or 0:.1f} upd/s)")
        ax.set_title(f"{which} SubTransformer: inherited (solid) vs trained alone (dashed)")
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("valid loss, base 2 (label-smoothed)")
    fig.suptitle(f"{result['task']} on {result['device']} ({result['torch']}, {result['date']}),"
                 f" {len(result['jobs'])} trainings side by side, {result['minutes']} min each")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="debian.en-de", choices=sorted(TASKS))
    ap.add_argument("--jobs", nargs="+", default=list(JOBS)[:6], choices=sorted(JOBS))
    ap.add_argument("--minutes", type=float, default=6.0, help="wall time of each training")
    ap.add_argument("--work", default="/tmp/hat_convergence", help="scratch folder")
    ap.add_argument("--out", required=True, help="JSON to write (a PNG beside it)")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU twin: the toy task's tiny space on a generated corpus, seconds")
    args = ap.parse_args(argv)
    import torch

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = None
    if args.smoke:
        from hat.data.toy_corpus import make_toy_corpus

        data = str(make_toy_corpus(work / "toy", n_train=600, n_valid=40, n_test=40))
        cfg_dir, recipe = ROOT / "configs" / "toy", ["--max-tokens", "1024",
                                                     "--warmup-updates", "5", "--num-workers",
                                                     "0", "--lr", "0.003"]
    else:
        cfg_dir, recipe = ROOT / TASKS[args.task], RECIPE + ["--num-workers", "2"]
    procs = {}
    for name in args.jobs:
        kind, overrides, extra = JOBS[name]
        cmd = job_command(name, kind, overrides + extra, cfg_dir, work, recipe, args.minutes,
                          data)
        log = open(work / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "2"}),
                       time.time(), log, cmd)
    jobs = {}
    for name, (proc, start, log, cmd) in procs.items():
        rc = proc.wait()
        log.close()
        text = (work / f"{name}.log").read_text()
        if rc != 0:
            print(text[-3000:], file=sys.stderr)
        kind, overrides, extra = JOBS[name]
        jobs[name] = {**summarize(name, kind, overrides, extra, text, time.time() - start),
                      "rc": rc,
                      "command": " ".join(c for c in cmd[1:])}
        print(f"{name}: rc {rc}, {jobs[name]['updates']} updates, "
              f"{jobs[name]['updates_per_s']} upd/s, last {jobs[name]['curve'][-1:]}")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {"task": "toy" if args.smoke else args.task, "device": device,
              "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "minutes": args.minutes, "side_by_side": len(jobs),
              "recipe": recipe, "how": __doc__.strip().splitlines()[0],
              "converged_if_gain_below_bits": CONVERGED_BITS, "jobs": jobs,
              "gaps": gaps(jobs)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(json.dumps(result["gaps"], indent=1))
    return 0 if all(j["rc"] == 0 for j in jobs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
