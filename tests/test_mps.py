"""CUDA MPS for side-by-side trainings (hat/mps.py), with a stand-in for the control binary."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from hat.mps import mps_daemon

FAKE = """#!{python}
import json, os, sys
# records how it was called: arguments, stdin, the MPS pipe folder it was given
stdin = "" if sys.argv[1:] else sys.stdin.read().strip()
with open(os.environ["FAKE_LOG"], "a") as f:
    print(json.dumps({{"args": " ".join(sys.argv[1:]), "stdin": stdin,
                      "pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY")}}), file=f)
sys.exit(int(os.environ.get("FAKE_RC", "0")))
"""


def _fake(tmp_path: Path, monkeypatch, rc: int = 0) -> Path:
    exe = tmp_path / "bin" / "nvidia-cuda-mps-control"
    exe.parent.mkdir()
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_RC", str(rc))
    return tmp_path / "calls.jsonl"


def test_the_daemon_of_our_own_starts_serves_and_stops(tmp_path: Path, monkeypatch) -> None:
    calls_log = _fake(tmp_path, monkeypatch)
    said: list[str] = []
    with mps_daemon(said.append) as env:
        pipe = Path(env["CUDA_MPS_PIPE_DIRECTORY"])
        assert pipe.is_dir() and Path(env["CUDA_MPS_LOG_DIRECTORY"]).is_dir()
        assert pipe.parent.name.startswith("hat_mps_")  # a fresh folder, not a shared one
    calls = [json.loads(line) for line in calls_log.read_text().splitlines()]
    assert [c["args"] for c in calls] == ["-d", ""]
    assert calls[0]["pipe"] == calls[1]["pipe"] == str(pipe)
    assert calls[1]["stdin"] == "quit"
    assert not pipe.exists() and "serves the trainings" in said[0]


def test_without_mps_the_trainings_run_time_sliced(tmp_path: Path, monkeypatch) -> None:
    _fake(tmp_path, monkeypatch, rc=1)
    said: list[str] = []
    with mps_daemon(said.append) as env:
        assert env == {}
    assert "-d failed" in said[0] and "time-sliced" in said[0]
    said.clear()
    with mps_daemon(said.append, control="no-such-mps-control") as env:
        assert env == {}
    assert "not found" in said[0]


def test_the_pipeline_uses_mps_only_when_trainings_share_a_gpu(tmp_path: Path,
                                                               monkeypatch) -> None:
    import contextlib

    import hat.mps
    from hat.pipeline.__main__ import main  # noqa: F401 - the flag below is its
    from hat.pipeline.context import Context
    from hat.pipeline.presets import preset
    from hat.pipeline.retraining import shared_gpu

    @contextlib.contextmanager
    def fake_daemon(say):
        yield {"CUDA_MPS_PIPE_DIRECTORY": "/x"}

    monkeypatch.setattr(hat.mps, "mps_daemon", fake_daemon)

    def env(device: str, at_once: int, gpus: int = 1, mps: bool = True) -> dict:
        ctx = Context(out=tmp_path, preset=preset("cuda" if device == "cuda" else "tiny"),
                      say=lambda m: None, gpus=gpus, mps=mps)
        with shared_gpu(ctx, at_once) as e:
            return e

    assert env("cuda", 2) == {"CUDA_MPS_PIPE_DIRECTORY": "/x"}
    assert env("cuda", 1) == {}  # alone on its GPU
    assert env("cuda", 2, gpus=2) == {}  # one per GPU
    assert env("cuda", 4, gpus=2) == {"CUDA_MPS_PIPE_DIRECTORY": "/x"}
    assert env("cuda", 2, mps=False) == {}  # --no-mps
    assert env("cpu", 2) == {}


def test_no_mps_flag_reaches_the_pipeline(monkeypatch, tmp_path: Path) -> None:
    import hat.pipeline.__main__ as cli

    got = {}
    monkeypatch.setattr(cli, "run_pipeline", lambda out, name, **k: got.update(k))
    assert cli.main(["--out", str(tmp_path / "r"), "--tiny", "--no-mps"]) == 0
    assert got["mps"] is False
    assert cli.main(["--out", str(tmp_path / "r"), "--tiny"]) == 0
    assert got["mps"] is True
