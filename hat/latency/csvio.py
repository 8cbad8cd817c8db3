"""Read and write HAT's latency-dataset CSV files.

Format (HAT's): a header line with the 10 predictor feature names, then ``latency_mean_encoder,
latency_mean_decoder, latency_std_encoder, latency_std_decoder`` (milliseconds); one row per
measured SubTransformer. Extra columns after these 14 are allowed and preserved as strings.

Every line this module writes ends with a newline, so an unterminated final line can only come
from a writer that was killed mid-row; :func:`read_latency_table` with
``allow_truncated_tail=True`` drops such a line with a warning (resumable measurement), and
:func:`append_rows` cuts it off before appending.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hat.atomic import atomic_write_text
from hat.errors import HatConfigError
from hat.space import FEATURE_NAMES

LATENCY_NAMES: tuple[str, ...] = (
    "latency_mean_encoder",
    "latency_mean_decoder",
    "latency_std_encoder",
    "latency_std_decoder",
)
HEADER: tuple[str, ...] = FEATURE_NAMES + LATENCY_NAMES
N_FEATURES = len(FEATURE_NAMES)
# The latency datasets HAT published (``<name>_all.csv``; scripts/fetch_hat_latency.py fetches them)
HAT_LATENCY_DATASETS: tuple[str, ...] = (
    "wmt14ende_cpu_raspberrypi",
    "wmt14ende_cpu_xeon",
    "wmt14ende_gpu_titanxp",
    "iwslt14deen_gpu_titanxp",
)


class LatencyDataError(HatConfigError):
    """A latency CSV is malformed; the message names the file and (1-based) line."""


@dataclass
class LatencyTable:
    """Parsed contents of one latency CSV.

    ``features`` is [N, 10] (HAT's feature order), ``latency`` is [N, 4] (mean enc, mean dec,
    std enc, std dec; ms), ``extra`` maps each extra column name to its N string values,
    ``lines`` holds each row's 1-based line number in the file (when read from one).
    """

    features: np.ndarray
    latency: np.ndarray
    extra: dict[str, list[str]] = field(default_factory=dict)
    dropped_tail: bool = False
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def latency_ms(self) -> np.ndarray:
        """Total latency per row: encoder mean + decoder mean (HAT's predictor target)."""
        return self.latency[:, 0] + self.latency[:, 1]


def _err(path: Path | str, line: int | None, msg: str) -> LatencyDataError:
    loc = f"{path}:{line}" if line is not None else f"{path}"
    return LatencyDataError(f"{loc}: {msg}")


def _parse_header(path: Path | str, cells: list[str]) -> tuple[list[int], list[str]]:
    names = [c.strip() for c in cells]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _err(path, 1, f"duplicate header column(s): {', '.join(dup)}")
    missing = [n for n in HEADER if n not in names]
    if missing:
        raise _err(
            path,
            1,
            f"header is missing required column(s) {', '.join(missing)}; "
            f"expected the columns {', '.join(HEADER)} (found: {', '.join(names) or 'nothing'})",
        )
    index = [names.index(n) for n in HEADER]
    extras = [n for n in names if n not in HEADER]
    return index, extras


def _parse_float(path: Path | str, line: int, name: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _err(path, line, f"column {name!r}: non-numeric value {text!r}") from None
    return v


def read_latency_table(path: str | os.PathLike, allow_truncated_tail: bool = False) -> LatencyTable:
    """Parse and validate a latency CSV.

    Raises :class:`LatencyDataError` (naming file and line) for a missing/duplicate header
    column, a row with the wrong number of columns, a non-numeric or non-finite value, a mean
    latency that is NaN, zero or negative, a negative/NaN std, or a file with no data rows.
    With ``allow_truncated_tail`` an unterminated final line (a killed writer) is dropped with
    a warning instead.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LatencyDataError(f"{path}: latency CSV not found") from None
    except UnicodeDecodeError as e:
        raise _err(path, None, f"not a UTF-8 text file ({e})") from None
    dropped = False
    if text and not text.endswith("\n") and allow_truncated_tail:
        cut = text.rfind("\n") + 1
        if cut > 0:
            lineno = text.count("\n", 0, cut) + 1
            warnings.warn(
                f"{path}:{lineno}: dropping truncated final line {text[cut:][:60]!r} "
                "(no trailing newline: an interrupted write)",
                stacklevel=2,
            )
            text, dropped = text[:cut], True
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise _err(path, 1, "empty file: expected a header line " + ",".join(HEADER))
    header_cells = next(csv.reader([lines[0]]))
    index, extras = _parse_header(path, header_cells)
    extra_idx = [[c.strip() for c in header_cells].index(n) for n in extras]
    ncol = len(header_cells)
    feats: list[list[float]] = []
    lats: list[list[float]] = []
    rows_at: list[int] = []
    extra_vals: dict[str, list[str]] = {n: [] for n in extras}
    for lineno, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        cells = next(csv.reader([raw]))
        if len(cells) != ncol:
            what = "truncated or malformed row" if len(cells) < ncol else "malformed row"
            raise _err(path, lineno, f"{what}: expected {ncol} columns, found {len(cells)}")
        vals = [_parse_float(path, lineno, HEADER[k], cells[i]) for k, i in enumerate(index)]
        for k, v in enumerate(vals):
            name = HEADER[k]
            if not math.isfinite(v):
                raise _err(
                    path, lineno, f"column {name!r}: value {cells[index[k]]!r} is not finite"
                )
            if name.startswith("latency_mean") and v <= 0:
                raise _err(path, lineno, f"column {name!r}: latency must be > 0 ms, got {v!r}")
            if name.startswith("latency_std") and v < 0:
                raise _err(path, lineno, f"column {name!r}: std must be >= 0 ms, got {v!r}")
            if k < N_FEATURES and v <= 0:
                raise _err(path, lineno, f"column {name!r}: feature must be > 0, got {v!r}")
        feats.append(vals[:N_FEATURES])
        lats.append(vals[N_FEATURES:])
        rows_at.append(lineno)
        for n, i in zip(extras, extra_idx):
            extra_vals[n].append(cells[i])
    if not feats:
        raise _err(path, None, "no data rows after the header")
    return LatencyTable(
        features=np.asarray(feats, dtype=np.float64),
        latency=np.asarray(lats, dtype=np.float64),
        extra=extra_vals,
        dropped_tail=dropped,
        lines=rows_at,
    )


def load_latency_csv(
    path: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | list[str]]]:
    """Return ``(features [N,10], latency_ms [N] = enc mean + dec mean, extra)``.

    ``extra`` holds the four latency columns as arrays plus any extra columns (string lists).
    """
    return latency_arrays(read_latency_table(path))


def latency_arrays(
    t: LatencyTable,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | list[str]]]:
    """:func:`load_latency_csv`'s ``(features, latency_ms, extra)`` of a parsed table."""
    extra: dict[str, np.ndarray | list[str]] = {
        n: t.latency[:, k].copy() for k, n in enumerate(LATENCY_NAMES)
    }
    extra.update(t.extra)
    return t.features, t.latency_ms, extra


IMPLAUSIBLE_RATIO = 100.0  # a row this far from the median (either way) is refused
SUSPICIOUS_RATIO = 10.0  # ...this far, warned about (real datasets stay within ~4x of it)


def check_latency_spread(table: LatencyTable, source: str | os.PathLike) -> str | None:
    """Refuse rows whose total latency is >= 100x the dataset's median or <= 1/100 of it (one
    search space's SubTransformers span a few x: HAT's and our datasets stay within 4x of their
    median), so that a unit error or a corrupt row cannot train and score a predictor; return a
    warning naming the rows 10x-100x off (None when there are none)."""
    y = table.latency_ms
    if len(y) == 0:
        return None
    med = float(np.median(y))
    ratio = np.maximum(y / med, med / y)
    lines = table.lines or list(range(2, len(y) + 2))

    def listing(mask: np.ndarray) -> str:
        idx = np.flatnonzero(mask)
        shown = ", ".join(f"line {lines[i]} ({y[i]:.6g} ms)" for i in idx[:5])
        return shown + (f" and {len(idx) - 5} more" if len(idx) > 5 else "")

    bad = ratio >= IMPLAUSIBLE_RATIO
    if bad.any():
        raise LatencyDataError(
            f"{source}: implausible latency in {int(bad.sum())} row(s): {listing(bad)}; the "
            f"median is {med:.6g} ms and rows {IMPLAUSIBLE_RATIO:g}x or more away from it "
            "cannot be one search space's SubTransformers (a unit error or a corrupt row): "
            "fix, re-measure or delete these rows")
    odd = ratio >= SUSPICIOUS_RATIO
    if odd.any():
        return (f"{source}: {int(odd.sum())} suspicious row(s) more than "
                f"{SUSPICIOUS_RATIO:g}x away from the median {med:.6g} ms: {listing(odd)}; "
                "check that they were measured the same way")
    return None


def _fmt(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def _format_rows(
    features: np.ndarray,
    latency: np.ndarray,
    extra: Mapping[str, Sequence[object]] | None,
) -> tuple[list[str], list[str]]:
    features = np.asarray(features, dtype=np.float64)
    latency = np.asarray(latency, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != N_FEATURES:
        raise LatencyDataError(f"features must have shape [N, {N_FEATURES}], got {features.shape}")
    if latency.ndim != 2 or latency.shape != (features.shape[0], len(LATENCY_NAMES)):
        raise LatencyDataError(
            f"latency must have shape [{features.shape[0]}, 4] (mean enc, mean dec, std enc, "
            f"std dec), got {latency.shape}"
        )
    if not (np.all(np.isfinite(latency)) and np.all(latency[:, :2] > 0)):
        raise LatencyDataError("latency means must be finite and > 0 ms")
    extra = dict(extra or {})
    for name, col in extra.items():
        if name in HEADER:
            raise LatencyDataError(f"extra column {name!r} clashes with a required column")
        if len(col) != features.shape[0]:
            raise LatencyDataError(
                f"extra column {name!r} has {len(col)} values, expected {len(features)}"
            )
    header = list(HEADER) + list(extra)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i in range(features.shape[0]):
        w.writerow(
            [_fmt(v) for v in features[i]]
            + [repr(float(v)) for v in latency[i]]
            + [str(col[i]) for col in extra.values()]
        )
    return header, buf.getvalue().splitlines(keepends=True)


def write_latency_csv(
    path: str | os.PathLike,
    features: np.ndarray,
    latency: np.ndarray,
    extra: Mapping[str, Sequence[object]] | None = None,
) -> None:
    """Atomically write a full latency CSV (``latency`` = [N,4]: mean enc/dec, std enc/dec)."""
    header, rows = _format_rows(features, latency, extra)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(header)
    atomic_write_text(path, out.getvalue() + "".join(rows))


def repair_truncated_tail(path: str | os.PathLike) -> bool:
    """Cut an unterminated final line (left by a killed writer); returns True if one was cut."""
    path = Path(path)
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    cut = data.rfind(b"\n") + 1
    if cut == 0:
        raise _err(path, 1, "header line is truncated; delete the file and start again")
    warnings.warn(
        f"{path}: cutting truncated final line {data[cut:][:60]!r} (interrupted write)",
        stacklevel=2,
    )
    with open(path, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    return True


def append_rows(
    path: str | os.PathLike,
    features: np.ndarray,
    latency: np.ndarray,
    extra: Mapping[str, Sequence[object]] | None = None,
) -> None:
    """Append rows to a latency CSV, creating it (atomically, with header) if absent.

    Each call writes whole newline-terminated lines and fsyncs, so a crash loses at most the
    row being written; a truncated tail from an earlier crash is cut before appending. The
    existing header must match the columns being written.
    """
    path = Path(path)
    header, rows = _format_rows(features, latency, extra)
    if not path.exists() or path.stat().st_size == 0:
        write_latency_csv(path, features, latency, extra)
        return
    repair_truncated_tail(path)
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    found = [c.strip() for c in next(csv.reader([first]))] if first.strip() else []
    if found != header:
        raise _err(path, 1, f"cannot append: header {found} differs from the columns {header}")
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write("".join(rows))
        f.flush()
        os.fsync(f.fileno())

