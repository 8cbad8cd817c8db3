"""A task's preprocessed data (HAT's tgz) extracted safely into ``data/<task>/data-bin``
(``get_preprocessed.sh``)."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any

from hat.atomic import atomic_write_json
from hat.download.catalog import MARKER, DownloadError, HatData, check_task, direct_url
from hat.download.checks import check_file_sha, check_sha256, databin_missing, read_sha256
from hat.download.transfer import CHUNK, fetch_url, glob_escape, progress_bar, reason, remove_stale
from hat.errors import HatConfigError


def fetch_data(task: str, out: str | os.PathLike | None = None,
               mirror: str | os.PathLike | None = None, sha256: str | None = None,
               force: bool = False, timeout: float = 60.0, keep_archive: bool = True,
               url: str | None = None, log: Callable[[str], None] = print) -> Path:
    """Put HAT's binarized data of ``task`` into ``out`` (default ``data/<task>/data-bin``).

    The tgz is downloaded beside ``out`` (or read from ``mirror``), checked (sha256 when given or
    in ``<archive>.sha256`` of the mirror), extracted safely into a temporary folder, checked to
    be a fairseq data-bin of the task's language pair and renamed to ``out``. A data-bin this
    function extracted before is kept (``force`` replaces it); any other existing ``out`` is
    an error (it may be this project's own preprocessing, whose dictionaries differ from HAT's).
    """
    spec = check_task(task)
    url = direct_url(url or spec.url)
    out = Path(out) if out is not None else Path("data") / task / "data-bin"
    expected = check_sha256(sha256) if sha256 else None
    if out.exists() and not force:
        _check_existing(out, spec)
        log(f"| present    {out} (HAT's {task} data-bin, complete; --force to fetch again)")
        return out
    archive, downloaded = _archive(spec, url, out, mirror, expected, force, timeout, log)
    extract_databin(archive, out, spec.src, spec.tgt,
                    {"task": task, "archive": archive.name, "source": str(mirror or url)})
    log(f"| extracted  {out} (HAT's {task} data-bin: {spec.src}-{spec.tgt}, checked)")
    if downloaded and not keep_archive:
        archive.unlink()
    elif downloaded:
        log(f"| kept       {archive} (delete it to save space, or use --delete-archive)")
    return out


def _check_existing(out: Path, spec: HatData) -> None:
    missing = databin_missing(out, spec.src, spec.tgt) if out.is_dir() else ["(not a folder)"]
    if not (out / MARKER).is_file():
        lacks = f"; it lacks {_listing(missing)}" if missing else ""
        raise HatConfigError(
            f"{out} already exists but was not extracted from HAT's archive (made by "
            f"preprocess.sh or by hand?){lacks}. HAT's released models need HAT's dictionaries: "
            "pass --force to replace it with HAT's data, or --out DIR to extract elsewhere")
    if missing:
        raise HatConfigError(f"{out} is incomplete: it lacks {_listing(missing)}; run again "
                             "with --force to extract it again")


def _listing(names: Sequence[str], n: int = 6) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _archive(spec: HatData, url: str, out: Path, mirror: str | os.PathLike | None,
             expected: str | None, force: bool, timeout: float, log: Callable[[str], None]
             ) -> tuple[Path, bool]:
    """(path of the checked tgz, whether it was downloaded here)."""
    def check(path: Path) -> None:
        with open(path, "rb") as f:
            head = f.read(2)
        if head != b"\x1f\x8b":
            kind = "a web page" if head.startswith(b"<") else f"starts with {head!r}"
            raise DownloadError(f"{path.name}: not a gzip-compressed tar archive ({kind})")
        check_file_sha(path, expected, str(path))

    if mirror is not None:
        names = dict.fromkeys([spec.archive, Path(url.split("?")[0]).name])
        found = [Path(mirror) / n for n in names if (Path(mirror) / n).is_file()]
        if not found:
            raise DownloadError(f"{' or '.join(names)} not found in the mirror folder (--mirror "
                                f"{mirror}); put HAT's archive there, or leave out --mirror to "
                                f"download it from {url}")
        src = found[0]
        if expected is None and Path(f"{src}.sha256").is_file():
            expected = read_sha256(f"{src}.sha256")
        check(src)
        log(f"| using      {src} (mirror)")
        return src, False
    dest = out.parent / spec.archive
    remove_stale(dest.parent, f".{glob_escape(dest.name)}.*.tmp")
    if dest.is_file() and not force:
        check(dest)
        log(f"| using      {dest} (downloaded before)")
        return dest, True
    fetch_url(url, dest, check, spec.archive, timeout)
    log(f"| downloaded {dest} (from {url})")
    return dest, True


def _inside(name: str, archive: Path) -> PurePosixPath | None:
    """Member ``name``'s path relative to the target, refusing paths that lead outside it (None
    for the archive's root entry)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise DownloadError(f"{archive}: refusing {name}: its path leads outside the "
                            "folder it is extracted into")
    parts = [p for p in path.parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def _member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    """The tar member's path relative to the target, refusing links, special files and paths
    that lead outside the target (None for the archive's root entry)."""
    if member.issym() or member.islnk():
        raise DownloadError(f"{archive}: refusing the link {member.name} -> {member.linkname} "
                            "(only plain files and folders are extracted)")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive}: refusing {member.name}: not a plain file or folder")
    return _inside(member.name, archive)


def _zip_member_path(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath | None:
    """:func:`_member_path` for a zip member (its type is in the Unix mode, when recorded)."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise DownloadError(f"{archive}: refusing the link {info.filename} (only plain files "
                            "and folders are extracted)")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DownloadError(f"{archive}: refusing {info.filename}: not a plain file or folder")
    return _inside(info.filename, archive)


def _check_gzip_complete(archive: Path) -> None:
    """Decompress a gzip file to its end: a truncated one raises EOFError (tarfile alone may take
    a cut that falls between two members for the end of the archive)."""
    with open(archive, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return
    with gzip.open(archive, "rb") as g:
        while g.read(CHUNK):
            pass


def _write_member(dest: Path, rel: PurePosixPath, open_src: Callable[[], IO[bytes] | None] | None
                  ) -> None:
    """Create the checked member ``rel`` under ``dest``: a folder when ``open_src`` is None,
    else a file with what ``open_src()`` reads."""
    target = dest.joinpath(*rel.parts)
    if open_src is None:
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    src = open_src()
    assert src is not None  # a regular file (links and devices were refused)
    with src, open(target, "wb") as f:
        shutil.copyfileobj(src, f, CHUNK)


def _extract_tar(archive: Path, dest: Path) -> None:
    _check_gzip_complete(archive)
    with tarfile.open(archive, "r|*") as tf, \
            progress_bar(None, f"extract {archive.name}") as bar:
        for member in tf:
            rel = _member_path(member, archive)
            if rel is None:
                continue
            _write_member(dest, rel, None if member.isdir() else partial(tf.extractfile, member))
            bar.update(member.size)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf, \
            progress_bar(None, f"extract {archive.name}") as bar:
        members = [(info, _zip_member_path(info, archive)) for info in zf.infolist()]
        for info, rel in members:  # every member checked before anything is written
            if rel is None:
                continue
            _write_member(dest, rel, None if info.is_dir() else partial(zf.open, info))
            bar.update(info.file_size)


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a tar(.gz), or a zip (by its ``.zip`` name), into ``dest``: plain files and
    folders only, every path inside ``dest`` (an unsafe member stops the extraction with an
    error)."""
    archive, dest = Path(archive), Path(dest)
    try:
        if archive.name.endswith(".zip"):
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        raise DownloadError(f"{archive}: cannot extract it ({reason(e)}); the archive is "
                            "truncated or corrupt: delete it (or run with --force) to fetch it "
                            "again") from None


def _databin_root(top: Path, src: str) -> Path:
    """The extracted folder holding the data-bin: the one with dict.<src>.txt, else ``top``
    after descending through single subfolders (an archive with one top-level folder)."""
    found = sorted({p.parent for p in top.rglob(f"dict.{src}.txt")})
    if len(found) == 1:
        return found[0]
    root = top
    while True:
        entries = list(root.iterdir())
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        root = entries[0]


def extract_databin(archive: str | os.PathLike, out: str | os.PathLike, src: str, tgt: str,
                    info: dict[str, Any] | None = None) -> Path:
    """Extract ``archive`` into a temporary folder beside ``out``, check it is a fairseq
    data-bin of ``src``-``tgt`` and rename it to ``out`` (replacing an old ``out``)."""
    archive, out = Path(archive), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out.parent, f".{glob_escape(out.name)}.extracting.*")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.extracting.", dir=out.parent))
    try:
        safe_extract(archive, staging / "x")
        top = staging / "x"
        if not top.is_dir():
            raise DownloadError(f"{archive}: the archive is empty")
        root = _databin_root(top, src)
        missing = databin_missing(root, src, tgt)
        if missing:
            have = sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file())
            raise DownloadError(
                f"{archive}: not a fairseq data-bin of {src}-{tgt}: {root.relative_to(staging)} "
                f"lacks {_listing(missing)} (the archive holds {len(have)} files"
                + (f": {_listing(have)})" if have else ")"))
        atomic_write_json(root / MARKER, info or {"archive": archive.name})
        if out.exists():
            old = staging / "old"
            os.replace(out, old)
        os.replace(root, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
