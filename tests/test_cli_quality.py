"""Command lines: short --help, clear errors naming the right file, CPU thread choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hat.config import parse_fairseq_args
from hat.errors import HatConfigError
from hat.threads import choose_cpu_threads
from hat.train_cli import main as train_main
from tests.conftest import ROOT

WMT_SUB = ROOT / "configs/wmt14.en-de/subtransformer/HAT_wmt14ende_titanxp@57.1ms_bleu@25.8.yml"
WMT_COMMON = ROOT / "configs/wmt14.en-de/subtransformer/common.yml"


def sub_yaml(tmp_path: Path, **changes) -> Path:
    keys = yaml.safe_load(WMT_SUB.read_text())
    keys.update(changes)
    path = tmp_path / "sub.yml"
    path.write_text(yaml.safe_dump(keys))
    return path


def test_help_lists_own_and_hat_options_first(capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py")])
    with pytest.raises(SystemExit) as e:
        train_main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Train a SuperTransformer" in out.split("config files:")[0]  # what it does, first
    for opt in ("--latcpu", "--profile-flops", "--configs", "--data", "--max-update",
                "--save-dir", "--help-all", "--subnet-sampling", "--stop-converged-bits",
                "hat_adam"):
        assert opt in out, opt
    for opt in ("--encoder-embed-choice", "--distributed-world-size"):  # behind --help-all
        assert opt not in out, opt
    with pytest.raises(SystemExit):
        train_main(["--help-all"])
    out = capsys.readouterr().out
    assert "--encoder-embed-choice" in out and "--distributed-world-size" in out


@pytest.mark.slow
def test_search_help_says_what_it_does_with_an_example() -> None:
    res = subprocess.run([sys.executable, "evo_search.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0
    head = res.stdout.split("config files:")[0]
    assert "[--evo-configs=YAML]" in head and "Search a SubTransformer under a latency" in head
    assert "python evo_search.py --configs=" in head
    assert len(res.stdout.splitlines()) < 80 and "--encoder-embed-choice" not in res.stdout


def test_no_arch_says_what_is_missing(capsys) -> None:
    with pytest.raises(HatConfigError, match="no model architecture given"):
        parse_fairseq_args([])
    assert train_main([]) == 2
    assert "--configs" in capsys.readouterr().err


@pytest.mark.parametrize("order", ["sub_first", "common_first"])
def test_list_length_error_names_the_subtransformer_yaml(tmp_path: Path, capsys, order) -> None:
    bad = sub_yaml(tmp_path, **{"encoder-ffn-embed-dim-all-subtransformer": [3072, 3072]})
    files = [bad, WMT_COMMON] if order == "sub_first" else [WMT_COMMON, bad]
    assert train_main([f"--configs={files[0]}", f"--sub-configs={files[1]}", "--profile"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: encoder-ffn-embed-dim-all-subtransformer has 2 entries" in err
    assert "common.yml" not in err


def test_value_outside_the_choices_is_warned_about(tmp_path: Path, capsys) -> None:
    odd = sub_yaml(tmp_path, **{"encoder-embed-dim-subtransformer": 112})
    assert train_main([f"--configs={odd}", f"--sub-configs={WMT_COMMON}", "--profile"]) == 0
    captured = capsys.readouterr()
    assert "| #Params:" in captured.out
    assert "not in the search space" in captured.err and "[640, 512]" in captured.err
    good = sub_yaml(tmp_path)
    assert train_main([f"--configs={good}", f"--sub-configs={WMT_COMMON}", "--profile"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_latcpu_and_latgpu_together_is_an_error(capsys) -> None:
    assert train_main([f"--configs={WMT_SUB}", f"--sub-configs={WMT_COMMON}", "--latcpu",
                       "--latgpu"]) == 2
    assert "choose one" in capsys.readouterr().err


def test_latcpu_json(capsys) -> None:
    import json

    assert train_main([f"--configs={WMT_SUB}", f"--sub-configs={WMT_COMMON}", "--latcpu",
                       "--latiter", "1", "--latwarmup", "0", "--latsilent", "--json",
                       "--lat-src-vocab-size", "1000"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lat = result["latency"]
    assert lat["device"] == "cpu" and lat["src_vocab"] == 1000 and lat["length"] == 30
    assert lat["total_ms"] == pytest.approx(lat["encoder_ms"] + lat["decoder_ms"])
    assert result["params"] == 30_465_536  # SPEC: HAT_wmt14ende_titanxp@57.1ms


@pytest.mark.parametrize(("cores", "load", "env", "want"), [
    (2, 0.0, {}, 2),
    (2, 1.2, {}, 1),
    (2, 7.0, {}, 1),
    (8, 2.4, {}, 6),
    (2, 0.0, {"OMP_NUM_THREADS": "3"}, 3),
    (2, 1.0, {"OMP_NUM_THREADS": "zero"}, 1),
])
def test_cpu_threads(cores: int, load: float, env: dict, want: int) -> None:
    assert choose_cpu_threads(cores, load, env)[0] == want


@pytest.mark.slow
def test_nothing_imports_torchaudio() -> None:
    """ve-fairseq pulls in a torchaudio built for another torch (it cannot load with torch
    2.13); nothing this project runs may import it."""
    import subprocess
    import sys

    code = ("import sys, hat, hat.train_cli, hat.training, hat.bleu, hat.export, hat.search.cli, "
            "hat.latency.measure.cli, hat.latency.predict.cli, fairseq_cli.train, "
            "fairseq_cli.generate, fairseq_cli.preprocess;"
            "from fairseq import checkpoint_utils, options, tasks;"
            "tasks.import_tasks; print('torchaudio' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"


@pytest.mark.slow
def test_help_into_a_closed_pipe_is_not_an_error() -> None:
    """``train.py --help | head -1``: the reader may be gone before the help is written."""
    proc = subprocess.Popen([sys.executable, "train.py", "--help"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # long before the child has imported torch and fairseq
    err = proc.stderr.read()
    assert proc.wait() == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err
