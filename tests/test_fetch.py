"""The one URL fetcher (hat.download.transfer.download_url) and the one safe extractor
(hat.download.data.safe_extract) for tar and zip, against a local HTTP server."""

from __future__ import annotations

import hashlib
import logging
import stat
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from hat.data import fetch
from hat.data.recipes import DataPrepError, Download
from hat.download.catalog import DownloadError
from hat.download.data import safe_extract
from hat.download.transfer import CorruptError, FetchError, download_url
from tests.conftest import serve_http

BODY = bytes(range(256)) * 4096  # 1 MiB


class _Handler(BaseHTTPRequestHandler):
    """``/file`` answers Range requests (206), ``/norange`` ignores them, ``/page`` is HTML,
    ``/cut`` announces more bytes than it sends; anything else is 404."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests.append((self.path, self.headers.get("Range")))  # type: ignore
        body, ctype, status, declared = BODY, "application/octet-stream", 200, None
        rng = self.headers.get("Range")
        if self.path == "/file" and rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(BODY):
                self.send_error(416)
                return
            body, status = BODY[start:], 206
        elif self.path == "/page":
            body, ctype = b"<!DOCTYPE html><html>log in</html>", "text/html"
        elif self.path == "/cut":
            body, declared = BODY[:1000], len(BODY)
        elif self.path not in ("/file", "/norange"):
            self.send_error(404)
            return
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(declared or len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    yield from serve_http(_Handler, monkeypatch, requests=[])


SHA = hashlib.sha256(BODY).hexdigest()


def test_resume_continues_a_partial_file_with_a_range_request(server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(BODY[:300_000])
    download_url(f"{server.url}/file", dest, size=len(BODY), sha256=SHA, resume=True)
    assert dest.read_bytes() == BODY and not (tmp_path / "f.bin.part").exists()
    assert server.requests == [("/file", "bytes=300000-")]


def test_resume_starts_over_when_the_range_is_ignored_or_refused(server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"junk" * 10)
    download_url(f"{server.url}/norange", dest, sha256=SHA, resume=True)
    assert dest.read_bytes() == BODY
    dest.unlink()
    (tmp_path / "f.bin.part").write_bytes(b"x" * (len(BODY) + 5))  # longer than the file: 416
    download_url(f"{server.url}/file", dest, sha256=SHA, resume=True)
    assert dest.read_bytes() == BODY
    assert server.requests[-2:] == [("/file", f"bytes={len(BODY) + 5}-"), ("/file", None)]


def test_sha_mismatch_deletes_the_file(server, tmp_path: Path) -> None:
    for resume in (False, True):
        with pytest.raises(CorruptError, match="f.bin from .*/file is corrupt: sha256 mismatch"):
            download_url(f"{server.url}/file", tmp_path / "f.bin", sha256="0" * 64,
                         resume=resume)
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(CorruptError, match=f"size {len(BODY)} != expected 5"):
        download_url(f"{server.url}/file", tmp_path / "f.bin", size=5)


def test_mirror_fallback_and_errors_naming_every_url(server, tmp_path: Path, caplog) -> None:
    urls = [f"{server.url}/missing", f"{server.url}/page", f"{server.url}/file"]
    with caplog.at_level(logging.INFO):
        download_url(urls, tmp_path / "f.bin", sha256=SHA, log=logging.getLogger("t"))
    assert (tmp_path / "f.bin").read_bytes() == BODY
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"download failed: {urls[0]}: HTTP 404 Not Found",
                      f"download failed: {urls[1]}: answered with a web page instead of the "
                      "file (a moved or rate-limited link?)"]
    with pytest.raises(FetchError) as err:
        download_url(urls[:2], tmp_path / "g.bin")
    assert [f.url for f in err.value.failures] == urls[:2] and err.value.failures[1].page
    assert str(err.value).startswith(f"cannot download g.bin ({urls[0]}: HTTP 404")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no temporary file left


def test_a_dropped_connection_stops_and_keeps_the_part_to_resume(server, tmp_path: Path) -> None:
    dl = Download("f.bin", (f"{server.url}/cut", f"{server.url}/file"), len(BODY), SHA)
    with pytest.raises(DataPrepError, match=f"/cut is incomplete: got 1000 of {len(BODY)} bytes; "
                                            "run again to resume"):
        fetch.download(dl, tmp_path)
    assert (tmp_path / "f.bin.part").stat().st_size == 1000
    resumed = Download("f.bin", (f"{server.url}/file",), len(BODY), SHA)
    assert fetch.download(resumed, tmp_path).read_bytes() == BODY
    assert server.requests[-1] == ("/file", "bytes=1000-")
    with pytest.raises(DownloadError, match="stopped after 1,000 of"):
        download_url(f"{server.url}/cut", tmp_path / "g.bin")


def test_data_prep_messages(server, tmp_path: Path) -> None:
    bad = Download("f.bin", (f"{server.url}/file",), sha256="0" * 64)
    with pytest.raises(DataPrepError, match="downloaded f.bin is corrupt: sha256 mismatch"):
        fetch.download(bad, tmp_path)
    gone = Download("f.bin", (f"{server.url}/missing",))
    with pytest.raises(DataPrepError, match=r"could not download f.bin \(http://.*/missing: HTTP "
                                            r"404 Not Found\); fetch it by hand into"):
        fetch.download(gone, tmp_path)
    (tmp_path / "f.bin").write_bytes(b"old")
    with pytest.raises(DataPrepError, match="f.bin: size 3 != expected 1048576; delete it"):
        fetch.download(Download("f.bin", (f"{server.url}/file",), len(BODY)), tmp_path)


def _zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("entry,message", [
    (("../evil.txt", b"x", stat.S_IFREG | 0o644), "leads outside"),
    (("/tmp/hat-evil.txt", b"x", stat.S_IFREG | 0o644), "leads outside"),
    (("c/link", b"/etc/passwd", stat.S_IFLNK | 0o777), "refusing the link c/link"),
    (("c/fifo", b"", stat.S_IFIFO | 0o644), "not a plain file or folder"),
])
def test_unsafe_zip_members_are_refused(tmp_path: Path, entry, message) -> None:
    archive = _zip(tmp_path / "a.zip", [("c/ok.txt", b"ok", stat.S_IFREG | 0o644), entry])
    with pytest.raises(DownloadError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()
    with pytest.raises(DataPrepError, match=message):
        fetch.extract(archive, tmp_path / "raw")


def test_zip_extraction(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("c/", b"", stat.S_IFDIR | 0o755),
                                        ("c/d/x.txt", b"hello", stat.S_IFREG | 0o644),
                                        ("y.txt", b"no mode", 0)])
    fetch.extract(archive, tmp_path / "raw")
    assert (tmp_path / "raw" / "c" / "d" / "x.txt").read_bytes() == b"hello"
    assert (tmp_path / "raw" / "y.txt").read_bytes() == b"no mode"
    (tmp_path / "b.zip").write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataPrepError, match="cannot extract it .*truncated or corrupt"):
        fetch.extract(tmp_path / "b.zip", tmp_path / "raw2")
