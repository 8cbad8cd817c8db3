#!/usr/bin/env python
"""Research checks of the one-command pipeline's run (``python -m hat.pipeline --out DIR``).

(a) HAT's premise: the SuperTransformer ranks SubTransformers as training them would. N random
    SubTransformers of the pipeline's space (seeded draws) are scored by their validation loss
    with inherited weights (the search's fitness, hat.evaluate.ValidLoss), then each is trained
    from scratch with the pipeline's retraining recipe and budget (``train.py`` with
    DIR/configs/retrain.yml) and scored again the same way; reported: Spearman and Kendall rank
    correlation of the two losses.
(b) Predicted vs measured latency of the found models (from DIR/results.json).
(c) Found models vs the uniformly scaled-down Transformer baseline at similar measured latency:
    BLEU (from DIR/results.json).
(a') HAT's own form of (a): the search winners' inherited loss vs their BLEU after retraining
    (``winners.spearman_winners``; from DIR/results.json).

Writes bench/results/fidelity_<preset>_<device>.json and a scatter plot PNG beside it.

    python -m hat.pipeline --out runs/quickstart
    python -m bench.studies.fidelity --run runs/quickstart [--samples 20 --jobs 2]

(a) has two parts that can run on different machines or at different times (``--part scratch``
before the SuperTransformer exists, ``--part inherited`` after); the plain command reuses them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT
from hat.pipeline.context import Context
from hat.pipeline.runner import absolute, run_parallel, script
from hat.search.latency import spearman


def kendall(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a."""
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += ((a[i] > a[j]) - (a[i] < a[j])) * ((b[i] > b[j]) - (b[i] < b[j]))
    return 2 * s / (n * (n - 1))


class Scorer:
    """Validation loss (base 2, label-smoothed) of SubTransformers of one checkpoint."""

    def __init__(self, super_yaml: Path, checkpoint: Path, device: str,
                 data: Path | None = None) -> None:
        from fairseq import tasks

        from hat.checkpoint import build_from_checkpoint, read_checkpoint
        from hat.config import parse_fairseq_args
        from hat.evaluate import ValidLoss
        from hat.training import prepare_args

        args = prepare_args(parse_fairseq_args([f"--configs={super_yaml}"]))
        if data is not None:  # the corpus the check trains on (a config may name another)
            args.data = str(data)
        task = tasks.setup_task(args)
        model = build_from_checkpoint(read_checkpoint(checkpoint), checkpoint, task=task)
        self.loss = ValidLoss(task, model.eval(), subset="valid", max_tokens=4096, device=device)

    def __call__(self, cfg: Any) -> float:
        return float(self.loss(cfg))


@dataclass(frozen=True)
class Source:
    """What check (a) trains and scores with: a pipeline run's folder, or (``--task``, no run)
    a task's committed configs with its preset's recipe, working in ``out``."""

    out: Path  # the run folder, or the workspace of a run-less check
    ctx: Context
    super_yaml: Path  # the space (and, for a run, the SuperTransformer's config)
    retrain_updates: int

    @classmethod
    def from_run(cls, run: Path) -> Source:
        ctx = run_context(run)
        yml = run / "configs" / "supertransformer.yml"
        return cls(run, ctx, yml if yml.is_file() else ctx.task.config(ctx.task.pipe.super_config),
                   ctx.preset.retrain_updates)

    @classmethod
    def from_task(cls, task: str, out: Path, seed: int = 1) -> Source:
        from hat.pipeline.presets import preset
        from hat.pipeline.tasks import pipeline_task

        t = pipeline_task(task)
        ctx = Context(out=out, preset=preset(t.pipe.default_preset),
                      say=lambda m: print(m, flush=True), seed=seed, task=t)
        return cls(out, ctx, t.config(t.pipe.super_config), ctx.preset.retrain_updates)


def run_context(run: Path) -> Context:
    """The pipeline run's context (task, preset, seed) from its pipeline.json."""
    from hat.pipeline.presets import preset
    from hat.pipeline.tasks import TASKS

    st = json.loads((run / "pipeline.json").read_text())["settings"]
    return Context(out=run, preset=preset(st["name"], st["device"]),
                   say=lambda m: print(m, flush=True), seed=st["seed"],
                   task=TASKS[st.get("task", "toy")])


def sample_configs(src: Source, n: int, seed: int) -> list[Any]:
    """``n`` distinct random SubTransformers of the space (seeded; the draws
    ``bench.studies.debian_convergence --score-random`` makes too)."""
    from hat.config import parse_fairseq_args
    from hat.models.args import space_from_args

    space = space_from_args(parse_fairseq_args([f"--configs={src.super_yaml}"]))
    return space.sample_distinct(n, seed)


def _converged(save: Path) -> dict[str, Any]:
    """What ``train.py --stop-converged-bits`` recorded in a save dir (empty without it)."""
    from hat.convergence import stop_summary

    return stop_summary(save, "gain_last_window_bits") or {}


def scratch_part(src: Source, cfgs: list[Any], updates: int, jobs: int, device: str,
                 out: Path, stop_minutes: float | None = None, gpus: int = 1,
                 converged_bits: float | None = None,
                 indices: list[int] | None = None,
                 on_row: Callable[[str, dict[str, Any]], None] | None = None
                 ) -> dict[str, Any]:
    """Train the SubTransformers (``indices`` of ``cfgs``: all by default) from scratch (the
    pipeline's retraining recipe, ``updates`` each, or until converged with ``converged_bits``:
    ``train.py --stop-converged-bits``) and score them; trainings finished earlier are kept
    (the check resumes). Rows are keyed by index, so parts trained on different days merge.
    Each training is scored as soon as it ends and handed to ``on_row(index, row)`` (the
    caller saves it), so a machine lost mid-way keeps the rows already finished."""
    from hat.pipeline.retraining import retrain_recipe
    from hat.pipeline.stages import checkpoint_updates
    from hat.space import write_subtransformer_yaml

    recipe = retrain_recipe(src.ctx)
    todo = []
    chosen = range(len(cfgs)) if indices is None else indices
    for i in chosen:
        c = cfgs[i]
        yml = out / f"sub{i:02d}.yml"
        yml.parent.mkdir(parents=True, exist_ok=True)
        write_subtransformer_yaml(c, yml, header=f"fidelity check: random SubTransformer {i}")
        save = out / f"sub{i:02d}"
        if (checkpoint_updates(save / "checkpoint_last.pt") or -1) >= updates or \
                _converged(save).get("converged"):
            continue
        argv = [sys.executable, script("train.py"), f"--configs={absolute(yml)}",
                f"--sub-configs={absolute(recipe)}", "--save-dir", absolute(save),
                "--max-update", str(updates)]
        if converged_bits:
            argv += ["--stop-converged-bits", str(converged_bits)]
        if stop_minutes:  # a safety cap: rows that hit it are reported as short
            argv += ["--stop-time-hours", f"{stop_minutes / 60:.4f}"]
        gpu = {"CUDA_VISIBLE_DEVICES": str(i % gpus)} if gpus > 1 else {}
        todo.append((f"sub{i:02d}", argv, out / f"sub{i:02d}.log", gpu))
    rows: dict[str, dict[str, Any]] = {}

    def score(label: str) -> None:
        i = int(label.removeprefix("sub"))
        ckpt = out / label / "checkpoint_last.pt"
        loss = Scorer(src.super_yaml, ckpt, device, src.ctx.data_bin)(cfgs[i])
        rows[str(i)] = {"config": cfgs[i].to_dict(), "scratch_loss": loss,
                        "scratch_updates": checkpoint_updates(ckpt), **_converged(out / label)}
        if on_row is not None:
            on_row(str(i), rows[str(i)])

    ctx = Context(out=out, preset=None, say=lambda m: print(m, flush=True))  # type: ignore[arg-type]
    t0 = time.monotonic()
    env = {"OMP_NUM_THREADS": "1"} if device == "cpu" else {}
    trained = {label for label, *_ in todo}
    for i in chosen:  # trained before (a resumed check): score them first
        if f"sub{i:02d}" not in trained:
            score(f"sub{i:02d}")
    run_parallel(ctx, todo, jobs, env, on_done=score)
    return {"rows": {str(i): rows[str(i)] for i in chosen}, "retrain_updates": updates,
            "train_seconds": time.monotonic() - t0, "jobs": jobs, "trained_now": len(todo)}


def inherited_part(src: Source, cfgs: list[Any], device: str,
                   inherited_from: str | None = None) -> dict[str, Any]:
    """Validation loss of every SubTransformer with the SuperTransformer's weights: the run's
    SuperTransformer, or (``inherited_from`` = ``JSON:JOB``) the losses that
    ``bench.studies.debian_convergence --score-random`` recorded for its training JOB (the same
    seeded draws, checked)."""
    if inherited_from:
        path, _, job = inherited_from.rpartition(":")
        rec = json.loads(Path(path).read_text())
        scored = {k: v for k, v in (rec.get("inherited_random") or {}).items() if v}
        got = scored.get(job)
        if not got:
            raise SystemExit(f"{path}: no inherited_random losses of training {job!r}; there "
                             f"are: {', '.join(scored) or 'none'}")
        if [r["config"] for r in got["random"][:len(cfgs)]] != [c.to_dict() for c in cfgs]:
            raise SystemExit(f"{path}: {job}'s random SubTransformers are not this check's draws "
                             f"(--samples {len(cfgs)}, --seed); it scored seed {got['seed']}")
        return {"losses": [r["inherited_loss"] for r in got["random"][:len(cfgs)]],
                "source": f"{path} ({job}, {got['checkpoint_updates']} updates, "
                          f"{rec.get('device')}, {rec.get('date')})", "seconds": 0.0}
    t0 = time.monotonic()
    ckpt = src.out / "checkpoints/supertransformer/checkpoint_last.pt"
    inherited = Scorer(src.super_yaml, ckpt, device, src.ctx.data_bin)
    return {"losses": [inherited(c) for c in cfgs], "seconds": time.monotonic() - t0}


def check_a(src: Source, n: int, seed: int, jobs: int, device: str, updates: int | None = None,
            part: str = "all", stop_minutes: float | None = None, gpus: int = 1,
            converged_bits: float | None = None, indices: list[int] | None = None,
            inherited_from: str | None = None, scratch_files: list[Path] | None = None
            ) -> dict[str, Any] | None:
    """(a), in two parts that can run apart (each saved in ``<out>/fidelity_<updates>/``):
    ``scratch`` needs no SuperTransformer (``indices``: some of the trainings, merged into what
    is saved; ``scratch_files``: rows saved on other machines, merged too), ``inherited`` needs
    no retraining."""
    from hat.atomic import atomic_write_json

    updates = updates or src.retrain_updates
    cfgs = sample_configs(src, n, seed)
    out = src.out / f"fidelity_{updates}"
    out.mkdir(parents=True, exist_ok=True)
    key = {"samples": n, "seed": seed, **({"converged_bits": converged_bits}
                                          if converged_bits else {})}

    def load(path: Path) -> dict[str, Any] | None:
        saved = json.loads(path.read_text()) if path.is_file() else None
        return saved if saved is not None and saved.get("key") == key else None

    got: dict[str, Any] = {}
    scratch = load(out / "scratch.json") or {"key": key, "rows": {}, "machines": {}}
    if isinstance(scratch["rows"], list):  # saved before rows were keyed by index
        scratch["rows"] = {str(i): r for i, r in enumerate(scratch["rows"])}
        scratch.setdefault("machines", {str(i): scratch.get("machine")
                                        for i in scratch["rows"]})
    for f in scratch_files or []:
        other = load(f)
        if other is None:
            raise SystemExit(f"{f}: not a scratch part of this check (samples {n}, seed {seed}"
                             + (f", converged-bits {converged_bits}" if converged_bits else "")
                             + ")")
        _merge_rows(scratch, other)
    if part in ("all", "scratch"):
        todo = [i for i in (range(n) if indices is None else indices)
                if str(i) not in scratch["rows"]]
        if todo:
            here = _machine(device)

            def save_row(i: str, row: dict[str, Any]) -> None:
                scratch["rows"][i] = row
                scratch["machines"][i] = here
                atomic_write_json(out / "scratch.json", scratch, indent=1)

            done = scratch_part(src, cfgs, updates, jobs, device, out, stop_minutes, gpus,
                                converged_bits, todo, on_row=save_row)
            scratch.update({k: done[k] for k in ("retrain_updates", "train_seconds", "jobs")})
    if scratch["rows"]:
        atomic_write_json(out / "scratch.json", scratch, indent=1)
    if len(scratch["rows"]) == n:
        got["scratch"] = scratch
    inh = load(out / "inherited.json")
    if inh is None and part in ("all", "inherited", "combine"):
        inh = {"key": key, "machine": None if inherited_from else _machine(device),
               **inherited_part(src, cfgs, device, inherited_from)}
        atomic_write_json(out / "inherited.json", inh, indent=1)
    if inh is not None:
        got["inherited"] = inh
    interim = part == "combine" and inh is not None and 3 <= len(scratch["rows"]) < n
    if len(got) < 2 and not interim:
        print(f"(a) saved in {out}: from scratch {len(scratch['rows'])}/{n} trained, inherited "
              f"{'done' if inh else 'not yet'}; run again for the rest")
        return None
    trained = sorted(int(i) for i in scratch["rows"])  # all n unless interim
    rows = [{**scratch["rows"][str(i)], "index": i, "inherited_loss": inh["losses"][i]}
            for i in trained]
    a = [r["inherited_loss"] for r in rows]
    b = [r["scratch_loss"] for r in rows]
    short = [i for i, r in enumerate(rows) if (r["scratch_updates"] or 0) < updates
             and not r.get("converged")]
    return {"samples": rows, "spearman": spearman(a, b), "kendall": kendall(a, b),
            "complete": len(rows) == n, "samples_trained": len(rows), "samples_drawn": n,
            "retrain_updates": updates, "short_of_budget": short,
            "converged_bits": converged_bits,
            "scratch_converged": sum(bool(r.get("converged")) for r in rows),
            "parts_ran_on": {"scratch": sorted(set(filter(None, scratch["machines"].values())))
                             or scratch.get("machine"),
                             "inherited": inh.get("source") or inh.get("machine")},
            **{k: scratch.get(k) for k in ("train_seconds", "jobs")}}


def _merge_rows(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Add another part's from-scratch rows; a converged row is never replaced by one that
    stopped short (the same index trained again elsewhere, e.g. after a time cap)."""
    for i, row in other["rows"].items():
        mine = into["rows"].get(i)
        if mine is not None and mine.get("converged") and not row.get("converged"):
            continue
        into["rows"][i] = row
        if i in other.get("machines", {}):
            into["machines"][i] = other["machines"][i]


def _machine(device: str) -> str:
    """Where a part ran: the GPU's name or the CPU's, and torch's version."""
    import torch

    from hat.latency.measure.machine import cpu_model

    where = (torch.cuda.get_device_name(0) if device == "cuda"
             else f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores")
    return f"{where}, torch {torch.__version__}"


def checks_bc(run: Path) -> dict[str, Any]:
    res = json.loads((run / "results.json").read_text())
    found = [m for m in res["models"] if m["latency_limit_ms"] is not None]
    base = next(m for m in res["models"] if m["latency_limit_ms"] is None)
    b = [{"name": m["name"], "predicted_ms": m["predicted_latency_ms"],
          "measured_ms": m["measured_latency_ms"],
          "error_pct": 100 * (m["predicted_latency_ms"] / m["measured_latency_ms"] - 1),
          "within_limit": m["measured_latency_ms"] <= m["latency_limit_ms"]} for m in found]
    near = min(found, key=lambda m: abs(m["measured_latency_ms"] - base["measured_latency_ms"]))
    c = {"baseline": {k: base[k] for k in ("name", "measured_latency_ms", "bleu", "params_m")},
         "found_at_similar_latency": {k: near[k] for k in ("name", "measured_latency_ms", "bleu",
                                                            "params_m")},
         "bleu_difference": near["bleu"] - base["bleu"],
         "all_found": [{k: m[k] for k in ("name", "measured_latency_ms", "bleu")} for m in found]}
    return {"b_latency": b, "c_bleu": c, "winners": winners_ranking(found),
            "pipeline": {k: res[k] for k in
                                                      ("preset", "device", "machine", "date",
                                                       "latency_protocol", "total_seconds")}}


def winners_ranking(found: list[dict[str, Any]]) -> dict[str, Any]:
    """HAT's own form of (a): the search winners' inherited validation loss against their BLEU
    after retraining from scratch (one row per distinct model; HAT's appendix data for 21 En-De
    winners gives 0.98). ``spearman_winners`` correlates the loss with -BLEU, so 1 means the
    SuperTransformer orders the winners as retraining does."""
    seen: dict[str, dict[str, Any]] = {}
    for m in found:
        if m.get("inherited_valid_loss") is not None:
            seen.setdefault(str(m.get("checkpoint") or m["yaml"]), m)
    rows = list(seen.values())
    loss = [m["inherited_valid_loss"] for m in rows]
    bleu = [-m["bleu"] for m in rows]
    return {"n": len(rows), "limits": sorted({m["latency_limit_ms"] for m in found}),
            "spearman_winners": spearman(loss, bleu) if len(rows) >= 3 else None,
            "rows": [{k: m[k] for k in ("name", "inherited_valid_loss", "bleu")} for m in rows],
            "note": None if len(rows) >= 5 else
            f"{len(rows)} distinct winners; the issue's check needs at least 5 latency limits"}


def plot(rows: list[dict[str, Any]], rho: float, path: Path, drawn: int | None = None) -> None:
    from hat.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for conv, mark, label in ((True, "o", "converged"), (False, "x", "stopped short")):
        pts = [r for r in rows if bool(r.get("converged", True)) == conv]
        if pts:
            ax.scatter([r["inherited_loss"] for r in pts], [r["scratch_loss"] for r in pts],
                       marker=mark, label=f"{label} ({len(pts)})")
    ax.set_xlabel("validation loss, inherited weights")
    ax.set_ylabel("validation loss, trained from scratch")
    of = f" of {drawn}" if drawn and drawn != len(rows) else ""
    ax.set_title(f"{len(rows)}{of} random SubTransformers: Spearman {rho:.2f}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_png(fig, path)


def _indices(spec: str, n: int) -> list[int]:
    """``A-B`` or ``A,B,C`` -> indices, each below ``n``."""
    try:
        out = []
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise SystemExit(f"--indices {spec!r}: give A-B or A,B,C (integers)") from None
    if not out or min(out) < 0 or max(out) >= n:
        raise SystemExit(f"--indices {spec!r}: each must be in 0-{n - 1} (--samples {n})")
    return sorted(set(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True,
                    help="a hat.pipeline --out DIR (with --task: the check's own folder)")
    ap.add_argument("--task", default=None,
                    help="no pipeline run: check (a) only, on this task's committed space and "
                         "its preset's retraining recipe (e.g. debian.en-de)")
    ap.add_argument("--indices", default=None, metavar="A-B",
                    help="train only these of the random SubTransformers from scratch (e.g. "
                         "0-9 on one day, 10-19 on another); saved rows are merged")
    ap.add_argument("--scratch-from", type=Path, nargs="+", default=None, metavar="JSON",
                    help="scratch.json files saved by other parts (other machines) to merge")
    ap.add_argument("--inherited-from", default=None, metavar="JSON:JOB",
                    help="inherited losses recorded by bench.studies.debian_convergence "
                         "--score-random "
                         "for its SuperTransformer training JOB, instead of the run's")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (CPU: 1 thread each)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where the losses are computed")
    ap.add_argument("--max-update", type=int, default=None,
                    help="from-scratch budget (default: the pipeline's retraining budget)")
    ap.add_argument("--part", choices=("all", "scratch", "inherited", "combine"),
                    default="all",
                    help="run one part of (a) only: 'scratch' needs no SuperTransformer, "
                         "'inherited' no retraining (the parts are saved; 'all' reuses them); "
                         "'combine' trains nothing and reports what is saved, an interim "
                         "result (complete: false) while some from-scratch rows are missing")
    ap.add_argument("--stop-minutes", type=float, default=None,
                    help="safety cap per from-scratch training (rows that hit it are listed "
                         "in short_of_budget)")
    ap.add_argument("--gpus", type=int, default=1,
                    help="spread the from-scratch trainings over this many GPUs")
    ap.add_argument("--converged-bits", type=float, default=None,
                    help="train each from-scratch model until converged (train.py "
                         "--stop-converged-bits: less than this gained over its last 20 %% of "
                         "updates), --max-update being the cap; rows record 'converged'")
    ap.add_argument("--parts-ran-on", default=None,
                    help="where the parts ran, for parts saved before they recorded it")
    ap.add_argument("--out", type=Path, default=None, help="JSON path")
    args = ap.parse_args()
    indices = _indices(args.indices, args.samples) if args.indices else None
    if args.task:
        src = Source.from_task(args.task, args.run)
    elif not (args.run / "pipeline.json").is_file():
        print(f"error: {args.run}/pipeline.json not found: run python -m hat.pipeline --out "
              f"{args.run} first (or check a task's space alone with --task)", file=sys.stderr)
        return 2
    else:
        src = Source.from_run(args.run)
    a_args = dict(updates=args.max_update, stop_minutes=args.stop_minutes, gpus=args.gpus,
                  converged_bits=args.converged_bits, indices=indices,
                  inherited_from=args.inherited_from, scratch_files=args.scratch_from)
    if args.part not in ("all", "combine"):
        check_a(src, args.samples, args.seed, args.jobs, args.device, part=args.part, **a_args)
        return 0
    t0 = time.monotonic()
    if args.task:  # (a) alone: no pipeline results to check
        a = check_a(src, args.samples, args.seed, args.jobs, args.device, part=args.part,
                    **a_args)
        if a is None:
            return 0
        out = args.out or ROOT / "bench" / "results" / f"fidelity_{args.task}.json"
        record = {"what": "HAT's premise checked (bench.studies.fidelity --task)",
                  "task": args.task,
                  "date": datetime.date.today().isoformat(),
                  "combined_on": _machine(args.device), "a_ranking": a,
                  "spearman": a["spearman"], "seconds": time.monotonic() - t0}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")
        plot(a["samples"], a["spearman"], out.with_suffix(".png"), args.samples)
        print(f"(a) {a['samples_trained']} of {args.samples} random SubTransformers"
              f"{'' if a['complete'] else ' (interim)'}: Spearman {a['spearman']:.3f}, "
              f"Kendall {a['kendall']:.3f}; wrote {out}")
        return 0
    if not (args.run / "results.json").is_file():
        print(f"error: {args.run}/results.json not found: finish python -m hat.pipeline --out "
              f"{args.run} first", file=sys.stderr)
        return 2
    bc = checks_bc(args.run)
    a = check_a(src, args.samples, args.seed, args.jobs, args.device, part=args.part, **a_args)
    assert a is not None
    p = bc["pipeline"]
    name = f"fidelity_{p['preset']}_{p['device']}"
    out = args.out or ROOT / "bench" / "results" / f"{name}.json"
    if args.parts_ran_on:
        a["parts_ran_on"] = {k: v or args.parts_ran_on for k, v in a["parts_ran_on"].items()}
    record = {"what": "HAT's premise and the pipeline's results checked (bench.studies.fidelity)",
              "date": datetime.date.today().isoformat(), "run": str(args.run),
              "combined_on": _machine(args.device), "a_ranking": a, **bc,
              "seconds": time.monotonic() - t0}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    plot(a["samples"], a["spearman"], out.with_suffix(".png"))
    print(f"(a) {args.samples} random SubTransformers, inherited vs from-scratch "
          f"({a['retrain_updates']} updates) validation loss: Spearman {a['spearman']:.3f}, "
          f"Kendall {a['kendall']:.3f}" + (f"; {len(a['short_of_budget'])} trainings stopped "
                                           "short of the budget" if a["short_of_budget"] else ""))
    for r in bc["b_latency"]:
        print(f"(b) {r['name']}: predicted {r['predicted_ms']:.2f} ms, measured "
              f"{r['measured_ms']:.2f} ms ({r['error_pct']:+.1f}%), within its limit: "
              f"{r['within_limit']}")
    c = bc["c_bleu"]
    print(f"(c) {c['found_at_similar_latency']['name']} "
          f"({c['found_at_similar_latency']['measured_latency_ms']:.2f} ms) BLEU "
          f"{c['found_at_similar_latency']['bleu']:.2f} vs {c['baseline']['name']} "
          f"({c['baseline']['measured_latency_ms']:.2f} ms) BLEU {c['baseline']['bleu']:.2f}")
    w = bc["winners"]
    print(f"(a') {w['n']} search winners, inherited loss vs retrained BLEU: Spearman "
          + (f"{w['spearman_winners']:.3f}" if w["spearman_winners"] is not None else "n/a")
          + (f" ({w['note']})" if w["note"] else ""))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
