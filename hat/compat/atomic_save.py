"""Atomic checkpoint saving.

Fairseq writes a checkpoint to ``<name>.tmp`` and renames it, but without syncing it to disk, and
it copies that file to the other names (``checkpoint_last.pt``, ``checkpoint_best.pt``) in place: a
crash or a full disk during a save can leave a truncated ``checkpoint_last.pt`` that the next start
cannot read. :func:`make_saves_atomic` (called by :func:`hat.compat.patch_fairseq`) makes both
the save and the copies atomic (temporary file in the same folder, fsync, rename).
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import Any


def _is_local(path: Any) -> bool:
    return isinstance(path, str | os.PathLike) and "://" not in str(path)


def _atomic_persistent_save(original: Any) -> Any:
    """fairseq's ``torch_persistent_save`` writing local files atomically (fsync + rename)."""

    @functools.wraps(original)
    def save(obj: Any, filename: Any, async_write: bool = False) -> Any:
        if async_write or not _is_local(filename):
            return original(obj, filename, async_write=async_write)
        from hat.atomic import atomic_torch_save

        atomic_torch_save(obj, filename)

    save._hat_atomic = True  # type: ignore[attr-defined]
    return save


class _AtomicCopyPathManager:
    """fairseq's PathManager whose ``copy`` of local files is atomic (checkpoint_last.pt etc.)."""

    _hat_atomic = True

    def __init__(self, base: Any) -> None:
        self._base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def copy(self, src_path: str, dst_path: str, overwrite: bool = False, **kwargs: Any) -> bool:
        """Copy to a temporary file beside ``dst_path``, sync it, rename it over ``dst_path``."""
        if kwargs or not (_is_local(src_path) and _is_local(dst_path)):
            return self._base.copy(src_path, dst_path, overwrite, **kwargs)
        if not overwrite and os.path.exists(dst_path):
            return False
        from hat.atomic import atomic_path

        with atomic_path(dst_path) as tmp, open(src_path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        return True


def make_saves_atomic(checkpoint_utils: Any) -> None:
    """Make fairseq's ``checkpoint_utils`` save checkpoints and copy them to
    checkpoint_last/best.pt atomically (idempotent)."""
    cu = checkpoint_utils
    if not getattr(cu.torch_persistent_save, "_hat_atomic", False):
        cu.torch_persistent_save = _atomic_persistent_save(cu.torch_persistent_save)
    if not getattr(cu.PathManager, "_hat_atomic", False):
        cu.PathManager = _AtomicCopyPathManager(cu.PathManager)
