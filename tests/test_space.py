"""SearchSpace: HAT's sampling stream, features, genes, validation, YAML files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hat.errors import HatConfigError
from hat.space import (
    SearchSpace,
    SubConfig,
    read_subtransformer_yaml,
    write_subtransformer_yaml,
)


def test_sampling_reproduces_hat_test_vector() -> None:
    rng = random.Random(0)
    cfg = SearchSpace().sample(rng)
    assert cfg.encoder_embed_dim == 512
    assert list(cfg.encoder_ffn_embed_dim) == [1024, 2048, 2048, 1024, 1024, 2048]
    assert list(cfg.encoder_self_attention_heads) == [4, 4, 4, 8, 8, 8]
    assert cfg.decoder_embed_dim == 512 and cfg.decoder_layer_num == 4
    assert list(cfg.decoder_ffn_embed_dim) == [3072, 2048, 1024, 1024]
    assert list(cfg.decoder_self_attention_heads) == [4, 8, 4, 8]
    assert list(cfg.decoder_ende_attention_heads) == [8, 8, 4, 4]
    assert list(cfg.decoder_arbitrary_ende_attn) == [1, 1, 2, 2]  # 6 drawn, cut to 4 layers
    # All 6 arbitrary values were drawn: the stream continues as HAT's would.
    ref = random.Random(0)
    ch = ref.choice
    ch([640, 512]), ch([640, 512]), ch([6]), ch([6, 5, 4, 3, 2, 1])
    for _ in range(6):
        ch([3072, 2048, 1024]), ch([8, 4])
    for _ in range(4):
        ch([3072, 2048, 1024]), ch([8, 4]), ch([8, 4])
    assert [ch([-1, 1, 2]) for _ in range(6)] == [1, 1, 2, 2, -1, 2]
    assert rng.random() == ref.random()


def test_sample_for_update_is_deterministic() -> None:
    s = SearchSpace()
    assert s.sample_for_update(17) == s.sample_for_update(17)
    assert s.sample_for_update(17) == s.sample(random.Random(17))
    assert len({s.sample_for_update(u) for u in range(20)}) > 15


def test_largest_and_smallest() -> None:
    s = SearchSpace()
    big, small = s.largest(), s.smallest()
    assert big.encoder_embed_dim == 640 and big.decoder_layer_num == 6
    assert set(big.decoder_arbitrary_ende_attn) == {1}
    assert small.decoder_layer_num == 1 and small.encoder_ffn_embed_dim == (1024,) * 6
    assert s.contains(big) and s.contains(small)


def test_features_match_hat_definition() -> None:
    cfg = SearchSpace().sample(random.Random(0))
    f = SearchSpace.features(cfg)
    assert f == [512, 6, 1536, 6, 512, 4, 1792, 6, 6, 2.5]  # arbitrary 1,1,2,2 -> 2,2,3,3


def test_genes_round_trip() -> None:
    s = SearchSpace()
    rng = random.Random(1)
    assert s.num_genes == 40
    for _ in range(200):
        genes = s.sample_genes(rng)
        assert len(genes) == 40
        cfg = s.from_genes(genes)
        assert s.from_genes(s.to_genes(cfg)) == cfg
        assert s.to_genes(cfg, dormant=genes) == genes
        assert all(g in c for g, c in zip(genes, s.gene_choices()))


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = SearchSpace().sample(random.Random(3))
    path = tmp_path / "sub.yml"
    write_subtransformer_yaml(cfg, path, header="found by a test")
    assert read_subtransformer_yaml(path) == cfg
    text = path.read_text()
    assert text.startswith("# found by a test")
    assert "decoder-arbitrary-ende-attn-all-subtransformer" in text


def sub(**kw) -> SubConfig:
    base = SearchSpace().largest().to_dict()
    base.update(kw)
    return SubConfig.from_dict(base)


@pytest.mark.parametrize(
    "cfg_kw, fragment",
    [
        ({"encoder_embed_dim": 768}, "encoder-embed-dim-subtransformer = 768"),
        ({"decoder_ffn_embed_dim": [4096] * 6}, "allowed 1..3072"),
        ({"encoder_self_attention_heads": [3] * 6}, "do not divide qkv-dim 512"),
        ({"decoder_arbitrary_ende_attn": [0] * 6}, "allowed values are [-1, 1, 2]"),
        ({"decoder_layer_num": 7, "decoder_ffn_embed_dim": [3072] * 7,
          "decoder_self_attention_heads": [8] * 7, "decoder_ende_attention_heads": [8] * 7,
          "decoder_arbitrary_ende_attn": [1] * 7}, "decoder-layer-num-subtransformer = 7"),
    ],
)
def test_validation_errors_name_key_value_and_allowed(cfg_kw: dict, fragment: str) -> None:
    with pytest.raises(HatConfigError, match="sub.yml") as e:
        SearchSpace().validate(sub(**cfg_kw), source="sub.yml")
    assert fragment in str(e.value)


def test_list_shorter_than_layer_num_is_rejected() -> None:
    d = SearchSpace().largest().to_dict()
    d["encoder_ffn_embed_dim"] = [3072] * 5
    with pytest.raises(HatConfigError, match="has 5 entries but encoder-layer-num"):
        SubConfig.from_dict(d, source="x.yml")


def test_strict_validation_checks_choices() -> None:
    cfg = sub(encoder_ffn_embed_dim=[512] * 6)  # fits the supernet, not the training space
    SearchSpace().validate(cfg)
    with pytest.raises(HatConfigError, match="allows \\[3072, 2048, 1024\\]"):
        SearchSpace().validate(cfg, strict=True)


def test_space_rejects_choices_beyond_super_dims() -> None:
    with pytest.raises(HatConfigError, match="encoder-ffn-embed-dim-choice contains 4096"):
        SearchSpace(encoder_ffn_embed_dim_choice=(4096, 1024))
    with pytest.raises(HatConfigError, match="do not divide qkv-dim"):
        SearchSpace(encoder_self_attention_heads_choice=(8, 3))
    with pytest.raises(HatConfigError, match="allowed values are"):
        SearchSpace(decoder_arbitrary_ende_attn_choice=(-1, 3))


def test_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(HatConfigError, match="missing.yml: config file not found"):
        read_subtransformer_yaml(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    write_subtransformer_yaml(SearchSpace().largest(), bad)
    bad.write_text(bad.read_text() + "encoder-embed-dimm-subtransformer: 512\n")
    with pytest.raises(HatConfigError, match="unknown key 'encoder-embed-dimm-subtransformer'"):
        read_subtransformer_yaml(bad)
    part = tmp_path / "part.yml"
    part.write_text("encoder-embed-dim-subtransformer: 512\n")
    with pytest.raises(HatConfigError, match="missing encoder-layer-num-subtransformer"):
        read_subtransformer_yaml(part)


def test_arbitrary_attention_needs_enough_encoder_layers() -> None:
    with pytest.raises(HatConfigError,
                       match="attend to the last 3 encoder layers.*encoder-layers is 2"):
        SearchSpace(encoder_layers=2, encoder_layer_num_choice=(2,))
    space = SearchSpace(encoder_layers=2, encoder_layer_num_choice=(2,),
                        decoder_arbitrary_ende_attn_choice=(-1, 1))
    cfg = SubConfig.from_dict({**space.largest().to_dict(), "decoder_arbitrary_ende_attn": [2] * 6,
                               "encoder_ffn_embed_dim": [3072] * 2,
                               "encoder_self_attention_heads": [8] * 2})
    with pytest.raises(HatConfigError, match="attends to the last 3 encoder layers"):
        space.validate(cfg)


def test_one_hash_of_a_subtransformer_everywhere() -> None:
    """--subnet-log's hash and the search CSVs' and summaries' config_hash are one function of the
    SubTransformer, so a training log and a search join on it."""
    import hashlib
    import json

    from hat.space import key_hash

    space = SearchSpace()  # HAT's WMT space
    rng = random.Random(0)
    for cfg in [space.largest(), space.smallest(), *[space.sample(rng) for _ in range(5)]]:
        assert cfg.hash() == key_hash(cfg.key())
        assert cfg.hash() == hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True,
                                                     separators=(",", ":")).encode()
                                          ).hexdigest()[:12]
    assert space.largest().hash() != space.smallest().hash()


def test_sample_distinct_is_seeded_and_distinct() -> None:
    space = SearchSpace()
    a = space.sample_distinct(30, 7)
    assert a == space.sample_distinct(30, 7) and len(set(a)) == 30
    assert a[0] == space.sample(random.Random(7))  # the draw order of sample()
    assert a != space.sample_distinct(30, 8)
