"""Atomic file output: write a temporary file in the target folder, then rename it over the target,
so that readers (and a resumed run) never see half a file.

The temporary file is ``.<name>.<pid>-<host tag>.<random>.tmp``: a later atomic write of the same
target removes those a killed writer of this machine left behind (its pid no longer runs).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from hat.errors import HatConfigError


def _host_tag() -> str:
    """6 hex digits naming this machine (a pid means nothing on another one)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _temp_pattern(name: str) -> re.Pattern[str]:
    """The temporary files of target ``name``: group 1 the writer's pid, group 2 its host tag
    (mkstemp's random part has no dots, so another target's files never match)."""
    return re.compile(rf"\.{re.escape(name)}\.(\d+)-([0-9a-f]{{6}})\.[^.]+\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of target ``path`` that writers of this machine which no
    longer run left behind (killed mid-write); returns them. Others' files are kept."""
    path = Path(path)
    pattern, host, removed = _temp_pattern(path.name), _host_tag(), []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for n in names:
        m = pattern.fullmatch(n)
        if m is None or m.group(2) != host:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            os.unlink(path.parent / n)
        except OSError:
            continue
        removed.append(path.parent / n)
    return removed


def _mkstemp(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` named with this process's pid (stale ones of the
    same target removed first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_host_tag()}.",
                                suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file being written, not its hidden temporary name
        raise type(e)(e.errno, e.strerror, str(path)) from e


def _atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    path = Path(path)
    fd, tmp = _mkstemp(path)
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
    """A temporary file name beside ``path`` (``.<name>.<pid>-<host>.<random>.tmp``) for the
    block to write; when the block completes the file is synced and renamed over ``path``, when
    it raises (KeyboardInterrupt included) the file is deleted. Check the file inside the block
    to keep a bad one from ever appearing under ``path``."""
    path = Path(path)
    fd, tmp = _mkstemp(path)
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


@contextmanager
def atomic_text_files(paths: Sequence[str | os.PathLike]) -> Iterator[list[TextIO]]:
    """Text files (UTF-8, ``\\n`` newlines) for the block to write, each under a temporary name
    (:func:`atomic_path`); all appear under their names when the block completes, none when it
    raises. Their folders are created."""
    with ExitStack() as stack:
        tmps = []
        for p in paths:
            Path(p).parent.mkdir(parents=True, exist_ok=True)
            tmps.append(stack.enter_context(atomic_path(p)))
        yield [stack.enter_context(open(t, "w", encoding="utf-8", newline="\n")) for t in tmps]


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


_HINTS = {
    errno.EACCES: "make it writable or choose another location",
    errno.EPERM: "make it writable or choose another location",
    errno.EROFS: "the file system is read-only: choose another location",
    errno.ENOSPC: "free some space or choose another location",
    errno.EDQUOT: "free some space or choose another location",
    errno.EEXIST: "a file is where a folder is expected: choose another path",
    errno.ENOTDIR: "a file is where a folder is expected: choose another path",
    errno.EISDIR: "a folder is where a file is expected: choose another path",
}


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error: the path(s), the errno's meaning, what to do."""
    meaning = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    hint = _HINTS.get(e.errno or 0)
    return f"{paths + ': ' if paths else ''}{meaning}{'; ' + hint if hint else ''}"
