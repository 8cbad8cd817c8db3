"""#Params / GFLOPs with HAT's conventions, checked against the published table."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from hat.profile import count_macs, count_params
from hat.space import SearchSpace, SubConfig
from tests.conftest import ROOT, TINY_SPACE, tiny_supernet


def published_rows(ref: Path) -> list[dict]:
    rows = yaml.safe_load((ref / "published_subtransformers.yaml").read_text())
    return [r for r in rows if "published" in r]


def test_published_table_matches(hat_reference: Path) -> None:
    rows = published_rows(hat_reference)
    assert len(rows) >= 17
    for r in rows:
        cfg = SubConfig.from_dict({k.replace("-", "_"): v for k, v in r["arch"].items()})
        params = count_params(cfg) / 1e6
        flops = 2 * count_macs(cfg, 30, 30) / 1e9
        assert round(params, 2) == r["published"]["params_m"], r["name"]
        assert round(flops, 2) == r["published"]["flops_g"], r["name"]


@pytest.mark.slow
def test_profile_cli_matches_published_figures(hat_reference: Path) -> None:
    """The documented command, through the YAML configs, with no data present."""
    rows = {r["name"]: r for r in published_rows(hat_reference)}
    sub_dir = ROOT / "configs" / "wmt14.en-de" / "subtransformer"
    ymls = sorted(sub_dir.glob("HAT_wmt14ende_*.yml"))
    assert len(ymls) == len([n for n in rows if n.startswith("HAT_wmt14ende")])
    for yml in ymls[:3]:
        out = subprocess.run(
            [sys.executable, "train.py", f"--configs={yml}",
             f"--sub-configs={sub_dir / 'common.yml'}", "--profile", "--json"],
            cwd=ROOT, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        pub = rows[yml.stem]["published"]
        assert round(result["params_m"], 2) == pub["params_m"]
        assert round(result["flops_g"], 2) == pub["flops_g"]


def test_params_count_the_active_weights_of_the_model() -> None:
    model = tiny_supernet()
    rng = random.Random(0)
    space = SearchSpace(**TINY_SPACE)
    for _ in range(10):
        cfg = space.sample(rng)
        model.set_sample_config(cfg)
        n = sum(layer.self_attn.active_params() + layer.fc1.active_params()
                + layer.fc2.active_params() + 4 * cfg.encoder_embed_dim
                for layer in model.encoder.layers[: cfg.encoder_layer_num])
        n += sum(layer.self_attn.active_params() + layer.encoder_attn.active_params()
                 + layer.fc1.active_params() + layer.fc2.active_params()
                 + 6 * cfg.decoder_embed_dim
                 for layer in model.decoder.layers[: cfg.decoder_layer_num])
        assert count_params(cfg, qkv_dim=32) == n


def test_matmul_macs_match_torch_flop_counter() -> None:
    """The analytic count equals what torch's FlopCounterMode measures on the real forward."""
    model = tiny_supernet(attn_impl="reference")
    rng = random.Random(2)
    space = SearchSpace(**TINY_SPACE)
    src = torch.randint(4, 50, (1, 11))
    prev = torch.randint(4, 50, (1, 11))
    for _ in range(8):
        cfg = space.sample(rng)
        model.set_sample_config(cfg)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(src, None, prev, features_only=True)
        assert counter.get_total_flops() == 2 * count_macs(cfg, 11, 11, 32, elementwise=False)
