"""Latency measurement: protocol, CSV output, resume, noise controls, config errors."""

from __future__ import annotations

import functools
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hat.errors import HatConfigError
from hat.latency import csvio
from hat.latency.measure.cli import main, parse_args, protocol_from_args
from hat.latency.measure.dataset import measure_dataset, sample_row
from hat.latency.measure.dataset_files import EXTRA_COLUMNS
from hat.latency.measure.noise import NoiseControl
from hat.latency.measure.timing import LatencyMeter, Measurement, Protocol, trimmed_stats
from hat.paths import ROOT
from hat.space import SearchSpace, SubConfig
from tests.conftest import TINY_SPACE, tiny_supernet

FAST = Protocol(src_len=6, beam=5, warmup=0, iters=2, device="cpu", threads=1)


def tiny_meter(protocol: Protocol = FAST) -> tuple[LatencyMeter, SearchSpace]:
    model = tiny_supernet(vocab=50)
    return LatencyMeter(model, protocol), model.space


def test_trimmed_stats_keeps_10_to_90_percent() -> None:
    mean, std = trimmed_stats(list(range(1, 11)) + [1000.0])  # 11 runs: keep sorted[1:9]
    assert mean == pytest.approx(np.mean(range(2, 10)))
    assert std == pytest.approx(np.std(range(2, 10)))
    assert trimmed_stats([5.0]) == (5.0, 0.0)


@pytest.mark.parametrize("timer", ["wall", "thread"])
def test_measure_positive_finite_and_ordered_by_size(timer: str) -> None:
    meter, space = tiny_meter(Protocol(src_len=10, warmup=1, iters=5, threads=1, timer=timer))
    small, large = space.smallest(arbitrary=-1), space.largest(arbitrary=2)
    # alternately, keeping each one's fastest: other load on the machine only adds time, and
    # it hits both alike (a wall-clock comparison must not depend on a quiet machine)
    runs: dict[str, list] = {"small": [], "large": []}
    for _ in range(5):
        runs["small"].append(meter.measure(small))
        runs["large"].append(meter.measure(large))
    m_small = min(runs["small"], key=lambda m: m.total)
    m_large = min(runs["large"], key=lambda m: m.total)
    for m in (m_small, m_large):
        vals = [m.enc_mean, m.dec_mean, m.enc_std, m.dec_std]
        assert all(math.isfinite(v) for v in vals)
        assert m.enc_mean > 0 and m.dec_mean > 0 and m.enc_std >= 0 and m.dec_std >= 0
    # 6 decoder layers attending to 3 encoder layers vs 1 layer: Python and kernel overhead
    # alone makes the large decoder several times slower
    assert m_large.dec_mean > 2 * m_small.dec_mean
    assert m_large.enc_mean > m_small.enc_mean


def test_thread_timer_needs_one_cpu_thread() -> None:
    with pytest.raises(HatConfigError, match="latcpu-threads 1"):
        Protocol(threads=2, timer="thread")
    with pytest.raises(HatConfigError, match="wall or thread"):
        Protocol(timer="process")


def test_hat_train_mode_measure_runs_with_autograd() -> None:
    meter, space = tiny_meter(Protocol(src_len=4, warmup=0, iters=1, train_mode=True))
    m = meter.measure(space.largest())
    assert m.total > 0 and meter.model.training


def test_csv_has_hat_columns_first_and_loads(tmp_path: Path) -> None:
    meter, space = tiny_meter()
    out = tmp_path / "lat.csv"
    res = measure_dataset(meter, space, out, 3, seed=3, noise=NoiseControl.off(), progress=False)
    assert res.total == 3 and len(res.rows) == 3
    header = out.read_text().splitlines()[0].split(",")
    assert tuple(header[:14]) == csvio.HEADER
    assert tuple(header[14:]) == EXTRA_COLUMNS
    feats, lat_ms, extra = csvio.load_latency_csv(out)
    assert feats.shape == (3, 10) and np.all(lat_ms > 0)
    for i, row in enumerate(res.rows):
        cfg = SubConfig.from_dict(json.loads(extra["subtransformer"][i]))
        assert cfg == row.config == sample_row(space, 3, i)
        assert feats[i].tolist() == SearchSpace.features(cfg)
    meta = json.loads((tmp_path / "lat.csv.meta.json").read_text())
    assert meta["rows"] == 3 and meta["status"] == "complete" and meta["seed"] == 3
    assert meta["protocol"]["threads"] == 1 and meta["machine"]["torch"] == torch.__version__
    assert meta["measure_mode"].startswith("eval mode")


def test_resume_after_kill_gives_same_rows(tmp_path: Path) -> None:
    meter, space = tiny_meter()
    noise = NoiseControl(ref_every=2, outlier_cv=0.0, outlier_fit=0.0)
    full = tmp_path / "full.csv"
    measure_dataset(meter, space, full, 5, seed=7, noise=noise, progress=False)

    part = tmp_path / "part.csv"
    res = measure_dataset(meter, space, part, 5, seed=7, noise=noise, progress=False,
                          max_new_rows=3)
    assert res.total == 3
    before = part.read_text().splitlines(keepends=True)
    with open(part, "a") as f:  # a row cut off mid-write by a kill
        f.write("640,6,1024,4,512,3,")
    with pytest.warns(UserWarning, match="truncated"):
        res = measure_dataset(meter, space, part, 5, seed=7, noise=noise, progress=False)
    assert res.existing == 3 and len(res.rows) == 2 and res.total == 5
    lines = part.read_text().splitlines(keepends=True)
    assert lines[: len(before)] == before  # first rows unchanged
    t_part, t_full = csvio.read_latency_table(part), csvio.read_latency_table(full)
    assert len(t_part) == 5
    assert t_part.extra["row"] == [str(i) for i in range(5)]
    rounds = [int(r) for r in t_part.extra["round"]]
    assert rounds == sorted(rounds) and rounds[3] > rounds[2]  # a new reference per session
    assert t_part.extra["subtransformer"] == t_full.extra["subtransformer"]
    np.testing.assert_array_equal(t_part.features, t_full.features)
    meta = json.loads((tmp_path / "part.csv.meta.json").read_text())
    assert [s["status"] for s in meta["sessions"]] == ["stopped", "complete"]
    # a finished dataset is left alone
    assert measure_dataset(meter, space, part, 5, seed=7, noise=noise, progress=False).rows == []


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    meter, space = tiny_meter()
    out = tmp_path / "lat.csv"
    measure_dataset(meter, space, out, 1, seed=1, noise=NoiseControl.off(), progress=False)
    with pytest.raises(HatConfigError, match="cannot resume.*seed"):
        measure_dataset(meter, space, out, 2, seed=2, noise=NoiseControl.off(), progress=False)


def test_second_writer_on_the_same_csv_is_refused(tmp_path: Path) -> None:
    meter, space = tiny_meter()
    out = tmp_path / "lat.csv"

    def nested(row: object) -> None:
        measure_dataset(meter, space, out, 3, noise=NoiseControl.off(), progress=False)

    with pytest.raises(HatConfigError, match="another process"):
        measure_dataset(meter, space, out, 3, noise=NoiseControl.off(), progress=False,
                        on_row=nested)
    assert not (tmp_path / ".lat.csv.lock").exists()
    assert len(csvio.read_latency_table(out)) == 1


class FakeMeter:
    """Deterministic 'latency' from the config; slows down 2x after ``slow_after`` calls and can
    return one noisy attempt."""

    def __init__(self, slow_after: int | None = None, noisy_calls: tuple[int, ...] = ()) -> None:
        self.protocol, self.device = Protocol(iters=1, warmup=0), torch.device("cpu")
        self.calls, self.slow_after, self.noisy_calls = 0, slow_after, noisy_calls

    @staticmethod
    def truth(cfg: SubConfig) -> tuple[float, float]:
        return (cfg.encoder_embed_dim / 10, cfg.decoder_layer_num * sum(cfg.decoder_ffn_embed_dim)
                / 100 + cfg.decoder_embed_dim / 10)

    def measure(self, cfg: SubConfig) -> Measurement:
        self.calls += 1
        e, d = self.truth(cfg)
        f = 2.0 if self.slow_after is not None and self.calls > self.slow_after else 1.0
        if self.calls in self.noisy_calls:
            return Measurement(e * 1.5, d * 1.5, e * 0.5, d * 0.5)
        return Measurement(e * f, d * f, 0.01 * e, 0.01 * d)


def test_periodic_reference_corrects_a_slowdown(tmp_path: Path) -> None:
    space = SearchSpace(**TINY_SPACE)
    meter = FakeMeter(slow_after=3)  # calls: ref, row0, row1, ref (slow from here), row2, ...
    res = measure_dataset(meter, space, tmp_path / "d.csv", 6, noise=NoiseControl(ref_every=2),
                          progress=False)
    for row in res.rows:
        e, d = FakeMeter.truth(row.config)
        assert row.value.enc_mean == pytest.approx(e) and row.value.dec_mean == pytest.approx(d)
    assert [r.factors for r in res.rows][2:] == [(0.5, 0.5)] * 4
    assert res.rows[2].raw.dec_mean == pytest.approx(2 * res.rows[2].value.dec_mean)
    t = csvio.read_latency_table(tmp_path / "d.csv")
    assert float(t.extra["latency_mean_decoder_raw"][2]) == pytest.approx(res.rows[2].raw.dec_mean)
    # a run that starts slow, continuing an earlier run's baseline, is corrected too
    cont = measure_dataset(FakeMeter(slow_after=0), space, tmp_path / "c.csv", 3,
                           noise=NoiseControl(ref_every=2), progress=False,
                           baseline=res.references[0])
    for row in cont.rows:
        assert row.value.dec_mean == pytest.approx(FakeMeter.truth(row.config)[1])
    # without the controls the slowdown goes straight into the data
    off = measure_dataset(FakeMeter(slow_after=3), space, tmp_path / "o.csv", 6,
                          noise=NoiseControl.off(), progress=False)
    assert off.rows[4].value.dec_mean == pytest.approx(2 * FakeMeter.truth(off.rows[4].config)[1])


def test_noisy_row_is_measured_again(tmp_path: Path) -> None:
    space = SearchSpace(**TINY_SPACE)
    meter = FakeMeter(noisy_calls=(2,))  # call 1: reference, call 2: row 0's first attempt
    res = measure_dataset(meter, space, tmp_path / "n.csv", 2, noise=NoiseControl(ref_every=10),
                          progress=False)
    assert [r.attempts for r in res.rows] == [2, 1]
    e, d = FakeMeter.truth(res.rows[0].config)
    assert res.rows[0].value.dec_mean == pytest.approx(d)
    assert res.rows[0].first.dec_mean == pytest.approx(1.5 * d)


# ----------------------------------------------------------------------------- command line
def tiny_yaml(tmp_path: Path, **extra: object) -> Path:
    cfg: dict[str, object] = {
        "arch": "transformersuper", "share-all-embeddings": True,
        "lat-dataset-path": str(tmp_path / "cli.csv"), "lat-dataset-size": 2, "latcpu": True,
        "latiter": 1, "latwarmup": 0, "latsilent": True, "latcpu-threads": 1,
        "lat-sentence-length": 5, "lat-src-vocab-size": 40, "lat-ref-every": 0,
    }
    cfg.update({k.replace("_", "-"): v for k, v in TINY_SPACE.items()})
    cfg.update(extra)
    path = tmp_path / "lat.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_writes_dataset_and_sidecar(tmp_path: Path) -> None:
    assert main(["--configs", str(tiny_yaml(tmp_path)), "--seed", "4"]) == 0
    table = csvio.read_latency_table(tmp_path / "cli.csv")
    assert len(table) == 2
    meta = json.loads((tmp_path / "cli.csv.meta.json").read_text())
    assert meta["seed"] == 4 and meta["protocol"]["iters"] == 1
    assert meta["model"]["src_vocab"] == 40 and "--seed 4" in meta["sessions"][0]["command"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_latgpu_without_gpu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HatConfigError, match="latgpu.*no CUDA device"):
        main(["--configs", str(tiny_yaml(tmp_path, latcpu=False, latgpu=True))])


def test_bad_config_key_is_reported(tmp_path: Path) -> None:
    with pytest.raises(HatConfigError, match="unknown key 'latiterr'.*latiter"):
        main(["--configs", str(tiny_yaml(tmp_path, latiterr=3))])


def test_choice_outside_supernet_is_reported(tmp_path: Path) -> None:
    path = tiny_yaml(tmp_path, **{"encoder-ffn-embed-dim-choice": [96, 500]})
    with pytest.raises(HatConfigError, match="500"):
        main(["--configs", str(path)])




@functools.cache
def _git_tracked() -> frozenset[str] | None:
    """Paths git tracks in this checkout (None without git or a repository)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True, timeout=60).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    return frozenset(out.split("\0")) - {""}


def _predictor_datasets() -> set[str]:
    """The CSVs the latency_predictor configs read (committed, or fetched from HAT's repo)."""
    return {yaml.safe_load(p.read_text())["lat-dataset-path"]
            for p in ROOT.glob("configs/*/latency_predictor/*.yml")}


@pytest.mark.parametrize("path", sorted(ROOT.glob("configs/*/latency_dataset/*.yml")),
                         ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_shipped_configs_parse(path: Path) -> None:
    args = parse_args(["--configs", str(path)])
    toy = path.parent.parent.name == "toy"  # the toy space, measured at toy lengths
    # a measuring config writes a user-output file: never a committed dataset, nor where a
    # predictor config reads one (HAT's fetched CSVs), and git ignores it
    out = args.lat_dataset_path
    assert out.startswith("latency_dataset/measured/") and out.endswith("_all.csv")
    assert out not in _predictor_datasets()
    tracked = _git_tracked()
    if tracked is not None:
        assert out not in tracked and out + ".meta.json" not in tracked
        ignored = subprocess.run(["git", "check-ignore", "-q", out], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{out} is not git-ignored"
    assert "latency_predictor.py" in path.read_text()  # says how to train on the measurement
    assert args.lat_dataset_size == (1000 if toy else 2000)
    assert args.latcpu != args.latgpu
    space = SearchSpace.from_args(args)
    assert (128 if toy else 512) in space.encoder_ffn_embed_dim_choice
    assert 2 in space.decoder_ende_attention_heads_choice
    if args.latcpu:  # the task's typical sentence length in tokens
        task = path.parent.parent.name
        length = {"toy": 12, "iwslt14.de-en": 23}.get(task, 8 if task.startswith("debian") else 30)
        assert protocol_from_args(args).src_len == length


def test_hat_reference_csv_loads(hat_reference: Path) -> None:
    feats, lat, _ = csvio.load_latency_csv(hat_reference / "latency/wmt14ende_gpu_titanxp_all.csv")
    assert feats.shape == (2000, 10) and np.all(lat > 0)


def test_cuda_graph_needs_latgpu(tmp_path: Path) -> None:
    with pytest.raises(HatConfigError, match="latgpu-cuda-graph.*needs latgpu"):
        Protocol(device="cpu", cuda_graph=True)
    with pytest.raises(HatConfigError, match="latgpu-cuda-graph.*needs latgpu"):
        main(["--configs", str(tiny_yaml(tmp_path, **{"latgpu-cuda-graph": True}))])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_matches_eager() -> None:
    model = tiny_supernet(vocab=50).cuda().eval()
    meter = LatencyMeter(model, Protocol(src_len=6, warmup=1, iters=2, device="cuda",
                                         cuda_graph=True))
    cfg = model.space.largest(arbitrary=2)
    model.set_sample_config(cfg)
    with torch.inference_mode():
        enc = model.encoder.reorder_encoder_out(meter.encode(), meter.beam_order)
        decode = meter.decoder_run(enc, 6)
        eager = decode()[0].clone()
        torch.testing.assert_close(meter._capture(decode)()[0].clone(), eager)
    assert meter.measure(cfg).total > 0


def test_interrupted_cli_keeps_rows_and_says_how_to_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import hat.latency.measure.cli as measure_mod

    real = measure_mod.measure_dataset

    def killed_after_one_row(*args: object, **kwargs: object) -> object:
        def stop(row: object) -> None:
            raise KeyboardInterrupt("signal 15")
        return real(*args, **{**kwargs, "on_row": stop})

    monkeypatch.setattr(measure_mod, "measure_dataset", killed_after_one_row)
    assert main(["--configs", str(tiny_yaml(tmp_path))]) == 130
    err = capsys.readouterr().err
    assert "1 rows kept" in err and "run the same command again to resume" in err
    assert len(csvio.read_latency_table(tmp_path / "cli.csv")) == 1
    meta = json.loads((tmp_path / "cli.csv.meta.json").read_text())
    assert meta["sessions"][-1]["status"] == "interrupted"


def test_padding_hint_gives_the_same_outputs() -> None:
    model = tiny_supernet(vocab=50).eval()
    model.set_sample_config(model.space.largest(arbitrary=2))
    src = torch.randint(4, 50, (2, 7))
    prev = torch.randint(4, 50, (2, 5))
    with torch.inference_mode():
        plain = model.encoder(src, None)
        hinted = model.encoder(src, None, has_padding=False)
        assert plain["encoder_padding_mask"] == [] == hinted["encoder_padding_mask"]
        torch.testing.assert_close(hinted["encoder_out"][0], plain["encoder_out"][0])
        padded = src.clone()
        padded[0, -2:] = model.encoder.padding_idx
        out = model.encoder(padded, None)
        assert out["encoder_padding_mask"][0].sum() == 2  # a real mask is kept
        dec_pad, _ = model.decoder(prev, out)
        dec_nopad, _ = model.decoder(prev, {**out, "encoder_padding_mask": []})
        assert not torch.allclose(dec_pad[0], dec_nopad[0])  # ...and used


class SlowingTimer:
    """Deterministic 'time' of a run: the active SubTransformer's size x the machine's current
    slowness, which triples after ``slow_after`` timed runs (fn still runs for real)."""

    def __init__(self, model: torch.nn.Module, slow_after: int) -> None:
        self.model, self.slow_after, self.calls = model, slow_after, 0

    @staticmethod
    def cost(cfg: SubConfig) -> tuple[float, float]:
        enc = cfg.encoder_embed_dim * sum(cfg.encoder_ffn_embed_dim)
        dec = cfg.decoder_embed_dim * sum(cfg.decoder_ffn_embed_dim) * (1 + cfg.decoder_layer_num)
        return enc / 1e3, dec / 1e3

    def __call__(self, fn: object) -> float:
        fn()  # type: ignore[operator]
        self.calls += 1
        slow = 3.0 if self.calls > self.slow_after else 1.0
        is_decoder = getattr(fn, "__name__", "") == "run"  # LatencyMeter.decoder_run's callable
        return slow * self.cost(self.model.sample_config)[1 if is_decoder else 0]


def test_interleaved_reference_cancels_a_slowdown(tmp_path: Path) -> None:
    meter, space = tiny_meter(Protocol(src_len=4, beam=5, warmup=0, iters=3, device="cpu",
                                       threads=1))
    # slows during the 4th row (after the 6 x 12 timed runs that set the scale, then 40)
    meter.timer = SlowingTimer(meter.model, slow_after=72 + 40)
    noise = NoiseControl(ref_every=0, interleave=True, interleave_steps=2, outlier_cv=0.0,
                         outlier_fit=0.0, remeasure=0)
    path = tmp_path / "il.csv"
    res = measure_dataset(meter, space, path, 3, seed=5, noise=noise, progress=False)
    res2 = measure_dataset(meter, space, path, 6, seed=5, noise=noise, progress=False)  # resumed
    rows = res.rows + res2.rows
    ref_enc, ref_dec = SlowingTimer.cost(space.smallest())
    for row in rows:
        enc, dec = SlowingTimer.cost(row.config)
        # value = first row's reference (ms, before the slowdown) x ratio to the reference
        assert (row.value.enc_mean, row.value.dec_mean) == pytest.approx((enc, dec))
    assert rows[5].raw.dec_mean == pytest.approx(3 * rows[5].value.dec_mean)  # slowed down
    assert rows[5].reference.dec_mean == pytest.approx(3 * ref_dec)
    assert rows[0].reference.enc_mean == pytest.approx(ref_enc)
    t = csvio.read_latency_table(path)
    assert float(t.extra["latency_mean_decoder_raw"][5]) == pytest.approx(rows[5].raw.dec_mean)
    assert float(t.extra["drift_factor_decoder"][5]) == pytest.approx(1 / 3, rel=1e-5)
    meta = json.loads((tmp_path / "il.csv.meta.json").read_text())
    assert meta["reference"]["interleave"]["baseline"]["dec_mean"] == pytest.approx(ref_dec)
    assert meta["reference"]["interleave"]["decode_steps"] == 2


class ColdStartTimer(SlowingTimer):
    """Its first timed runs are 1.5x slower (a cold machine), then every run costs the same."""

    def __init__(self, model, cold_runs: int) -> None:
        super().__init__(model, slow_after=10**9)
        self.cold_runs = cold_runs

    def __call__(self, fn) -> float:
        t = super().__call__(fn)
        return 1.5 * t if self.calls <= self.cold_runs else t


def test_a_cold_first_reference_does_not_set_the_scale(tmp_path: Path) -> None:
    """The user's case: the first reference decode took 4.44 ms, later ones 2.7-2.9 ms, and every
    row of the dataset came out x1.54."""
    meter, space = tiny_meter(Protocol(src_len=4, beam=5, warmup=0, iters=3, device="cpu",
                                       threads=1))
    meter.timer = ColdStartTimer(meter.model, cold_runs=12)  # the whole first measurement
    noise = NoiseControl(ref_every=0, interleave=True, interleave_steps=2, outlier_cv=0.0,
                         outlier_fit=0.0, remeasure=0)
    res = measure_dataset(meter, space, tmp_path / "cold.csv", 4, seed=5, noise=noise,
                          progress=False)
    for row in res.rows:
        assert (row.value.enc_mean, row.value.dec_mean) == pytest.approx(
            SlowingTimer.cost(row.config))
    base = json.loads((tmp_path / "cold.csv.meta.json").read_text())[
        "reference"]["interleave"]["baseline"]
    assert base["runs"] == 5 and base["first_discarded"]
    assert base["enc_mean"] == pytest.approx(SlowingTimer.cost(space.smallest())[0])


def test_interleave_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(HatConfigError, match="lat-ref-interleave replaces.*lat-ref-every 0"):
        NoiseControl(ref_every=5, interleave=True)
    with pytest.raises(HatConfigError, match="lat-ref-interleave-steps must be >= 1"):
        NoiseControl(ref_every=0, interleave=True, interleave_steps=0)
    with pytest.raises(HatConfigError, match="lat-ref-interleave replaces"):
        main(["--configs", str(tiny_yaml(tmp_path, **{"lat-ref-interleave": True,
                                                      "lat-ref-every": 3}))])
    # with a generator: refused before anything is written; --no-lat-ref-interleave fixes it
    yml = tiny_yaml(tmp_path, **{"lat-ref-interleave": True, "lat-deployment": "generate"})
    with pytest.raises(HatConfigError, match="--no-lat-ref-interleave"):
        main(["--configs", str(yml)])
    assert not (tmp_path / "cli.csv").exists() and not (tmp_path / "cli.csv.meta.json").exists()
    assert main(["--configs", str(yml), "--no-lat-ref-interleave"]) == 0
    meta = json.loads((tmp_path / "cli.csv.meta.json").read_text())
    assert meta["protocol"]["deployment"] == "generate"
