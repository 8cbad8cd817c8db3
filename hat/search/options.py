"""evo_search.py's options and the checks and output rules that run before any search work:
the search's settings and limits from the configs, the SuperTransformer checkpoint, where the
outputs go (named by their limits), the GPU a measurement needs, and the found YAML."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from hat.atomic import check_writable
from hat.errors import HatConfigError
from hat.search.evolution import (
    Candidate,
    Evolution,
    EvoSettings,
    InfeasibleError,
    Limits,
)
from hat.space import SearchSpace, SubConfig, write_subtransformer_yaml


def log(msg: str) -> None:
    """One progress line of the search on stderr."""
    print(f"| {msg}", file=sys.stderr, flush=True)


def measure_device(args: Any, predictor: Any) -> str:
    """--measure-latency, else the device the predictor's dataset was measured on, else cpu."""
    if args.measure_latency:
        return args.measure_latency
    proto = (predictor.meta.get("dataset") or {}).get("protocol") or {}
    return "gpu" if str(proto.get("device", "cpu")).startswith("cuda") else "cpu"


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
           "in bench/speed/search_bench.py; max-tokens on a CPU)")
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
    log(f"{state} holds a search under another limit: this one writes {named} (and its side "
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
    if predictor is not None and args.calibrate_latency and measure_device(args, predictor) \
            == "gpu":
        raise HatConfigError(
            f"calibrate-latency {args.calibrate_latency} ({src('calibrate-latency')}): the "
            f"predictor's latencies were measured on a GPU, so it is calibrated on one, but "
            f"{here}; calibrate on this CPU with --measure-latency cpu, or leave "
            "calibrate-latency out")


def decode_note(predictor: Any) -> str:
    """Which decode the predictor's latencies are for, and what that means for a user."""
    from hat.latency.measure.timing import DEPLOYMENTS

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
