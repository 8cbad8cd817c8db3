"""Moving bytes: a URL or a mirror's file into a checked temporary file renamed into place, with a
progress bar."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from hat.atomic import atomic_path
from hat.download.catalog import CHUNK, DownloadError


def progress_bar(total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                dynamic_ncols=True, disable=None, leave=False)


def _copy_stream(src: BinaryIO, dst: BinaryIO, total: int | None, desc: str) -> int:
    done = 0
    with progress_bar(total, desc) as bar:
        for block in iter(lambda: src.read(CHUNK), b""):
            dst.write(block)
            done += len(block)
            bar.update(len(block))
    return done


def reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def fetch_url(url: str, dest: str | os.PathLike, check: Callable[[Path], None], what: str,
              timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically (progress bar, Content-Length check), running
    ``check`` on the complete temporary file before it is renamed to ``dest``."""
    dest = Path(dest)
    hint = (f"without network access, download it elsewhere, put it into a folder as {dest.name} "
            "and run again with --mirror <folder>")
    request = urllib.request.Request(url, headers={"User-Agent": "hat-download/0.1"})
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp, open(tmp, "wb") as f:
                if resp.headers.get_content_type() == "text/html":
                    raise DownloadError(f"{what}: {url} answered with a web page instead of the "
                                        f"file (a moved or rate-limited link?); {hint}")
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                got = _copy_stream(resp, f, total, dest.name)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise DownloadError(f"{what}: cannot download {url}: {reason(e)}; {hint}") from None
        if total is not None and got != total:
            raise DownloadError(f"{what}: the download of {url} stopped after {got:,} of "
                                f"{total:,} bytes (connection dropped); run the command again")
        check(tmp)
    return dest


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
