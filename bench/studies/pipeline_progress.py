"""What a pipeline run had done when it stopped: its stage times, the SuperTransformer's
validation curve (whole, largest and smallest SubTransformer), each retraining's curve and speed,
and the found models. For runs that ended before their report (a device call's time ran out);
reads a run folder or a checkpoint-free copy of one, e.g. ``bench/debian_gpu.sh pipeline-wait``'s
``run_small.tgz`` unpacked.

    python -m bench.studies.pipeline_progress RUN [RUN ...] --out bench/results/NAME.json

writes NAME.json and NAME.png (the curves of the first run, and of every run when few)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from hat.atomic import atomic_write_json
from hat.pipeline.report import LATENCY_RATIO

_VALID = re.compile(r"\| valid \| .*")
_FIELD = re.compile(r"\| (loss_largest|loss_smallest|num_updates|loss) ([0-9.]+)")
_UPS = re.compile(r"\| train \| epoch .*\| ups ([0-9.]+) .*\| num_updates ([0-9]+)")
_DONE = re.compile(r"done training in ([0-9.]+) seconds")


def valid_curve(log: Path) -> list[dict[str, float]]:
    """Every validation of a fairseq log: loss (base 2) and, where logged, the largest's and
    the smallest's, by update."""
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        if _VALID.search(line):
            f = dict(_FIELD.findall(line))
            if "num_updates" in f and "loss" in f:
                rows.append({k: float(v) for k, v in f.items()})
    return rows


def speed(log: Path) -> dict[str, Any]:
    """Updates/s as fairseq logged it per epoch (median), the last update and training seconds."""
    text = log.read_text(errors="replace")
    epochs = _UPS.findall(text)
    ups = sorted(float(u) for u, _ in epochs)
    upd = [int(n) for _, n in epochs]
    done = _DONE.search(text)
    return {"updates_per_s_median": ups[len(ups) // 2] if ups else None,
            "last_update": upd[-1] if upd else None,
            "train_seconds": float(done.group(1)) if done else None}


def progress(run: Path) -> dict[str, Any]:
    """One run's state (see the module docstring)."""
    state = json.loads((run / "pipeline.json").read_text())
    stages = state.get("stages", {})
    out: dict[str, Any] = {
        "run": run.name, "settings": state.get("settings"),
        "stage_seconds": {k: v.get("seconds") for k, v in stages.items()},
        "finished_stages": list(stages),
    }
    log = run / "logs" / "supertransformer.log"
    if log.is_file():
        out["supertransformer"] = {"valid": valid_curve(log), **speed(log)}
    found = stages.get("search", {}).get("outputs", {}).get("found", [])
    out["found"] = [{k: f[k] for k in ("name", "latency_limit_ms", "inherited_valid_loss")}
                    for f in found]
    base = stages.get("baseline", {}).get("outputs", {}).get("baselines", [])
    out["baselines"] = [{k: b[k] for k in ("name", "predicted_latency_ms")} for b in base]
    retrains = {}
    for d in sorted((run / "retrain").glob("*")) if (run / "retrain").is_dir() else []:
        conv = d / "convergence.json"
        row: dict[str, Any] = {"finished": (d / "retrained.json").is_file()}
        if conv.is_file():
            c = json.loads(conv.read_text())
            row.update(history=c["history"], gain_last_20pct_bits=c["gain"],
                       converged=c["converged"])
        rlog = run / "logs" / f"retrain_{d.name}.log"
        if rlog.is_file():
            row.update(speed(rlog), valid=valid_curve(rlog))
        row["best_valid_loss"] = min((loss for _, loss in _curve(row)), default=None)
        retrains[d.name] = row
    out["retrain"] = retrains
    predicted = _predicted_latencies(run, out)
    for name, ms in predicted.items():
        if name in retrains:
            retrains[name]["predicted_latency_ms"] = ms
    out["baseline_checks_valid_loss"] = baseline_checks(out)
    return out


def _curve(row: dict[str, Any]) -> list[tuple[float, float]]:
    """A retraining's (update, valid loss) points: its convergence history, else its log's."""
    return row.get("history") or [(v["num_updates"], v["loss"]) for v in row.get("valid", [])]


def _predicted_latencies(run: Path, out: dict[str, Any]) -> dict[str, float]:
    """Predicted latency of each found model (the search's summary, by latency limit) and of
    each baseline (the baseline stage's outputs), by retraining name."""
    got = {b["name"]: b["predicted_latency_ms"] for b in out["baselines"]}
    by_limit = {}
    for summary in (run / "search").glob("*.summary.json") if (run / "search").is_dir() else []:
        for w in json.loads(summary.read_text()).get("winners", []):
            by_limit[w["latency_limit_ms"]] = w["predicted_latency_ms"]
    for f in out["found"]:
        if f["latency_limit_ms"] in by_limit:
            got[f["name"]] = by_limit[f["latency_limit_ms"]]
    return got


def baseline_checks(out: dict[str, Any], ratio: float = LATENCY_RATIO) -> list[dict[str, Any]]:
    """For each retrained baseline: the best (lowest valid loss) converged found model at no
    more than ``ratio`` x its predicted latency and the difference in bits (found - baseline;
    negative: the found model is better). The valid-loss form of the pipeline's BLEU check, for
    runs that stopped before BLEU; predicted, not measured, latencies."""
    rows = out["retrain"]
    found = [n for n in rows if n not in {b["name"] for b in out["baselines"]}
             and rows[n].get("converged") and rows[n].get("predicted_latency_ms") is not None]
    checks = []
    for b in out["baselines"]:
        base = rows.get(b["name"], {})
        if base.get("best_valid_loss") is None:
            continue
        limit = ratio * b["predicted_latency_ms"]
        fast = [n for n in found if rows[n]["predicted_latency_ms"] <= limit]
        best = min(fast, key=lambda n: rows[n]["best_valid_loss"], default=None)
        checks.append({
            "baseline": b["name"], "baseline_predicted_ms": b["predicted_latency_ms"],
            "baseline_best_valid_loss": base["best_valid_loss"],
            "baseline_converged": base.get("converged"),
            "found": best,
            "found_predicted_ms": rows[best]["predicted_latency_ms"] if best else None,
            "found_best_valid_loss": rows[best]["best_valid_loss"] if best else None,
            "difference_bits": round(rows[best]["best_valid_loss"] - base["best_valid_loss"], 3)
            if best else None})
    return checks


def plot(runs: list[dict[str, Any]], path: Path) -> Path:
    """Per run, above: validation loss by update (the SuperTransformer's largest / smallest
    and each retraining); below: each retrained model's best validation loss against its
    predicted latency, found models and baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(runs), figsize=(6.5 * len(runs), 9), squeeze=False)
    for ax, r in zip(axes[1], runs):
        base = {b["name"] for b in r["baselines"]}
        for family, names, style in (("found by the search", set(r["retrain"]) - base, "o-"),
                                     ("uniform baselines", base, "s--")):
            pts = sorted((row["predicted_latency_ms"], row["best_valid_loss"], n)
                         for n, row in r["retrain"].items() if n in names
                         and row.get("predicted_latency_ms") and row.get("best_valid_loss"))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=family)
                for x, y, n in pts:
                    ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel("best valid loss (bits), retrained from scratch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax, r in zip(axes[0], runs):
        sup = r.get("supertransformer", {}).get("valid", [])
        for key, style in (("loss_largest", "k-"), ("loss_smallest", "k--")):
            pts = [(v["num_updates"], v[key]) for v in sup if key in v]
            if pts:
                ax.plot(*zip(*pts), style, lw=2, label=f"SuperTransformer, {key[5:]} (inherited)")
        for name, row in r["retrain"].items():
            pts = _curve(row)
            if pts:
                ax.plot(*zip(*pts), "-" if name.startswith("hat") else ":",
                        label=f"{name} from scratch" + ("" if row["finished"] or
                                                        row.get("converged") else " (stopped)"))
        ax.set_ylim(3.3, 6.0)
        ax.set_xlabel("update")
        ax.set_ylabel("valid loss (bits)")
        ax.set_title(Path(r["run"]).name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (each with pipeline.json)")
    ap.add_argument("--out", type=Path, required=True, help="JSON to write (and .png beside it)")
    ap.add_argument("--note", default="", help="what these runs were, for the JSON")
    args = ap.parse_args(argv)
    for r in args.runs:
        if not (r / "pipeline.json").is_file():
            ap.error(f"{r}: no pipeline.json (not a pipeline run folder)")
    runs = [progress(r) for r in args.runs]
    atomic_write_json(args.out, {"note": args.note, "runs": runs})
    png = plot(runs, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
