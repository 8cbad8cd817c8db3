"""One released model into ``<save-path>/<name>.pt`` (``download_model.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hat.download.catalog import (
    DEFAULT_SAVE_PATH,
    DownloadError,
    check_model_name,
    direct_url,
    model_url,
)
from hat.download.checks import check_model_file, check_sha256, read_sha256
from hat.download.transfer import copy_file, fetch_url, glob_escape, remove_stale


def download_model(name: str, save_path: str | os.PathLike = DEFAULT_SAVE_PATH,
                   mirror: str | os.PathLike | None = None, sha256: str | None = None,
                   force: bool = False, timeout: float = 60.0, url: str | None = None,
                   log: Callable[[str], None] = print) -> tuple[Path, str]:
    """Put released model ``name`` into ``save_path/<name>.pt``; returns (path, what happened:
    ``present``, ``copied`` or ``downloaded``). ``mirror``: copy ``<mirror>/<name>.pt`` instead
    of downloading (its ``<name>.pt.sha256``, if present, is checked); ``url`` overrides the
    table's."""
    check_model_name(name)
    url = direct_url(url) if url else model_url(name)
    dest = Path(save_path) / f"{name}.pt"
    remove_stale(dest.parent, f".{glob_escape(dest.name)}.*.tmp")
    expected = check_sha256(sha256) if sha256 else None
    src = Path(mirror) / dest.name if mirror is not None else None
    if expected is None and src is not None and Path(f"{src}.sha256").is_file():
        expected = read_sha256(f"{src}.sha256")
    if dest.is_file() and not force:
        try:
            check_model_file(dest, str(dest), expected, name)
            log(f"| present    {dest} (valid; --force to fetch again)")
            return dest, "present"
        except DownloadError as e:
            log(f"| replacing  {dest}: {str(e).removeprefix(f'{dest}: ')}")

    def check(tmp: Path) -> None:
        check_model_file(tmp, f"{name} (from {src or url})", expected, name)

    if src is not None:
        if not src.is_file():
            raise DownloadError(f"{name}: {src} not found in the mirror folder (--mirror "
                                f"{mirror}); put HAT's {dest.name} there, or leave out --mirror "
                                f"to download it from {url}")
        copy_file(src, dest, check)
        log(f"| copied     {dest} (from {src}, checked)")
        return dest, "copied"
    fetch_url(url, dest, check, name, timeout)
    log(f"| downloaded {dest} (from {url}, checked)")
    return dest, "downloaded"
