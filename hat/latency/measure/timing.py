"""Timing SubTransformers with HAT's protocol (SPEC "Measuring").

A dummy source of ``src_len`` tokens (30 WMT, 23 IWSLT), batch 1. The encoder is timed alone. The
decoder is timed as an incremental (cached) decode of ``src_len`` steps with ``beam`` hypotheses
(the encoder output expanded with ``reorder_encoder_out``, a fresh ``incremental_state`` per run,
one token fed per step, output projection included). ``warmup`` untimed runs, then ``iters``
timed runs; the 10%-90% trimmed runs give mean and std in ms.

Unlike HAT (train mode with autograd on, an accident) we measure in eval mode under
``torch.inference_mode``; ``Protocol.train_mode`` reproduces HAT's way. CPU runs use a fixed
thread count and ``time.perf_counter`` (or, ``timer="thread"`` with one thread, the measuring
thread's CPU time, which ignores other processes' share of a busy machine); CUDA runs use CUDA
events and synchronise around each run, optionally around CUDA-graph replays.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from hat.errors import HatConfigError
from hat.space import SubConfig

EOS, DUMMY_TOKEN = 2, 7


GENERATOR_TRIES = 3  # a generator's decoder share = whole call - encoder; re-timed if <= 0

# What the decoder part of a measurement times, i.e. the deployment path a latency number is for:
DEPLOYMENTS = {
    # HAT's protocol (HAT's published CSVs): src_len incremental decoder steps over beam copies
    # of a dummy target, no beam search
    "hat": "HAT's protocol: incremental decoder steps on dummy tokens, no beam search",
    # hat.generate's beam search (static key/value cache; replayed as a CUDA graph with
    # cuda_graph), forced to decode exactly src_len tokens: the whole generate call at batch 1
    # (input copy, search, hypotheses read back); its time includes the encoder, so the
    # encoder's mean is subtracted for the decoder part
    "generate": "hat.generate's beam search (python -m hat.bleu --generator graph on a GPU, "
                "static on a CPU)",
    # fairseq's SequenceGenerator (what fairseq-generate runs), forced to src_len tokens; its
    # time includes the encoder, so the encoder's mean is subtracted for the decoder part
    "fairseq-generate": "fairseq's SequenceGenerator (fairseq-generate, test.sh)",
}


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
    deployment: str = "hat"  # which decode is timed: one of DEPLOYMENTS

    @classmethod
    def from_record(cls, rec: dict[str, Any], **changes: Any) -> Protocol:
        """The protocol a dataset's sidecar recorded (``dataclasses.asdict`` of one; keys it
        does not know are ignored), with ``changes`` applied."""
        known = {f.name for f in fields(cls)}
        p = {k: v for k, v in rec.items() if k in known}
        if "trim" in p:
            p["trim"] = tuple(p["trim"])
        return cls(**{**p, **changes})

    def interleave_clash(self) -> str | None:
        """The setting that rules out lat-ref-interleave (which times eager runs of HAT's
        protocol), or None."""
        if self.cuda_graph:
            return "latgpu-cuda-graph"
        return None if self.deployment == "hat" else f"lat-deployment {self.deployment}"

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
        if self.deployment not in DEPLOYMENTS:
            raise HatConfigError(f"lat-deployment {self.deployment!r}: allowed "
                                 f"{', '.join(DEPLOYMENTS)}")
        if self.deployment == "fairseq-generate" and self.cuda_graph:
            raise HatConfigError("lat-deployment fairseq-generate times fairseq's eager "
                                 "generator: it cannot be a CUDA graph (drop latgpu-cuda-graph)")
        if self.deployment != "hat" and self.train_mode:
            raise HatConfigError(f"lat-deployment {self.deployment} times a generator, which "
                                 "runs in eval mode: drop hat-train-mode-measure")
        if self.timer == "thread" and (self.device != "cpu" or self.threads != 1):
            raise HatConfigError(
                "latcpu-timer thread times the CPU time of the measuring thread: it needs latcpu "
                f"and latcpu-threads 1 (got device {self.device}, threads {self.threads})")


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

    def deployed_decode(self, enc_out: Any) -> Callable[[], Any]:
        """The decode the protocol's deployment path runs (see :data:`DEPLOYMENTS`); the
        generators are forced to ``src_len`` decoder steps (``src_len - 1`` tokens, then EOS),
        as many as HAT's protocol runs, and their calls encode the source themselves
        (``enc_out`` is for HAT's protocol)."""
        p = self.protocol
        if p.deployment == "hat":
            return self.decoder_run(enc_out, p.src_len)
        tgt_dict = self.model.decoder.dictionary
        steps = p.src_len - 1
        if p.deployment == "fairseq-generate":
            from fairseq.sequence_generator import SequenceGenerator

            gen = SequenceGenerator([self.model], tgt_dict, beam_size=p.beam, min_len=steps,
                                    max_len_b=steps)
            sample = {"net_input": {"src_tokens": self.src, "src_lengths": self.src_lengths}}
            return lambda: gen.generate([self.model], sample)
        from hat.generate import BeamSettings, GraphBeamSearch, StaticBeamSearch

        kind = GraphBeamSearch if p.cuda_graph else StaticBeamSearch
        search = kind(self.model, tgt_dict, BeamSettings(beam=p.beam, min_len=steps,
                                                         max_len_b=steps))

        def run() -> Any:  # the whole call a user makes, hypotheses read back included
            return search.generate(self.src, self.src_lengths)

        run()  # a GraphBeamSearch captures its graph on the first call: never a timed one
        return run

    def _time(self, fn: Callable[[], Any], capture: bool = True) -> tuple[list[float], Any]:
        """Warm up, then ``iters`` timed runs of ``fn`` (eager, or replays of its CUDA graph
        with ``cuda_graph`` and ``capture``); returns the times (ms) and the last run's
        output."""
        p = self.protocol
        if p.cuda_graph and capture:
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
        clash = p.interleave_clash()
        if clash:
            raise HatConfigError(f"lat-ref-interleave times eager runs of HAT's protocol: it "
                                 f"cannot be combined with {clash}")
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
        for _ in range(GENERATOR_TRIES if p.deployment != "hat" else 1):
            with self._grad_context(), _gc_paused():
                enc_t, enc_out = self._time(self.encode)
                enc_out = model.encoder.reorder_encoder_out(enc_out, self.beam_order)
                # a generator's call is timed whole (hat.generate replays its own graphs)
                dec_t, _ = self._time(self.deployed_decode(enc_out),
                                      capture=p.deployment == "hat")
            em, es = trimmed_stats(enc_t, p.trim)
            if p.deployment != "hat":  # a generator's runs include the encoder
                dec_t = [t - em for t in dec_t]
            dm, ds = trimmed_stats(dec_t, p.trim)
            if dm > 0:
                break
        else:  # the encoder alone timed slower than the whole call, every time
            raise HatConfigError(
                f"lat-deployment {p.deployment}: the decoder's share came out negative "
                f"{GENERATOR_TRIES} times (encoder {em:.3f} ms, whole call {dm + em:.3f} ms): "
                "the machine is too busy to tell them apart; measure on an idle machine or "
                "with more lat-iter runs")
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


def relative_agreement(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Test-retest agreement: median/mean |a-b|/a (%) and share within +-10% / +-5% (%)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    rel = np.abs(y - x) / x
    return {"median_rel_err_pct": float(100 * np.median(rel)),
            "mean_rel_err_pct": float(100 * np.mean(rel)),
            "within10_pct": float(100 * np.mean(rel <= 0.10)),
            "within5_pct": float(100 * np.mean(rel <= 0.05)),
            "n": int(len(x))}
