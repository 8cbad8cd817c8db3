"""Reading, building from and writing fairseq/HAT checkpoints (0.8-style and 0.12-style)."""

from __future__ import annotations

import argparse
import copy
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from fairseq.data import Dictionary

from hat.atomic import atomic_torch_save
from hat.compat import load_checkpoint_file
from hat.errors import HatConfigError, UnsafeCheckpointError

SUPER_DIM_KEYS = (
    "encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim",
    "encoder_layers", "decoder_layers", "qkv_dim",
)


def check_super_dims(config: Any, ckpt_args: Any, path: Any,
                     source: Callable[[str], str] | None = None) -> None:
    """Raise when a config's SuperTransformer dimensions differ from a checkpoint's
    (``source(key)`` names where the config's value came from)."""
    for key in SUPER_DIM_KEYS:
        mine, theirs = getattr(config, key, None), getattr(ckpt_args, key, None)
        if mine is not None and theirs is not None and mine != theirs:
            opt = key.replace("_", "-")
            where = source(opt) if source else "the config"
            raise HatConfigError(f"{path}: the checkpoint has {opt} = {theirs} but {where} says "
                                 f"{mine}; the architectures do not match")


ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # older torch.save
VERSION_BUFFER = "version"  # fairseq's encoder/decoder buffer (1-element tensor [3])


def drop_version_key(state_dict: dict[str, Any], name: str) -> dict[str, Any]:
    """Remove ``<name>.version`` (the buffer every fairseq 0.8 encoder/decoder registers, so
    every released HAT checkpoint holds ``encoder.version`` and ``decoder.version``; our modules
    have none), in place; returns the dict."""
    state_dict.pop(f"{name}.{VERSION_BUFFER}" if name else VERSION_BUFFER, None)
    return state_dict


def checkpoint_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not an intact PyTorch checkpoint file, or None when it looks intact.

    Cheap (nothing is unpickled): a zip checkpoint needs its central directory, which is written
    last, so a truncated file (interrupted save, full disk) always fails; an old-style
    (pre-1.6) file is only recognised by its header.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            return (f"truncated or corrupt ({size:,} bytes, no complete zip directory: {e}); the "
                    "save or copy that wrote it was interrupted (crash, kill or full disk)")
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "a zip archive without data.pkl, not a PyTorch checkpoint"
        return None
    if head.startswith(LEGACY_MAGIC):
        return None
    text = head.lstrip().lower()
    if text.startswith(b"<"):
        return ("an HTML/XML page, not a checkpoint (a download link that answered with a web "
                "page: expired, rate-limited or needing a login)")
    return f"not a PyTorch checkpoint (it starts with {head[:16]!r})"


def intact_checkpoints(save_dir: str | os.PathLike, exclude: str | os.PathLike | None = None
                       ) -> list[Path]:
    """The ``checkpoint*.pt`` files of ``save_dir`` that look intact, newest first."""
    skip = Path(exclude).resolve() if exclude else None
    found = []
    for p in Path(save_dir).glob("checkpoint*.pt"):
        if p.is_file() and p.resolve() != skip and checkpoint_file_problem(p) is None:
            found.append(p)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def read_checkpoint(path: str | os.PathLike, data: str | None = None, upgrade: bool = False
                    ) -> dict[str, Any]:
    """Load a checkpoint dict on CPU with clear errors; a file whose pickle asks to run code is
    refused (:class:`~hat.errors.UnsafeCheckpointError`; see
    :func:`hat.compat.load_checkpoint_file`). With ``data`` (the data-bin to evaluate on) or
    ``upgrade``, the state goes through fairseq's own loader instead, which also upgrades old
    checkpoints (HAT's fairseq 0.8 files) and sets ``data`` (when given) in their args."""
    path = Path(path)
    if not path.is_file():
        raise HatConfigError(f"{path}: checkpoint file not found")
    problem = checkpoint_file_problem(path)
    if problem is not None:
        raise HatConfigError(f"{path}: not a readable PyTorch checkpoint: {problem}")
    try:
        if data is not None or upgrade:
            from fairseq import checkpoint_utils

            overrides = {"data": data} if data is not None else {}
            state = checkpoint_utils.load_checkpoint_to_cpu(str(path), overrides)
        else:
            state = load_checkpoint_file(path)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise HatConfigError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise HatConfigError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    return state


def load_task_and_model(path: str | os.PathLike, data: str | None = None,
                        state: dict[str, Any] | None = None) -> tuple[Any, torch.nn.Module]:
    """fairseq's task and model of checkpoint ``path`` (the model in train mode, on CPU): the
    one loader of a model to evaluate or translate with. ``data`` replaces the data-bin in the
    checkpoint's args; ``state``: the checkpoint already read by :func:`read_checkpoint` (with
    the same ``data``), else it is read here."""
    from fairseq import checkpoint_utils

    if state is None:
        state = read_checkpoint(path, data=data, upgrade=True)
    overrides = {"data": data} if data is not None else {}
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(path)], arg_overrides=overrides, state=state)
    except RuntimeError as e:
        hint = ""
        if data is not None and "size mismatch for encoder.embed_tokens" in str(e):
            hint = (f"; its vocabulary differs from the dictionary in {data} (a released HAT "
                    "model needs HAT's preprocessed data: bash configs/<task>/get_preprocessed.sh)")
        raise HatConfigError(f"{path}: cannot build the model: "
                             f"{str(e).splitlines()[0]}{hint}") from None
    return task, models[0]


def checkpoint_args(state: dict[str, Any], path: Any = "checkpoint") -> argparse.Namespace:
    """The model args of a checkpoint: HAT/fairseq-0.8 ``args`` or fairseq-0.12 ``cfg.model``."""
    args = state.get("args")
    if args is None and state.get("cfg") is not None:
        args = state["cfg"]["model"]
    if isinstance(args, dict):
        args = argparse.Namespace(**args)
    if args is None or not hasattr(args, "arch"):
        raise HatConfigError(f"{path}: checkpoint stores no model arguments (args / cfg.model)")
    return copy.deepcopy(args)


def dummy_dictionary(size: int) -> Dictionary:
    """A fairseq Dictionary of ``size`` symbols (pad index 1), for building a model shape."""
    d = Dictionary()
    i = 0
    while len(d) < size:
        d.add_symbol(f"<w{i}>")
        i += 1
    return d


class ShapeTask:
    """Stand-in task that only provides dictionaries (enough to build a model)."""

    def __init__(self, src: Dictionary, tgt: Dictionary) -> None:
        self.source_dictionary, self.target_dictionary = src, tgt


def task_for_state_dict(model_state: dict[str, torch.Tensor], shared: bool) -> ShapeTask:
    """Dictionaries sized like the checkpoint's embedding tables."""
    src = dummy_dictionary(model_state["encoder.embed_tokens.weight"].size(0))
    tgt = src if shared else dummy_dictionary(model_state["decoder.embed_tokens.weight"].size(0))
    return ShapeTask(src, tgt)


def build_from_checkpoint(state: dict[str, Any], path: Any = "checkpoint",
                          task: Any | None = None) -> torch.nn.Module:
    """Build the checkpoint's model (fp32) and load its weights strictly."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    import hat  # noqa: F401

    args = checkpoint_args(state, path)
    if args.arch not in ARCH_MODEL_REGISTRY:
        raise HatConfigError(f"{path}: checkpoint arch '{args.arch}' is not registered")
    sd = state["model"]
    task = task or task_for_state_dict(sd, bool(getattr(args, "share_all_embeddings", False)))
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, task)
    try:
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as e:
        raise HatConfigError(f"{path}: weights do not match arch '{args.arch}': "
                             f"{str(e).splitlines()[0]} {_first_mismatch(e)}") from None
    return model


def _first_mismatch(e: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
    return lines[0] if lines else ""


def save_checkpoint(path: str | os.PathLike, args: argparse.Namespace,
                    model_state: dict[str, torch.Tensor]) -> None:
    """Write a fairseq-loadable checkpoint atomically (args as an argparse Namespace)."""
    state = {
        "args": args,
        "model": model_state,
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "Adam", "lr_scheduler_state": {},
                               "num_updates": 0}],
        "extra_state": {},
        "last_optimizer_state": None,
    }
    atomic_torch_save(state, path)
