"""The pipeline on other corpora (``--task``), several GPUs and ``--stop-after``, without
running the long stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hat.errors import HatConfigError
from hat.pipeline import run_pipeline
from hat.pipeline.context import Context
from hat.pipeline.presets import preset
from hat.pipeline.retraining import RETRAINED, retrain_recipe
from hat.pipeline.tasks import TASKS, pipeline_task, prepared
from hat.yamlio import load_yaml
from tests.conftest import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _ctx(tmp_path: Path, task: str, name: str, gpus: int = 1) -> Context:
    return Context(out=tmp_path, preset=preset(name), say=lambda m: None, task=TASKS[task],
                   gpus=gpus)


def test_every_task_names_configs_that_exist() -> None:
    for t in TASKS.values():
        for rel in (t.pipe.super_config, t.pipe.latency_config, t.pipe.predictor_config,
                    t.pipe.evo_config, t.pipe.retrain_config):
            assert t.config(rel).is_file(), (t.name, rel)


def test_debian_recipe_takes_the_preset_and_the_task(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "debian.en-de", "debian", gpus=2)
    keys = load_yaml(retrain_recipe(ctx))
    p = preset("debian")
    assert keys["data"] == str(ROOT / "data/debian.en-de/data-bin")  # absolute: runs anywhere
    assert keys["target-lang"] == "de"
    assert keys["max-update"] == p.retrain_updates
    assert keys["max-tokens"] == p.max_tokens and keys["fp16"] is True
    assert keys["warmup-updates"] == p.warmup_updates
    assert "cpu" not in keys and keys["no-epoch-checkpoints"] is True
    assert ctx.latency_csv.name == "debende_gpu_all.csv"
    assert ctx.gpu_env(0) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert ctx.gpu_env(3) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert ctx.latency_gpu == 1


def test_one_gpu_or_cpu_sets_no_device(tmp_path: Path) -> None:
    assert _ctx(tmp_path, "debian.en-de", "debian").gpu_env(1) == {}
    ctx = _ctx(tmp_path, "toy", "default", gpus=2)
    assert ctx.gpu_env(1) == {}
    keys = load_yaml(retrain_recipe(ctx))
    assert keys["cpu"] is True and "fp16" not in keys
    assert Path(keys["data"]).resolve() == (tmp_path / "data" / "data-bin").resolve()


def test_prepared_needs_dictionaries_and_every_split(tmp_path: Path) -> None:
    assert not prepared(tmp_path)
    (tmp_path / "dict.en.txt").write_text("a 1\n")
    for split in ("train", "valid"):
        (tmp_path / f"{split}.en-de.en.bin").write_bytes(b"")
    assert not prepared(tmp_path)
    (tmp_path / "test.en-de.en.bin").write_bytes(b"")
    assert prepared(tmp_path)
    # the debian tasks' search ranks on valid_unseen: a data-bin from before it is prepared again
    from hat.pipeline.stages import needed_splits

    for task in ("debian.en-de", "debian.en-fr"):
        needed = needed_splits(_ctx(tmp_path, task, "debian"))
        assert needed == ("train", "valid", "test", "test_unseen", "valid_unseen")
    assert needed_splits(_ctx(tmp_path, "toy", "tiny")) == ("train", "valid", "test")
    (tmp_path / "test_unseen.en-de.en.bin").write_bytes(b"")
    assert not prepared(tmp_path, needed)
    (tmp_path / "valid_unseen.en-de.en.bin").write_bytes(b"")
    assert prepared(tmp_path, needed)


def test_bad_task_stage_and_gpus_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HatConfigError, match="--task 'wmt'"):
        pipeline_task("wmt")
    with pytest.raises(HatConfigError, match="--stop-after 'nope'"):
        run_pipeline(tmp_path, "tiny", stop_after="nope")
    with pytest.raises(HatConfigError, match="--gpus 0"):
        run_pipeline(tmp_path, "tiny", gpus=0)
    # on a CPU, two "GPUs" would measure latency on the cores the training uses
    with pytest.raises(HatConfigError, match="--gpus 2: the 'tiny' preset runs on the CPU"):
        run_pipeline(tmp_path / "cpu", "tiny", gpus=2)
    assert not (tmp_path / "cpu").exists()


@pytest.mark.slow
def test_stop_after_ends_early_and_records_the_task(tmp_path: Path) -> None:
    said: list[str] = []
    assert run_pipeline(tmp_path, "tiny", stop_after="corpus", say=said.append) is None
    state = json.loads((tmp_path / "pipeline.json").read_text())
    assert list(state["stages"]) == ["corpus"] and state["settings"]["task"] == "toy"
    assert any("stopped after stage 'corpus'" in m for m in said)
    # the same run with another task is refused (its settings differ)
    with pytest.raises(HatConfigError, match="task"):
        run_pipeline(tmp_path, "tiny", task="debian.en-de", stop_after="corpus")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without GPU")
def test_debian_preset_without_a_gpu_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(HatConfigError, match="--task debian.en-de: torch sees no CUDA device.*"
                                             "--device cpu"):
        run_pipeline(tmp_path, task="debian.en-de")


def test_run_records_are_portable_and_configs_relocate(tmp_path: Path) -> None:
    from hat.pipeline.rundir import local, portable, relocate

    run = tmp_path / "run"
    outputs = {"checkpoint": f"{run}/checkpoints/x.pt", "n": 3, "other": f"{run}2/y",
               "found": [{"yaml": f"{run}/search/a.yml"}], "data": "/elsewhere/data-bin"}
    rec = portable(outputs, run)
    assert rec["checkpoint"] == "$RUN/checkpoints/x.pt" and rec["other"] == f"{run}2/y"
    assert rec["found"][0]["yaml"] == "$RUN/search/a.yml" and rec["data"] == "/elsewhere/data-bin"
    moved = tmp_path / "moved"
    assert local(rec, moved)["checkpoint"] == f"{moved}/checkpoints/x.pt"
    assert local(rec, run) == outputs
    (moved / "configs").mkdir(parents=True)
    cfg = moved / "configs" / "supertransformer.yml"
    cfg.write_text(f"data: {run}/data/data-bin\nsave-dir: '{run}'\nkeep: {run}2/z\n")
    assert relocate(moved, str(run)) == [cfg]
    assert cfg.read_text() == (f"data: {moved}/data/data-bin\nsave-dir: '{moved}'\n"
                               f"keep: {run}2/z\n")


def test_predicted_and_measured_latency_that_disagree_are_warned_about() -> None:
    from hat.pipeline import prediction_warnings

    models = [{"name": "hat@6.1ms", "predicted_latency_ms": 5.88, "measured_latency_ms": 3.50},
              {"name": "baseline", "predicted_latency_ms": 6.0, "measured_latency_ms": 6.3},
              {"name": "unmeasured", "predicted_latency_ms": 6.0}]
    (w,) = prediction_warnings(models)
    assert w.startswith("warning: hat@6.1ms: measured 3.50 ms, predicted 5.88 ms (0.60x)")


def test_heartbeat_says_where_each_stage_is(tmp_path: Path) -> None:
    from hat.pipeline.runner import progress

    log = tmp_path / "x.log"
    log.write_text("2026 | INFO | train_inner | epoch 001:  3 / 16 loss=8.2, nll_loss=7.8, "
                   "num_updates=40, lr=0.001\n2026 | INFO | fairseq.data | Start iterating\n")
    assert progress(log) == "update 40, loss 8.2"
    log.write_text('{"epoch": 2, "loss": "7.95", "num_updates": "120"}\n')
    assert progress(log) == "update 120, loss 7.95"
    log.write_text("| iteration 3/15: best 5.1\n| iteration 4/15: best 5.0\n")
    assert progress(log) == "iteration 4/15"
    log.write_text("rows:  45%|####      | 54/120 [00:12<00:15,  4.3row/s]\r"
                   "rows:  46%|####      | 55/120 [00:12<00:15,  4.3row/s]")
    assert progress(log) == "55/120"
    log.write_text("something else\n")
    assert progress(log) == "something else"


def test_done_at_once_scores_a_model_while_another_is_scored(tmp_path: Path) -> None:
    """The retrain stage's callbacks (a model's BLEU) overlap with done_at_once: the first
    job's callback waits for the second job's, which one at a time never lets start."""
    import sys
    import threading

    from hat.pipeline.runner import run_parallel

    ctx = Context(out=tmp_path, preset=None, say=lambda m: None)  # type: ignore[arg-type]
    jobs = [(f"j{i}", [sys.executable, "-c", f"import time; time.sleep({i})"],
             tmp_path / f"j{i}.log") for i in range(2)]  # j0 ends first
    second = threading.Event()
    met: list[bool] = []

    def on_done(label: str) -> None:
        if label == "j0":
            met.append(second.wait(timeout=float(waiting)))
        else:
            second.set()

    waiting = 30
    run_parallel(ctx, jobs, 2, {}, on_done=on_done, done_at_once=True)
    assert met == [True]
    second.clear()
    waiting = 3  # one at a time: j1's callback waits for j0's to return
    run_parallel(ctx, jobs, 2, {}, on_done=on_done)
    assert met == [True, False]


def test_committed_pipeline_plots_are_made_again_from_their_results(tmp_path: Path) -> None:
    from hat.pipeline.report import main

    out = tmp_path / "p.png"
    assert main([str(ROOT / "bench/results/pipeline_cpu_epyc.json"), str(out)]) == 0
    assert out.stat().st_size > 10_000


def test_results_report_every_test_split_and_dominance_on_each() -> None:
    """A task with a further test split (Debian: packages never seen in training): its BLEU is
    in every row, each baseline is judged dominated or not on each split, and the Markdown table
    has a column for it."""
    from hat.pipeline import report

    def row(name, lim, ms, bleu, unseen):
        return {"name": name, "latency_limit_ms": lim, "predicted_latency_ms": ms,
                "measured_latency_ms": ms, "bleu": bleu, "bleu_test_unseen": unseen,
                "params_m": 1.0, "yaml": f"{name}.yml"}

    models = [row("hat@2ms", 2.0, 1.9, 30.0, 20.0), row("hat@3ms", 3.0, 2.9, 31.0, 27.9),
              row("transformer", None, 4.2, 30.1, 28.0)]
    res = report.results(models, {"bleu": 1.0}, {"preset": "p", "device": "cpu",
                                                 "machine": "m", "date": "d",
                                                 "latency_protocol": "x"})
    base = res["models"][2]
    # test: hat@2ms (30.0 >= 30.1 - 0.2, 1.9 <= 0.7 x 4.2); unseen: only hat@3ms is within
    # 0.2 BLEU of 28.0, and 2.9 ms is within 0.7 x 4.2 = 2.94 ms
    assert base["dominated_by"] == "hat@2ms"
    assert base["dominated_by_test_unseen"] == "hat@3ms"
    assert res["models"][0]["bleu_test_unseen"] == 20.0
    md = report.markdown(res)
    assert "| BLEU test_unseen |" in md and "(test_unseen: dominated by hat@3ms)" in md
    calls = []

    def compare(a, b, split):
        calls.append((a, b, split))
        return {"difference": 0.5, "ci95": [-0.1, 1.1], "samples": 10, "sentences": 3}

    meta = {"preset": "p", "device": "cpu", "machine": "m", "date": "d", "latency_protocol": "x"}
    vs = report.results(models, {}, meta, compare)["models"][2]["vs_found"]
    assert calls == [("hat@2ms", "transformer", "test"), ("hat@3ms", "transformer", "test_unseen")]
    assert vs["test"]["found"] == "hat@2ms" and vs["test_unseen"]["ci95"] == [-0.1, 1.1]
    assert "- transformer, test: hat@2ms +0.50 (-0.10 to +1.10, 10 resamplings of 3 sentences)" \
        in report.markdown(report.results(models, {}, meta, compare))
    models[1]["bleu_test_unseen"] = 27.0
    res = report.results(models, {}, {"preset": "p", "device": "cpu", "machine": "m",
                                      "date": "d", "latency_protocol": "x"})
    assert res["models"][2]["dominated_by_test_unseen"] is None
    calls.clear()  # not dominated: judged against the best found model at <= 0.7x its latency
    report.results(models, {}, meta, compare)
    assert calls[1] == ("hat@3ms", "transformer", "test_unseen")
    for m in models:  # untrained models (the tiny preset): 0 BLEU everywhere, nothing judged
        m["bleu"] = m["bleu_test_unseen"] = 0.0
    res = report.results(models, {}, {"preset": "p", "device": "cpu", "machine": "m",
                                      "date": "d", "latency_protocol": "x"})
    assert res["models"][2]["dominated_by"] is None
    import struct
    import tempfile

    def png_width(path: Path) -> int:
        return struct.unpack(">I", path.read_bytes()[16:20])[0]

    with tempfile.TemporaryDirectory() as tmp:  # one panel per split: twice as wide
        one = report.plot({**res, "models": [{k: v for k, v in r.items()
                                              if k != "bleu_test_unseen"}
                                             for r in res["models"]]}, Path(tmp) / "1.png")
        two = report.plot(res, Path(tmp) / "2.png")
        assert png_width(two) > 1.8 * png_width(one)
    assert TASKS["debian.en-de"].pipe.extra_test_splits == ("test_unseen",)
    assert TASKS["toy"].pipe.extra_test_splits == ()


def test_compare_reads_the_hypotheses_each_model_was_scored_on(tmp_path: Path) -> None:
    """The pipeline's paired bootstrap scores the 1-best files the BLEU stage wrote, under the
    retraining that wrote each checkpoint; a run copy without them compares nothing."""
    from hat.metrics import tokenized_bleu
    from hat.pipeline.retraining import compare

    refs = [f"w{i} w{i + 1} w{i + 2} w{i + 3}" for i in range(40)]
    hyps = {"a": refs[:30] + ["x y z q"] * 10, "b": ["x y z q"] * 20 + refs[20:]}
    models = {}
    for name, lines in hyps.items():
        d = tmp_path / "bleu" / name
        d.mkdir(parents=True)
        (d / "test.hyp").write_text("\n".join(lines) + "\n")
        (d / "test.ref").write_text("\n".join(refs) + "\n")
        models[name] = {"name": f"{name}@1ms", "checkpoint": str(tmp_path / "retrain" / name
                                                                / "checkpoint_last.pt")}
    got = compare(tmp_path, TASKS["toy"], models["a"], models["b"], "test")
    assert got["difference"] == pytest.approx(tokenized_bleu(hyps["a"], refs).bleu
                                              - tokenized_bleu(hyps["b"], refs).bleu, abs=1e-3)
    assert got["sentences"] == 40
    assert compare(tmp_path, TASKS["toy"], models["a"], models["b"], "test_unseen") is None
    # python -m hat.pipeline.report RESULTS --compare: the same, into the run's results
    from hat.pipeline import report

    rows = [{"name": n, "latency_limit_ms": lim, "predicted_latency_ms": ms,
             "measured_latency_ms": ms, "bleu": 10.0, "params_m": 1.0, "yaml": f"{n}.yml",
             "checkpoint": f"/elsewhere/retrain/{d}/checkpoint_last.pt"}
            for n, d, lim, ms in (("a@1ms", "a", 1.0, 1.0), ("b", "b", None, 2.0))]
    (tmp_path / "results.json").write_text(json.dumps(report.results(rows, {"bleu": 1.0}, {
        "task": "toy", "preset": "p", "device": "cpu", "machine": "m", "date": "d",
        "latency_protocol": "x"})))
    assert report.main([str(tmp_path / "results.json"), "--compare"]) == 0
    vs = json.loads((tmp_path / "results.json").read_text())["models"][1]["vs_found"]
    assert vs == {"test": {"found": "a@1ms", **got}}
    assert "- b, test: a@1ms" in (tmp_path / "results.md").read_text()


def test_bleu_reference_follows_the_subset() -> None:
    """hat.bleu --task debian.en-de --subset test_unseen reads that split's reference, not the
    test split's (a length mismatch before); --ref still wins."""
    from hat.bleu import build_parser, settings_for

    def ref(*argv):
        return settings_for(build_parser().parse_args(["--checkpoint", "c.pt", *argv])).ref

    assert ref("--task", "debian.en-de") == "data/debian.en-de/tokenized/test.detok.de"
    assert ref("--task", "debian.en-de", "--subset", "test_unseen") == \
        "data/debian.en-de/tokenized/test_unseen.detok.de"
    assert ref("--task", "debian.en-de", "--subset", "test_unseen", "--ref", "r.txt") == "r.txt"


def test_the_stage_order_is_one_list_every_preset_times() -> None:
    import dataclasses

    from hat.pipeline.presets import PRESETS, STAGES

    for p in PRESETS.values():
        assert tuple(k for k, _ in p.plan_s) == STAGES
    with pytest.raises(ValueError, match="plan_s must time corpus"):
        dataclasses.replace(PRESETS["tiny"], plan_s=(("corpus", 1.0),))


def test_how_many_retrain_at_once_is_the_presets_and_not_a_resume_setting() -> None:
    assert preset("debian").jobs == 5 and preset("default").jobs == 2
    assert "jobs" not in preset("debian").settings(False)


def test_baselines_retrain_beside_the_supertransformer_on_one_gpu(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """With ``baselines_beside_super`` (the debian preset) one GPU measures latency first, picks
    the baselines and retrains them while the SuperTransformer trains; the retrain stage then
    trains only the found models (the baselines left a ``retrained.json``)."""
    import dataclasses
    import threading
    import time

    from hat.pipeline import presets, retraining, stages
    from hat.space import SearchSpace, write_subtransformer_yaml

    assert preset("debian").order(1)[:5] == ("corpus", "latency_dataset", "latency_predictor",
                                             "baseline", "supertransformer")
    assert preset("debian").order(2) == presets.STAGES == preset("tiny").order(1)
    monkeypatch.setitem(presets.PRESETS, "tiny",
                        dataclasses.replace(presets.PRESETS["tiny"], baselines_beside_super=True))
    from hat.config import parse_fairseq_args

    tiny = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
    space = SearchSpace.from_args(parse_fairseq_args([f"--configs={tiny}"]))
    yamls = {}
    for name, cfg in (("b1", space.smallest()), ("b2", space.largest()),
                      ("f1", space.sample(__import__("random").Random(3)))):
        write_subtransformer_yaml(cfg, tmp_path / f"{name}.yml")
        yamls[name] = str(tmp_path / f"{name}.yml")
    calls: list[str] = []
    spans: dict[str, tuple[float, float]] = {}

    def stub(name: str, out: dict):
        def fn(ctx, *a, **k):
            calls.append(name)
            if name == "supertransformer":
                t0 = time.monotonic()
                time.sleep(0.5)
                spans[name] = (t0, time.monotonic())
            return out
        return fn

    monkeypatch.setattr(stages, "stage_corpus", stub("corpus", {}))
    monkeypatch.setattr(stages, "stage_latency_dataset", stub("latency_dataset", {}))
    monkeypatch.setattr(stages, "stage_latency_predictor",
                        stub("latency_predictor", {"lat_norm": 1.0}))
    monkeypatch.setattr(stages, "stage_baseline", stub("baseline", {"baselines": [
        {"name": n, "yaml": yamls[n], "predicted_latency_ms": ms}
        for n, ms in (("b1", 2.0), ("b2", 6.0))]}))
    monkeypatch.setattr(stages, "stage_supertransformer", stub("supertransformer", {}))
    monkeypatch.setattr(stages, "stage_search", stub("search", {"found": [
        {"name": "f1", "yaml": yamls["f1"], "latency_limit_ms": 4.0}]}))

    def fake_training(ctx, jobs, workers, env, on_done=None, done_at_once=False):
        if on_done is None:  # a model's scoring
            calls.extend(label for label, *_ in jobs)
            return
        t0 = time.monotonic()
        key = "train " + ",".join(sorted(j[0] for j in jobs))
        calls.append(key)
        for label, argv, *_ in jobs:
            save = Path(argv[argv.index("--save-dir") + 1])
            save.mkdir(parents=True, exist_ok=True)
            (save / "checkpoint_last.pt").write_bytes(b"")
            on_done(label)
        spans[key] = (t0, time.monotonic())
        assert threading.current_thread() is not threading.main_thread() or "f1" in key

    monkeypatch.setattr(retraining, "run_parallel", fake_training)
    said: list[str] = []
    assert run_pipeline(tmp_path / "run", "tiny", stop_after="retrain", say=said.append) is None
    # each model is scored as soon as its training ends (the baselines before the search)
    base_calls = ["train retrain b1,retrain b2", "BLEU b1", "BLEU b2"]
    assert calls == ["corpus", "latency_dataset", "latency_predictor", "baseline",
                     "supertransformer", *base_calls, "search",
                     "train retrain f1", "BLEU f1"] or calls == [
        "corpus", "latency_dataset", "latency_predictor", "baseline",
        *base_calls, "supertransformer", "search", "train retrain f1", "BLEU f1"]
    base, sup = spans["train retrain b1,retrain b2"], spans["supertransformer"]
    assert base[0] < sup[1]  # the baselines trained while the SuperTransformer did
    for n in ("b1", "b2", "f1"):
        assert (tmp_path / "run" / "retrain" / n / RETRAINED).is_file()
    assert any("retrain b1: trained earlier" in m for m in said)
    assert any(m.startswith("[5/10] supertransformer") for m in said)
    # run again: each finished stage says so once, under its own number
    said.clear()
    assert run_pipeline(tmp_path / "run", "tiny", stop_after="retrain", say=said.append) is None
    order = preset("tiny").order(1)[:7]
    assert [m.split(":")[0] for m in said if "done earlier" in m] == [
        f"[{i}/10] {name}" for i, name in enumerate(order, 1)]


def test_a_missing_bleu_reference_is_caught_before_any_training(tmp_path: Path,
                                                                monkeypatch) -> None:
    """A real corpus's data-bin copied without its untokenized references would fail only in
    the BLEU stage, after the trainings: the corpus stage checks every split's reference."""
    import dataclasses

    from hat import bleu
    from hat.pipeline.stages import check_bleu_references

    ctx = _ctx(tmp_path, "debian.en-de", "debian")
    ref = tmp_path / "tokenized" / "test.detok.de"
    monkeypatch.setattr(bleu, "task_settings",
                        lambda name: dataclasses.replace(bleu.GENERIC, ref=str(ref)))
    ref.parent.mkdir()
    ref.write_text("a\n")
    with pytest.raises(HatConfigError, match=r"test_unseen\.detok\.de: the untokenized "
                                             r"reference of split 'test_unseen' is missing"):
        check_bleu_references(ctx)
    (ref.parent / "test_unseen.detok.de").write_text("b\n")
    check_bleu_references(ctx)


def test_a_metric_not_installed_is_caught_before_any_training(tmp_path: Path,
                                                             monkeypatch) -> None:
    """An environment installed with --no-deps (a GPU image) may lack sacremoses: the corpus
    stage says which module is missing instead of the BLEU stage failing after the trainings."""
    import importlib.util

    from hat.pipeline import stages

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sacremoses" else real(name, *a))
    ctx = _ctx(tmp_path, "debian.en-de", "debian")
    with pytest.raises(HatConfigError, match=r"--task debian\.en-de: BLEU \(sacre\) needs the "
                                             r"Python module\(s\) sacremoses.*pip install "
                                             r"sacremoses"):
        stages.stage_corpus(ctx)
    stages.check_metric_installed("normal", "toy")  # tokenized BLEU needs only sacrebleu


def test_baselines_first_run_for_real_before_the_supertransformer(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """The real stages in the one-GPU order (baselines picked before the SuperTransformer has
    trained): the baseline stage reads the space from the SuperTransformer's config, which must
    exist by then (a stubbed order once hid that it did not)."""
    import dataclasses

    from hat.pipeline import presets

    monkeypatch.setitem(presets.PRESETS, "tiny",
                        dataclasses.replace(presets.PRESETS["tiny"], baselines_beside_super=True))
    said: list[str] = []
    assert run_pipeline(tmp_path, "tiny", stop_after="baseline", say=said.append) is None
    state = json.loads((tmp_path / "pipeline.json").read_text())
    assert list(state["stages"]) == ["corpus", "latency_dataset", "latency_predictor",
                                     "baseline"]
    assert not (tmp_path / "checkpoints" / "supertransformer" / "checkpoint_last.pt").exists()
    for b in state["stages"]["baseline"]["outputs"]["baselines"]:
        assert Path(b["yaml"].replace("$RUN", str(tmp_path))).is_file()


def test_latency_limits_follow_the_preset(tmp_path: Path, monkeypatch) -> None:
    """The default presets: quantile limits below the fastest baseline, its own latency and 0.7x
    each other baseline's; the debian preset: 0.7x every baseline's (one found model per HAT
    claim); --limits-below 2: two more below them (5 winners for HAT's fidelity check)."""
    import numpy as np

    from hat.latency import csvio
    from hat.pipeline.stages import latency_limits

    lat = np.linspace(1.0, 6.0, 101)
    monkeypatch.setattr(csvio, "load_latency_csv", lambda path: (None, lat))
    tiny = _ctx(tmp_path, "toy", "tiny")
    assert latency_limits(tiny, 4.09, [4.94, 5.69]) == [1.8, 3.0, 3.45, 3.98, 4.09]
    assert latency_limits(tiny, 4.081, []) == [1.8, 3.0, 4.09]  # its own latency: rounded up
    debian = _ctx(tmp_path, "debian.en-de", "debian")
    # 0.7x: rounded down, so that a model found under the limit is never slower than 0.7x
    # (0.7 x 4.9165 = 3.4416: a limit of 3.45 let the search return a 3.4445 ms model)
    assert latency_limits(debian, 4.09, [4.94, 5.69]) == [2.86, 3.45, 3.98]
    assert latency_limits(debian, 4.0871, [4.9165, 5.6703]) == [2.86, 3.44, 3.96]
    assert all(x <= 0.7 * b for x, b in zip(latency_limits(debian, 4.0871, [4.9165, 5.6703]),
                                            (4.0871, 4.9165, 5.6703)))
    # a ratio limit that equals another (within 2 %) is not searched twice
    assert latency_limits(debian, 4.09, [4.1, 5.69]) == [2.86, 3.98]
    # --limits-below 2: two more, evenly spaced from the fastest measured (1.0 ms) to 2.86
    from dataclasses import replace

    debian.preset = replace(debian.preset, limits_below=2)
    assert latency_limits(debian, 4.09, [4.94, 5.69]) == [1.62, 2.24, 2.86, 3.45, 3.98]
    # a limit the space cannot meet (below its fastest SubTransformer, predicted 3.0 ms) is
    # raised to just above that (3.06), so the search runs; the limits below it are spread
    # from it, not from the fastest measured
    assert latency_limits(debian, 4.09, [4.94, 5.69], floor_ms=3.0) == [3.06, 3.45, 3.98]
    assert latency_limits(debian, 4.09, [4.94, 5.69], floor_ms=2.0) == [2.28, 2.57, 2.86, 3.45,
                                                                         3.98]


def test_a_run_copy_without_checkpoints_keeps_what_it_scored(tmp_path: Path, monkeypatch) -> None:
    """A model scored after its latest retraining is neither retrained nor rescored, even with
    its checkpoint gone (a run folder copied to a fresh machine without checkpoints); a score
    older than the retraining, or a missing one, is redone."""
    import os
    import random

    from hat.config import parse_fairseq_args
    from hat.pipeline import retraining
    from hat.space import SearchSpace, write_subtransformer_yaml

    tiny = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
    space = SearchSpace.from_args(parse_fairseq_args([f"--configs={tiny}"]))

    ctx = Context(out=tmp_path, preset=preset("tiny"), say=lambda m: None, task=TASKS["toy"])
    models = []
    for i, (name, cfg) in enumerate((("kept", space.smallest()), ("stale", space.largest()),
                                     ("new", space.sample(random.Random(1))))):
        write_subtransformer_yaml(cfg, tmp_path / f"{name}.yml")
        models.append({"name": name, "yaml": str(tmp_path / f"{name}.yml")})
        save = tmp_path / "retrain" / name
        if name == "new":
            continue
        save.mkdir(parents=True)
        (save / RETRAINED).write_text("{}")
        log = tmp_path / "logs" / f"bleu_{name}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text(f'progress\n{{"bleu": {10 + i}.5, "signature": "sig"}}\n')
        if name == "stale":  # scored before its latest retraining
            t = (save / RETRAINED).stat().st_mtime
            os.utime(log, (t - 60, t - 60))
    ran: list[str] = []

    def fake_training(ctx, jobs, workers, env, on_done=None, done_at_once=False):
        for label, _argv, log, *_ in jobs:
            ran.append(label)
            if on_done is not None:
                on_done(label)
            else:  # a model's scoring
                log.write_text('{"bleu": 20.0, "signature": "sig"}\n')

    monkeypatch.setattr(retraining, "run_parallel", fake_training)
    retraining.stage_retrain(ctx, models, workers=2)
    assert ran == ["retrain stale", "BLEU stale", "retrain new", "BLEU new"]
    ran.clear()

    def fake_scoring(ctx, jobs, workers, env, on_done=None, done_at_once=False):
        ran.extend(label for label, *_ in jobs)

    monkeypatch.setattr(retraining, "run_parallel", fake_scoring)
    scores = retraining.stage_bleu(ctx, models, workers=2)["scores"]
    assert ran == []  # everything was scored in the retrain stage or before
    assert {n: s["bleu"] for n, s in scores.items()} == {"kept": 10.5, "stale": 20.0, "new": 20.0}
    (tmp_path / "logs" / "bleu_new.log").write_text("killed while scoring\n")
    with pytest.raises(RuntimeError, match="BLEU of new on test: no score"):
        retraining.stage_bleu(ctx, models, workers=2)
    assert ran == ["BLEU new"]


def test_winners_fidelity_ranks_the_found_models_once_each() -> None:
    """HAT's fidelity form over the found models: inherited loss vs -BLEU per split; two
    limits that found one SubTransformer (one checkpoint) count once; too few: None."""
    from hat.pipeline.report import winners_fidelity

    def row(ck: str, loss: float, bleu: float, unseen: float) -> dict:
        return {"checkpoint": ck, "inherited_valid_loss": loss, "bleu": bleu,
                "bleu_test_unseen": unseen}

    found = [row("a", 3.6, 40.0, 30.0), row("b", 3.5, 41.0, 29.0), row("b", 3.5, 41.0, 29.0),
             row("c", 3.4, 42.0, 31.0)]
    got = winners_fidelity(found, ["bleu_test_unseen"])
    assert got["winners"] == 3 and got["spearman_winners"] == 1.0
    assert got["spearman_winners_test_unseen"] == 0.5
    assert winners_fidelity(found[:2], [])["spearman_winners"] is None


def test_limits_below_must_not_be_negative(tmp_path: Path) -> None:
    from hat.pipeline import run_pipeline

    with pytest.raises(HatConfigError, match="--limits-below -1: must be 0 or more"):
        run_pipeline(tmp_path / "run", "tiny", limits_below=-1)
