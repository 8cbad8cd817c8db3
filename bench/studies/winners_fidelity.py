#!/usr/bin/env python
"""HAT's own fidelity check on a pipeline run: the search winners of several latency limits,
their validation loss with inherited weights (as the search scored them) against their BLEU
after retraining from scratch with the run's recipe. HAT's appendix data for 21 En-De winners
gives Spearman 0.98.

The winners of the run's own limits were retrained by the pipeline. Winners of further limits
come from the same search: under a limit L, the evaluated SubTransformer with the lowest
inherited loss (the search's saved state holds every evaluation, so this is what a search
under L would report from the candidates it saw). The further limits are spread over the
search's loss/latency front up to the run's highest limit, apart from the run's own winners.
The check needs no SuperTransformer: it runs on a checkpoint-free copy of the run
(``bench/debian_gpu.sh pipeline-wait``'s ``run_small.tgz``), on another day than the run, and
resumes (a winner trained and scored earlier is kept).

    python -m bench.studies.winners_fidelity --run DIR [--winners 6] [--jobs 3] [--out JSON]

Writes JSON (``spearman_winners``: inherited loss vs -BLEU on the test split, 1 = the
SuperTransformer orders the winners as retraining does) and a scatter plot PNG beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT
from hat.atomic import atomic_write_json
from hat.search.evolution import Candidate, SearchState
from hat.search.latency import spearman
from hat.search.report import pareto_front
from hat.subconfig import SubConfig


def load_candidates(state_json: Path) -> list[Candidate]:
    """Every SubTransformer a search evaluated (its ``<out>.state.json``)."""
    saved = json.loads(state_json.read_text(encoding="utf-8"))
    return list(SearchState.from_json(saved["state"]).scores.values())


def winner_under(cands: list[Candidate], limit_ms: float) -> Candidate | None:
    """The lowest inherited loss at a predicted latency within ``limit_ms`` (None: none)."""
    ok = [c for c in cands if c.latency_ms <= limit_ms]
    return min(ok, key=lambda c: (c.loss, c.latency_ms)) if ok else None


def further_winners(cands: list[Candidate], upto_ms: float, have: dict[str, float], n: int,
                    apart: float = 0.05) -> list[tuple[float, Candidate]]:
    """``n`` (limit, winner) pairs of further limits up to ``upto_ms``: points of the
    loss/latency front that are not the run's winners (``have``: key -> predicted latency) nor
    within ``apart`` (relative) of their latency, spread evenly over the front's latencies. A
    front point is the winner under its own predicted latency; the limit is that latency
    rounded up to three significant digits (where no other point gets in)."""
    from hat.pipeline.stages import _three_digits

    near = list(have.values())
    pts = [c for c in pareto_front(cands) if c.latency_ms <= upto_ms and c.key not in have
           and all(abs(c.latency_ms / ms - 1) > apart for ms in near)]
    chosen = list(pts)
    if len(pts) > n:
        chosen = []
        lo, hi = pts[0].latency_ms, pts[-1].latency_ms
        for j in range(n):
            t = lo + (hi - lo) * j / max(1, n - 1)
            chosen.append(min((p for p in pts if p not in chosen),
                              key=lambda p: abs(p.latency_ms - t)))
    out = []
    for c in sorted(chosen, key=lambda c: c.latency_ms):
        limit = _three_digits(c.latency_ms, up=True)
        w = winner_under(cands, limit)
        out.append((limit, c) if w is not None and w.key == c.key else (c.latency_ms, c))
    return out


def _check_recipe(ctx: Any) -> Path:
    """The run's retraining recipe, written again from its task and preset; refused when it
    differs from the one its models were retrained with (other than the corpus' path)."""
    from hat.pipeline.retraining import retrain_recipe
    from hat.yamlio import load_yaml

    path = ctx.out / "configs" / "retrain.yml"
    before = load_yaml(path) if path.is_file() else None
    after = load_yaml(retrain_recipe(ctx))
    if before is not None:
        changed = sorted(k for k in set(before) | set(after)
                         if k != "data" and before.get(k) != after.get(k))
        if changed:
            from hat.yamlio import write_yaml

            write_yaml(path, before, "Retraining recipe of the pipeline (restored)")
            raise SystemExit(
                f"{path}: this code's retraining recipe differs from the run's in "
                + ", ".join(f"{k} ({before.get(k)!r} -> {after.get(k)!r})" for k in changed)
                + ": winners retrained now would not be comparable with the run's")
    return path


def open_run(run: Path) -> tuple[Any, dict[str, Any]]:
    """The run's context and its results (paths in them pointing into ``run``; a folder moved
    or copied since the run has its configs and search state pointed here, as the pipeline
    does when it resumes one)."""
    from bench.studies.fidelity import run_context
    from hat.pipeline import rundir

    ctx = run_context(run)
    was = json.loads((run / "pipeline.json").read_text()).get("run_dir")
    res = json.loads((run / "results.json").read_text())
    if was and was != str(run):
        rundir.relocate(run, was)
        res = json.loads(json.dumps(res).replace(json.dumps(was)[1:-1] + "/", str(run) + "/"))
    return ctx, rundir.local(res, run)


def winners_of(run: Path, n: int, apart: float = 0.05
               ) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's context, its retrained winners (from results.json) and the further winners
    (name, YAML written under DIR/winners/, limit, inherited loss, predicted latency) that
    bring the distinct winners to ``n``."""
    from hat.space import read_subtransformer_yaml, write_subtransformer_yaml

    ctx, res = open_run(run)
    found = [m for m in res["models"] if m["latency_limit_ms"] is not None]
    if not found:
        raise SystemExit(f"{run}/results.json: no search winners")
    state = ctx.search_yaml.with_name(ctx.search_yaml.stem.split("@")[0] + ".state.json")
    if not state.is_file():
        raise SystemExit(f"{state} not found: the run's search state (every evaluation) is "
                         "needed to pick winners of further limits")
    cands = load_candidates(state)
    have = {read_subtransformer_yaml(m["yaml"]).key():
            m.get("predicted_latency_ms") or m["latency_limit_ms"] for m in found}
    extra: list[dict[str, Any]] = []
    upto = max(m["latency_limit_ms"] for m in found)
    for limit, w in further_winners(cands, upto, have, n - len(have), apart):
        name = f"winner@{limit:g}ms"
        yml = run / "winners" / f"{name}.yml"
        yml.parent.mkdir(parents=True, exist_ok=True)
        write_subtransformer_yaml(
            SubConfig.from_dict(json.loads(w.key)), yml,
            f"winners_fidelity: lowest inherited loss ({w.loss:.4f}) of the run's search under "
            f"{limit:g} ms (predicted {w.latency_ms:.3f} ms)")
        extra.append({"name": name, "yaml": str(yml), "latency_limit_ms": limit,
                      "inherited_valid_loss": w.loss, "predicted_latency_ms": w.latency_ms,
                      "params_m": w.params_m})
    return ctx, found, extra


def retrained_loss(run: Path, save: Path) -> float | None:
    """Best validation loss of a retraining (its log in DIR/logs), or None."""
    from bench.studies.pipeline_progress import valid_curve

    log = run / "logs" / f"retrain_{save.name}.log"
    curve = valid_curve(log) if log.is_file() else []
    return min(v["loss"] for v in curve) if curve else None


def check(run: Path, n: int, jobs: int, apart: float = 0.05) -> dict[str, Any]:
    """Retrain and score the further winners; rank every winner."""
    from hat.pipeline.retraining import stage_bleu, stage_retrain

    ctx, found, extra = winners_of(run, n, apart)
    recipe = _check_recipe(ctx)
    t0 = time.monotonic()
    if extra:
        stage_retrain(ctx, extra, jobs)
        scores = stage_bleu(ctx, extra, jobs)["scores"]
        for m in extra:
            s = scores[m["name"]]
            m.update({"bleu": s["bleu"], "bleu_signature": s.get("signature"),
                      **{f"bleu_{k}": v["bleu"] for k, v in s["splits"].items()}})
    rows, seen = [], set()
    for src, models in (("pipeline", found), ("front", extra)):
        for m in models:
            save = Path(m["checkpoint"]).parent  # two limits that found one model share it
            if save in seen:
                continue
            seen.add(save)
            rows.append({k: m.get(k) for k in (
                "name", "latency_limit_ms", "predicted_latency_ms", "inherited_valid_loss",
                "bleu", "bleu_test_unseen", "params_m")}
                | {"retrained_valid_loss": retrained_loss(run, save), "from": src})
    loss = [r["inherited_valid_loss"] for r in rows]
    retr = [r["retrained_valid_loss"] for r in rows]

    def rho(other: list[Any]) -> float | None:  # None: too few, unknown or constant
        if len(rows) < 3 or None in other:
            return None
        got = spearman(loss, other)
        return None if got != got else got

    return {
        "rows": rows, "n": len(rows),
        "spearman_winners": rho([-r["bleu"] for r in rows]),
        "spearman_winners_valid_loss": rho(retr),
        "recipe": str(recipe), "train_seconds": time.monotonic() - t0,
        "note": "; ".join(filter(None, [
            None if len(rows) >= 5 else f"{len(rows)} distinct winners: the search's front "
            "holds no more apart from the run's",
            "every winner has the same BLEU: no ranking" if len({r["bleu"] for r in rows}) == 1
            else None])) or None}


def plot(res: dict[str, Any], path: Path, title: str) -> None:
    from hat.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for src, mark in (("pipeline", "o"), ("front", "s")):
        pts = [r for r in res["rows"] if r["from"] == src]
        if pts:
            ax.scatter([r["inherited_valid_loss"] for r in pts], [r["bleu"] for r in pts],
                       marker=mark, label={"pipeline": "the run's limits",
                                           "front": "further limits"}[src])
            for r in pts:
                ax.annotate(f"{r['latency_limit_ms']:g} ms", (r["inherited_valid_loss"],
                                                              r["bleu"]), fontsize=7)
    rho = res["spearman_winners"]
    ax.set_title(f"{title}: {res['n']} winners, Spearman "
                 + (f"{rho:.2f}" if rho is not None else "n/a"), fontsize=9)
    ax.set_xlabel("validation loss, inherited weights (base 2)")
    ax.set_ylabel("BLEU (test) after retraining from scratch")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_png(fig, path)


def merge_into(fidelity_json: Path, record: dict[str, Any], source: Path) -> None:
    """Write the winners' Spearman into the random-SubTransformer fidelity JSON of the same
    task (refused for another task's)."""
    fid = json.loads(fidelity_json.read_text())
    if fid.get("task") not in (None, record["task"]):
        raise SystemExit(f"--into {fidelity_json}: its task is {fid.get('task')}, this run's "
                         f"is {record['task']}")
    try:
        shown = str(source.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(source)
    fid.update({"spearman_winners": record["spearman_winners"],
                "spearman_winners_valid_loss": record["spearman_winners_valid_loss"],
                "winners": record["n"], "winners_from": shown,
                "winners_run_date": record["run_date"]})
    atomic_write_json(fidelity_json, fid, indent=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True,
                    help="a finished hat.pipeline --out DIR, or a checkpoint-free copy of one")
    ap.add_argument("--winners", type=int, default=6,
                    help="distinct winners in all (the run's own and further limits')")
    ap.add_argument("--jobs", type=int, default=3,
                    help="retrainings at once (one GPU: side by side through CUDA MPS)")
    ap.add_argument("--apart", type=float, default=0.05,
                    help="a further winner's predicted latency differs from each of the run's "
                         "winners' by more than this fraction (a near twin tells little)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default bench/results/fidelity_winners_<task>_<device>.json)")
    ap.add_argument("--into", type=Path, default=None, metavar="FIDELITY_JSON",
                    help="also write spearman_winners (and its valid-loss form, with this "
                         "record's path) into bench.studies.fidelity's JSON of the same task, "
                         "beside its spearman over random SubTransformers")
    args = ap.parse_args(argv)
    if not (args.run / "results.json").is_file():
        print(f"error: {args.run}/results.json not found: finish python -m hat.pipeline --out "
              f"{args.run} first", file=sys.stderr)
        return 2
    if args.winners < 3:
        print("error: --winners must be at least 3 (a rank correlation)", file=sys.stderr)
        return 2
    run = args.run.resolve()
    res = check(run, args.winners, args.jobs, args.apart)
    meta = json.loads((run / "results.json").read_text())
    record = {"what": "HAT's fidelity check over search winners "
                      "(bench.studies.winners_fidelity)",
              "task": meta.get("task"), "date": datetime.date.today().isoformat(),
              "run_date": meta.get("date"), "machine": meta.get("machine"),
              "device": meta.get("device"), **res}
    task = str(meta.get("task") or "toy").replace("debian.", "debian_")
    out = args.out or ROOT / "bench" / "results" / \
        f"fidelity_winners_{task}_{meta.get('device')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record, indent=1)
    plot(res, out.with_suffix(".png"), str(meta.get("task")))
    if args.into is not None:
        merge_into(args.into, record, out)
    rho = res["spearman_winners"]
    print(f"{res['n']} search winners, inherited loss vs retrained BLEU: Spearman "
          + (f"{rho:.3f}" if rho is not None else "n/a")
          + (f" ({res['note']})" if res["note"] else "") + f"; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
