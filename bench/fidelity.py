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
    python -m bench.fidelity --run runs/quickstart [--samples 20 --jobs 2]

(a) has two parts that can run on different machines or at different times (``--part scratch``
before the SuperTransformer exists, ``--part inherited`` after); the plain command reuses them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT
from hat.pipeline.stages import Context, _abs, run_parallel, script
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

    def __init__(self, run: Path, checkpoint: Path, device: str) -> None:
        from fairseq import tasks

        from hat.checkpoint import build_from_checkpoint, read_checkpoint
        from hat.config import parse_fairseq_args
        from hat.evaluate import ValidLoss
        from hat.training import prepare_args

        args = prepare_args(parse_fairseq_args(
            [f"--configs={run / 'configs/supertransformer.yml'}"]))
        task = tasks.setup_task(args)
        model = build_from_checkpoint(read_checkpoint(checkpoint), checkpoint, task=task)
        self.loss = ValidLoss(task, model.eval(), subset="valid", max_tokens=4096, device=device)

    def __call__(self, cfg: Any) -> float:
        return float(self.loss(cfg))


def run_context(run: Path) -> Context:
    """The pipeline run's context (task, preset, seed) from its pipeline.json."""
    from hat.pipeline.presets import preset
    from hat.pipeline.tasks import TASKS

    st = json.loads((run / "pipeline.json").read_text())["settings"]
    return Context(out=run, preset=preset(st["name"], st["device"]),
                   say=lambda m: print(m, flush=True), seed=st["seed"],
                   task=TASKS[st.get("task", "toy")])


def sample_configs(run: Path, n: int, seed: int) -> list[Any]:
    """``n`` distinct random SubTransformers of the run's space (seeded)."""
    from hat.models.args import space_from_args

    space = space_from_args(_super_args(run))
    rng = random.Random(seed)
    cfgs: list[Any] = []
    while len(cfgs) < n:
        c = space.sample(rng)
        if c not in cfgs:
            cfgs.append(c)
    return cfgs


def _converged(save: Path) -> dict[str, Any]:
    """What ``train.py --stop-converged-bits`` recorded in a save dir (empty without it)."""
    from hat.convergence import read_record

    rec = read_record(save)
    return {} if rec is None else {"converged": rec["converged"],
                                   "gain_last_window_bits": rec["gain"]}


def scratch_part(run: Path, cfgs: list[Any], updates: int, jobs: int, device: str,
                 out: Path, stop_minutes: float | None = None, gpus: int = 1,
                 converged_bits: float | None = None) -> dict[str, Any]:
    """Train every SubTransformer from scratch (the pipeline's retraining recipe, ``updates``
    each, or until converged with ``converged_bits``: ``train.py --stop-converged-bits``) and
    score it; trainings finished earlier are kept (the check resumes)."""
    from hat.pipeline.stages import checkpoint_updates, retrain_recipe
    from hat.space import write_subtransformer_yaml

    recipe = retrain_recipe(run_context(run))
    todo = []
    for i, c in enumerate(cfgs):
        yml = out / f"sub{i:02d}.yml"
        yml.parent.mkdir(parents=True, exist_ok=True)
        write_subtransformer_yaml(c, yml, header=f"fidelity check: random SubTransformer {i}")
        save = out / f"sub{i:02d}"
        if (checkpoint_updates(save / "checkpoint_last.pt") or -1) >= updates or \
                _converged(save).get("converged"):
            continue
        argv = [sys.executable, script("train.py"), f"--configs={_abs(yml)}",
                f"--sub-configs={_abs(recipe)}", "--save-dir", _abs(save),
                "--max-update", str(updates)]
        if converged_bits:
            argv += ["--stop-converged-bits", str(converged_bits)]
        if stop_minutes:  # a safety cap: rows that hit it are reported as short
            argv += ["--stop-time-hours", f"{stop_minutes / 60:.4f}"]
        gpu = {"CUDA_VISIBLE_DEVICES": str(i % gpus)} if gpus > 1 else {}
        todo.append((f"sub{i:02d}", argv, out / f"sub{i:02d}.log", gpu))
    ctx = Context(out=out, preset=None, say=lambda m: print(m, flush=True))  # type: ignore[arg-type]
    t0 = time.monotonic()
    env = {"OMP_NUM_THREADS": "1"} if device == "cpu" else {}
    run_parallel(ctx, todo, jobs, env)
    train_s = time.monotonic() - t0
    rows = []
    for i, c in enumerate(cfgs):
        ckpt = out / f"sub{i:02d}" / "checkpoint_last.pt"
        rows.append({"config": c.to_dict(), "scratch_loss": Scorer(run, ckpt, device)(c),
                     "scratch_updates": checkpoint_updates(ckpt),
                     **_converged(out / f"sub{i:02d}")})
    return {"rows": rows, "retrain_updates": updates, "train_seconds": train_s, "jobs": jobs,
            "trained_now": len(todo)}


def inherited_part(run: Path, cfgs: list[Any], device: str) -> dict[str, Any]:
    """Validation loss of every SubTransformer with the SuperTransformer's weights."""
    t0 = time.monotonic()
    inherited = Scorer(run, run / "checkpoints/supertransformer/checkpoint_last.pt", device)
    return {"losses": [inherited(c) for c in cfgs], "seconds": time.monotonic() - t0}


def check_a(run: Path, n: int, seed: int, jobs: int, device: str, updates: int | None = None,
            part: str = "all", stop_minutes: float | None = None, gpus: int = 1,
            converged_bits: float | None = None) -> dict[str, Any] | None:
    """(a), in two parts that can run apart (each saved in ``run/fidelity_<updates>/``):
    ``scratch`` needs no SuperTransformer, ``inherited`` needs no retraining."""
    from hat.atomic import atomic_write_json

    state = json.loads((run / "pipeline.json").read_text())
    updates = updates or state["settings"]["retrain_updates"]
    cfgs = sample_configs(run, n, seed)
    out = run / f"fidelity_{updates}"
    out.mkdir(parents=True, exist_ok=True)
    key = {"samples": n, "seed": seed, **({"converged_bits": converged_bits}
                                          if converged_bits else {})}
    parts = {"scratch": lambda: scratch_part(run, cfgs, updates, jobs, device, out,
                                             stop_minutes, gpus, converged_bits),
             "inherited": lambda: inherited_part(run, cfgs, device)}
    got = {}
    for name, fn in parts.items():
        path = out / f"{name}.json"
        saved = json.loads(path.read_text()) if path.is_file() else None
        if saved is not None and saved.get("key") == key:
            got[name] = saved
        elif part in ("all", name):
            got[name] = {"key": key, "machine": _machine(device), **fn()}
            atomic_write_json(path, got[name], indent=1)
    if len(got) < 2:
        print(f"(a) part(s) {', '.join(got)} saved in {out}; run again with the other part")
        return None
    rows = [{**r, "inherited_loss": a} for r, a in zip(got["scratch"]["rows"],
                                                       got["inherited"]["losses"])]
    a = [r["inherited_loss"] for r in rows]
    b = [r["scratch_loss"] for r in rows]
    short = [i for i, r in enumerate(rows) if (r["scratch_updates"] or 0) < updates
             and not r.get("converged")]
    return {"samples": rows, "spearman": spearman(a, b), "kendall": kendall(a, b),
            "retrain_updates": updates, "short_of_budget": short,
            "converged_bits": converged_bits,
            "scratch_converged": sum(bool(r.get("converged")) for r in rows),
            "parts_ran_on": {k: v.get("machine") for k, v in got.items()},
            **{k: got["scratch"][k] for k in ("train_seconds", "jobs")}}


def _machine(device: str) -> str:
    """Where a part ran: the GPU's name or the CPU's, and torch's version."""
    import torch

    from hat.latency.machine import cpu_model

    where = (torch.cuda.get_device_name(0) if device == "cuda"
             else f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores")
    return f"{where}, torch {torch.__version__}"


def _super_args(run: Path) -> Any:
    from hat.config import parse_fairseq_args

    return parse_fairseq_args([f"--configs={run / 'configs/supertransformer.yml'}"])


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


def plot(rows: list[dict[str, Any]], rho: float, path: Path) -> None:
    from hat.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([r["inherited_loss"] for r in rows], [r["scratch_loss"] for r in rows])
    ax.set_xlabel("validation loss, inherited weights")
    ax.set_ylabel("validation loss, trained from scratch")
    ax.set_title(f"{len(rows)} random SubTransformers: Spearman {rho:.2f}")
    ax.grid(alpha=0.3)
    save_png(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a hat.pipeline --out DIR")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (CPU: 1 thread each)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where the losses are computed")
    ap.add_argument("--max-update", type=int, default=None,
                    help="from-scratch budget (default: the pipeline's retraining budget)")
    ap.add_argument("--part", choices=("all", "scratch", "inherited"), default="all",
                    help="run one part of (a) only: 'scratch' needs no SuperTransformer, "
                         "'inherited' no retraining (the parts are saved; 'all' reuses them)")
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
    if not (args.run / "pipeline.json").is_file():
        print(f"error: {args.run}/pipeline.json not found: run python -m hat.pipeline --out "
              f"{args.run} first", file=sys.stderr)
        return 2
    if args.part != "all":
        check_a(args.run, args.samples, args.seed, args.jobs, args.device, args.max_update,
                args.part, args.stop_minutes, args.gpus, args.converged_bits)
        return 0
    if not (args.run / "results.json").is_file():
        print(f"error: {args.run}/results.json not found: finish python -m hat.pipeline --out "
              f"{args.run} first", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    bc = checks_bc(args.run)
    a = check_a(args.run, args.samples, args.seed, args.jobs, args.device, args.max_update,
                "all", args.stop_minutes, args.gpus, args.converged_bits)
    assert a is not None


    p = bc["pipeline"]
    name = f"fidelity_{p['preset']}_{p['device']}"
    out = args.out or ROOT / "bench" / "results" / f"{name}.json"
    if args.parts_ran_on:
        a["parts_ran_on"] = {k: v or args.parts_ran_on for k, v in a["parts_ran_on"].items()}
    record = {"what": "HAT's premise and the pipeline's results checked (bench.fidelity)",
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
