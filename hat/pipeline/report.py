"""The pipeline's results: ``results.json``, ``results.md`` and a BLEU vs latency plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hat.atomic import atomic_write_json, atomic_write_text

BLEU_SLACK, LATENCY_RATIO = 0.2, 0.7
MIN_BLEU = 1.0  # below it (the tiny preset's barely trained models) dominance is not judged
DOMINANCE = (f"a found model within {BLEU_SLACK} BLEU of the baseline (or better) at no more than "
             f"{LATENCY_RATIO}x its measured latency")


def dominated_by(base: dict[str, Any], found: list[dict[str, Any]], bleu: str = "bleu"
                 ) -> str | None:
    """The first found model that dominates a baseline by :data:`DOMINANCE` (None: none), by
    the BLEU under key ``bleu`` (``bleu_<split>``: another test split). None too when the
    baseline scores below :data:`MIN_BLEU`: among untrained models dominance means nothing."""
    if base[bleu] is None or base[bleu] < MIN_BLEU:
        return None
    for m in sorted(found, key=lambda m: m["measured_latency_ms"]):
        if m[bleu] >= base[bleu] - BLEU_SLACK and \
                m["measured_latency_ms"] <= LATENCY_RATIO * base["measured_latency_ms"]:
            return m["name"]
    return None


def closest_rival(base: dict[str, Any], found: list[dict[str, Any]], bleu: str = "bleu"
                  ) -> str | None:
    """The found model a baseline is judged against on ``bleu``: the one that dominates it,
    else the best-scoring one at no more than :data:`LATENCY_RATIO` its latency (None: none
    is that fast)."""
    fast = [m for m in found
            if m["measured_latency_ms"] <= LATENCY_RATIO * base["measured_latency_ms"]]
    return dominated_by(base, found, bleu) or (
        max(fast, key=lambda m: m[bleu])["name"] if fast else None)


Compare = Callable[[str, str, str], "dict[str, Any] | None"]


def results(models: list[dict[str, Any]], stages: dict[str, float], meta: dict[str, Any],
            compare: Compare | None = None) -> dict[str, Any]:
    """The results record: one entry per model, wall seconds per stage, how it was run.
    ``compare(found, baseline, split)``: their BLEU difference with its 95% interval; each
    baseline then records it against its :func:`closest_rival` on every split (``vs_found``)."""
    keys = ("name", "latency_limit_ms", "predicted_latency_ms", "measured_latency_ms", "bleu",
            "params_m", "yaml", "checkpoint", "inherited_valid_loss", "bleu_signature")
    splits = _splits(models)
    rows = [{k: m.get(k) for k in (*keys, *splits)} for m in models]
    for r in rows:  # the measurement, not the prediction, decides
        lim = r["latency_limit_ms"]
        r["within_limit"] = None if lim is None else r["measured_latency_ms"] <= lim
    found = [r for r in rows if r["latency_limit_ms"] is not None]
    for r in rows:
        if r["latency_limit_ms"] is None:
            r["dominated_by"] = dominated_by(r, found)
            for k in splits:  # on every further test split too
                r[f"dominated_by_{k[len('bleu_'):]}"] = dominated_by(r, found, k)
            if compare is not None:
                r["vs_found"] = {}
                for k in ("bleu", *splits):
                    split = "test" if k == "bleu" else k[len("bleu_"):]
                    rival = closest_rival(r, found, k) if r[k] is not None else None
                    got = compare(rival, r["name"], split) if rival else None
                    if got is not None:
                        r["vs_found"][split] = {"found": rival, **got}
    return {"models": rows, "dominance_rule": DOMINANCE, "winners_fidelity": winners_fidelity(
                found, splits), "stages": stages, "total_seconds": sum(stages.values()), **meta}


def winners_fidelity(found: list[dict[str, Any]], splits: list[str]) -> dict[str, Any]:
    """HAT's fidelity check on the found models (the search winners of the run's limits): the
    Spearman correlation of their inherited valid loss with -BLEU after retraining, on each
    test split (1: the SuperTransformer orders them as retraining does; None: fewer than 3
    distinct winners or a constant side). HAT's appendix data for 21 En-De winners: 0.98."""
    from hat.search.latency import spearman

    once = {r["checkpoint"]: r for r in found if r.get("inherited_valid_loss") is not None}
    rows = list(once.values())
    out: dict[str, Any] = {"winners": len(rows)}
    for k in ("bleu", *splits):
        pairs = [(r["inherited_valid_loss"], -r[k]) for r in rows if r.get(k) is not None]
        rho = spearman(*map(list, zip(*pairs))) if len(pairs) >= 3 else float("nan")
        out["spearman_winners" + ("" if k == "bleu" else k[len("bleu"):])] = (
            None if rho != rho else round(float(rho), 4))
    return out


def markdown(res: dict[str, Any]) -> str:
    """A Markdown table of the models and the stage times."""
    splits = _splits(res["models"])
    lines = [
        f"Pipeline results ({res.get('task', 'toy')} task, {res['preset']} preset, "
        f"{res['device']}: {res['machine']}, "
        f"{res['date']}); latency with {res['latency_protocol']}", "",
        "| model | limit (ms) | predicted (ms) | measured (ms) | BLEU | "
        + "".join(f"BLEU {k[len('bleu_'):]} | " for k in splits) + "#params (M) |",
        "| --- | ---: | ---: | ---: | ---: | " + "---: | " * len(splits) + "---: |"]
    for m in res["models"]:
        lim = "-" if m["latency_limit_ms"] is None else f"{m['latency_limit_ms']:g}"
        if m.get("within_limit") is False:
            lim += " (measured above it)"
        if m["latency_limit_ms"] is None and "dominated_by" in m:
            lim += f" (dominated by {m['dominated_by']})" if m["dominated_by"] else \
                " (not dominated)"
        for k in splits:
            d = m.get(f"dominated_by_{k[len('bleu_'):]}", "")
            if m["latency_limit_ms"] is None and d != "":
                lim += f" ({k[len('bleu_'):]}: " + (f"dominated by {d})" if d else
                                                    "not dominated)")
        extra = "".join(f"{m[k]:.2f} | " for k in splits)
        lines.append(f"| {m['name']} | {lim} | {m['predicted_latency_ms']:.2f} | "
                     f"{m['measured_latency_ms']:.2f} | {m['bleu']:.2f} | {extra}"
                     f"{m['params_m']:.3f} |")
    vs = [(m["name"], split, c) for m in res["models"]
          for split, c in (m.get("vs_found") or {}).items()]
    if vs:
        lines += ["", "Each baseline against the found model it is judged by (BLEU difference, "
                      "found - baseline, with its 95% paired-bootstrap interval):", ""]
        lines += [f"- {name}, {split}: {c['found']} {c['difference']:+.2f} "
                  f"({c['ci95'][0]:+.2f} to {c['ci95'][1]:+.2f}, {c['samples']} resamplings "
                  f"of {c['sentences']} sentences)" for name, split, c in vs]
    wf = res.get("winners_fidelity") or {}
    if wf.get("winners", 0) >= 3:
        rhos = ", ".join(f"{'test' if k == 'spearman_winners' else k[len('spearman_winners_'):]}"
                         f" {'-' if v is None else f'{v:.2f}'}"
                         for k, v in wf.items() if k.startswith("spearman_winners"))
        lines += ["", f"Fidelity over the {wf['winners']} found models (Spearman, inherited "
                      f"valid loss vs -BLEU after retraining; HAT's 21 En-De winners: 0.98): "
                      f"{rhos}"]
    lines += ["", "| stage | wall (s) |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.0f} |" for k, v in res["stages"].items()]
    lines.append(f"| total | {res['total_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _splits(models: list[dict[str, Any]]) -> list[str]:
    """The ``bleu_<split>`` keys of further test splits in the models' rows."""
    return sorted({k for m in models for k in m if k.startswith("bleu_test")})


def plot(res: dict[str, Any], path: Path) -> Path:
    """BLEU vs measured latency: found SubTransformers and the baselines, one panel per test
    split (the test split, then the task's further ones)."""
    from hat.plots import pyplot, save_png

    plt = pyplot()
    keys = ["bleu", *_splits(res["models"])]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        _panel(ax, res, key)
    fig.suptitle(f"{res.get('task', 'toy')} task, {res['preset']} preset, {res['machine']}, "
                 f"{res['date']}", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def _panel(ax: Any, res: dict[str, Any], key: str) -> None:
    found = sorted((m for m in res["models"] if m["latency_limit_ms"] is not None),
                   key=lambda m: m["measured_latency_ms"])  # a curve along the latency axis
    base = sorted((m for m in res["models"] if m["latency_limit_ms"] is None),
                  key=lambda m: m["measured_latency_ms"])
    ax.plot([m["measured_latency_ms"] for m in found], [m[key] for m in found], "o-",
            label="HAT SubTransformers (found, retrained)")
    points: dict[str, tuple[tuple[float, float], list[str]]] = {}  # limits that found one model
    for m in found:
        xy = (m["measured_latency_ms"], m[key])
        points.setdefault(str(m.get("checkpoint") or xy), (xy, []))[1].append(
            f"{m['latency_limit_ms']:g}")
    for k, (xy, limits) in enumerate(points.values()):  # alternate sides: no overprinting
        ax.annotate(f"limit{'s' if len(limits) > 1 else ''} {', '.join(limits)} ms", xy,
                    textcoords="offset points", xytext=(6, -12 if k % 2 else 6), fontsize=8)
    ax.plot([m["measured_latency_ms"] for m in base], [m[key] for m in base], "s--",
            color="tab:red", label="Transformer (uniformly scaled down)")
    for m in base:
        ax.annotate(m["name"], (m["measured_latency_ms"], m[key]), textcoords="offset points",
                    xytext=(-6, -12), ha="right", fontsize=8, color="tab:red")
    left = min(m["measured_latency_ms"] for m in res["models"]) * 0.95
    for i, m in enumerate(base):  # where a found model must lie to dominate it: up and left
        ax.plot([left, LATENCY_RATIO * m["measured_latency_ms"]], [m[key] - BLEU_SLACK] * 2,
                ":", color="tab:red", alpha=0.5,
                label=None if i else f"to dominate: <= {LATENCY_RATIO}x latency, "
                                     f">= BLEU - {BLEU_SLACK}")
    ax.set_xlabel(f"measured latency (ms, {res['device']}); limits: the predicted latency "
                  "searched under", fontsize=8)
    ax.set_ylabel("BLEU (test)" if key == "bleu" else f"BLEU ({key[len('bleu_'):]})")
    ax.grid(alpha=0.3)
    ax.margins(x=0.06, y=0.15)  # room for the labels
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)


def write(res: dict[str, Any], out: Path) -> dict[str, str]:
    """Write results.json, results.md and bleu_vs_latency.png into ``out``."""
    paths = {"json": out / "results.json", "markdown": out / "results.md",
             "plot": out / "bleu_vs_latency.png"}
    atomic_write_json(paths["json"], res, indent=1)
    atomic_write_text(paths["markdown"], markdown(res))
    plot(res, paths["plot"])
    return {k: str(v) for k, v in paths.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m hat.pipeline.report RESULTS_JSON [PNG]``: the plot again from a results file
    (the PNG beside it by default); ``--compare``: also each baseline's paired-bootstrap
    comparison again, from the hypotheses in the run folder beside RESULTS_JSON (rewrites
    results.json, results.md and the plot there)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m hat.pipeline.report", description=main.__doc__)
    ap.add_argument("results", type=Path)
    ap.add_argument("png", type=Path, nargs="?")
    ap.add_argument("--compare", action="store_true")
    args = ap.parse_args(argv)
    res = json.loads(args.results.read_text())
    if args.compare:
        from hat.pipeline.retraining import compare
        from hat.pipeline.tasks import pipeline_task

        run, task = args.results.parent, pipeline_task(res.get("task", "toy"))
        by_name = {m["name"]: {**m, "checkpoint": str(run / "retrain" / Path(m["checkpoint"])
                                                      .parent.name / Path(m["checkpoint"]).name)}
                   for m in res["models"]}
        meta = {k: v for k, v in res.items()
                if k not in ("models", "dominance_rule", "stages", "total_seconds")}
        res = results([{k: v for k, v in m.items() if k != "vs_found"} for m in res["models"]],
                      res["stages"], meta,
                      lambda a, b, split: compare(run, task, by_name[a], by_name[b], split))
        print(write(res, run)["markdown"])
        return 0
    print(plot(res, args.png or args.results.with_suffix(".png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
