"""``hat_adam``: entries outside the active SubTransformer stay put; inside, fairseq's Adam."""

from __future__ import annotations

import random

import pytest
import torch
from fairseq.optim.adam import Adam as FairseqTorchAdam
from fairseq.optim.fp16_optimizer import FP16Optimizer
from omegaconf import OmegaConf

from hat.optim import INACTIVE, HatAdam, HatAdamConfig, SliceAdam, set_active_regions
from hat.space import SubConfig
from tests.conftest import tiny_supernet

LR, BETAS, EPS, WD = 0.01, (0.9, 0.98), 1e-8, 0.1


def region_masks(model) -> dict[torch.Tensor, torch.Tensor]:
    """Each parameter's active region as a bool mask (all False: unused)."""
    regions = model.active_regions()
    out = {}
    for p in model.parameters():
        m = torch.zeros(p.shape, dtype=torch.bool)
        for box in regions.get(p, []):
            m[box] = True
        out[p] = m
    return out


def a_small_config(model, seed: int) -> SubConfig:
    """A random SubTransformer narrower than the largest in embed and FFN, with fewer layers."""
    rng = random.Random(seed)
    while True:
        cfg = model.space.sample(rng)
        if cfg.decoder_layer_num < 6 and cfg.encoder_embed_dim < 48 and \
                cfg.decoder_embed_dim != cfg.encoder_embed_dim:
            return cfg


def backward_once(model, vocab: int = 50, seed: int = 0) -> None:
    """Gradients of a random linear function of the logits, on a batch using every token."""
    g = torch.Generator().manual_seed(seed)
    every = torch.arange(4, vocab)
    src = torch.cat([every, torch.randint(4, vocab, (66 - len(every),), generator=g)])
    src = src[torch.randperm(66, generator=g)].view(6, 11)
    prev = torch.randint(4, vocab, (6, 9), generator=g)
    out, _ = model(src, torch.full((6,), 11), prev)
    (out * torch.randn(out.shape, generator=g)).sum().backward()


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_active_regions_are_exactly_the_entries_that_get_gradients(shared: bool,
                                                                    seed: int) -> None:
    model = tiny_supernet(shared=shared)
    cfg = a_small_config(model, seed)
    model.set_sample_config(cfg)
    model.zero_grad(set_to_none=False)
    for k in range(3):
        backward_once(model, vocab=50, seed=seed * 10 + k)
    masks = region_masks(model)
    embeddings = {model.encoder.embed_tokens.weight, model.decoder.embed_tokens.weight}
    for name, p in model.named_parameters():
        nonzero = p.grad.ne(0) if p.grad is not None else torch.zeros(p.shape, dtype=bool)
        assert not (nonzero & ~masks[p]).any(), f"{name}: gradient outside its active region"
        if p in embeddings:  # rows of tokens absent from the batch get no gradient
            cols = nonzero.any(0)
            assert torch.equal(cols, masks[p].any(0)), name
        elif name.endswith("in_proj_bias"):  # softmax ignores the key bias: no gradient
            q = model.space.qkv_dim
            keep = torch.ones_like(nonzero)
            keep[q: 2 * q] = False
            assert torch.equal(nonzero[keep], masks[p][keep]), name
        elif masks[p].any():  # (a ReLU unit dead on the batch leaves a row/column at zero)
            covered = (nonzero & masks[p]).sum() / masks[p].sum().clamp(min=1)
            assert covered > 0.97, f"{name}: region larger than what is used ({covered:.3f})"
    unused = [n for n, p in model.named_parameters() if not masks[p].any()]
    assert any(n.startswith(f"decoder.layers.{cfg.decoder_layer_num}.") for n in unused)


def random_grads(model, masks, seed: int, dtype=torch.float32) -> None:
    """Random gradients inside each region, zeros outside (what autograd and zero-fill give)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=g) * masks[p]).to(dtype)


def reference_steps(model, grads: list[dict]) -> dict[str, torch.Tensor]:
    """fairseq's own Adam on fp32 copies, given the same gradients."""
    params = {n: p.detach().float().clone().requires_grad_() for n, p in model.named_parameters()}
    opt = FairseqTorchAdam(params.values(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    for step in grads:
        for n, q in params.items():
            q.grad = step[n].float().clone()
        opt.step()
    return {n: q.detach() for n, q in params.items()}


def hat_adam(params) -> HatAdam:
    cfg = OmegaConf.structured(HatAdamConfig(lr=[LR], adam_betas="(0.9, 0.98)", adam_eps=EPS,
                                             weight_decay=WD))
    return HatAdam(cfg, params)


def fp16_wrapper(model, flatten: bool, monkeypatch) -> FP16Optimizer:
    """fairseq's fp16 wrapper (fp32 master copy) around hat_adam, built as the trainer does."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)  # a CPU tensor's index
    cfg = OmegaConf.create({
        "common": {"fp16_no_flatten_grads": not flatten, "bf16": False, "fp16_init_scale": 1,
                   "fp16_scale_window": 128, "fp16_scale_tolerance": 0.0,
                   "threshold_loss_scale": None, "min_loss_scale": 1e-4,
                   "model_parallel_size": 1},
        "optimization": {"update_freq": [1]},
        "distributed_training": {"distributed_world_size": 1},
        "optimizer": OmegaConf.structured(HatAdamConfig(
            lr=[LR], adam_betas="(0.9, 0.98)", adam_eps=EPS, weight_decay=WD)),
    })
    cfg.optimizer._name = "hat_adam"
    return FP16Optimizer.build_optimizer(cfg, list(model.parameters()))


@pytest.mark.parametrize("path", ["fp32", "fp16 flat", "fp16 per tensor"])
def test_inactive_entries_do_not_move_and_active_ones_take_fairseqs_adam_step(
        path: str, monkeypatch) -> None:
    model = tiny_supernet(shared=True).train()
    if path != "fp32":
        model.half()
    params = list(model.parameters())
    opt = hat_adam(params) if path == "fp32" else fp16_wrapper(model, path == "fp16 flat",
                                                              monkeypatch)
    names = [n for n, _ in model.named_parameters()]
    dtype = torch.float32 if path == "fp32" else torch.float16
    history = []
    # step 1: the largest (every entry gets moments); step 2: a small SubTransformer
    for k, cfg in enumerate([model.space.largest(), a_small_config(model, 5)]):
        model.set_sample_config(cfg)
        masks = region_masks(model)
        random_grads(model, masks, seed=k, dtype=dtype)
        if path != "fp32":
            opt._needs_sync = True  # what the wrapper's backward() records
        history.append({n: p.grad.clone() for n, p in model.named_parameters()})
        set_active_regions(opt, model.active_regions())
        if k == 1:
            before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
            state_before = master_state(opt, model)
        opt.step()
    after = {n: p.detach().float() for n, p in model.named_parameters()}
    ref = reference_steps(_fresh_copy(model, path), history)
    state_after = master_state(opt, model)
    tol = dict(rtol=1e-5, atol=1e-6) if path == "fp32" else dict(rtol=1e-3, atol=1e-3)
    for n, p in zip(names, params):
        m = masks[p]
        assert torch.equal(after[n][~m], before[n][~m]), f"{n}: an inactive entry moved"
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state_after[n][key][~m], state_before[n][key][~m]), (n, key)
        assert torch.allclose(after[n][m], ref[n][m].to(dtype).float(), **tol), n
        assert torch.all(state_after[n]["step"][m] == 2), n
    # with HAT's Adam the same two steps move the inactive entries (stale moments, decay)
    moved = [n for n, p in zip(names, params) if not torch.equal(ref[n][~masks[p]],
                                                                  before[n][~masks[p]].float())]
    assert len(moved) > len(names) // 2


def _fresh_copy(model, path: str):
    """The same model as first built (the reference starts from the same values)."""
    fresh = tiny_supernet(shared=True)
    return fresh.half() if path != "fp32" else fresh


def master_state(opt, model) -> dict[str, dict[str, torch.Tensor]]:
    """The optimizer's state per model parameter (views into a flat buffer's state)."""
    from hat.compat import optimizer_param_layout

    inner, layout = optimizer_param_layout(opt)
    out = {}
    names = {p: n for n, p in model.named_parameters()}
    for opt_param, members in layout:
        st = inner.state[opt_param]
        for p, offset in members:
            if offset is None:
                out[names[p]] = {k: v.clone() for k, v in st.items()}
            else:
                out[names[p]] = {k: v.view(-1)[offset: offset + p.numel()].view(p.shape).clone()
                                 for k, v in st.items()}
    return out


def test_unused_tensor_is_skipped_and_a_full_one_is_plain_adam() -> None:
    w = torch.nn.Parameter(torch.randn(4, 3))
    u = torch.nn.Parameter(torch.randn(5))
    opt = SliceAdam([w, u], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    ref_w = w.detach().clone().requires_grad_()
    ref = FairseqTorchAdam([ref_w], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    u0 = u.detach().clone()
    for k in range(3):
        g = torch.randn(4, 3, generator=torch.Generator().manual_seed(k))
        w.grad, ref_w.grad, u.grad = g.clone(), g.clone(), torch.zeros(5)
        opt.set_masks({u: INACTIVE})
        opt.step()
        ref.step()
    assert torch.allclose(w, ref_w, rtol=1e-6, atol=1e-7)
    assert torch.equal(u.detach(), u0) and u not in opt.state


def test_a_flat_buffer_the_update_used_whole_steps_without_a_mask(monkeypatch) -> None:
    """A sandwich update trains the largest SubTransformer: every entry of the fp16 wrapper's
    flat buffer is active, and the step is the plain one (no mask built); a smaller one's
    update gets a mask with exactly its entries."""
    from hat.compat import inner_optimizer

    model = tiny_supernet(shared=True).half()
    opt = fp16_wrapper(model, True, monkeypatch)
    inner = inner_optimizer(opt)
    model.set_sample_config(model.space.largest())
    set_active_regions(opt, model.active_regions())
    assert list(inner.masks.values()) == [None]
    model.set_sample_config(a_small_config(model, 5))
    set_active_regions(opt, model.active_regions())
    (mask,) = inner.masks.values()
    expected = torch.cat([m.view(-1) for m in region_masks(model).values()])
    assert torch.equal(mask.view(-1), expected) and not bool(mask.all())


@pytest.mark.parametrize("boxes, whole", [
    ([(slice(0, 4), slice(0, 3))], True),
    ([(slice(0, 2), slice(0, 3)), (slice(2, 4), slice(None))], True),  # Q rows + K/V rows
    ([(slice(0, 2), slice(0, 3)), (slice(3, 4), slice(0, 3))], False),  # row 2 missing
    ([(slice(0, 2), slice(0, 3)), (slice(2, 4), slice(0, 2))], False),  # a column missing
    ([(slice(0, 4), slice(0, 2)), (slice(0, 4), slice(2, 3))], False),  # (tiles columns)
    ([], False),
])
def test_whole_coverage_of_a_parameter(boxes, whole: bool) -> None:
    from hat.optim import _covers

    assert _covers(boxes, torch.Size([4, 3])) is whole


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batched_fp16_copies_equal_fairseqs_per_parameter_copies(dtype, monkeypatch) -> None:
    """The wrapper's gradient copy into its flat fp32 buffer and the parameter copy back, batched
    (hat.compat.fp16_sync), give fairseq's per-parameter results bit for bit."""
    from fairseq.optim.fp16_optimizer import _FP16OptimizerMixin as Mixin

    from hat.compat import patch_fairseq

    patch_fairseq()
    batched = (Mixin._sync_fp16_grads_to_fp32, Mixin._sync_fp32_params_to_fp16)
    assert getattr(batched[0], "_hat_batched", False)
    results = []
    for grads_fn, params_fn in (batched, [f.fairseq for f in batched]):
        model = tiny_supernet(shared=True).to(dtype)
        opt = fp16_wrapper(model, True, monkeypatch)
        g = torch.Generator().manual_seed(1)
        for k, p in enumerate(model.parameters()):
            p.grad = None if k == 3 else torch.randn(p.shape, generator=g).to(dtype)
        opt._needs_sync = True
        grads_fn(opt)
        (flat,) = opt.fp32_params.values()
        flat.data.add_(torch.randn(flat.shape, generator=g))  # as a step would
        params_fn(opt)
        results.append((flat.grad.clone(), [p.detach().clone() for p in model.parameters()]))
    (grad_a, params_a), (grad_b, params_b) = results
    assert torch.equal(grad_a, grad_b)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))

