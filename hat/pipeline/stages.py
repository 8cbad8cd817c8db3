"""The pipeline's stages. Each writes the YAML config that stage's own CLI reads and runs that
CLI (``train.py``, ``latency_dataset.py``, ``latency_predictor.py``, ``evo_search.py``,
``python -m hat.bleu``) as a child process, so every output is a file the CLI can take over
from; the commands are collected in ``DIR/commands.sh``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hat.errors import HatConfigError
from hat.metrics import check_metric_installed
from hat.pipeline.context import Context
from hat.pipeline.runner import (
    absolute,
    python,
    run_command,
    script,
    write_config,
)
from hat.pipeline.tasks import prepared
from hat.space import SearchSpace, SubConfig, read_subtransformer_yaml
from hat.yamlio import load_yaml


def stage_corpus(ctx: Context) -> dict[str, Any]:
    """The parallel corpus, binarized: the synthetic one is made in the run folder; a real one
    is built once under ``data/`` by ``scripts/prepare_data.py`` (skipped when it is there)."""
    p = ctx.preset
    check_metric_installed(ctx.task.bleu_metric, f"--task {ctx.task.name}")  # before any work
    if ctx.task.pipe.built_in_run:
        run_command(ctx, [python(), script("scripts/make_toy_corpus.py"), "--out",
                          absolute(ctx.out / "data"), "--n-train", p.n_train, "--n-valid",
                          p.n_valid, "--n-test", p.n_test, "--seed", ctx.seed],
                    ctx.path("logs", "corpus.log"))
    elif prepared(ctx.data_bin, needed_splits(ctx)):
        ctx.say(f"  {ctx.data_bin}: prepared corpus found")
    else:
        run_command(ctx, [python(), script("scripts/prepare_data.py"), "--task", ctx.task.name,
                          "--out", absolute(ctx.data_bin.parent)], ctx.path("logs", "corpus.log"))
    if not ctx.task.pipe.built_in_run:
        check_bleu_references(ctx)
    return {"data_bin": absolute(ctx.data_bin)}


def needed_splits(ctx: Context) -> tuple[str, ...]:
    """The corpus splits the stages read: train, valid, the test splits and the search's
    fitness subset (the task's evo config's ``valid-subset``). A data-bin prepared before one
    of them existed is prepared again (the finished steps are skipped)."""
    search = str(load_yaml(ctx.task.config(ctx.task.pipe.evo_config)).get("valid-subset",
                                                                          "valid"))
    return tuple(dict.fromkeys(("train", "valid", "test", *ctx.task.pipe.extra_test_splits,
                                *search.split(","))))


def check_bleu_references(ctx: Context) -> None:
    """The untokenized references the BLEU stage scores against, checked before any training
    (a corpus copied without them would fail only at the end)."""
    if ctx.task.bleu_metric != "sacre":
        return
    from hat.bleu import subset_reference, task_settings

    test_ref = task_settings(ctx.task.name).ref
    for split in ("test", *ctx.task.pipe.extra_test_splits):
        ref = subset_reference(test_ref, split)
        if ref and not Path(ref).is_file():
            raise HatConfigError(
                f"{ref}: the untokenized reference of split '{split}' is missing (sacreBLEU "
                f"scores against it); {ctx.data_bin} alone is not enough: run python "
                f"scripts/prepare_data.py --task {ctx.task.name} (finished steps are skipped), "
                f"or copy {Path(ref).parent} with the corpus")


def super_config(ctx: Context) -> Path:
    """``DIR/configs/supertransformer.yml``: the task's space and recipe, sized by the preset
    (written by the first stage that needs it: the baselines read the space from it before the
    SuperTransformer trains when they run first)."""
    p = ctx.preset
    src = ctx.task.config(ctx.task.pipe.super_config)
    keys = ctx.train_keys(load_yaml(src))
    keys.update({"data": absolute(ctx.data_bin), "max-update": p.super_updates,
                 "save-dir": absolute(ctx.super_ckpt.parent), "seed": ctx.seed,
                 "save-interval-updates": max(50, p.super_updates // 4)})
    if p.super_stop_minutes:
        keys["stop-time-hours"] = round(p.super_stop_minutes / 60, 4)
    stop = (f", stopped after {p.super_stop_minutes:g} minutes if not done"
            if p.super_stop_minutes else "")
    return write_config(ctx.super_yaml, keys,
                        f"SuperTransformer of the pipeline ({absolute(src)}, sized by preset "
                        f"'{p.name}'{stop})")


def stage_supertransformer(ctx: Context) -> dict[str, Any]:
    """Train the SuperTransformer (the task's space and recipe, sized by the preset)."""
    cfg = super_config(ctx)
    run_command(ctx, [python(), script("train.py"), f"--configs={absolute(cfg)}"],
                ctx.path("logs", "supertransformer.log"), env=ctx.gpu_env(0))
    return {"config": absolute(cfg), "checkpoint": absolute(ctx.super_ckpt),
            "updates": checkpoint_updates(ctx.super_ckpt)}


def checkpoint_updates(path: Path) -> int | None:
    """Updates a fairseq checkpoint was trained for (None if unreadable)."""
    from hat.compat import load_checkpoint_file

    try:
        return int(load_checkpoint_file(path)["optimizer_history"][-1]["num_updates"])
    except Exception:  # noqa: BLE001 - unreadable: unknown
        return None


def _source_dict(ctx: Context) -> Path:
    lang = load_yaml(ctx.task.config(ctx.task.pipe.super_config)).get("source-lang", "src")
    return ctx.data_bin / f"dict.{lang}.txt"


def stage_latency_dataset(ctx: Context) -> dict[str, Any]:
    """Measure SubTransformers of the space on this machine."""
    from hat.latency.measure.model import dictionary_size

    p = ctx.preset
    vocab = dictionary_size(_source_dict(ctx))
    keys = load_yaml(ctx.task.config(ctx.task.pipe.latency_config))
    keys.update({"lat-dataset-path": absolute(ctx.latency_csv), "lat-dataset-size": p.lat_rows,
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
    run_command(ctx, [python(), script("latency_dataset.py"), f"--configs={absolute(cfg)}"],
                ctx.path("logs", "latency_dataset.log"), env=ctx.gpu_env(ctx.latency_gpu))
    return {"config": absolute(cfg), "csv": absolute(ctx.latency_csv)}


def stage_latency_predictor(ctx: Context) -> dict[str, Any]:
    """Train the latency predictor on the dataset just measured."""
    keys = load_yaml(ctx.task.config(ctx.task.pipe.predictor_config))
    from hat.latency.csvio import load_latency_csv

    lat_norm = float(f"{load_latency_csv(ctx.latency_csv)[1].max():.2g}")
    keys.update({"lat-dataset-path": absolute(ctx.latency_csv),
                 "ckpt-path": absolute(ctx.predictor), "lat-norm": lat_norm,
                 "train-steps": ctx.preset.predictor_steps, "seed": ctx.seed})
    cfg = write_config(ctx.path("configs", "latency_predictor.yml"), keys,
                       "Latency predictor of the pipeline (lat-norm: about the largest "
                       "measured latency)")
    run_command(ctx, [python(), script("latency_predictor.py"), f"--configs={absolute(cfg)}",
                      "--json"], ctx.path("logs", "latency_predictor.log"))
    return {"config": absolute(cfg), "predictor": absolute(ctx.predictor), "lat_norm": lat_norm}


def _three_digits(ms: float, up: bool) -> float:
    """Three significant digits, rounded up (a limit at a baseline's latency admits it) or down
    (a limit at 0.7x a baseline's admits nothing slower than 0.7x it)."""
    import math

    digits = 2 - math.floor(math.log10(ms))
    scaled = ms * 10**digits
    return (math.ceil(scaled - 1e-9) if up else math.floor(scaled + 1e-9)) / 10**digits


def latency_limits(ctx: Context, baseline_ms: float, others_ms: Sequence[float] = (),
                   floor_ms: float = 0.0) -> list[float]:
    """Limits at the preset's quantiles of the measured latencies (two significant digits),
    plus the fastest baseline's latency (so one found model is compared at its latency; with
    ``limit_at_fastest_baseline`` off, ``baseline_limit_ratio`` x it) and
    ``baseline_limit_ratio`` x each other baseline's (HAT's claim against it), plus
    ``limits_below`` limits evenly spaced between the fastest measured SubTransformer's
    latency and the lowest of those (winners of more limits, for HAT's fidelity check). A limit
    the space cannot meet (at or below ``floor_ms``, the fastest SubTransformer's predicted
    latency) is raised to just above it: the search then runs, and the report says whether
    its model still dominates."""
    import numpy as np

    from hat.latency.csvio import load_latency_csv

    p = ctx.preset
    lat = load_latency_csv(ctx.latency_csv)[1]
    limits = {float(f"{np.quantile(lat, q):.2g}") for q in p.limit_quantiles}
    at_baseline = (_three_digits(baseline_ms, up=True) if p.limit_at_fastest_baseline
                   else _three_digits(p.baseline_limit_ratio * baseline_ms, up=False))
    kept = {x for x in limits if abs(x / at_baseline - 1) > 0.1 and x < at_baseline}
    if len(kept) < len(p.limit_quantiles):
        ctx.say(f"  limits: {len(kept) + 1} instead of {len(p.limit_quantiles) + 1}: "
                f"quantile limits {sorted(limits - kept)} ms are within 10 % of or above the "
                f"baseline's {at_baseline:g} ms (or equal to another)")
    kept.add(at_baseline)
    for ms in others_ms:
        x = _three_digits(p.baseline_limit_ratio * ms, up=False)
        if all(abs(x / y - 1) > 0.02 for y in kept):
            kept.add(x)
    low, high = max(float(np.min(lat)), floor_ms), min(kept)
    for k in range(1, p.limits_below + 1) if high > low else ():
        kept.add(_three_digits(low + (high - low) * k / (p.limits_below + 1), up=False))
    least = _three_digits(1.02 * floor_ms, up=True) if floor_ms > 0 else 0.0
    if any(x < least for x in kept):
        ctx.say(f"  limits {sorted(x for x in kept if x < least)} ms are below the fastest "
                f"SubTransformer's predicted latency ({floor_ms:.3g} ms): searched at {least:g}")
        kept = {max(x, least) for x in kept}
    return sorted(kept)


def fastest_predicted(ctx: Context) -> float:
    """The predicted latency (ms) of the space's fastest SubTransformers (the smallest one, for
    each choice of encoder layers attended)."""
    from hat.latency.predict.predictor import LatencyPredictor
    from hat.search.latency import LatencyModel

    space = SearchSpace.from_args(_super_args(ctx), source=str(ctx.super_yaml))
    model = LatencyModel(LatencyPredictor.load(ctx.predictor))
    return float(min(model([space.smallest(a) for a in space.decoder_arbitrary_ende_attn_choice])))


def stage_search(ctx: Context, lat_norm: float, baseline_ms: float,
                 others_ms: Sequence[float] = ()) -> dict[str, Any]:
    """One Pareto search under several latency limits (:func:`latency_limits`)."""
    p = ctx.preset
    keys = load_yaml(ctx.task.config(ctx.task.pipe.evo_config))
    limits = latency_limits(ctx, baseline_ms, others_ms, fastest_predicted(ctx))
    keys.update({"evo-iter": p.evo_iter, "population-size": p.population,
                 "parent-size": p.parents, "mutation-size": p.mutation,
                 "crossover-size": p.crossover, "ckpt-path": absolute(ctx.predictor),
                 "lat-norm": lat_norm, "restore-file": absolute(ctx.super_ckpt),
                 "write-config-path": absolute(ctx.search_yaml), "latency-constraint": limits,
                 "seed": ctx.seed})
    parts = ([f"the {', '.join(f'{q:g}' for q in p.limit_quantiles)} quantiles of the "
              "measured latencies (below the fastest baseline's)"] if p.limit_quantiles else [])
    parts.append("the fastest uniform Transformer baseline's latency (the lower of measured "
                 "and predicted)"
                 + ("" if p.limit_at_fastest_baseline else f" x {p.baseline_limit_ratio:g}"))
    if others_ms:
        parts.append(f"{p.baseline_limit_ratio:g} x each other baseline's")
    if p.limits_below:
        parts.append(f"{p.limits_below} more evenly spaced below those")
    cfg = write_config(ctx.path("configs", "evo_search.yml"), keys,
                       f"Pareto search of the pipeline: limits at {'; '.join(parts)}")
    run_command(ctx, [python(), script("evo_search.py"), f"--configs={absolute(ctx.super_yaml)}",
                      f"--evo-configs={absolute(cfg)}"], ctx.path("logs", "search.log"),
                env=ctx.gpu_env(0))
    import json

    summary = json.loads(ctx.search_yaml.with_name(
        ctx.search_yaml.stem.split("@")[0] + ".summary.json").read_text())
    found = [{"name": f"hat@{w['latency_limit_ms']:g}ms", "yaml": absolute(w["yaml"]),
              "latency_limit_ms": w["latency_limit_ms"],
              "inherited_valid_loss": w["valid_loss"]} for w in summary["winners"]]
    return {"config": absolute(cfg), "limits_ms": limits, "found": found}


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
    (HAT's "Transformer" curve). Each one's latency is measured too, on the latency dataset's
    protocol: the search's limits follow the lower of measured and predicted latency (a limit
    at 0.7x a prediction that was 10 % high ended at 0.77x the measured latency: debian.en-fr,
    2026-12-04)."""
    from hat.latency.predict.predictor import LatencyPredictor
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
    measured = measured_apart(ctx, [cands[i] for i in picked])
    out = []
    for rank, i in enumerate(picked, 1):
        name = "transformer" if len(picked) == 1 else f"transformer-{rank}"
        path = ctx.path("search", f"{name.replace('-', '_')}_baseline.yml")
        write_subtransformer_yaml(cands[i], path, header=(
            f"uniformly scaled-down Transformer baseline {name}: predicted {pred[i]:.3g} ms, "
            f"measured {measured[rank - 1]:.3g} ms, "
            f"number {order.index(i) + 1} by predicted latency of the space's {len(cands)} "
            "uniform configs (same depth for encoder and decoder, one width and head count "
            "everywhere)"))
        out.append({"name": name, "yaml": absolute(path), "predicted_latency_ms": float(pred[i]),
                    "measured_latency_ms": measured[rank - 1]})
    return {"baselines": out}


def _super_args(ctx: Context) -> Any:
    from hat.config import parse_fairseq_args

    return parse_fairseq_args([f"--configs={super_config(ctx)}"])


def measure_latencies(ctx: Context, cfgs: Sequence[SubConfig]
                      ) -> tuple[list[float], list[float], str]:
    """Predicted and measured latency (ms) of each SubTransformer, measured with the
    predictor's own protocol (the one its dataset was measured with), and that protocol."""
    from hat.search.latency import LatencyModel, Measurer, measure_setup
    from hat.search.latency import load_predictor as load

    predictor = load(str(ctx.predictor), None, None, "pipeline")
    if ctx.preset.device == "cuda":
        import torch

        torch.cuda.set_device(ctx.latency_gpu)  # the GPU that measured the latency dataset
    setup = measure_setup(predictor, ctx.hw, _super_args(ctx))
    ctx.say(f"  measuring {len(cfgs)} models: {setup.describe()}")
    meas = Measurer(setup)
    model = LatencyModel(predictor)
    return ([float(model([c])[0]) for c in cfgs], [float(meas(c)) for c in cfgs],
            setup.describe())


def _measure_child(ctx: Context, cfgs: list[SubConfig]) -> list[float]:
    return measure_latencies(ctx, cfgs)[1]


def measured_apart(ctx: Context, cfgs: list[SubConfig]) -> list[float]:
    """Measured latency (ms) of each SubTransformer, measured in a child process: this process
    then holds no CUDA context (trainings started later share the GPU through a CUDA MPS
    daemon, and a process that held a context from before it would stay outside it)."""
    import multiprocessing
    from dataclasses import replace

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure_child, (replace(ctx, say=print), cfgs))


def stage_latency(ctx: Context, models: list[dict[str, Any]]) -> dict[str, Any]:
    """Predicted and measured latency of every model (:func:`measure_latencies`)."""
    pred, meas, protocol = measure_latencies(
        ctx, [read_subtransformer_yaml(m["yaml"]) for m in models])
    out = {m["name"]: {"predicted_latency_ms": p, "measured_latency_ms": x}
           for m, p, x in zip(models, pred, meas)}
    return {"latency": out, "protocol": protocol}
