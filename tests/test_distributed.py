"""fairseq's own distributed training with 2 CPU processes (gloo), launched by torchrun."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hat.data.toy_corpus import make_toy_corpus
from tests.conftest import ROOT

TINY = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
ARGS = ["--disable-validation", "--max-tokens", "1024", "--log-interval", "1",
        "--num-workers", "0", "--lr", "0.003", "--warmup-updates", "10"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy_corpus(tmp_path_factory.mktemp("toy"), n_train=1500, n_valid=40, n_test=40)


def torchrun(data: Path, save: Path, log: Path, *extra: str, port: int) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(port), "train.py", str(data), f"--configs={TINY}",
           "--save-dir", str(save), "--subnet-log", str(log), "--distributed-backend", "gloo",
           "--ddp-backend", "legacy_ddp", *ARGS, *extra]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stderr + res.stdout


def losses(log: str) -> dict[int, float]:
    out = {}
    for line in log.splitlines():
        if "train_inner" in line:
            kv = dict(re.findall(r"(\w+)=([\d.e+-]+)", line))
            out[int(kv["num_updates"])] = float(kv["loss"])
    return out


def records(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_ranks_sample_the_same_subnets_and_match_one_process(toy: Path,
                                                                  tmp_path: Path) -> None:
    # dropout off: one process draws micro-batch 2's masks after micro-batch 1's, rank 1 does not
    no_dropout = ["--dropout", "0", "--attention-dropout", "0"]
    two = torchrun(toy, tmp_path / "two", tmp_path / "two.jsonl", "--max-update", "6",
                   *no_dropout, port=29531)
    recs = records(tmp_path / "two.jsonl")
    assert {r["rank"] for r in recs} == {0, 1}
    for u in range(6):
        hashes = {r["hash"] for r in recs if r["update"] == u}
        assert len(hashes) == 1 and len([r for r in recs if r["update"] == u]) == 2
    single = subprocess.run(
        [sys.executable, "train.py", str(toy), f"--configs={TINY}", "--save-dir",
         str(tmp_path / "one"), "--update-freq", "2", "--max-update", "6", *ARGS, *no_dropout],
        cwd=ROOT, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1",
                                                        "PATH": "/usr/bin:/bin"})
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = losses(two), losses(single.stderr + single.stdout)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for u in a:  # same batches per update (rank r takes micro-batch r), same subnet: equal
        assert a[u] == pytest.approx(b[u], abs=0.005), (u, a[u], b[u])


@pytest.mark.slow
def test_two_rank_resume_continues_the_subnet_sequence(toy: Path, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    torchrun(toy, tmp_path / "ck", log, "--max-update", "3", port=29532)
    torchrun(toy, tmp_path / "ck", log, "--max-update", "6", port=29533)
    torchrun(toy, tmp_path / "ref", tmp_path / "ref.jsonl", "--max-update", "6", port=29534)
    seq = {(r["update"], r["rank"]): r["hash"] for r in records(log)}
    ref = {(r["update"], r["rank"]): r["hash"] for r in records(tmp_path / "ref.jsonl")}
    assert seq == ref and len(seq) == 12
