"""HAT-layout checkpoints load and run; export writes a compact model fairseq-generate loads."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml
from fairseq import checkpoint_utils
from fairseq.data import Dictionary
from fairseq.sequence_generator import SequenceGenerator

from hat.checkpoint import ShapeTask, build_from_checkpoint, read_checkpoint
from hat.compat import LegacyObject, load_checkpoint_file
from hat.data.text import fairseq_preprocess
from hat.errors import HatConfigError
from hat.export import export
from hat.models import TransformerSuperModel
from hat.space import (
    SearchSpace,
    read_subtransformer_yaml,
    subtransformer_yaml_dict,
    write_subtransformer_yaml,
)
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
    return fairseq_preprocess(raw, tmp_path_factory.mktemp("bin"), "src", "tgt",
                              joined_dictionary=True)


HAT_DATA = "data/binary/wmt16_en_de"  # where HAT's runs read their data (overridden when used)
SUB_KEYS = ("encoder_embed_dim_subtransformer", "decoder_embed_dim_subtransformer",
            "encoder_ffn_embed_dim_all_subtransformer", "decoder_ffn_embed_dim_all_subtransformer",
            "encoder_layer_num_subtransformer", "decoder_layer_num_subtransformer",
            "encoder_self_attention_heads_all_subtransformer",
            "decoder_self_attention_heads_all_subtransformer",
            "decoder_ende_attention_heads_all_subtransformer",
            "decoder_arbitrary_ende_attn_all_subtransformer")


def hat_style_args(data: Path | str = HAT_DATA, space: dict | None = None, **extra
                   ) -> argparse.Namespace:
    """Args as HAT's fairseq 0.8 pickled them into its checkpoints: every option of HAT's
    train.py with HAT's names and defaults (tiny SuperTransformer dims from ``space``)."""
    values = dict(
        # fairseq 0.8 common options and registries
        no_progress_bar=False, log_interval=1000, log_format=None, tensorboard_logdir="",
        tbmf_wrapper=False, seed=1, cpu=False, fp16=True, memory_efficient_fp16=False,
        fp16_init_scale=128, fp16_scale_window=None, fp16_scale_tolerance=0.0,
        min_loss_scale=0.0001, threshold_loss_scale=None, user_dir=None, pdb=False,
        configs="configs/wmt14.en-de/supertransformer/space0.yml", criterion=
        "label_smoothed_cross_entropy", tokenizer=None, bpe=None, optimizer="adam",
        lr_scheduler="cosine", task="translation",
        # dataset, distributed training (8 GPUs), optimization, checkpoints
        num_workers=10, skip_invalid_size_inputs_valid_test=False, max_tokens=4096,
        max_sentences=None, required_batch_size_multiple=8, dataset_impl=None,
        train_subset="train", valid_subset="valid", validate_interval=1, disable_validation=False,
        max_tokens_valid=4096, max_sentences_valid=None, curriculum=0,
        distributed_world_size=8, distributed_rank=0, distributed_backend="nccl",
        distributed_init_method="tcp://localhost:15389", distributed_port=-1, device_id=0,
        distributed_no_spawn=False, ddp_backend="no_c10d", bucket_cap_mb=25,
        fix_batches_to_gpus=False, find_unused_parameters=False,
        max_epoch=0, max_update=40000, clip_norm=0.0, sentence_avg=False, update_freq=[16],
        lr=[1e-07], min_lr=1e-09, use_bmuf=False,
        save_dir="checkpoints/wmt14.en-de/supertransformer/space0",
        restore_file="checkpoint_last.pt", reset_dataloader=False, reset_lr_scheduler=False,
        reset_meters=False, reset_optimizer=False, optimizer_overrides="{}", save_interval=1,
        save_interval_updates=0, keep_interval_updates=-1, keep_last_epochs=20, no_save=False,
        no_epoch_checkpoints=False, no_last_checkpoints=False, no_save_optimizer_state=False,
        best_checkpoint_metric="loss", maximize_best_checkpoint_metric=False,
        # HAT's transformersuper model options
        arch="transformersuper_wmt_en_de", activation_fn="relu", dropout=0.3,
        attention_dropout=0.1, activation_dropout=0.0, encoder_embed_path=None,
        encoder_normalize_before=False, encoder_learned_pos=False, decoder_embed_path=None,
        decoder_learned_pos=False, decoder_normalize_before=False,
        share_decoder_input_output_embed=True, share_all_embeddings=True,
        no_token_positional_embeddings=False, adaptive_softmax_cutoff=None,
        adaptive_softmax_dropout=0, adaptive_input=False, get_attn=False,
        no_decoder_final_norm=False, vocab_original_scaling=False,
        **{k: None for k in SUB_KEYS},
        # translation task, criterion, adam, cosine schedule
        data=str(data), source_lang="src", target_lang="tgt", lazy_load=False, raw_text=False,
        left_pad_source="True", left_pad_target="False", max_source_positions=1024,
        max_target_positions=1024, upsample_primary=1, label_smoothing=0.1,
        adam_betas="(0.9, 0.98)", adam_eps=1e-08, weight_decay=0.0, warmup_updates=10000,
        warmup_init_lr=1e-07, max_lr=0.001, t_mult=1.0, lr_period_updates=30000.0,
        lr_shrink=1.0,
        # fairseq 0.8's generation options (HAT's train.py parsed them; print_alignment is a
        # flag there and a choice of hard/soft in fairseq 0.12)
        path=None, remove_bpe=None, quiet=False, model_overrides="{}", results_path=None,
        beam=5, nbest=1, max_len_a=0, max_len_b=200, min_len=1, match_source_len=False,
        no_early_stop=False, unnormalized=False, no_beamable_mm=False, lenpen=1, unkpen=0,
        replace_unk=None, sacrebleu=False, score_reference=False, prefix_size=0,
        no_repeat_ngram_size=0, sampling=False, sampling_topk=-1, sampling_topp=-1.0,
        temperature=1.0, diverse_beam_groups=-1, diverse_beam_strength=0.5,
        print_alignment=False, print_step=False, gen_subset="test",
        # HAT's train.py
        train_subtransformer=False, sub_configs=None, profile_flops=False, latgpu=False,
        latcpu=False, latiter=300, latsilent=False, validate_subtransformer=False,
    )
    values.update(space or TINY_SPACE)
    values.update(decoder_output_dim=values["decoder_embed_dim"],
                  decoder_input_dim=values["decoder_embed_dim"], **extra)
    return argparse.Namespace(**values)


class _Meter:
    """Stands for fairseq 0.8's ``fairseq.meters.AverageMeter`` (a module fairseq 0.12 lacks)."""

    def __init__(self) -> None:
        self.val, self.avg, self.sum, self.count = 4.2, 4.2, 420.0, 100


def _hat_meters() -> OrderedDict:
    """HAT's trainer saved its meters into extra_state['train_meters']."""
    return OrderedDict((k, _Meter()) for k in ("train_loss", "train_nll_loss", "wps", "wall"))


def write_hat_checkpoint(path: Path, data: Path, space: dict | None = None, **extra
                         ) -> TransformerSuperModel:
    """A checkpoint as HAT released them: fairseq-0.8 dict in the pre-1.6 torch format, HAT's args
    Namespace, fp16 tensors, the encoder/decoder ``version`` buffers, the trainer's pickled
    ``fairseq.meters`` objects and an FP16Optimizer state. Weights: a model built on ``data``'s
    dictionary; returns it."""
    d = Dictionary.load(str(data / "dict.src.txt"))
    torch.manual_seed(0)
    model = TransformerSuperModel.build_model(hat_style_args(space=space), ShapeTask(d, d))
    weights = {k: v.half() for k, v in model.state_dict().items()}
    weights["encoder.version"] = torch.Tensor([3]).half()
    weights["decoder.version"] = torch.Tensor([3]).half()
    n = sum(p.numel() for p in model.parameters())
    state = {
        "args": hat_style_args(space=space, **extra),
        "model": weights,
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "FP16Optimizer",
                               "lr_scheduler_state": {"best": 4.01}, "num_updates": 40000}],
        "extra_state": {"train_iterator": {"epoch": 136, "iterations_in_epoch": 0},
                        "val_loss": 4.05, "best": 4.01, "train_meters": _hat_meters()},
        "last_optimizer_state": {"state": {0: {"step": 40000, "exp_avg": torch.zeros(n),
                                               "exp_avg_sq": torch.zeros(n)}},
                                 "param_groups": [{"lr": 1e-07, "betas": (0.9, 0.98),
                                                   "eps": 1e-08, "weight_decay": 0.0,
                                                   "params": [0]}],
                                 "loss_scale": 8.0},
    }
    meters = types.ModuleType("fairseq.meters")  # only while pickling, as in HAT's fairseq
    meters.AverageMeter = _Meter
    old_module, old_name = _Meter.__module__, _Meter.__qualname__
    _Meter.__module__, _Meter.__qualname__ = "fairseq.meters", "AverageMeter"
    sys.modules["fairseq.meters"] = meters
    try:
        torch.save(state, path, _use_new_zipfile_serialization=False)
    finally:
        del sys.modules["fairseq.meters"]
        _Meter.__module__, _Meter.__qualname__ = old_module, old_name
    return model


def test_hat_checkpoint_layout(databin: Path, tmp_path: Path) -> None:
    write_hat_checkpoint(tmp_path / "super.pt", databin)
    sd = load_checkpoint_file(tmp_path / "super.pt")["model"]
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
    assert sd["encoder.version"].tolist() == sd["decoder.version"].tolist() == [3.0]
    with open(tmp_path / "super.pt", "rb") as f:
        assert f.read(2) == b"\x80\x02"  # the pre-1.6 torch format
    with pytest.raises(ModuleNotFoundError, match="fairseq.meters"):  # what plain torch.load says
        torch.load(tmp_path / "super.pt", weights_only=False)
    meters = load_checkpoint_file(tmp_path / "super.pt")["extra_state"]["train_meters"]
    assert isinstance(meters["train_loss"], LegacyObject) and meters["train_loss"].avg == 4.2
    resaved = tmp_path / "resaved.pt"  # stand-ins pickle again (as plain dicts)
    torch.save(load_checkpoint_file(tmp_path / "super.pt"), resaved)
    assert torch.load(resaved, weights_only=False)["extra_state"]["train_meters"]["wps"][
        "count"] == 100


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


@pytest.mark.slow
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


def test_export_warns_about_a_config_outside_the_choices(databin: Path, tmp_path: Path,
                                                         capsys) -> None:
    import dataclasses

    write_hat_checkpoint(tmp_path / "super.pt", databin)
    cfg = dataclasses.replace(SearchSpace(**TINY_SPACE).largest(), encoder_embed_dim=44)
    export(str(tmp_path / "super.pt"), cfg, str(tmp_path / "e.pt"), source="odd.yml")
    err = capsys.readouterr().err
    assert "odd.yml: encoder-embed-dim-subtransformer = 44 is not in the search space" in err


def test_export_errors(databin: Path, tmp_path: Path) -> None:
    cfg = SearchSpace(**TINY_SPACE).largest()
    with pytest.raises(HatConfigError, match="missing.pt: checkpoint file not found"):
        export(str(tmp_path / "missing.pt"), cfg, str(tmp_path / "o.pt"))
    write_hat_checkpoint(tmp_path / "super.pt", databin)
    too_big = cfg.__class__.from_dict({**cfg.to_dict(), "encoder_embed_dim": 64})
    with pytest.raises(HatConfigError, match="encoder-embed-dim-subtransformer = 64"):
        export(str(tmp_path / "super.pt"), too_big, str(tmp_path / "o.pt"), source="sub.yml")
    state = load_checkpoint_file(tmp_path / "super.pt")
    state["model"]["encoder.layers.0.fc1.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(HatConfigError, match="broken.pt: weights do not match"):
        export(str(tmp_path / "broken.pt"), cfg, str(tmp_path / "o.pt"))


def test_export_refuses_another_subtransformer_than_the_retrained_one(databin: Path,
                                                                      tmp_path: Path) -> None:
    """The user's case: a retrained checkpoint trained only its own slice; exporting another
    SubTransformer from it would export untrained weights (hat.bleu refuses the same pair)."""
    space = SearchSpace(**TINY_SPACE)
    own, other = space.smallest(), space.largest()
    sub = {k.replace("-", "_"): v for k, v in subtransformer_yaml_dict(own).items()}
    write_hat_checkpoint(tmp_path / "retrained.pt", databin, train_subtransformer=True, **sub)
    with pytest.raises(HatConfigError, match="other.yml: does not match the retrained "
                                             "SubTransformer in .*retrained.pt"):
        export(str(tmp_path / "retrained.pt"), other, str(tmp_path / "o.pt"), source="other.yml")
    assert not (tmp_path / "o.pt").exists()
    r = export(str(tmp_path / "retrained.pt"), own, str(tmp_path / "o.pt"), source="own.yml")
    assert r["max_abs_diff"] < 1e-5


# ----- a released HAT checkpoint in every command that takes one ------------------------------
TINY_YML = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
TOY_EVO = ROOT / "configs" / "toy" / "evo_search" / "toy_cpu_epyc.yml"
TOY_SPACE = {k.replace("-", "_"): v for k, v in yaml.safe_load(TINY_YML.read_text()).items()
             if k.replace("-", "_") in TINY_SPACE}  # tiny.yml's dims: its predictor fits them


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
            "PYTHON": sys.executable}


def _run(*cmd: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=_env(), capture_output=True,
                          text=True)


@pytest.mark.slow
def test_test_sh_bleu_of_hat_supertransformer_and_subtransformer(databin: Path,
                                                                 tmp_path: Path) -> None:
    cfg = SearchSpace(**TINY_SPACE).sample(random.Random(21))
    sub_yml = tmp_path / "sub.yml"
    write_subtransformer_yaml(cfg, sub_yml)
    sub = {k.replace("-", "_"): v for k, v in subtransformer_yaml_dict(cfg).items()}
    write_hat_checkpoint(tmp_path / "HAT_super.pt", databin)
    write_hat_checkpoint(tmp_path / "HAT_sub.pt", databin, train_subtransformer=True, **sub)
    hyps = {}
    for ckpt, yml, kind in (("HAT_super", sub_yml, "supertransformer"),
                            ("HAT_sub", "none", "retrained")):
        res = _run("bash", ROOT / "configs" / "toy" / "test.sh", tmp_path / f"{ckpt}.pt", yml,
                   "normal", "--data", databin, "--json", "--cpu", "--max-len-b", "20")
        assert res.returncode == 0, res.stderr[-3000:]
        r = json.loads(res.stdout.strip().splitlines()[-1])
        assert r["kind"] == kind and r["config"] == cfg.to_dict() and r["n"] == 8
        name = "sub" if yml == sub_yml else ckpt
        hyps[kind] = (tmp_path / "exp" / f"{name}_test" / "test.hyp").read_text()
    assert hyps["supertransformer"] == hyps["retrained"]  # same weights, same SubTransformer


def test_bleu_checks_the_output_folder_before_decoding(databin: Path, tmp_path: Path,
                                                       monkeypatch, capsys) -> None:
    import hat.bleu as bleu

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(bleu, "load_model", never)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc = bleu.main(["--data", str(databin), "--checkpoint", str(tmp_path / "c.pt"), "--out",
                    str(blocker / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "--out" in err and f"{blocker} is a file" in err


@pytest.mark.slow
def test_train_restore_file_takes_a_hat_checkpoint_not_an_exported_one(databin: Path,
                                                                       tmp_path: Path) -> None:
    hat_ckpt = tmp_path / "HAT_toy_super_space0.pt"
    original = write_hat_checkpoint(hat_ckpt, databin, space=TOY_SPACE)
    base = [sys.executable, "train.py", databin, f"--configs={TINY_YML}", "--max-update", "2",
            "--max-tokens", "1024", "--disable-validation", "--num-workers", "0"]
    res = _run(*base, "--save-dir", tmp_path / "ck", "--restore-file", hat_ckpt)
    # HAT's fp16 optimizer state does not fit this CPU run
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert f"{hat_ckpt}: its optimizer state cannot be restored" in res.stderr
    assert "FP16Optimizer" in res.stderr and "Add --reset-optimizer" in res.stderr
    res = _run(*base, "--save-dir", tmp_path / "ck", "--restore-file", hat_ckpt,
               "--reset-optimizer")
    assert res.returncode == 0, res.stderr[-3000:]
    trained = load_checkpoint_file(tmp_path / "ck" / "checkpoint_last.pt")["model"]
    w0 = original.state_dict()["encoder.embed_tokens.weight"].half().float()
    assert (trained["encoder.embed_tokens.weight"] - w0).abs().max() < 1e-2  # started from HAT's
    exported = tmp_path / "exported.pt"
    export(str(hat_ckpt), SearchSpace(**TOY_SPACE).smallest(), str(exported))
    res = _run(*base, "--save-dir", tmp_path / "ck2", "--restore-file", exported)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert f"--restore-file {exported}: this is a standalone SubTransformer exported" in res.stderr
    assert "configs/<task>/test.sh" in res.stderr


@pytest.mark.slow
def test_evo_search_on_a_hat_supertransformer(databin: Path, tmp_path: Path) -> None:
    hat_ckpt = tmp_path / "HAT_toy_super_space0.pt"
    write_hat_checkpoint(hat_ckpt, databin, space=TOY_SPACE)
    out = tmp_path / "found" / "toy@5.3ms.yml"
    res = _run(sys.executable, "evo_search.py", databin, f"--configs={TINY_YML}",
               f"--evo-configs={TOY_EVO}", "--restore-file", hat_ckpt, "--write-config-path",
               out, "--evo-iter", "2", "--population-size", "6", "--parent-size", "2",
               "--mutation-size", "2", "--crossover-size", "2", "--seed", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    winner = json.loads(out.with_name("toy@5.3ms.summary.json").read_text())["winners"][0]
    assert winner["predicted_latency_ms"] <= 5.3 and math.isfinite(winner["valid_loss"])
    SearchSpace(**TOY_SPACE).validate(read_subtransformer_yaml(out), strict=True)
