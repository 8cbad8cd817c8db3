"""Moving bytes: the one URL fetcher (:func:`download_url`: mirror URLs in turn, resume, size,
sha256 and caller checks, an atomic rename, progress) and a mirror's file copied into a checked
temporary file renamed into place."""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from hat.atomic import atomic_path
from hat.download.catalog import CHUNK, DownloadError
from hat.download.checks import file_sha256

LOG_EVERY = 30.0  # seconds between the progress lines of a download given a logger
WEB_PAGE = "answered with a web page instead of the file (a moved or rate-limited link?)"


def progress_bar(total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                dynamic_ncols=True, disable=None, leave=False)


def _copy_stream(src: BinaryIO, dst: BinaryIO, total: int | None, desc: str, done: int = 0,
                 log: logging.Logger | None = None) -> int:
    """Copy ``src`` to ``dst`` (``done`` bytes already there); returns the bytes there now.
    Progress: a bar, and with ``log`` a line every :data:`LOG_EVERY` seconds."""
    last_log = time.monotonic()
    with progress_bar(total, desc) as bar:
        if done:
            bar.update(done)
        for block in iter(lambda: src.read(CHUNK), b""):
            dst.write(block)
            done += len(block)
            bar.update(len(block))
            if log is not None and time.monotonic() - last_log > LOG_EVERY:
                last_log = time.monotonic()
                of = f" of {total / 2**20:.0f}" if total else ""
                log.info("  %s: %.0f%s MiB", desc, done / 2**20, of)
    return done


def reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


class Failure(NamedTuple):
    """One URL that gave no complete file: ``reason`` in one line; ``page``: the server answered
    with a web page."""

    url: str
    reason: str
    page: bool = False


class FetchError(DownloadError):
    """No URL gave a complete file: ``failures``, one per URL tried, in order; ``partial``:
    (bytes got, bytes announced) when the last one's connection dropped part way."""

    def __init__(self, dest: Path, failures: list[Failure],
                 partial: tuple[int, int] | None = None) -> None:
        self.dest, self.failures, self.partial = dest, failures, partial
        tried = "; ".join(f"{f.url}: {f.reason}" for f in failures)
        super().__init__(f"cannot download {dest.name} ({tried})")


class CorruptError(DownloadError):
    """The file downloaded from ``url`` failed its size or sha256 check (``reason``)."""

    def __init__(self, dest: Path, url: str, reason: str) -> None:
        self.dest, self.url, self.reason = dest, url, reason
        super().__init__(f"{dest.name} from {url} is corrupt: {reason}")


class _Partial(Exception):
    def __init__(self, got: int, total: int) -> None:
        super().__init__(f"stopped after {got:,} of {total:,} bytes (connection dropped)")
        self.got, self.total = got, total


class _WebPage(Exception):
    pass


def file_problem(path: Path, size: int | None = None, sha256: str | None = None) -> str | None:
    """Why ``path`` is not the expected file (its ``size`` in bytes, its hex ``sha256``), or None
    when it is (or nothing is expected)."""
    if size is not None and path.stat().st_size != size:
        return f"size {path.stat().st_size} != expected {size}"
    if sha256 is not None and file_sha256(path) != sha256.lower():
        return "sha256 mismatch"
    return None


def _get(url: str, path: Path, offset: int, timeout: float, agent: str, desc: str,
         log: logging.Logger | None) -> None:
    """Download ``url`` into ``path``; with ``offset`` continue its first ``offset`` bytes by an
    HTTP Range request (starting over when the server ignores it)."""
    headers = {"User-Agent": agent}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=timeout) as resp:
        if resp.headers.get_content_type() == "text/html":
            raise _WebPage
        if offset and resp.status != 206:
            offset = 0  # the server ignored the range: start over
        length = resp.headers.get("Content-Length")
        total = int(length) + offset if length and length.isdigit() else None
        with open(path, "ab" if offset else "wb") as f:
            got = _copy_stream(resp, f, total, desc, offset, log)
    if total is not None and got != total:
        raise _Partial(got, total)


def _fetch_first(urls: Sequence[str], path: Path, dest: Path, resume: bool, timeout: float,
                 agent: str, log: logging.Logger | None) -> str:
    """Fetch the first of ``urls`` that answers into ``path``; returns that URL."""
    failures: list[Failure] = []
    for url in urls:
        if log is not None:
            log.info("downloading %s", url)
        try:
            offset = path.stat().st_size if resume and path.exists() else 0
            try:
                _get(url, path, offset, timeout, agent, dest.name, log)
            except urllib.error.HTTPError as e:
                if not (offset and e.code == 416):
                    raise
                e.close()  # the range starts past the server's file: start over
                _get(url, path, 0, timeout, agent, dest.name, log)
            return url
        except _Partial as e:
            raise FetchError(dest, [*failures, Failure(url, str(e))], (e.got, e.total)) from None
        except _WebPage:
            failures.append(Failure(url, WEB_PAGE, page=True))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            failures.append(Failure(url, reason(e)))
        if log is not None:
            log.warning("download failed: %s: %s", url, failures[-1].reason)
    raise FetchError(dest, failures)


def download_url(urls: str | Sequence[str], dest: str | os.PathLike,
                 check: Callable[[Path], None] | None = None, *, size: int | None = None,
                 sha256: str | None = None, resume: bool = False, timeout: float = 60.0,
                 agent: str = "hat-download/0.1", log: logging.Logger | None = None) -> Path:
    """Download the first of ``urls`` that answers into ``dest``; returns ``dest``.

    The URLs are mirrors, tried in turn: an unreachable one, an HTTP error or a web page instead
    of the file moves on to the next; a connection that drops part way (fewer bytes than
    Content-Length) stops. The complete file is checked (``size``, ``sha256``, then ``check``,
    which raises) before it is renamed to ``dest``, so nothing incomplete or unchecked ever
    appears under that name. Without ``resume`` it is written under a temporary name that any
    failure deletes (:func:`hat.atomic.atomic_path`); with ``resume`` it is ``<dest>.part``,
    kept after a network failure so that the next call continues it with an HTTP Range request
    (deleted when it fails a check). Progress: a bar, and with ``log`` a line per URL, a
    warning per failed URL and a progress line every :data:`LOG_EVERY` seconds.

    Raises :class:`FetchError` (no URL gave a complete file), :class:`CorruptError` (wrong size
    or sha256) or what ``check`` raises.
    """
    urls, dest = ([urls] if isinstance(urls, str) else list(urls)), Path(dest)

    def verify(path: Path, url: str) -> None:
        problem = file_problem(path, size, sha256)
        if problem is not None:
            raise CorruptError(dest, url, problem)
        if check is not None:
            check(path)

    if not resume:
        with atomic_path(dest) as tmp:
            verify(tmp, _fetch_first(urls, tmp, dest, False, timeout, agent, log))
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = _fetch_first(urls, part, dest, True, timeout, agent, log)
    try:
        verify(part, url)
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
    except Exception:  # a failed check (an interrupt keeps the complete file to check again)
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def fetch_url(url: str, dest: str | os.PathLike, check: Callable[[Path], None], what: str,
              timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically (:func:`download_url`: progress bar,
    Content-Length check), running ``check`` on the complete temporary file before it is renamed
    to ``dest``; errors name ``what`` and say how to use ``--mirror`` instead."""
    dest = Path(dest)
    hint = (f"without network access, download it elsewhere, put it into a folder as {dest.name} "
            "and run again with --mirror <folder>")
    try:
        return download_url(url, dest, check, timeout=timeout)
    except FetchError as e:
        failure = e.failures[-1]
        if e.partial is not None:
            got, total = e.partial
            raise DownloadError(f"{what}: the download of {url} stopped after {got:,} of "
                                f"{total:,} bytes (connection dropped); run the command again"
                                ) from None
        if failure.page:
            raise DownloadError(f"{what}: {url} {failure.reason}; {hint}") from None
        raise DownloadError(f"{what}: cannot download {url}: {failure.reason}; {hint}") from None


def copy_file(src: str | os.PathLike, dest: str | os.PathLike, check: Callable[[Path], None]
              ) -> Path:
    """Copy ``src`` to ``dest`` atomically (progress bar), checking the copy before renaming."""
    src, dest = Path(src), Path(dest)
    with atomic_path(dest) as tmp:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            _copy_stream(fi, fo, src.stat().st_size, dest.name)
        check(tmp)
    return dest


def remove_stale(folder: Path, pattern: str) -> None:
    """Remove leftovers of a killed run (temporary files/folders this module names)."""
    for p in folder.glob(pattern) if folder.is_dir() else ():
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    """``name`` with glob wildcards escaped (HAT's names hold none but '@' and '.')."""
    return re.sub(r"([*?\[])", r"[\1]", name)
