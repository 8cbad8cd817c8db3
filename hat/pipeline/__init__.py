"""HAT's whole pipeline in one command, on the synthetic toy corpus or a real one (``--task``):

corpus -> SuperTransformer -> latency dataset (this machine) -> latency predictor -> Pareto
search under 2-3 latency limits -> uniform Transformer baseline -> retrain every model from
scratch -> beam-search BLEU -> predicted and measured latency -> results table and plot.

``python -m hat.pipeline --out runs/quickstart``. With several GPUs (``--gpus 2``) the latency
dataset and predictor are made on the last GPU while the SuperTransformer trains on the first, and
the retrainings spread over all; on one GPU the debian preset measures latency and picks the
baselines first, then retrains them beside the SuperTransformer. Every stage runs its own CLI on
a YAML config written into ``DIR/configs/`` (the commands are in ``DIR/commands.sh``), so a user
can take over at any stage. ``DIR/pipeline.json`` records finished stages: the same command
continues a killed run (a stage cut short resumes through its CLI's own resume).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from hat.atomic import atomic_write_json
from hat.errors import HatConfigError
from hat.pipeline.context import Context
from hat.pipeline.presets import PRESETS, STAGES, Preset, preset

STATE = "pipeline.json"
STATE_VERSION = 1


def _load_state(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    import json

    from hat.runstate import check_resume

    if not path.is_file():
        return {"version": STATE_VERSION, "settings": settings, "stages": {}}
    try:
        state = json.loads(path.read_text())
    except ValueError as e:
        raise HatConfigError(f"{path}: unreadable pipeline state ({e}); delete it to start "
                             "over") from None
    check_resume(path, state.get("settings", {}), settings, list(settings), "pipeline",
                 "use another --out, or the same preset, device and seed")
    return state


def run_pipeline(out: str | Path, preset_name: str | None = None, device: str | None = None,
                 seed: int = 1, workers: int | None = None, say: Callable[[str], None] = print,
                 task: str = "toy", gpus: int = 1, stop_after: str | None = None,
                 mps: bool = True, limits_below: int | None = None) -> dict[str, Any] | None:
    """Run (or continue) the pipeline into ``out``; returns the results record (None when
    ``stop_after`` ends the run early: the same call without it continues)."""
    import threading

    from hat.pipeline import rundir, stages
    from hat.pipeline.tasks import pipeline_task

    t = pipeline_task(task)
    if preset_name is None:
        preset_name = "cuda" if t.name == "toy" and device == "cuda" else t.pipe.default_preset
    if workers is not None and workers < 1:
        raise HatConfigError(f"--jobs {workers}: must be at least 1 (the models retrained or "
                             "scored at once)")
    if stop_after is not None and stop_after not in STAGES:
        raise HatConfigError(f"--stop-after {stop_after!r}: allowed {', '.join(STAGES)}")
    if preset_name not in PRESETS:
        raise HatConfigError(f"--preset {preset_name!r}: allowed {', '.join(PRESETS)}")
    p: Preset = preset(preset_name, device)
    if limits_below is not None:
        if limits_below < 0:
            raise HatConfigError(f"--limits-below {limits_below}: must be 0 or more")
        p = replace(p, limits_below=limits_below)
    workers = workers or p.jobs
    if p.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            how = ("run without --device cuda (the CPU preset)" if t.name == "toy" else
                   f"the '{p.name}' preset is sized for a GPU; --device cpu runs it on the CPU "
                   "(many hours: the SuperTransformer alone takes seconds per update there)")
            raise HatConfigError(f"{'--device cuda' if device == 'cuda' else f'--task {t.name}'}"
                                 f": torch sees no CUDA device here; {how}")
        if gpus > torch.cuda.device_count():
            raise HatConfigError(f"--gpus {gpus}: torch sees {torch.cuda.device_count()} GPU(s)")
    if gpus < 1:
        raise HatConfigError(f"--gpus {gpus}: must be at least 1")
    if gpus > 1 and p.device != "cuda":  # beside a training, latency would be measured on
        raise HatConfigError(  # the cores it is busy on
            f"--gpus {gpus}: the '{p.name}' preset runs on the CPU, where the latency stages "
            "would measure on the cores the SuperTransformer trains on; leave --gpus out (the "
            "stages then run one after the other) or add --device cuda")
    out = Path(out).resolve()  # stage configs name absolute paths: they run from anywhere
    from hat.atomic import check_writable

    if out.exists() and not out.is_dir():
        raise HatConfigError(f"--out {out}: this is a file, not a folder; give a new folder (or "
                             "the run folder of the run to continue)")
    check_writable(out / STATE, "pipeline output folder")
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, preset=p, say=say, seed=seed, task=t, gpus=gpus, mps=mps)
    settings = {**p.settings(t.pipe.built_in_run), "seed": seed, "task": t.name}
    state_path = out / STATE
    state = _load_state(state_path, settings)
    was = state.get("run_dir")
    if was and was != str(out):
        moved = rundir.relocate(out, was)
        say(f"the run folder moved from {was}: {len(moved)} file(s) now name {out}")
    state["run_dir"] = str(out)
    done: dict[str, Any] = state["stages"]
    plan = dict(p.plan_s)
    order = p.order(gpus)
    t_run = time.monotonic()
    lock = threading.Lock()

    class Stop(Exception):
        pass

    def stage(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if stop_after is not None and order.index(name) > order.index(stop_after):
            raise Stop
        if name in done:
            say(f"[{order.index(name) + 1}/{len(order)}] {name}: done earlier "
                f"({done[name]['seconds']:.0f} s)")
            return rundir.local(done[name]["outputs"], out)
        spent = sum(v["seconds"] for v in done.values())
        planned_done = sum(plan[k] for k in done if k in plan)
        speed = (spent + 60) / (planned_done + 60)  # observed pace, with a 60 s prior
        left = speed * sum(v for k, v in plan.items() if k not in done)
        say(f"[{order.index(name) + 1}/{len(order)}] {name} (elapsed "
            f"{_mmss(time.monotonic() - t_run)}, about {_mmss(left)} left)")
        t0 = time.monotonic()
        outputs = fn()
        with lock:
            done[name] = {"seconds": round(time.monotonic() - t0, 1),
                          "outputs": rundir.portable(outputs, out)}
            atomic_write_json(state_path, state, indent=1)
        return outputs

    from hat.runstate import exclusive

    with exclusive(state_path, "running the pipeline into this folder"):
        try:
            stage("corpus", lambda: stages.stage_corpus(ctx))
            if order != STAGES:  # one GPU, the baselines retrain beside the SuperTransformer
                pred = _latency_stages(ctx, stage)
                base = stage("baseline", lambda: stages.stage_baseline(ctx))
                if stop_after is not None and \
                        order.index("supertransformer") > order.index(stop_after):
                    raise Stop
                _super_beside_baselines(ctx, stage, base, done, workers)
                return _rest(ctx, stage, pred, base, done, workers)
            if gpus > 1 and "supertransformer" not in done:
                _beside(lambda: stage("supertransformer",
                                      lambda: stages.stage_supertransformer(ctx)),
                        lambda: _latency_stages(ctx, stage))
            else:
                stage("supertransformer", lambda: stages.stage_supertransformer(ctx))
            pred = _latency_stages(ctx, stage)
            base = stage("baseline", lambda: stages.stage_baseline(ctx))
            return _rest(ctx, stage, pred, base, done, workers)
        except Stop:
            say(f"stopped after stage '{stop_after}' (--stop-after); run the command without it "
                "to continue")
            return None


def _beside(main: Callable[[], Any], other: Callable[[], Any]) -> None:
    """Run ``other`` in a thread while ``main`` runs; re-raise the first error."""
    import threading

    errors: list[BaseException] = []

    def wrap() -> None:
        try:
            other()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    th = threading.Thread(target=wrap)
    th.start()
    try:
        main()
    finally:
        th.join()
    if errors:
        raise errors[0]


def _super_beside_baselines(ctx: Context, stage: Callable[..., dict[str, Any]],
                            base: dict[str, Any], done: dict[str, Any], workers: int) -> None:
    """The SuperTransformer's training, and beside it on the same GPU (through one MPS daemon
    for all) the baselines' retrainings, which need no SuperTransformer; the retrain stage
    later finds them trained (a run killed here trains what is left there)."""
    from hat.pipeline import retraining, stages

    if "supertransformer" in done:  # says so; the baselines' retraining was part of it
        stage("supertransformer", lambda: stages.stage_supertransformer(ctx))
        return
    models = _baseline_models(base)
    with retraining.shared_gpu(ctx, 1 + min(workers, len(models))) as env:
        ctx.shared_env = env
        try:
            _beside(lambda: stage("supertransformer", lambda: stages.stage_supertransformer(ctx)),
                    lambda: retraining.stage_retrain(ctx, models, workers))
        finally:
            ctx.shared_env = None


def _baselines(base: dict[str, Any]) -> list[dict[str, Any]]:
    """The baseline stage's baselines (a run folder from before: one baseline)."""
    return base.get("baselines", [base])


def _baseline_models(base: dict[str, Any]) -> list[dict[str, Any]]:
    """The baselines as models to retrain and score (no latency limit)."""
    return [{"name": b["name"], "yaml": b["yaml"], "latency_limit_ms": None}
            for b in _baselines(base)]


def _latency_stages(ctx: Context, stage: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    from hat.pipeline import stages

    stage("latency_dataset", lambda: stages.stage_latency_dataset(ctx))
    return stage("latency_predictor", lambda: stages.stage_latency_predictor(ctx))


def _rest(ctx: Context, stage: Callable[..., dict[str, Any]], pred: dict[str, Any],
          base: dict[str, Any], done: dict[str, Any], workers: int) -> dict[str, Any]:
    from hat.pipeline import report, retraining, stages

    say, out = ctx.say, ctx.out
    baselines = _baselines(base)
    # each baseline's limit follows the lower of its measured and predicted latency: the search
    # ranks candidates by prediction, and the claim is about measured latency (a run folder
    # from before measured none)
    ms = [min(b["predicted_latency_ms"], b.get("measured_latency_ms") or float("inf"))
          for b in baselines]
    search = stage("search", lambda: stages.stage_search(ctx, pred["lat_norm"], ms[0], ms[1:]))
    models = [dict(m) for m in search["found"]] + _baseline_models(base)
    retrain = stage("retrain", lambda: retraining.stage_retrain(ctx, [dict(m) for m in models],
                                                              workers))
    for m in models:
        m["checkpoint"] = retrain["checkpoints"][m["name"]]
    bleu = stage("bleu", lambda: retraining.stage_bleu(ctx, models, workers))
    lat = stage("latency", lambda: stages.stage_latency(ctx, models))

    def finish() -> dict[str, Any]:
        return {"results": report.write(_results(ctx, models, bleu, lat, done), out)}

    stage("report", finish)
    res = _results(ctx, models, bleu, lat, done)
    report.write(res, out)  # stage times including the report's own
    say(report.markdown(res))
    for warning in prediction_warnings(res["models"]):
        say(warning)
    over = [m["name"] for m in res["models"] if m.get("within_limit") is False]
    if over:
        say(f"warning: {', '.join(over)} measured above its latency limit (the predictor's error "
            "or measurement noise; the search kept it on the prediction)")
    say(f"results: {out / 'results.json'}, {out / 'results.md'}, "
        f"{out / 'bleu_vs_latency.png'}; commands: {out / 'commands.sh'}")
    return res


PREDICTION_TOLERANCE = 0.10


def prediction_warnings(models: list[dict[str, Any]],
                        tolerance: float = PREDICTION_TOLERANCE) -> list[str]:
    """A warning for each model whose measured latency is off its prediction by more than
    ``tolerance`` (the search ranked them by the prediction)."""
    out = []
    for m in models:
        pred, meas = m.get("predicted_latency_ms"), m.get("measured_latency_ms")
        if pred and meas and abs(meas / pred - 1) > tolerance:
            out.append(f"warning: {m['name']}: measured {meas:.2f} ms, predicted {pred:.2f} ms "
                       f"({meas / pred:.2f}x): the predictor is off by more than "
                       f"{tolerance:.0%} on this machine now (another load, or a dataset "
                       "measured under other conditions); the search ranked by the prediction")
    return out


def _results(ctx: Context, models: list[dict[str, Any]], bleu: dict[str, Any],
             lat: dict[str, Any], done: dict[str, Any]) -> dict[str, Any]:
    import torch

    from hat.latency.measure.machine import cpu_model
    from hat.pipeline import report
    from hat.profile import count_params
    from hat.space import read_subtransformer_yaml
    from hat.threads import available_cores

    rows = []
    for m in models:
        cfg = read_subtransformer_yaml(m["yaml"])
        score = bleu["scores"][m["name"]]
        rows.append({**m, "bleu": score["bleu"], "bleu_signature": score.get("signature"),
                     **{f"bleu_{k}": v["bleu"] for k, v in score.get("splits", {}).items()},
                     "params_m": count_params(cfg, qkv_dim=_qkv(ctx)) / 1e6,
                     **lat["latency"][m["name"]]})
    machine = (torch.cuda.get_device_name(0) if ctx.preset.device == "cuda"
               else f"{cpu_model()}, {available_cores()} cores")
    meta = {"task": ctx.task.name, "preset": ctx.preset.name, "device": ctx.preset.device,
            "gpus": ctx.gpus, "machine": machine,
            "supertransformer_updates": done["supertransformer"]["outputs"].get("updates"),
            "torch": torch.__version__, "date": datetime.date.today().isoformat(),
            "latency_protocol": lat["protocol"], "seed": ctx.seed,
            "settings": ctx.preset.settings(ctx.task.pipe.built_in_run)}
    from hat.pipeline.retraining import compare

    by_name = {m["name"]: m for m in models}
    return report.results(rows, {k: v["seconds"] for k, v in done.items()}, meta,
                          lambda a, b, split: compare(ctx.out, ctx.task, by_name[a], by_name[b],
                                                      split))


def _qkv(ctx: Context) -> int:
    from hat.yamlio import load_yaml

    return int(load_yaml(ctx.super_yaml).get("qkv-dim", 512))


def _mmss(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 60}:{s % 60:02d}"


__all__ = ["PRESETS", "STAGES", "Preset", "run_pipeline"]
