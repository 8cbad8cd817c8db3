"""Average the model weights of the last N checkpoints of a training run.

python -m hat.average --inputs <save-dir> --num-update-checkpoints 10 --output <file>
python -m hat.average --inputs <save-dir> --num-epoch-checkpoints 10 --output <file>
python -m hat.average --inputs a.pt b.pt c.pt --output <file>

"Last" is by number in the file name: ``checkpoint_<epoch>_<update>.pt`` (by update) or
``checkpoint<epoch>.pt`` (by epoch). Tensors are summed in fp32 and cast back to the first
checkpoint's dtype; args/cfg and everything else come from the newest checkpoint. The output is
written atomically.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hat.atomic import atomic_torch_save
from hat.checkpoint import read_checkpoint
from hat.cli import run_cli
from hat.errors import HatConfigError

UPDATE_PATTERN = re.compile(r"checkpoint_(\d+)_(\d+)\.pt")
EPOCH_PATTERN = re.compile(r"checkpoint(\d+)\.pt")


def last_checkpoints(save_dir: str | os.PathLike, n: int, by: str = "update") -> list[Path]:
    """The last ``n`` checkpoints of ``save_dir`` by update or epoch number, oldest first."""
    save_dir = Path(save_dir)
    if by not in ("update", "epoch"):
        raise HatConfigError(f"checkpoint selection must be 'update' or 'epoch', got {by!r}")
    if n < 1:
        raise HatConfigError(f"number of checkpoints to average must be >= 1, got {n}")
    if not save_dir.is_dir():
        raise HatConfigError(f"{save_dir}: checkpoint directory not found")
    pattern = UPDATE_PATTERN if by == "update" else EPOCH_PATTERN
    found: list[tuple[int, Path]] = []
    for p in save_dir.iterdir():
        m = pattern.fullmatch(p.name)
        if m:
            found.append((int(m.groups()[-1]), p))
    found.sort()
    if len(found) < n:
        kind = "checkpoint_<epoch>_<update>.pt" if by == "update" else "checkpoint<epoch>.pt"
        raise HatConfigError(f"{save_dir}: asked to average the last {n} {kind} files but "
                             f"found {len(found)}")
    return [p for _, p in found[-n:]]


def average_states(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The newest (last) checkpoint's state with ``model`` replaced by the mean of all."""
    if not paths:
        raise HatConfigError("no checkpoints to average")
    sums: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    keys: list[str] | None = None
    state: dict[str, Any] = {}
    for path in paths:
        state = read_checkpoint(path)
        model = state["model"]
        if keys is None:
            keys = list(model)
            dtypes = {k: v.dtype for k, v in model.items()}
        elif set(model) != set(keys):
            diff = sorted(set(model) ^ set(keys))
            raise HatConfigError(f"{path}: parameters differ from {paths[0]} (e.g. {diff[0]})")
        for k in keys:
            t = model[k]
            if k in sums and t.shape != sums[k].shape:
                raise HatConfigError(f"{path}: {k} has shape {tuple(t.shape)}, "
                                     f"{paths[0]} has {tuple(sums[k].shape)}")
            t = t.detach().to(torch.float32) if t.is_floating_point() else t
            if k not in sums:
                sums[k] = t.clone()
            elif t.is_floating_point():
                sums[k] += t
    assert keys is not None
    averaged = {}
    for k in keys:
        t = sums[k]
        averaged[k] = (t / len(paths)).to(dtypes[k]) if t.is_floating_point() else t
    state["model"] = averaged
    return state


def average_checkpoints(paths: Sequence[str | os.PathLike], output: str | os.PathLike) -> Path:
    """Average ``paths`` into ``output``; returns ``output``."""
    out = Path(output)
    if any(Path(p).resolve() == out.resolve() for p in paths):
        raise HatConfigError(f"{out}: output would overwrite one of the inputs")
    atomic_torch_save(average_states(paths), out)
    return out


def average_last(save_dir: str | os.PathLike, n: int, output: str | os.PathLike,
                 by: str = "update") -> list[Path]:
    """Average the last ``n`` checkpoints of ``save_dir`` into ``output``; returns the inputs."""
    paths = last_checkpoints(save_dir, n, by)
    average_checkpoints(paths, output)
    return paths


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m hat.average", description=__doc__.split("\n")[0])
    p.add_argument("--inputs", nargs="+", required=True,
                   help="a checkpoint directory (with --num-*-checkpoints) or checkpoint files")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--num-update-checkpoints", type=int, metavar="N",
                       help="average the last N checkpoint_<epoch>_<update>.pt files")
    group.add_argument("--num-epoch-checkpoints", type=int, metavar="N",
                       help="average the last N checkpoint<epoch>.pt files")
    p.add_argument("--output", required=True, help="averaged checkpoint to write")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; 2 on bad input."""
    args = build_parser().parse_args(argv)

    def body() -> None:
        by = "update" if args.num_update_checkpoints is not None else "epoch"
        n = args.num_update_checkpoints if by == "update" else args.num_epoch_checkpoints
        if n is not None:
            if len(args.inputs) != 1:
                raise HatConfigError("with --num-*-checkpoints give one directory in --inputs")
            paths = last_checkpoints(args.inputs[0], n, by)
        else:
            paths = [Path(p) for p in args.inputs]
        average_checkpoints(paths, args.output)
        print(f"| averaged {len(paths)} checkpoints: {', '.join(p.name for p in paths)}")
        print(f"| wrote {args.output}")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
