"""``train.py``: train a SuperTransformer, retrain a SubTransformer, or profile one."""

from __future__ import annotations

import argparse
import json
import sys

from hat.config import parse_fairseq_args
from hat.errors import HatConfigError
from hat.models.args import space_from_args, sub_config_from_args
from hat.profile import TASK_LENGTHS, profile


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
                        help="source/target length for FLOPs (default: 30 WMT, 23 IWSLT)")


def profile_length(args: argparse.Namespace) -> int:
    """Profiling length: --profile-length, else 23 for IWSLT archs, else 30."""
    if args.profile_length:
        return args.profile_length
    return TASK_LENGTHS["iwslt14.de-en"] if "iwslt" in args.arch else TASK_LENGTHS["wmt14.en-de"]


def run_profile(args: argparse.Namespace) -> dict:
    """Profile the SubTransformer given by the args (largest of the space if none)."""
    space = space_from_args(args)
    cfg = sub_config_from_args(args)
    if cfg is None:
        cfg = space.largest()
    space.validate(cfg, source=getattr(args, "configs", None))
    n = profile_length(args)
    p = profile(cfg, qkv_dim=space.qkv_dim, length=n)
    return {"params_m": p.params_m, "flops_g": p.flops_g, "params": p.params, "macs": p.macs,
            "length": n, "config": cfg.to_dict()}


def main(argv: list[str] | None = None) -> int:
    """Entry point of train.py."""
    try:
        args = parse_fairseq_args(argv, add_extra=add_train_script_args)
        if args.hat_profile:
            result = run_profile(args)
            if args.json:
                print(json.dumps(result))
            else:
                print(f"| SubTransformer: {sub_summary(result)}")
                print(f"| #Params: {result['params_m']:.2f}M (excluding embeddings and the "
                      "output projection)")
                print(f"| GFLOPs: {result['flops_g']:.2f} (one pass, batch 1, length "
                      f"{result['length']}; excluding the output projection)")
            return 0
        from hat.training import train

        train(args)
        return 0
    except HatConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def sub_summary(result: dict) -> str:
    """Short text for a profiled config."""
    from hat.space import SubConfig

    return SubConfig.from_dict(result["config"]).describe()
