"""Resumable latency datasets: HAT's CSV (14 columns, then extras) written one fsynced row at
a time, a ``<csv>.meta.json`` sidecar (machine, settings, sessions, references), a killed run
resumed from its last complete row (a lock file keeps a second writer out); the seeded sampling
makes row ``i`` the same SubTransformer in every run with the same seed. The files themselves:
:mod:`hat.latency.measure.dataset_files`."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hat.atomic import atomic_write_text
from hat.errors import HatConfigError
from hat.latency import csvio
from hat.latency.measure.dataset_files import (
    EXTRA_COLUMNS,
    Row,
    append_row,
    check_dataset_resume,
    check_not_shipped,
    meta_path,
    read_existing,
    space_dict,
)
from hat.latency.measure.machine import hardware, machine_info, now
from hat.latency.measure.noise import (
    NoiseControl,
    QuickFit,
    correction_factor,
    measure_with_retries,
)
from hat.latency.measure.timing import DEPLOYMENTS, LatencyMeter, Measurement
from hat.runstate import exclusive
from hat.space import SearchSpace, SubConfig

BASE_RUNS = 5
"""Interleaved reference measurements whose median scales a dataset (after a discarded one)."""


def sample_row(space: SearchSpace, seed: int, index: int) -> SubConfig:
    """The SubTransformer of row ``index``: its own RNG, so rows do not depend on each other."""
    return space.sample(random.Random((seed << 32) + index))


def reference_config(space: SearchSpace) -> SubConfig:
    """The periodic reference: the largest SubTransformer (most arbitrary attention)."""
    return space.largest(arbitrary=max(space.decoder_arbitrary_ende_attn_choice))


@dataclass
class DatasetResult:
    """What :func:`measure_dataset` did."""

    path: Path
    rows: list[Row] = field(default_factory=list)
    existing: int = 0
    total: int = 0
    seconds: float = 0.0
    references: list[Measurement] = field(default_factory=list)


class _StopRun(Exception):
    pass


def measure_dataset(
    meter: LatencyMeter,
    space: SearchSpace,
    path: str | os.PathLike,
    size: int,
    seed: int = 1,
    noise: NoiseControl | None = None,
    command: str | None = None,
    model_info: dict[str, Any] | None = None,
    progress: bool = True,
    max_new_rows: int | None = None,
    on_row: Callable[[Row], None] | None = None,
    baseline: Measurement | None = None,
) -> DatasetResult:
    """Measure rows ``n..size-1`` of a seeded dataset into ``path`` (n = rows already there).

    Every row is appended and fsynced as soon as it is measured; the sidecar ``<csv>.meta.json``
    (machine, settings, sessions, the baseline reference) is rewritten atomically. ``max_new_rows``
    stops early (tests, benchmarks); ``on_row`` is called after each row is on disk. ``baseline``
    (a reference measurement from another run) is used when the file has none yet.
    """
    path = Path(path)
    if size < 1:
        raise HatConfigError(f"lat-dataset-size must be >= 1, got {size}")
    check_not_shipped(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path, "measuring into this file"):
        writer = DatasetWriter(meter, space, path, size, seed, noise or NoiseControl(), command,
                               model_info, baseline)
        return writer.run(progress, max_new_rows, on_row)


class DatasetWriter:
    """One measuring session of a seeded dataset: the rows already on disk, the references,
    the sidecar; :meth:`run` measures the missing rows one by one."""

    def __init__(self, meter: LatencyMeter, space: SearchSpace, path: Path, size: int,
                 seed: int, noise: NoiseControl, command: str | None = None,
                 model_info: dict[str, Any] | None = None,
                 given_baseline: Measurement | None = None) -> None:
        self.meter, self.space, self.path, self.size = meter, space, path, size
        self.seed, self.noise = seed, noise
        p = meter.protocol
        self.settings = {
            "protocol": json.loads(json.dumps(asdict(p))),
            "space": space_dict(space),
            "seed": seed,
            "model": model_info or {},
            "noise": asdict(noise),
            "hardware": hardware(meter.device),
        }
        self.meta_path = meta_path(path)
        old = check_dataset_resume(path, self.meta_path, self.settings) if path.exists() else {}
        n_done, done, last_round = read_existing(path)
        self.result = DatasetResult(path, existing=n_done, total=n_done)
        self.fit = QuickFit(space.qkv_dim)
        for cfg, m in done:
            self.fit.add(cfg, m)
        self.ref_cfg = reference_config(space)
        self.il_cfg = space.smallest()  # the interleaved reference: the cheapest SubTransformer
        old_ref = old.get("reference", {})
        self.il_base = old_ref.get("interleave", {}).get("baseline")
        self.baseline = old_ref.get("baseline")
        if self.baseline is None and given_baseline is not None:
            self.baseline = {"enc_mean": given_baseline.enc_mean,
                             "dec_mean": given_baseline.dec_mean, "at": "given"}
        self.rounds0 = max(int(old_ref.get("measurements", 0)), last_round)
        self.sessions = list(old.get("sessions", []))
        self.session = {"started": now(), "command": command or " ".join(sys.argv),
                        "rows_before": n_done, "pid": os.getpid()}
        self.sessions.append(self.session)
        self.ref: Measurement | None = None
        self.factors = (1.0, 1.0)

    def write_meta(self, status: str) -> None:
        """Rewrite the sidecar atomically (machine, settings, references, sessions)."""
        p, noise = self.meter.protocol, self.noise
        meta = {
            "format": "hat latency dataset sidecar v1",
            "csv": self.path.name,
            "machine": machine_info(self.meter.device),
            **self.settings,
            "measure_mode": "train mode, autograd on (HAT's)" if p.train_mode
            else "eval mode, torch.inference_mode",
            "deployment": DEPLOYMENTS[p.deployment],
            "timer": "CUDA events around CUDA-graph replays" if p.cuda_graph else
            "CUDA events" if self.meter.device.type == "cuda" else
            "time.thread_time (CPU time of the measuring thread)" if p.timer == "thread"
            else "time.perf_counter",
            "reference": {"config": self.ref_cfg.to_dict(), "baseline": self.baseline,
                          "measurements": self.rounds0 + len(self.result.references),
                          "every_rows": noise.ref_every,
                          **({"interleave": {"config": self.il_cfg.to_dict(),
                                             "decode_steps": noise.interleave_steps,
                                             "baseline": self.il_base}}
                             if noise.interleave else {})},
            "rows": self.result.total,
            "size": self.size,
            "status": status,
            "sessions": self.sessions,
            "columns": list(csvio.HEADER) + list(EXTRA_COLUMNS),
        }
        atomic_write_text(self.meta_path, json.dumps(meta, indent=2) + "\n")

    def measure_row(self, cfg: SubConfig) -> Measurement:
        """A row's measurement; with the interleaved reference: baseline x run ratios."""
        if not self.noise.interleave:
            return self.meter.measure(cfg)
        raw, ref_m, ratio = self.meter.measure_interleaved(cfg, self.il_cfg,
                                                           self.noise.interleave_steps)
        if self.il_base is None:  # the scale of the whole dataset: before its first row
            self.il_base = self.interleave_base()
        return replace(ratio.scaled(self.il_base["enc_mean"], self.il_base["dec_mean"]),
                       raw=raw, ref=ref_m)

    def interleave_base(self, runs: int = BASE_RUNS) -> dict[str, Any]:
        """The reference's latency that scales every row's ratio: the median of ``runs``
        interleaved measurements after a discarded first one (a cold first run, e.g. 1.5x the
        others, must not set the scale of the dataset)."""
        steps = self.noise.interleave_steps
        got = [self.meter.measure_interleaved(self.il_cfg, self.il_cfg, steps)[1]
               for _ in range(runs + 1)][1:]
        return {"enc_mean": float(np.median([m.enc_mean for m in got])),
                "dec_mean": float(np.median([m.dec_mean for m in got])),
                "runs": runs, "first_discarded": True, "at": now()}

    def measure_reference(self) -> Measurement:
        """Measure the periodic reference; update the baseline and the correction factors."""
        noise = self.noise
        m = measure_with_retries(self.meter.measure, self.ref_cfg, noise, fit=None)[0]
        self.result.references.append(m)
        if self.baseline is None:
            self.baseline = {"enc_mean": m.enc_mean, "dec_mean": m.dec_mean, "at": now()}
        if noise.drift_correct:
            self.factors = (
                correction_factor(self.baseline["enc_mean"], m.enc_mean, noise.drift_tolerance),
                correction_factor(self.baseline["dec_mean"], m.dec_mean, noise.drift_tolerance))
        self.ref = m
        return m

    def add_row(self, i: int) -> Row:
        """Measure row ``i`` (re-measuring a noisy attempt), append it to the CSV."""
        cfg = sample_row(self.space, self.seed, i)
        kept, first, attempts = measure_with_retries(self.measure_row, cfg, self.noise, self.fit,
                                                     self.factors)
        if kept.raw is not None:  # interleaved reference: kept is already corrected
            value, raw, row_ref = kept, kept.raw, kept.ref
            f = (kept.enc_mean / raw.enc_mean, kept.dec_mean / raw.dec_mean)
        else:
            value, raw, row_ref, f = kept.scaled(*self.factors), kept, self.ref, self.factors
        row = Row(i, cfg, value, raw, first, row_ref, f, attempts,
                  self.rounds0 + len(self.result.references), now())
        append_row(self.path, row)
        self.fit.add(cfg, row.value)
        self.result.rows.append(row)
        self.result.total = i + 1
        return row

    def run(self, progress: bool = True, max_new_rows: int | None = None,
            on_row: Callable[[Row], None] | None = None) -> DatasetResult:
        """Measure the missing rows (a periodic reference first and every ``ref_every`` rows)."""
        result, noise = self.result, self.noise
        if result.total >= self.size:
            return result
        t0 = time.perf_counter()
        bar = _progress(progress, self.size, result.total)
        new, status = 0, "interrupted"
        try:
            if noise.ref_every > 0:
                self.measure_reference()
            self.write_meta("running")
            for i in range(result.total, self.size):
                if max_new_rows is not None and new >= max_new_rows:
                    raise _StopRun
                if noise.ref_every > 0 and new > 0 and new % noise.ref_every == 0:
                    self.measure_reference()
                    self.session["rows_after"] = result.total
                    self.write_meta("running")  # keep row count and references current
                row = self.add_row(i)
                new += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(ms=f"{row.value.total:.1f}", tries=row.attempts)
                if on_row is not None:
                    on_row(row)
            status = "complete"
        except _StopRun:
            status = "stopped"
        finally:
            if bar is not None:
                bar.close()
            result.seconds = time.perf_counter() - t0
            self.session.update({"ended": now(), "rows_after": result.total, "status": status,
                                 "seconds": round(result.seconds, 1)})
            self.write_meta("complete" if result.total >= self.size else status)
        return result


def _progress(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="row", desc="latency", dynamic_ncols=True,
                smoothing=0.05)
