"""The pipeline's retraining and BLEU stages. Each model is scored as soon as its retraining
ends, so a run that stops later (a killed job, a lost machine) keeps the scores it reached; a
resumed run (also a checkpoint-free copy of the run folder, see ``bench/debian_gpu.sh
pipeline-resume``) neither retrains nor rescores a model whose scores are complete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hat.atomic import atomic_write_json
from hat.pipeline.context import Context
from hat.pipeline.runner import (
    Job,
    absolute,
    python,
    run_parallel,
    script,
    write_config,
)
from hat.space import SubConfig, read_subtransformer_yaml
from hat.yamlio import load_yaml

RETRAINED = "retrained.json"  # in a retraining's save dir once its train.py ended well


def scored_checkpoint(save: Path) -> Path:
    """The checkpoint of a retraining that is scored: its best validation's
    (``checkpoint_best.pt``), else (no validation ran) its last."""
    best = save / "checkpoint_best.pt"
    return best if best.is_file() else save / "checkpoint_last.pt"


def retrain_recipe(ctx: Context) -> Path:
    """``DIR/configs/retrain.yml``: the task's retraining recipe with the preset's budget (every
    model gets the same; bench/studies/fidelity.py trains its random SubTransformers with it
    too)."""
    src = ctx.task.config(ctx.task.pipe.retrain_config)
    keys = ctx.train_keys(load_yaml(src))
    # a validation and a save at each epoch's end (no mid-epoch ones: the pipeline's corpora
    # have short epochs), so that checkpoint_best.pt, the one scored, is the best validation's:
    # a retraining's last validation can lie above its best (debian.en-fr, 2026-12-04: +0.017
    # to +0.085 bits in each of the four retrainings that stopped at update 5,395). Two files
    # per model: checkpoint_last.pt (resume) and checkpoint_best.pt
    keys.update({"data": absolute(ctx.data_bin), "max-update": ctx.preset.retrain_updates,
                 "seed": ctx.seed, "save-interval": 1, "save-interval-updates": 0})
    if ctx.preset.retrain_converged_bits:
        keys["stop-converged-bits"] = ctx.preset.retrain_converged_bits
    rule = (f"until converged (< {ctx.preset.retrain_converged_bits} bits over the last 20 % "
            "of updates) or max-update" if ctx.preset.retrain_converged_bits else "the same budget")
    return write_config(ctx.path("configs", "retrain.yml"), keys,
                        f"Retraining recipe of the pipeline ({absolute(src)}; from scratch, {rule} "
                        "for every model)")


def stage_retrain(ctx: Context, models: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """Train every found SubTransformer and the baselines from scratch, the same budget each
    (spread over the GPUs when there are several), and score each one (:func:`bleu_jobs`) as
    soon as its training ends. A model is not trained again when its training already ended
    (its save dir holds ``retrained.json`` and the checkpoint: a baseline trained beside the
    SuperTransformer, or a run killed during this stage) or when it is scored on every split
    (a copy of the run folder without its checkpoints)."""
    common = retrain_recipe(ctx)
    jobs: list[Job] = []
    trained: dict[SubConfig, str] = {}
    saves: dict[str, tuple[Path, dict[str, Any]]] = {}
    for m in models:
        cfg = read_subtransformer_yaml(m["yaml"])
        if cfg in trained:  # two limits found the same SubTransformer: train it once
            m["checkpoint"] = trained[cfg]
            continue
        save = ctx.out / "retrain" / m["name"]
        m["checkpoint"] = trained[cfg] = absolute(scored_checkpoint(save))
        if (save / RETRAINED).is_file() and (save / "checkpoint_last.pt").is_file():
            ctx.say(f"  retrain {m['name']}: trained earlier")
            continue
        if all(scored(ctx, m, split) for split in splits(ctx)):
            ctx.say(f"  retrain {m['name']}: trained and scored earlier (its checkpoint is gone)")
            continue
        label = f"retrain {m['name']}"
        saves[label] = (save, dict(m))
        jobs.append((label, [
            python(), script("train.py"), f"--configs={m['yaml']}",
            f"--sub-configs={absolute(common)}", "--save-dir", absolute(save)],
            ctx.path("logs", f"retrain_{m['name']}.log"), ctx.gpu_env(len(jobs))))

    env = _one_thread_each(ctx, workers)
    with shared_gpu(ctx, min(workers, len(jobs))) as mps_env:
        def finished(label: str) -> None:  # in the model's worker, beside the others' scoring
            save, m = saves[label]
            m["checkpoint"] = absolute(scored_checkpoint(save))
            atomic_write_json(save / RETRAINED, {"checkpoint": m["checkpoint"]})
            scoring = bleu_jobs(ctx, m)  # on a GPU its splits at once (a CPU: one by one)
            run_parallel(ctx, scoring, len(scoring) if ctx.preset.device == "cuda" else 1,
                         {**env, **mps_env})

        run_parallel(ctx, jobs, workers, {**env, **mps_env}, on_done=finished,
                     done_at_once=True)
    for _save, m in saves.values():  # the checkpoint each is scored on, now that it is trained
        trained[read_subtransformer_yaml(m["yaml"])] = m["checkpoint"]
    for m in models:
        m["checkpoint"] = trained[read_subtransformer_yaml(m["yaml"])]
    return {"config": absolute(common), "checkpoints": {m["name"]: m["checkpoint"] for m in models}}


@contextmanager
def shared_gpu(ctx: Context, at_once: int) -> Iterator[dict[str, str]]:
    """The environment of trainings run ``at_once`` side by side: through a CUDA MPS daemon of
    the run's own when more than one shares a GPU (``--no-mps``: time-sliced), else nothing
    (also inside a daemon already serving the run: ``ctx.gpu_env`` then carries its clients'
    environment)."""
    if (ctx.shared_env is not None or ctx.preset.device != "cuda" or not ctx.mps
            or at_once <= max(1, ctx.gpus)):
        yield {}
        return
    from hat.mps import mps_daemon

    with mps_daemon(ctx.say) as env:
        yield env


def _one_thread_each(ctx: Context, workers: int) -> dict[str, str]:
    """The environment of CPU jobs run ``workers`` at once: one thread each."""
    return {"OMP_NUM_THREADS": "1"} if ctx.preset.device != "cuda" and workers > 1 else {}


def _scored_as(m: dict[str, Any]) -> str:
    """The name a model's scores are kept under: the retraining that wrote its checkpoint (two
    limits that found one SubTransformer share it)."""
    return Path(m["checkpoint"]).parent.name


def splits(ctx: Context) -> tuple[str, ...]:
    """The splits every model is scored on: test and the task's further test splits."""
    return ("test", *ctx.task.pipe.extra_test_splits)


def _bleu_log(name: str, split: str) -> str:
    return f"bleu_{name}.log" if split == "test" else f"bleu_{name}_{split}.log"


def _score(log: Path) -> dict[str, Any] | None:
    """The score a BLEU log ends with (``python -m hat.bleu --json``), or None."""
    if not log.is_file():
        return None
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def scored(ctx: Context, m: dict[str, Any], split: str) -> bool:
    """Whether model ``m`` holds a score on ``split`` from after its latest retraining (its
    BLEU log ends with a score and is newer than the training's ``retrained.json``)."""
    marker = Path(m["checkpoint"]).parent / RETRAINED
    log = ctx.out / "logs" / _bleu_log(_scored_as(m), split)
    return (marker.is_file() and _score(log) is not None
            and log.stat().st_mtime >= marker.stat().st_mtime)


def bleu_jobs(ctx: Context, m: dict[str, Any]) -> list[Job]:
    """Beam-search BLEU of model ``m`` on each of :func:`splits` (``python -m hat.bleu``), under
    the name of the retraining that wrote its checkpoint."""
    name = _scored_as(m)
    jobs: list[Job] = []
    for split in splits(ctx):
        argv = [python(), "-m", "hat.bleu", "--task", ctx.task.name, "--data",
                absolute(ctx.data_bin), "--checkpoint", m["checkpoint"], "--sub-config",
                m["yaml"], "--metric", ctx.task.bleu_metric, "--subset", split,
                "--out", absolute(ctx.out / "bleu" / name), "--json"]
        if ctx.preset.device != "cuda":
            argv.append("--cpu")
        jobs.append((f"BLEU {name}" + ("" if split == "test" else f" ({split})"), argv,
                     ctx.path("logs", _bleu_log(name, split)), ctx.gpu_env(len(jobs))))
    return jobs


def stage_bleu(ctx: Context, models: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """BLEU of every retrained model on every split (one score per distinct checkpoint); what
    the retrain stage scored already is read back, not scored again."""
    jobs: list[Job] = []
    seen: set[str] = set()
    for m in models:
        if m["checkpoint"] not in seen:
            seen.add(m["checkpoint"])
            jobs += [j for j, s in zip(bleu_jobs(ctx, m), splits(ctx)) if not scored(ctx, m, s)]
    run_parallel(ctx, jobs, workers, _one_thread_each(ctx, workers))
    scores = {}
    for m in models:
        got = {s: _score(ctx.out / "logs" / _bleu_log(_scored_as(m), s)) for s in splits(ctx)}
        missing = [s for s, v in got.items() if v is None]
        if missing:
            raise RuntimeError(f"BLEU of {m['name']} on {', '.join(missing)}: no score in "
                               f"{ctx.out / 'logs'} (see its BLEU log there)")
        scores[m["name"]] = {**got["test"], "splits": {k: {"bleu": v["bleu"],
                                                          "signature": v.get("signature")}
                                                      for k, v in got.items() if k != "test"}}
    return {"scores": scores}


def compare(out: Path, task: Any, a: dict[str, Any], b: dict[str, Any], split: str
            ) -> dict[str, Any] | None:
    """BLEU(a) - BLEU(b) on ``split`` with its 95% paired-bootstrap interval, from the 1-best
    hypotheses the BLEU stage wrote into run folder ``out`` for pipeline task ``task`` (None
    where a run copy lacks them)."""
    from hat.bleu import subset_reference, task_settings
    from hat.metrics import paired_bootstrap, read_lines

    s = task_settings(task.name)
    sacre = task.bleu_metric == "sacre"  # detokenized output vs the raw reference
    hyp = [out / "bleu" / _scored_as(m) / f"{split}.hyp{'.detok' if sacre else ''}"
           for m in (a, b)]
    ref = Path(subset_reference(s.ref, split)) if sacre else hyp[0].with_name(f"{split}.ref")
    if not all(p.is_file() for p in (*hyp, ref)):
        return None
    return paired_bootstrap(read_lines(hyp[0]), read_lines(hyp[1]), read_lines(ref),
                            task.bleu_metric, compound=s.compound_split,
                            lowercase=s.lowercase)
