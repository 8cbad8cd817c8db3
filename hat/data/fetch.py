"""Downloading a recipe's files (size/sha256 checks, atomic, resumable) and extracting
archives into the raw dir."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from hat.data.recipes import DataPrepError, Download, TaskRecipe
from hat.download.catalog import DownloadError
from hat.download.data import safe_extract
from hat.download.transfer import CorruptError, FetchError, download_url, file_problem

logger = logging.getLogger(__name__)


def download(dl: Download, raw_dir: Path, timeout: float = 60.0) -> Path:
    """Fetch ``dl`` into ``raw_dir`` (skipped when a complete file exists); return its path.

    :func:`hat.download.transfer.download_url` does the work: its URLs in turn, a partial
    ``<file>.part`` of an earlier run continued, size and sha256 checked before the rename."""
    dest = raw_dir / dl.filename
    if dest.is_file():
        problem = file_problem(dest, dl.size, dl.sha256)
        if problem is None:
            logger.info("%s already downloaded", dl.filename)
            return dest
        raise DataPrepError(f"{dest}: {problem}; delete it to download again")
    raw_dir.mkdir(parents=True, exist_ok=True)
    try:
        return download_url(dl.urls, dest, size=dl.size, sha256=dl.sha256, resume=True,
                            timeout=timeout, agent="hat-data-prep/1.0", log=logger)
    except CorruptError as err:
        raise DataPrepError(f"downloaded {dl.filename} is corrupt: {err.reason}") from None
    except FetchError as err:
        if err.partial is not None:
            got, total = err.partial
            raise DataPrepError(f"download of {err.failures[-1].url} is incomplete: got {got} "
                                f"of {total} bytes; run again to resume") from None
        errors = "; ".join(f"{f.url}: {f.reason}" for f in err.failures)
        raise DataPrepError(
            f"could not download {dl.filename} ({errors}); fetch it by hand into "
            f"{raw_dir} and run again, or extract it and pass --raw-dir") from None


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
    try:  # the one safe extractor (plain files and folders, paths inside staging)
        safe_extract(archive, staging)
    except DownloadError as err:
        raise DataPrepError(str(err)) from None
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
