"""Latency CSV reading/writing: round trip, truncated tails, and every validation error."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from hat.latency.csvio import (
    HEADER,
    LatencyDataError,
    append_rows,
    load_latency_csv,
    read_latency_table,
    write_latency_csv,
)
from hat.paths import reference_dir
from tests.conftest import synthetic_features

REF = reference_dir()
REF_CSVS = sorted((REF / "latency").glob("*_all.csv")) if (REF / "latency").is_dir() else []
needs_ref = pytest.mark.skipif(not REF_CSVS, reason=f"HAT reference data not found at {REF}")

ROW = "640,6,1962.67,6.0,512,4,1920.0,2.5,5.5,1.5,5.49,124.5,0.05,0.44"


def _features(n: int, rng: np.random.Generator) -> np.ndarray:
    return synthetic_features(n, rng)


def _latency(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.c_[rng.uniform(1, 10, n), rng.uniform(50, 300, n), rng.uniform(0, 1, (n, 2))]


def _write(path: Path, body: str) -> Path:
    path.write_text(",".join(HEADER) + "\n" + body)
    return path


def test_round_trip_with_extra_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    f, lat = _features(7, rng), _latency(7, rng)
    extra = {"device": ["epyc"] * 7, "note": [f"row {i}, quoted" for i in range(7)]}
    p = tmp_path / "a.csv"
    write_latency_csv(p, f, lat, extra)
    t = read_latency_table(p)
    np.testing.assert_array_equal(t.features, f)
    np.testing.assert_array_equal(t.latency, lat)
    assert t.extra == extra
    x, y, ex = load_latency_csv(p)
    np.testing.assert_allclose(y, lat[:, 0] + lat[:, 1])
    np.testing.assert_array_equal(ex["latency_std_decoder"], lat[:, 3])
    assert ex["device"] == ["epyc"] * 7
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp files


def test_columns_may_be_reordered(tmp_path: Path) -> None:
    cols = list(HEADER)
    order = cols[10:] + cols[:10]
    vals = ROW.split(",")
    p = tmp_path / "r.csv"
    p.write_text(",".join(order) + "\n" + ",".join(vals[10:] + vals[:10]) + "\n")
    x, y, _ = load_latency_csv(p)
    assert x[0, 0] == 640 and y[0] == pytest.approx(5.49 + 124.5)


def test_append_and_truncated_tail(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    p = tmp_path / "m.csv"
    append_rows(p, _features(3, rng), _latency(3, rng))
    append_rows(p, _features(2, rng), _latency(2, rng))
    assert len(read_latency_table(p, allow_truncated_tail=True)) == 5
    with open(p, "a") as fh:  # a killed writer: half a row, no newline
        fh.write("640,6,1024.0,8.0,51")
    with pytest.raises(LatencyDataError, match=r"m\.csv:7: truncated or malformed row"):
        read_latency_table(p)
    with pytest.warns(UserWarning, match="truncated final line"):
        t = read_latency_table(p, allow_truncated_tail=True)
    assert len(t) == 5 and t.dropped_tail
    with pytest.warns(UserWarning, match="truncated final line"):
        append_rows(p, _features(1, rng), _latency(1, rng))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_latency_table(p, allow_truncated_tail=True)) == 6


def test_truncated_tail_that_still_parses_is_dropped(tmp_path: Path) -> None:
    p = _write(tmp_path / "t.csv", ROW + "\n" + ROW[:-1])  # last digit lost, no newline
    with pytest.warns(UserWarning):
        assert len(read_latency_table(p, allow_truncated_tail=True)) == 1
    assert len(read_latency_table(p)) == 2  # strict mode reads what is there


def test_append_rejects_other_header(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    p = tmp_path / "h.csv"
    write_latency_csv(p, _features(1, rng), _latency(1, rng), {"device": ["a"]})
    with pytest.raises(LatencyDataError, match="cannot append"):
        append_rows(p, _features(1, rng), _latency(1, rng))


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (ROW + "\n" + ROW.rsplit(",", 2)[0] + "\n", r":3: truncated or malformed row: expected 14"),
        (ROW + ",1,2\n", r":2: malformed row: expected 14 columns, found 16"),
        (ROW.replace("5.49", "abc") + "\n", r":2: column 'latency_mean_encoder': non-numeric"),
        (ROW.replace("1962.67", "x") + "\n", r":2: column 'encoder_ffn_embed_dim_avg': non-num"),
        (ROW.replace("5.49", "nan") + "\n", r":2: column 'latency_mean_encoder'.*not finite"),
        (ROW.replace("124.5", "0") + "\n", r":2: column 'latency_mean_decoder'.*> 0"),
        (ROW.replace("124.5", "-3") + "\n", r":2: column 'latency_mean_decoder'.*> 0"),
        (ROW.replace("0.44", "-1") + "\n", r":2: column 'latency_std_decoder'.*>= 0"),
        (ROW.replace("124.5", "inf") + "\n", r":2: .*not finite"),
        ("", r"no data rows"),
    ],
)
def test_bad_rows(tmp_path: Path, body: str, pattern: str) -> None:
    p = _write(tmp_path / "bad.csv", body)
    with pytest.raises(LatencyDataError, match=r"bad\.csv" + ".*" + pattern):
        read_latency_table(p)


def test_missing_header_column(tmp_path: Path) -> None:
    p = tmp_path / "hdr.csv"
    hdr = [c for c in HEADER if c != "latency_std_encoder"]
    p.write_text(",".join(hdr) + "\n" + ROW.rsplit(",", 1)[0] + "\n")
    with pytest.raises(LatencyDataError, match=r"hdr\.csv:1: header is missing.*latency_std_enc"):
        read_latency_table(p)


def test_duplicate_header_and_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "dup.csv"
    p.write_text(",".join(HEADER + ("encoder_embed_dim",)) + "\n")
    with pytest.raises(LatencyDataError, match="duplicate header"):
        read_latency_table(p)
    e = tmp_path / "empty.csv"
    e.write_text("")
    with pytest.raises(LatencyDataError, match=r"empty\.csv:1: empty file"):
        read_latency_table(e)
    with pytest.raises(LatencyDataError, match="not found"):
        read_latency_table(tmp_path / "nope.csv")
    assert issubclass(LatencyDataError, ValueError)


@needs_ref
def test_reference_csvs_load() -> None:
    for path in REF_CSVS:
        x, y, ex = load_latency_csv(path)
        assert x.shape == (2000, 10) and y.shape == (2000,)
        assert np.all(y > 0) and set(ex) >= {"latency_mean_encoder", "latency_std_decoder"}
        head = path.read_text().splitlines()[0].split(",")
        assert tuple(head) == HEADER
