"""Measure SubTransformer latency on this machine: HAT's protocol plus noise controls.

Protocol (SPEC "Measuring"): a dummy source of ``src_len`` tokens (30 WMT, 23 IWSLT), batch 1.
The encoder is timed alone. The decoder is timed as an incremental (cached) decode of ``src_len``
steps with ``beam`` hypotheses (the encoder output expanded with ``reorder_encoder_out``, a fresh
``incremental_state`` per run, one token fed per step, output projection included). ``warmup``
untimed runs, then ``iters`` timed runs; the 10%-90% trimmed runs give mean and std in ms.

Unlike HAT (train mode with autograd on, an accident) we measure in eval mode under
``torch.inference_mode``; ``Protocol.train_mode`` reproduces HAT's way. CPU runs use a fixed
thread count and ``time.perf_counter`` (or, ``timer="thread"`` with one thread, the measuring
thread's CPU time, which ignores other processes' share of a busy machine); CUDA runs use CUDA
events and synchronise around each run.

Noise controls (:class:`NoiseControl`): a drift reference (the largest SubTransformer) measured at
the start of every session and every ``ref_every`` rows, rows corrected by the ratio of the run's
first reference to the latest one (raw values kept); re-measurement of suspicious rows (high
std/mean, or far from a quick least-squares fit on cost proxies of the rows so far).

:func:`measure_dataset` writes HAT's CSV (14 columns, then extras) one fsynced row at a time and
resumes a killed run from its last complete row (a lock file keeps a second writer out); the
seeded sampling makes row ``i`` the same SubTransformer in every run with the same seed. The
command line (``latency_dataset.py``) is :func:`main`.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import platform
import random
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hat.atomic import atomic_write_text, check_writable
from hat.errors import HatConfigError
from hat.latency import csvio
from hat.runstate import check_resume
from hat.space import SearchSpace, SubConfig

EOS, DUMMY_TOKEN = 2, 7
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
# Settings that change measured values: a resumed run must match them.
_RESUME_KEYS = ("protocol", "space", "seed", "model", "noise", "hardware")


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Protocol:
    """How one SubTransformer is timed."""

    src_len: int = 30
    beam: int = 5
    warmup: int = 5
    iters: int = 300
    trim: tuple[float, float] = (0.1, 0.9)
    device: str = "cpu"
    threads: int | None = None  # CPU threads (None: leave torch's setting)
    train_mode: bool = False  # HAT's accident: train mode, autograd on
    timer: str = "wall"  # wall: perf_counter / CUDA events; thread: CPU time of this thread
    cuda_graph: bool = False  # GPU: time CUDA-graph replays (no host launch overhead)

    def __post_init__(self) -> None:
        for name in ("src_len", "beam", "iters"):
            if getattr(self, name) < 1:
                raise HatConfigError(f"latency protocol: {name} must be >= 1, "
                                     f"got {getattr(self, name)}")
        if self.warmup < 0:
            raise HatConfigError(f"latency protocol: warmup must be >= 0, got {self.warmup}")
        lo, hi = self.trim
        if not 0 <= lo < hi <= 1:
            raise HatConfigError(f"latency protocol: trim must satisfy 0 <= lo < hi <= 1, "
                                 f"got {self.trim}")
        if self.threads is not None and self.threads < 1:
            raise HatConfigError(f"latcpu-threads must be >= 1, got {self.threads}")
        if self.timer not in ("wall", "thread"):
            raise HatConfigError(f"latcpu-timer must be wall or thread, got {self.timer!r}")
        if self.cuda_graph and not self.device.startswith("cuda"):
            raise HatConfigError("latgpu-cuda-graph times CUDA-graph replays: it needs latgpu "
                                 f"(got device {self.device})")
        if self.timer == "thread" and (self.device != "cpu" or self.threads != 1):
            raise HatConfigError(
                "latcpu-timer thread times the CPU time of the measuring thread: it needs latcpu "
                f"and latcpu-threads 1 (got device {self.device}, threads {self.threads})")


@dataclass(frozen=True)
class NoiseControl:
    """Drift reference and outlier re-measurement (0 switches a control off)."""

    ref_every: int = 25  # re-measure the reference every K rows (0: no drift reference)
    drift_correct: bool = True  # scale rows by first_reference / latest_reference
    drift_tolerance: float = 0.02  # ...only when the ratio is off by more than this
    outlier_cv: float = 0.10  # re-measure when std/mean (trimmed) exceeds this
    outlier_fit: float = 0.25  # ...or the row is this far (relative) from the quick fit
    fit_min_rows: int = 30  # rows needed before the quick fit is used
    remeasure: int = 2  # at most this many extra attempts per row
    # interleaved reference: every timed run of a row is followed by one run of the smallest
    # SubTransformer (decoding ``interleave_steps`` steps); the row is its per-run ratios to it
    interleave: bool = False
    interleave_steps: int = 10

    def __post_init__(self) -> None:
        if self.interleave and self.ref_every > 0:
            raise HatConfigError("lat-ref-interleave replaces the periodic drift reference: set "
                                 f"lat-ref-every 0 (got {self.ref_every})")
        if self.interleave_steps < 1:
            raise HatConfigError(f"lat-ref-interleave-steps must be >= 1, "
                                 f"got {self.interleave_steps}")

    @classmethod
    def off(cls) -> NoiseControl:
        """No reference, no correction, no re-measurement (HAT's way)."""
        return cls(ref_every=0, drift_correct=False, outlier_cv=0.0, outlier_fit=0.0,
                   remeasure=0)


@dataclass(frozen=True)
class Measurement:
    """Trimmed mean/std (ms) of encoder and decoder runs."""

    enc_mean: float
    dec_mean: float
    enc_std: float
    dec_std: float
    # interleaved-reference measurements: the row's own runs and the reference's (ms)
    raw: Measurement | None = None
    ref: Measurement | None = None

    @property
    def total(self) -> float:
        """Encoder + decoder mean (the predictor's target)."""
        return self.enc_mean + self.dec_mean

    @property
    def cv(self) -> float:
        """Largest relative std of the two parts."""
        return max(self.enc_std / self.enc_mean, self.dec_std / self.dec_mean)

    def scaled(self, f_enc: float, f_dec: float) -> Measurement:
        """Means and stds scaled by per-part factors."""
        return Measurement(self.enc_mean * f_enc, self.dec_mean * f_dec,
                           self.enc_std * f_enc, self.dec_std * f_dec)


@dataclass
class Row:
    """One finished dataset row."""

    index: int
    config: SubConfig
    value: Measurement  # after drift correction (the 14-column values)
    raw: Measurement  # the kept attempt, uncorrected
    first: Measurement  # the first attempt (what no noise control would have kept)
    reference: Measurement | None
    factors: tuple[float, float]
    attempts: int
    round: int
    timestamp: str


# ----------------------------------------------------------------------------- timing
def trimmed_stats(times_ms: Sequence[float], trim: tuple[float, float] = (0.1, 0.9)
                  ) -> tuple[float, float]:
    """Mean and std (ms) of the runs between the ``trim`` quantiles (all runs if too few)."""
    s = sorted(float(t) for t in times_ms)
    if not s:
        raise ValueError("no timed runs")
    lo, hi = int(len(s) * trim[0]), int(len(s) * trim[1])
    kept = s[lo:hi] if hi > lo else s
    return float(np.mean(kept)), float(np.std(kept))


def resolve_device(device: str) -> torch.device:
    """``cpu`` or ``cuda[:i]``; a clear error when CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HatConfigError(
            "latgpu: GPU latency was requested but torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --latcpu or run "
            "on a machine with a GPU"
        )
    if dev.type not in ("cpu", "cuda"):
        raise HatConfigError(f"latency device must be cpu or cuda, got {device!r}")
    return dev


class Timer:
    """Times a callable in ms: perf_counter on CPU, CUDA events (synchronised) on GPU, or with
    ``thread=True`` the CPU time of the calling thread (one torch thread: time the thread was
    running, so other processes' share of the cores does not count)."""

    def __init__(self, device: torch.device, thread: bool = False) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.clock = time.thread_time if thread else time.perf_counter

    def __call__(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        t0 = self.clock()
        fn()
        return (self.clock() - t0) * 1000.0


class LatencyMeter:
    """Times SubTransformers of one SuperTransformer (built once, switched per config)."""

    def __init__(self, model: torch.nn.Module, protocol: Protocol) -> None:
        self.protocol = protocol
        self.device = resolve_device(protocol.device)
        if self.device.type == "cpu" and protocol.threads is not None:
            torch.set_num_threads(protocol.threads)
        self.model = model.to(self.device)
        self.model.train(protocol.train_mode)
        self.timer = Timer(self.device, thread=protocol.timer == "thread")
        n, b = protocol.src_len, protocol.beam
        self.src = torch.full((1, n), DUMMY_TOKEN, dtype=torch.long, device=self.device)
        self.src[0, -1] = EOS
        self.src_lengths = torch.tensor([n], device=self.device)
        self.prev = torch.full((b, n), DUMMY_TOKEN, dtype=torch.long, device=self.device)
        self.prev[:, 0] = EOS
        self.beam_order = torch.zeros(b, dtype=torch.long, device=self.device)

    def encode(self) -> Any:
        """One encoder pass over the dummy source (no padding: no device->host check)."""
        return self.model.encoder(self.src, self.src_lengths, has_padding=False)

    def decoder_run(self, enc_out: Any, steps: int, prev: torch.Tensor | None = None
                    ) -> Callable[[], Any]:
        """A callable decoding ``steps`` incremental steps of ``prev`` (default: the dummy
        target) against ``enc_out``; it returns the last step's decoder output."""
        prev = self.prev if prev is None else prev

        def run() -> Any:
            state: dict = {}
            for t in range(steps):
                out = self.model.decoder(prev[:, : t + 1], enc_out, incremental_state=state)
            return out

        return run

    def _time(self, fn: Callable[[], Any]) -> tuple[list[float], Any]:
        """Warm up, then ``iters`` timed runs of ``fn`` (eager, or replays of its CUDA graph);
        returns the times (ms) and the last run's output."""
        p = self.protocol
        if p.cuda_graph:
            fn = self._capture(fn)
        for _ in range(p.warmup):
            fn()
        last: list = []

        def run() -> None:
            last[:] = [fn()]

        times = [self.timer(run) for _ in range(p.iters)]
        return times, last[0]

    def _capture(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn`` captured as a CUDA graph (after warm-up runs on a side stream, as the CUDA-graph
        docs require); the returned callable replays it and returns the graph's output."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2 if self.protocol.warmup else 1):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = fn()
        except RuntimeError as e:
            raise HatConfigError(f"latgpu-cuda-graph: this model could not be captured as a CUDA "
                                 f"graph ({e}); measure without latgpu-cuda-graph") from e

        def replay() -> Any:
            graph.replay()
            return out

        return replay

    def measure_interleaved(self, cfg: SubConfig, ref: SubConfig, ref_steps: int
                            ) -> tuple[Measurement, Measurement, Measurement]:
        """Time ``cfg`` with a run of ``ref`` (decoding ``ref_steps`` steps) right after each of
        its runs. Returns (row ms, reference ms, trimmed per-run ratios row/reference): the
        ratio cancels whatever slowed both runs (the machine's speed changing within seconds)."""
        p, model = self.protocol, self.model
        if p.cuda_graph:
            raise HatConfigError("lat-ref-interleave times eager runs: it cannot be combined "
                                 "with latgpu-cuda-graph")
        with self._grad_context(), _gc_paused():
            outs = {}
            for name, c in (("row", cfg), ("ref", ref)):
                model.set_sample_config(c)
                outs[name] = model.encoder.reorder_encoder_out(self.encode(), self.beam_order)

            runs = {k: [] for k in ("row_enc", "ref_enc", "row_dec", "ref_dec")}
            for part, fns in (("enc", (self.encode, self.encode)),
                              ("dec", (self.decoder_run(outs["row"], p.src_len),
                                       self.decoder_run(outs["ref"], ref_steps)))):
                for it in range(p.warmup + p.iters):
                    for name, c, fn in (("row", cfg, fns[0]), ("ref", ref, fns[1])):
                        model.set_sample_config(c)
                        t = self.timer(fn)
                        if it >= p.warmup:
                            runs[f"{name}_{part}"].append(t)

        def stats(enc: list[float], dec: list[float]) -> Measurement:
            (em, es), (dm, ds) = trimmed_stats(enc, p.trim), trimmed_stats(dec, p.trim)
            return Measurement(em, dm, es, ds)

        ratio = stats([a / b for a, b in zip(runs["row_enc"], runs["ref_enc"])],
                      [a / b for a, b in zip(runs["row_dec"], runs["ref_dec"])])
        return (stats(runs["row_enc"], runs["row_dec"]), stats(runs["ref_enc"], runs["ref_dec"]),
                ratio)

    def _grad_context(self) -> Any:
        return torch.enable_grad() if self.protocol.train_mode else torch.inference_mode()

    def measure(self, cfg: SubConfig, return_runs: bool = False
                ) -> Measurement | tuple[Measurement, list[float]]:
        """Trimmed encoder and decoder latency of one SubTransformer (and, with
        ``return_runs``, the single decoder runs in ms). Python's garbage collector is paused
        while timing."""
        p, model = self.protocol, self.model
        model.set_sample_config(cfg)
        with self._grad_context(), _gc_paused():
            enc_t, enc_out = self._time(self.encode)
            enc_out = model.encoder.reorder_encoder_out(enc_out, self.beam_order)
            dec_t, _ = self._time(self.decoder_run(enc_out, p.src_len))
        em, es = trimmed_stats(enc_t, p.trim)
        dm, ds = trimmed_stats(dec_t, p.trim)
        m = Measurement(em, dm, es, ds)
        return (m, dec_t) if return_runs else m


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off (a collection inside a timed run is noise)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ----------------------------------------------------------------------------- outlier fit
def cost_proxies(cfg: SubConfig, qkv_dim: int = 512) -> tuple[list[float], list[float]]:
    """Regressors for a quick linear fit of encoder and decoder latency (weights read, layers,
    heads, attended encoder layers, output-projection width)."""
    q, e, d = qkv_dim, cfg.encoder_embed_dim, cfg.decoder_embed_dim
    enc = [1.0, cfg.encoder_layer_num,
           sum(4 * q * e + 2 * e * f for f in cfg.encoder_ffn_embed_dim) / 1e6,
           float(sum(cfg.encoder_self_attention_heads))]
    dec = [1.0, cfg.decoder_layer_num,
           sum(2 * q * d + 2 * q * e + 4 * q * d + 2 * d * f  # self, ende (q,o + k,v), ffn
               for f in cfg.decoder_ffn_embed_dim) / 1e6,
           float(sum(cfg.decoder_self_attention_heads) + sum(cfg.decoder_ende_attention_heads)),
           float(sum(1 if a == -1 else a + 1 for a in cfg.decoder_arbitrary_ende_attn)),
           d / 100.0]
    return enc, dec


class QuickFit:
    """Least-squares fit of recent rows' latency on :func:`cost_proxies` (outlier detection)."""

    def __init__(self, qkv_dim: int, window: int = 400) -> None:
        self.qkv_dim, self.window = qkv_dim, window
        self.x: tuple[list[list[float]], list[list[float]]] = ([], [])
        self.y: tuple[list[float], list[float]] = ([], [])

    def add(self, cfg: SubConfig, m: Measurement) -> None:
        """Record a finished row."""
        for k, (x, y) in enumerate(zip(cost_proxies(cfg, self.qkv_dim), (m.enc_mean, m.dec_mean))):
            self.x[k].append(x)
            self.y[k].append(y)
            del self.x[k][: -self.window], self.y[k][: -self.window]

    def __len__(self) -> int:
        return len(self.y[0])

    def deviation(self, cfg: SubConfig, m: Measurement) -> tuple[float, float]:
        """(relative deviation of the row's total from the fit, the fit's typical deviation)."""
        pred, typical = 0.0, []
        for k, x_new in enumerate(cost_proxies(cfg, self.qkv_dim)):
            x, y = np.asarray(self.x[k]), np.asarray(self.y[k])
            scale = np.maximum(np.abs(x).max(0), 1e-9)
            a = x / scale
            # a little ridge keeps the constant encoder_layer_num column harmless
            coef = np.linalg.solve(a.T @ a + 1e-6 * np.eye(a.shape[1]), a.T @ y)
            pred += float(np.asarray(x_new) / scale @ coef)
            typical.append(np.median(np.abs(a @ coef - y) / y))
        pred = max(pred, 1e-9)
        return abs(m.total - pred) / pred, float(max(typical))


# ----------------------------------------------------------------------------- dataset
def sample_row(space: SearchSpace, seed: int, index: int) -> SubConfig:
    """The SubTransformer of row ``index``: its own RNG, so rows do not depend on each other."""
    return space.sample(random.Random((seed << 32) + index))


def reference_config(space: SearchSpace) -> SubConfig:
    """The drift reference: the largest SubTransformer (most arbitrary attention)."""
    return space.largest(arbitrary=max(space.decoder_arbitrary_ende_attn_choice))


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model (from /proc/cpuinfo), core count, GPU name, torch/python versions."""
    info: dict[str, Any] = {
        "hostname": platform.node(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _hardware(device: torch.device) -> dict[str, Any]:
    """What must not change between the sessions of one dataset."""
    info = machine_info(device)
    keys = ("cpu", "cpu_count", "torch") + (("gpu",) if device.type == "cuda" else ())
    return {k: info[k] for k in keys}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _meta_path(csv_path: Path) -> Path:
    return Path(str(csv_path) + ".meta.json")


def _space_dict(space: SearchSpace) -> dict[str, Any]:
    d = asdict(space)
    d.pop("source", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


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


def _read_existing(path: Path) -> tuple[int, list[tuple[SubConfig, Measurement]], int]:
    """Rows already in ``path`` (a truncated final line is cut off), their configs and the last
    measurement round."""
    if not path.exists() or path.stat().st_size == 0:
        return 0, [], 0
    csvio.repair_truncated_tail(path)
    text = path.read_text(encoding="utf-8")
    if text.count("\n") <= 1:  # header only
        return 0, [], 0
    table = csvio.read_rows(path)
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
        return len(csvio.read_rows(path))


def _require_sidecar(path: Path, rows: int) -> None:
    """A CSV with rows is resumed only with its sidecar (how the rows were measured)."""
    meta_path = _meta_path(path)
    if rows and not meta_path.is_file():
        raise HatConfigError(
            f"{path}: cannot resume: it has {rows} rows but no sidecar {meta_path.name} "
            "recording how they were measured (protocol, machine, seed), so new rows could "
            "silently mix with rows measured another way; delete the CSV to measure from "
            "scratch, or pass another --lat-dataset-path")


def _check_resume(path: Path, meta_path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    if not meta_path.is_file():
        _require_sidecar(path, count_rows(path))
        return {}
    try:
        old = json.loads(meta_path.read_text())
    except ValueError as e:
        raise HatConfigError(f"{meta_path}: unreadable sidecar ({e})") from None
    check_resume(meta_path, old, settings, _RESUME_KEYS, "latency dataset",
                 "use another lat-dataset-path or the same settings")
    return old


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
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path):
        return _measure_dataset(meter, space, path, size, seed, noise or NoiseControl(), command,
                                model_info, progress, max_new_rows, on_row, baseline)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One writer per CSV: a second run on the same file fails instead of duplicating rows."""
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise HatConfigError(f"{path}: another process (pid {f.read().strip() or '?'}) is "
                                 "measuring into this file; wait for it or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(f, fcntl.LOCK_UN)


def _measure_dataset(meter: LatencyMeter, space: SearchSpace, path: Path, size: int, seed: int,
                     noise: NoiseControl, command: str | None, model_info: dict[str, Any] | None,
                     progress: bool, max_new_rows: int | None,
                     on_row: Callable[[Row], None] | None, given_baseline: Measurement | None
                     ) -> DatasetResult:
    p = meter.protocol
    settings = {
        "protocol": json.loads(json.dumps(asdict(p))),
        "space": _space_dict(space),
        "seed": seed,
        "model": model_info or {},
        "noise": asdict(noise),
        "hardware": _hardware(meter.device),
    }
    meta_path = _meta_path(path)
    old_meta = _check_resume(path, meta_path, settings) if path.exists() else {}
    n_done, done, last_round = _read_existing(path)
    result = DatasetResult(path, existing=n_done, total=n_done)
    fit = QuickFit(space.qkv_dim)
    for cfg, m in done:
        fit.add(cfg, m)
    ref_cfg = reference_config(space)
    il_cfg = space.smallest()  # the interleaved reference: the cheapest SubTransformer
    il_base = old_meta.get("reference", {}).get("interleave", {}).get("baseline")
    baseline = old_meta.get("reference", {}).get("baseline")
    if baseline is None and given_baseline is not None:
        baseline = {"enc_mean": given_baseline.enc_mean, "dec_mean": given_baseline.dec_mean,
                    "at": "given"}
    rounds0 = max(int(old_meta.get("reference", {}).get("measurements", 0)), last_round)
    sessions = list(old_meta.get("sessions", []))
    session = {"started": _now(), "command": command or " ".join(sys.argv),
               "rows_before": n_done, "pid": os.getpid()}
    sessions.append(session)

    def write_meta(status: str) -> None:
        meta = {
            "format": "hat latency dataset sidecar v1",
            "csv": path.name,
            "machine": machine_info(meter.device),
            **settings,
            "measure_mode": "train mode, autograd on (HAT's)" if p.train_mode
            else "eval mode, torch.inference_mode",
            "timer": "CUDA events around CUDA-graph replays" if p.cuda_graph else
            "CUDA events" if meter.device.type == "cuda" else
            "time.thread_time (CPU time of the measuring thread)" if p.timer == "thread"
            else "time.perf_counter",
            "reference": {"config": ref_cfg.to_dict(), "baseline": baseline,
                          "measurements": rounds0 + len(result.references),
                          "every_rows": noise.ref_every,
                          **({"interleave": {"config": il_cfg.to_dict(),
                                             "decode_steps": noise.interleave_steps,
                                             "baseline": il_base}} if noise.interleave else {})},
            "rows": result.total,
            "size": size,
            "status": status,
            "sessions": sessions,
            "columns": list(csvio.HEADER) + list(EXTRA_COLUMNS),
        }
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")

    if n_done >= size:
        return result
    t0 = time.perf_counter()
    ref: Measurement | None = None
    factors = (1.0, 1.0)

    def measure_row(cfg: SubConfig) -> Measurement:
        """A row's measurement; with the interleaved reference: baseline x run ratios."""
        nonlocal il_base
        if not noise.interleave:
            return meter.measure(cfg)
        raw, ref_m, ratio = meter.measure_interleaved(cfg, il_cfg, noise.interleave_steps)
        if il_base is None:  # the first row's reference sets the scale of the whole dataset
            il_base = {"enc_mean": ref_m.enc_mean, "dec_mean": ref_m.dec_mean, "at": _now()}
        return replace(ratio.scaled(il_base["enc_mean"], il_base["dec_mean"]), raw=raw, ref=ref_m)

    def measure_reference() -> Measurement:
        nonlocal baseline, factors
        m = _measure_with_retries(meter.measure, ref_cfg, noise, fit=None)[0]
        result.references.append(m)
        if baseline is None:
            baseline = {"enc_mean": m.enc_mean, "dec_mean": m.dec_mean, "at": _now()}
        if noise.drift_correct:
            factors = (_factor(baseline["enc_mean"], m.enc_mean, noise.drift_tolerance),
                       _factor(baseline["dec_mean"], m.dec_mean, noise.drift_tolerance))
        return m

    bar = _progress(progress, size, n_done)
    new = 0
    status = "interrupted"
    try:
        if noise.ref_every > 0:
            ref = measure_reference()
        write_meta("running")
        for i in range(n_done, size):
            if max_new_rows is not None and new >= max_new_rows:
                raise _StopRun
            if noise.ref_every > 0 and new > 0 and new % noise.ref_every == 0:
                ref = measure_reference()
                session["rows_after"] = result.total
                write_meta("running")  # keep the sidecar's row count and references current
            cfg = sample_row(space, seed, i)
            kept, first, attempts = _measure_with_retries(measure_row, cfg, noise, fit, factors)
            if kept.raw is not None:  # interleaved reference: kept is already corrected
                value, raw, row_ref = kept, kept.raw, kept.ref
                f = (kept.enc_mean / raw.enc_mean, kept.dec_mean / raw.dec_mean)
            else:
                value, raw, row_ref, f = kept.scaled(*factors), kept, ref, factors
            row = Row(i, cfg, value, raw, first, row_ref, f, attempts,
                      rounds0 + len(result.references), _now())
            _append_row(path, row)
            fit.add(cfg, row.value)
            result.rows.append(row)
            result.total = i + 1
            new += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ms=f"{row.value.total:.1f}", tries=attempts)
            if on_row is not None:
                on_row(row)
        status = "complete"
    except _StopRun:
        status = "stopped"
    finally:
        if bar is not None:
            bar.close()
        result.seconds = time.perf_counter() - t0
        session.update({"ended": _now(), "rows_after": result.total, "status": status,
                        "seconds": round(result.seconds, 1)})
        write_meta("complete" if result.total >= size else status)
    return result


def _factor(baseline: float, current: float, tolerance: float) -> float:
    f = baseline / current
    return f if abs(f - 1.0) > tolerance else 1.0


def _flagged(m: Measurement, cfg: SubConfig, noise: NoiseControl, fit: QuickFit | None,
             factors: tuple[float, float] = (1.0, 1.0)) -> bool:
    m = m.scaled(*factors)
    if noise.outlier_cv > 0 and m.cv > noise.outlier_cv:
        return True
    if fit is not None and noise.outlier_fit > 0 and len(fit) >= noise.fit_min_rows:
        dev, typical = fit.deviation(cfg, m)
        return dev > max(noise.outlier_fit, 4 * typical)
    return False


def _measure_with_retries(measure: Callable[[SubConfig], Measurement], cfg: SubConfig,
                          noise: NoiseControl, fit: QuickFit | None,
                          factors: tuple[float, float] = (1.0, 1.0)
                          ) -> tuple[Measurement, Measurement, int]:
    """Measure; while the attempt looks noisy, measure again (at most ``remeasure`` times).

    Keeps the first clean attempt, else the lower median (by total) of all attempts: contention
    only adds time, so the lower one is the better estimate. Returns (kept, first, attempts).
    """
    attempts = [measure(cfg)]
    while len(attempts) <= noise.remeasure and _flagged(attempts[-1], cfg, noise, fit, factors):
        attempts.append(measure(cfg))
    if len(attempts) == 1 or not _flagged(attempts[-1], cfg, noise, fit, factors):
        kept = attempts[-1]
    else:
        kept = sorted(attempts, key=lambda m: m.total)[(len(attempts) - 1) // 2]
    return kept, attempts[0], len(attempts)


def _append_row(path: Path, row: Row) -> None:
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


def _progress(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="row", desc="latency", dynamic_ncols=True,
                smoothing=0.05)


def relative_agreement(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Test-retest agreement: median/mean |a-b|/a (%) and share within +-10% / +-5% (%)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    rel = np.abs(y - x) / x
    return {"median_rel_err_pct": float(100 * np.median(rel)),
            "mean_rel_err_pct": float(100 * np.mean(rel)),
            "within10_pct": float(100 * np.mean(rel <= 0.10)),
            "within5_pct": float(100 * np.mean(rel <= 0.05)),
            "n": int(len(x))}


# ----------------------------------------------------------------------------- command line
DEFAULT_LATITER = {"cpu": 10, "cuda": 20}
WMT_VOCAB = 32768  # HAT's wmt16_en_de joined dictionary


def add_args(parser: Any) -> None:
    """latency_dataset.py's keys (HAT's names where HAT had them)."""
    g = parser.add_argument_group("latency dataset")
    a = g.add_argument
    a("--lat-dataset-path", metavar="CSV", help="output CSV (appended to / resumed)")
    a("--lat-dataset-size", type=int, default=2000, metavar="N", help="rows (HAT: 2000)")
    a("--latcpu", action="store_true", help="measure on the CPU")
    a("--latgpu", action="store_true", help="measure on the GPU (CUDA events)")
    a("--latiter", type=int, metavar="N",
      help="timed runs per SubTransformer (default: 10 CPU, 20 GPU as HAT's repo configs; "
           "HAT's published data: 300)")
    a("--latwarmup", type=int, default=5, metavar="N", help="untimed warm-up runs (HAT: 5)")
    a("--latsilent", action="store_true", help="no progress bar")
    a("--latcpu-threads", type=int, metavar="N",
      help="torch CPU threads, fixed and recorded (default: all cores of this process)")
    a("--latcpu-timer", choices=("wall", "thread"), default="wall",
      help="wall: elapsed time (HAT); thread: CPU time of the measuring thread (needs "
           "latcpu-threads 1; ignores time other processes hold the core: shared machines)")
    a("--latgpu-cuda-graph", action="store_true",
      help="GPU: capture the encoder and the whole incremental decode as CUDA graphs and time "
           "their replays (the device's latency without Python's kernel-launch overhead, which "
           "dominates small models on fast GPUs and varies with the host's load)")
    a("--lat-sentence-length", type=int, metavar="N",
      help="dummy source length and decode steps (default: 23 for IWSLT archs, else 30)")
    a("--lat-beam", type=int, default=5, metavar="N", help="hypotheses decoded at once (HAT: 5)")
    a("--lat-src-vocab-size", type=int, metavar="N",
      help="source dictionary size (default: from data/dict.<src>.txt, else 32768)")
    a("--lat-tgt-vocab-size", type=int, metavar="N",
      help="target dictionary size (output projection; default as the source)")
    a("--hat-train-mode-measure", action="store_true",
      help="reproduce HAT's accident: measure in train mode with autograd on "
           "(default: eval mode under torch.inference_mode)")
    a("--lat-ref-every", type=int, default=25, metavar="K",
      help="re-measure the drift reference every K rows (0: off)")
    a("--lat-ref-interleave", action="store_true",
      help="after every timed run of a row, time one run of the smallest SubTransformer and "
           "keep the row's per-run ratios to it (x the first row's reference, ms): removes "
           "speed changes of the machine within seconds; needs lat-ref-every 0")
    a("--lat-ref-interleave-steps", type=int, default=10, metavar="N",
      help="decode steps of the interleaved reference (fewer: cheaper)")
    a("--lat-no-drift-correct", action="store_true",
      help="record the reference but do not correct rows with it")
    a("--lat-drift-tolerance", type=float, default=0.02, metavar="F",
      help="correct only when reference/baseline is off by more than this")
    a("--lat-outlier-cv", type=float, default=0.10, metavar="F",
      help="re-measure a row whose std/mean exceeds this (0: off)")
    a("--lat-outlier-fit", type=float, default=0.25, metavar="F",
      help="re-measure a row this far (relative) from a quick fit of earlier rows (0: off)")
    a("--lat-remeasure", type=int, default=2, metavar="N", help="extra attempts per row at most")
    a("--lat-max-new-rows", type=int, metavar="N", help="stop after N new rows this session")


def parse_args(argv: Sequence[str] | None = None) -> Any:
    """fairseq args + latency keys from ``--configs`` YAML and the command line."""
    from hat.config import expand_config_files, parse_fairseq_args

    argv = list(sys.argv[1:] if argv is None else argv)
    tokens = expand_config_files(argv)[0]
    if not tokens or tokens[0].startswith("-"):  # no data: not needed to measure
        argv = ["(no-data)", *argv]
    return parse_fairseq_args(argv, add_extra=add_args)


def protocol_from_args(args: Any) -> Protocol:
    """The :class:`Protocol` (device, iterations, threads, length) the args ask for."""
    if args.latcpu and args.latgpu:
        raise HatConfigError("latcpu and latgpu are both set; choose one")
    if args.latgpu:
        device = str(resolve_device(f"cuda:{getattr(args, 'device_id', 0) or 0}"))
    else:
        device = "cpu"
    kind = "cuda" if device.startswith("cuda") else "cpu"
    iters = args.latiter if args.latiter is not None else DEFAULT_LATITER[kind]
    threads = None
    if kind == "cpu":
        threads = args.latcpu_threads or len(os.sched_getaffinity(0))
    length = args.lat_sentence_length or (23 if "iwslt" in str(args.arch) else 30)
    return Protocol(src_len=length, beam=args.lat_beam, warmup=args.latwarmup, iters=iters,
                    device=device, threads=threads, train_mode=args.hat_train_mode_measure,
                    timer=args.latcpu_timer if kind == "cpu" else "wall",
                    cuda_graph=args.latgpu_cuda_graph)


def noise_from_args(args: Any) -> NoiseControl:
    """The :class:`NoiseControl` the args ask for."""
    for key in ("lat_ref_every", "lat_remeasure"):
        if getattr(args, key) < 0:
            raise HatConfigError(f"{key.replace('_', '-')} must be >= 0")
    return NoiseControl(ref_every=args.lat_ref_every, drift_correct=not args.lat_no_drift_correct,
                        drift_tolerance=args.lat_drift_tolerance, outlier_cv=args.lat_outlier_cv,
                        outlier_fit=args.lat_outlier_fit, remeasure=args.lat_remeasure,
                        interleave=args.lat_ref_interleave,
                        interleave_steps=args.lat_ref_interleave_steps)


def vocab_sizes(args: Any) -> tuple[int, int]:
    """(source, target) dictionary sizes: the data's dict files, else the config keys."""
    src, tgt = args.lat_src_vocab_size, args.lat_tgt_vocab_size
    data = Path(str(getattr(args, "data", "") or ""))
    s_lang, t_lang = getattr(args, "source_lang", None), getattr(args, "target_lang", None)
    if src is None and s_lang and (data / f"dict.{s_lang}.txt").is_file():
        src = _dict_len(data / f"dict.{s_lang}.txt")
    if tgt is None and t_lang and (data / f"dict.{t_lang}.txt").is_file():
        tgt = _dict_len(data / f"dict.{t_lang}.txt")
    src = src or WMT_VOCAB
    tgt = src if getattr(args, "share_all_embeddings", False) else (tgt or src)
    if src <= DUMMY_TOKEN or tgt <= DUMMY_TOKEN:
        raise HatConfigError(f"lat vocabulary sizes must exceed {DUMMY_TOKEN}, got {src}/{tgt}")
    return src, tgt


def _dict_len(path: Path) -> int:
    from fairseq.data import Dictionary

    return len(Dictionary.load(str(path)))


def build_model(args: Any, seed: int = 1) -> tuple[torch.nn.Module, SearchSpace, dict[str, Any]]:
    """A randomly initialised SuperTransformer at the super dims, its sampling space, and a
    description of it (weights do not matter for latency)."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    from hat.checkpoint import ShapeTask, dummy_dictionary

    src_n, tgt_n = vocab_sizes(args)
    src = dummy_dictionary(src_n)
    tgt = src if args.share_all_embeddings or tgt_n == src_n else dummy_dictionary(tgt_n)
    torch.manual_seed(seed)
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, ShapeTask(src, tgt))
    space = model.space
    info = {"arch": args.arch, "src_vocab": src_n, "tgt_vocab": tgt_n,
            "share_all_embeddings": bool(args.share_all_embeddings),
            "attn_impl": getattr(args, "attn_impl", None)}
    return model, space, info


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """``latency_dataset.py``: measure (or resume) a latency dataset."""
    args = parse_args(argv)
    if not args.lat_dataset_path:
        raise HatConfigError("lat-dataset-path is not set (key in the YAML or "
                             "--lat-dataset-path on the command line)")
    if args.lat_dataset_size < 1:
        raise HatConfigError(f"lat-dataset-size must be >= 1, got {args.lat_dataset_size}")
    protocol = protocol_from_args(args)
    noise = noise_from_args(args)
    path = check_writable(args.lat_dataset_path, "lat-dataset-path", append=True)
    done = count_rows(path)
    if done >= args.lat_dataset_size:
        print(f"| {path} is already complete: {done} rows (lat-dataset-size "
              f"{args.lat_dataset_size}); nothing to measure. To measure again: delete it (and "
              f"{_meta_path(path).name}), pass another --lat-dataset-path, or raise "
              "--lat-dataset-size to add rows with the same settings", file=sys.stderr)
        return 0
    _require_sidecar(path, done)
    model, space, info = build_model(args, args.seed)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID`: record the session, then stop
    meter = LatencyMeter(model, protocol)
    cmd = " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)])
    if not args.latsilent:
        print(f"| latency dataset -> {args.lat_dataset_path}: {args.lat_dataset_size} rows on "
              f"{protocol.device} (threads {protocol.threads}), length {protocol.src_len}, beam "
              f"{protocol.beam}, warmup {protocol.warmup}, latiter {protocol.iters}, "
              f"{'CUDA-graph replays, ' if protocol.cuda_graph else ''}"
              f"{'train mode (HAT)' if protocol.train_mode else 'eval + inference_mode'}"
              f"{f'; resuming after its {done} rows' if done else ''}", file=sys.stderr)
    try:
        res = measure_dataset(meter, space, args.lat_dataset_path, args.lat_dataset_size,
                              seed=args.seed, noise=noise, command=cmd, model_info=info,
                              progress=not args.latsilent, max_new_rows=args.lat_max_new_rows)
    except KeyboardInterrupt as e:  # Ctrl-C or `kill`: rows on disk are kept
        print(f"| interrupted ({str(e) or 'Ctrl-C'}): {count_rows(path)} rows kept in {path}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    per_row = res.seconds / max(1, len(res.rows))
    print(f"| {res.path}: {res.total}/{args.lat_dataset_size} rows ({len(res.rows)} new, "
          f"{per_row:.2f} s/row); sidecar {_meta_path(res.path)}", file=sys.stderr)
    return 0


__all__ = [
    "DatasetResult", "LatencyMeter", "Measurement", "NoiseControl", "Protocol", "QuickFit",
    "Row", "Timer", "add_args", "build_model", "cost_proxies", "count_rows", "cpu_model",
    "machine_info", "main", "measure_dataset", "noise_from_args", "parse_args",
    "protocol_from_args", "reference_config", "relative_agreement", "resolve_device",
    "sample_row", "trimmed_stats",
]
