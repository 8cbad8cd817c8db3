"""Validation loss of SubTransformers with inherited weights (training checks, search fitness)."""

from __future__ import annotations

import math
from typing import Any

import torch
from fairseq import checkpoint_utils
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
)

from hat.errors import HatConfigError
from hat.space import SubConfig


def load_for_eval(checkpoint: str, data: str | None = None, device: str = "cpu"
                  ) -> tuple[Any, Any]:
    """(task, model) of a checkpoint, the model in eval mode on ``device``."""
    import os

    if not os.path.isfile(checkpoint):
        raise HatConfigError(f"{checkpoint}: checkpoint file not found")
    overrides = {"data": data} if data else {}
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint],
                                                                   arg_overrides=overrides)
    return task, models[0].to(device).eval()


class ValidLoss:
    """Label-smoothed validation loss (base 2) over a fixed, unshuffled list of batches."""

    def __init__(self, task: Any, model: Any, subset: str = "valid", max_tokens: int = 4096,
                 max_batches: int | None = None, label_smoothing: float = 0.1,
                 device: str = "cpu") -> None:
        self.model, self.device = model, device
        task.load_dataset(subset)
        itr = task.get_batch_iterator(
            dataset=task.dataset(subset), max_tokens=max_tokens,
            max_positions=model.max_positions(), ignore_invalid_inputs=True, seed=1,
        ).next_epoch_itr(shuffle=False)
        self.batches = []
        for i, sample in enumerate(itr):
            if max_batches is not None and i >= max_batches:
                break
            self.batches.append(sample)
        self.criterion = LabelSmoothedCrossEntropyCriterion(task, False, label_smoothing)

    @torch.inference_mode()
    def __call__(self, cfg: SubConfig | None = None) -> float:
        """Loss of ``cfg`` (the model's active SubTransformer when None)."""
        if cfg is not None:
            self.model.set_sample_config(cfg)
        total, size = 0.0, 0
        for sample in self.batches:
            sample = _to(sample, self.device)
            loss, sample_size, _ = self.criterion(self.model, sample)
            total += float(loss)
            size += sample_size
        return total / max(size, 1) / math.log(2)


def _to(sample: Any, device: str) -> Any:
    if isinstance(sample, torch.Tensor):
        return sample.to(device)
    if isinstance(sample, dict):
        return {k: _to(v, device) for k, v in sample.items()}
    return sample
