"""``evo_search.py``: search SubTransformers of a trained SuperTransformer under latency limits.

python evo_search.py --configs=configs/<task>/supertransformer/<space>.yml \\
    --evo-configs=configs/<task>/evo_search/<task>_<hw>.yml

Every input is checked before any work starts; the search state is saved after every iteration
(``<out>.state.json``), so the same command started again continues a killed search.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hat.atomic import atomic_write_json, check_writable
from hat.cli import run_cli
from hat.errors import HatConfigError
from hat.search.evolution import (
    Candidate,
    Evolution,
    EvoSettings,
    InfeasibleError,
    Limits,
    SearchState,
)
from hat.search.latency import LatencyModel, load_predictor
from hat.search.report import (
    pareto_front,
    save_search_plot,
    write_evaluations_csv,
    write_front_csv,
)
from hat.space import SearchSpace, SubConfig, key_hash, write_subtransformer_yaml

STATE_VERSION = 1


def _int(text: str) -> int:
    """An integer also written as a float (HAT's ``valid-cnt-max: 1e9``)."""
    v = float(text)
    if v != int(v):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text}")
    return int(v)


def add_search_args(parser: argparse.ArgumentParser) -> None:
    """evo_search.py's keys: HAT's names, plus this project's options."""
    g = parser.add_argument_group("evolutionary search (HAT's keys)")
    a = g.add_argument
    a("--evo-iter", type=int, default=30, metavar="N", help="iterations (HAT: 30)")
    a("--population-size", type=int, default=125, metavar="N", help="population (HAT: 125)")
    a("--parent-size", type=int, default=25, metavar="N", help="parents kept (HAT: 25)")
    a("--mutation-size", type=int, default=50, metavar="N", help="mutants (HAT: 50)")
    a("--crossover-size", type=int, default=50, metavar="N", help="crossovers (HAT: 50)")
    a("--mutation-prob", type=float, default=0.3, metavar="P",
      help="per-gene resampling probability (HAT: 0.3)")
    a("--ckpt-path", metavar="PT", help="latency predictor (.pt)")
    a("--feature-norm", type=float, nargs="+", metavar="F",
      help="feature divisors; must match the predictor's")
    a("--lat-norm", type=float, metavar="MS", help="latency divisor; must match the predictor's")
    a("--latency-constraint", nargs="+", metavar="MS",
      help="latency limit(s) in ms; several (100,150,200 or a YAML list) run one Pareto search")
    a("--valid-cnt-max", type=_int, default=None, metavar="N",
      help="at most N validation batches per fitness evaluation (HAT: 1e9 = all)")
    a("--write-config-path", metavar="YAML", help="where the best SubTransformer is written")
    o = parser.add_argument_group("evolutionary search (this project)")
    b = o.add_argument
    b("--params-constraint", type=float, metavar="M",
      help="also require #params <= M million (HAT's convention: no embeddings)")
    b("--valid-max-tokens", type=int, metavar="N",
      help="tokens per validation batch for the fitness (default: 32768 on a GPU, the fastest "
           "in bench/search_bench.py; max-tokens on a CPU)")
    b("--search-precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
      help="fitness precision: auto = bf16 on a GPU (fp16 with --fp16), fp32 on the CPU")
    b("--no-score-cache", action="store_true",
      help="re-score every member of every generation, parents too (HAT's procedure)")
    b("--max-tries", type=int, default=2000, metavar="N",
      help="rejection-sampling draws per child before giving up (x50 per initial member)")
    b("--calibrate-latency", type=int, default=0, metavar="N",
      help="before searching, measure N SubTransformers on this machine with the predictor's "
           "protocol and scale the predictor to them (0: off)")
    b("--measure-latency", choices=("cpu", "gpu"),
      help="after searching, measure each winner on this machine with the predictor's protocol")


# ----------------------------------------------------------------------------- checks
class Sources:
    """Where each key came from (YAML file or the command line), for error messages."""

    def __init__(self, origins: dict[str, str]) -> None:
        self.origins = origins

    def __call__(self, key: str) -> str:
        return self.origins.get("--" + key, "command line")


def settings_from_args(args: Any, src: Sources) -> EvoSettings:
    """EvoSettings with one clear error per bad value (naming file and key)."""
    s = EvoSettings(args.evo_iter, args.population_size, args.parent_size, args.mutation_size,
                    args.crossover_size, args.mutation_prob, args.seed, args.max_tries)
    try:
        s.check()
    except HatConfigError as e:
        key = str(e).split(" ", 1)[0]
        raise HatConfigError(f"{src(key)}: {e}") from None
    return s


def limits_from_args(args: Any, src: Sources) -> list[Limits]:
    """The latency limit(s), each > 0, sorted, with the optional #params limit."""
    raw = args.latency_constraint
    if not raw:
        raise HatConfigError("latency-constraint is not set (ms; in the evo config or on the "
                             "command line, e.g. --latency-constraint 200 or 100,150,200)")
    values = []
    for tok in raw:
        for part in str(tok).replace("[", " ").replace("]", " ").split(","):
            if not part.strip():
                continue
            try:
                v = float(part)
            except ValueError:
                raise HatConfigError(f"{src('latency-constraint')}: latency-constraint "
                                     f"{part.strip()!r} is not a number (ms)") from None
            if not v > 0:
                raise HatConfigError(f"{src('latency-constraint')}: latency-constraint must be "
                                     f"> 0 ms, got {v:g} (HAT's -1 means no limit, which "
                                     f"makes no search)")
            values.append(v)
    if args.params_constraint is not None and not args.params_constraint > 0:
        raise HatConfigError(f"{src('params-constraint')}: params-constraint must be > 0 "
                             f"(millions), got {args.params_constraint}")
    return [Limits(v, args.params_constraint) for v in sorted(set(values))]


def check_checkpoint(path: str | None, args: Any, space: SearchSpace, src: Sources
                     ) -> dict[str, Any]:
    """The SuperTransformer checkpoint: readable, a SuperTransformer, the same dims as
    ``--configs``, and a search space inside the one it was trained with."""
    from hat.checkpoint import check_super_dims, checkpoint_args, read_checkpoint
    from hat.models.args import space_from_args
    from hat.space import CHOICE_KEYS

    if not path or path == "checkpoint_last.pt":
        raise HatConfigError("restore-file (the SuperTransformer checkpoint) is not set")
    if not os.path.isfile(path):
        name = Path(path).stem
        fetch = (f" or download HAT's with `python download_model.py --model-name={name} "
                 f"--save-path {Path(path).parent}`" if name.startswith("HAT_") else "")
        raise HatConfigError(
            f"restore-file {path} ({src('restore-file')}): SuperTransformer checkpoint not "
            f"found; train one with `python train.py --configs={args.configs}` (then pass "
            f"--restore-file <its save-dir>/checkpoint_best.pt){fetch}")
    state = read_checkpoint(path)
    theirs = checkpoint_args(state, path)
    if not str(theirs.arch).startswith("transformersuper"):
        raise HatConfigError(f"restore-file {path}: arch '{theirs.arch}' is not a "
                             "SuperTransformer (transformersuper*); the search needs the weights "
                             "every SubTransformer inherits")
    check_super_dims(args, theirs, f"restore-file {path}", src)
    try:
        trained = space_from_args(theirs)
    except HatConfigError:
        return state
    for f in CHOICE_KEYS:
        extra = [v for v in getattr(space, f) if v not in getattr(trained, f)]
        if extra:
            key = f.replace("_", "-")
            raise HatConfigError(
                f"{src(key)}: {key} has {extra}, which the SuperTransformer in {path} was not "
                f"trained with (its {key}: {list(getattr(trained, f))}); the search space must "
                "be a subset of the trained one")
    return state


# ----------------------------------------------------------------------------- outputs
def limit_named(write_config_path: str, limits: list[Limits]) -> str:
    """``write-config-path``, or ``<stem>@<limit>ms.yml`` beside it when a search under another
    limit already lives there: a new limit starts a new search in its own files (a config's
    write-config-path then serves every limit given on the command line)."""
    import dataclasses

    out = Path(write_config_path)
    state = output_paths(str(out), limits)["state"]
    if len(limits) != 1 or "@" in out.stem or not state.is_file():
        return str(out)
    try:
        saved = json.loads(state.read_text()).get("settings", {}).get("limits")
    except (OSError, ValueError):
        return str(out)  # the resume check reports it
    mine = json.loads(json.dumps([dataclasses.asdict(lim) for lim in limits]))
    if saved is None or saved == mine:
        return str(out)
    named = out.with_name(f"{out.stem}@{limits[0].latency_ms:g}ms{out.suffix}")
    _log(f"{state} holds a search under another limit: this one writes {named} (and its side "
         "files)")
    return str(named)


def output_paths(write_config_path: str, limits: list[Limits]) -> dict[str, Any]:
    """The winner YAML(s) and the files beside them."""
    out = Path(write_config_path)
    if out.suffix not in (".yml", ".yaml"):
        raise HatConfigError(f"write-config-path {out} must end in .yml")
    if len(limits) == 1:
        yamls, base = [out], out.with_suffix("")
    else:  # Pareto mode: one YAML per limit, the side files under the name without '@...'
        stem = out.stem.split("@")[0]
        yamls = [out.with_name(f"{stem}@{lim.latency_ms:g}ms{out.suffix}") for lim in limits]
        base = out.with_name(stem)
    return {"yamls": yamls, "state": Path(f"{base}.state.json"),
            "evaluations": Path(f"{base}.evaluations.csv"), "front": Path(f"{base}.front.csv"),
            "plot": Path(f"{base}.png"), "summary": Path(f"{base}.summary.json")}


def check_outputs(paths: dict[str, Any], src: Sources) -> None:
    """Every output can be written (probed in its folder before any work: a search that could
    not save its state would fail after its first iteration)."""
    what = f"write-config-path ({src('write-config-path')}): output"
    for p in [*paths["yamls"], *(v for k, v in paths.items() if k != "yamls")]:
        check_writable(p, what)


def check_gpu_measuring(args: Any, src: Sources, predictor: Any = None) -> None:
    """A GPU measurement (--measure-latency gpu; or a calibration on the GPU the predictor's data
    was measured on) needs CUDA: say so before the search, not after it."""
    import torch

    if torch.cuda.is_available():
        return
    here = (f"torch sees no CUDA device here (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda})")
    if args.measure_latency == "gpu":
        raise HatConfigError(
            f"measure-latency gpu ({src('measure-latency')}): {here}; measure the winners on "
            "this machine's CPU with --measure-latency cpu, or leave it out and measure them on "
            "the GPU machine (train.py --configs=<winner>.yml --latgpu)")
    if predictor is not None and args.calibrate_latency and _measure_device(args, predictor) \
            == "gpu":
        raise HatConfigError(
            f"calibrate-latency {args.calibrate_latency} ({src('calibrate-latency')}): the "
            f"predictor's latencies were measured on a GPU, so it is calibrated on one, but "
            f"{here}; calibrate on this CPU with --measure-latency cpu, or leave "
            "calibrate-latency out")


def decode_note(predictor: Any) -> str:
    """Which decode the predictor's latencies are for, and what that means for a user."""
    from hat.latency.timing import DEPLOYMENTS

    dep = predictor.deployment
    note = f"latencies for lat-deployment {dep} ({DEPLOYMENTS.get(dep, 'unknown')})"
    if dep == "hat":
        note += ("; a beam search takes longer (docs/deployment.md: measure with "
                 "lat-deployment generate for a limit you can deploy at)")
    return note


def check_feasible(evo: Evolution, predictor: Any) -> None:
    """:meth:`Evolution.check_feasible`, its error naming the decode the latencies are for."""
    try:
        evo.check_feasible()
    except InfeasibleError as e:
        raise InfeasibleError(f"{e} (the predictor's latencies are for lat-deployment "
                              f"{predictor.deployment})") from None


def write_winner_yaml(path: Path, cfg: SubConfig, cand: Candidate, limit: Limits,
                      seed: int, deployment: str) -> None:
    """HAT's SubTransformer YAML, with what the search found as a comment."""
    header = (f"found by evo_search.py (seed {seed}) under {limit.describe()}\n"
              f"validation loss {cand.loss:.4f} (inherited weights), predicted latency "
              f"{cand.latency_ms:.4g} ms (lat-deployment {deployment}), "
              f"#params {cand.params_m:.2f}M")
    write_subtransformer_yaml(cfg, path, header=header)


# ----------------------------------------------------------------------------- run
def _log(msg: str) -> None:
    print(f"| {msg}", file=sys.stderr, flush=True)


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


def _measure_device(args: Any, predictor: Any) -> str:
    """--measure-latency, else the device the predictor's dataset was measured on, else cpu."""
    if args.measure_latency:
        return args.measure_latency
    proto = (predictor.meta.get("dataset") or {}).get("protocol") or {}
    return "gpu" if str(proto.get("device", "cpu")).startswith("cuda") else "cpu"


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
    _log(f"latency predictor {args.ckpt_path}: {decode_note(predictor)}")
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
                    params=params, cache=not args.no_score_cache, log=_log)
    if not args.calibrate_latency:
        check_feasible(evo, predictor)  # a limit nothing meets: seconds, before anything else
    run_settings = resume_settings(args, settings, limits, space, device, precision)
    state, calibration = load_state(paths["state"], run_settings)
    if args.calibrate_latency:
        if not calibration:  # a resumed search keeps its calibration
            calibration = run_calibration(args, latency, predictor, space)
        latency.scale = calibration["scale"]
        check_feasible(evo, predictor)  # with the calibrated predictor, before data and model
    _log(f"search space: {space.num_genes} genes; limits: "
         + ", ".join(f"{lim.latency_ms:g} ms" for lim in limits)
         + (f", #params <= {args.params_constraint:g}M" if args.params_constraint else "")
         + f"; predictor {args.ckpt_path}" + (f" x {latency.scale:.4f} (calibrated)"
                                               if latency.scale != 1.0 else ""))
    fitness, info = build_fitness(args, ckpt_state, device, precision)
    evo.fitness = fitness
    _log(f"fitness: validation loss on {info['batches']} batches ({info['tokens']} target "
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
        _log(f"resuming from {paths['state']} (iteration {state.iteration}, "
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
    from hat.latency.machine import machine_info
    from hat.search.latency import Measurer, calibrate, machine_differences, measure_setup

    setup = measure_setup(predictor, _measure_device(args, predictor), args)
    _log(f"calibrating the predictor: {args.calibrate_latency} SubTransformers measured with "
         f"{setup.describe()}")
    meas = Measurer(setup)
    now = machine_info(meas.meter.device)
    for d in machine_differences(predictor, now, setup.protocol.threads):
        _log(f"warning: this machine differs from the predictor's: {d}")
    fit = calibrate(latency, meas, space, args.calibrate_latency, args.seed, _log)
    _log(f"calibration: scale {fit['scale']:.4f}; within +-10% before "
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
        _log(f"limit {lim.latency_ms:g} ms: loss {w.loss:.4f}, predicted {w.latency_ms:.4g} ms, "
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
    _log(f"{total_evals} evaluations ({len(cands)} unique, {state.cache_hits} cache hits) in "
         f"{run_info['search_seconds']:.1f} s; outputs: {paths['evaluations']}, "
         f"{paths['front']}, {paths['plot']}, {paths['summary']}")
    return summary


def measure_winners(args: Any, predictor: Any, rows: list[dict]) -> None:
    """Measure every winner with the predictor's protocol; warn when one exceeds its limit."""
    from hat.search.latency import Measurer, measure_setup

    setup = measure_setup(predictor, _measure_device(args, predictor), args)
    _log(f"measuring the winners: {setup.describe()}")
    meas = Measurer(setup)
    for r in rows:
        cfg = SubConfig.from_dict(r["config"])
        ms = meas(cfg)
        r["measured_latency_ms"] = ms
        r["measured_with"] = setup.describe()
        dev = 100 * (ms / r["predicted_latency_ms"] - 1)
        _log(f"limit {r['latency_limit_ms']:g} ms: predicted {r['predicted_latency_ms']:.4g} ms, "
             f"measured {ms:.4g} ms ({dev:+.1f}%)")
        if ms > r["latency_limit_ms"]:
            _log(f"WARNING: the winner for {r['latency_limit_ms']:g} ms measures {ms:.4g} ms on "
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
