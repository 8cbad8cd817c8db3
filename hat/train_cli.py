"""``train.py``: train a SuperTransformer, retrain a SubTransformer, or profile one.

HAT's profiling flags: ``--profile-flops`` (#Params and FLOPs), ``--latcpu`` / ``--latgpu``
(latency with HAT's protocol on this machine). Training prints the model size first.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from hat.atomic import check_writable
from hat.cli import run_cli
from hat.config import parse_fairseq_args
from hat.errors import HatConfigError
from hat.models.args import (
    space_from_args,
    sub_config_from_args,
    sub_config_source,
    warn_if_not_member,
)
from hat.profile import profile
from hat.space import SearchSpace, SubConfig
from hat.threads import use_cpu_threads


def add_train_script_args(parser: argparse.ArgumentParser) -> None:
    """Options of train.py beyond fairseq's."""
    # Replaces fairseq's --profile (autograd profiler), as in HAT.
    old = parser._option_string_actions.get("--profile")  # noqa: SLF001
    if old is not None:
        parser._handle_conflict_resolve(None, [("--profile", old)])  # noqa: SLF001
    parser.add_argument("--profile", action="store_true", dest="hat_profile",
                        help="print #Params and GFLOPs of the SubTransformer and exit")
    parser.add_argument("--json", action="store_true", help="with --profile: print one JSON line")
    parser.add_argument("--profile-length", type=int, default=None,
                        help="source/target length for FLOPs and latency (default: 30 WMT, "
                             "23 IWSLT)")
    parser.add_argument("--profile-flops", action="store_true",
                        help="HAT's flag: print #Params and FLOPs and exit (same as --profile)")
    parser.add_argument("--latcpu", action="store_true",
                        help="HAT's flag: measure the SubTransformer's latency on this CPU "
                             "(HAT's protocol: encoder pass + beam-5 incremental decode) and exit")
    parser.add_argument("--latgpu", action="store_true",
                        help="HAT's flag: the same on the GPU (CUDA events) and exit")
    parser.add_argument("--latiter", type=int, default=300, metavar="N",
                        help="with --latcpu/--latgpu: timed runs (HAT: 300), trimmed 10-90%%")
    parser.add_argument("--latwarmup", type=int, default=5, metavar="N",
                        help="with --latcpu/--latgpu: untimed warm-up runs (HAT: 5)")
    parser.add_argument("--latsilent", action="store_true",
                        help="with --latcpu/--latgpu: print only the result")
    parser.add_argument("--lat-src-vocab-size", type=int, metavar="N",
                        help="with --latcpu/--latgpu: source dictionary size (default: the "
                             "data's dict file, else 32768 as HAT's WMT dictionaries)")
    parser.add_argument("--lat-tgt-vocab-size", type=int, metavar="N",
                        help="with --latcpu/--latgpu: target dictionary size (default: as the "
                             "source)")


def profile_length(args: argparse.Namespace) -> int:
    """Profiling length: --profile-length, else 23 for IWSLT archs, else 30."""
    from hat.latency.measure.model import sentence_length

    return sentence_length(args.arch, args.profile_length)


def profiled_config(args: argparse.Namespace) -> tuple[SearchSpace, SubConfig, bool]:
    """(space, SubTransformer of the args or the space's largest, whether one was given); warns
    when the SubTransformer is not a member of the search space."""
    space = space_from_args(args)
    cfg = sub_config_from_args(args)
    given = cfg is not None
    if cfg is None:
        cfg = space.largest()
    source = sub_config_source(args)
    space.validate(cfg, source=source)
    if given:
        warn_if_not_member(space, cfg, source)
    return space, cfg, given


def run_profile(args: argparse.Namespace) -> dict:
    """Profile the SubTransformer given by the args (largest of the space if none)."""
    space, cfg, _ = profiled_config(args)
    n = profile_length(args)
    p = profile(cfg, qkv_dim=space.qkv_dim, length=n)
    return {"params_m": p.params_m, "flops_g": p.flops_g, "params": p.params, "macs": p.macs,
            "length": n, "config": cfg.to_dict()}


def main(argv: list[str] | None = None) -> int:
    """Entry point of train.py."""
    origins: dict[str, str] = {}
    training = False

    def body() -> int:
        nonlocal training
        args = parse_fairseq_args(argv, add_extra=add_train_script_args, training_help=True,
                                  origins=origins)
        if args.latcpu and args.latgpu:
            raise HatConfigError("--latcpu and --latgpu are both given; choose one")
        if args.latcpu or args.latgpu:
            result = run_profile(args)
            if not args.json:
                print_profile(result, flops=False)
            result["latency"] = run_latency(args, SubConfig.from_dict(result["config"]))
            if args.json:
                print(json.dumps(result))
            else:
                print_latency(result["latency"])
            return 0
        if args.hat_profile or args.profile_flops:
            result = run_profile(args)
            if args.json:
                print(json.dumps(result))
            else:
                print_profile(result)
            return 0
        from hat.training import train

        if is_hat_arch(args):
            print_profile(run_profile(args), flops=False)
        check_data_dir(args)
        check_precision(args, origins)
        check_save_dir(args, origins)
        check_data_files(args)
        if args.cpu or not torch.cuda.is_available():
            use_cpu_threads()
        training = True
        train(args)
        return 0

    def kept() -> str:
        return ("; the checkpoints saved before it are intact (written atomically): the same "
                "command resumes from checkpoint_last.pt" if training else "")

    return run_cli(body, os_note=kept)


def _origin(origins: dict[str, str], key: str) -> str:
    return origins.get(f"--{key}", "command line")


FP16_KEYS = ("fp16", "memory-efficient-fp16")


def check_precision(args: argparse.Namespace, origins: dict[str, str]) -> None:
    """fp16 training needs a CUDA GPU (fairseq's fp16 optimizer asks torch.cuda for its device):
    refuse it on a machine without one, or with --cpu, before fairseq starts."""
    given = [k for k in FP16_KEYS if getattr(args, k.replace("-", "_"), False)
             and (k != "fp16" or not getattr(args, "memory_efficient_fp16", False))]
    if not given:
        return
    if torch.cuda.is_available() and not args.cpu:
        return
    key = given[0]
    why = ("--cpu is given" if torch.cuda.is_available() else
           f"torch sees no CUDA device here (torch {torch.__version__}, CUDA build "
           f"{torch.version.cuda})")
    where = _origin(origins, key)
    off = (f"add --no-{key} (it switches off the YAML's '{key}: true')"
           if where != "command line" else f"leave --{key} out")
    raise HatConfigError(f"{key} ({where}): fp16 training needs a CUDA GPU and {why}; to train "
                         f"in fp32 on this machine {off}, or run on a machine with a GPU")


def check_save_dir(args: argparse.Namespace, origins: dict[str, str]) -> None:
    """The checkpoint folder must be a folder this process can write (probed before fairseq
    builds anything; fairseq's own check is a traceback)."""
    if getattr(args, "no_save", False):
        return
    save = Path(getattr(args, "save_dir", None) or "checkpoints")
    where = _origin(origins, "save-dir")
    if save.exists() and not save.is_dir():
        raise HatConfigError(f"save-dir {save} ({where}): this is a file, not a folder; choose "
                             "another save-dir or move the file away")
    check_writable(save / "checkpoint_last.pt", f"save-dir ({where}): checkpoint")


def check_data_files(args: argparse.Namespace) -> None:
    """The data's dictionaries are fairseq's format and cover the binarized token ids."""
    if args.task not in ("translation", "hat_translation"):
        return
    from hat.data.check import check_binarized_data

    splits = [getattr(args, "train_subset", "train") or "train",
              *str(getattr(args, "valid_subset", "valid") or "").split(",")]
    check_binarized_data(str(getattr(args, "data", "") or ""), [s for s in splits if s],
                         args.source_lang, args.target_lang)


def check_data_dir(args: argparse.Namespace) -> None:
    """Training needs the data directory: say how to get it before fairseq starts."""
    from hat.data.missing import how_to_get

    data = str(getattr(args, "data", "") or "")
    for path in filter(None, data.split(":")):
        if not os.path.isdir(path):
            raise HatConfigError(f"data directory {path} does not exist (key 'data' of "
                                 f"{args.configs or 'the command line'}); {how_to_get(path)}")


def is_hat_arch(args: argparse.Namespace) -> bool:
    """Whether args describe one of HAT's elastic architectures (profilable)."""
    from hat.training import HAT_ARCH_PREFIXES

    return str(args.arch).startswith(HAT_ARCH_PREFIXES)


def print_profile(result: dict, flops: bool = True) -> None:
    """HAT-style model size (and FLOPs) lines."""
    print(f"| SubTransformer: {sub_summary(result)}")
    print(f"| #Params: {result['params_m']:.2f}M (excluding embeddings and the output projection)")
    if flops:
        print(f"| GFLOPs: {result['flops_g']:.2f} (one pass, batch 1, length {result['length']}; "
              "excluding the output projection)")


def run_latency(args: argparse.Namespace, cfg: SubConfig) -> dict:
    """Time the SubTransformer ``cfg`` (as :func:`run_profile` resolved it from the args) with
    HAT's protocol (random weights: only shapes matter): one encoder pass of a length-n dummy
    source, an n-step beam-5 incremental decode."""
    from hat.latency.measure.model import build_model, vocab_sizes
    from hat.latency.measure.timing import LatencyMeter, Protocol, resolve_device
    from hat.threads import available_cores

    if args.latiter < 1 or args.latwarmup < 0:
        raise HatConfigError(f"--latiter must be >= 1 and --latwarmup >= 0, got {args.latiter} "
                             f"and {args.latwarmup}")
    device = str(resolve_device(f"cuda:{args.device_id or 0}")) if args.latgpu else "cpu"
    threads = available_cores() if device == "cpu" else None
    n = profile_length(args)
    src_vocab, tgt_vocab = vocab_sizes(args)
    model, _, _ = build_model(args, seed=1)
    say = (lambda *_: None) if args.latsilent else (lambda m: print(m, flush=True))
    probe = LatencyMeter(model, Protocol(src_len=n, iters=1, warmup=1, device=device,
                                         threads=threads)).measure(cfg)
    runs = args.latiter + args.latwarmup
    say(f"| measuring on {device} ({f'{threads} threads, ' if threads else ''}eval mode, "
        f"inference_mode): source length {n}, beam 5, {n} decode steps, vocabulary "
        f"{src_vocab}/{tgt_vocab} (--lat-src-vocab-size); one run ~{probe.total:.0f} ms, "
        f"{runs} runs ~{runs * probe.total / 1000:.0f} s (--latiter N for fewer)")
    protocol = Protocol(src_len=n, iters=args.latiter, warmup=args.latwarmup, device=device,
                        threads=threads)
    m = LatencyMeter(model, protocol).measure(cfg)
    return {"device": device, "threads": threads, "encoder_ms": m.enc_mean,
            "decoder_ms": m.dec_mean, "encoder_std_ms": m.enc_std,
            "decoder_std_ms": m.dec_std, "total_ms": m.total, "latiter": args.latiter,
            "length": n, "beam": 5, "src_vocab": src_vocab, "tgt_vocab": tgt_vocab}


def print_latency(lat: dict) -> None:
    """HAT-style latency lines."""
    where = "GPU" if lat["device"].startswith("cuda") else "CPU"
    print(f"| Encoder latency on {where}: {lat['encoder_ms']:.2f} ms "
          f"(std {lat['encoder_std_ms']:.2f})")
    print(f"| Decoder latency on {where}: {lat['decoder_ms']:.2f} ms "
          f"(std {lat['decoder_std_ms']:.2f}; {lat['length']} steps, beam {lat['beam']})")
    print(f"| Latency (encoder + decoder): {lat['total_ms']:.2f} ms, mean of the 10-90% trimmed "
          f"runs of {lat['latiter']}")


def sub_summary(result: dict) -> str:
    """Short text for a profiled config."""
    from hat.space import SubConfig

    return SubConfig.from_dict(result["config"]).describe()
