"""Backbone: SuperTransformer slice == exported standalone model == plain reference."""

from __future__ import annotations

import random

import pytest
import torch

from hat.export import build_compact, extract_subtransformer_state
from hat.profile import count_params
from hat.space import SearchSpace
from tests.conftest import TINY_SPACE, tiny_supernet
from tests.reference import reference_logits

VOCAB = 50


def batch(seed: int, b: int = 3, s: int = 9, t: int = 7) -> tuple[torch.Tensor, ...]:
    """Left-padded sources (as fairseq batches them) and right-padded previous targets."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, VOCAB, (b, s), generator=g)
    src[1, :3] = 1  # padding at the start of one sentence
    prev = torch.randint(4, VOCAB, (b, t), generator=g)
    prev[:, 0] = 2
    prev[2, -2:] = 1
    return src, torch.full((b,), s), prev


def random_configs(n: int, seed: int) -> list:
    space = SearchSpace(**TINY_SPACE)
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("shared", [True, False])
def test_slice_export_and_reference_agree(shared: bool) -> None:
    model = tiny_supernet(shared=shared, vocab=VOCAB)
    src, lengths, prev = batch(1)
    sd = model.state_dict()
    for cfg in random_configs(12, seed=3 + shared):
        model.set_sample_config(cfg)
        with torch.no_grad():
            sliced = model(src, lengths, prev)[0]
            compact = build_compact(model, cfg).eval()
            standalone = compact(src, lengths, prev)[0]
        ref = reference_logits(sd, cfg, src, prev, 48, 48, 6, 32, separate_out=not shared)
        keep = prev.ne(1)  # padded target positions carry no meaning
        assert torch.allclose(sliced[keep].double(), ref[keep], atol=1e-4), cfg.describe()
        assert (sliced - standalone).abs().max().item() <= 1e-5, cfg.describe()
        n_emb = sum(p.numel() for n, p in compact.named_parameters()
                    if "embed_tokens" in n or n.endswith("embed_out"))
        assert sum(p.numel() for p in compact.parameters()) == count_params(cfg, 32) + n_emb


def test_compact_model_has_no_super_sized_tensors() -> None:
    model = tiny_supernet()
    cfg = random_configs(1, seed=11)[0]
    compact = build_compact(model, cfg)
    shapes = {n: tuple(t.shape) for n, t in compact.state_dict().items()}
    e, d = cfg.encoder_embed_dim, cfg.decoder_embed_dim
    assert shapes["encoder.layers.0.fc1.weight"] == (cfg.encoder_ffn_embed_dim[0], e)
    assert f"decoder.layers.{cfg.decoder_layer_num}.fc1.weight" not in shapes
    assert shapes["decoder.layers.0.fc2.weight"] == (d, cfg.decoder_ffn_embed_dim[0])
    assert shapes["encoder.embed_tokens.weight"][1] == e
    slices = extract_subtransformer_state(model, compact)
    assert all(slices[k].shape == compact.state_dict()[k].shape for k in slices)


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_incremental_decoding_equals_full_forward(impl: str) -> None:
    model = tiny_supernet(attn_impl=impl)
    src, lengths, _ = batch(2)
    prev = torch.randint(4, VOCAB, (3, 6), generator=torch.Generator().manual_seed(5))
    prev[:, 0] = 2
    for cfg in random_configs(6, seed=21):
        for net in (model, build_compact(model, cfg).eval()):
            net.set_sample_config(cfg)
            with torch.no_grad():
                full = net(src, lengths, prev)[0]
                enc = net.encoder(src, lengths)
                state: dict = {}
                steps = [net.decoder(prev[:, : t + 1], enc, incremental_state=state)[0]
                         for t in range(prev.size(1))]
            assert (torch.cat(steps, 1) - full).abs().max().item() < 1e-5


def test_incremental_state_follows_beam_reordering() -> None:
    model = tiny_supernet()
    cfg = random_configs(1, seed=4)[0]
    model.set_sample_config(cfg)
    src, lengths, _ = batch(3)
    prev = torch.randint(4, VOCAB, (3, 4), generator=torch.Generator().manual_seed(1))
    order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        enc = model.encoder(src, lengths)
        state: dict = {}
        for t in range(3):
            model.decoder(prev[:, : t + 1], enc, incremental_state=state)
        model.decoder.reorder_incremental_state_scripting(state, order)
        enc2 = model.encoder.reorder_encoder_out(enc, order)
        step = model.decoder(prev[order, :4], enc2, incremental_state=state)[0]
        full = model(src[order], lengths[order], prev[order])[0][:, -1:]
    assert (step - full).abs().max().item() < 1e-5


def test_sdpa_matches_reference_attention_path() -> None:
    a = tiny_supernet(attn_impl="sdpa")
    b = tiny_supernet(attn_impl="reference")
    src, lengths, prev = batch(4)
    for cfg in random_configs(5, seed=8):
        a.set_sample_config(cfg)
        b.set_sample_config(cfg)
        with torch.no_grad():
            assert (a(src, lengths, prev)[0] - b(src, lengths, prev)[0]).abs().max() < 1e-5


def test_front_slices_share_weights_between_subnets() -> None:
    """Training a small subnet changes exactly the front slice of the super weights."""
    model = tiny_supernet().train()
    small = SearchSpace(**TINY_SPACE).smallest()
    model.set_sample_config(small)
    before = model.encoder.layers[0].fc1.weight.detach().clone()
    src, lengths, prev = batch(6)
    model(src, lengths, prev)[0].sum().backward()
    grad = model.encoder.layers[0].fc1.weight.grad
    f, e = small.encoder_ffn_embed_dim[0], small.encoder_embed_dim
    assert grad[:f, :e].abs().sum() > 0
    assert grad[f:].abs().sum() == 0 and grad[:, e:].abs().sum() == 0
    assert model.decoder.layers[1].fc1.weight.grad is None  # skipped layer (1 decoder layer)
    assert torch.equal(before, model.encoder.layers[0].fc1.weight)


def test_dropout_is_scaled_by_sampled_dim() -> None:
    model = tiny_supernet(dropout=0.3)
    cfg = SearchSpace(**TINY_SPACE).smallest()
    model.set_sample_config(cfg)
    layer = model.encoder.layers[0]
    assert layer.rates.dropout == pytest.approx(0.3 * cfg.encoder_embed_dim / 48)
    assert layer.rates.encoder_attn_out == pytest.approx(0.3 * cfg.encoder_embed_dim / 48)
    quirk = tiny_supernet(dropout=0.3, hat_unscaled_encoder_attn_dropout=True)
    quirk.set_sample_config(cfg)
    assert quirk.encoder.layers[0].rates.encoder_attn_out == pytest.approx(0.3)
    assert model.encoder.sample_dropout == pytest.approx(0.3 * cfg.encoder_embed_dim / 48)


def test_one_batch_reads_its_padding_from_the_device_once() -> None:
    """The sandwich's passes over one batch ask the device whether it has padding once (the
    decoder trusts the encoder's mask); a new batch asks again. Same outputs either way."""
    from torch.utils._python_dispatch import TorchDispatchMode

    reads = []

    class CountReads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.startswith("_local_scalar_dense"):
                reads.append(func)
            return func(*args, **(kwargs or {}))

    model = tiny_supernet(shared=True).eval()
    src = torch.randint(4, 50, (3, 7))
    src[0, :2] = model.encoder.padding_idx  # left padding
    prev = torch.randint(4, 50, (3, 5))
    lengths = src.ne(model.encoder.padding_idx).sum(1)
    with CountReads():
        first, _ = model(src, lengths, prev)
        model.set_sample_config(model.space.smallest())
        model(src, lengths, prev)
        model.set_sample_config(model.space.largest())
        again, _ = model(src, lengths, prev)
        assert len(reads) == 1
        model(src.clone(), lengths, prev)
        assert len(reads) == 2
    assert torch.equal(first, again)
