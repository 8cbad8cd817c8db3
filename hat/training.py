"""Run fairseq's own training loop on HAT's task and models (no loop of our own)."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from hat.errors import HatConfigError

logger = logging.getLogger("hat.train")

HAT_ARCH_PREFIXES = ("transformersuper",)


RESUMING = "the checkpoint to resume from"
EXPORTED_HINT = (
    "--restore-file takes a training checkpoint with the SuperTransformer's shapes (a save dir's "
    "checkpoint_last.pt / checkpoint_best.pt / checkpoint_N.pt, or a released HAT_*.pt). To test "
    "the exported model use configs/<task>/test.sh or fairseq-generate --path; to retrain its "
    "SubTransformer give its YAML with --train-subtransformer (from scratch as in HAT, or add "
    "--restore-file <the SuperTransformer checkpoint it was exported from> to start from the "
    "inherited weights)"
)


def check_restore_file(args: argparse.Namespace) -> None:
    """Check the checkpoint fairseq will start from, before it loads anything.

    * Resuming (the default ``<save-dir>/checkpoint_last.pt``): the file must be intact. A
      truncated one (a save interrupted by a crash, a kill or a full disk) is an error that names
      the newest intact checkpoint of the save dir to resume from with --restore-file. There is
      no silent fallback: which updates get trained again is the user's choice.
    * An explicit --restore-file (or --finetune-from-model): it must exist, be readable, be a
      training checkpoint (not an exported ``hat_subtransformer``) and fit the model's dims.
    """
    path = getattr(args, "restore_file", None)
    option = "--restore-file"
    if not path or path == "checkpoint_last.pt":
        last = Path(getattr(args, "save_dir", None) or "checkpoints") / "checkpoint_last.pt"
        if last.is_file():
            check_intact(last, RESUMING)
            return
        path, option = getattr(args, "finetune_from_model", None), "--finetune-from-model"
        if not path:
            return
    if not os.path.isfile(path):
        raise HatConfigError(f"{option} {path}: file not found")
    from hat.checkpoint import check_super_dims, checkpoint_args, read_checkpoint

    check_intact(Path(path), option)
    state = read_checkpoint(path)
    ckpt_args = checkpoint_args(state, path)
    if ckpt_args.arch == "hat_subtransformer":
        raise HatConfigError(f"{option} {path}: this is a standalone SubTransformer exported by "
                             f"hat.export (arch hat_subtransformer: the SubTransformer's own "
                             f"shapes, no training state). {EXPORTED_HINT}")
    check_super_dims(args, ckpt_args, f"{option} {path}")


def check_intact(path: Path, what: str) -> None:
    """Raise, naming the newest intact checkpoints beside it, when ``path`` is truncated or
    otherwise not a checkpoint file."""
    from hat.checkpoint import checkpoint_file_problem, intact_checkpoints

    problem = checkpoint_file_problem(path)
    if problem is None:
        return
    others = intact_checkpoints(path.parent, exclude=path)
    if others:
        newest = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(others[0].stat().st_mtime))
        todo = (f"continue from the newest intact checkpoint with --restore-file {others[0]} "
                f"(saved {newest})")
        if len(others) > 1:
            todo += " or an older one: " + ", ".join(p.name for p in others[1:4])
        if what == RESUMING:
            todo += f"; or move {path.name} away to start over"
    elif what == RESUMING:
        todo = f"no intact checkpoint*.pt is left in {path.parent}; move {path} away to start over"
    else:
        todo = "copy or download it again (a released HAT model: download_model.py --force)"
    raise HatConfigError(f"{path} ({what}): {problem}. To go on, {todo}")


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
        from hat.tasks.translation import own_options

        for f in own_options():
            if not hasattr(args, f.name):
                setattr(args, f.name, f.default)
    return args


def train(args: argparse.Namespace) -> None:
    """Train with fairseq's loop (single process, or fairseq's own distributed launch)."""
    from fairseq import distributed_utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli.train import main as fairseq_train_main

    prepare_args(args)
    check_restore_file(args)
    cfg = convert_namespace_to_omegaconf(args)
    with _one_training_per_save_dir(args):
        _call_fairseq(args, cfg, distributed_utils, fairseq_train_main)


def _one_training_per_save_dir(args: argparse.Namespace) -> Any:
    """A lock on the save dir (rank 0 only: torchrun's other ranks write there too): a second
    training into it is refused at once, naming the first's pid."""
    import contextlib

    from hat.runstate import exclusive

    save_dir = getattr(args, "save_dir", None)
    if getattr(args, "no_save", False) or not save_dir or int(os.environ.get("RANK", "0")):
        return contextlib.nullcontext()
    return exclusive(Path(save_dir) / "checkpoint_last.pt", "training into this save-dir")


def _call_fairseq(args: argparse.Namespace, cfg: Any, distributed_utils: Any,
                  fairseq_train_main: Any) -> None:
    try:
        distributed_utils.call_main(cfg, fairseq_train_main)
    except AssertionError as e:  # fairseq's trainer: restored state of another optimizer
        if "--reset-optimizer" not in str(e):
            raise
        raise HatConfigError(
            f"{restored_path(args)}: its optimizer state cannot be restored into this run "
            f"({str(e).splitlines()[0]}); the checkpoint was trained with another optimizer or "
            "precision (HAT's released checkpoints: fp16 on 8 GPUs). Add --reset-optimizer to "
            "start from its weights (with --reset-lr-scheduler --reset-dataloader "
            "--reset-meters to also start a new schedule)") from None


def restored_path(args: argparse.Namespace) -> str:
    """The checkpoint fairseq restores: --restore-file, else ``<save-dir>/checkpoint_last.pt``."""
    path = getattr(args, "restore_file", None)
    if path and path != "checkpoint_last.pt":
        return str(path)
    return str(Path(getattr(args, "save_dir", None) or "checkpoints") / "checkpoint_last.pt")
