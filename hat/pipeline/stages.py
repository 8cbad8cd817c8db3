"""The pipeline's stages. Each writes the YAML config that stage's own CLI reads and runs that
CLI (``train.py``, ``latency_dataset.py``, ``latency_predictor.py``, ``evo_search.py``,
``python -m hat.bleu``) as a child process, so every output is a file the CLI can take over
from; the commands are collected in ``DIR/commands.sh``."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hat.errors import HatConfigError
from hat.paths import ROOT
from hat.pipeline.presets import Preset
from hat.pipeline.tasks import TASKS, PipelineTask, prepared
from hat.space import SearchSpace, SubConfig, read_subtransformer_yaml
from hat.yamlio import load_yaml, write_yaml


class StageError(HatConfigError):
    """A stage's command failed (its log says why)."""


@dataclass
class Context:
    """Where a pipeline run lives and how it reports."""

    out: Path
    preset: Preset
    say: Callable[[str], None]
    seed: int = 1
    task: PipelineTask = TASKS["toy"]
    gpus: int = 1  # GPUs to spread over (cuda): the latency stages and retrainings use several

    def path(self, *parts: str) -> Path:
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def hw(self) -> str:
        return "gpu" if self.preset.device == "cuda" else "cpu"

    @property
    def data_bin(self) -> Path:
        return self.task.data_bin(self.out)

    @property
    def latency_gpu(self) -> int:
        """The GPU that measures latency (the last one: the SuperTransformer trains on 0)."""
        return self.gpus - 1

    def gpu_env(self, index: int) -> dict[str, str]:
        """Environment that puts a child process on GPU ``index`` (nothing for one GPU/CPU)."""
        if self.preset.device != "cuda" or self.gpus < 2:
            return {}
        return {"CUDA_VISIBLE_DEVICES": str(index % self.gpus)}

    def train_keys(self, keys: dict[str, Any]) -> dict[str, Any]:
        """The preset's batch, precision and warm-up applied to a training config."""
        p = self.preset
        if p.device == "cuda":
            keys.pop("cpu", None)
            keys["max-tokens"] = p.max_tokens or 8192
        elif p.max_tokens:
            keys["max-tokens"] = p.max_tokens
        if p.fp16 and p.device == "cuda":
            keys["fp16"] = True
        if p.warmup_updates is not None:
            keys["warmup-updates"] = p.warmup_updates
        # checkpoints every save-interval-updates and at the end, not after every epoch (a
        # real corpus has short epochs: per-epoch saves would cost more than the training)
        keys.update({"no-epoch-checkpoints": True, "save-interval": 1000,
                     "keep-interval-updates": 1, "log-interval": 25})
        keys.pop("keep-last-epochs", None)
        return keys

    @property
    def super_yaml(self) -> Path:
        return self.out / "configs" / "supertransformer.yml"

    @property
    def super_ckpt(self) -> Path:
        return self.out / "checkpoints" / "supertransformer" / "checkpoint_last.pt"

    @property
    def latency_csv(self) -> Path:
        return self.out / "latency" / f"{self.task.short}_{self.hw}_all.csv"

    @property
    def predictor(self) -> Path:
        return self.out / "latency" / f"{self.task.short}_{self.hw}.pt"

    @property
    def search_yaml(self) -> Path:
        return self.out / "search" / f"{self.task.short}_{self.hw}.yml"


# ----------------------------------------------------------------------------- running CLIs
def _abs(path: Path | str) -> str:
    """A path as the stage configs and records write it: absolute, so that every command (and
    a resumed run) works from any directory."""
    return str(Path(path).absolute())


def script(name: str) -> str:
    """A root CLI script's path."""
    return _abs(ROOT / name)


def _prctl() -> Callable[..., int] | None:
    """Linux's prctl, looked up once in the parent (a forked child must not import)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: children outlive a killed pipeline
        return None


_PRCTL = _prctl()
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None] | None:
    """For ``Popen(preexec_fn=...)``: the child gets SIGTERM when the pipeline process that
    started it dies, even by SIGKILL (and exits at once if that already happened)."""
    if _PRCTL is None:
        return None
    prctl = _PRCTL

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def run_command(ctx: Context, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                label: str = "") -> None:
    """Run one CLI command, its output into ``log``; a heartbeat line every 15 s shows the
    last line it wrote. Raises :class:`StageError` with the log's tail when it fails."""
    argv = [str(a) for a in argv]
    shown = " ".join(shlex.quote(a) for a in ["python", *argv[1:]])
    with open(ctx.path("commands.sh"), "a") as f:
        f.write(shown + "\n")
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                           full_env.get("PYTHONPATH")]))
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                preexec_fn=_die_with(os.getpid()))
        while True:
            try:
                rc = proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                ctx.say(f"  {label or Path(argv[1]).name}: {time.monotonic() - t0:.0f} s, "
                        f"{progress(log)}")
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                raise
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise StageError(f"command failed (exit {rc}): {shown}\nlast lines of {log}:\n{tail}")


PROGRESS = (  # (pattern of a stage CLI's log, what it says), the last match in the log counts
    (re.compile(r"num_updates[\"']?[=:]\s*[\"']?(\d+)"), "update {0}"),
    (re.compile(r"iteration (\d+)/(\d+)"), "iteration {0}/{1}"),
    (re.compile(r"(\d+)/(\d+) \["), "{0}/{1}"),  # a tqdm bar: rows, sentences, steps
)


def progress(log: Path) -> str:
    """Where a stage's command is: its last update, search iteration or progress-bar count
    (with the loss of a training), else its last line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    tail = text[-20000:]
    for pattern, fmt in PROGRESS:
        found = list(pattern.finditer(tail))
        if found:
            said = fmt.format(*found[-1].groups())
            loss = list(re.finditer(r"\bloss[\"']?[=:]\s*[\"']?([\d.]+)", tail))
            if fmt.startswith("update") and loss:
                said += f", loss {loss[-1].group(1)}"
            return said
    return last_line(log)


def last_line(log: Path, width: int = 110) -> str:
    """The last non-empty line (or tqdm update) of a log, shortened."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    parts = [p.strip() for p in text.replace("\r", "\n").splitlines() if p.strip()]
    line = parts[-1] if parts else ""
    return line if len(line) <= width else line[: width - 3] + "..."


Job = tuple[str, list[str], Path] | tuple[str, list[str], Path, dict[str, str]]


def run_parallel(ctx: Context, jobs: list[Job], workers: int, env: dict[str, str],
                 on_done: Callable[[str], None] | None = None) -> None:
    """Run labelled commands, ``workers`` at a time (a job's own environment, its 4th item,
    adds to ``env``: e.g. the GPU it runs on); ``on_done(label)`` runs after each success,
    one at a time, while the other jobs go on."""
    errors: list[BaseException] = []
    pending = list(jobs)
    lock, done_lock = threading.Lock(), threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                label, argv, log, *own = pending.pop(0)
            try:
                t0 = time.monotonic()
                run_command(ctx, argv, log, env={**env, **(own[0] if own else {})},
                            label=label)
                ctx.say(f"  {label}: done in {time.monotonic() - t0:.0f} s")
                if on_done is not None:
                    with done_lock:
                        on_done(label)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                with lock:
                    errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def write_config(path: Path, keys: dict[str, Any], header: str) -> Path:
    """A YAML config a stage's CLI reads (HAT's keys), with a comment saying what it is."""
    return write_yaml(path, keys, header, width=100)


def _python() -> str:
    return sys.executable


# ----------------------------------------------------------------------------- stages
def stage_corpus(ctx: Context) -> dict[str, Any]:
    """The parallel corpus, binarized: the synthetic one is made in the run folder; a real one
    is built once under ``data/`` by ``scripts/prepare_data.py`` (skipped when it is there)."""
    p = ctx.preset
    if ctx.task.built_in_run:
        run_command(ctx, [_python(), script("scripts/make_toy_corpus.py"), "--out",
                          _abs(ctx.out / "data"), "--n-train", p.n_train, "--n-valid",
                          p.n_valid, "--n-test", p.n_test, "--seed", ctx.seed],
                    ctx.path("logs", "corpus.log"))
    elif prepared(ctx.data_bin):
        ctx.say(f"  {ctx.data_bin}: prepared corpus found")
    else:
        run_command(ctx, [_python(), script("scripts/prepare_data.py"), "--task", ctx.task.name,
                          "--out", _abs(ctx.data_bin.parent)], ctx.path("logs", "corpus.log"))
    return {"data_bin": _abs(ctx.data_bin)}


def stage_supertransformer(ctx: Context) -> dict[str, Any]:
    """Train the SuperTransformer (the task's space and recipe, sized by the preset)."""
    p = ctx.preset
    src = ctx.task.config(ctx.task.super_config)
    keys = ctx.train_keys(load_yaml(src))
    keys.update({"data": _abs(ctx.data_bin), "max-update": p.super_updates,
                 "save-dir": _abs(ctx.super_ckpt.parent), "seed": ctx.seed,
                 "save-interval-updates": max(50, p.super_updates // 4)})
    if p.super_stop_minutes:
        keys["stop-time-hours"] = round(p.super_stop_minutes / 60, 4)
    stop = (f", stopped after {p.super_stop_minutes:g} minutes if not done"
            if p.super_stop_minutes else "")
    write_config(ctx.super_yaml, keys,
                 f"SuperTransformer of the pipeline ({_abs(src)}, sized by preset "
                 f"'{p.name}'{stop})")
    run_command(ctx, [_python(), script("train.py"), f"--configs={_abs(ctx.super_yaml)}"],
                ctx.path("logs", "supertransformer.log"), env=ctx.gpu_env(0))
    return {"config": _abs(ctx.super_yaml), "checkpoint": _abs(ctx.super_ckpt),
            "updates": checkpoint_updates(ctx.super_ckpt)}


def checkpoint_updates(path: Path) -> int | None:
    """Updates a fairseq checkpoint was trained for (None if unreadable)."""
    from hat.compat import load_checkpoint_file

    try:
        return int(load_checkpoint_file(path)["optimizer_history"][-1]["num_updates"])
    except Exception:  # noqa: BLE001 - unreadable: unknown
        return None


def _source_dict(ctx: Context) -> Path:
    lang = load_yaml(ctx.task.config(ctx.task.super_config)).get("source-lang", "src")
    return ctx.data_bin / f"dict.{lang}.txt"


def stage_latency_dataset(ctx: Context) -> dict[str, Any]:
    """Measure SubTransformers of the space on this machine."""
    from hat.latency.model import dictionary_size

    p = ctx.preset
    vocab = dictionary_size(_source_dict(ctx))
    keys = load_yaml(ctx.task.config(ctx.task.latency_config))
    keys.update({"lat-dataset-path": _abs(ctx.latency_csv), "lat-dataset-size": p.lat_rows,
                 "latiter": p.latiter, "lat-src-vocab-size": vocab, "latsilent": True,
                 "seed": ctx.seed})
    if p.device == "cuda":
        for k in ("latcpu", "latcpu-threads", "latcpu-timer", "lat-ref-interleave",
                  "lat-ref-interleave-steps"):
            keys.pop(k, None)
        keys.update({"latgpu": True, "latgpu-cuda-graph": True, "lat-ref-every": 0,
                     "latwarmup": 5})
    cfg = write_config(ctx.path("configs", "latency_dataset.yml"), keys,
                       f"Latency dataset of the pipeline's SubTransformers on this {ctx.hw}")
    run_command(ctx, [_python(), script("latency_dataset.py"), f"--configs={_abs(cfg)}"],
                ctx.path("logs", "latency_dataset.log"), env=ctx.gpu_env(ctx.latency_gpu))
    return {"config": _abs(cfg), "csv": _abs(ctx.latency_csv)}


def stage_latency_predictor(ctx: Context) -> dict[str, Any]:
    """Train the latency predictor on the dataset just measured."""
    keys = load_yaml(ctx.task.config(ctx.task.predictor_config))
    from hat.latency.csvio import load_latency_csv

    lat_norm = float(f"{load_latency_csv(ctx.latency_csv)[1].max():.2g}")
    keys.update({"lat-dataset-path": _abs(ctx.latency_csv), "ckpt-path": _abs(ctx.predictor),
                 "lat-norm": lat_norm, "train-steps": ctx.preset.predictor_steps,
                 "seed": ctx.seed})
    cfg = write_config(ctx.path("configs", "latency_predictor.yml"), keys,
                       "Latency predictor of the pipeline (lat-norm: about the largest "
                       "measured latency)")
    run_command(ctx, [_python(), script("latency_predictor.py"), f"--configs={_abs(cfg)}",
                      "--json"], ctx.path("logs", "latency_predictor.log"))
    return {"config": _abs(cfg), "predictor": _abs(ctx.predictor), "lat_norm": lat_norm}


def _round_up(ms: float) -> float:
    """Three significant digits, rounded up."""
    import math

    digits = 2 - math.floor(math.log10(ms))
    return math.ceil(ms * 10**digits) / 10**digits


def latency_limits(ctx: Context, baseline_ms: float, others_ms: Sequence[float] = ()
                   ) -> list[float]:
    """Limits at the preset's quantiles of the measured latencies (two significant digits),
    plus the fastest baseline's predicted latency (so one found model is compared at its
    latency) and ``baseline_limit_ratio`` x each other baseline's (HAT's claim against it)."""
    import numpy as np

    from hat.latency.csvio import load_latency_csv

    lat = load_latency_csv(ctx.latency_csv)[1]
    limits = {float(f"{np.quantile(lat, q):.2g}") for q in ctx.preset.limit_quantiles}
    at_baseline = _round_up(baseline_ms)
    kept = {x for x in limits if abs(x / at_baseline - 1) > 0.1 and x < at_baseline}
    if len(kept) < len(ctx.preset.limit_quantiles):
        ctx.say(f"  limits: {len(kept) + 1} instead of {len(ctx.preset.limit_quantiles) + 1}: "
                f"quantile limits {sorted(limits - kept)} ms are within 10 % of or above the "
                f"baseline's {at_baseline:g} ms (or equal to another)")
    kept.add(at_baseline)
    for ms in others_ms:
        x = _round_up(ctx.preset.baseline_limit_ratio * ms)
        if all(abs(x / y - 1) > 0.02 for y in kept):
            kept.add(x)
    return sorted(kept)


def stage_search(ctx: Context, lat_norm: float, baseline_ms: float,
                 others_ms: Sequence[float] = ()) -> dict[str, Any]:
    """One Pareto search under several latency limits (:func:`latency_limits`)."""
    p = ctx.preset
    keys = load_yaml(ctx.task.config(ctx.task.evo_config))
    limits = latency_limits(ctx, baseline_ms, others_ms)
    keys.update({"evo-iter": p.evo_iter, "population-size": p.population,
                 "parent-size": p.parents, "mutation-size": p.mutation,
                 "crossover-size": p.crossover, "ckpt-path": _abs(ctx.predictor),
                 "lat-norm": lat_norm, "restore-file": _abs(ctx.super_ckpt),
                 "write-config-path": _abs(ctx.search_yaml), "latency-constraint": limits,
                 "seed": ctx.seed})
    cfg = write_config(ctx.path("configs", "evo_search.yml"), keys,
                       "Pareto search of the pipeline: limits at the "
                       f"{', '.join(f'{q:g}' for q in p.limit_quantiles)} quantiles of the "
                       "measured latencies (below the baseline's) and at the uniform Transformer "
                       "baseline's predicted latency")
    run_command(ctx, [_python(), script("evo_search.py"), f"--configs={_abs(ctx.super_yaml)}",
                      f"--evo-configs={_abs(cfg)}"], ctx.path("logs", "search.log"),
                env=ctx.gpu_env(0))
    import json

    summary = json.loads(ctx.search_yaml.with_name(
        ctx.search_yaml.stem.split("@")[0] + ".summary.json").read_text())
    found = [{"name": f"hat@{w['latency_limit_ms']:g}ms", "yaml": _abs(w["yaml"]),
              "latency_limit_ms": w["latency_limit_ms"],
              "inherited_valid_loss": w["valid_loss"]} for w in summary["winners"]]
    return {"config": _abs(cfg), "limits_ms": limits, "found": found}


def uniform_configs(space: SearchSpace) -> list[SubConfig]:
    """The paper's "Transformer" rows inside the space: the same depth for encoder and decoder
    and one width everywhere (embed, FFN, heads), attending to the last encoder layer."""
    out = []
    depths = [d for d in space.encoder_layer_num_choice if d in space.decoder_layer_num_choice]
    embeds = [e for e in space.encoder_embed_choice if e in space.decoder_embed_choice]
    heads = [h for h in space.encoder_self_attention_heads_choice
             if h in space.decoder_self_attention_heads_choice
             and h in space.decoder_ende_attention_heads_choice]
    ffns = [f for f in space.encoder_ffn_embed_dim_choice
            if f in space.decoder_ffn_embed_dim_choice]
    for d in depths:
        for e in embeds:
            for f in ffns:
                for h in heads:
                    out.append(SubConfig(
                        encoder_embed_dim=e, decoder_embed_dim=e, encoder_layer_num=d,
                        decoder_layer_num=d, encoder_ffn_embed_dim=(f,) * d,
                        decoder_ffn_embed_dim=(f,) * d, encoder_self_attention_heads=(h,) * d,
                        decoder_self_attention_heads=(h,) * d,
                        decoder_ende_attention_heads=(h,) * d,
                        decoder_arbitrary_ende_attn=(-1,) * d))
    return out


def spread(n_items: int, n: int) -> list[int]:
    """``n`` indexes from 0 to ``n_items - 1``, evenly spaced, both ends included."""
    if n >= n_items:
        return list(range(n_items))
    if n == 1:
        return [0]
    return sorted({round(k * (n_items - 1) / (n - 1)) for k in range(n)})


def stage_baseline(ctx: Context) -> dict[str, Any]:
    """Uniformly scaled-down Transformers of the space: the fastest (by the predictor), and with
    ``baselines`` > 1 more of them up to the slowest, evenly spaced in predicted latency rank
    (HAT's "Transformer" curve). The search gets the fastest one's latency as one limit."""
    from hat.latency.predictor import LatencyPredictor
    from hat.search.latency import LatencyModel
    from hat.space import write_subtransformer_yaml

    space = SearchSpace.from_args(_super_args(ctx), source=str(ctx.super_yaml))
    model = LatencyModel(LatencyPredictor.load(ctx.predictor))
    cands = uniform_configs(space)
    if not cands:
        raise HatConfigError(f"{ctx.super_yaml}: the space has no uniform Transformer (no depth, "
                             "width or head count shared by encoder and decoder)")
    pred = model(cands)
    order = sorted(range(len(cands)), key=lambda k: pred[k])
    picked = [order[j] for j in spread(len(order), ctx.preset.baselines)]
    out = []
    for rank, i in enumerate(picked, 1):
        name = "transformer" if len(picked) == 1 else f"transformer-{rank}"
        path = ctx.path("search", f"{name.replace('-', '_')}_baseline.yml")
        write_subtransformer_yaml(cands[i], path, header=(
            f"uniformly scaled-down Transformer baseline {name}: predicted {pred[i]:.3g} ms, "
            f"number {order.index(i) + 1} by predicted latency of the space's {len(cands)} "
            "uniform configs (same depth for encoder and decoder, one width and head count "
            "everywhere)"))
        out.append({"name": name, "yaml": _abs(path), "predicted_latency_ms": float(pred[i])})
    return {"baselines": out}


def _super_args(ctx: Context) -> Any:
    from hat.config import parse_fairseq_args

    return parse_fairseq_args([f"--configs={ctx.super_yaml}"])


def retrain_recipe(ctx: Context) -> Path:
    """``DIR/configs/retrain.yml``: the task's retraining recipe with the preset's budget (every
    model gets the same; bench/fidelity.py trains its random SubTransformers with it too)."""
    src = ctx.task.config(ctx.task.retrain_config)
    keys = ctx.train_keys(load_yaml(src))
    keys.update({"data": _abs(ctx.data_bin), "max-update": ctx.preset.retrain_updates,
                 "seed": ctx.seed,
                 "save-interval-updates": max(50, ctx.preset.retrain_updates // 2)})
    if ctx.preset.retrain_converged_bits:
        keys["stop-converged-bits"] = ctx.preset.retrain_converged_bits
    rule = (f"until converged (< {ctx.preset.retrain_converged_bits} bits over the last 20 % "
            "of updates) or max-update" if ctx.preset.retrain_converged_bits else "the same budget")
    return write_config(ctx.path("configs", "retrain.yml"), keys,
                        f"Retraining recipe of the pipeline ({_abs(src)}; from scratch, {rule} "
                        "for every model)")


def stage_retrain(ctx: Context, models: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """Train every found SubTransformer and the baselines from scratch, the same budget each
    (spread over the GPUs when there are several)."""
    common = retrain_recipe(ctx)
    jobs: list[Job] = []
    trained: dict[SubConfig, str] = {}
    for m in models:
        cfg = read_subtransformer_yaml(m["yaml"])
        if cfg in trained:  # two limits found the same SubTransformer: train it once
            m["checkpoint"] = trained[cfg]
            continue
        save = ctx.out / "retrain" / m["name"]
        m["checkpoint"] = trained[cfg] = _abs(save / "checkpoint_last.pt")
        jobs.append((f"retrain {m['name']}", [
            _python(), script("train.py"), f"--configs={m['yaml']}",
            f"--sub-configs={_abs(common)}", "--save-dir", _abs(save)],
            ctx.path("logs", f"retrain_{m['name']}.log"), ctx.gpu_env(len(jobs))))
    env = {"OMP_NUM_THREADS": "1"} if ctx.preset.device != "cuda" and workers > 1 else {}
    run_parallel(ctx, jobs, workers, env)
    return {"config": _abs(common), "checkpoints": {m["name"]: m["checkpoint"] for m in models}}


def stage_bleu(ctx: Context, models: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """Beam-search BLEU of every retrained model on the test split and the task's further test
    splits (``python -m hat.bleu``; one score per distinct checkpoint)."""
    import json

    splits = ("test", *ctx.task.extra_test_splits)
    jobs: list[Job] = []
    scored: dict[str, str] = {}
    for m in models:
        if m["checkpoint"] in scored:
            continue
        scored[m["checkpoint"]] = m["name"]
        for split in splits:
            argv = [_python(), "-m", "hat.bleu", "--task", ctx.task.name, "--data",
                    _abs(ctx.data_bin), "--checkpoint", m["checkpoint"], "--sub-config",
                    m["yaml"], "--metric", ctx.task.bleu_metric, "--subset", split,
                    "--out", _abs(ctx.out / "bleu" / m["name"]), "--json"]
            if ctx.preset.device != "cuda":
                argv.append("--cpu")
            jobs.append((f"BLEU {m['name']}" + ("" if split == "test" else f" ({split})"), argv,
                         ctx.path("logs", _bleu_log(m["name"], split)),
                         ctx.gpu_env(len(jobs))))
    env = {"OMP_NUM_THREADS": "1"} if ctx.preset.device != "cuda" and workers > 1 else {}
    run_parallel(ctx, jobs, workers, env)
    scores = {}
    for m in models:
        got = {}
        for split in splits:
            log = ctx.out / "logs" / _bleu_log(scored[m["checkpoint"]], split)
            got[split] = json.loads([ln for ln in log.read_text().splitlines()
                                     if ln.startswith("{")][-1])
        scores[m["name"]] = {**got["test"], "splits": {k: {"bleu": v["bleu"],
                                                          "signature": v.get("signature")}
                                                      for k, v in got.items() if k != "test"}}
    return {"scores": scores}


def _bleu_log(name: str, split: str) -> str:
    return f"bleu_{name}.log" if split == "test" else f"bleu_{name}_{split}.log"


def stage_latency(ctx: Context, models: list[dict[str, Any]]) -> dict[str, Any]:
    """Predicted and measured latency of every model, measured with the predictor's own
    protocol (the one its dataset was measured with)."""
    from hat.search.latency import LatencyModel, Measurer, measure_setup
    from hat.search.latency import load_predictor as load

    predictor = load(str(ctx.predictor), None, None, "pipeline")
    if ctx.preset.device == "cuda":
        import torch

        torch.cuda.set_device(ctx.latency_gpu)  # the GPU that measured the latency dataset
    setup = measure_setup(predictor, ctx.hw, _super_args(ctx))
    ctx.say(f"  measuring {len(models)} models: {setup.describe()}")
    meas = Measurer(setup)
    model = LatencyModel(predictor)
    out = {}
    for m in models:
        cfg = read_subtransformer_yaml(m["yaml"])
        out[m["name"]] = {"predicted_latency_ms": float(model([cfg])[0]),
                          "measured_latency_ms": float(meas(cfg))}
    return {"latency": out, "protocol": setup.describe()}
