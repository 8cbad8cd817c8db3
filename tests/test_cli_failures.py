"""The user's cases of operating-system and input failures: each CLI refuses an unwritable output,
a broken data folder, the wrong kind of file or an impossible device before its long work, in
one line (exit 2, no traceback); a failure during the work keeps what was finished."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hat.atomic import atomic_path, atomic_write_text, remove_stale_temporaries
from hat.data.toy_corpus import make_toy_corpus
from tests.conftest import ROOT
from tests.test_latency_integrity import needs_permissions

TINY = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
TOY_EVO = ROOT / "configs" / "toy" / "evo_search" / "toy_cpu_epyc.yml"
PREDICTOR = ROOT / "latency_dataset" / "predictors" / "toy_cpu_epyc.pt"
SMALL = ["--evo-iter", "2", "--population-size", "8", "--parent-size", "3",
         "--mutation-size", "3", "--crossover-size", "3", "--seed", "3"]
READ_ONLY = pytest.param("read-only", marks=needs_permissions)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    """A toy data-bin and a tiny SuperTransformer trained for 4 updates."""
    base = tmp_path_factory.mktemp("failures")
    data = make_toy_corpus(base / "toy", n_train=300, n_valid=40, n_test=20)
    save = base / "ck"
    res = subprocess.run([sys.executable, "train.py", str(data), f"--configs={TINY}",
                          "--save-dir", str(save), "--max-update", "4", "--max-tokens", "1024",
                          "--num-workers", "0", "--disable-validation"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"data": data, "ckpt": save / "checkpoint_last.pt"}


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A file where the user meant a folder (refused even for root)."""
    f = tmp_path / "results"
    f.write_text("not a folder\n")
    return f


def one_line_error(rc: int, err: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def run_main(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = main(argv)
    return one_line_error(rc, capsys.readouterr().err)


def search_argv(toy: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [str(toy["data"]), f"--configs={TINY}", f"--evo-configs={TOY_EVO}",
            "--restore-file", str(toy["ckpt"]), "--write-config-path", str(out), *SMALL, *extra]


def train_argv(data: Path, save: Path, *extra: str) -> list[str]:
    return [str(data), f"--configs={TINY}", "--save-dir", str(save), "--max-update", "2",
            "--max-tokens", "1024", "--num-workers", "0", "--disable-validation", *extra]


# ----------------------------------------------------------------------------- item 15
@pytest.mark.slow
@pytest.mark.parametrize("where", [READ_ONLY, "file"])
def test_evo_search_into_an_unwritable_folder_fails_before_searching(
        where: str, toy, read_only, a_file, capsys) -> None:
    from hat.search.cli import main

    folder = read_only if where == "read-only" else a_file
    out = folder / "found.yml"
    err = run_main(main, search_argv(toy, out), capsys)
    why = (f"cannot write into the folder {folder}" if where == "read-only"
           else f"{folder} is a file")
    assert f"write-config-path (command line): output {out}" in err and why in err, err
    assert "iteration" not in capsys.readouterr().err


def test_evo_search_failing_to_write_mid_search_keeps_the_finished_iterations(
        toy, tmp_path, capsys, monkeypatch) -> None:
    """The disk fills up after iteration 1: one line, the state of iteration 1 is kept and the
    same command continues from it."""
    import hat.search.cli as cli

    out = tmp_path / "found.yml"
    real, calls = cli.write_evaluations_csv, []

    def full_disk(path, space, cands):
        calls.append(path)
        if len(calls) > 2:  # the initial population and iteration 1 are written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, space, cands)

    monkeypatch.setattr(cli, "write_evaluations_csv", full_disk)
    err = run_main(cli.main, search_argv(toy, out), capsys)
    assert f"{tmp_path / 'found.evaluations.csv'}: No space left on device" in err
    assert "the same command continues" in err
    state = json.loads((tmp_path / "found.state.json").read_text())
    assert state["state"]["iteration"] >= 1
    monkeypatch.undo()
    assert cli.main(search_argv(toy, out)) == 0
    assert "resuming from" in capsys.readouterr().err and out.is_file()


@pytest.mark.parametrize("where", ["file", "under a file", READ_ONLY])
def test_pipeline_out_that_is_a_file_or_read_only(where: str, read_only, a_file, capsys) -> None:
    from hat.pipeline.__main__ import main

    out = {"file": a_file, "under a file": a_file / "run", "read-only": read_only / "run"}[where]
    err = run_main(main, ["--out", str(out), "--tiny"], capsys)
    assert f"--out {out}" in err
    assert {"file": "this is a file, not a folder", "under a file": f"{a_file} is a file",
            "read-only": f"cannot create the folder {out}"}[where] in err, err
    assert a_file.read_text() == "not a folder\n"


@pytest.mark.parametrize("where", ["file", "under a file", READ_ONLY])
def test_train_save_dir_that_is_a_file_or_read_only(where: str, toy, read_only, a_file,
                                                    capsys) -> None:
    from hat.train_cli import main

    save = {"file": a_file, "under a file": a_file / "ck", "read-only": read_only / "ck"}[where]
    err = run_main(main, train_argv(toy["data"], save), capsys)
    assert f"save-dir {save} (command line): this is a file" in err if where == "file" else (
        f"save-dir (command line): checkpoint {save / 'checkpoint_last.pt'}" in err), err


@pytest.mark.parametrize("where", ["under a file", READ_ONLY])
def test_export_out_in_an_unwritable_folder(where: str, toy, tmp_path, read_only, a_file,
                                            capsys) -> None:
    from hat.export import main
    from hat.space import SubConfig, write_subtransformer_yaml

    sub = tmp_path / "sub.yml"
    write_subtransformer_yaml(SubConfig(96, 3, [128] * 3, [2] * 3, 96, 2, [128] * 2, [2] * 2,
                                        [2] * 2, [1] * 2), sub)
    out = (a_file if where == "under a file" else read_only) / "sub.pt"
    err = run_main(main, [f"--configs={TINY}", f"--sub-configs={sub}", "--restore-file",
                          str(toy["ckpt"]), "--out", str(out)], capsys)
    assert f"--out {out}: cannot" in err, err


# ----------------------------------------------------------------------------- item 16
def test_dictionary_smaller_than_the_binarized_data_is_refused_before_training(
        toy, tmp_path, capsys) -> None:
    from hat.train_cli import main

    data = tmp_path / "data-bin"
    shutil.copytree(toy["data"], data)
    lines = (data / "dict.tgt.txt").read_text().splitlines(keepends=True)
    (data / "dict.tgt.txt").write_text("".join(lines[:50]))  # 54 symbols with the specials
    save = tmp_path / "ck"
    err = run_main(main, train_argv(data, save), capsys)
    assert f"{data}/train.src-tgt.tgt.bin: token id" in err, err
    assert f"is outside the dictionary {data / 'dict.tgt.txt'} (54 symbols" in err
    assert not (save / "crash.pt").exists()


def test_garbage_dictionary_names_the_file_and_line(toy, tmp_path, capsys) -> None:
    from hat.train_cli import main

    data = tmp_path / "data-bin"
    shutil.copytree(toy["data"], data)
    lines = (data / "dict.src.txt").read_text().splitlines(keepends=True)
    lines[6] = "<html><body>Not Found</body></html>\n"  # a download that answered with a page
    (data / "dict.src.txt").write_text("".join(lines))
    err = run_main(main, train_argv(data, tmp_path / "ck"), capsys)
    assert f"{data / 'dict.src.txt'}, line 7: '<html><body>Not Found</body></html>' is not " \
           "'<token> <count>'" in err, err


def test_supertransformer_checkpoint_as_the_latency_predictor(toy, tmp_path, capsys) -> None:
    from hat.search.cli import main

    err = run_main(main, search_argv(toy, tmp_path / "found.yml", "--ckpt-path",
                                     str(toy["ckpt"])), capsys)
    assert f"ckpt-path {toy['ckpt']} (command line)" in err
    assert "not a latency predictor: it is a SuperTransformer training checkpoint" in err
    assert "goes in restore-file" in err and "weights_only" not in err, err


@no_cuda
def test_measure_latency_gpu_without_a_gpu_fails_before_the_search(toy, tmp_path,
                                                                   capsys) -> None:
    from hat.search.cli import main

    out = tmp_path / "found.yml"
    err = run_main(main, search_argv(toy, out, "--measure-latency", "gpu"), capsys)
    assert "measure-latency gpu (command line): torch sees no CUDA device" in err
    assert not (tmp_path / "found.state.json").exists()
    # a predictor measured on a GPU is calibrated on one: refused as well, before the search
    pred = tmp_path / "gpu.pt"
    shutil.copy(PREDICTOR, pred)
    side = json.loads(Path(f"{PREDICTOR}.json").read_text())
    side["meta"]["dataset"]["protocol"]["device"] = "cuda:0"
    Path(f"{pred}.json").write_text(json.dumps(side))
    err = run_main(main, search_argv(toy, out, "--ckpt-path", str(pred),
                                     "--calibrate-latency", "3"), capsys)
    assert "calibrate-latency 3 (command line): the predictor's latencies were measured on " \
           "a GPU" in err, err
    assert not (tmp_path / "found.state.json").exists()


_WRITER = """
import sys, time
from hat.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half a file")
    print(tmp, flush=True)
    time.sleep(600)
"""


def _writer(target: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


@pytest.mark.slow
def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path) -> None:
    """The user's case: evo_search killed while writing found.evaluations.csv left a hidden
    .found.evaluations.csv.*.tmp; the next write of that file removes it (a live writer's and
    other files' temporaries stay)."""
    target = tmp_path / "found.evaluations.csv"
    killed, stale = _writer(target)
    live, running = _writer(target)
    other = tmp_path / "found.front.csv"
    other_proc, others = _writer(other)
    try:
        for p in (killed, other_proc):
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        assert stale.is_file() and stale.name.startswith(f".found.evaluations.csv.{killed.pid}-")
        assert atomic_write_text(target, "iteration\n") == target
        assert not stale.exists()
        assert running.is_file() and others.is_file()  # a live writer's; another target's
        assert target.read_text() == "iteration\n"
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temporaries(target) == [running]
    with atomic_path(other) as tmp:
        tmp.write_text("front\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, target.name])


# ----------------------------------------------------------------------------- item 18
@no_cuda
def test_fp16_config_on_a_machine_without_cuda_is_refused_before_fairseq(toy, tmp_path,
                                                                         capsys) -> None:
    from hat.train_cli import main

    cfg = tmp_path / "fp16.yml"
    cfg.write_text(TINY.read_text().replace("cpu: true", "fp16: true"))
    argv = [str(toy["data"]), f"--configs={cfg}", "--save-dir", str(tmp_path / "ck"),
            "--restore-file", str(toy["ckpt"]), "--max-update", "6"]
    err = run_main(main, argv, capsys)
    assert f"fp16 ({cfg}): fp16 training needs a CUDA GPU and torch sees no CUDA device" in err
    assert "add --no-fp16" in err
    err = run_main(main, train_argv(toy["data"], tmp_path / "ck", "--fp16"), capsys)
    assert "fp16 (command line)" in err and "leave --fp16 out" in err
    assert not (tmp_path / "ck").exists()


def test_every_command_line_ends_errors_the_same_way(capsys) -> None:
    """hat.cli.run_cli, the one wrapper of the CLIs: a config error and an OS error are one
    ``error:`` line and exit 2 (the OS error with what was kept), Ctrl-C is 130 where the
    command says what to do next and propagates where it does not; the body's status passes."""
    from hat.cli import run_cli
    from hat.errors import HatConfigError

    def fail(exc: BaseException):
        def body():
            raise exc
        return body

    assert run_cli(fail(HatConfigError("x.yml: key 'lr': -1 is not > 0"))) == 2
    assert capsys.readouterr().err == "error: x.yml: key 'lr': -1 is not > 0\n"
    kept = []
    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/x.csv")
    assert run_cli(fail(err), os_note=lambda: kept.append(1) or " (rows kept)") == 2
    line = capsys.readouterr().err
    assert line.startswith("error: /out/x.csv: ") and line.endswith(" (rows kept)\n") and kept
    assert run_cli(fail(KeyboardInterrupt()), interrupted="run it again") == 130
    assert "interrupted: run it again" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        run_cli(fail(KeyboardInterrupt()))
    assert run_cli(lambda: None) == 0 and run_cli(lambda: 1) == 1
