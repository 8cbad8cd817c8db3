"""The ten search dimensions are declared once (hat.space.DIMENSIONS): the dataclasses, the YAML
keys, the command-line options and the genes agree with that table."""

from __future__ import annotations

import argparse
import dataclasses
import random

from hat.models.args import add_model_args
from hat.space import (
    DIMENSIONS,
    IWSLT_SPACE1,
    SUB_YAML_KEYS,
    WMT_SPACE0,
    SearchSpace,
    SubConfig,
)


def test_table_matches_the_dataclasses() -> None:
    assert len(DIMENSIONS) == 10
    assert [d.field for d in DIMENSIONS] == list(SUB_YAML_KEYS)
    assert {d.field for d in DIMENSIONS} == {f.name for f in dataclasses.fields(SubConfig)}
    space_fields = {f.name for f in dataclasses.fields(SearchSpace)}
    for d in DIMENSIONS:
        assert d.choice in space_fields, d
        assert d.bound is None or d.bound in space_fields, d
        assert d.count is None or d.count in SUB_YAML_KEYS, d
    # every SearchSpace field is a SuperTransformer dim, a dimension's choice, or the source
    bounds = {d.bound for d in DIMENSIONS if d.bound} | {"qkv_dim", "source"}
    assert space_fields == bounds | {d.choice for d in DIMENSIONS}


def test_every_dimension_is_a_command_line_option() -> None:
    p = argparse.ArgumentParser()
    add_model_args(p)
    opts = {o for a in p._actions for o in a.option_strings}
    for d in DIMENSIONS:
        assert "--" + d.yaml_key in opts
        assert "--" + d.choice.replace("_", "-") in opts


def test_genes_follow_the_table() -> None:
    for space in (WMT_SPACE0, IWSLT_SPACE1):
        layout = space.gene_layout()
        assert space.num_genes == 4 + 2 * space.encoder_layers + 4 * space.decoder_layers
        assert {name for name, _ in layout} == set(SUB_YAML_KEYS)
        rng = random.Random(3)
        for _ in range(50):
            genes = space.sample_genes(rng)
            cfg = space.from_genes(genes)
            assert space.contains(cfg)
            assert space.from_genes(space.to_genes(cfg, dormant=genes)) == cfg
            assert space.to_genes(cfg, dormant=genes) == genes
            assert all(g in c for g, c in zip(genes, space.gene_choices()))
