"""Shared fixtures: small SuperTransformers, the reference-data folder."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import hat  # noqa: F401  (registers models)
from hat.checkpoint import ShapeTask, dummy_dictionary
from hat.models import TransformerSuperModel
from hat.paths import ROOT, reference_dir


@pytest.fixture
def hat_reference() -> Path:
    """The reference folder; skips the test where it is absent."""
    d = reference_dir()
    if not (d / "SPEC.md").is_file():
        pytest.skip(f"HAT reference data not found at {d} (set HAT_REFERENCE_DIR)")
    return d


TINY_SPACE = dict(
    encoder_embed_dim=48, decoder_embed_dim=48, encoder_ffn_embed_dim=96,
    decoder_ffn_embed_dim=96, encoder_layers=6, decoder_layers=6, encoder_attention_heads=4,
    decoder_attention_heads=4, qkv_dim=32,
    encoder_embed_choice=[48, 32, 24], decoder_embed_choice=[48, 40, 32],
    encoder_layer_num_choice=[6, 5, 4, 3, 2, 1], decoder_layer_num_choice=[6, 5, 4, 3, 2, 1],
    encoder_ffn_embed_dim_choice=[96, 64, 32], decoder_ffn_embed_dim_choice=[96, 64, 32],
    encoder_self_attention_heads_choice=[4, 2, 1],
    decoder_self_attention_heads_choice=[4, 2, 1],
    decoder_ende_attention_heads_choice=[4, 2, 1],
    decoder_arbitrary_ende_attn_choice=[-1, 1, 2],
)


def tiny_args(shared: bool = True, **kw) -> argparse.Namespace:
    """Args of a tiny SuperTransformer whose space exercises every elastic dimension."""
    values = {"dropout": 0.0, "attention_dropout": 0.0, **TINY_SPACE, **kw}
    return argparse.Namespace(arch="transformersuper", share_all_embeddings=shared, **values)


def tiny_supernet(shared: bool = True, vocab: int = 50, seed: int = 0, **kw
                  ) -> TransformerSuperModel:
    """A randomly initialised tiny SuperTransformer in eval mode (non-zero biases and norms)."""
    torch.manual_seed(seed)
    src = dummy_dictionary(vocab)
    tgt = src if shared else dummy_dictionary(vocab + 7)
    model = TransformerSuperModel.build_model(tiny_args(shared, **kw), ShapeTask(src, tgt))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def load_script(relpath: str) -> ModuleType:
    """Import a script of the repository (e.g. ``bench/speed/latency_bench.py``) as its module
    (``bench.speed.latency_bench``), the way ``python -m`` runs it from the repository root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(relpath.removesuffix(".py").replace("/", "."))


def synthetic_features(n: int, rng: np.random.Generator) -> np.ndarray:
    """HAT's 10 latency features for ``n`` random rows in the range of the WMT search space."""
    return np.c_[
        rng.choice([512, 640], n), np.full(n, 6), rng.uniform(1024, 3072, n),
        rng.uniform(4, 8, n), rng.choice([512, 640], n), rng.integers(1, 7, n),
        rng.uniform(1024, 3072, n), rng.uniform(4, 8, n), rng.uniform(4, 8, n),
        rng.uniform(1, 3, n),
    ]


@pytest.fixture
def read_only(tmp_path: Path):
    """A folder nobody may write into (restored afterwards so pytest can clean up)."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)

GUARD_S = 1800
"""Seconds after which a test gives up on a subprocess or a wait: a guard against hangs, never a
speed requirement (the suite must pass on a loaded machine)."""


def serve_http(handler: type, monkeypatch: pytest.MonkeyPatch, **attrs: object):
    """A local HTTP server in a thread for a fixture to yield (``url``, and ``attrs`` set on
    it for the handler to read); proxies are bypassed for it."""
    import threading
    from http.server import ThreadingHTTPServer

    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for k, v in attrs.items():
        setattr(srv, k, v)
    srv.url = f"http://127.0.0.1:{srv.server_port}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
