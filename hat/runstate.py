"""Resumable runs: a run's saved settings must match the new run's before it continues."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hat.errors import HatConfigError


def check_resume(path: Path, saved: dict[str, Any], settings: dict[str, Any],
                 keys: Sequence[str], what: str, hint: str) -> None:
    """Raise a clear error when ``saved`` (read from ``path``) disagrees with ``settings`` on
    one of ``keys``; keys missing from ``saved`` are not compared."""
    bad = [k for k in keys if k in saved and saved[k] != settings.get(k)]
    if bad:
        diff = "; ".join(_difference(k, saved[k], settings.get(k)) for k in bad)
        raise HatConfigError(f"{path}: cannot resume: the {what} was started with other "
                             f"settings ({diff}); {hint}")


def _difference(key: str, old: Any, new: Any) -> str:
    """``key: file X vs now Y``, for mappings only the entries that differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        sub = [k for k in sorted(set(old) | set(new), key=str) if old.get(k) != new.get(k)]
        return "; ".join(f"{key}.{k}: file {old.get(k)} vs now {new.get(k)}" for k in sub)
    return f"{key}: file {old} vs now {new}"


def content_fingerprint(path: str | os.PathLike | None) -> str | None:
    """``"<size> bytes, sha256 <first 16 hex>"`` of a run's input file (None: no such file), so
    that a resume notices a file replaced at the same path."""
    if not path or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{Path(path).stat().st_size} bytes, sha256 {digest.hexdigest()[:16]}"
