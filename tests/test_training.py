"""SuperTransformer training through fairseq: learning, kill-and-resume, retraining, errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hat.data.toy_corpus import make_toy_corpus
from hat.evaluate import ValidLoss, load_for_eval
from hat.space import SubConfig, write_subtransformer_yaml
from tests.conftest import GUARD_S, ROOT

TINY = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
FAST = ["--max-tokens", "1024", "--log-interval", "1", "--warmup-updates", "10",
        "--lr", "0.003", "--num-workers", "0"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """A small binarized toy corpus."""
    return make_toy_corpus(tmp_path_factory.mktemp("toy"), n_train=1000, n_valid=60, n_test=60)


def train_cmd(data: Path, save: Path, *extra: str) -> list[str]:
    return [sys.executable, "train.py", str(data), f"--configs={TINY}", "--save-dir", str(save),
            *FAST, *extra]


def run(cmd: list[str], ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if ok:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def subnet_sequence(log: Path) -> dict[int, str]:
    """update -> config hash (the last line for an update wins, as after a resume)."""
    seq = {}
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        seq[rec["update"]] = rec["hash"]
    return seq


@pytest.mark.slow
def test_loss_goes_down_for_largest_and_smallest(toy: Path, tmp_path: Path) -> None:
    log = tmp_path / "subnets.jsonl"
    run(train_cmd(toy, tmp_path / "ck", "--max-update", "30", "--subnet-log", str(log)))
    task, model = load_for_eval(str(tmp_path / "ck" / "checkpoint_last.pt"), str(toy))
    torch.manual_seed(1)
    untrained = task.build_model(model.args).eval()
    trained_loss, untrained_loss = ValidLoss(task, model), ValidLoss(task, untrained)
    space = model.space
    for cfg in (space.largest(), space.smallest()):
        assert trained_loss(cfg) < untrained_loss(cfg) - 1.0, cfg.describe()
    seq = subnet_sequence(log)
    assert sorted(seq) == list(range(30))
    for update in (0, 7, 29):  # HAT's stream: random.Random(update)
        sampled = json.loads([ln for ln in log.read_text().splitlines()
                              if json.loads(ln)["update"] == update][0])["config"]
        assert SubConfig.from_dict(sampled) == space.sample_for_update(update)


@pytest.mark.slow
def test_update_freq_micro_batches_share_one_subnet(toy: Path, tmp_path: Path) -> None:
    log = tmp_path / "subnets.jsonl"
    run(train_cmd(toy, tmp_path / "ck", "--max-update", "3", "--update-freq", "3",
                  "--subnet-log", str(log), "--disable-validation"))
    recs = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [r["update"] for r in recs] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for u in range(3):
        assert len({r["hash"] for r in recs if r["update"] == u}) == 1


@pytest.mark.slow
@pytest.mark.parametrize("epoch, saved_at, total", [(1, 4, 10), (2, 20, 24)])
def test_kill_and_resume_replays_the_same_subnets_and_parameters(
        toy: Path, tmp_path: Path, epoch: int, saved_at: int, total: int) -> None:
    """SIGKILL after the checkpoint of update ``saved_at`` (in epoch ``epoch``; the toy corpus
    has 16 updates an epoch), then the same command: bit-identical to an uninterrupted run."""
    extra = ["--max-update", str(total), "--save-interval-updates", "4",
             "--disable-validation", "--seed", "3"]
    log_a, log_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run(train_cmd(toy, tmp_path / "a", *extra, "--subnet-log", str(log_a)))
    cmd = train_cmd(toy, tmp_path / "b", *extra, "--subnet-log", str(log_b))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    saved = tmp_path / "b" / f"checkpoint_{epoch}_{saved_at}.pt"
    deadline = time.time() + GUARD_S
    while time.time() < deadline and proc.poll() is None:
        if saved.exists() and log_b.exists() and max(subnet_sequence(log_b)) >= saved_at + 1:
            break  # update saved_at + 1 has begun: checkpoint_last.pt holds update saved_at
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert max(subnet_sequence(log_b)) < total - 1
    last = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=False)
    resumed_from = last["optimizer_history"][-1]["num_updates"]
    assert last["extra_state"]["train_iterator"]["epoch"] == epoch
    run(cmd)  # resumes from checkpoint_last.pt in the same save dir
    assert subnet_sequence(log_a) == subnet_sequence(log_b)
    lines_b = [json.loads(ln)["update"] for ln in log_b.read_text().splitlines()]
    assert lines_b.count(resumed_from) == 2  # the update after the checkpoint was replayed
    a = torch.load(tmp_path / "a" / "checkpoint_last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=False)
    assert a["optimizer_history"][-1]["num_updates"] == total
    assert b["optimizer_history"][-1]["num_updates"] == total
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def small_sub(path: Path) -> SubConfig:
    cfg = SubConfig(96, 3, [128, 256, 128], [2, 4, 2], 96, 2, [128, 256], [4, 2], [2, 4],
                    [1, -1])
    write_subtransformer_yaml(cfg, path)
    return cfg


@pytest.mark.slow
def test_retrain_mode_trains_only_the_given_subtransformer(toy: Path, tmp_path: Path) -> None:
    sub = tmp_path / "sub.yml"
    cfg = small_sub(sub)
    log = tmp_path / "subnets.jsonl"
    base = train_cmd(toy, tmp_path / "ck", f"--sub-configs={sub}", "--train-subtransformer",
                     "--disable-validation", "--subnet-log", str(log))
    run([*base, "--max-update", "1"])
    shutil.copy(tmp_path / "ck" / "checkpoint_last.pt", tmp_path / "after1.pt")
    run([*base, "--max-update", "6"])
    before = torch.load(tmp_path / "after1.pt", weights_only=False)["model"]
    after = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=False)["model"]
    assert not log.exists()  # nothing sampled
    w0, w1 = before["encoder.layers.0.fc1.weight"], after["encoder.layers.0.fc1.weight"]
    f, e = cfg.encoder_ffn_embed_dim[0], cfg.encoder_embed_dim
    assert not torch.equal(w0[:f, :e], w1[:f, :e])
    assert torch.equal(w0[f:], w1[f:]) and torch.equal(w0[:, e:], w1[:, e:])
    assert torch.equal(before["decoder.layers.2.fc1.weight"], after["decoder.layers.2.fc1.weight"])
    args = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=False)["cfg"]["model"]
    assert args.decoder_layer_num_subtransformer == 2


@pytest.mark.slow
def test_fairseq_train_with_user_dir(toy: Path, tmp_path: Path) -> None:
    log = tmp_path / "subnets.jsonl"
    res = run([sys.executable, "-m", "fairseq_cli.train", str(toy), "--user-dir",
               str(ROOT / "hat"), "--task", "hat_translation", "--arch",
               "transformersuper", "--share-all-embeddings", "--encoder-embed-dim", "64",
               "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
               "--decoder-ffn-embed-dim", "128", "--encoder-layers", "2", "--decoder-layers",
               "2", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
               "--qkv-dim", "64", "--encoder-embed-choice", "64", "32",
               "--decoder-embed-choice", "64", "32", "--encoder-layer-num-choice", "2",
               "--decoder-layer-num-choice", "2", "1", "--encoder-ffn-embed-dim-choice", "128",
               "64", "--decoder-ffn-embed-dim-choice", "128", "64",
               "--encoder-self-attention-heads-choice", "2", "1",
               "--decoder-self-attention-heads-choice", "2", "1",
               "--decoder-ende-attention-heads-choice", "2", "1",
               "--decoder-arbitrary-ende-attn-choice", "-1", "1",
               "--optimizer", "adam", "--lr", "0.001", "--criterion",
               "label_smoothed_cross_entropy", "--max-tokens", "1024", "--max-update", "3",
               "--save-dir", str(tmp_path / "ck"), "--cpu", "--subnet-log", str(log),
               "--num-workers", "0"])
    assert "loss_largest" in res.stderr + res.stdout
    assert sorted(subnet_sequence(log)) == [0, 1, 2]


def error_of(cmd: list[str]) -> str:
    res = run(cmd, ok=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    return res.stderr


@pytest.mark.slow
def test_bad_inputs_give_one_clear_error(toy: Path, tmp_path: Path) -> None:
    err = error_of(train_cmd(tmp_path / "nodata", tmp_path / "ck", "--max-update", "1"))
    assert "data directory" in err and "nodata" in err and "does not exist" in err
    partial = tmp_path / "partial"
    shutil.copytree(toy, partial)
    for f in partial.glob("valid.*"):
        f.unlink()
    err = error_of(train_cmd(partial, tmp_path / "ck", "--max-update", "1"))
    assert "split 'valid' (src-tgt) not found" in err and "['test', 'train']" in err
    (partial / "dict.tgt.txt").unlink()
    err = error_of(train_cmd(partial, tmp_path / "ck", "--max-update", "1"))
    assert "dict.tgt.txt not found" in err
    err = error_of(train_cmd(toy, tmp_path / "ck", "--restore-file", str(tmp_path / "no.pt")))
    assert "no.pt: file not found" in err
    big = tmp_path / "big.yml"
    write_subtransformer_yaml(SubConfig(160, 3, [128] * 3, [2] * 3, 96, 1, [128], [2], [2], [1]),
                              big)
    err = error_of(train_cmd(toy, tmp_path / "ck", f"--sub-configs={big}",
                             "--train-subtransformer", "--max-update", "1"))
    assert "encoder-embed-dim-subtransformer = 160" in err and "allowed 1..128" in err


@pytest.mark.slow
def test_restore_file_of_another_architecture_is_rejected(toy: Path, tmp_path: Path) -> None:
    run(train_cmd(toy, tmp_path / "ck", "--max-update", "1", "--disable-validation"))
    err = error_of(train_cmd(toy, tmp_path / "ck2", "--restore-file",
                             str(tmp_path / "ck" / "checkpoint_last.pt"),
                             "--encoder-ffn-embed-dim", "512", "--max-update", "2"))
    assert "checkpoint has encoder-ffn-embed-dim = 256" in err


def test_checkpoint_saves_and_copies_are_atomic(tmp_path: Path, monkeypatch) -> None:
    from fairseq import checkpoint_utils as cu

    import hat.compat.atomic_save

    last = tmp_path / "checkpoint_last.pt"
    torch.save({"model": {"w": torch.ones(3)}}, last)
    before = last.read_bytes()

    class FullDisk:  # fails halfway through the save, as a full disk does
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        cu.torch_persistent_save({"model": {"w": torch.zeros(5000)}, "x": FullDisk()}, str(last))
    assert last.read_bytes() == before and list(tmp_path.iterdir()) == [last]
    src = tmp_path / "checkpoint_1_4.pt"
    cu.torch_persistent_save({"model": {"w": torch.zeros(3)}}, str(src))

    def copy_then_fail(fsrc, fdst, length=0):
        fdst.write(fsrc.read(100))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hat.compat.atomic_save.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(OSError, match="No space left"):  # fairseq copies to checkpoint_last.pt
        cu.PathManager.copy(str(src), str(last), overwrite=True)
    assert last.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name, last.name]
    monkeypatch.undo()
    assert cu.PathManager.copy(str(src), str(last), overwrite=True)
    assert last.read_bytes() == src.read_bytes()


@pytest.mark.slow
def test_truncated_last_checkpoint_names_the_newest_intact_one(toy: Path, tmp_path: Path) -> None:
    save = tmp_path / "ck"
    extra = ["--disable-validation", "--save-interval-updates", "2"]
    run(train_cmd(toy, save, "--max-update", "4", *extra))
    last = save / "checkpoint_last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # a save cut short by a crash or a full disk
    err = error_of(train_cmd(toy, save, "--max-update", "6", *extra))
    newest = next(save.glob("checkpoint_*_4.pt"))
    assert f"{last} (the checkpoint to resume from): truncated or corrupt" in err
    assert f"continue from the newest intact checkpoint with --restore-file {newest}" in err
    assert "move checkpoint_last.pt away to start over" in err
    run(train_cmd(toy, save, "--max-update", "6", *extra, "--restore-file", str(newest)))
    assert torch.load(last, weights_only=False)["optimizer_history"][-1]["num_updates"] == 6


def unused_masks(model, configs: list[SubConfig]) -> dict[str, torch.Tensor]:
    """Per parameter name: the entries none of ``configs`` uses."""
    used: dict = {}
    for cfg in configs:
        model.set_sample_config(cfg)
        for p, boxes in model.active_regions().items():
            m = used.setdefault(p, torch.zeros(p.shape, dtype=torch.bool))
            for box in boxes:
                m[box] = True
    return {n: ~used.get(p, torch.zeros(p.shape, dtype=torch.bool))
            for n, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["hat_adam", "adam"])
def test_what_no_update_used_stays_put_with_hat_adam_and_moves_with_hats_adam(
        optimizer: str, toy: Path, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    run(train_cmd(toy, tmp_path / "ck", "--max-update", "8", "--save-interval-updates", "4",
                  "--disable-validation", "--subnet-log", str(log), "--optimizer", optimizer))
    (mid,) = (tmp_path / "ck").glob("checkpoint_*_4.pt")
    before = torch.load(mid, weights_only=False)["model"]
    after = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=False)["model"]
    _, model = load_for_eval(str(tmp_path / "ck" / "checkpoint_last.pt"), str(toy))
    later = [SubConfig.from_dict(json.loads(ln)["config"]) for ln in log.read_text().splitlines()
             if json.loads(ln)["update"] >= 4]
    assert len(later) == 4
    unused = unused_masks(model, later)
    assert sum(int(m.sum()) for m in unused.values()) > 0, "every entry was used: no test"
    moved = [n for n, m in unused.items() if m.any() and
             not torch.equal(before[n][m], after[n][m])]
    if optimizer == "hat_adam":
        assert moved == []
    else:  # stale moments and weight decay move them (HAT)
        assert len(moved) > len([m for m in unused.values() if m.any()]) // 2


@pytest.mark.slow
def test_sandwich_trains_the_largest_the_smallest_and_random_ones_each_update(
        toy: Path, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    run(train_cmd(toy, tmp_path / "ck", "--max-update", "20", "--subnet-sampling", "sandwich",
                  "--sandwich-random", "1", "--subnet-log", str(log)))
    task, model = load_for_eval(str(tmp_path / "ck" / "checkpoint_last.pt"), str(toy))
    space = model.space
    recs = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [r["update"] for r in recs] == [u for u in range(20) for _ in range(3)]
    for u in range(20):
        cfgs = [SubConfig.from_dict(r["config"]) for r in recs if r["update"] == u]
        assert cfgs[:2] == [space.largest(), space.smallest()]
    assert len({r["hash"] for r in recs[2::3]}) > 10  # the random ones differ per update
    torch.manual_seed(1)
    untrained = task.build_model(model.args).eval()
    trained_loss, untrained_loss = ValidLoss(task, model), ValidLoss(task, untrained)
    for cfg in (space.largest(), space.smallest()):
        assert trained_loss(cfg) < untrained_loss(cfg) - 1.0, cfg.describe()


@pytest.mark.slow
def test_bad_sampling_options_are_refused(toy: Path, tmp_path: Path) -> None:
    res = run(train_cmd(toy, tmp_path / "ck", "--max-update", "1", "--subnet-sampling",
                        "greedy"), ok=False)
    assert res.returncode != 0 and "--subnet-sampling 'greedy': allowed uniform, sandwich" \
        in res.stderr


@pytest.mark.slow
def test_inplace_distillation_adds_the_largest_as_teacher(toy: Path, tmp_path: Path) -> None:
    """The criterion: a learner's loss is (1-W) LS-CE + W CE(teacher, learner); training with
    it runs and learns."""
    import copy

    from fairseq.criterions.label_smoothed_cross_entropy import (
        LabelSmoothedCrossEntropyCriterion,
    )

    from hat.tasks.distillation import InplaceDistillation

    task, trained = load_for_eval(str(_trained(toy, tmp_path)), str(toy))
    args = copy.copy(trained.args)
    args.dropout = args.attention_dropout = args.activation_dropout = 0.0
    model = task.build_model(args)  # no dropout: every pass computes the same distribution
    model.load_state_dict(trained.state_dict())
    model.train()
    torch.manual_seed(0)
    task.load_dataset("valid")
    sample = next(iter(task.get_batch_iterator(
        task.dataset("valid"), max_tokens=512).next_epoch_itr(shuffle=False)))
    base = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)
    crit = InplaceDistillation(base, 0.25)
    plain = base(model, sample)[0]
    crit.mode = "teach"
    teach = crit(model, sample)[0]
    crit.mode = "learn"
    learn = crit(model, sample)[0]
    lprobs, target = base.get_lprobs_and_target(model, model(**sample["net_input"]), sample)
    keep = target.ne(task.target_dictionary.pad())
    entropy = -(lprobs.exp() * lprobs).sum(-1)[keep].sum()
    assert teach.item() == pytest.approx(plain.item(), rel=1e-4)
    assert learn.item() == pytest.approx(0.75 * plain.item() + 0.25 * entropy.item(), rel=1e-4)
    log = tmp_path / "s.jsonl"
    run(train_cmd(toy, tmp_path / "d", "--max-update", "12", "--subnet-sampling", "sandwich",
                  "--sandwich-random", "1", "--distill-weight", "0.5", "--subnet-log",
                  str(log)))
    assert len(log.read_text().splitlines()) == 36
    res = run(train_cmd(toy, tmp_path / "e", "--max-update", "1", "--distill-weight", "0.5"),
              ok=False)
    assert "--distill-weight needs --subnet-sampling sandwich" in res.stderr


def _trained(toy: Path, tmp_path: Path) -> Path:
    run(train_cmd(toy, tmp_path / "t", "--max-update", "5", "--disable-validation"))
    return tmp_path / "t" / "checkpoint_last.pt"


@pytest.mark.slow
def test_a_second_training_into_one_save_dir_is_refused(toy: Path, tmp_path: Path) -> None:
    """The user's case: the same train.py command started twice (e.g. by a second pipeline)."""
    save = tmp_path / "ck"
    first = subprocess.Popen(train_cmd(toy, save, "--max-update", "200", "--disable-validation"),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = save / ".checkpoint_last.pt.lock"
    deadline = time.time() + GUARD_S
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    try:
        second = run(train_cmd(toy, save, "--max-update", "200", "--disable-validation"),
                     ok=False)
        assert first.poll() is None, "the first training ended before the second started"
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert f"another process (pid {first.pid}) is training into this save-dir" in second.stderr


@pytest.mark.slow
def test_hat_adam_trains_with_amp(toy: Path, tmp_path: Path) -> None:
    """fairseq's --amp keeps fp32 weights: hat_adam steps them as in fp32 training."""
    run(train_cmd(toy, tmp_path / "ck", "--amp", "--max-update", "2", "--disable-validation"))
    ck = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=False)
    assert ck["optimizer_history"][-1]["num_updates"] == 2
