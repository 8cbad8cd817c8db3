"""Downloading a recipe's files (size/sha256 checks, atomic, resumable) and extracting
archives into the raw dir."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from hat.data.recipes import DataPrepError, Download, TaskRecipe
from hat.download.catalog import DownloadError
from hat.download.data import safe_extract

logger = logging.getLogger(__name__)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(dl: Download, path: Path) -> str | None:
    """Return a reason why ``path`` is not the expected download, or None when it is."""
    if dl.size is not None and path.stat().st_size != dl.size:
        return f"size {path.stat().st_size} != expected {dl.size}"
    if dl.sha256 is not None and _file_digest(path) != dl.sha256:
        return "sha256 mismatch"
    return None


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing a partial file with an HTTP Range request."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "hat-data-prep/1.0"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=timeout) as resp:
        if offset and resp.status != 206:
            offset = 0  # server ignored the range: start over
        length = resp.headers.get("Content-Length")
        total = int(length) + offset if length is not None else None
        done, last_log = offset, time.monotonic()
        with open(part, "ab" if offset else "wb") as f:
            for block in iter(lambda: resp.read(1 << 20), b""):
                f.write(block)
                done += len(block)
                if time.monotonic() - last_log > 30:
                    last_log = time.monotonic()
                    of = f" of {total / 2**20:.0f}" if total else ""
                    logger.info("  %s: %.0f%s MiB", part.name, done / 2**20, of)
    if total is not None and part.stat().st_size != total:
        raise DataPrepError(f"download of {url} is incomplete: got {part.stat().st_size} of "
                            f"{total} bytes; run again to resume")


def download(dl: Download, raw_dir: Path, timeout: float = 60.0) -> Path:
    """Fetch ``dl`` into ``raw_dir`` (skipped when a complete file exists); return its path."""
    dest = raw_dir / dl.filename
    if dest.is_file():
        problem = _verify(dl, dest)
        if problem is None:
            logger.info("%s already downloaded", dl.filename)
            return dest
        raise DataPrepError(f"{dest}: {problem}; delete it to download again")
    raw_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in dl.urls:
        logger.info("downloading %s", url)
        try:
            _fetch(url, part, timeout)
            break
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{url}: {err}")
            logger.warning("download failed: %s: %s", url, err)
    else:
        raise DataPrepError(
            f"could not download {dl.filename} ({'; '.join(errors)}); fetch it by hand into "
            f"{raw_dir} and run again, or extract it and pass --raw-dir")
    problem = _verify(dl, part)
    if problem is not None:
        part.unlink()
        raise DataPrepError(f"downloaded {dl.filename} is corrupt: {problem}")
    os.replace(part, dest)
    return dest


def _merge_move(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into ``dst``, merging directories that already exist."""
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge_move(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def extract(archive: Path, raw_dir: Path) -> None:
    """Extract a .tgz/.tar/.zip archive into ``raw_dir`` once (a marker file records it)."""
    marker = raw_dir / f".{archive.name}.extracted"
    if marker.exists():
        return
    logger.info("extracting %s", archive.name)
    staging = raw_dir / f".{archive.name}.extracting"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
        else:  # the one safe tar extractor (plain files and folders, paths inside staging)
            safe_extract(archive, staging)
    except DownloadError as err:
        raise DataPrepError(str(err)) from None
    except (zipfile.BadZipFile, EOFError) as err:
        raise DataPrepError(f"{archive}: cannot extract ({err}); delete it to download "
                            "again") from None
    _merge_move(staging, raw_dir)
    shutil.rmtree(staging)
    marker.touch()


def fetch_raw(recipe: TaskRecipe, raw_dir: Path) -> None:
    """Download and extract every file of ``recipe`` into ``raw_dir``."""
    for dl in recipe.downloads:
        path = download(dl, raw_dir)
        if dl.is_archive:
            extract(path, raw_dir)


def resolve_raw(raw_dir: Path, rel: str) -> Path | None:
    """Return ``raw_dir/rel`` or its ``.gz`` variant, whichever exists, else None."""
    for cand in (raw_dir / rel, raw_dir / f"{rel}.gz"):
        if cand.is_file():
            return cand
    return None
