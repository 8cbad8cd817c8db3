"""bench/speed/latency_bench.py --summary: gathers earlier measurements, invents nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, load_script


def _bench():
    return load_script("bench/speed/latency_bench.py")


def test_summary_collects_rows_per_minute_and_predictor_speed(tmp_path: Path) -> None:
    results, datasets = tmp_path / "results", tmp_path / "datasets"
    results.mkdir()
    datasets.mkdir()
    (results / "latency_bench_cpu_x.json").write_text(json.dumps(
        {"date": "d", "device": {"cpu": "X"}, "rows": 10, "rows_per_min": 12.5}))
    (results / "latency_bench_retest_only.json").write_text(json.dumps({"retest": {}}))
    (datasets / "a_all.csv.meta.json").write_text(json.dumps({
        "csv": "a_all.csv", "machine": {"gpu": "G"}, "protocol": {"iters": 5},
        "sessions": [{"rows_before": 0, "rows_after": 300, "seconds": 200.0},
                     {"rows_before": 300, "rows_after": 400, "seconds": 100.0},
                     {"rows_before": 400, "rows_after": 410}]}))  # still running: no seconds
    (results / "predictor_speed.json").write_text(json.dumps({
        "date": "d", "device": "cpu", "target_batched_ge_100k_per_s": True,
        "results": {"threads_1": {"single_query": {"queries_per_s": 5.0},
                                  "batched": {"10": {"queries_per_s": 50.0},
                                              "100": {"queries_per_s": 80.0}}}}}))
    s = _bench().summarize(results, datasets)
    assert list(s["measurement"]) == ["cpu_x"]
    assert s["measurement"]["cpu_x"]["rows_per_min"] == 12.5
    a = s["datasets"]["a_all.csv"]
    assert a["rows"] == 400 and a["seconds"] == 300.0 and a["rows_per_min"] == 80.0
    p = s["predictor"]
    assert p["single_query_per_s"] == {"threads_1": 5.0}
    assert p["batched_best_per_s"]["threads_1"] == {"queries_per_s": 80.0, "batch": 100}


def test_residual_stats_separate_spikes_from_typical_rows() -> None:
    import numpy as np

    stats = load_script("bench/studies/predictor_residuals.py").residual_stats
    true = np.full(10, 100.0)
    pred = true + np.array([1, -1, 2, -2, 1, -1, 2, -2, 1, -50.0])  # one spike of 50 ms
    s = stats(pred, true, top=1)
    assert abs(s["rmse_ms"] - np.sqrt((4 * 1 + 4 * 4 + 1 + 2500) / 10)) < 1e-9
    assert abs(s["rmse_without_top1_ms"] - np.sqrt((5 * 1 + 4 * 4) / 9)) < 1e-9
    assert s["median_abs_ms"] == 1.5 and abs(s["mean_signed_ms"] + 4.9) < 1e-9


def test_paired_bootstrap_rmse_orders_a_clearly_better_predictor() -> None:
    import numpy as np

    boot = load_script("bench/studies/predictor_residuals.py").paired_bootstrap_rmse
    rng = np.random.default_rng(0)
    true = rng.uniform(50, 150, 200)
    good, bad = true + rng.normal(0, 1, 200), true + rng.normal(0, 5, 200)
    r = boot(good, bad, true, n=500)
    assert r["rmse_diff_ms"] < 0 and r["ci95_ms"][1] < 0 and r["share_a_le_b"] == 1.0
    same = boot(good, good, true, n=50)
    assert same["rmse_diff_ms"] == 0 and same["ci95_ms"] == [0.0, 0.0]


def test_seed_summary_pairs_runs_and_names_the_losses() -> None:
    summarize = load_script("bench/studies/predictor_train_seeds.py").summarize

    def run(split: int, rmse: float, w10: float) -> dict:
        return {"rmse_ms": rmse, "mape_pct": 1.0, "within10_pct": w10, "split_seed": split,
                "train_seed": 1}

    ours = [run(1, 10.0, 90.0), run(2, 12.0, 80.0), run(3, 9.0, 85.0)]
    hat = [run(1, 11.0, 90.5), run(2, 11.5, 80.0), run(3, 9.0, 84.0)]
    s = summarize({"default": ours, "hat": hat})
    assert s["seeds_ours_rmse_le_hat"] == "2/3" and s["seeds_ours_within10_ge_hat"] == "2/3"
    assert s["runs_ours_rmse_gt_hat"] == ["split 2 train 1"]
    assert s["runs_ours_within10_lt_hat"] == ["split 1 train 1"]
    assert abs(s["default"]["rmse_ms"]["mean"] - 31 / 3) < 1e-12
    assert s["ours_mean_rmse_le_hat_mean"] and s["ours_mean_within10_ge_hat_mean"]


@pytest.mark.slow
def test_convergence_bench_cpu_twin_reports_gaps_and_speeds(tmp_path: Path) -> None:
    """bench.studies.debian_convergence --smoke: the GPU benchmark's code path on the toy task,
    started
    detached and read with --collect (as on a machine lent one command at a time), with the
    SuperTransformer's inherited losses of seeded random SubTransformers."""
    out, work = tmp_path / "conv.json", tmp_path / "work"
    base = [sys.executable, "-m", "bench.studies.debian_convergence", "--smoke",
            "--work", str(work),
            "--score-random", "3"]
    res = subprocess.run(
        [*base, "--detach", "--until-converged", "--minutes", "0.15", "--jobs",
         "super_hat_adam", "largest_alone", "smallest_alone"], cwd=ROOT, capture_output=True,
        text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "read them with --collect" in res.stdout
    res = subprocess.run([*base, "--collect", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert out.with_suffix(".png").is_file() and r["finished"] is True
    assert set(r["jobs"]) == {"super_hat_adam", "largest_alone", "smallest_alone"}
    assert r["jobs"]["super_hat_adam"]["method_args"] == ["--optimizer", "hat_adam",
                                                          "--subnet-sampling", "uniform"]
    assert all(j["rc"] == 0 and j["updates"] > 0 for j in r["jobs"].values())
    assert "--stop-converged-bits" in r["jobs"]["largest_alone"]["command"]
    assert "--stop-converged-bits" not in r["jobs"]["super_hat_adam"]["command"]
    gap = r["gaps"]["super_hat_adam"]
    for which in ("largest", "smallest"):
        row = gap[which]
        assert row["gap_bits"] == pytest.approx(row["inherited_loss"] - row["standalone_loss"],
                                                abs=1e-3)
        assert isinstance(row["converged"], bool)
    inh = r["inherited_random"]["super_hat_adam"]
    assert len(inh["random"]) == 3 and len({json.dumps(x["config"]) for x in inh["random"]}) == 3
    # the extremes scored from the saved checkpoint equal the training's last validation
    last = r["jobs"]["super_hat_adam"]["curve"][-1]
    assert inh["largest"] == pytest.approx(last["loss_largest"], abs=0.01)
    assert inh["smallest"] == pytest.approx(last["loss_smallest"], abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["today", "retrain"])
def test_train_profile_cpu_twin_times_fairseqs_trainer(variant: str, tmp_path: Path) -> None:
    """bench.speed.train_profile's child (in process, on the toy task): fairseq's Trainer built as
    train.py builds it (a SuperTransformer, or its largest SubTransformer retrained), timed and
    profiled."""
    from bench.speed.train_profile import VARIANTS, child_args, run_child
    from hat.data.toy_corpus import make_toy_corpus

    data = make_toy_corpus(tmp_path / "toy", n_train=300, n_valid=20, n_test=20)
    argv = child_args(ROOT / "configs" / "toy", ["--max-tokens", "1024", "--num-workers", "0",
                                                 "--cpu"], VARIANTS[variant], str(data),
                      str(tmp_path / "save"))
    row = run_child(argv, warmup=2, updates=4, profile_updates=2)
    assert row["updates"] == 4 and row["updates_per_s"] > 0
    assert row["ms_per_update"] >= row["step_ms_per_update"]
    ops = {o["op"] for o in row["top_cpu_ops"]}
    assert "Optimizer.step#SliceAdam.step" in ops or "aten::mm" in ops
    assert row["gpu_busy"] is None and row["top_kernels"] == []  # no GPU here
    if variant == "retrain":
        assert "--train-subtransformer" in argv
        assert any(a.startswith("--sub-configs=") for a in argv)


def test_train_profile_counts_kernels_not_the_spans_of_named_ranges() -> None:
    """A record_function range ("forward") also appears on the GPU timeline; only kernels count."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from bench.speed.train_profile import profile_summary

    def ev(key, dev, count=1, cpu=0, gpu=0):
        return SimpleNamespace(key=key, device_type=dev, count=count, self_cpu_time_total=cpu,
                               self_device_time_total=gpu)

    events = [ev("forward", DeviceType.CPU, cpu=5000), ev("forward", DeviceType.CUDA, gpu=20000),
              ev("aten::mm", DeviceType.CPU, count=4, cpu=800),
              ev("gemm_kernel", DeviceType.CUDA, count=4, gpu=3000),
              ev("cudaStreamSynchronize", DeviceType.CPU, count=2, cpu=10)]
    prof = SimpleNamespace(key_averages=lambda: events)
    s = profile_summary(prof, n=2, wall=0.01)
    assert s["kernel_ms_per_update"] == 1.5 and s["kernel_launches_per_update"] == 2
    assert s["gpu_busy"] == 0.3 and s["syncs_per_update"] == {"cudaStreamSynchronize": 1.0}
    assert [k["kernel"] for k in s["top_kernels"]] == ["gemm_kernel"]


@pytest.mark.slow
def test_fidelity_without_a_pipeline_run_merges_parts_and_joins_recorded_losses(
        tmp_path: Path) -> None:
    """bench.studies.fidelity --task: the from-scratch trainings of check (a) in parts
    (--indices, on
    two "machines", merged with --scratch-from) and the inherited losses that
    bench.studies.debian_convergence --score-random recorded (--inherited-from); the Spearman is the
    one of the joined rows, and draws that differ from the check's are refused."""
    from bench.studies.fidelity import Source, sample_configs
    from hat.data.toy_corpus import make_toy_corpus
    from hat.search.latency import spearman

    runs = [tmp_path / "day1", tmp_path / "day2"]
    for r in runs:  # the toy task's corpus lives in its run folder
        make_toy_corpus(r / "data", n_train=300, n_valid=20, n_test=20)
    cfgs = sample_configs(Source.from_task("toy", runs[0]), 3, 7)
    conv = tmp_path / "conv.json"
    losses = [5.0, 4.0, 6.0]
    conv.write_text(json.dumps({"device": "cpu", "date": "d", "inherited_random": {"sup": {
        "seed": 7, "checkpoint_updates": 10, "random": [
            {"config": c.to_dict(), "inherited_loss": v} for c, v in zip(cfgs, losses)]}}}))
    base = [sys.executable, "-m", "bench.studies.fidelity", "--task", "toy", "--samples", "3",
            "--max-update", "6", "--jobs", "2"]

    def fid(run: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, "--run", str(run), *extra], cwd=ROOT,
                              capture_output=True, text=True)

    res = fid(runs[0], "--part", "scratch", "--indices", "0-1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "from scratch 2/3 trained" in res.stdout
    res = fid(runs[1], "--part", "scratch", "--indices", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    bad = tmp_path / "bad.json"
    bad.write_text(conv.read_text().replace('"seed": 7', '"seed": 8').replace(
        json.dumps(cfgs[0].to_dict()), json.dumps(cfgs[1].to_dict())))
    res = fid(runs[0], "--inherited-from", f"{bad}:sup")
    assert res.returncode != 0 and "not this check's draws" in res.stderr
    out = tmp_path / "fid.json"
    res = fid(runs[0], "--scratch-from", str(runs[1] / "fidelity_6" / "scratch.json"),
              "--inherited-from", f"{conv}:sup", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads(out.read_text())
    rows = rec["a_ranking"]["samples"]
    assert [r["inherited_loss"] for r in rows] == losses
    assert [r["config"] for r in rows] == [c.to_dict() for c in cfgs]
    assert rec["spearman"] == pytest.approx(spearman(losses, [r["scratch_loss"] for r in rows]))
    assert all(r["scratch_updates"] == 6 for r in rows)
    assert "conv.json (sup, 10 updates" in rec["a_ranking"]["parts_ran_on"]["inherited"]
    assert out.with_suffix(".png").is_file()


def test_fidelity_saves_each_training_as_it_ends(tmp_path: Path, monkeypatch) -> None:
    """A lost machine keeps what finished: every from-scratch row is in scratch.json as soon as
    its training ends (the rest failing later changes nothing), and merging parts never
    replaces a converged row by one that stopped short."""
    import bench.studies.fidelity as fid
    from hat.pipeline.context import Context, StageError
    from hat.pipeline.runner import run_parallel

    ctx = Context(out=tmp_path / "rp", preset=None, say=lambda m: None)  # type: ignore[arg-type]
    (tmp_path / "rp").mkdir()
    seen: list[str] = []
    jobs = [(f"j{i}", [sys.executable, "-c", f"import sys; sys.exit({int(i == 2)})"],
             tmp_path / f"j{i}.log") for i in range(3)]
    with pytest.raises(StageError):
        run_parallel(ctx, jobs, 1, {}, on_done=seen.append)
    assert seen == ["j0", "j1"]

    def one_then_fail(ctx, todo, workers, env, on_done=None):
        on_done(todo[0][0])
        raise StageError("the machine went away")

    monkeypatch.setattr(fid, "run_parallel", one_then_fail)
    monkeypatch.setattr(fid, "Scorer", lambda *a: (lambda cfg: 4.25))
    src = fid.Source.from_task("toy", tmp_path / "run")
    with pytest.raises(StageError):
        fid.check_a(src, 3, 7, 2, "cpu", updates=5, part="scratch", indices=[1, 2])
    saved = json.loads((tmp_path / "run" / "fidelity_5" / "scratch.json").read_text())
    assert list(saved["rows"]) == ["1"] and saved["rows"]["1"]["scratch_loss"] == 4.25
    assert saved["rows"]["1"]["config"] == fid.sample_configs(src, 3, 7)[1].to_dict()

    into = {"rows": {"0": {"converged": True, "scratch_loss": 3.0}}, "machines": {"0": "a"}}
    fid._merge_rows(into, {"rows": {"0": {"converged": False, "scratch_loss": 3.5},
                                    "1": {"converged": False, "scratch_loss": 4.0}},
                           "machines": {"0": "b", "1": "b"}})
    assert into["rows"]["0"]["scratch_loss"] == 3.0 and into["machines"] == {"0": "a", "1": "b"}
    fid._merge_rows(into, {"rows": {"1": {"converged": True, "scratch_loss": 3.9}}})
    assert into["rows"]["1"]["scratch_loss"] == 3.9


def test_fidelity_combine_reports_an_interim_ranking_without_training(
        tmp_path: Path, monkeypatch) -> None:
    """--part combine trains nothing: with 3 of 4 from-scratch rows saved it ranks those three
    against their inherited losses and says the result is interim."""
    import bench.studies.fidelity as fid
    from hat.search.latency import spearman

    def no_training(*a, **k):
        raise AssertionError("combine must not train")

    monkeypatch.setattr(fid, "run_parallel", no_training)
    src = fid.Source.from_task("toy", tmp_path / "run")
    cfgs = fid.sample_configs(src, 4, 7)
    conv = tmp_path / "conv.json"
    inherited = [5.0, 4.0, 6.0, 4.5]
    conv.write_text(json.dumps({"device": "cpu", "date": "d", "inherited_random": {"sup": {
        "seed": 7, "checkpoint_updates": 10, "random": [
            {"config": c.to_dict(), "inherited_loss": v} for c, v in zip(cfgs, inherited)]}}}))
    scratch = {"0": 3.1, "1": 2.9, "3": 3.0}
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"key": {"samples": 4, "seed": 7}, "machines": {}, "rows": {
        i: {"config": cfgs[int(i)].to_dict(), "scratch_loss": v, "scratch_updates": 5,
            "converged": i != "3"} for i, v in scratch.items()}}))
    a = fid.check_a(src, 4, 7, 1, "cpu", updates=5, part="combine",
                    inherited_from=f"{conv}:sup", scratch_files=[part])
    assert a is not None and a["complete"] is False
    assert (a["samples_trained"], a["samples_drawn"]) == (3, 4)
    assert [r["index"] for r in a["samples"]] == [0, 1, 3]
    assert a["spearman"] == pytest.approx(spearman([5.0, 4.0, 4.5], [3.1, 2.9, 3.0]))
    assert a["scratch_converged"] == 2
    assert fid.check_a(src, 4, 7, 1, "cpu", updates=5, part="scratch",
                       indices=[0]) is None  # nothing to train: index 0 is saved


def test_quickstart_seeds_claim_and_spread() -> None:
    """bench.studies.quickstart_seeds: the claim is the best found model measured faster than the
    baseline (none when none is faster); the summary gives min / median / max per condition."""
    from bench.studies.quickstart_seeds import claim, summary

    def m(name, lim, ms, bleu):
        return {"name": name, "latency_limit_ms": lim, "measured_latency_ms": ms, "bleu": bleu}

    models = [m("a", 3, 3.0, 8.0), m("b", 5, 5.0, 82.0), m("c", 7, 6.0, 77.0),
              m("transformer", None, 6.5, 80.0)]
    c = claim(models)
    assert c["found"] == "b" and c["bleu_difference"] == 2.0
    assert c["measured_latency_ratio"] == round(5.0 / 6.5, 3)
    assert claim([m("a", 3, 7.0, 90.0), m("transformer", None, 6.5, 80.0)]) is None
    runs = [{"label": "idle", "rc": 0, "wall_s": w, "load_avg_mean": 1.0, "claim": c,
             "max_abs_prediction_error_pct": e, "limits_ms": [3, 5, 7]}
            for w, e in ((400, 4.0), (380, 6.0), (420, 9.0))]
    runs.append({"label": "loaded", "rc": 1})
    s = summary(runs)
    assert s["idle"]["wall_s"] == {"min": 380, "median": 400, "max": 420, "n": 3}
    assert s["idle"]["max_abs_prediction_error_pct"]["median"] == 6.0
    assert s["idle"]["found_within_0.5_bleu_at_lower_latency"] == 3
    assert s["loaded"]["runs"] == 0 and s["loaded"]["wall_s"] is None


def test_mps_bench_reads_fairseqs_last_train_line() -> None:
    """bench.speed.mps_side_by_side (GPU only) reads each job's speed from fairseq's last
    end-of-epoch
    "train" line and sums the jobs; a job that wrote none counts as unfinished."""
    from bench.speed.mps_side_by_side import last_train_stats, summarize

    def line(ups, wps, n):
        return ("2026-12-02 12:07:21 | INFO | train | " + json.dumps(
            {"epoch": 2, "train_ups": str(ups), "train_wps": str(wps),
             "train_num_updates": str(n)}))
    log = "\n".join([line(3.0, 100000, 200), "| INFO | fairseq_cli.train | done",
                     line(3.43, 126152, 278), "2026 | INFO | valid | {}"])
    assert last_train_stats(log) == {"updates_per_s": 3.43, "wps": 126152.0, "updates": 278}
    assert last_train_stats("no train line") is None
    s = summarize([last_train_stats(log), None, {"updates_per_s": 4.0, "wps": 1.0,
                                                 "updates": 9}])
    assert s["finished"] == 2 and s["aggregate_updates_per_s"] == 7.43
    assert s["median_updates_per_s"] == pytest.approx(3.715)


def test_winners_of_further_limits_come_from_the_searchs_front() -> None:
    """bench.studies.winners_fidelity: each further limit's winner is the lowest inherited loss
    under it; they spread over the front below the run's fastest winner, skip the run's own
    winners and never repeat."""
    from bench.studies.winners_fidelity import further_winners, winner_under
    from hat.search.evolution import Candidate

    def cand(key: str, loss: float, ms: float) -> Candidate:
        return Candidate(key=key, genes=[], loss=loss, latency_ms=ms, params_m=1.0, iteration=0)

    cands = [cand("a", 4.0, 1.0), cand("b", 3.9, 1.5), cand("b2", 4.2, 1.6),  # b2: dominated
             cand("c", 3.8, 1.9), cand("d", 3.7, 2.5), cand("e", 3.6, 3.0), cand("f", 3.5, 4.0)]
    assert winner_under(cands, 1.7).key == "b" and winner_under(cands, 0.5) is None
    got = further_winners(cands, 2.6, have={"e": 3.0}, n=3)
    assert [w.key for _, w in got] == ["a", "c", "d"]  # at about 1.0, 1.75 and 2.5 ms
    assert all(winner_under(cands, limit).key == w.key for limit, w in got)
    assert [w.key for _, w in further_winners(cands, 4.0, {"e": 3.0}, 10)] == [
        "a", "b", "c", "d", "f"]  # all but the run's own e; never the dominated b2
    near = further_winners(cands, 4.0, {"e": 3.0, "x": 1.52}, 10, apart=0.05)
    assert [w.key for _, w in near] == ["a", "c", "d", "f"]  # b is within 5 % of x's 1.52 ms
    assert further_winners(cands, 0.9, {}, 3) == []


def test_spearman_shares_ranks_between_ties_and_is_nan_for_a_constant() -> None:
    import math

    from hat.search.latency import spearman

    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(0.894427, abs=1e-6)
    assert math.isnan(spearman([1, 2, 3], [0.0, 0.0, 0.0]))


def test_winners_spearman_goes_into_the_fidelity_json_of_its_task(tmp_path: Path) -> None:
    from bench.studies.winners_fidelity import merge_into

    fid = tmp_path / "fidelity.json"
    fid.write_text(json.dumps({"task": "debian.en-de", "spearman": 0.88}))
    record = {"task": "debian.en-de", "spearman_winners": 0.9, "spearman_winners_valid_loss": 1.0,
              "n": 5, "run_date": "2026-12-06"}
    merge_into(fid, record, tmp_path / "winners.json")
    got = json.loads(fid.read_text())
    assert got["spearman"] == 0.88 and got["spearman_winners"] == 0.9 and got["winners"] == 5
    with pytest.raises(SystemExit, match="its task is debian.en-de, this run's is debian.en-fr"):
        merge_into(fid, {**record, "task": "debian.en-fr"}, tmp_path / "winners.json")


def test_a_pipeline_runs_supertransformer_gets_its_gap_against_standalone_trainings() -> None:
    """bench.studies.debian_convergence --pipeline-super: the pipeline's last inherited losses
    minus the standalone trainings' (the shipped recipe's only), with their convergence."""
    from bench.studies.debian_convergence import DO1, pipeline_gaps

    def alone(kind: str, losses: list[float], overrides: list[str]) -> dict:
        return {"kind": kind, "recipe_overrides": overrides,
                "curve": [{"update": 100 * (i + 1), "loss": x} for i, x in enumerate(losses)]}

    jobs = {"largest_alone_32k": alone("largest", [5.0, 2.0], ["--max-tokens", "32768"]),
            "largest_alone_do0.1": alone("largest", [5.0, 4.0, 3.5, 3.2, 3.19], DO1),
            "smallest_alone_do0.1": alone("smallest", [5.0, 3.6, 3.5], DO1)}
    pipe = {"task": "debian.en-fr", "supertransformer": {
        "updates": 4332, "final_valid_loss": {"largest": 3.318, "smallest": 3.618}}}
    got = pipeline_gaps(pipe, jobs)
    assert got["largest"]["standalone"] == "largest_alone_do0.1"  # not the 32k recipe's
    assert got["largest"]["gap_bits"] == 0.128 and got["largest"]["converged"] is True
    assert got["smallest"]["gap_bits"] == 0.118 and got["smallest"]["converged"] is False
    assert got["updates"] == 4332
