"""Atomic file output: write a temporary file in the target folder, then rename it over the target,
so that readers (and a resumed run) never see half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from hat.errors import HatConfigError


def _atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) atomically; returns the path."""
    return _atomic(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: object, indent: int = 1) -> Path:
    """Write ``obj`` as JSON (non-JSON values via ``str``) atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically; returns the path."""
    import torch

    return _atomic(path, lambda f: torch.save(obj, f))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` (``.<name>.<random>.tmp``) for the block to write;
    when the block completes the file is synced and renamed over ``path``, when it raises
    (KeyboardInterrupt included) the file is deleted. Check the file inside the block to keep a
    bad one from ever appearing under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike, what: str, append: bool = False) -> Path:
    """Raise :class:`HatConfigError` unless output file ``path`` can be written: it is not a
    folder, its folder exists or can be created, and that folder is writable (probed with a
    temporary file, so read-only mounts count); with ``append`` an existing file must be
    writable too. Creates nothing; returns the path. ``what`` names the option in messages."""
    path = Path(path)
    if path.is_dir():
        raise HatConfigError(f"{what} {path} is a folder; give the path of a file")
    folder = existing = path.parent
    while not existing.exists():  # nearest existing ancestor ("." and "/" always exist)
        existing = existing.parent
    if not existing.is_dir():
        raise HatConfigError(f"{what} {path}: cannot create the folder {folder}: {existing} is "
                             "a file; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".hat-write-check.", dir=existing)
    except OSError as e:
        todo = (f"write into the folder {folder}" if existing == folder
                else f"create the folder {folder} (in {existing})")
        raise HatConfigError(f"{what} {path}: cannot {todo}: {e.strerror or e}; choose a "
                             "writable location or fix the folder's permissions") from None
    os.close(fd)
    os.unlink(tmp)
    if append and path.exists() and not os.access(path, os.W_OK):
        raise HatConfigError(f"{what} {path}: the file is read-only; it cannot be appended to "
                             "(make it writable, or choose another path)")
    return path
