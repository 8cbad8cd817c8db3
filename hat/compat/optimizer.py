"""Where fairseq's optimizer (and its fp16/bf16 wrappers) keeps the torch optimizer and each
model parameter (for :mod:`hat.optim`)."""

from __future__ import annotations

from typing import Any


def optimizer_param_layout(wrapper: Any) -> tuple[Any, list[tuple[Any, list[tuple[Any, Any]]]]]:
    """Where fairseq's optimizer keeps each model parameter.

    Returns the torch optimizer that steps and, for each tensor it steps, the model parameters
    inside: ``[(model_param, None)]`` when it is that parameter (fp32, or memory-efficient fp16)
    or its own fp32 copy (the fp16/bf16 wrapper without flattening); ``[(model_param, offset),
    ...]`` for the wrapper's flat fp32 buffer, in the wrapper's order.
    """
    inner = inner_optimizer(wrapper)
    if hasattr(wrapper, "fp16_params"):  # FP16Optimizer (fp16 and bf16, fp32 master copy)
        fp16, fp32 = wrapper.fp16_params, wrapper.fp32_params
        if isinstance(fp32, dict):  # flattened: one buffer per device, params in order
            if len(fp32) != 1:  # fairseq's pipeline model parallelism, which HAT's models lack
                from hat.errors import HatConfigError

                raise HatConfigError("--optimizer hat_adam: fp16 buffers on several devices "
                                     "(pipeline model parallelism) are not supported; use "
                                     "--optimizer adam or one device per process")
            (flat,) = fp32.values()
            offsets, offset = [], 0
            for p in fp16:
                offsets.append((p, offset))
                offset += p.numel()
            return inner, [(flat, offsets)]
        return inner, [(p32, [(p, None)]) for p, p32 in zip(fp16, fp32)]
    # fp32, AMP (fp32 weights) or MemoryEfficientFP16Optimizer: it steps the model's own tensors
    return inner, [(p, [(p, None)]) for g in inner.param_groups for p in g["params"]]


def inner_optimizer(wrapper: Any) -> Any:
    """The torch optimizer inside fairseq's optimizer (and inside its fp16/bf16 wrappers)."""
    if hasattr(wrapper, "fp32_optimizer"):
        return wrapper.fp32_optimizer.optimizer
    return getattr(wrapper, "wrapped_optimizer", wrapper).optimizer
