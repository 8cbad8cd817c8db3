"""The files of a latency dataset: HAT's CSV with this project's extra columns, appended one
row at a time, and its ``<csv>.meta.json`` sidecar; what a resumed run reads back and checks."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hat.errors import HatConfigError
from hat.latency import csvio
from hat.latency.measure.timing import Measurement
from hat.paths import ROOT
from hat.runstate import check_resume
from hat.space import SearchSpace, SubConfig

RAW_COLUMNS = ("latency_mean_encoder_raw", "latency_mean_decoder_raw")


EXTRA_COLUMNS = (
    "row",
    *RAW_COLUMNS,
    "ref_encoder_ms",
    "ref_decoder_ms",
    "drift_factor_encoder",
    "drift_factor_decoder",
    "attempts",
    "round",
    "timestamp",
    "subtransformer",
)


RESUME_KEYS = ("protocol", "space", "seed", "model", "noise", "hardware")

SHIPPED_DIR = ROOT / "latency_dataset"
"""The repository's committed datasets; measuring writes only below its ``measured/``."""


def check_not_shipped(path: str | os.PathLike, shipped: Path | None = None) -> None:
    """Refuse to measure into a dataset committed with the repository (``latency_dataset/``
    outside ``measured/``): its rows and sidecar are the record of another machine."""
    resolved, shipped = Path(path).resolve(), (shipped or SHIPPED_DIR).resolve()
    if not resolved.is_relative_to(shipped) or resolved.is_relative_to(shipped / "measured"):
        return
    mine = shipped / "measured" / resolved.name
    raise HatConfigError(
        f"{path}: a latency dataset committed with the repository; measuring never writes over "
        f"it (its rows and sidecar record the machine that measured them). Measure into "
        f"{mine} instead (--lat-dataset-path); to extend this one, copy it and its "
        f"{resolved.name}.meta.json there first")


@dataclass
class Row:
    """One finished dataset row."""

    index: int
    config: SubConfig
    value: Measurement  # times the correction factors (the 14-column values)
    raw: Measurement  # the kept attempt, uncorrected
    first: Measurement  # the first attempt (what no noise control would have kept)
    reference: Measurement | None
    factors: tuple[float, float]  # correction factors (CSV drift_factor_encoder/decoder)
    attempts: int
    round: int
    timestamp: str


def meta_path(csv_path: Path) -> Path:
    return Path(str(csv_path) + ".meta.json")


def space_dict(space: SearchSpace) -> dict[str, Any]:
    d = asdict(space)
    d.pop("source", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def read_existing(path: Path) -> tuple[int, list[tuple[SubConfig, Measurement]], int]:
    """Rows already in ``path`` (a truncated final line is cut off), their configs and the last
    measurement round."""
    if not path.exists() or path.stat().st_size == 0:
        return 0, [], 0
    csvio.repair_truncated_tail(path)
    text = path.read_text(encoding="utf-8")
    if text.count("\n") <= 1:  # header only
        return 0, [], 0
    table = csvio.read_latency_table(path, allow_truncated_tail=True)
    cfgs = table.extra.get("subtransformer")
    done: list[tuple[SubConfig, Measurement]] = []
    for i in range(len(table)):
        lat = table.latency[i]
        m = Measurement(lat[0], lat[1], lat[2], lat[3])
        if cfgs is not None:
            done.append((SubConfig.from_dict(json.loads(cfgs[i]), str(path)), m))
    rows = table.extra.get("row")
    if rows is not None and [int(r) for r in rows] != list(range(len(table))):
        raise HatConfigError(f"{path}: rows are not numbered 0..{len(table) - 1}; the file was "
                             "not written by one seeded run and cannot be resumed")
    last_round = max((int(r) for r in table.extra.get("round", []) if r.isdigit()), default=0)
    return len(table), done, last_round


def count_rows(path: str | os.PathLike) -> int:
    """Complete data rows in a latency CSV (0 when it is absent, empty or only a header; an
    unterminated final line, left by a killed writer, does not count)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    text = path.read_text(encoding="utf-8", errors="replace")
    if text[: text.rfind("\n") + 1].count("\n") <= 1:  # nothing after the header line
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncated tail: the resumed run says it cuts it
        return len(csvio.read_latency_table(path, allow_truncated_tail=True))


def require_sidecar(path: Path, rows: int) -> None:
    """A CSV with rows is resumed only with its sidecar (how the rows were measured)."""
    side = meta_path(path)
    if rows and not side.is_file():
        raise HatConfigError(
            f"{path}: cannot resume: it has {rows} rows but no sidecar {side.name} "
            "recording how they were measured (protocol, machine, seed), so new rows could "
            "silently mix with rows measured another way; delete the CSV to measure from "
            "scratch, or pass another --lat-dataset-path")


def check_dataset_resume(path: Path, side: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The sidecar of a dataset being resumed, checked against this run's settings."""
    if not side.is_file():
        require_sidecar(path, count_rows(path))
        return {}
    try:
        old = json.loads(side.read_text())
    except ValueError as e:
        raise HatConfigError(f"{side}: unreadable sidecar ({e})") from None
    if isinstance(old.get("protocol"), dict):  # sidecars before lat-deployment: HAT's
        old["protocol"].setdefault("deployment", "hat")
    check_resume(side, old, settings, RESUME_KEYS, "latency dataset",
                 "use another lat-dataset-path or the same settings")
    return old


def append_row(path: Path, row: Row) -> None:
    v, r = row.value, row.raw
    ref = row.reference
    extra = {
        "row": [row.index],
        "latency_mean_encoder_raw": [repr(r.enc_mean)],
        "latency_mean_decoder_raw": [repr(r.dec_mean)],
        "ref_encoder_ms": [repr(ref.enc_mean) if ref else ""],
        "ref_decoder_ms": [repr(ref.dec_mean) if ref else ""],
        "drift_factor_encoder": [f"{row.factors[0]:.6f}"],
        "drift_factor_decoder": [f"{row.factors[1]:.6f}"],
        "attempts": [row.attempts],
        "round": [row.round],
        "timestamp": [row.timestamp],
        "subtransformer": [json.dumps(row.config.to_dict(), separators=(",", ":"))],
    }
    csvio.append_rows(
        path,
        np.asarray([SearchSpace.features(row.config)]),
        np.asarray([[v.enc_mean, v.dec_mean, v.enc_std, v.dec_std]]),
        extra,
    )
