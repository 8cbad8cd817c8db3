"""HAT's README commands, verbatim, offline.

Each command from HAT's README runs here unchanged (flags that only shorten a run are appended
where HAT's command has them: ``--latiter``, ``--lat-dataset-size``). Commands that need the
internet or the WMT data fail with exit code 2 and a message that says what to fetch and how; the
network is cut for them with an unreachable proxy, so the tests do not depend on the machine's
connectivity.
"""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import GUARD_S, ROOT, reference_dir

HAT_REF = reference_dir()
PI_SUB = "configs/wmt14.en-de/subtransformer/HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8"
IWSLT_SUB = "configs/iwslt14.de-en/subtransformer/HAT_iwslt14deen_titanxp@137.8ms_bleu@34.7"
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "no_proxy": "", "NO_PROXY": ""}


# what a machine may have fetched or trained that a fresh clone has not
LOCAL = {"data", "data-bin", "downloaded_models", "checkpoints", "runs"}


@pytest.fixture(scope="module")
def bare_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout without its local data (links to everything else): a command run there meets
    what a fresh clone meets, whatever this machine has downloaded."""
    root = tmp_path_factory.mktemp("bare_checkout")
    for entry in ROOT.iterdir():
        if entry.name not in LOCAL:
            (root / entry.name).symlink_to(entry)
    return root


def hat(command: str, offline: bool = False, timeout: int = GUARD_S,
        cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run one of HAT's README commands in the repository root, or ``cwd`` (``python`` is this
    Python)."""
    env = dict(os.environ, PYTHON=sys.executable, **(OFFLINE if offline else {}))
    argv = shlex.split(command)
    env_prefix = {}
    while "=" in argv[0] and not argv[0].startswith("-"):  # VAR=value python ...
        k, v = argv.pop(0).split("=", 1)
        env_prefix[k] = v
    env.update(env_prefix)
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_clear_failure(r: subprocess.CompletedProcess, *needles: str, rc: int = 2) -> None:
    """Exit code ``rc`` (2: a configuration error; 1: a failed download), an ``error:`` line,
    no traceback, and the hints we expect."""
    out = r.stdout + r.stderr
    assert r.returncode == rc, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "error:" in out
    for needle in needles:
        assert needle in out, (needle, out[-3000:])


# ----------------------------------------------------------------------------- data preparation
@pytest.mark.slow
@pytest.mark.parametrize("task", ["wmt14.en-de", "iwslt14.de-en"])
def test_preprocess_without_internet_says_what_to_fetch(task: str) -> None:
    r = hat(f"bash configs/{task}/preprocess.sh", offline=True)
    assert_clear_failure(r, "fetch it by hand")


@pytest.mark.slow
def test_get_preprocessed_without_internet_says_how(tmp_path: Path) -> None:
    r = hat("bash configs/wmt14.en-de/get_preprocessed.sh", offline=True)
    assert_clear_failure(r, "--mirror", "wmt16_en_de.preprocessed.tgz", rc=1)


# ----------------------------------------------------------------------------- testing
@pytest.mark.slow
def test_download_model_without_internet_says_how(bare_root: Path) -> None:
    name = "HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8"
    r = hat(f"python download_model.py --model-name={name}", offline=True, cwd=bare_root)
    assert_clear_failure(r, "--mirror", name, rc=1)
    assert not (bare_root / "downloaded_models" / f"{name}.pt").exists()  # nothing partial left


@pytest.mark.slow
def test_test_sh_without_model_or_data_says_what_to_fetch(bare_root: Path) -> None:
    r = hat(f"bash configs/wmt14.en-de/test.sh "
            f"./downloaded_models/HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8.pt {PI_SUB}.yml normal",
            cwd=bare_root)
    assert_clear_failure(r, "get_preprocessed.sh")


@pytest.mark.slow
def test_profile_model_size_by_default_then_training_needs_data(bare_root: Path) -> None:
    """HAT: 'By default, only the model size is profiled' (the same command retrains)."""
    r = hat(f"python train.py --configs={PI_SUB}.yml "
            "--sub-configs=configs/wmt14.en-de/subtransformer/common.yml", cwd=bare_root)
    assert "| #Params:" in r.stdout
    assert_clear_failure(r, "preprocess.sh", "get_preprocessed.sh")
    assert "'common':" not in r.stdout + r.stderr  # no fairseq config dump before the error


@pytest.mark.slow
def test_latcpu_measures_with_hats_protocol() -> None:
    r = hat(f"python train.py --configs={PI_SUB}.yml "
            "--sub-configs=configs/wmt14.en-de/subtransformer/common.yml --latcpu "
            "--latiter 2 --latwarmup 0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| #Params: 25.22M" in r.stdout
    lines = {ln.split(":")[0]: ln for ln in r.stdout.splitlines()}
    for key in ("| Encoder latency on CPU", "| Decoder latency on CPU",
                "| Latency (encoder + decoder)"):
        assert key in lines, r.stdout
    assert "30 steps, beam 5" in lines["| Decoder latency on CPU"]


@pytest.mark.slow
def test_latgpu_without_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = hat(f"python train.py --configs={PI_SUB}.yml "
            "--sub-configs=configs/wmt14.en-de/subtransformer/common.yml --latgpu")
    assert_clear_failure(r, "no CUDA device", "--latcpu")


def test_profile_flops_iwslt() -> None:
    r = hat(f"python train.py --configs={IWSLT_SUB}.yml "
            "--sub-configs=configs/iwslt14.de-en/subtransformer/common.yml --profile-flops")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| GFLOPs:" in r.stdout and "length 23" in r.stdout


# ----------------------------------------------------------------------------- training
@pytest.mark.slow
@pytest.mark.parametrize("command", [
    "python train.py --configs=configs/wmt14.en-de/supertransformer/space0.yml",
    "CUDA_VISIBLE_DEVICES=0,1,2,3 python train.py "
    "--configs=configs/wmt14.en-fr/supertransformer/space0.yml --update-freq=32",
])
def test_train_supertransformer_without_data_says_what_to_fetch(command: str,
                                                               bare_root: Path) -> None:
    task = "wmt14.en-fr" if "en-fr" in command else "wmt14.en-de"
    assert_clear_failure(hat(command, cwd=bare_root), f"configs/{task}/get_preprocessed.sh")


@pytest.mark.slow
def test_latency_dataset_cpu_raspberrypi_measures(tmp_path: Path) -> None:
    """HAT's command, made small with its own keys (2 rows, 1 timed run)."""
    out = tmp_path / "pi.csv"
    r = hat("python latency_dataset.py "
            "--configs=configs/wmt14.en-de/latency_dataset/cpu_raspberrypi.yml "
            f"--lat-dataset-path {out} --lat-dataset-size 2 --latiter 1 --latwarmup 0 "
            "--latsilent --lat-ref-every 0 --lat-remeasure 0")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["latency_mean_decoder"]) > 0 for r in rows)


@pytest.mark.slow
def test_latency_predictor_needs_hats_dataset_and_trains_on_it(tmp_path: Path) -> None:
    cfg = "configs/wmt14.en-de/latency_predictor/cpu_raspberrypi.yml"
    if not (ROOT / "latency_dataset" / "wmt14ende_cpu_raspberrypi_all.csv").exists():
        assert_clear_failure(hat(f"python latency_predictor.py --configs={cfg}"),
                             "fetch_hat_latency.py")
    if not (HAT_REF / "latency").is_dir():
        pytest.skip(f"HAT's reference data not found at {HAT_REF}")
    r = hat(f"python scripts/fetch_hat_latency.py --mirror {HAT_REF / 'latency'} --out {tmp_path} "
            "--names wmt14ende_cpu_raspberrypi --no-predictors")
    assert r.returncode == 0, r.stderr[-3000:]
    r = hat(f"python latency_predictor.py --configs={cfg} "
            f"--lat-dataset-path {tmp_path / 'wmt14ende_cpu_raspberrypi_all.csv'} "
            f"--ckpt-path {tmp_path / 'pi.pt'} --train-steps 30")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "pi.pt").is_file()


@pytest.mark.slow
def test_evo_search_says_what_is_missing() -> None:
    r = hat("python evo_search.py --configs=configs/wmt14.en-de/supertransformer/space0.yml "
            "--evo-configs=configs/wmt14.en-de/evo_search/wmt14ende_titanxp.yml")
    if (ROOT / "latency_dataset" / "predictors" / "wmt14ende_gpu_titanxp.pt").exists():
        assert_clear_failure(r, "download_model.py --model-name=HAT_wmt14ende_super_space0")
    else:
        assert_clear_failure(
            r, "python latency_predictor.py "
               "--configs=configs/wmt14.en-de/latency_predictor/gpu_titanxp.yml")


@pytest.mark.slow
def test_train_found_subtransformer_before_search_says_file_not_found() -> None:
    r = hat("python train.py "
            "--configs=configs/wmt14.en-de/subtransformer/wmt14ende_titanxp@200ms.yml "
            "--sub-configs=configs/wmt14.en-de/subtransformer/common.yml")
    assert_clear_failure(r, "wmt14ende_titanxp@200ms.yml", "not found")
