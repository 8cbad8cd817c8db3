"""Latency command lines refuse unsafe or degenerate work: finished or sidecar-less datasets,
unwritable outputs, too little or implausible data for a predictor."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from hat.atomic import check_writable
from hat.errors import HatConfigError
from hat.latency import csvio
from hat.latency.measure.dataset import measure_dataset
from hat.latency.measure.dataset_files import EXTRA_COLUMNS, count_rows
from hat.latency.measure.noise import NoiseControl
from hat.paths import ROOT
from tests.conftest import load_script, synthetic_features
from tests.test_latency_measure import tiny_meter, tiny_yaml


def _permissions_apply() -> bool:
    """Whether a folder without write permission stops this process (root's does not, unless
    it runs without CAP_DAC_OVERRIDE)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o555)
        try:
            Path(d, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(d, 0o755)
    return False


needs_permissions = pytest.mark.skipif(not _permissions_apply(),
                                       reason="folder permissions do not apply (root)")


@pytest.fixture(scope="module")
def measure_cli():
    return load_script("latency_dataset.py")


@pytest.fixture(scope="module")
def predictor_cli():
    return load_script("latency_predictor.py")


# ----------------------------------------------------------------------------- measuring
def test_complete_dataset_says_so_and_measures_nothing(
        tmp_path: Path, measure_cli, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_yaml(tmp_path)
    assert measure_cli.main(["--configs", str(cfg)]) == 0
    csv = tmp_path / "cli.csv"
    before = csv.read_bytes()
    capsys.readouterr()
    import hat.latency.measure.cli as measure_mod

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a complete dataset must not build a model")

    monkeypatch.setattr(measure_mod, "build_model", no_model)
    assert measure_cli.main(["--configs", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert f"{csv} is already complete: 2 rows (lat-dataset-size 2)" in err
    for how in ("delete it", "cli.csv.meta.json", "--lat-dataset-path", "--lat-dataset-size"):
        assert how in err
    assert csv.read_bytes() == before


def test_resume_without_sidecar_is_refused(tmp_path: Path, measure_cli,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_yaml(tmp_path, **{"lat-dataset-size": 3})
    assert measure_cli.main(["--configs", str(cfg), "--lat-max-new-rows", "1"]) == 0
    csv = tmp_path / "cli.csv"
    (tmp_path / "cli.csv.meta.json").unlink()
    before = csv.read_bytes()
    capsys.readouterr()
    assert measure_cli.main(["--configs", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {csv}: cannot resume: it has 1 rows but no sidecar "
                          "cli.csv.meta.json")
    assert "delete the CSV" in err and "--lat-dataset-path" in err
    assert csv.read_bytes() == before  # nothing appended
    assert count_rows(csv) == 1


def test_a_committed_dataset_is_never_measured_into(tmp_path: Path, measure_cli,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The user's case: --lat-dataset-path names a dataset shipped with the repository."""
    from hat.latency.measure.dataset_files import SHIPPED_DIR

    csv = SHIPPED_DIR / "toy_cpu_epyc_all.csv"
    side = csv.with_name(csv.name + ".meta.json")
    before = (csv.read_bytes(), side.read_bytes())
    cfg = tiny_yaml(tmp_path)
    assert measure_cli.main(["--configs", str(cfg), "--lat-dataset-path", str(csv),
                             "--lat-dataset-size", str(count_rows(csv) + 1)]) == 2
    err = capsys.readouterr().err
    assert "committed with the repository; measuring never writes over it" in err
    assert str(SHIPPED_DIR / "measured" / csv.name) in err
    assert (csv.read_bytes(), side.read_bytes()) == before


def test_measuring_is_allowed_below_measured_and_outside(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import hat.latency.measure.dataset_files as ds

    shipped = tmp_path / "latency_dataset"
    (shipped / "measured").mkdir(parents=True)
    ds.check_not_shipped(shipped / "measured" / "mine.csv", shipped)
    ds.check_not_shipped(tmp_path / "elsewhere.csv", shipped)
    with pytest.raises(HatConfigError, match="committed with the repository"):
        ds.check_not_shipped(shipped / "x.csv", shipped)
    with pytest.raises(HatConfigError):  # however the path is spelled
        ds.check_not_shipped(shipped / "measured" / ".." / "x.csv", shipped)
    monkeypatch.setattr(ds, "SHIPPED_DIR", shipped)  # the library call refuses too
    meter, space = tiny_meter()
    with pytest.raises(HatConfigError, match="committed with the repository"):
        measure_dataset(meter, space, shipped / "x.csv", 2)
    assert not (shipped / "x.csv").exists()


def test_measure_dataset_refuses_rows_without_sidecar(tmp_path: Path) -> None:
    meter, space = tiny_meter()
    out = tmp_path / "lat.csv"
    measure_dataset(meter, space, out, 1, noise=NoiseControl.off(), progress=False)
    (tmp_path / "lat.csv.meta.json").unlink()
    with pytest.raises(HatConfigError, match="1 rows but no sidecar lat.csv.meta.json"):
        measure_dataset(meter, space, out, 2, noise=NoiseControl.off(), progress=False)
    # a header alone (a run killed before its first row) holds nothing to mix with
    out.write_text(",".join(csvio.HEADER + EXTRA_COLUMNS) + "\n")
    assert count_rows(out) == 0
    res = measure_dataset(meter, space, out, 1, noise=NoiseControl.off(), progress=False)
    assert res.total == 1 and count_rows(out) == 1


@needs_permissions
def test_unwritable_dataset_folder_is_refused_before_measuring(
        tmp_path: Path, read_only: Path, measure_cli,
        capsys: pytest.CaptureFixture[str]) -> None:
    for out, why in ((read_only / "lat.csv", f"cannot write into the folder {read_only}"),
                     (read_only / "sub" / "lat.csv", f"cannot create the folder {read_only}/sub")):
        cfg = tiny_yaml(tmp_path, **{"lat-dataset-path": str(out)})
        assert measure_cli.main(["--configs", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: lat-dataset-path {out}: {why}") and "writable" in err
    assert list(read_only.iterdir()) == []


@needs_permissions
def test_read_only_dataset_file_is_refused(tmp_path: Path, measure_cli,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_yaml(tmp_path, **{"lat-dataset-size": 3})
    assert measure_cli.main(["--configs", str(cfg), "--lat-max-new-rows", "1"]) == 0
    csv = tmp_path / "cli.csv"
    csv.chmod(0o444)
    assert measure_cli.main(["--configs", str(cfg)]) == 2
    assert "the file is read-only" in capsys.readouterr().err
    csv.chmod(0o644)


def test_check_writable(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "a" / "b" / "x.csv", "out") == tmp_path / "a/b/x.csv"
    assert not (tmp_path / "a").exists()  # checks, creates nothing
    with pytest.raises(HatConfigError, match="is a folder"):
        check_writable(tmp_path, "out")
    (tmp_path / "f").write_text("")
    with pytest.raises(HatConfigError, match="f is a file"):
        check_writable(tmp_path / "f" / "x.csv", "out")


# ----------------------------------------------------------------------------- predictor
def _csv(tmp_path: Path, n: int = 300, name: str = "lat_all.csv") -> Path:
    rng = np.random.default_rng(3)
    x = synthetic_features(n, rng)
    y = 5 + x[:, 5] * (10 + x[:, 6] / 200)
    path = tmp_path / name
    csvio.write_latency_csv(path, x, np.c_[0.1 * y, 0.9 * y, np.full((n, 2), 0.1)])
    return path


def _set_latency(path: Path, row: int, enc: str, dec: str | None = None) -> int:
    """Overwrite one row's mean encoder (and decoder) latency as text; returns its line."""
    lines = path.read_text().splitlines(keepends=True)
    cells = lines[row + 1].rstrip("\n").split(",")
    cells[10] = enc
    cells[11] = dec if dec is not None else cells[11]
    lines[row + 1] = ",".join(cells) + "\n"
    path.write_text("".join(lines))
    return row + 2


def _args(tmp_path: Path, csv: Path, *extra: str) -> list[str]:
    return ["--lat-dataset-path", str(csv), "--ckpt-path", str(tmp_path / "pred" / "p.pt"),
            "--lat-norm", "200", "--max-steps", "20", "--no-plot", *extra]


def _fails(cli, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no metrics
    assert captured.err.startswith("error: ")
    return captured.err


@pytest.mark.parametrize("n", [5, 19])
def test_too_few_rows_is_an_error(tmp_path: Path, predictor_cli, n: int,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path, n)
    err = _fails(predictor_cli, _args(tmp_path, csv), capsys)
    assert f"{csv}: {n} rows are too few" in err and "at least 20 rows" in err
    if n == 5:
        assert "4 train, 0 validation, 1 test rows" in err
    assert not (tmp_path / "pred").exists()
    _fails(predictor_cli, _args(tmp_path, csv, "--eval-only"), capsys)


def test_fewshot_count_is_checked(tmp_path: Path, predictor_cli,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path)
    src = _csv(tmp_path, name="src_all.csv")
    for n in ("0", "-3", "4"):
        err = _fails(predictor_cli, _args(tmp_path, csv, "--fewshot", n, "--source-dataset",
                                          str(src)), capsys)
        assert f"--fewshot must be at least 5 (training rows to fit on), got {n}" in err
    err = _fails(predictor_cli, _args(tmp_path, csv, "--fewshot", "241", "--source-dataset",
                                      str(src)), capsys)
    assert f"--fewshot 241: {csv} has only 240 training rows" in err
    assert "--fewshot 240 or less" in err


@pytest.mark.parametrize("value, message", [
    ("1e9", "implausible latency in 1 row(s): line {line} (1e+09 ms)"),
    ("0.00001", "implausible latency in 1 row(s): line {line} (2e-05 ms)"),
    ("-3.0", ":{line}: column 'latency_mean_encoder': latency must be > 0 ms"),
    ("0", ":{line}: column 'latency_mean_encoder': latency must be > 0 ms"),
    ("nan", ":{line}: column 'latency_mean_encoder': value 'nan' is not finite"),
    ("inf", ":{line}: column 'latency_mean_encoder': value 'inf' is not finite"),
])
def test_implausible_latency_is_an_error(tmp_path: Path, predictor_cli, value: str,
                                         message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path)
    line = _set_latency(csv, 17, value, value if value == "0.00001" else None)
    err = _fails(predictor_cli, _args(tmp_path, csv), capsys)
    assert message.format(line=line) in err, err
    assert not (tmp_path / "pred").exists()


def test_implausible_source_dataset_is_an_error(tmp_path: Path, predictor_cli,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    src = _csv(tmp_path, name="src_all.csv")
    line = _set_latency(src, 3, "5e8")
    err = _fails(predictor_cli, _args(tmp_path, _csv(tmp_path), "--fewshot", "20",
                                      "--source-dataset", str(src)), capsys)
    assert f"{src}: implausible latency in 1 row(s): line {line}" in err


def test_suspicious_latency_is_a_warning(tmp_path: Path, predictor_cli,
                                         caplog: pytest.LogCaptureFixture,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path)
    median = float(np.median(csvio.load_latency_csv(csv)[1]))
    line = _set_latency(csv, 40, repr(10 * median), repr(10 * median))  # 20x the median
    with caplog.at_level(logging.WARNING, logger="latency_predictor"):
        assert predictor_cli.main(_args(tmp_path, csv, "--json")) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 suspicious row(s)" in w and f"line {line} (" in w for w in warned), warned
    assert "test_rmse_ms" in json.loads(capsys.readouterr().out.splitlines()[-1])


def test_real_datasets_pass_the_spread_check() -> None:
    root = ROOT
    for name in ("toy_cpu_epyc_all.csv", "wmt14ende_cpu_epyc_all.csv",
                 "wmt14ende_gpu_h100_all.csv"):
        path = root / "latency_dataset" / name
        assert csvio.check_latency_spread(csvio.read_latency_table(path), path) is None


@needs_permissions
def test_unwritable_predictor_outputs_fail_before_training(
        tmp_path: Path, read_only: Path, predictor_cli,
        capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path)
    base = ["--lat-dataset-path", str(csv), "--lat-norm", "200", "--max-steps", "20"]
    ckpt = read_only / "p.pt"
    err = _fails(predictor_cli, [*base, "--ckpt-path", str(ckpt), "--no-plot"], capsys)
    assert f"error: ckpt-path {ckpt}: cannot write into the folder {read_only}" in err
    plot = read_only / "sub" / "s.png"
    err = _fails(predictor_cli, [*base, "--ckpt-path", str(tmp_path / "p.pt"), "--plot-path",
                                 str(plot)], capsys)
    assert f"error: plot-path {plot}: cannot create the folder {read_only}/sub" in err
    assert not (tmp_path / "p.pt").exists()  # refused before training
    # the default plot lands next to the checkpoint: evaluating a predictor in a read-only
    # folder needs --plot-path or --no-plot
    err = _fails(predictor_cli, [*base, "--ckpt-path", str(ckpt), "--eval-only"], capsys)
    assert "scatter plot (next to ckpt-path unless --plot-path or --no-plot)" in err


def test_split_keeps_repeated_configurations_in_one_split() -> None:
    from hat.latency.predict.fit import split_indices

    rng = np.random.default_rng(0)
    unique = synthetic_features(200, rng)
    assert all(np.array_equal(a, b) for a, b in zip(split_indices(200, 4, groups=unique),
                                                    split_indices(200, 4)))  # no repeats
    x = np.r_[unique, np.repeat(unique[:1], 99, axis=0), unique[5:25]]  # 119 repeated rows
    tr, va, te = split_indices(len(x), 4, groups=x)
    assert sorted(np.r_[tr, va, te].tolist()) == list(range(len(x)))
    keys = [{tuple(r) for r in x[idx]} for idx in (tr, va, te)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert abs(len(tr) - 0.8 * len(x)) <= 100  # the one 100-row group may tip a boundary


def test_duplicate_rows_are_warned_about(
        tmp_path: Path, predictor_cli, caplog: pytest.LogCaptureFixture) -> None:
    """The user's case: one row repeated 100 times must not count as 100 accurate test rows."""
    csv = _csv(tmp_path)
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines + [lines[1]] * 100))
    with caplog.at_level(logging.WARNING):
        assert predictor_cli.main(_args(tmp_path, csv, "--json")) == 0
    assert "100 of its 400 rows repeat a SubTransformer of an earlier row (300 unique)" \
        in caplog.text
