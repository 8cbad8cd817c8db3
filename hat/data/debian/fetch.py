"""Fetching catalogs: ``apt-get download`` of Debian packages (nothing is installed) and
``dpkg-deb -x`` of their German and French ``.mo`` files into the cache."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hat.data.debian.packages import LANGS
from hat.data.recipes import DataPrepError

logger = logging.getLogger(__name__)


def _run(cmd: Sequence[str], cwd: Path | None = None, timeout: float = 1800) -> tuple[int, str]:
    try:
        res = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True,
                             timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 1, str(err)
    return res.returncode, (res.stderr or res.stdout).strip()


def _find_deb(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    if len(found) > 1:
        logger.warning("%s: several .deb files in %s, using %s", package, debs, found[-1].name)
    return found[-1] if found else None


def extract_catalogs(deb: Path, dest: Path, langs: Sequence[str] = LANGS) -> int:
    """``dpkg-deb -x`` ``deb`` into a temporary folder and move its ``langs`` catalogs to
    ``dest/{VERSION,<lang>/*.mo}`` (atomically: ``dest`` appears complete or not at all).
    Returns the number of catalogs kept."""
    rc, version = _run(["dpkg-deb", "-f", str(deb), "Version"])
    if rc != 0 or not version:
        raise DataPrepError(f"{deb}: dpkg-deb cannot read its version: {version}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        root, staging = Path(tmp) / "root", Path(tmp) / "catalogs"
        rc, err = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if rc != 0:
            raise DataPrepError(f"{deb}: dpkg-deb -x failed: {err}")
        kept = 0
        for lang in langs:
            for base in ("usr/share/locale", "usr/share/locale-langpack"):
                folder = root / base / lang / "LC_MESSAGES"
                for mo in sorted(folder.glob("*.mo")) if folder.is_dir() else ():
                    if mo.is_file():  # symlinks to other packages' files are skipped
                        (staging / lang).mkdir(parents=True, exist_ok=True)
                        target = staging / lang / mo.name
                        if target.exists():  # the same domain in locale and locale-langpack
                            target = staging / lang / f"langpack-{mo.name}"
                        shutil.copyfile(mo, target)
                        kept += 1
        staging.mkdir(exist_ok=True)
        (staging / "VERSION").write_text(version + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    return kept


def fetch_catalogs(packages: Sequence[str], cache: Path) -> dict[str, str]:
    """Download and extract ``packages`` into ``cache``; packages already extracted are
    skipped. Returns ``{package: reason}`` of the packages that could not be fetched."""
    debs, catalogs = cache / "debs", cache / "catalogs"
    debs.mkdir(parents=True, exist_ok=True)
    todo = [p for p in packages if not (catalogs / p / "VERSION").is_file()]
    missing = [p for p in todo if _find_deb(debs, p) is None]
    failures: dict[str, str] = {}
    if missing:
        logger.info("apt-get download of %d packages into %s", len(missing), debs)
        rc, err = _run(["apt-get", "download", "-q", *missing], cwd=debs)
        if rc != 0:  # one unknown name fails the whole call: retry one by one
            logger.warning("apt-get download failed (%s); retrying package by package",
                           err.splitlines()[-1] if err else rc)
            for p in missing:
                if _find_deb(debs, p) is None:
                    rc, err = _run(["apt-get", "download", "-q", p], cwd=debs)
                    if rc != 0:
                        failures[p] = (err.splitlines() or [f"exit status {rc}"])[-1]
    for i, p in enumerate(todo, 1):
        if p in failures:
            continue
        deb = _find_deb(debs, p)
        if deb is None:
            failures[p] = "apt-get download gave no .deb file"
            continue
        try:
            n = extract_catalogs(deb, catalogs / p)
        except DataPrepError as err:
            failures[p] = str(err)
            continue
        logger.info("  [%d/%d] %s: %d catalogs", i, len(todo), deb.name, n)
    for p, reason in sorted(failures.items()):
        logger.warning("package %s not fetched: %s", p, reason)
    return failures
