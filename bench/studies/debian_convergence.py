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

python -m bench.studies.debian_convergence --minutes 7 --jobs ... \
    --out bench/results/debian_en-de_convergence_h200.json
python -m bench.studies.debian_convergence --smoke --out /tmp/conv.json   # CPU twin: toy data
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
# the Debian configs ship sandwich sampling: jobs name their sampling (HAT: uniform)
HAT_ADAM = ["--optimizer", "hat_adam", "--subnet-sampling", "uniform"]
SANDWICH = ["--optimizer", "hat_adam", "--subnet-sampling", "sandwich"]
DO1 = ["--dropout", "0.1"]
R8K = ["--max-tokens", "8192", "--warmup-updates", "2000"]
# larger batches: the update is bound by Python and kernel launches, so a 32k-token update costs
# little more than a 16k one (bench.speed.train_profile); lr scaled by sqrt(batch), warmup 500
# updates
R32K = [*DO1, "--max-tokens", "32768", "--warmup-updates", "500", "--lr", "0.0007",
        "--num-workers", "4"]
R32K_LR5 = [*DO1, "--max-tokens", "32768", "--num-workers", "4"]  # today's lr and warmup
R64K = [*DO1, "--max-tokens", "65536", "--warmup-updates", "500", "--lr", "0.001",
        "--num-workers", "6"]
JOBS: dict[str, tuple[str, list[str], list[str]]] = {
    "super_adam": ("super", [], ["--optimizer", "adam", "--subnet-sampling", "uniform"]),
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
    "super_adam_do0.1": ("super", DO1, ["--optimizer", "adam", "--subnet-sampling", "uniform"]),
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
    space_yml = cfg_dir / "supertransformer" / _space(cfg_dir)
    cmd = [sys.executable, "train.py", f"--configs={space_yml}"]
    if kind != "super":
        cmd = [sys.executable, "train.py", *standalone_configs(cfg_dir, kind, work / f"{name}.yml")]
    if data:
        cmd.insert(2, data)
    return cmd + [*recipe, "--no-save", "--log-format", "json", "--log-interval", "25",
                  "--max-update", "1000000", "--stop-time-hours", f"{minutes / 60:.5f}",
                  "--save-dir", str(work / name), "--seed", "1", *extra]


def standalone_configs(cfg_dir: Path, kind: str, sub: Path) -> list[str]:
    """train.py's config options of the space's ``kind`` ("largest" or "smallest")
    SubTransformer trained alone with the task's retraining options (its YAML written to
    ``sub``)."""
    from hat.config import parse_fairseq_args
    from hat.space import SearchSpace, write_subtransformer_yaml

    space_yml = cfg_dir / "supertransformer" / _space(cfg_dir)
    space = SearchSpace.from_args(parse_fairseq_args([f"--configs={space_yml}"]),
                                  source=str(space_yml))
    sub.parent.mkdir(parents=True, exist_ok=True)
    write_subtransformer_yaml(space.largest() if kind == "largest" else space.smallest(), sub)
    return [f"--configs={sub}", f"--sub-configs={cfg_dir / 'subtransformer' / 'common.yml'}"]


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
            inherited = j["curve"][-1][f"loss_{which}"]
            best = min(r["loss"] for r in a["curve"])
            row[which] = {"standalone": alone[0], "inherited_loss": inherited,
                          "standalone_loss": a["curve"][-1]["loss"],
                          "gap_bits": round(inherited - a["curve"][-1]["loss"], 3),
                          # stricter: against the standalone training's best validation
                          "standalone_best_loss": best,
                          "gap_bits_vs_best": round(inherited - best, 3),
                          **converged(a["curve"], "loss")}
        out[name] = row
    return out


def pipeline_gaps(pipeline: dict, jobs: dict[str, dict]) -> dict:
    """The gaps of a pipeline run's SuperTransformer (a ``bench/results/pipeline_*.json``: its
    last validation's inherited losses, the weights its search used) against this study's
    standalone trainings of the shipped recipe (dropout 0.1, no other override)."""
    sup = pipeline.get("supertransformer") or {}
    final = sup.get("final_valid_loss") or {}
    row = {}
    for which in ("largest", "smallest"):
        alone = [n for n, a in jobs.items() if a["kind"] == which and a["curve"]
                 and a["recipe_overrides"] in ([], DO1)]
        if not alone or which not in final:
            continue
        a = jobs[alone[0]]
        last, best = a["curve"][-1]["loss"], min(r["loss"] for r in a["curve"])
        row[which] = {"standalone": alone[0], "inherited_loss": final[which],
                      "inherited_best_loss": (sup.get("best_valid_loss") or {}).get(which),
                      "standalone_loss": last, "gap_bits": round(final[which] - last, 3),
                      "standalone_best_loss": best,
                      "gap_bits_vs_best": round(final[which] - best, 3),
                      **converged(a["curve"], "loss")}
    return {"run": {k: pipeline.get(k) for k in ("task", "date", "machine", "torch")},
            "updates": sup.get("updates"), "train_seconds": sup.get("train_seconds"), **row}


def plot(result: dict, path: Path) -> None:
    """Curves of the largest and the smallest (inherited solid, alone dashed) and, where scored,
    every SuperTransformer's inherited losses of random SubTransformers beside its extremes."""
    from hat.plots import pyplot, save_png

    plt = pyplot()
    scored = {k: v for k, v in (result.get("inherited_random") or {}).items() if v}
    fig, axes = plt.subplots(1, 3 if scored else 2, figsize=(17 if scored else 13, 5),
                             gridspec_kw={"width_ratios": [3, 3, 2] if scored else [1, 1]})
    axes[1].sharey(axes[0])
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
        ax.set_title(f"{which} SubTransformer: inherited (solid) vs trained alone (dashed)",
                     fontsize=10)
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if scored:
        ax = axes[2]
        for i, v in enumerate(scored.values()):
            ys = sorted(r["inherited_loss"] for r in v["random"])
            ax.scatter([i] * len(ys), ys, s=14, alpha=0.6,
                       label="random SubTransformers" if i == 0 else None, color="C0")
            ax.scatter([i], [v["largest"]], marker="v", s=60, color="C2",
                       label="largest" if i == 0 else None)
            ax.scatter([i], [v["smallest"]], marker="^", s=60, color="C3",
                       label="smallest" if i == 0 else None)
        ax.set_xticks(range(len(scored)))
        ax.set_xlim(-0.5, len(scored) - 0.5)
        ax.set_ylabel("valid loss, base 2 (fp32, from the last checkpoint)")
        ax.set_xticklabels([f"{n}\n({v['checkpoint_updates']} upd)" for n, v in scored.items()],
                           fontsize=7)
        n = len(next(iter(scored.values()))["random"])
        ax.set_title(f"{n} seeded random SubTransformers, inherited", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("valid loss, base 2 (label-smoothed)")
    fig.suptitle(f"{result['task']} on {result['device']} ({result['torch']}, {result['date']}),"
                 f" {len(result['jobs'])} trainings side by side, {result['minutes']} min each")
    fig.tight_layout()
    save_png(fig, path)


def start_jobs(names: list[str], cfg_dir: Path, work: Path, recipe: list[str], minutes: float,
               data: str | None, until_converged: bool, save_supers: bool,
               detach: bool) -> None:
    """Start every training in its own process (with ``detach``: its own session, so it outlives
    the command that started it); ``work/jobs.json`` records what runs where."""
    jobs = {}
    for name in names:
        kind, overrides, extra = JOBS[name]
        cmd = job_command(name, kind, overrides + extra, cfg_dir, work, recipe, minutes, data)
        if kind != "super" and until_converged:
            cmd += ["--stop-converged-bits", str(CONVERGED_BITS)]
        if kind == "super" and save_supers:  # one checkpoint, at the end, for scoring
            cmd = [c for c in cmd if c != "--no-save"] + [
                "--no-epoch-checkpoints", "--save-interval", "1000000"]
        rc_file = work / f"{name}.rc"
        rc_file.unlink(missing_ok=True)
        with open(work / f"{name}.log", "w") as log:
            proc = subprocess.Popen(
                ["bash", "-c", 'cd "$1" && shift && "$@"; echo $? > "$RC"', "job", str(ROOT),
                 *cmd], stdout=log, stderr=subprocess.STDOUT, start_new_session=detach,
                env={**os.environ, "OMP_NUM_THREADS": "2", "RC": str(rc_file)})
        jobs[name] = {"pid": proc.pid, "start": time.time(), "command": cmd}
    (work / "jobs.json").write_text(json.dumps({"minutes": minutes, "recipe": recipe,
                                                "cfg_dir": str(cfg_dir), "jobs": jobs}))


def wait_jobs(work: Path, wait_s: float | None) -> bool:
    """Wait until every training has ended (True) or ``wait_s`` passed (False)."""
    names = json.loads((work / "jobs.json").read_text())["jobs"]
    deadline = None if wait_s is None else time.time() + wait_s
    while not all((work / f"{n}.rc").is_file() for n in names):
        if deadline is not None and time.time() >= deadline:
            return False
        time.sleep(2)
    return True


def score_random(work: Path, name: str, cfg_dir: Path, n: int, seed: int, data: str | None,
                 device: str) -> dict | None:
    """A SuperTransformer's inherited valid loss of its largest, its smallest and ``n`` seeded
    random SubTransformers (the draws ``bench.studies.fidelity`` makes from the same space), so that
    from-scratch trainings of the same configs, on another day, can be joined by config."""
    from hat.config import parse_fairseq_args
    from hat.evaluate import ValidLoss, load_for_eval
    from hat.pipeline.stages import checkpoint_updates
    from hat.space import SearchSpace

    ckpt = work / name / "checkpoint_last.pt"
    if not ckpt.is_file():
        return None
    space_yml = cfg_dir / "supertransformer" / _space(cfg_dir)
    space = SearchSpace.from_args(parse_fairseq_args([f"--configs={space_yml}"]),
                                  source=str(space_yml))
    cfgs = space.sample_distinct(n, seed)
    os.chdir(ROOT)  # the configs' data paths are relative to the checkout, as for train.py
    task, model = load_for_eval(str(ckpt), data=data, device=device)
    loss = ValidLoss(task, model, subset="valid", max_tokens=4096, device=device)
    t0 = time.time()
    largest, smallest = float(loss(space.largest())), float(loss(space.smallest()))
    rows = [{"config": c.to_dict(), "inherited_loss": float(loss(c))} for c in cfgs]
    inside = sum(smallest >= r["inherited_loss"] >= largest - 0.3 for r in rows)
    return {"checkpoint_updates": checkpoint_updates(ckpt), "seed": seed, "largest": largest,
            "smallest": smallest, "random": rows, "seconds": round(time.time() - t0, 1),
            "random_between_extremes": f"{inside}/{n}"}


def collect(work: Path, out: Path, smoke: bool, task: str, score_n: int, score_seed: int,
            data: str | None, all_done: bool) -> dict:
    """Curves, speeds and gaps from the logs so far (trainings may still run)."""
    import torch

    from hat.convergence import stop_summary

    state = json.loads((work / "jobs.json").read_text())
    jobs = {}
    for name, info in state["jobs"].items():
        rc_file = work / f"{name}.rc"
        rc = int(rc_file.read_text()) if rc_file.is_file() else None
        text = (work / f"{name}.log").read_text()
        if rc not in (0, None):
            print(text[-3000:], file=sys.stderr)
        kind, overrides, extra = JOBS[name]
        wall = (rc_file.stat().st_mtime if rc is not None else time.time()) - info["start"]
        jobs[name] = {**summarize(name, kind, overrides, extra, text, wall), "rc": rc,
                      "command": " ".join(c for c in info["command"][1:])}
        if kind != "super":
            jobs[name]["stop"] = stop_summary(work / name)
        print(f"{name}: rc {rc}, {jobs[name]['updates']} updates, "
              f"{jobs[name]['updates_per_s']} upd/s, last {jobs[name]['curve'][-1:]}")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {"task": "toy" if smoke else task, "device": device,
              "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "minutes": state["minutes"], "side_by_side": len(jobs),
              "finished": all_done, "recipe": state["recipe"],
              "how": __doc__.strip().splitlines()[0],
              "converged_if_gain_below_bits": CONVERGED_BITS, "jobs": jobs,
              "gaps": gaps(jobs)}
    if all_done and score_n:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        result["inherited_random"] = {
            name: score_random(work, name, Path(state["cfg_dir"]), score_n, score_seed, data,
                               dev)
            for name in jobs if jobs[name]["kind"] == "super"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(json.dumps(result["gaps"], indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="debian.en-de", choices=sorted(TASKS))
    ap.add_argument("--jobs", nargs="+", default=list(JOBS)[:6], choices=sorted(JOBS))
    ap.add_argument("--minutes", type=float, default=6.0, help="wall time of each training")
    ap.add_argument("--work", default="/tmp/hat_convergence", help="scratch folder")
    ap.add_argument("--out", help="JSON to write (a PNG beside it)")
    ap.add_argument("--until-converged", action="store_true",
                    help="stop each standalone training once converged (train.py "
                         f"--stop-converged-bits {CONVERGED_BITS})")
    ap.add_argument("--score-random", type=int, default=0, metavar="N",
                    help="when every training has ended: each SuperTransformer's inherited "
                         "valid loss of N seeded random SubTransformers (and its extremes)")
    ap.add_argument("--score-seed", type=int, default=7)
    ap.add_argument("--detach", action="store_true",
                    help="start the trainings in their own sessions and return (a later "
                         "--collect reads them); for machines lent one command at a time")
    ap.add_argument("--collect", action="store_true",
                    help="do not start: read the trainings in --work (waiting up to --wait-s)")
    ap.add_argument("--wait-s", type=float, default=None,
                    help="with --collect: write what is there after this many seconds")
    ap.add_argument("--replot", metavar="JSON",
                    help="recompute the gaps and the PNG of a written JSON (no training)")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU twin: the toy task's tiny space on a generated corpus, seconds")
    ap.add_argument("--pipeline-super", metavar="PIPELINE_JSON",
                    help="with --replot: also the gaps of that pipeline run's SuperTransformer "
                         "(bench/results/pipeline_*.json of the same task) against this study's "
                         "standalone trainings")
    args = ap.parse_args(argv)
    if args.replot:
        path = Path(args.replot)
        result = json.loads(path.read_text())
        result["gaps"] = gaps(result["jobs"])
        if args.pipeline_super:
            pipe = json.loads(Path(args.pipeline_super).read_text())
            if pipe.get("task") != result["task"]:
                ap.error(f"--pipeline-super {args.pipeline_super}: task {pipe.get('task')}, "
                         f"this study's is {result['task']}")
            result["gaps"]["pipeline_supertransformer"] = {
                **pipeline_gaps(pipe, result["jobs"]), "from": args.pipeline_super}
        path.write_text(json.dumps(result, indent=1))
        plot(result, path.with_suffix(".png"))
        print(json.dumps(result["gaps"], indent=1))
        return 0
    if not args.detach and not args.out:
        ap.error("--out is required (except with --detach)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = None
    if args.smoke:
        data = str(work / "toy" / "data-bin")
        cfg_dir, recipe = ROOT / "configs" / "toy", ["--max-tokens", "1024",
                                                     "--warmup-updates", "5", "--num-workers",
                                                     "0", "--lr", "0.003"]
    else:
        cfg_dir, recipe = ROOT / TASKS[args.task], RECIPE + ["--num-workers", "2"]
    if not args.collect:
        if args.smoke:
            from hat.data.toy_corpus import make_toy_corpus

            data = str(make_toy_corpus(work / "toy", n_train=600, n_valid=40, n_test=40))
        start_jobs(args.jobs, cfg_dir, work, recipe, args.minutes, data, args.until_converged,
                   bool(args.score_random), args.detach)
        if args.detach:
            print(f"started {len(args.jobs)} trainings in {work}; read them with --collect")
            return 0
    done = wait_jobs(work, args.wait_s if args.collect else None)
    result = collect(work, Path(args.out), args.smoke, args.task, args.score_random,
                     args.score_seed, data, done)
    return 0 if all(j["rc"] in (0, None) for j in result["jobs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
