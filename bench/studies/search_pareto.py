#!/usr/bin/env python
"""Pareto search vs separate searches: does one evolution over several latency limits
(hat.search.evolution.Evolution with a list of Limits: one population per limit, a shared
score cache, shared initial members, parents drawn from every population's feasible members)
find, for each limit, a winner as good as a separate single-limit search with the same settings
and seed, at fewer fitness evaluations in total?

For each seed: one Pareto run over all the limits, and one single-limit run per limit. Every
run is a fresh ``Evolution`` with its own score cache, so its ``state.evaluations`` (fitness
calls = unique SubTransformers it scored) is what it would cost on its own. The fitness
(bench/studies/search_quality.py's: validation loss, base 2, label-smoothed, of the
SubTransformer with
inherited weights, fp32 on the CPU) is memoised across all runs; it is deterministic, so the
memo only saves wall time, never an evaluation in the counts (a few memoised SubTransformers are
re-scored at the end to check that).

Writes bench/results/search_pareto.json and prints a Markdown table.

    python -m bench.studies.search_pareto [--limits 4.0 5.3 7.0 --seeds 1 2 3 4 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import ROOT
from hat.atomic import atomic_write_json
from hat.search.evolution import Evolution, EvoSettings, Limits
from hat.space import key_hash

TIE_TOL = 1e-6  # losses closer than this: a tie (in practice the same SubTransformer)
TOL = 0.01  # "as good": Pareto's winner loss <= separate's + TOL
SIZES = ("evo_iter", "population_size", "parent_size", "mutation_size", "crossover_size")


def _log(msg: str) -> None:
    print(f"| {msg}", file=sys.stderr, flush=True)


def _search_quality() -> Any:
    """bench.studies.search_quality (its fitness construction and memo)."""
    import bench.studies.search_quality

    return bench.studies.search_quality


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _winner(win: Any) -> dict[str, Any]:
    return {"loss": win.loss, "config_hash": key_hash(win.key),
            "predicted_latency_ms": win.latency_ms, "params_m": win.params_m,
            "found_at_iteration": win.iteration}


def main() -> int:
    """Run every seed's Pareto and separate searches, write the JSON, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _search_quality().add_setup_args(ap)
    ap.add_argument("--limits", type=float, nargs="+", default=[4.0, 5.3, 7.0], metavar="MS")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    for k in SIZES:
        ap.add_argument(f"--{k.replace('_', '-')}", type=int)
    ap.add_argument("--mutation-prob", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: much faster than 2 on a shared 2-core machine)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "search_pareto.json"))
    args = ap.parse_args()
    os.chdir(ROOT)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.monotonic()

    sq = _search_quality()
    args.heldout_subset = ""  # search_quality.build's held-out scorer: not used here
    sargs, space, latency, fitness, _, ckpt = sq.build(args)
    params = sq.params_fn(space)
    sizes = {k: getattr(args, k) if getattr(args, k) is not None else getattr(sargs, k)
             for k in SIZES}
    limits = [Limits(ms) for ms in args.limits]
    names = [f"{ms:g}" for ms in args.limits]
    _log(f"checkpoint {ckpt['path']} ({ckpt['num_updates']} updates); fitness on "
         f"{ckpt['valid']['batches']} batches ({ckpt['valid']['tokens']} tokens); evolution "
         f"{sizes}, mutation-prob {args.mutation_prob}; limits {args.limits}; seeds {args.seeds}")

    def run(seed: int, lims: list[Limits]) -> tuple[Any, list[Any], int, float]:
        settings = EvoSettings(mutation_prob=args.mutation_prob, seed=seed, **sizes)
        evo = Evolution(space, settings, lims, fitness, latency=latency, params=params)
        t0, calls0 = time.monotonic(), fitness.calls
        state = evo.run()
        return state, evo.winners(state), fitness.calls - calls0, time.monotonic() - t0

    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        p_state, p_wins, p_new, p_sec = run(seed, limits)
        row: dict[str, Any] = {
            "seed": seed, "pareto_evaluations": p_state.evaluations,
            "pareto_cache_hits": p_state.cache_hits, "pareto_new_fitness_calls": p_new,
            "pareto_seconds": round(p_sec, 2), "separate_evaluations": 0,
            "separate_evaluations_per_limit": {}, "separate_new_fitness_calls": 0,
            "separate_seconds": 0.0, "limits": {}}
        for name, lim, pw in zip(names, limits, p_wins):
            s_state, (sw,), s_new, s_sec = run(seed, [lim])
            row["separate_evaluations"] += s_state.evaluations
            row["separate_evaluations_per_limit"][name] = s_state.evaluations
            row["separate_new_fitness_calls"] += s_new
            row["separate_seconds"] = round(row["separate_seconds"] + s_sec, 2)
            for w in (pw, sw):
                assert lim.ok(w.latency_ms, w.params_m), (name, seed, w.latency_ms)
            row["limits"][name] = {"pareto": _winner(pw),
                                   "separate": _winner(sw),
                                   "pareto_minus_separate": pw.loss - sw.loss}
        rows.append(row)
        _log(f"seed {seed}: evaluations Pareto {row['pareto_evaluations']} vs separate "
             f"{row['separate_evaluations']}; losses " + ", ".join(
                 f"{n} ms {d['pareto']['loss']:.4f}/{d['separate']['loss']:.4f}"
                 for n, d in row["limits"].items())
             + f" ({fitness.calls} SubTransformers scored so far, "
             f"{time.monotonic() - t_start:.0f} s)")

    # best known per limit: every feasible SubTransformer scored by any run
    all_keys = list(fitness.memo)
    all_lat = latency([fitness.cfgs[k] for k in all_keys])
    summary: dict[str, Any] = {"per_limit": {}}
    pairs = {"within_tol": 0, "better": 0, "tie": 0, "worse": 0, "worse_beyond_tol": 0}
    for name, lim in zip(names, limits):
        pl = [r["limits"][name]["pareto"]["loss"] for r in rows]
        sl = [r["limits"][name]["separate"]["loss"] for r in rows]
        d = [r["limits"][name]["pareto_minus_separate"] for r in rows]
        feas = [k for k, ms in zip(all_keys, all_lat) if ms <= lim.latency_ms]
        best_key = min(feas, key=lambda k: fitness.memo[k])
        best = fitness.memo[best_key]
        c = {"within_tol": sum(x <= TOL for x in d), "better": sum(x < -TIE_TOL for x in d),
             "tie": sum(abs(x) <= TIE_TOL for x in d), "worse": sum(x > TIE_TOL for x in d),
             "worse_beyond_tol": sum(x > TOL for x in d)}
        for k in pairs:
            pairs[k] += c[k]
        summary["per_limit"][name] = {
            "pareto": stats(pl), "separate": stats(sl), "pareto_minus_separate": stats(d),
            **c,
            "separate_evaluations": stats([float(r["separate_evaluations_per_limit"][name])
                                           for r in rows]),
            "pareto_found_best_known": sum(abs(x - best) <= TIE_TOL for x in pl),
            "separate_found_best_known": sum(abs(x - best) <= TIE_TOL for x in sl),
            "best_known": {"loss": best, "config_hash": key_hash(best_key),
                           "predicted_latency_ms": float(latency([fitness.cfgs[best_key]])[0]),
                           "pool": len(feas)}}
    pe = [float(r["pareto_evaluations"]) for r in rows]
    se = [float(r["separate_evaluations"]) for r in rows]
    summary.update({
        "pairs": {"n": len(rows) * len(limits), **pairs},
        "pareto_evaluations": stats(pe), "separate_evaluations": stats(se),
        "pareto_evaluations_total": int(sum(pe)), "separate_evaluations_total": int(sum(se)),
        "evaluation_ratio": sum(pe) / sum(se),
        "pareto_fewer_evaluations_seeds": sum(p < s for p, s in zip(pe, se)),
        "answer": (pairs["within_tol"] == len(rows) * len(limits)
                   and all(p < s for p, s in zip(pe, se))),
    })

    # determinism check of the shared memo: re-score a few memoised SubTransformers
    check_keys = list(fitness.memo)[:: max(1, len(fitness.memo) // 8)][:8]
    redo = [float(fitness.fn(fitness.cfgs[k])) for k in check_keys]
    max_dev = max(abs(a - fitness.memo[k]) for a, k in zip(redo, check_keys))

    evo_src = ROOT / "hat" / "search" / "evolution.py"
    report = sq.report_header(args, sargs, ckpt, sizes)
    report["settings"].update({
            "seeds": args.seeds,
            "runs": "per seed: one Evolution over all limits (Pareto mode) and one Evolution "
                    "per limit (separate), same settings and seed; each a fresh Evolution with "
                    "its own score cache",
            "evaluations": "state.evaluations of each run: fitness calls, i.e. unique "
                           "SubTransformers that run scored (the cross-run memo is not "
                           "visible to it); separate = sum over the limits' runs",
            "fitness": "hat.evaluate.ValidLoss (label-smoothed, base 2) on the whole valid "
                       "split, fp32, CPU, inherited SuperTransformer weights (built by "
                       "bench/studies/search_quality.py's build)",
            "memo": "one key -> loss dict shared by every run; the fitness is deterministic, "
                    "so it only saves wall time and changes no result or count",
            "tolerance": TOL, "tie_tolerance": TIE_TOL,
            "evolution_py_sha256": hashlib.sha256(evo_src.read_bytes()).hexdigest(),
    })
    report.update({
        "limits": args.limits,
        "rows": rows,
        "summary": summary,
        "fitness": {"unique_subtransformers_scored": fitness.calls, "memo_hits": fitness.hits,
                    "seconds_per_evaluation": fitness.seconds / max(fitness.calls, 1),
                    "determinism_check": {"rescored": len(check_keys),
                                          "max_abs_difference": max_dev}},
        "wall_seconds": round(time.monotonic() - t_start, 1),
        "load_average_1min": os.getloadavg()[0],
    })
    print(f"wrote {atomic_write_json(Path(args.out), report)}", file=sys.stderr)
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """Per-seed table plus the mean row and the pair counts."""
    names = [f"{ms:g}" for ms in report["limits"]]
    head = "| seed | evaluations Pareto / separate | " + " | ".join(
        f"{n} ms: Pareto / separate (diff)" for n in names) + " |"
    lines = [head, "|---" * (2 + len(names)) + "|"]
    for r in report["rows"]:
        cells = [f"{r['limits'][n]['pareto']['loss']:.4f} / "
                 f"{r['limits'][n]['separate']['loss']:.4f} "
                 f"({r['limits'][n]['pareto_minus_separate']:+.4f})" for n in names]
        lines.append(f"| {r['seed']} | {r['pareto_evaluations']} / "
                     f"{r['separate_evaluations']} | " + " | ".join(cells) + " |")
    s = report["summary"]
    cells = [f"{s['per_limit'][n]['pareto']['mean']:.4f} / "
             f"{s['per_limit'][n]['separate']['mean']:.4f} "
             f"({s['per_limit'][n]['pareto_minus_separate']['mean']:+.4f})" for n in names]
    lines.append(f"| mean | {s['pareto_evaluations']['mean']:.1f} / "
                 f"{s['separate_evaluations']['mean']:.1f} | " + " | ".join(cells) + " |")
    cells = [f"{c['within_tol']}/{c['better']}/{c['tie']}/{c['worse']}"
             for c in (s["per_limit"][n] for n in names)]
    lines.append("| within 0.01/better/tie/worse | | " + " | ".join(cells) + " |")
    p = s["pairs"]
    lines += ["", f"Evaluations in total: Pareto {s['pareto_evaluations_total']}, separate "
              f"{s['separate_evaluations_total']} (ratio {s['evaluation_ratio']:.3f}; Pareto "
              f"fewer in {s['pareto_fewer_evaluations_seeds']}/{len(report['rows'])} seeds). "
              f"(limit, seed) pairs: {p['within_tol']}/{p['n']} within {TOL} "
              f"(Pareto <= separate + {TOL}), {p['better']} better, {p['tie']} tied, "
              f"{p['worse']} worse ({p['worse_beyond_tol']} by more than {TOL})."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
