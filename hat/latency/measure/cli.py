"""``latency_dataset.py``: measure (or resume) a latency dataset from a YAML config."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hat.atomic import check_writable
from hat.errors import HatConfigError
from hat.latency.measure.dataset import measure_dataset
from hat.latency.measure.dataset_files import (
    check_not_shipped,
    count_rows,
    meta_path,
    require_sidecar,
)
from hat.latency.measure.model import DEFAULT_LATITER, build_model, sentence_length
from hat.latency.measure.noise import NoiseControl
from hat.latency.measure.timing import (
    DEPLOYMENTS,
    LatencyMeter,
    Protocol,
    resolve_device,
)


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
    a("--lat-deployment", choices=tuple(DEPLOYMENTS), default="hat",
      help="what the decoder time is: hat = HAT's protocol (decoder steps on dummy tokens, no "
           "beam search; HAT's CSVs); generate = the beam search of `python -m hat.bleu "
           "--generator graph` on a GPU, timed as a CUDA graph with latgpu-cuda-graph "
           "(`--generator static`, eager, on a CPU); fairseq-generate = "
           "fairseq's generator (fairseq-generate, test.sh); both forced to "
           "lat-sentence-length steps. Recorded in the sidecar and the predictor")
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
      help="re-measure the periodic reference (the largest SubTransformer) every K rows "
           "(0: off)")
    a("--lat-ref-interleave", action="store_true",
      help="after every timed run of a row, time one run of the smallest SubTransformer and "
           "keep the row's per-run ratios to it (x the first row's reference, ms): removes "
           "speed changes of the machine within seconds; needs lat-ref-every 0")
    a("--lat-ref-interleave-steps", type=int, default=10, metavar="N",
      help="decode steps of the interleaved reference (fewer: cheaper)")
    a("--lat-no-drift-correct", action="store_true",
      help="record the periodic reference but do not correct rows for drift with it")
    a("--lat-drift-tolerance", type=float, default=0.02, metavar="F",
      help="correct only when the periodic reference is off its baseline by more than this")
    a("--lat-outlier-cv", type=float, default=0.10, metavar="F",
      help="re-measure a row whose std/mean exceeds this (0: off)")
    a("--lat-outlier-fit", type=float, default=0.25, metavar="F",
      help="re-measure a row this far (relative) from a quick fit of earlier rows (0: off)")
    a("--lat-remeasure", type=int, default=2, metavar="N", help="extra attempts per row at most")
    a("--lat-max-new-rows", type=int, metavar="N", help="stop after N new rows this session")


def parse_args(argv: Sequence[str] | None = None) -> Any:
    """fairseq args + latency keys from ``--configs`` YAML and the command line."""
    from hat.config import parse_fairseq_args
    from hat.config_files import expand_config_files

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
    length = sentence_length(args.arch, args.lat_sentence_length)
    return Protocol(src_len=length, beam=args.lat_beam, warmup=args.latwarmup, iters=iters,
                    device=device, threads=threads, train_mode=args.hat_train_mode_measure,
                    timer=args.latcpu_timer if kind == "cpu" else "wall",
                    cuda_graph=args.latgpu_cuda_graph,
                    deployment=getattr(args, "lat_deployment", "hat"))


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


def check_interleave(noise: NoiseControl, protocol: Protocol) -> None:
    """Refuse lat-ref-interleave with a protocol it cannot time (:meth:`Protocol.
    interleave_clash`) before anything is built or written."""
    clash = protocol.interleave_clash()
    if noise.interleave and clash:
        raise HatConfigError(f"lat-ref-interleave times eager runs of HAT's protocol: it cannot "
                             f"be combined with {clash}; switch it off with "
                             "--no-lat-ref-interleave (or delete it from the YAML)")




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
    check_interleave(noise, protocol)
    path = check_writable(args.lat_dataset_path, "lat-dataset-path", append=True)
    done = count_rows(path)
    if done >= args.lat_dataset_size:
        print(f"| {path} is already complete: {done} rows (lat-dataset-size "
              f"{args.lat_dataset_size}); nothing to measure. To measure again: delete it (and "
              f"{meta_path(path).name}), pass another --lat-dataset-path, or raise "
              "--lat-dataset-size to add rows with the same settings", file=sys.stderr)
        return 0
    check_not_shipped(path)
    require_sidecar(path, done)
    model, space, info = build_model(args, args.seed)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID`: record the session, then stop
    meter = LatencyMeter(model, protocol)
    cmd = " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)])
    if not args.latsilent:
        print(f"| latency dataset -> {args.lat_dataset_path}: {args.lat_dataset_size} rows on "
              f"{protocol.device} (threads {protocol.threads}), length {protocol.src_len}, beam "
              f"{protocol.beam}, warmup {protocol.warmup}, latiter {protocol.iters}, "
              f"{'CUDA-graph replays, ' if protocol.cuda_graph else ''}"
              f"{'train mode (HAT)' if protocol.train_mode else 'eval + inference_mode'}, "
              f"lat-deployment {protocol.deployment}"
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
          f"{per_row:.2f} s/row); sidecar {meta_path(res.path)}", file=sys.stderr)
    return 0
