"""Validation loss of SubTransformers with inherited weights (training checks, search fitness)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
)

from hat.checkpoint import load_task_and_model
from hat.errors import HatConfigError
from hat.space import SubConfig

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def load_for_eval(checkpoint: str, data: str | None = None, device: str = "cpu"
                  ) -> tuple[Any, Any]:
    """(task, model) of a checkpoint (:func:`hat.checkpoint.load_task_and_model`), the model in
    eval mode on ``device``."""
    task, model = load_task_and_model(checkpoint, data or None)
    return task, model.to(device).eval()


def valid_batches(task: Any, model: Any, subset: str = "valid", max_tokens: int = 4096,
                  max_batches: int | None = None) -> list[dict]:
    """The split's batches in fairseq's order (unshuffled, seed 1), at most ``max_batches``."""
    task.load_dataset(subset)
    with warnings.catch_warnings():  # pin_memory on a machine without a GPU
        warnings.simplefilter("ignore", UserWarning)
        return _batches(task, model, subset, max_tokens, max_batches)


def _batches(task: Any, model: Any, subset: str, max_tokens: int, max_batches: int | None
             ) -> list[dict]:
    itr = task.get_batch_iterator(
        dataset=task.dataset(subset), max_tokens=max_tokens,
        max_positions=model.max_positions(), ignore_invalid_inputs=True, seed=1,
    ).next_epoch_itr(shuffle=False)
    batches = []
    for i, sample in enumerate(itr):
        if max_batches is not None and i >= max_batches:
            break
        batches.append(sample)
    return batches


def label_smoothed_loss_sum(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                            pad: int, chunk_rows: int = 8192) -> torch.Tensor:
    """fairseq's label-smoothed NLL (natural log) summed over the non-pad targets, from logits
    of any dtype: fp32 log-softmax (one kernel per chunk), ``chunk_rows`` rows at a time, so
    the fp32 log-probabilities of a whole batch are never held at once. A float64 scalar."""
    vocab = logits.size(-1)
    x, t = logits.reshape(-1, vocab), target.reshape(-1)
    eps_i = epsilon / (vocab - 1)
    total = torch.zeros((), dtype=torch.float64, device=logits.device)
    for s in range(0, x.size(0), chunk_rows):
        lp = torch.log_softmax(x[s:s + chunk_rows], dim=-1, dtype=torch.float32)
        tc = t[s:s + chunk_rows]
        nll = -lp.gather(1, tc[:, None]).squeeze(1)
        loss = (1.0 - epsilon - eps_i) * nll - eps_i * lp.sum(dim=-1)
        total += torch.where(tc != pad, loss, 0.0).sum(dtype=torch.float64)
    return total


class ValidLoss:
    """Label-smoothed validation loss (base 2) over a fixed, unshuffled list of batches.

    The batches are built once and moved to ``device`` once; a call runs forward passes only
    (``torch.inference_mode``) and synchronises with the device once. ``precision`` bf16/fp16
    casts the model's weights to that dtype (as fairseq's fp16 models); the loss is always
    computed in fp32 from the logits, chunk by chunk (:func:`label_smoothed_loss_sum`;
    ``fused=False`` uses fairseq's criterion instead: the same number up to rounding).
    """

    def __init__(self, task: Any, model: Any, subset: str = "valid", max_tokens: int = 4096,
                 max_batches: int | None = None, label_smoothing: float = 0.1,
                 device: str = "cpu", precision: str = "fp32", fused: bool = True) -> None:
        if precision not in PRECISIONS:
            raise HatConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.device, self.precision, self.fused = torch.device(device), precision, fused
        self.model = model.to(device=self.device, dtype=_DTYPES.get(precision, torch.float32))
        self.batches = [_to(b, self.device) for b in
                        valid_batches(task, model, subset, max_tokens, max_batches)]
        if not self.batches:
            raise HatConfigError(f"split '{subset}' gave no batches (empty, or every sentence "
                                 f"longer than the model's max positions)")
        self.criterion = LabelSmoothedCrossEntropyCriterion(task, False, label_smoothing)
        self.eps, self.pad = label_smoothing, task.target_dictionary.pad()
        self.tokens = sum(int(b["ntokens"]) for b in self.batches)

    @torch.inference_mode()
    def __call__(self, cfg: SubConfig | None = None) -> float:
        """Loss of ``cfg`` (the model's active SubTransformer when None)."""
        if cfg is not None:
            self.model.set_sample_config(cfg)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for sample in self.batches:
            if self.fused:
                logits = self.model(**sample["net_input"])[0]
                total += label_smoothed_loss_sum(logits, sample["target"], self.eps, self.pad)
            else:
                loss, _, _ = self.criterion(self.model, sample)
                total += loss.detach().double()
        return float(total) / max(self.tokens, 1) / math.log(2)


def _to(sample: Any, device: torch.device) -> Any:
    if isinstance(sample, torch.Tensor):
        return sample.to(device, non_blocking=True)
    if isinstance(sample, dict):
        return {k: _to(v, device) for k, v in sample.items()}
    return sample
