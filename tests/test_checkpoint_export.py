"""HAT-layout checkpoints load and run; export writes a compact model fairseq-generate loads."""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.data import Dictionary
from fairseq.sequence_generator import SequenceGenerator

from hat.checkpoint import ShapeTask, build_from_checkpoint, read_checkpoint
from hat.errors import HatConfigError
from hat.export import export
from hat.models import TransformerSuperModel
from hat.space import SearchSpace, subtransformer_yaml_dict
from tests.conftest import ROOT, TINY_SPACE

WORDS = [f"w{i}" for i in range(30)]


@pytest.fixture(scope="module")
def databin(tmp_path_factory) -> Path:
    """A tiny binarized parallel corpus (joined dictionary)."""
    raw = tmp_path_factory.mktemp("raw")
    rng = random.Random(0)
    for split, n in (("train", 60), ("valid", 8), ("test", 8)):
        src, tgt = [], []
        for _ in range(n):
            s = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
            src.append(" ".join(s))
            tgt.append(" ".join(reversed(s)))
        (raw / f"{split}.src").write_text("\n".join(src) + "\n")
        (raw / f"{split}.tgt").write_text("\n".join(tgt) + "\n")
    dest = tmp_path_factory.mktemp("bin")
    subprocess.run(
        [sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "src", "--target-lang",
         "tgt", "--trainpref", raw / "train", "--validpref", raw / "valid", "--testpref",
         raw / "test", "--destdir", dest, "--joined-dictionary", "--workers", "1"],
        check=True, capture_output=True)
    return dest


def hat_style_args(data: Path, **extra) -> argparse.Namespace:
    """Args as a fairseq-0.8 HAT run would have pickled them (tiny dims)."""
    values = dict(TINY_SPACE)
    values.update(
        arch="transformersuper_wmt_en_de", task="translation", data=str(data),
        source_lang="src", target_lang="tgt", share_all_embeddings=True, dropout=0.3,
        attention_dropout=0.1, criterion="label_smoothed_cross_entropy", label_smoothing=0.1,
        optimizer="adam", lr=[1e-3], max_tokens=4096, fp16=True, seed=1,
        left_pad_source="True", left_pad_target="False", max_source_positions=1024,
        max_target_positions=1024, **extra)
    return argparse.Namespace(**values)


def write_hat_checkpoint(path: Path, data: Path, **extra) -> TransformerSuperModel:
    """A checkpoint in the released HAT layout: 0.8-style dict, Namespace args, fp16 tensors."""
    d = Dictionary.load(str(data / "dict.src.txt"))
    torch.manual_seed(0)
    model = TransformerSuperModel.build_model(hat_style_args(data), ShapeTask(d, d))
    state = {
        "args": hat_style_args(data, **extra),
        "model": {k: v.half() for k, v in model.state_dict().items()},
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "FP16Optimizer",
                               "lr_scheduler_state": {"best": 5.0}, "num_updates": 100}],
        "extra_state": {"epoch": 3, "val_loss": 5.0},
        "last_optimizer_state": {},
    }
    torch.save(state, path)
    return model


def test_hat_checkpoint_layout(databin: Path, tmp_path: Path) -> None:
    write_hat_checkpoint(tmp_path / "super.pt", databin)
    sd = torch.load(tmp_path / "super.pt", weights_only=False)["model"]
    E, F, q = 48, 96, 32
    assert sd["encoder.layers.0.self_attn.in_proj_weight"].shape == (3 * q, E)
    assert sd["encoder.layers.0.self_attn.in_proj_bias"].shape == (3 * q,)
    assert sd["encoder.layers.0.self_attn.out_proj.weight"].shape == (E, q)
    assert sd["encoder.layers.5.fc1.weight"].shape == (F, E)
    assert sd["decoder.layers.5.encoder_attn.in_proj_weight"].shape == (3 * q, E)
    for key in ("encoder.embed_positions._float_tensor", "decoder.embed_tokens.weight",
                "decoder.layers.0.encoder_attn_layer_norm.weight",
                "encoder.layers.0.self_attn_layer_norm.bias",
                "encoder.layers.0.final_layer_norm.weight"):
        assert key in sd


def test_hat_checkpoint_loads_in_fairseq_and_beam_searches(databin: Path, tmp_path: Path) -> None:
    original = write_hat_checkpoint(tmp_path / "super.pt", databin)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(tmp_path / "super.pt")], arg_overrides={"data": str(databin)})
    model = models[0].eval()
    assert isinstance(model, TransformerSuperModel)
    for name, p in model.state_dict().items():
        assert torch.equal(p, original.state_dict()[name].half().float()), name
    space = SearchSpace(**TINY_SPACE)
    model.set_sample_config(space.sample(random.Random(5)))
    task.load_dataset("test")
    sample = next(iter(task.get_batch_iterator(task.dataset("test"), max_sentences=4)
                       .next_epoch_itr(shuffle=False)))
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=5, max_len_b=12)
    hyps = gen.generate([model], sample)
    assert len(hyps) == sample["nsentences"] and all(len(h) == 5 for h in hyps)


def test_hat_subtransformer_checkpoint_activates_its_config(databin: Path, tmp_path: Path) -> None:
    cfg = SearchSpace(**TINY_SPACE).sample(random.Random(9))
    sub = {k.replace("-", "_"): v for k, v in subtransformer_yaml_dict(cfg).items()}
    write_hat_checkpoint(tmp_path / "sub.pt", databin, train_subtransformer=True, **sub)
    model = build_from_checkpoint(read_checkpoint(tmp_path / "sub.pt"))
    assert model.sample_config == cfg


def run_generate(databin: Path, ckpt: Path, *extra: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.generate", str(databin), "--path", str(ckpt),
         "--user-dir", str(ROOT / "hat"), "--beam", "5", "--gen-subset", "test",
         "--batch-size", "8", "--cpu", *extra],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return sorted(ln for ln in out.stdout.splitlines() if re.match(r"H-\d+", ln))


def test_export_cli_and_fairseq_generate(databin: Path, tmp_path: Path) -> None:
    model = write_hat_checkpoint(tmp_path / "super.pt", databin)
    cfg = SearchSpace(**TINY_SPACE).sample(random.Random(13))
    sub_yml = tmp_path / "sub.yml"
    sub_yml.write_text("".join(f"{k}: {v}\n" for k, v in subtransformer_yaml_dict(cfg).items()))
    common = tmp_path / "common.yml"
    common.write_text(f"arch: transformersuper\ndata: {databin}\nshare-all-embeddings: true\n"
                      + "".join(f"{k.replace('_', '-')}: {v}\n" for k, v in TINY_SPACE.items()))
    out = tmp_path / "exported.pt"
    res = subprocess.run(
        [sys.executable, "-m", "hat.export", f"--configs={sub_yml}", f"--sub-configs={common}",
         "--restore-file", str(tmp_path / "super.pt"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "(profiled)" in res.stdout
    state = torch.load(out, weights_only=False)
    assert state["args"].arch == "hat_subtransformer"
    assert state["model"]["encoder.layers.0.fc1.weight"].shape == (
        cfg.encoder_ffn_embed_dim[0], cfg.encoder_embed_dim)
    del model
    hyps_export = run_generate(databin, out)
    overrides = {k.replace("-", "_"): v for k, v in subtransformer_yaml_dict(cfg).items()}
    hyps_super = run_generate(databin, tmp_path / "super.pt", "--model-overrides", str(overrides))
    assert len(hyps_export) == 8 and hyps_export == hyps_super


def test_export_api_reports_equal_outputs_and_counts(databin: Path, tmp_path: Path) -> None:
    write_hat_checkpoint(tmp_path / "super.pt", databin)
    cfg = SearchSpace(**TINY_SPACE).sample(random.Random(14))
    r = export(str(tmp_path / "super.pt"), cfg, str(tmp_path / "e.pt"))
    assert r["max_abs_diff"] <= 1e-5
    assert r["params_total"] == r["params_profiled"] + r["params_embeddings"]


def test_export_errors(databin: Path, tmp_path: Path) -> None:
    cfg = SearchSpace(**TINY_SPACE).largest()
    with pytest.raises(HatConfigError, match="missing.pt: checkpoint file not found"):
        export(str(tmp_path / "missing.pt"), cfg, str(tmp_path / "o.pt"))
    write_hat_checkpoint(tmp_path / "super.pt", databin)
    too_big = cfg.__class__.from_dict({**cfg.to_dict(), "encoder_embed_dim": 64})
    with pytest.raises(HatConfigError, match="encoder-embed-dim-subtransformer = 64"):
        export(str(tmp_path / "super.pt"), too_big, str(tmp_path / "o.pt"), source="sub.yml")
    state = torch.load(tmp_path / "super.pt", weights_only=False)
    state["model"]["encoder.layers.0.fc1.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(HatConfigError, match="broken.pt: weights do not match"):
        export(str(tmp_path / "broken.pt"), cfg, str(tmp_path / "o.pt"))
