"""``evo_search.py``: search SubTransformers of a trained SuperTransformer under latency limits.

python evo_search.py --configs=configs/<task>/supertransformer/<space>.yml \\
    --evo-configs=configs/<task>/evo_search/<task>_<hw>.yml

Every input is checked before any work starts; the search state is saved after every iteration
(``<out>.state.json``), so the same command started again continues a killed search.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hat.atomic import atomic_write_json
from hat.cli import run_cli
from hat.errors import HatConfigError
from hat.search.evolution import (
    Evolution,
    EvoSettings,
    Limits,
    SearchState,
)
from hat.search.latency import LatencyModel, load_predictor
from hat.search.options import (
    Sources,
    add_search_args,
    check_checkpoint,
    check_feasible,
    check_gpu_measuring,
    check_outputs,
    decode_note,
    limit_named,
    limits_from_args,
    log,
    measure_device,
    output_paths,
    settings_from_args,
    write_winner_yaml,
)
from hat.search.report import (
    pareto_front,
    save_search_plot,
    write_evaluations_csv,
    write_front_csv,
)
from hat.space import SearchSpace, SubConfig, key_hash

STATE_VERSION = 1


# ----------------------------------------------------------------------------- run
def _device(args: Any) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"


def valid_max_tokens(args: Any, device: str) -> int:
    """Tokens per fitness batch: --valid-max-tokens, else 32768 on a GPU, max-tokens on a CPU."""
    if args.valid_max_tokens:
        return int(args.valid_max_tokens)
    return 32768 if device == "cuda" else int(args.max_tokens or 4096)


def _precision(args: Any, device: str) -> str:
    if args.search_precision != "auto":
        if device == "cpu" and args.search_precision == "fp16":
            raise HatConfigError("search-precision fp16 needs a GPU (use fp32 or bf16 on a CPU)")
        return args.search_precision
    if device == "cpu":
        return "fp32"
    return "fp16" if args.fp16 else "bf16"


def resume_settings(args: Any, settings: EvoSettings, limits: list[Limits],
                    space: SearchSpace, device: str, precision: str) -> dict[str, Any]:
    """What a resumed search must share with the run that wrote the state."""
    import dataclasses

    from hat.runstate import content_fingerprint

    return json.loads(json.dumps({  # as the state file holds them (lists, not tuples)
        "version": STATE_VERSION,
        "evo": dataclasses.asdict(settings),
        "limits": [dataclasses.asdict(lim) for lim in limits],
        "space": {k: v for k, v in dataclasses.asdict(space).items() if k != "source"},
        "restore_file": str(args.restore_file), "predictor": str(args.ckpt_path),
        # the files' contents too: one replaced at the same path must not be mixed in
        "restore_file_content": content_fingerprint(args.restore_file),
        "predictor_content": content_fingerprint(args.ckpt_path),
        "data": str(args.data), "valid_subset": args.valid_subset,
        "valid_cnt_max": args.valid_cnt_max,
        "valid_max_tokens": valid_max_tokens(args, device),
        "precision": precision, "cache": not args.no_score_cache,
        "calibrate_latency": args.calibrate_latency,
    }))


def load_state(path: Path, settings: dict[str, Any]) -> tuple[SearchState | None, dict]:
    """The saved state of an interrupted search with the same settings (else None)."""
    from hat.runstate import check_resume

    if not path.is_file():
        return None, {}
    try:
        saved = json.loads(path.read_text())
    except ValueError as e:
        raise HatConfigError(f"{path}: unreadable search state ({e}); delete it to start "
                             "again") from None
    check_resume(path, saved.get("settings", {}), settings, tuple(settings),
                 "search", "delete it or use another write-config-path to start a new search")
    return SearchState.from_json(saved["state"]), saved.get("calibration") or {}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Check everything, (calibrate,) search, write the outputs; returns the summary."""
    from hat.config import parse_fairseq_args

    t_start = time.monotonic()
    origins: dict[str, str] = {}
    args = parse_fairseq_args(argv, add_extra=add_search_args, origins=origins)
    src = Sources(origins)
    settings = settings_from_args(args, src)
    limits = limits_from_args(args, src)
    if not args.write_config_path:
        raise HatConfigError("write-config-path is not set (where the best SubTransformer's "
                             "YAML goes)")
    paths = output_paths(limit_named(args.write_config_path, limits), limits)
    check_outputs(paths, src)
    check_gpu_measuring(args, src)
    from hat.runstate import exclusive

    with exclusive(paths["state"], "searching into this write-config-path"):
        return _search(args, src, settings, limits, paths, t_start)


def _search(args: Any, src: Sources, settings: EvoSettings, limits: list[Limits],
            paths: dict[str, Any], t_start: float) -> dict[str, Any]:
    """The search of :func:`run`, once its outputs are this process's."""
    from hat.models.args import space_from_args
    from hat.profile import count_params

    space = space_from_args(args)
    predictor = load_predictor(args.ckpt_path, args.feature_norm, args.lat_norm,
                               src("ckpt-path"), space)
    check_gpu_measuring(args, src, predictor)
    latency = LatencyModel(predictor)
    log(f"latency predictor {args.ckpt_path}: {decode_note(predictor)}")
    ckpt_state = check_checkpoint(args.restore_file, args, space, src)
    from hat.data.check import check_binarized_data

    check_binarized_data(str(args.data or ""), str(args.valid_subset).split(","),
                         args.source_lang, args.target_lang)
    device = _device(args)
    if device == "cpu":
        from hat.threads import use_cpu_threads

        use_cpu_threads()
    precision = _precision(args, device)

    def params(cfg: SubConfig) -> float:
        return count_params(cfg, space.qkv_dim) / 1e6

    evo = Evolution(space, settings, limits, fitness=lambda c: 0.0, latency=latency,
                    params=params, cache=not args.no_score_cache, log=log)
    if not args.calibrate_latency:
        check_feasible(evo, predictor)  # a limit nothing meets: seconds, before anything else
    run_settings = resume_settings(args, settings, limits, space, device, precision)
    state, calibration = load_state(paths["state"], run_settings)
    if args.calibrate_latency:
        if not calibration:  # a resumed search keeps its calibration
            calibration = run_calibration(args, latency, predictor, space)
        latency.scale = calibration["scale"]
        check_feasible(evo, predictor)  # with the calibrated predictor, before data and model
    log(f"search space: {space.num_genes} genes; limits: "
         + ", ".join(f"{lim.latency_ms:g} ms" for lim in limits)
         + (f", #params <= {args.params_constraint:g}M" if args.params_constraint else "")
         + f"; predictor {args.ckpt_path}" + (f" x {latency.scale:.4f} (calibrated)"
                                               if latency.scale != 1.0 else ""))
    fitness, info = build_fitness(args, ckpt_state, device, precision)
    evo.fitness = fitness
    log(f"fitness: validation loss on {info['batches']} batches ({info['tokens']} target "
         f"tokens) of '{args.valid_subset}', {device}, {precision}")
    t_search = time.monotonic()
    evals_before = state.evaluations if state else 0

    def save(st: SearchState, boundary: bool) -> None:
        atomic_write_json(paths["state"], {"settings": run_settings, "state": st.to_json(),
                                           "calibration": calibration}, indent=None)
        if boundary:
            write_evaluations_csv(paths["evaluations"], space, list(st.scores.values()))

    evo.on_state = save
    if state is not None and state.populations:
        log(f"resuming from {paths['state']} (iteration {state.iteration}, "
             f"{len(state.scores)} SubTransformers scored)")
    state = evo.run(state)
    search_s = time.monotonic() - t_search
    return finish(args, evo, state, limits, paths, space, calibration, predictor, latency,
                  {"search_seconds": search_s, "total_seconds": time.monotonic() - t_start,
                   "new_evaluations": state.evaluations - evals_before, "device": device,
                   "precision": precision, **info})


def run_calibration(args: Any, latency: LatencyModel, predictor: Any, space: SearchSpace
                    ) -> dict[str, Any]:
    """Measure, fit the scale, warn about another machine; returns the record."""
    from hat.latency.measure.machine import machine_info
    from hat.search.latency import Measurer, calibrate, machine_differences, measure_setup

    setup = measure_setup(predictor, measure_device(args, predictor), args)
    log(f"calibrating the predictor: {args.calibrate_latency} SubTransformers measured with "
         f"{setup.describe()}")
    meas = Measurer(setup)
    now = machine_info(meas.meter.device)
    for d in machine_differences(predictor, now, setup.protocol.threads):
        log(f"warning: this machine differs from the predictor's: {d}")
    fit = calibrate(latency, meas, space, args.calibrate_latency, args.seed, log)
    log(f"calibration: scale {fit['scale']:.4f}; within +-10% before "
         f"{fit['before']['within10_pct']:.0f}%, after {fit['after']['within10_pct']:.0f}% "
         f"(MAPE {fit['after']['mape_pct']:.2f}%), "
         f"Spearman {fit['spearman']:.3f}")
    fit["machine"] = now
    fit["protocol"] = setup.describe()
    return fit


def build_fitness(args: Any, ckpt_state: dict[str, Any], device: str, precision: str
                  ) -> tuple[Any, dict[str, Any]]:
    """The SuperTransformer (checkpoint weights) and its validation loss on the data."""
    from fairseq import tasks

    from hat.checkpoint import build_from_checkpoint
    from hat.evaluate import ValidLoss
    from hat.training import prepare_args

    prepare_args(args)
    task = tasks.setup_task(args)
    model = build_from_checkpoint(ckpt_state, args.restore_file, task=task).to(device).eval()
    vl = ValidLoss(task, model, subset=args.valid_subset,
                   max_tokens=valid_max_tokens(args, device),
                   max_batches=args.valid_cnt_max, device=device, precision=precision)
    return vl, {"batches": len(vl.batches), "tokens": vl.tokens}


def finish(args: Any, evo: Evolution, state: SearchState, limits: list[Limits],
           paths: dict[str, Any], space: SearchSpace, calibration: dict[str, Any],
           predictor: Any, latency: LatencyModel, run_info: dict[str, Any]) -> dict[str, Any]:
    """Winner YAML(s), CSVs, plot, optional measurements, summary JSON."""
    winners = evo.winners(state)
    cands = list(state.scores.values())
    rows = []
    for lim, w, path in zip(limits, winners, paths["yamls"]):
        cfg = space.from_genes(w.genes)
        write_winner_yaml(path, cfg, w, lim, args.seed, predictor.deployment)
        rows.append({"latency_limit_ms": lim.latency_ms, "params_limit_m": lim.params_m,
                     "yaml": str(path), "valid_loss": w.loss, "predicted_latency_ms": w.latency_ms,
                     "params_m": w.params_m, "config_hash": key_hash(w.key),
                     "config": cfg.to_dict()})
        log(f"limit {lim.latency_ms:g} ms: loss {w.loss:.4f}, predicted {w.latency_ms:.4g} ms, "
             f"{w.params_m:.2f}M params -> {path}")
    write_front_csv(paths["front"], space, pareto_front(cands))
    save_search_plot(paths["plot"], cands, [(lim.latency_ms, w) for lim, w in
                                            zip(limits, winners)],
                     title=f"{Path(args.write_config_path).stem}: {len(cands)} SubTransformers")
    if args.measure_latency:
        measure_winners(args, predictor, rows)
    total_evals = state.evaluations
    summary = {
        "winners": rows, "evaluations": total_evals, "unique_evaluations": len(cands),
        "cache_hits": state.cache_hits, "iterations": state.iteration,
        "evaluations_per_s": (run_info["new_evaluations"] / run_info["search_seconds"]
                              if run_info["search_seconds"] > 0 else None),
        "calibration": calibration or None, "latency_scale": latency.scale,
        "latency_predictor": str(args.ckpt_path), "lat_deployment": predictor.deployment,
        "seed": args.seed, "outputs": {k: (str(v) if not isinstance(v, list) else
                                           [str(x) for x in v]) for k, v in paths.items()},
        **run_info,
    }
    atomic_write_json(paths["summary"], summary, indent=1)
    log(f"{total_evals} evaluations ({len(cands)} unique, {state.cache_hits} cache hits) in "
         f"{run_info['search_seconds']:.1f} s; outputs: {paths['evaluations']}, "
         f"{paths['front']}, {paths['plot']}, {paths['summary']}")
    return summary


def measure_winners(args: Any, predictor: Any, rows: list[dict]) -> None:
    """Measure every winner with the predictor's protocol; warn when one exceeds its limit."""
    from hat.search.latency import Measurer, measure_setup

    setup = measure_setup(predictor, measure_device(args, predictor), args)
    log(f"measuring the winners: {setup.describe()}")
    meas = Measurer(setup)
    for r in rows:
        cfg = SubConfig.from_dict(r["config"])
        ms = meas(cfg)
        r["measured_latency_ms"] = ms
        r["measured_with"] = setup.describe()
        dev = 100 * (ms / r["predicted_latency_ms"] - 1)
        log(f"limit {r['latency_limit_ms']:g} ms: predicted {r['predicted_latency_ms']:.4g} ms, "
             f"measured {ms:.4g} ms ({dev:+.1f}%)")
        if ms > r["latency_limit_ms"]:
            log(f"WARNING: the winner for {r['latency_limit_ms']:g} ms measures {ms:.4g} ms on "
                 "this machine, above its limit: calibrate the predictor "
                 "(--calibrate-latency 8) or lower the limit")


def main(argv: list[str] | None = None) -> int:
    """Entry point of evo_search.py."""
    def body() -> None:
        run(argv)  # returns the summary (for callers in Python); the exit status is 0

    return run_cli(body,
                   os_note=" (the search state saved after the last finished iteration is kept: "
                           "the same command continues from it)",
                   interrupted="the search state is saved after every iteration; run the same "
                               "command again to continue")
    return 0
