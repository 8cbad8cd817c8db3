"""Resumable runs: a run's saved settings must match the new run's before it continues."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
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
    from hat.download import file_sha256

    return f"{Path(path).stat().st_size} bytes, sha256 {file_sha256(path)[:16]}"


@contextlib.contextmanager
def exclusive(output: str | os.PathLike, doing: str) -> Iterator[None]:
    """One process at a time writes ``output``: a second one fails at once, naming the pid of
    the first (``doing``: "measuring into this file", ...). The lock (``.<name>.lock`` beside
    it, an flock) ends with the process however it ends."""
    output = Path(output)
    lock = output.with_name(f".{output.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise HatConfigError(f"{output}: another process (pid {f.read().strip() or '?'}) is "
                                 f"{doing}; wait for it or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(f, fcntl.LOCK_UN)
