"""The one-command pipeline end to end (tiny preset): killed between stages, started again, it
finishes without redoing finished stages, and every artifact exists and is well-formed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hat.space import read_subtransformer_yaml
from tests.conftest import GUARD_S, ROOT

STAGES = ["corpus", "supertransformer", "latency_dataset", "latency_predictor", "baseline",
          "search", "retrain", "bleu", "latency", "report"]

pytestmark = pytest.mark.slow  # every test here runs the pipeline or its fixture run


def start(out: Path, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hat.pipeline", "--out", str(out), "--tiny"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def finished_stages(out: Path) -> list[str]:
    try:
        return list(json.loads((out / "pipeline.json").read_text())["stages"])
    except (OSError, ValueError):
        return []


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    """Started with a relative --out from one directory, killed after the latency predictor,
    the folder moved, and continued from another directory (the repository's)."""
    base = tmp_path_factory.mktemp("pipeline")
    first = base / "quickstart"
    proc = start(Path("quickstart"), cwd=base)
    deadline = time.monotonic() + GUARD_S
    while "latency_predictor" not in finished_stages(first):  # kill it right after that stage
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "pipeline too slow"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = finished_stages(first)
    out = base / "moved"
    first.rename(out)
    mtime = (out / "checkpoints/supertransformer/checkpoint_last.pt").stat().st_mtime
    second = subprocess.run([sys.executable, "-m", "hat.pipeline", "--out", str(out), "--tiny"],
                            cwd=ROOT, capture_output=True, text=True, timeout=GUARD_S)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    for stage in before:
        assert f"{stage}: done earlier" in second.stdout, stage
    assert f"the run folder moved from {first}" in second.stdout
    assert (out / "checkpoints/supertransformer/checkpoint_last.pt").stat().st_mtime == mtime
    return out, second.stdout


@pytest.mark.slow
def test_a_moved_run_folder_names_no_old_path(run) -> None:
    out, _ = run
    record = (out / "pipeline.json").read_text()
    assert "$RUN/checkpoints/supertransformer" in record
    old = str(out.with_name("quickstart"))
    for f in [out / "pipeline.json", *out.glob("configs/*.yml"), *out.glob("search/*.yml")]:
        assert old + "/" not in f.read_text(), f


def test_every_stage_finished_and_timed(run) -> None:
    out, _ = run
    res = json.loads((out / "results.json").read_text())
    assert list(res["stages"]) == STAGES
    assert all(s >= 0 for s in res["stages"].values())
    assert (out / "bleu_vs_latency.png").stat().st_size > 1000
    assert "| model |" in (out / "results.md").read_text()


def test_models_found_within_their_limits_and_baselines(run) -> None:
    out, said = run
    res = json.loads((out / "results.json").read_text())
    models = res["models"]
    found = [m for m in models if m["latency_limit_ms"] is not None]
    base = sorted((m for m in models if m["latency_limit_ms"] is None),
                  key=lambda m: m["predicted_latency_ms"])
    assert 2 <= len(found) <= 4 and [m["name"] for m in base] == ["transformer-1",
                                                                  "transformer-2"]
    assert base[0]["predicted_latency_ms"] < base[1]["predicted_latency_ms"]  # a curve
    for m in base:  # the dominance test of HAT's claim, answered per baseline
        d = m["dominated_by"]
        assert d is None or any(f["name"] == d and f["measured_latency_ms"] <= 0.7 *
                                m["measured_latency_ms"] and f["bleu"] >= m["bleu"] - 0.2
                                for f in found)
    assert "0.7x" in res["dominance_rule"]
    # a limit at 0.7x the slower baseline's latency, the lower of its prediction and what the
    # baseline stage measured (rounded down to three digits)
    from hat.pipeline.stages import _three_digits

    picked = json.loads((out / "pipeline.json").read_text())["stages"]["baseline"]
    lower = {b["name"]: min(b["measured_latency_ms"], b["predicted_latency_ms"])
             for b in picked["outputs"]["baselines"]}
    limits = {f["latency_limit_ms"] for f in found}
    # (a limit below the space's fastest SubTransformer is searched just above it instead)
    raised = re.search(r"below the fastest SubTransformer's predicted latency \([0-9.]+ ms\): "
                       r"searched at ([0-9.]+)", said)

    def searched(limit: float) -> bool:
        return limit in limits or bool(raised and limit < float(raised[1]) and
                                       float(raised[1]) in limits)

    assert searched(_three_digits(0.7 * lower["transformer-2"], up=False)), (limits, said)
    # HAT's fidelity check over the found models (a correlation, or None for a constant side)
    wf = res["winners_fidelity"]
    assert wf["winners"] == len({f["checkpoint"] for f in found})
    assert wf["spearman_winners"] is None or -1 <= wf["spearman_winners"] <= 1
    for m in models:
        assert set(m) >= {"name", "latency_limit_ms", "predicted_latency_ms",
                          "measured_latency_ms", "bleu", "params_m", "yaml"}
        assert 0 <= m["bleu"] <= 100 and m["params_m"] > 0 and m["measured_latency_ms"] > 0
        read_subtransformer_yaml(m["yaml"])  # a SubTransformer YAML train.py takes
        assert Path(m["checkpoint"]).is_file()
        assert_scored_on_best_validation(out, m)
    for m in found:
        assert m["predicted_latency_ms"] <= m["latency_limit_ms"] + 1e-9
    # the fastest baseline's latency is one of the limits (the comparison at similar latency;
    # rounded up)
    assert searched(_three_digits(lower["transformer-1"], up=True)), (limits, said)
    cfg = read_subtransformer_yaml(base[0]["yaml"])
    assert cfg.encoder_layer_num == cfg.decoder_layer_num
    assert len(set(cfg.encoder_ffn_embed_dim + cfg.decoder_ffn_embed_dim)) == 1


def assert_scored_on_best_validation(out: Path, m: dict) -> None:
    """A model is scored on its retraining's best validation (checkpoint_best.pt), saved at
    every validation: its validation loss is the lowest the training log shows."""
    import re

    import torch

    ckpt = Path(m["checkpoint"])
    assert ckpt.name == "checkpoint_best.pt", ckpt
    log = (out / "logs" / f"retrain_{ckpt.parent.name}.log").read_text()
    losses = [float(x) for x in re.findall(r"\| valid on 'valid' subset \| loss ([0-9.]+)", log)]
    assert len(losses) >= 2, log[-2000:]
    best = torch.load(ckpt, map_location="cpu", weights_only=False)["extra_state"]["val_loss"]
    last = torch.load(ckpt.with_name("checkpoint_last.pt"), map_location="cpu",
                      weights_only=False)["extra_state"]["val_loss"]
    assert abs(best - min(losses)) < 6e-4 and best <= last + 1e-9, (best, last, losses)


def test_each_stage_left_a_file_its_cli_takes(run) -> None:
    out, _ = run
    commands = (out / "commands.sh").read_text()
    for cli in ("make_toy_corpus.py", "train.py --configs=", "latency_dataset.py --configs=",
                "latency_predictor.py --configs=", "evo_search.py --configs=", "-m hat.bleu"):
        assert cli in commands, cli
    for cfg in ("supertransformer", "latency_dataset", "latency_predictor", "evo_search",
                "retrain"):
        assert (out / "configs" / f"{cfg}.yml").is_file()


@pytest.mark.slow
def test_resume_refuses_other_settings(run) -> None:
    out, _ = run
    r = subprocess.run([sys.executable, "-m", "hat.pipeline", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=GUARD_S)
    assert r.returncode == 2 and "cannot resume" in r.stderr


@pytest.mark.slow
def test_fidelity_trains_from_scratch_until_converged(run, tmp_path: Path) -> None:
    """bench.studies.fidelity --converged-bits: each from-scratch training stops by the convergence
    rule (a lax bar here, so it stops at its first chance) and the rows say so."""
    out, _ = run
    res = subprocess.run(
        [sys.executable, "-m", "bench.studies.fidelity", "--run", str(out), "--samples", "3",
         "--max-update", "400", "--converged-bits", "50", "--jobs", "2",
         "--out", str(tmp_path / "fid.json")], cwd=ROOT, capture_output=True, text=True,
        timeout=GUARD_S)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    a = json.loads((tmp_path / "fid.json").read_text())["a_ranking"]
    assert a["converged_bits"] == 50 and a["scratch_converged"] == 3
    assert all(r["converged"] and r["scratch_updates"] < 400 for r in a["samples"])
    assert a["short_of_budget"] == []
    w = json.loads((tmp_path / "fid.json").read_text())["winners"]
    assert w["n"] == len(w["rows"]) >= 1 and all(r["inherited_valid_loss"] for r in w["rows"])
    assert (w["spearman_winners"] is None) == (w["n"] < 3)


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_a_killed_pipeline_ends_its_stages_and_a_second_one_is_refused(tmp_path: Path) -> None:
    """The user's case: the pipeline's main process is killed during a training; starting it
    again must not run a second training into the same save directory."""
    out = tmp_path / "run"
    proc = start(out)
    try:
        deadline, train = time.monotonic() + GUARD_S, []
        while not train:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
            train = [k for k in _children(proc.pid)
                     if b"train.py" in Path(f"/proc/{k}/cmdline").read_bytes()]
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "hat.pipeline", "--out", str(out),
                                 "--tiny"], cwd=ROOT, capture_output=True, text=True,
                                timeout=GUARD_S)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"another process (pid {proc.pid}) is running the pipeline into this folder" \
            in second.stderr
        os.kill(proc.pid, signal.SIGKILL)  # the main process alone, not its process group
        proc.wait()
        deadline = time.monotonic() + GUARD_S
        while _alive(train[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(train[0]), "the SuperTransformer training outlived the pipeline"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.mark.slow
def test_bleu_stage_scores_the_tasks_further_test_splits(run, tmp_path: Path) -> None:
    """A task with a further test split (Debian's unseen packages; here the toy's valid split
    stands in): the BLEU stage scores every model on it too, each in its own log."""
    import dataclasses

    from hat.pipeline.context import Context
    from hat.pipeline.presets import preset
    from hat.pipeline.retraining import stage_bleu
    from hat.pipeline.tasks import TASKS

    out, _ = run
    (tmp_path / "data").symlink_to(out / "data")  # the toy corpus lives in its run folder
    toy = TASKS["toy"]
    pipe = dataclasses.replace(toy.pipe, extra_test_splits=("valid",))
    task = dataclasses.replace(toy, pipe=pipe)
    ctx = Context(out=tmp_path, preset=preset("tiny"), say=lambda m: None, task=task)
    m = json.loads((out / "results.json").read_text())["models"][0]
    got = stage_bleu(ctx, [m], workers=2)["scores"][m["name"]]
    assert got["bleu"] == pytest.approx(m["bleu"])  # the test split, as the pipeline scored it
    assert set(got["splits"]) == {"valid"} and 0 <= got["splits"]["valid"]["bleu"] <= 100
    assert (tmp_path / "logs" / f"bleu_{m['name']}_valid.log").is_file()
    assert (tmp_path / "bleu" / m["name"] / "valid.hyp").is_file()


def test_progress_of_a_run_reads_its_stages_curves_and_retrainings(run, tmp_path: Path) -> None:
    """bench.studies.pipeline_progress, for runs that stop before their report, on a finished
    one: every stage's time, the SuperTransformer's validation curve, each retraining."""
    from bench.studies.pipeline_progress import main

    out, _ = run
    res = tmp_path / "progress.json"
    assert main([str(out), "--out", str(res)]) == 0
    r = json.loads(res.read_text())["runs"][0]
    assert r["finished_stages"] == STAGES and r["run"] == out.name
    assert all(r["stage_seconds"][s] is not None for s in STAGES)
    sup = r["supertransformer"]
    assert sup["valid"] and sup["last_update"] == sup["valid"][-1]["num_updates"]
    # found models that share an architecture retrain once, under the first one's name
    found = {f["name"] for f in r["found"]}
    baselines = {b["name"] for b in r["baselines"]}
    assert baselines <= set(r["retrain"]) <= found | baselines
    assert set(r["retrain"]) - baselines, "no found model retrained"
    assert all(x["finished"] and x["valid"] and x["train_seconds"] for x in r["retrain"].values())
    assert res.with_suffix(".png").stat().st_size > 10_000


def test_a_copy_without_checkpoints_finishes_from_its_scores(run, tmp_path: Path) -> None:
    """A run folder copied without its checkpoints (what comes back from a lost GPU machine),
    continued from the retrain stage: every model was scored as soon as it was retrained, so
    nothing is trained or scored again and the report is the same."""
    import shutil

    out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoint*.pt", "data"))
    (copy / "data").symlink_to(out / "data")  # the toy corpus lives in its run folder
    state = json.loads((copy / "pipeline.json").read_text())
    for stage in ("retrain", "bleu", "latency", "report"):
        del state["stages"][stage]
    (copy / "pipeline.json").write_text(json.dumps(state))
    bleu_logs = {p.name: p.stat().st_mtime for p in (copy / "logs").glob("bleu_*.log")}
    again = subprocess.run([sys.executable, "-m", "hat.pipeline", "--out", str(copy), "--tiny"],
                           cwd=ROOT, capture_output=True, text=True, timeout=GUARD_S)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    before = json.loads((out / "results.json").read_text())["models"]
    after = json.loads((copy / "results.json").read_text())["models"]
    retrained = {Path(m["checkpoint"]).parent.name for m in before}
    for name in retrained:
        assert f"retrain {name}: trained and scored earlier" in again.stdout, name
    assert ": done in" not in again.stdout  # no training, no scoring
    assert {p.name: p.stat().st_mtime for p in (copy / "logs").glob("bleu_*.log")} == bleu_logs
    assert [(m["name"], m["bleu"]) for m in after] == [(m["name"], m["bleu"]) for m in before]


def test_winners_fidelity_retrains_winners_of_further_limits_from_a_copy(run, tmp_path: Path
                                                                          ) -> None:
    """bench.studies.winners_fidelity on a checkpoint-free copy of a run: the winners of further
    limits (the search's best under each) are retrained with the run's recipe and scored, every
    winner is ranked; run again, it trains nothing; a recipe that changed is refused."""
    import shutil

    from bench.studies.winners_fidelity import load_candidates, winner_under
    from hat.yamlio import load_yaml

    out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoint*.pt", "data"))
    (copy / "data").symlink_to(out / "data")
    cmd = [sys.executable, "-m", "bench.studies.winners_fidelity", "--run", str(copy),
           "--winners", "5", "--apart", "0", "--jobs", "2", "--out", str(tmp_path / "w.json")]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=GUARD_S)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    res = json.loads((tmp_path / "w.json").read_text())
    extra = [r for r in res["rows"] if r["from"] == "front"]
    assert res["n"] == len(res["rows"]) == 5 and len(extra) >= 1
    assert all(r["bleu"] is not None and r["retrained_valid_loss"] for r in res["rows"])
    cands = load_candidates(next((copy / "search").glob("*.state.json")))
    for r in extra:
        cfg = read_subtransformer_yaml(copy / "winners" / f"{r['name']}.yml")
        assert winner_under(cands, r["latency_limit_ms"]).key == cfg.key()
        assert (copy / "logs" / f"bleu_{r['name']}.log").is_file()
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=GUARD_S)
    assert again.returncode == 0 and ": done in" not in again.stdout, again.stdout[-2000:]
    assert json.loads((tmp_path / "w.json").read_text())["rows"] == res["rows"]
    recipe = copy / "configs" / "retrain.yml"
    keys = load_yaml(recipe)
    recipe.write_text(recipe.read_text().replace(f"lr: {keys['lr']}", "lr: 0.123"))
    changed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=GUARD_S)
    assert changed.returncode != 0 and "differs from the run's in lr" in changed.stderr
