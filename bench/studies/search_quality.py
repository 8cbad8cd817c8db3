#!/usr/bin/env python
"""Does the search search? HAT's evolution vs random search with the same number of fitness
evaluations, on the toy SuperTransformer, at several latency limits over several seeds.

For each limit and seed, the evolution (hat.search.evolution.Evolution, the toy evo config's
sizes) runs first; its number of unique SubTransformers scored (``len(state.scores)``) is the
budget random search gets: that many distinct SubTransformers drawn uniformly
(``space.sample``) and rejection-sampled against the same limit, best loss wins. Fitness is the
validation loss (base 2, label-smoothed) of the SubTransformer with inherited weights, fp32 on
the CPU, built once and memoised across all runs (it is deterministic, so the memo only saves
time; the script re-scores a few memoised SubTransformers at the end to check that). After
the search every winner is also scored on a held-out split (default: test), which the search
never saw: a lead on the searched split that is only selection noise would not carry over.

Writes bench/results/search_quality.json and bench/results/search_quality.png and prints a
Markdown table.

    python scripts/make_toy_corpus.py --out data/toy
    python train.py --configs=configs/toy/supertransformer/tiny.yml \\
        --save-dir checkpoints/toy/supertransformer_bench
    python -m bench.studies.search_quality [--limits 4.0 5.3 7.0 --seeds 1 2 3 4 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import ROOT
from hat.atomic import atomic_write_json
from hat.latency.measure.machine import cpu_model
from hat.search.evolution import Evolution, EvoSettings, Limits
from hat.search.latency import LatencyModel, load_predictor
from hat.space import SearchSpace, SubConfig, key_hash

TIE_TOL = 1e-6  # losses closer than this count as a tie (in practice: the same SubTransformer)
N_LATENCY_SAMPLES = 20_000  # random SubTransformers for the feasible-fraction estimate


def _log(msg: str) -> None:
    print(f"| {msg}", file=sys.stderr, flush=True)


class MemoFitness:
    """``ValidLoss`` memoised by ``SubConfig.key`` (shared by every run)."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.memo, self.calls, self.hits, self.seconds = fn, {}, 0, 0, 0.0
        self.cfgs: dict[str, SubConfig] = {}

    def __call__(self, cfg: SubConfig) -> float:
        key = cfg.key()
        if key in self.memo:
            self.hits += 1
            return self.memo[key]
        t0 = time.perf_counter()
        loss = float(self.fn(cfg))
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.memo[key], self.cfgs[key] = loss, cfg
        return loss


def build(args: argparse.Namespace
          ) -> tuple[Any, SearchSpace, LatencyModel, MemoFitness, Any, dict]:
    """Search args (toy configs), space, latency model, memoised fitness, the held-out loss
    (same model, another split; None without one), checkpoint info."""
    from hat.config import parse_fairseq_args
    from hat.models.args import space_from_args
    from hat.search.cli import build_fitness
    from hat.search.options import Sources, add_search_args, check_checkpoint

    origins: dict[str, str] = {}
    sargs = parse_fairseq_args([f"--configs={args.configs}", f"--evo-configs={args.evo_configs}",
                                "--restore-file", args.restore_file, "--cpu"],
                               add_extra=add_search_args, origins=origins)
    sargs.data = args.data
    space = space_from_args(sargs)
    predictor = load_predictor(sargs.ckpt_path, sargs.feature_norm, sargs.lat_norm,
                               args.evo_configs)
    state = check_checkpoint(args.restore_file, sargs, space, Sources(origins))
    hist = state.get("optimizer_history") or [{}]
    ckpt = {"path": args.restore_file, "num_updates": hist[-1].get("num_updates"),
            "epoch": (state.get("extra_state") or {}).get("train_iterator", {}).get("epoch")}
    fitness, info = build_fitness(sargs, state, "cpu", "fp32")
    ckpt["valid"] = {"subset": sargs.valid_subset, **info}
    heldout = None
    if args.heldout_subset:
        from fairseq import tasks

        from hat.evaluate import ValidLoss

        heldout = ValidLoss(tasks.setup_task(sargs), fitness.model, subset=args.heldout_subset,
                            max_tokens=sargs.valid_max_tokens or sargs.max_tokens or 4096,
                            device="cpu", precision="fp32")
        ckpt["heldout"] = {"subset": args.heldout_subset, "batches": len(heldout.batches),
                           "tokens": heldout.tokens}
    return sargs, space, LatencyModel(predictor), MemoFitness(fitness), heldout, ckpt


def params_fn(space: SearchSpace) -> Any:
    from hat.profile import count_params

    return lambda cfg: count_params(cfg, space.qkv_dim) / 1e6


def random_search(space: SearchSpace, latency: LatencyModel, fitness: MemoFitness,
                  limit: Limits, budget: int, seed: int, max_draws: int = 1_000_000
                  ) -> dict[str, Any]:
    """Best of ``budget`` distinct feasible uniform samples (rejection sampling, seeded)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    picked: list[tuple[str, SubConfig]] = []
    draws = 0
    while len(picked) < budget:
        if draws >= max_draws:
            raise RuntimeError(f"random search: only {len(picked)} distinct feasible "
                               f"SubTransformers in {draws} draws at {limit.latency_ms} ms")
        batch = [space.sample(rng) for _ in range(64)]
        draws += len(batch)
        lat = latency(batch)
        for cfg, ms in zip(batch, lat):
            key = cfg.key()
            if key in seen or not limit.ok(float(ms), 0.0):
                continue
            seen.add(key)
            picked.append((key, cfg))
            if len(picked) == budget:
                break
    losses = [fitness(cfg) for _, cfg in picked]
    i = int(np.argmin(losses))
    return {"best_loss": losses[i], "key": picked[i][0], "draws": draws,
            "losses": losses, "keys": [k for k, _ in picked]}


def spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std(ddof=1)),
            "min": float(a.min()), "p5": float(np.percentile(a, 5)),
            "p25": float(np.percentile(a, 25)), "median": float(np.median(a)),
            "p75": float(np.percentile(a, 75)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def plot(path: Path, report: dict[str, Any]) -> None:
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging: DEBUG
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limits = report["limits"]
    fig, axes = plt.subplots(1, len(limits), figsize=(3.6 * len(limits), 3.6), squeeze=False)
    for ax, lim in zip(axes[0], limits):
        s = report["summary"][f"{lim:g}"]
        rows = [r for r in report["rows"] if r["limit_ms"] == lim]
        for method, color, dx in (("evolution", "tab:blue", -0.1), ("random", "tab:orange", 0.1)):
            pts = [(r["seed"], r["best_loss"]) for r in rows if r["method"] == method]
            ax.scatter([p[0] + dx for p in pts], [p[1] for p in pts], color=color, s=28,
                       label=f"{method} (mean {s[method]['mean']:.4f})", zorder=3)
        ax.axhline(s["best_known"]["loss"], color="k", ls="--", lw=0.8, label="best known")
        sp = s["random_feasible_spread"]
        ax.axhline(sp["median"], color="grey", ls=":", lw=0.8,
                   label=f"median random feasible ({sp['median']:.3f})")
        ax.set_title(f"latency <= {lim:g} ms ({100 * s['feasible_fraction']:.0f}% feasible)",
                     fontsize=9)
        ax.set_xlabel("seed")
        ax.set_xticks(sorted({r["seed"] for r in rows}))
        ax.legend(fontsize=6.5, loc="upper right")
    axes[0][0].set_ylabel("winner's validation loss (base 2)")
    st = report["settings"]["evolution"]
    fig.suptitle(f"Evolution ({st['evo_iter']}x{st['population_size']}) vs random search, "
                 "same number of evaluations", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    """Run every (limit, seed, method), write the JSON and the plot, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_args(ap)
    ap.add_argument("--heldout-subset", default="test",
                    help="split the winners are re-scored on after the search, to see whether "
                         "a lead on the searched split holds elsewhere ('' = skip)")
    ap.add_argument("--limits", type=float, nargs="+", default=[4.0, 5.3, 7.0], metavar="MS")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--evo-iter", type=int)
    ap.add_argument("--population-size", type=int)
    ap.add_argument("--parent-size", type=int)
    ap.add_argument("--mutation-size", type=int)
    ap.add_argument("--crossover-size", type=int)
    ap.add_argument("--mutation-prob", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: much faster than 2 on a shared 2-core machine)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "search_quality.json"))
    ap.add_argument("--plot", default=None, help="PNG (default: --out with .png)")
    args = ap.parse_args()
    os.chdir(ROOT)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.monotonic()

    sargs, space, latency, fitness, heldout, ckpt = build(args)
    evo_sizes = {k: getattr(args, k) if getattr(args, k) is not None else getattr(sargs, k)
                 for k in ("evo_iter", "population_size", "parent_size", "mutation_size",
                           "crossover_size")}
    params = params_fn(space)
    _log(f"checkpoint {ckpt['path']} ({ckpt['num_updates']} updates); fitness on "
         f"{ckpt['valid']['batches']} batches ({ckpt['valid']['tokens']} tokens); evolution "
         f"{evo_sizes}; limits {args.limits}; seeds {args.seeds}")

    # feasible fraction of the space per limit (uniform samples, predicted latency)
    rng = random.Random(0)
    lat_all = latency([space.sample(rng) for _ in range(N_LATENCY_SAMPLES)])
    lat_pct = {str(p): float(np.percentile(lat_all, p)) for p in (0, 5, 25, 50, 75, 95, 100)}

    rows: list[dict[str, Any]] = []
    per_limit: dict[str, dict[str, Any]] = {}
    for lim_ms in args.limits:
        limit = Limits(lim_ms)
        rand_losses: dict[str, float] = {}
        for seed in args.seeds:
            settings = EvoSettings(mutation_prob=args.mutation_prob, seed=seed, **evo_sizes)
            evo = Evolution(space, settings, [limit], fitness, latency=latency, params=params)
            t0, calls0 = time.monotonic(), fitness.calls
            state = evo.run()
            win = evo.winners(state)[0]
            budget = len(state.scores)
            rows.append({"limit_ms": lim_ms, "seed": seed, "method": "evolution",
                         "best_loss": win.loss, "evaluations": budget,
                         "fitness_calls": state.evaluations, "config_hash": key_hash(win.key),
                         "predicted_latency_ms": win.latency_ms, "params_m": win.params_m,
                         "found_at_iteration": win.iteration,
                         "new_fitness_evaluations": fitness.calls - calls0,
                         "seconds": round(time.monotonic() - t0, 2)})
            t0, calls0 = time.monotonic(), fitness.calls
            rs = random_search(space, latency, fitness, limit, budget, seed)
            rand_losses.update(zip(rs["keys"], rs["losses"]))
            (rlat,) = latency([fitness.cfgs[rs["key"]]])
            rows.append({"limit_ms": lim_ms, "seed": seed, "method": "random",
                         "best_loss": rs["best_loss"], "evaluations": budget,
                         "config_hash": key_hash(rs["key"]),
                         "predicted_latency_ms": float(rlat),
                         "params_m": params(fitness.cfgs[rs["key"]]),
                         "found_at_evaluation": int(np.argmin(rs["losses"])) + 1,
                         "draws": rs["draws"],
                         "new_fitness_evaluations": fitness.calls - calls0,
                         "seconds": round(time.monotonic() - t0, 2)})
            _log(f"limit {lim_ms:g} ms seed {seed}: evolution {win.loss:.4f}, random "
                 f"{rs['best_loss']:.4f} ({budget} evaluations each; "
                 f"{fitness.calls} SubTransformers scored so far, "
                 f"{time.monotonic() - t_start:.0f} s)")
        per_limit[f"{lim_ms:g}"] = {"random_losses": list(rand_losses.values())}

    # summaries (after all runs: "best known" pools every SubTransformer scored at any limit)
    all_keys = list(fitness.memo)
    all_lat = latency([fitness.cfgs[k] for k in all_keys])
    summary: dict[str, Any] = {}
    for lim_ms in args.limits:
        name = f"{lim_ms:g}"
        feas_keys = [k for k, ms in zip(all_keys, all_lat) if ms <= lim_ms]
        best_key = min(feas_keys, key=lambda k: fitness.memo[k])
        evo_l = [r["best_loss"] for r in rows if r["limit_ms"] == lim_ms
                 and r["method"] == "evolution"]
        rnd_l = [r["best_loss"] for r in rows if r["limit_ms"] == lim_ms
                 and r["method"] == "random"]
        diff = [e - r for e, r in zip(evo_l, rnd_l)]
        rand_all = per_limit[name]["random_losses"]
        best = fitness.memo[best_key]
        summary[name] = {
            "feasible_fraction": float(np.mean(lat_all <= lim_ms)),
            "evaluations_per_run": stats([float(r["evaluations"]) for r in rows
                                          if r["limit_ms"] == lim_ms
                                          and r["method"] == "evolution"]),
            "evolution": stats(evo_l), "random": stats(rnd_l),
            "evolution_minus_random": stats(diff),
            "evolution_wins": sum(d < -TIE_TOL for d in diff),
            "ties": sum(abs(d) <= TIE_TOL for d in diff),
            "evolution_losses": sum(d > TIE_TOL for d in diff),
            "evolution_found_best_known": sum(abs(e - best) <= TIE_TOL for e in evo_l),
            "random_found_best_known": sum(abs(r - best) <= TIE_TOL for r in rnd_l),
            "best_known": {"loss": best, "config_hash": key_hash(best_key),
                           "config": fitness.cfgs[best_key].to_dict(),
                           "predicted_latency_ms": float(latency([fitness.cfgs[best_key]])[0]),
                           "pool": len(feas_keys),
                           "how": "best of every feasible SubTransformer scored by any run "
                                  "(both methods, all seeds and limits)"},
            "random_feasible_spread": spread(rand_all),
            "random_feasible_better_than_evolution_mean_pct":
                float(100 * np.mean(np.asarray(rand_all) < statistics.fmean(evo_l))),
        }

    # the winners on the held-out split (the search saw only the valid split)
    if heldout is not None:
        memo_h: dict[str, float] = {}

        def h_loss(key: str) -> float:
            if key not in memo_h:
                memo_h[key] = float(heldout(fitness.cfgs[key]))
            return memo_h[key]

        by_hash = {key_hash(k): k for k in fitness.memo}
        for r in rows:
            r["heldout_loss"] = h_loss(by_hash[r["config_hash"]])
        for lim_ms in args.limits:
            s = summary[f"{lim_ms:g}"]
            ev = [r["heldout_loss"] for r in rows if r["limit_ms"] == lim_ms
                  and r["method"] == "evolution"]
            rn = [r["heldout_loss"] for r in rows if r["limit_ms"] == lim_ms
                  and r["method"] == "random"]
            d = [e - x for e, x in zip(ev, rn)]
            s["heldout"] = {"subset": args.heldout_subset, "evolution": stats(ev),
                            "random": stats(rn), "evolution_minus_random": stats(d),
                            "evolution_wins": sum(x < -TIE_TOL for x in d),
                            "ties": sum(abs(x) <= TIE_TOL for x in d),
                            "evolution_losses": sum(x > TIE_TOL for x in d),
                            "best_known": h_loss(by_hash[s["best_known"]["config_hash"]])}

    # determinism check of the shared memo: re-score a few memoised SubTransformers
    check_keys = [k for k in list(fitness.memo)[:: max(1, len(fitness.memo) // 8)]][:8]
    redo = [float(fitness.fn(fitness.cfgs[k])) for k in check_keys]
    max_dev = max(abs(a - fitness.memo[k]) for a, k in zip(redo, check_keys))

    wall = time.monotonic() - t_start
    report = report_header(args, sargs, ckpt, evo_sizes)
    report["settings"].update({
            "random": "len(state.scores) of the same seed's evolution: distinct "
                      "(SubConfig.key) SubTransformers from space.sample(random.Random(seed)), "
                      "rejection-sampled against the same predicted-latency limit; best loss",
            "fitness": "hat.evaluate.ValidLoss (label-smoothed, base 2) on the whole valid "
                       "split, fp32, CPU, inherited SuperTransformer weights",
            "memo": "one key -> loss dict shared by every run (both methods, all seeds and "
                    "limits); the fitness is deterministic (fixed batches, eval mode, fp32), "
                    "so the memo only saves time and does not change any result",
            "tie_tolerance": TIE_TOL, "seeds": args.seeds,
            "heldout_subset": args.heldout_subset or None,
    })
    report.update({
        "limits": args.limits,
        "predicted_latency_percentiles_ms": lat_pct,
        "rows": rows,
        "summary": summary,
        "fitness": {"unique_subtransformers_scored": fitness.calls,
                    "memo_hits": fitness.hits,
                    "seconds_per_evaluation": fitness.seconds / max(fitness.calls, 1),
                    "determinism_check": {"rescored": len(check_keys),
                                          "max_abs_difference": max_dev}},
        "wall_seconds": round(wall, 1),
        "load_average_1min": os.getloadavg()[0],
    })
    out = Path(args.out)
    print(f"wrote {atomic_write_json(out, report)}", file=sys.stderr)
    png = Path(args.plot) if args.plot else out.with_suffix(".png")
    plot(png, report)
    print(f"wrote {png}", file=sys.stderr)
    print(markdown(report))
    if heldout is not None:
        print()
        print(markdown_heldout(report))
    return 0


def add_setup_args(ap: argparse.ArgumentParser) -> None:
    """The toy setup's options (shared with bench/studies/search_pareto.py)."""
    ap.add_argument("--configs", default="configs/toy/supertransformer/tiny.yml")
    ap.add_argument("--evo-configs", default="configs/toy/evo_search/toy_cpu_epyc.yml",
                    help="predictor, norms and (unless overridden below) the evolution's sizes")
    ap.add_argument("--restore-file",
                    default="checkpoints/toy/supertransformer_bench/checkpoint_last.pt")
    ap.add_argument("--data", default="data/toy/data-bin")


def report_header(args: Any, sargs: Any, ckpt: Any, sizes: dict[str, int]) -> dict[str, Any]:
    """Date, device, versions, command, checkpoint and the search settings of a report."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU: {cpu_model()} ({os.cpu_count()} cores), "
                  f"torch threads {torch.get_num_threads()}",
        "torch": torch.__version__, "numpy": np.__version__,
        "command": " ".join(["python", *sys.argv]),
        "checkpoint": ckpt,
        "settings": {
            "configs": args.configs, "evo_configs": args.evo_configs,
            "predictor": sargs.ckpt_path, "data": args.data,
            "evolution": {**sizes, "mutation_prob": args.mutation_prob, "score_cache": True},
        },
    }


def mmm(s: dict[str, float]) -> str:
    """``mean (min-max)`` of a summary."""
    return f"{s['mean']:.4f} ({s['min']:.4f}-{s['max']:.4f})"


def markdown(report: dict[str, Any]) -> str:
    """The summary table."""
    lines = ["| limit | evolution mean (min-max) | random mean (min-max) | "
             "evolution wins/ties/losses | best known | loss spread of random feasible |",
             "|---|---|---|---|---|---|"]
    for name, s in report["summary"].items():
        sp = s["random_feasible_spread"]
        lines.append(
            f"| {name} ms ({100 * s['feasible_fraction']:.0f}% feasible, "
            f"{s['evaluations_per_run']['mean']:.0f} evals) | {mmm(s['evolution'])} | "
            f"{mmm(s['random'])} | {s['evolution_wins']}/{s['ties']}/{s['evolution_losses']} | "
            f"{s['best_known']['loss']:.4f} | {sp['min']:.3f} / {sp['median']:.3f} / "
            f"{sp['max']:.3f} (min/median/max, std {sp['std']:.3f}, n={sp['n']}) |")
    return "\n".join(lines)


def markdown_heldout(report: dict[str, Any]) -> str:
    """The same winners on the held-out split."""
    lines = ["| limit | held-out: evolution mean (min-max) | random mean (min-max) | "
             "evolution wins/ties/losses | best known (valid) on held-out |",
             "|---|---|---|---|---|"]
    for name, s in report["summary"].items():
        h = s["heldout"]
        lines.append(
            f"| {name} ms ({h['subset']}) | {mmm(h['evolution'])} | {mmm(h['random'])} | "
            f"{h['evolution_wins']}/{h['ties']}/{h['evolution_losses']} | "
            f"{h['best_known']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
