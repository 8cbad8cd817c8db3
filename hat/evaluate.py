"""Validation loss of SubTransformers with inherited weights (training checks, search fitness)."""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from typing import Any

import torch
from fairseq import checkpoint_utils
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
)

from hat.errors import HatConfigError
from hat.space import SubConfig

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def load_for_eval(checkpoint: str, data: str | None = None, device: str = "cpu"
                  ) -> tuple[Any, Any]:
    """(task, model) of a checkpoint, the model in eval mode on ``device``."""
    if not os.path.isfile(checkpoint):
        raise HatConfigError(f"{checkpoint}: checkpoint file not found")
    overrides = {"data": data} if data else {}
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint],
                                                                   arg_overrides=overrides)
    return task, models[0].to(device).eval()


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


class ValidLoss:
    """Label-smoothed validation loss (base 2) over a fixed, unshuffled list of batches.

    The batches are built once and moved to ``device`` once; a call runs forward passes only
    (``torch.inference_mode``), under fp16/bf16 autocast when ``precision`` asks for it (the
    log-softmax and the loss stay in fp32), and synchronises with the device once.
    """

    def __init__(self, task: Any, model: Any, subset: str = "valid", max_tokens: int = 4096,
                 max_batches: int | None = None, label_smoothing: float = 0.1,
                 device: str = "cpu", precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise HatConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.model, self.device, self.precision = model, torch.device(device), precision
        self.batches = [_to(b, self.device) for b in
                        valid_batches(task, model, subset, max_tokens, max_batches)]
        if not self.batches:
            raise HatConfigError(f"split '{subset}' gave no batches (empty, or every sentence "
                                 f"longer than the model's max positions)")
        self.criterion = LabelSmoothedCrossEntropyCriterion(task, False, label_smoothing)
        self.tokens = sum(int(b["ntokens"]) for b in self.batches)

    def _autocast(self) -> Any:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    @torch.inference_mode()
    def __call__(self, cfg: SubConfig | None = None) -> float:
        """Loss of ``cfg`` (the model's active SubTransformer when None)."""
        if cfg is not None:
            self.model.set_sample_config(cfg)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        size = 0
        with self._autocast():
            for sample in self.batches:
                loss, sample_size, _ = self.criterion(self.model, sample)
                total += loss.detach().double()
                size += int(sample_size)
        return float(total) / max(size, 1) / math.log(2)


def _to(sample: Any, device: torch.device) -> Any:
    if isinstance(sample, torch.Tensor):
        return sample.to(device, non_blocking=True)
    if isinstance(sample, dict):
        return {k: _to(v, device) for k, v in sample.items()}
    return sample
