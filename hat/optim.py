"""Optimizer ``hat_adam``: Adam that moves only what this update's SubTransformer used.

A SuperTransformer update trains one sampled SubTransformer, a front slice of the shared weights.
With plain Adam (HAT's fp16 path, and fairseq's flattened fp16/bf16 wrapper) every entry the
SubTransformer did not use still gets a zero gradient, so Adam keeps stepping it on its stale
moments and decays it. ``hat_adam`` gives each entry exactly the Adam it would see if it were
trained only in the updates that used it: entries outside the active slice keep their value, both
moments and their own step count (so their bias correction), and get no weight decay. Inside the
slice the step is fairseq's Adam (decoupled weight decay) with that per-entry step count.

The task hands the optimizer the active region of every parameter before each step
(:func:`set_active_regions`); it works on fairseq's plain optimizer, on the fp16/bf16 wrapper's
flat fp32 copy, and on the memory-efficient wrapper. Every rank samples the same SubTransformer
for an update, so every rank masks alike. ``--optimizer adam`` keeps HAT's behaviour.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.adam import FairseqAdamConfig
from torch import Tensor

from hat.compat import inner_optimizer, optimizer_param_layout

Box = tuple[slice, ...]
"""A rectangular block of a parameter (one slice per dimension)."""

INACTIVE = "inactive"
"""Mask value of a parameter the SubTransformer does not use at all."""


class SliceAdam(torch.optim.Optimizer):
    """fairseq's Adam (decoupled weight decay) restricted to the entries of a boolean mask.

    ``set_masks({param: mask})``: ``mask`` is a bool tensor of the parameter's shape, ``None``
    (every entry active; the default for a parameter not named) or :data:`INACTIVE`. The state
    holds ``exp_avg``, ``exp_avg_sq`` and a per-entry ``step`` count (float32).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.masks: dict[Tensor, Tensor | str | None] = {}

    def set_masks(self, masks: dict[Tensor, Tensor | str | None]) -> None:
        """The active entries for the next steps."""
        self.masks = masks

    @torch.no_grad()
    def step(self, closure: Any = None, **_: Any) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                mask = self.masks.get(p)
                if p.grad is None or (isinstance(mask, str) and mask == INACTIVE):
                    continue
                self._update(p, group, mask)
        return loss

    def _update(self, p: Tensor, group: dict, mask: Tensor | None) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], \
            group["weight_decay"]
        grad = p.grad.float()
        p32 = p.data.float() if p.dtype != torch.float32 else p.data
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros_like(p32)
            state["exp_avg"] = torch.zeros_like(p32)
            state["exp_avg_sq"] = torch.zeros_like(p32)
        if state["step"].device != p32.device:  # torch's load_state_dict keeps "step" where
            state["step"] = state["step"].to(p32.device)  # it was saved (the CPU)
        step, m, v = state["step"], state["exp_avg"].float(), state["exp_avg_sq"].float()
        # One pass per term, no copies: an entry outside the mask gets weight 0 everywhere, so
        # its value, moments and step count stay bit-identical.
        active = None if mask is None else mask.to(p32.dtype)
        step.add_(1 if active is None else active)
        m.lerp_(grad, 1 - beta1 if active is None else active * (1 - beta1))
        v.lerp_(grad.square(), 1 - beta2 if active is None else active * (1 - beta2))
        # per-entry bias correction lr * sqrt(1 - beta2^t) / (1 - beta1^t); an entry never
        # trained (t = 0) is masked out, so evaluate it at t = 1 instead of dividing by 0
        t = step if active is None else step.clamp(min=1)
        step_size = torch.pow(beta2, t).neg_().add_(1).sqrt_()
        step_size.div_(torch.pow(beta1, t).neg_().add_(1)).mul_(-lr)
        if active is not None:
            step_size.mul_(active)
        if wd != 0:  # decoupled weight decay, only where the step applies
            p32.mul_(1 - wd * lr if active is None else active.mul(-wd * lr).add_(1))
        p32.addcdiv_(step_size.mul_(m), v.sqrt().add_(eps))
        state["exp_avg"], state["exp_avg_sq"] = m, v
        if p.dtype != torch.float32:  # p32 is a copy (``p.data`` is a new object each time:
            p.data.copy_(p32)  # an identity test would copy every fp32 parameter onto itself)


@dataclass
class HatAdamConfig(FairseqAdamConfig):
    """fairseq's Adam keys (``adam-betas``, ``adam-eps``, ``weight-decay``, ``lr``)."""


@register_optimizer("hat_adam", dataclass=HatAdamConfig)
class HatAdam(FairseqOptimizer):
    """Adam whose entries outside the active SubTransformer stay where they are (values, moments,
    step counts; no weight decay). ``--optimizer adam`` is HAT's Adam."""

    def __init__(self, cfg: HatAdamConfig, params: Sequence[Any]) -> None:
        super().__init__(cfg)
        self._optimizer = SliceAdam(params, **self.optimizer_config)

    @property
    def optimizer_config(self) -> dict[str, Any]:
        lr = self.cfg.lr[0] if isinstance(self.cfg.lr, Sequence) else self.cfg.lr
        betas = self.cfg.adam_betas
        if isinstance(betas, str):
            betas = ast.literal_eval(betas)
        return {"lr": lr, "betas": tuple(betas), "eps": self.cfg.adam_eps,
                "weight_decay": self.cfg.weight_decay}

    @property
    def supports_flat_params(self) -> bool:
        return True

    @property
    def supports_memory_efficient_fp16(self) -> bool:
        return True


# ----- masks from active regions ------------------------------------------------------------
def _covers(boxes: Sequence[Box], shape: torch.Size) -> bool:
    """Whether the boxes cover the whole parameter: boxes spanning every dimension but the first
    tile the first (one whole box; Q rows + K/V rows of ``in_proj_weight``). Other unions count
    as not covering (a mask then holds the same entries)."""
    if not boxes or not shape:
        return bool(boxes)
    rows = []
    for box in boxes:
        start, stop, step = box[0].indices(shape[0])
        if step == 1 and all(s.indices(n) == (0, n, 1) for s, n in zip(box[1:], shape[1:])):
            rows.append((start, stop))
    reach = 0
    for start, stop in sorted(rows):
        if start > reach:
            return False
        reach = max(reach, stop)
    return reach >= shape[0]


def _fill(view: Tensor, boxes: Sequence[Box]) -> None:
    for box in boxes:
        view[box] = True


def uses_slice_adam(wrapper: Any) -> bool:
    """Whether fairseq's optimizer (or the one inside its fp16 wrapper) is ``hat_adam``."""
    return isinstance(inner_optimizer(wrapper), SliceAdam)


def set_active_regions(wrapper: Any, regions: dict[Tensor, list[Box]]) -> None:
    """Give ``hat_adam`` inside fairseq's optimizer ``wrapper`` the active region of every model
    parameter: ``regions[param]`` lists the boxes in use (empty: unused; a parameter missing
    from ``regions`` is unused)."""
    inner, layout = optimizer_param_layout(wrapper)
    if not isinstance(inner, SliceAdam):
        raise TypeError("set_active_regions needs --optimizer hat_adam")
    masks: dict[Tensor, Tensor | str | None] = {}
    for opt_param, members in layout:
        if len(members) == 1 and members[0][1] is None:  # the model's own tensor (or its copy)
            param = members[0][0]
            boxes = regions.get(param, [])
            if not boxes:
                masks[opt_param] = INACTIVE
            elif _covers(boxes, param.shape):
                masks[opt_param] = None
            else:
                mask = torch.zeros(param.shape, dtype=torch.bool, device=opt_param.device)
                _fill(mask, boxes)
                masks[opt_param] = mask
            continue
        # a flat fp32 buffer holding many parameters; when the update used all of them whole
        # (a sandwich update trains the largest SubTransformer) it is a plain step: no mask
        if all(_covers(regions.get(param, []), param.shape) for param, _ in members):
            masks[opt_param] = None
            continue
        flat = torch.zeros(opt_param.numel(), dtype=torch.bool, device=opt_param.device)
        for param, offset in members:
            boxes = regions.get(param, [])
            if boxes:
                _fill(flat[offset: offset + param.numel()].view(param.shape), boxes)
        masks[opt_param] = flat.view(opt_param.shape)
    inner.set_masks(masks)
