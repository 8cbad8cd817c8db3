"""Batched copies between fairseq's fp16/bf16 model parameters and its flat fp32 master copy.

fairseq's ``FP16Optimizer`` (flattened, one device) copies every parameter's gradient into the
flat fp32 buffer and, after the step, the buffer back into every parameter: two kernel launches
per parameter and update. A small model on a fast GPU waits on those launches (the profile of a
SuperTransformer update: ~500 of ~1,550 launches were copies). Here each direction is one
concatenation (or one multi-tensor copy) and one conversion, with the same results bit for bit;
other layouts (unflattened, several devices, frozen parameters) keep fairseq's code.
"""

from __future__ import annotations

from typing import Any

import torch


def _one_flat_buffer(opt: Any) -> torch.Tensor | None:
    """The flat fp32 buffer when every parameter lives in one and needs a gradient."""
    if not getattr(opt, "has_flat_params", False) or len(opt.fp32_params) != 1:
        return None
    params = opt.fp16_params
    if not all(p.requires_grad for p in params) or len({p.dtype for p in params}) != 1:
        return None
    (flat,) = opt.fp32_params.values()
    return flat


def batch_fp16_copies() -> None:
    """Patch ``FP16Optimizer``'s two sync methods (idempotent)."""
    from fairseq.optim.fp16_optimizer import _FP16OptimizerMixin as Mixin

    grads_to_fp32, params_to_fp16 = Mixin._sync_fp16_grads_to_fp32, \
        Mixin._sync_fp32_params_to_fp16
    if getattr(grads_to_fp32, "_hat_batched", False):
        return

    def sync_grads(self: Any) -> None:
        flat = _one_flat_buffer(self) if self._needs_sync else None
        if flat is None:
            return grads_to_fp32(self)
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                 for p in self.fp16_params]
        flat.grad.copy_(torch.cat(grads))  # one launch for all, then one conversion
        self._needs_sync = False

    def sync_params(self: Any) -> None:
        flat = _one_flat_buffer(self)
        if flat is None:
            return params_to_fp16(self)
        params = [p.data for p in self.fp16_params]
        half = flat.data.to(params[0].dtype)
        parts = half.split([p.numel() for p in params])
        torch._foreach_copy_(params, [v.view_as(p) for v, p in zip(parts, params)])

    sync_grads._hat_batched = True  # type: ignore[attr-defined]
    sync_grads.fairseq, sync_params.fairseq = grads_to_fp32, params_to_fp16  # type: ignore
    Mixin._sync_fp16_grads_to_fp32 = sync_grads
    Mixin._sync_fp32_params_to_fp16 = sync_params
