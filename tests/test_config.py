"""Command-line/YAML parsing: overrides and every bad input gives one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from hat.config import parse_fairseq_args
from hat.errors import HatConfigError
from hat.train_cli import main as train_main
from tests.conftest import ROOT

SPACE0 = ROOT / "configs" / "wmt14.en-de" / "supertransformer" / "space0.yml"
COMMON = ROOT / "configs" / "wmt14.en-de" / "subtransformer" / "common.yml"
SUB = COMMON.parent / "HAT_wmt14ende_titanxp@57.1ms_bleu@25.8.yml"


def test_yaml_keys_and_command_line_overrides() -> None:
    args = parse_fairseq_args([f"--configs={SPACE0}", "--max-tokens", "123"])
    assert args.arch == "transformersuper_wmt_en_de"
    assert args.max_tokens == 123  # command line wins
    assert args.encoder_ffn_embed_dim_choice == [3072, 2048, 1024]
    assert args.share_all_embeddings and args.data == "data/wmt14.en-de/data-bin"
    assert args.lr == [0.001] and args.warmup_updates == 10000


def test_no_key_switches_off_a_yaml_flag() -> None:
    """``share-all-embeddings: true`` in the YAML, ``--no-share-all-embeddings`` turns it off;
    fairseq's own ``--no-*`` options still work."""
    assert parse_fairseq_args([f"--configs={SPACE0}"]).share_all_embeddings
    args = parse_fairseq_args([f"--configs={SPACE0}", "--no-share-all-embeddings",
                               "--no-epoch-checkpoints"])
    assert not args.share_all_embeddings and args.no_epoch_checkpoints
    assert args.encoder_ffn_embed_dim_choice == [3072, 2048, 1024]  # lists untouched
    with pytest.raises(HatConfigError, match="no-such-flag"):
        parse_fairseq_args([f"--configs={SPACE0}", "--no-such-flag"])


def test_sub_configs_layer_on_top() -> None:
    args = parse_fairseq_args([f"--configs={SUB}", f"--sub-configs={COMMON}"])
    assert args.train_subtransformer
    assert args.decoder_layer_num_subtransformer == 1
    assert args.warmup_updates == 4000


def write(tmp_path: Path, text: str, name: str = "c.yml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_unknown_arch_names_file_and_allowed(tmp_path: Path) -> None:
    p = write(tmp_path, "arch: transformersuper_wmt_en_xx\ndata: x\n")
    with pytest.raises(HatConfigError, match=r"c.yml: arch 'transformersuper_wmt_en_xx'.*"
                                             r"transformersuper_wmt_en_de"):
        parse_fairseq_args([f"--configs={p}"])


def test_unknown_yaml_key_names_file_and_suggests(tmp_path: Path) -> None:
    p = write(tmp_path, "arch: transformersuper_wmt_en_de\ndata: x\nencoder-embed-choise: [640]\n")
    with pytest.raises(HatConfigError, match=r"c.yml: unknown key 'encoder-embed-choise' "
                                             r"\(did you mean encoder-embed-choice"):
        parse_fairseq_args([f"--configs={p}"])


def test_bad_value_type_names_file_and_key(tmp_path: Path) -> None:
    p = write(tmp_path, "arch: transformersuper_wmt_en_de\ndata: x\nmax-tokens: lots\n")
    with pytest.raises(HatConfigError, match=r"c.yml: key 'max-tokens': .*invalid int value"):
        parse_fairseq_args([f"--configs={p}"])


def test_command_line_replaces_a_bad_yaml_value(tmp_path: Path) -> None:
    p = write(tmp_path, "arch: transformersuper_wmt_en_de\ndata: x\nmax-tokens: lots\n")
    assert parse_fairseq_args([f"--configs={p}", "--max-tokens", "5"]).max_tokens == 5


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(HatConfigError, match="nope.yml: config file not found"):
        parse_fairseq_args([f"--configs={tmp_path / 'nope.yml'}"])


def test_profile_rejects_subtransformer_that_does_not_fit(tmp_path: Path, capsys) -> None:
    text = SUB.read_text().replace("encoder-embed-dim-subtransformer: 512",
                                   "encoder-embed-dim-subtransformer: 768")
    p = write(tmp_path, text, "big.yml")
    assert train_main([f"--configs={p}", f"--sub-configs={COMMON}", "--profile"]) == 2
    err = capsys.readouterr().err
    assert "big.yml" in err and "encoder-embed-dim-subtransformer = 768" in err
    assert "allowed 1..640" in err and "Traceback" not in err


def test_bad_heads_and_list_length_in_sub_yaml(tmp_path: Path, capsys) -> None:
    heads = write(tmp_path, SUB.read_text().replace("[4, 8, 8, 8, 8, 8]", "[3, 8, 8, 8, 8, 8]"),
                  "heads.yml")
    assert train_main([f"--configs={heads}", f"--sub-configs={COMMON}", "--profile"]) == 2
    assert "do not divide qkv-dim 512" in capsys.readouterr().err
    short = write(tmp_path, SUB.read_text().replace("[4, 8, 8, 8, 8, 8]", "[4, 8]"), "short.yml")
    assert train_main([f"--configs={short}", f"--sub-configs={COMMON}", "--profile"]) == 2
    assert "has 2 entries but encoder-layer-num-subtransformer is 6" in capsys.readouterr().err
    arb = write(tmp_path, SUB.read_text().replace("ende-attn-all-subtransformer: [1]",
                                                  "ende-attn-all-subtransformer: [3]"), "arb.yml")
    assert train_main([f"--configs={arb}", f"--sub-configs={COMMON}", "--profile"]) == 2
    assert "allowed values are [-1, 1, 2]" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["debian.en-de", "debian.en-fr"])
def test_debian_configs_share_one_recipe_and_ship_the_measured_sampling(task: str) -> None:
    """The SuperTransformer, the retrainings and the fidelity check's from-scratch trainings of
    a Debian task train with one recipe, so their losses compare; the SuperTransformer samples
    largest + smallest + 1 random, and retrainings stop once converged."""
    cfg = ROOT / "configs" / task
    sup = parse_fairseq_args([f"--configs={cfg / 'supertransformer' / 'space0.yml'}"])
    sub = parse_fairseq_args([f"--configs={cfg / 'supertransformer' / 'space0.yml'}",
                              f"--sub-configs={cfg / 'subtransformer' / 'common.yml'}"])
    for key in ("optimizer", "lr", "warmup_updates", "warmup_init_lr", "max_tokens", "dropout",
                "attention_dropout", "weight_decay", "adam_betas", "label_smoothing",
                "lr_scheduler", "clip_norm"):
        assert getattr(sup, key) == getattr(sub, key), key
    assert sup.max_tokens == 16384 and sup.warmup_updates == 1000 and sup.dropout == 0.1
    assert (sup.subnet_sampling, sup.sandwich_random) == ("sandwich", 1)
    assert sup.max_update == 6500
    assert sub.stop_converged_bits == 0.05 and sub.max_update == 8000
