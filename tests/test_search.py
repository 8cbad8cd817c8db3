"""The evolutionary search: the algorithm on a synthetic problem, and evo_search.py on a tiny
SuperTransformer trained briefly on the toy corpus."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hat.config import parse_fairseq_args
from hat.data.toy_corpus import make_toy_corpus
from hat.errors import HatConfigError
from hat.evaluate import ValidLoss, load_for_eval
from hat.search.cli import main
from hat.search.evolution import (
    Evolution,
    EvoSettings,
    InfeasibleError,
    Limits,
    SearchState,
)
from hat.search.latency import LatencyModel, fit_scale
from hat.search.options import Sources, add_search_args, limits_from_args, settings_from_args
from hat.search.report import pareto_front
from hat.space import SearchSpace, read_subtransformer_yaml
from tests.conftest import GUARD_S, ROOT

TINY = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
TOY_EVO = ROOT / "configs" / "toy" / "evo_search" / "toy_cpu_epyc.yml"
PREDICTOR = ROOT / "latency_dataset" / "predictors" / "toy_cpu_epyc.pt"
SMALL = ["--evo-iter", "3", "--population-size", "8", "--parent-size", "3",
         "--mutation-size", "3", "--crossover-size", "3", "--seed", "3"]


# ----------------------------------------------------------------------------- algorithm
@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace(**{k: v for k, v in {
        "encoder_embed_dim": 128, "decoder_embed_dim": 128, "encoder_ffn_embed_dim": 256,
        "decoder_ffn_embed_dim": 256, "encoder_layers": 3, "decoder_layers": 3,
        "encoder_attention_heads": 4, "decoder_attention_heads": 4, "qkv_dim": 128,
        "encoder_embed_choice": (128, 96), "decoder_embed_choice": (128, 96),
        "encoder_layer_num_choice": (3,), "decoder_layer_num_choice": (3, 2, 1),
        "encoder_ffn_embed_dim_choice": (256, 128), "decoder_ffn_embed_dim_choice": (256, 128),
        "encoder_self_attention_heads_choice": (4, 2),
        "decoder_self_attention_heads_choice": (4, 2),
        "decoder_ende_attention_heads_choice": (4, 2),
    }.items()})


def synthetic(space: SearchSpace, calls: list | None = None):
    """A fitness that rewards size (like a SuperTransformer's loss) and a latency model."""
    def fitness(cfg):
        if calls is not None:
            calls.append(cfg.key())
        f = SearchSpace.features(cfg)
        return 10.0 - f[0] / 64 - f[2] / 256 - f[5] - f[6] / 256 - 0.1 * f[9] + 0.01 * f[3]

    def latency(cfgs):
        return np.array([SearchSpace.features(c)[5] * 2 + SearchSpace.features(c)[6] / 128
                         + SearchSpace.features(c)[0] / 128 for c in cfgs])

    return fitness, latency, (lambda cfg: SearchSpace.features(cfg)[0] / 100)


def timeless(st: SearchState) -> dict:
    """The state without wall-clock seconds."""
    d = st.to_json()
    d["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in d["history"]]
    return d


SET = EvoSettings(evo_iter=5, population_size=20, parent_size=5, mutation_size=8,
                  crossover_size=8, seed=7)


def test_same_seed_same_search_and_winner_meets_limit(space: SearchSpace) -> None:
    fit, lat, par = synthetic(space)
    runs = [Evolution(space, SET, [Limits(6.0)], fit, lat, par).run() for _ in range(2)]
    assert timeless(runs[0]) == timeless(runs[1])
    other = Evolution(space, dataclasses.replace(SET, seed=8), [Limits(6.0)], fit, lat,
                      par).run()
    assert timeless(other) != timeless(runs[0])
    evo = Evolution(space, SET, [Limits(6.0)], fit, lat, par)
    w = evo.winners(evo.run())[0]
    assert w.latency_ms <= 6.0
    assert all(c.latency_ms <= 6.0 for c in runs[0].scores.values())
    best_seen = min(h["best"][0]["loss"] for h in runs[0].history)
    assert w.loss == best_seen  # parents are kept: the best never gets worse


def test_cache_scores_each_subtransformer_once_with_the_same_result(space: SearchSpace) -> None:
    calls_on, calls_off = [], []
    fit_on, lat, par = synthetic(space, calls_on)
    fit_off, _, _ = synthetic(space, calls_off)
    on = Evolution(space, SET, [Limits(6.0)], fit_on, lat, par).run()
    off = Evolution(space, SET, [Limits(6.0)], fit_off, lat, par, cache=False).run()
    assert on.history[-1]["best"] == off.history[-1]["best"]
    assert len(calls_on) == len(set(calls_on)) == on.evaluations
    generation = SET.parent_size + SET.mutation_size + SET.crossover_size
    assert off.evaluations == SET.population_size + (SET.evo_iter - 1) * generation
    assert off.evaluations == len(calls_off)
    assert on.evaluations + on.cache_hits == off.evaluations
    assert on.cache_hits >= (SET.evo_iter - 1) * SET.parent_size  # parents never re-scored


def test_resume_after_an_interruption_gives_the_same_result(space: SearchSpace) -> None:
    fit, lat, par = synthetic(space)
    full = Evolution(space, SET, [Limits(6.0)], fit, lat, par).run()
    saved = {}

    class Kill(Exception):
        pass

    def on_state(st: SearchState, boundary: bool) -> None:
        saved["state"] = json.loads(json.dumps(st.to_json()))
        if boundary and st.iteration == 2:
            raise Kill

    with pytest.raises(Kill):
        Evolution(space, SET, [Limits(6.0)], fit, lat, par, on_state=on_state).run()
    resumed = Evolution(space, SET, [Limits(6.0)], fit, lat, par).run(
        SearchState.from_json(saved["state"]))
    assert timeless(resumed)["history"] == timeless(full)["history"]
    assert timeless(resumed)["populations"] == timeless(full)["populations"]


def test_infeasible_limits_fail_fast_and_sampling_is_bounded(space: SearchSpace) -> None:
    fit, lat, par = synthetic(space)
    lowest = min(lat([space.smallest(a) for a in (-1, 1, 2)]))
    evo = Evolution(space, SET, [Limits(lowest - 0.5)], fit, lat, par)
    with pytest.raises(InfeasibleError, match=f"lowest predicted latency found in the search "
                                              f"space is {lowest:.4g} ms"):
        evo.check_feasible()
    with pytest.raises(InfeasibleError, match="params-constraint"):
        Evolution(space, SET, [Limits(10.0, params_m=0.5)], fit, lat, par).check_feasible()
    # feasible (one SubTransformer) but never drawn: a bounded error, not an endless loop
    only = space.smallest(-1).key()

    def one_fast(cfgs):
        return np.array([1.0 if c.key() == only else 100.0 for c in cfgs])

    tight = Evolution(space, dataclasses.replace(SET, max_tries=2), [Limits(2.0)], fit,
                      one_fast, par)
    tight.check_feasible()
    with pytest.raises(InfeasibleError, match="no SubTransformer within the limit"):
        tight.run()


def test_pareto_mode_front_and_each_limit(space: SearchSpace) -> None:
    fit, lat, par = synthetic(space)
    limits = [Limits(5.0), Limits(6.0), Limits(8.0)]
    pareto_evals = separate_evals = 0
    pareto_loss, separate_loss = np.zeros(3), np.zeros(3)
    for seed in (1, 2, 3):
        settings = dataclasses.replace(SET, seed=seed)
        evo = Evolution(space, settings, limits, fit, lat, par)
        st = evo.run()
        winners = evo.winners(st)
        pareto_evals += st.evaluations
        pareto_loss += [w.loss for w in winners]
        for i, (lim, w) in enumerate(zip(limits, winners)):
            assert w.latency_ms <= lim.latency_ms
            single = Evolution(space, settings, [lim], fit, lat, par)
            single_state = single.run()
            separate_evals += single_state.evaluations
            separate_loss[i] += single.winners(single_state)[0].loss
        # looser limits share the tighter ones' parents: never a worse winner
        assert [w.loss for w in winners] == sorted([w.loss for w in winners], reverse=True)
        front = pareto_front(list(st.scores.values()))
        for a in front:
            for b in st.scores.values():
                assert not (b.loss < a.loss and b.latency_ms < a.latency_ms)
    assert pareto_evals < separate_evals
    # this fitness moves in steps of ~0.02-1; bench/studies/search_pareto.py compares on the toy
    # task
    assert np.all(pareto_loss / 3 <= separate_loss / 3 + 0.05)


def test_settings_are_checked(space: SearchSpace) -> None:
    for bad, msg in (({"parent_size": 30}, "parent-size 30 is larger than population-size"),
                     ({"mutation_prob": 1.5}, "mutation-prob must be within"),
                     ({"evo_iter": 0}, "evo-iter must be > 0"),
                     ({"population_size": -1}, "population-size must be > 0"),
                     ({"mutation_size": -2}, "mutation-size must be >= 0")):
        with pytest.raises(HatConfigError, match=msg):
            dataclasses.replace(SET, **bad).check()


def test_fit_scale_recovers_a_factor() -> None:
    p = np.array([100.0, 150.0, 200.0, 400.0])
    fit = fit_scale(p, p * 1.3)
    assert fit["scale"] == pytest.approx(1.3)
    assert fit["after"]["within10_pct"] == 100.0 and fit["before"]["within10_pct"] == 0.0
    assert fit["spearman"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- on the toy task
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Toy corpus and a tiny SuperTransformer trained for 40 updates."""
    base = tmp_path_factory.mktemp("search")
    data = make_toy_corpus(base / "toy", n_train=1000, n_valid=80, n_test=20)
    save = base / "ck"
    cmd = [sys.executable, "train.py", str(data), f"--configs={TINY}", "--save-dir", str(save),
           "--max-update", "40", "--max-tokens", "1024", "--warmup-updates", "10", "--lr",
           "0.003", "--num-workers", "0", "--log-interval", "10"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"data": data, "ckpt": save / "checkpoint_last.pt", "base": base}


def search_argv(t: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [str(t["data"]), f"--configs={TINY}", f"--evo-configs={TOY_EVO}",
            "--restore-file", str(t["ckpt"]), "--write-config-path", str(out), *SMALL, *extra]


def run_cli(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "evo_search.py", *argv], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_evo_search_cli_is_deterministic_and_writes_its_outputs(trained, tmp_path) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"r{i}" / "toy@5.3ms.yml"
        res = run_cli(search_argv(trained, out))
        assert res.returncode == 0, res.stderr[-3000:]
        outs.append(out)
    a, b = outs
    assert a.read_bytes() == b.read_bytes()
    ev = lambda p: p.with_name(p.stem + ".evaluations.csv").read_bytes()  # noqa: E731
    assert ev(a) == ev(b)
    summary = json.loads(a.with_name(a.stem + ".summary.json").read_text())
    w = summary["winners"][0]
    assert w["predicted_latency_ms"] <= 5.3
    # the committed toy predictor is HAT's protocol: said in the log, the summary, the YAML
    assert summary["lat_deployment"] == "hat" and "(lat-deployment hat)" in a.read_text()
    assert "latencies for lat-deployment hat" in res.stderr
    cfg = read_subtransformer_yaml(a)
    pred = LatencyModel.__new__(LatencyModel)
    from hat.latency.predict.predictor import LatencyPredictor

    pred.predictor, pred.scale = LatencyPredictor.load(PREDICTOR), 1.0
    assert pred([cfg])[0] == pytest.approx(w["predicted_latency_ms"], rel=1e-6)
    assert a.with_name(a.stem + ".png").stat().st_size > 1000
    assert "iteration 3/3" in res.stderr and "candidates/s" in res.stderr
    for noise in ("tensorboardX", "DEBUG", "Warning", "INFO"):  # only lines a user can act on
        assert noise not in res.stderr, noise
    # the winner's loss is what ValidLoss computes for it
    task, model = load_for_eval(str(trained["ckpt"]), str(trained["data"]))
    assert ValidLoss(task, model)(cfg) == pytest.approx(w["valid_loss"], rel=1e-6)
    # --valid-subset ranks on another split (the debian tasks' valid_unseen): its loss there
    other = tmp_path / "test" / "toy@5.3ms.yml"
    res = run_cli(search_argv(trained, other, "--valid-subset", "test"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "of 'test'" in res.stderr
    w2 = json.loads(other.with_name(other.stem + ".summary.json").read_text())["winners"][0]
    cfg2 = read_subtransformer_yaml(other)
    assert ValidLoss(task, model, subset="test")(cfg2) == pytest.approx(w2["valid_loss"],
                                                                        rel=1e-6)
    assert w2["valid_loss"] != w["valid_loss"]
    # the YAML is HAT's: train.py --profile accepts it with the retraining recipe
    prof = subprocess.run([sys.executable, "train.py", f"--configs={a}", "--sub-configs="
                           f"{ROOT / 'configs/toy/subtransformer/common.yml'}", "--profile",
                           "--json"], cwd=ROOT, capture_output=True, text=True)
    assert prof.returncode == 0, prof.stderr[-2000:]
    assert json.loads(prof.stdout.strip().splitlines()[-1])["params_m"] == pytest.approx(
        w["params_m"], abs=1e-6)


@pytest.mark.slow
def test_pareto_mode_cli(trained, tmp_path) -> None:
    out = tmp_path / "toy.yml"
    res = run_cli(search_argv(trained, out, "--latency-constraint", "4.0,5.3", "7"))
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "toy.summary.json").read_text())
    assert [w["latency_limit_ms"] for w in summary["winners"]] == [4.0, 5.3, 7.0]
    for w in summary["winners"]:
        assert w["predicted_latency_ms"] <= w["latency_limit_ms"]
        assert Path(w["yaml"]).name == f"toy@{w['latency_limit_ms']:g}ms.yml"
        assert Path(w["yaml"]).is_file()
    rows = (tmp_path / "toy.front.csv").read_text().splitlines()[1:]
    pts = [(float(r.split(",")[0]), float(r.split(",")[1])) for r in rows]
    assert pts == sorted(pts) and [p[1] for p in pts] == sorted([p[1] for p in pts], reverse=True)


@pytest.mark.slow
def test_kill_and_resume_gives_the_identical_result(trained, tmp_path) -> None:
    extra = ["--evo-iter", "6", "--population-size", "12"]
    ref = tmp_path / "ref" / "toy.yml"
    assert run_cli(search_argv(trained, ref, *extra)).returncode == 0
    out = tmp_path / "killed" / "toy.yml"
    state = out.with_name("toy.state.json")
    proc = subprocess.Popen([sys.executable, "evo_search.py", *search_argv(trained, out, *extra)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + GUARD_S
    while time.time() < deadline and proc.poll() is None:
        if state.is_file():
            try:
                if json.loads(state.read_text())["state"]["iteration"] >= 2:
                    break
            except ValueError:
                pass
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    res = run_cli(search_argv(trained, out, *extra))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stderr
    assert out.read_bytes() == ref.read_bytes()
    other = run_cli(search_argv(trained, out, *extra, "--mutation-prob", "0.5"))
    assert other.returncode == 2 and "cannot resume" in other.stderr
    assert "mutation_prob" in other.stderr and "Traceback" not in other.stderr


@pytest.mark.slow
def test_resume_refuses_inputs_replaced_at_the_same_path(trained, tmp_path) -> None:
    """The user's case: the restore-file (or the predictor) is replaced between a run and its
    resume; mixing two models in one evaluations CSV must be refused, naming the file."""
    import shutil

    ckpt, pred = tmp_path / "super.pt", tmp_path / "pred.pt"
    shutil.copy(trained["ckpt"], ckpt)
    shutil.copy(PREDICTOR, pred)
    shutil.copy(f"{PREDICTOR}.json", f"{pred}.json")
    out = tmp_path / "toy.yml"
    argv = [*search_argv(trained, out, "--evo-iter", "1"), "--restore-file", str(ckpt),
            "--ckpt-path", str(pred)]
    assert run_cli(argv).returncode == 0
    assert out.with_name("toy.state.json").is_file()
    state = torch.load(ckpt, weights_only=False)
    state["model"]["encoder.layers.0.fc1.bias"] += 1.0  # another model at the same path
    torch.save(state, ckpt)
    res = run_cli(argv)
    assert res.returncode == 2 and "cannot resume" in res.stderr, res.stderr[-2000:]
    assert "restore_file_content" in res.stderr and "Traceback" not in res.stderr
    shutil.copy(trained["ckpt"], ckpt)
    weights = torch.load(pred, weights_only=True)
    key = next(iter(weights))
    weights[key] = weights[key] * 1.01
    torch.save(weights, pred)
    res = run_cli(argv)
    assert res.returncode == 2 and "predictor_content" in res.stderr, res.stderr[-2000:]


@pytest.mark.slow
def test_two_searches_into_one_write_config_path_do_not_both_run(trained, tmp_path) -> None:
    """The user's case: two searches started together with the same --write-config-path."""
    from hat.runstate import exclusive

    out = tmp_path / "toy.yml"
    argv = search_argv(trained, out, "--evo-iter", "200")  # still running when the second asks
    first = subprocess.Popen([sys.executable, "evo_search.py", *argv], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / ".toy.state.json.lock"
    deadline = time.time() + GUARD_S
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    try:
        second = run_cli(argv)
        assert first.poll() is None, "the first search ended before the second asked"
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert f"{tmp_path / 'toy.state.json'}: another process (pid {first.pid}) is searching " \
           "into this write-config-path" in second.stderr
    with exclusive(tmp_path / "toy.state.json", "x"):  # a killed search leaves no lock held
        pass
    assert not lock.exists()


@pytest.mark.slow
def test_calibration_and_measured_winners(trained, tmp_path) -> None:
    out = tmp_path / "toy.yml"
    # a limit every SubTransformer meets: the calibration scale is this machine's speed today
    # (2-3x on a busy one), which a fixed limit near the predictor's range would make infeasible
    res = run_cli(search_argv(trained, out, "--calibrate-latency", "3", "--measure-latency",
                              "cpu", "--evo-iter", "1", "--latency-constraint", "10000"))
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((tmp_path / "toy.summary.json").read_text())
    cal = s["calibration"]
    assert cal["n"] == 3 and s["latency_scale"] == cal["scale"] > 0
    assert "thread" in cal["protocol"]  # the toy predictor's protocol: thread CPU time
    w = s["winners"][0]
    assert w["measured_latency_ms"] > 0 and "thread" in w["measured_with"]
    assert "predicted" in res.stderr and "measured" in res.stderr


def bad(trained, tmp_path, *extra: str) -> str:
    """stderr of a failing search (in process: the checks run before any model is built)."""
    out = tmp_path / "bad.yml"
    import io
    from contextlib import redirect_stderr

    buf = io.StringIO()
    with redirect_stderr(buf):
        rc = main(search_argv(trained, out, *extra))
    assert rc == 2, buf.getvalue()
    assert not out.exists()
    return buf.getvalue()


@pytest.mark.slow
def test_bad_inputs_give_one_clear_error(trained, tmp_path) -> None:
    garbage = tmp_path / "garbage.pt"
    torch.save({"first_layer.weight": torch.zeros(3)}, garbage)
    cases = [
        (["--ckpt-path", str(tmp_path / "none.pt")], "latency predictor not found"),
        (["--ckpt-path", str(garbage)], "garbage.pt"),
        (["--lat-norm", "9"], "stored lat_norm 8.0"),
        (["--feature-norm", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
         "stored feature_norm"),
        (["--encoder-embed-dim", "256"], "encoder-embed-dim = 128 but"),
        (["--encoder-ffn-embed-dim-choice", "256", "192"], "was not trained with"),
        # the user's case: the WMT CPU predictor, its norms copied, on the toy space
        (["--ckpt-path", str(ROOT / "latency_dataset/predictors/wmt14ende_cpu_epyc.pt"),
          "--feature-norm", "640", "6", "2048", "6", "640", "6", "2048", "6", "6", "2",
          "--lat-norm", "300"], "trained on another search space: its dataset sampled "
         "encoder-embed-choice [640, 512], this search has [128, 96]"),
        # the predictor's dataset sampled FFN 128-256: 64 would be extrapolated
        (["--encoder-ffn-embed-dim-choice", "256", "64"],
         "trained on another search space: its dataset sampled encoder-ffn-embed-dim-choice "
         "[256, 128], this search has [256, 64] ([64] outside it)"),
        (["--parent-size", "20"], "parent-size 20 is larger than population-size 8"),
        (["--mutation-prob", "1.5"], "mutation-prob must be within"),
        (["--evo-iter", "0"], "evo-iter must be > 0"),
        (["--latency-constraint", "-1"], "latency-constraint must be > 0"),
        (["--latency-constraint", "fast"], "is not a number"),
        (["--latency-constraint", "0.5"], "lowest predicted latency found in the search space"),
        (["--restore-file", str(tmp_path / "none.pt")], "SuperTransformer checkpoint not found"),
    ]
    for extra, msg in cases:
        err = bad(trained, tmp_path, *extra)
        assert msg in err, (extra, err)
        assert "Traceback" not in err
    # the infeasible limit is found before data or model are loaded
    err = bad(trained, tmp_path, "--latency-constraint", "0.5", "--valid-subset", "nosuchsplit")
    assert "lowest predicted latency" in err


def test_hat_evo_configs_parse() -> None:
    files = sorted(ROOT.glob("configs/*/evo_search/*.yml"))
    assert len(files) >= 11  # HAT's 8, this project's CPU and H100, the toy task (+ other tasks)
    names = {f.name for f in files}
    for n in ("wmt14ende_raspberrypi.yml", "wmt14ende_xeon.yml", "wmt14ende_titanxp.yml",
              "wmt14enfr_raspberrypi.yml", "wmt14enfr_xeon.yml", "wmt14enfr_titanxp.yml",
              "wmt19ende_titanxp.yml", "iwslt14deen_titanxp.yml"):
        assert n in names
    for f in files:
        task = f.parts[-3]
        space = next((ROOT / "configs" / task / "supertransformer").glob("*.yml"))
        origins: dict[str, str] = {}
        args = parse_fairseq_args([f"--configs={space}", f"--evo-configs={f}"],
                                  add_extra=add_search_args, origins=origins)
        s = settings_from_args(args, Sources(origins))
        limits = limits_from_args(args, Sources(origins))
        assert limits and args.ckpt_path and args.write_config_path and args.restore_file
        if task != "toy":
            assert (s.evo_iter, s.population_size, s.parent_size, s.mutation_size,
                    s.crossover_size, s.mutation_prob) == (30, 125, 25, 50, 50, 0.3)
        assert origins["--latency-constraint"] == str(f)


@pytest.mark.slow
def test_fast_fitness_equals_fairseq_criterion(trained) -> None:
    """The fused fp32 loss is fairseq's label-smoothed criterion; a bf16 model ranks alike."""
    import random

    task, model = load_for_eval(str(trained["ckpt"]), str(trained["data"]))
    cfgs = [model.space.sample(random.Random(i)) for i in range(6)]
    fused = ValidLoss(task, model, max_tokens=512)
    plain = ValidLoss(task, model, max_tokens=4096, fused=False)
    a, b = [fused(c) for c in cfgs], [plain(c) for c in cfgs]
    assert len(fused.batches) > len(plain.batches)  # batching does not change the loss
    assert np.allclose(a, b, rtol=1e-6, atol=0)
    low = ValidLoss(task, model, precision="bf16")
    c = [low(x) for x in cfgs]
    assert np.max(np.abs(np.array(c) - np.array(a))) < 0.02
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(HatConfigError, match="precision must be one of"):
        ValidLoss(task, model, precision="int8")


@pytest.mark.slow
def test_importing_hat_leaves_logging_alone() -> None:
    """fairseq's speech modules call logging.basicConfig(level=DEBUG) at import; hat undoes it."""
    code = ("import logging, sys; import hat; r = logging.getLogger(); "
            "sys.exit(0 if (r.level, r.handlers) == (logging.WARNING, []) else 1)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0 and "tensorboardX" not in res.stderr, res.stderr[-2000:]


@pytest.mark.slow
def test_a_new_limit_starts_a_new_search_in_its_own_files(trained, tmp_path) -> None:
    """The user's case (README, "take over at any stage"): the pipeline's evo config names a
    write-config-path that already holds a search; another limit on the command line must not
    fail to resume it but search anew, into files named by the limit."""
    out = tmp_path / "toy.yml"
    assert run_cli(search_argv(trained, out, "--evo-iter", "1")).returncode == 0
    before = out.read_bytes()
    res = run_cli(search_argv(trained, out, "--evo-iter", "1", "--latency-constraint", "20"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"this one writes {tmp_path / 'toy@20ms.yml'}" in res.stderr
    assert (tmp_path / "toy@20ms.yml").is_file() and out.read_bytes() == before
    s = json.loads((tmp_path / "toy@20ms.summary.json").read_text())
    assert s["winners"][0]["latency_limit_ms"] == 20.0
