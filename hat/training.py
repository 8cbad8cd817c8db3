"""Run fairseq's own training loop on HAT's task and models (no loop of our own)."""

from __future__ import annotations

import argparse
import logging
import os

from hat.errors import HatConfigError

logger = logging.getLogger("hat.train")

HAT_ARCH_PREFIXES = ("transformersuper",)


def check_restore_file(args: argparse.Namespace) -> None:
    """An explicitly named --restore-file must exist and fit the model's shapes."""
    path = getattr(args, "restore_file", None)
    if not path or path == "checkpoint_last.pt":
        return  # fairseq's default: resume from save-dir if there is something to resume
    if not os.path.isfile(path):
        raise HatConfigError(f"--restore-file {path}: file not found")
    from hat.checkpoint import check_super_dims, checkpoint_args, read_checkpoint

    state = read_checkpoint(path)
    check_super_dims(args, checkpoint_args(state, path), f"--restore-file {path}")


def prepare_args(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults that make HAT's models train as intended through fairseq."""
    if args.arch.startswith(HAT_ARCH_PREFIXES) and args.task == "translation":
        logger.info("using task hat_translation (one sampled SubTransformer per update)")
        args.task = "hat_translation"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and getattr(args, "distributed_init_method", None) is None:
        # Launched by torchrun. fairseq's own detection ignores it at world size 1 (its default on
        # a CPU machine) and divides by the GPU count, so take torchrun's variables directly.
        args.distributed_init_method = "env://"
        args.distributed_world_size = world
        args.distributed_rank = int(os.environ["RANK"])
        args.device_id = int(os.environ.get("LOCAL_RANK", 0))
        args.distributed_no_spawn = True
        logger.info("torchrun: rank %d of %d", args.distributed_rank, world)
    if args.task == "hat_translation":
        for key, value in (("subnet_seed", 0), ("subnet_log", "")):
            if not hasattr(args, key):
                setattr(args, key, value)
    return args


def train(args: argparse.Namespace) -> None:
    """Train with fairseq's loop (single process, or fairseq's own distributed launch)."""
    from fairseq import distributed_utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli.train import main as fairseq_train_main

    prepare_args(args)
    check_restore_file(args)
    cfg = convert_namespace_to_omegaconf(args)
    distributed_utils.call_main(cfg, fairseq_train_main)
