"""Test BLEU (hat.bleu), checkpoint averaging (hat.average) and configs/<task>/test.sh."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hat.average import average_checkpoints, last_checkpoints
from hat.average import main as average_main
from hat.bleu import main as bleu_main
from hat.checkpoint import save_checkpoint
from hat.errors import HatConfigError
from hat.metrics import (
    compound_split,
    moses_detokenize,
    paired_bootstrap,
    sacre_bleu,
    tokenized_bleu,
)
from tests.conftest import ROOT

TINY_YML = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
# Training of the end-to-end tests: tiny.yml with small batches (fewer tokens per BLEU point).
TRAIN_UPDATES = 700
TRAIN_ARGS = ["--max-tokens", "512", "--lr", "0.002", "--warmup-updates", "60",
              "--disable-validation", "--num-workers", "0", "--no-progress-bar",
              "--save-interval-updates", "350", "--keep-interval-updates", "5", "--seed", "1"]


# ----- metrics on hand-made strings -------------------------------------------------------------
def test_compound_split_like_hat_perl() -> None:
    assert compound_split("a well-known fact") == "a well ##AT##-##AT## known fact"
    assert compound_split("x - y") == "x - y"
    assert compound_split("-a b-") == "-a b-"
    # non-overlapping, as perl's s{(\S)-(\S)}{...}g: a one-letter middle part stays joined
    assert compound_split("a-b-c") == "a ##AT##-##AT## b-c"
    assert compound_split("state-of-the-art") == (
        "state ##AT##-##AT## of ##AT##-##AT## the ##AT##-##AT## art")


def test_tokenized_bleu_known_values() -> None:
    same = ["the cat sat on the mat", "a b c d e"]
    r = tokenized_bleu(same, same)
    assert r.bleu == pytest.approx(100.0)
    assert (r.n, r.hyp_len, r.ref_len) == (2, 11, 11)
    # precisions 5/6, 3/5, 2/4, 1/3; equal lengths: BP = 1
    r = tokenized_bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert r.bleu == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)
    assert r.precisions == pytest.approx([500 / 6, 60, 50, 100 / 3])
    # brevity penalty exp(1 - 6/5) when the hypothesis drops a word
    r = tokenized_bleu(["a b c d e"], ["a b c d e f"])
    assert r.bleu == pytest.approx(100 * math.exp(1 - 6 / 5), abs=1e-6)
    # no smoothing (multi-bleu.perl): no 4-gram match gives 0
    assert tokenized_bleu(["a b c x"], ["a b c d"]).bleu == 0.0
    assert "tok:none" in r.signature and "compound-split:yes" in r.signature


def test_compound_splitting_changes_tokenized_bleu() -> None:
    hyp, ref = ["one two-three four five"], ["one two-three four five"]
    assert tokenized_bleu(hyp, ref, compound=True).hyp_len == 6
    assert tokenized_bleu(hyp, ref, compound=False).hyp_len == 4
    # split: precisions 7/8, 5/7, 3/6, 1/5 -> exactly 50; unsplit: 5/6, 3/5, 2/4, 1/3
    hyp, ref = ["a b-c d e f g"], ["a b-x d e f g"]
    assert tokenized_bleu(hyp, ref).bleu == pytest.approx(50.0, abs=1e-6)
    plain = tokenized_bleu(hyp, ref, compound=False)
    assert plain.bleu == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)


def test_sacre_bleu_and_detokenizer() -> None:
    assert moses_detokenize(["Hello , world !", "it &apos;s"], "en") == ["Hello, world!", "it's"]
    r = sacre_bleu(["Hello, world!"], ["Hello, world!"])
    assert r.bleu == pytest.approx(100.0) and "tok:13a" in r.signature
    lower = sacre_bleu(["hello, world!"], ["Hello, World!"], lowercase=True)
    assert lower.bleu == pytest.approx(100.0) and "case:lc" in lower.signature


# ----- checkpoint averaging -----------------------------------------------------------------------
def _ckpt(path: Path, value: float, step: int, dtype: torch.dtype = torch.float32) -> None:
    args = argparse.Namespace(arch="transformersuper", step=step)
    save_checkpoint(path, args, {"w": torch.full((2, 3), value, dtype=dtype),
                                 "b": torch.arange(3.0) * value,
                                 "n": torch.tensor([step])})


def test_paired_bootstrap_brackets_the_difference_of_corpus_scores() -> None:
    """The difference it reports is the two corpus scores' (sacre and normal); identical systems
    differ by exactly 0; a system right on every sentence beats one right on half with an
    interval above 0; the same seed gives the same interval."""
    import random

    rnd = random.Random(0)
    words = "the cat sat on a mat with one red hat and two blue dogs".split()
    refs = [" ".join(rnd.choices(words, k=8)) for _ in range(200)]
    half = [r if i % 2 else " ".join(rnd.choices(words, k=8)) for i, r in enumerate(refs)]
    noisy = [" ".join(w if rnd.random() < 0.7 else "x" for w in r.split()) for r in refs]
    got = paired_bootstrap(noisy, half, refs, "sacre", samples=200, seed=3)
    assert got["difference"] == pytest.approx(
        sacre_bleu(noisy, refs).bleu - sacre_bleu(half, refs).bleu, abs=1e-3)
    assert got["ci95"][0] <= got["difference"] <= got["ci95"][1]
    assert got == paired_bootstrap(noisy, half, refs, "sacre", samples=200, seed=3)
    assert got["sentences"] == 200 and got["samples"] == 200
    norm = paired_bootstrap(refs, half, refs, "normal", samples=200)
    assert norm["difference"] == pytest.approx(
        tokenized_bleu(refs, refs).bleu - tokenized_bleu(half, refs).bleu, abs=1e-3)
    assert norm["ci95"][0] > 0
    same = paired_bootstrap(half, half, refs, samples=50)
    assert same["difference"] == 0 and same["ci95"] == [0, 0]
    with pytest.raises(HatConfigError, match="paired bootstrap: 199 hypotheses but 200"):
        paired_bootstrap(half[:-1], half, refs)
    with pytest.raises(HatConfigError, match="metric 'chrf'"):
        paired_bootstrap(half, half, refs, "chrf")


def test_average_is_mean_and_keeps_newest_args(tmp_path: Path) -> None:
    _ckpt(tmp_path / "a.pt", 1.0, 1, torch.float16)
    _ckpt(tmp_path / "b.pt", 2.0, 2)
    _ckpt(tmp_path / "c.pt", 6.0, 3)
    out = tmp_path / "avg.pt"
    average_checkpoints([tmp_path / n for n in ("a.pt", "b.pt", "c.pt")], out)
    state = torch.load(out, weights_only=False)
    assert state["model"]["w"].dtype == torch.float16
    assert torch.equal(state["model"]["w"], torch.full((2, 3), 3.0, dtype=torch.float16))
    assert torch.allclose(state["model"]["b"], torch.arange(3.0) * 3)
    assert state["args"].step == 3
    assert not list(tmp_path.glob(".avg.pt.*"))  # no temporary left behind


def test_last_checkpoints_by_number(tmp_path: Path) -> None:
    for name in ("checkpoint_1_100.pt", "checkpoint_2_1000.pt", "checkpoint_1_200.pt",
                 "checkpoint_3_900.pt", "checkpoint2.pt", "checkpoint10.pt", "checkpoint9.pt",
                 "checkpoint_best.pt", "checkpoint_last.pt"):
        (tmp_path / name).write_bytes(b"")
    names = [p.name for p in last_checkpoints(tmp_path, 2, "update")]
    assert names == ["checkpoint_3_900.pt", "checkpoint_2_1000.pt"]
    names = [p.name for p in last_checkpoints(tmp_path, 2, "epoch")]
    assert names == ["checkpoint9.pt", "checkpoint10.pt"]
    with pytest.raises(ValueError, match="found 4"):
        last_checkpoints(tmp_path, 5, "update")


def test_average_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for i, step in enumerate((100, 200, 300)):
        _ckpt(tmp_path / f"checkpoint_1_{step}.pt", float(i), step)
    out = tmp_path / "avg.pt"
    assert average_main(["--inputs", str(tmp_path), "--num-update-checkpoints", "2",
                         "--output", str(out)]) == 0
    assert torch.load(out, weights_only=False)["model"]["w"][0, 0].item() == 1.5
    assert average_main(["--inputs", str(tmp_path), "--num-update-checkpoints", "9",
                         "--output", str(out)]) == 2
    assert "found 3" in capsys.readouterr().err


# ----- end to end on the toy corpus ---------------------------------------------------------------
def _env() -> dict[str, str]:
    # one thread: on a small shared CPU, oversubscribed threads make training many times slower
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
            "PYTHON": sys.executable}


@pytest.fixture(scope="module")
def one_thread():
    """Generation in this process on one thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Toy corpus, a tiny SuperTransformer trained on it briefly, an untrained one, a sub YAML."""
    from hat.data.toy_corpus import make_toy_corpus

    root = tmp_path_factory.mktemp("toy")
    data = make_toy_corpus(root / "corpus", n_train=3000, n_valid=50, n_test=100)
    save = root / "ckpt"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), str(data), f"--configs={TINY_YML}",
         "--max-update", str(TRAIN_UPDATES), "--save-dir", str(save), *TRAIN_ARGS],
        cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = save / "checkpoint_last.pt"
    untrained = root / "untrained.pt"
    _write_untrained(trained, data, untrained)
    from hat.models.args import space_from_args
    from hat.space import write_subtransformer_yaml

    state = torch.load(trained, weights_only=False)
    largest = space_from_args(state["cfg"]["model"]).largest()
    sub = root / "largest.yml"
    write_subtransformer_yaml(largest, sub)
    return {"data": data, "ref": root / "corpus" / "raw" / "test.detok.tgt", "save": save,
            "trained": trained, "untrained": untrained, "sub": sub, "root": root}


def _write_untrained(trained: Path, data: Path, out: Path) -> None:
    """The trained checkpoint with freshly initialised weights."""
    from fairseq.data import Dictionary

    from hat.checkpoint import ShapeTask
    from hat.models import TransformerSuperModel

    state = torch.load(trained, weights_only=False)
    d = Dictionary.load(str(data / "dict.src.txt"))
    torch.manual_seed(0)
    fresh = TransformerSuperModel.build_model(argparse.Namespace(**vars(state["cfg"]["model"])),
                                              ShapeTask(d, d))
    state["model"] = fresh.state_dict()
    torch.save(state, out)


# toy sentences have at most 25 tokens: a shorter length limit keeps an untrained model's
# run-away hypotheses cheap
FAST = ["--cpu", "--max-len-b", "50"]


def _bleu(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    rc = bleu_main([*argv, "--json", *FAST])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


def _bleu_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    rc = bleu_main([*argv, *FAST])
    captured = capsys.readouterr()
    assert rc == 2, captured.out
    assert "Traceback" not in captured.err
    return captured.err


BLEU_SCORES: dict[str, float] = {}


@pytest.mark.slow
def test_trained_beats_untrained(toy, one_thread, capsys) -> None:
    common = ["--task", "toy", "--data", str(toy["data"]), "--sub-config", str(toy["sub"]),
              "--ref", str(toy["ref"])]
    for name in ("trained", "untrained"):
        for metric in ("normal", "sacre"):
            out = toy["root"] / f"out_{name}_{metric}"
            r = _bleu(capsys, *common, "--checkpoint", str(toy[name]), "--metric", metric,
                      "--out", str(out))
            assert r["metric"] == metric and r["n"] == 100
            BLEU_SCORES[f"{name}/{metric}"] = r["bleu"]
            assert len((out / "test.hyp").read_text().splitlines()) == 100
    print("BLEU", BLEU_SCORES)
    for metric in ("normal", "sacre"):
        assert BLEU_SCORES[f"trained/{metric}"] >= 3.0
        assert BLEU_SCORES[f"trained/{metric}"] > BLEU_SCORES[f"untrained/{metric}"] + 2.0
    # hypotheses in test-set order: the references are the tokenized test targets
    refs = (toy["root"] / "out_trained_normal" / "test.ref").read_text()
    assert refs == (toy["root"] / "corpus" / "raw" / "test.tgt").read_text()


@pytest.mark.slow
def test_test_sh_sacre(toy) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "configs" / "toy" / "test.sh"), str(toy["trained"]), str(toy["sub"]),
         "sacre", "--data", str(toy["data"]), "--ref", str(toy["ref"]), "--json", *FAST],
        env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BLEU = " in proc.stdout and "tok:13a" in proc.stdout
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["metric"] == "sacre" and r["bleu"] > 0
    assert (toy["save"] / "exp" / "largest_test" / "test.hyp.detok").is_file()


@pytest.mark.slow
def test_exported_and_retrained_give_same_hypotheses(toy, one_thread, capsys) -> None:
    from hat.export import export
    from hat.space import read_subtransformer_yaml

    cfg = read_subtransformer_yaml(toy["sub"])
    exported = toy["root"] / "exported.pt"
    export(str(toy["trained"]), cfg, str(exported))
    retrained = toy["root"] / "retrained.pt"
    state = torch.load(toy["trained"], weights_only=False)
    from hat.models.args import set_sub_config_args

    state["cfg"]["model"].train_subtransformer = True
    set_sub_config_args(state["cfg"]["model"], cfg)
    torch.save(state, retrained)
    hyps = {}
    for name, ckpt, sub in (("super", toy["trained"], toy["sub"]), ("exported", exported, None),
                            ("retrained", retrained, toy["sub"])):
        out = toy["root"] / f"same_{name}"
        argv = ["--task", "toy", "--data", str(toy["data"]), "--checkpoint", str(ckpt),
                "--out", str(out)] + (["--sub-config", str(sub)] if sub else [])
        r = _bleu(capsys, *argv)
        assert r["config"] == cfg.to_dict()
        hyps[name] = (out / "test.hyp").read_text()
    assert hyps["exported"] == hyps["super"] == hyps["retrained"]


@pytest.mark.slow
def test_static_generator_gives_fairseqs_hypotheses(toy, one_thread, capsys) -> None:
    hyps = {}
    for kind in ("fairseq", "static", "graph"):  # graph: eager on a CPU
        out = toy["root"] / f"gen_{kind}"
        r = _bleu(capsys, "--task", "toy", "--data", str(toy["data"]), "--checkpoint",
                  str(toy["trained"]), "--sub-config", str(toy["sub"]), "--generator", kind,
                  "--out", str(out))
        hyps[kind] = ((out / "test.hyp").read_text(), r["bleu"])
        assert r["generator"] == kind
    assert hyps["static"] == hyps["fairseq"] == hyps["graph"]
    assert len(hyps["static"][0].splitlines()) == 100


@pytest.mark.slow
def test_timing_at_batch_one(toy, one_thread, capsys) -> None:
    """--timing --batch-size 1: one timed call per sentence, grouped by decoder steps (the
    returned hypotheses' length)."""
    out = toy["root"] / "gen_timed"
    r = _bleu(capsys, "--task", "toy", "--data", str(toy["data"]), "--checkpoint",
              str(toy["trained"]), "--sub-config", str(toy["sub"]), "--generator", "static",
              "--batch-size", "1", "--timing", "--threads", "1", "--out", str(out))
    t = r["timing"]
    assert t["calls"] == t["sentences"] == 100 and t["threads"] == 1
    assert sum(v["calls"] for v in t["by_steps"].values()) == 100
    assert 0 < t["median_ms_per_call"] and t["ms_per_sentence"] == pytest.approx(
        t["mean_ms_per_call"])
    assert json.loads((out / "test.normal.json").read_text())["timing"]["calls"] == 100


@pytest.mark.slow
def test_average_last_from_bleu(toy, one_thread, capsys) -> None:
    rc = bleu_main(["--task", "toy", "--data", str(toy["data"]), "--checkpoint",
                    str(toy["trained"]), "--average-last", "2", "--json", *FAST])
    out = capsys.readouterr().out
    assert rc == 0
    r = json.loads(out.strip().splitlines()[-1])
    assert [Path(p).name for p in r["averaged"]] == [
        f"checkpoint_{e}_{u}.pt" for e, u in _epoch_update_names(toy["save"])][-2:]
    assert r["bleu"] > 0


def _epoch_update_names(save: Path) -> list[tuple[int, int]]:
    found = []
    for p in save.glob("checkpoint_*_*.pt"):
        e, u = p.stem.split("_")[1:]
        found.append((int(e), int(u)))
    return sorted(found, key=lambda x: x[1])


@pytest.mark.slow
def test_bad_inputs(toy, tmp_path, capsys) -> None:
    data, ckpt = str(toy["data"]), str(toy["trained"])
    err = _bleu_error(capsys, "--data", data, "--checkpoint", str(tmp_path / "nope.pt"))
    assert "nope.pt: checkpoint file not found" in err
    err = _bleu_error(capsys, "--data", str(tmp_path / "nodata"), "--checkpoint", ckpt)
    assert "data directory" in err and "not found" in err
    err = _bleu_error(capsys, "--data", data, "--checkpoint", ckpt, "--subset", "test9")
    assert "split 'test9' not found" in err and "test" in err
    err = _bleu_error(capsys, "--data", data, "--checkpoint", ckpt, "--metric", "sacre",
                      "--ref", str(tmp_path / "ref.txt"))
    assert "reference file for sacreBLEU not found" in err
    too_big = tmp_path / "too_big.yml"
    too_big.write_text(toy["sub"].read_text().replace("encoder-embed-dim-subtransformer: 128",
                                                      "encoder-embed-dim-subtransformer: 256"))
    err = _bleu_error(capsys, "--data", data, "--checkpoint", ckpt, "--sub-config", str(too_big))
    assert "does not fit the SuperTransformer" in err
    exported = toy["root"] / "exported_small.pt"
    from hat.export import export
    from hat.space import read_subtransformer_yaml

    export(ckpt, read_subtransformer_yaml(toy["sub"]).__class__(
        96, 3, [128] * 3, [2] * 3, 96, 1, [128], [2], [2], [1]), str(exported))
    err = _bleu_error(capsys, "--data", data, "--checkpoint", str(exported), "--sub-config",
                      str(toy["sub"]))
    assert "does not match the exported SubTransformer" in err
    notckpt = tmp_path / "x.pt"
    notckpt.write_text("hello")
    err = _bleu_error(capsys, "--data", data, "--checkpoint", str(notckpt))
    assert "not a readable PyTorch checkpoint" in err


def test_test_sh_usage() -> None:
    for task in ("wmt14.en-de", "wmt14.en-fr", "wmt19.en-de", "iwslt14.de-en", "toy"):
        script = ROOT / "configs" / task / "test.sh"
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        assert proc.returncode == 2 and "usage" not in proc.stdout
        assert f"configs/{task}/test.sh <checkpoint>" in proc.stderr
        assert f"--task {task}" in script.read_text()
    assert shutil.which("bash")
