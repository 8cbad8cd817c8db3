"""Task ``hat_translation``: fairseq translation plus HAT's SuperTransformer hooks.

- ``train_step``: one SubTransformer per update, drawn from ``random.Random(update + subnet_seed)``
  (HAT's stream for seed 0). fairseq calls it with the same update number for every
  ``update_freq`` micro-batch and on every worker, and restores the number on resume, so the
  subnet sequence is the same however the run is split or distributed.
- ``--subnet-sampling sandwich``: each update trains the largest, the smallest and
  ``--sandwich-random`` random SubTransformers on the same batch, their gradients averaged
  (BigNAS's sandwich rule; the random ones come from the same seeded stream). Logged losses are
  the mean over those passes; fairseq's token counts (``wps``) count every pass.
- With ``--optimizer hat_adam`` every update hands the optimizer the parameter blocks its
  SubTransformer(s) used, so nothing else moves (:mod:`hat.optim`); with ``--optimizer adam``
  unused entries get zero gradients and Adam steps them on their stale moments (HAT).
- ``valid_step``: the largest and the smallest SubTransformer are both evaluated and logged as
  ``loss_largest`` / ``loss_smallest``; ``loss`` is their mean (our default for "best");
  ``--best-checkpoint-metric loss_smallest`` reproduces HAT's choice.
- Clear errors for a data directory without the needed dictionaries or splits.
"""

# (no "from __future__ import annotations": fairseq reads the dataclass field types)

import json
import math
import os
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from fairseq import metrics, utils
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from hat import convergence
from hat.compat import stop_when_converged
from hat.data.missing import how_to_get
from hat.errors import HatConfigError
from hat.optim import set_active_regions, uses_slice_adam
from hat.space import SubConfig

SAMPLINGS = ("uniform", "sandwich")


@dataclass
class HatTranslationConfig(TranslationConfig):
    """Translation options plus SubTransformer sampling."""

    subnet_seed: int = field(
        default=0, metadata={"help": "added to the update number to seed SubTransformer "
                                     "sampling (0 reproduces HAT's sequence)"})
    subnet_sampling: str = field(
        default="uniform", metadata={"help": "SubTransformers per update: 'uniform' (HAT: one "
                                             "random one) or 'sandwich' (the largest, the "
                                             "smallest and --sandwich-random random ones)"})
    sandwich_random: int = field(
        default=2, metadata={"help": "random SubTransformers per update with "
                                     "--subnet-sampling sandwich"})
    distill_weight: float = field(
        default=0.0, metadata={"help": "in-place distillation with --subnet-sampling sandwich: "
                                       "the other SubTransformers of an update also learn the "
                                       "largest's output distribution with this weight (0: off)"})
    stop_converged_bits: float = field(
        default=0.0, metadata={"help": "stop when the validation metric (base 2) gained less "
                                       "than this over the last --stop-converged-window of "
                                       "updates (0: off; history in <save-dir>/convergence.json)"})
    stop_converged_window: float = field(
        default=0.2, metadata={"help": "fraction of the updates --stop-converged-bits looks at"})
    subnet_log: str = field(
        default="", metadata={"help": "append one JSON line per sampled SubTransformer "
                                      "(update, rank, hash, config) to this file"})


def own_options() -> list[Any]:
    """The dataclass fields this task adds to fairseq's translation options."""
    import dataclasses

    inherited = {f.name for f in dataclasses.fields(TranslationConfig)}
    return [f for f in dataclasses.fields(HatTranslationConfig) if f.name not in inherited]


def unwrap(model: Any) -> Any:
    """The model inside DDP / fairseq wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def zero_fill_unused_grads(model: Any) -> None:
    """Give parameters the step did not use (skipped layers) a zero gradient.

    Multi-GPU training all-reduces every gradient, so there unused parameters get zeros and
    Adam's momentum keeps moving them (as in HAT's 8-GPU runs); so does fairseq's flattened fp16
    optimizer. Without this, a single fp32 process would leave them in place: 1 and N GPUs, or
    fp32 and fp16, would train differently.
    """
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def _add_step_outputs(a: tuple, b: tuple) -> tuple:
    """Sum two ``(loss, sample_size, logging_output)`` results of one update's passes."""
    log = dict(a[2])
    for key, value in b[2].items():
        if isinstance(value, (int, float, torch.Tensor)) and key in log:
            log[key] = log[key] + value
    return a[0] + b[0], a[1] + b[1], log


@register_task("hat_translation", dataclass=HatTranslationConfig)
class HatTranslationTask(TranslationTask):
    """Translation with HAT's SuperTransformer training and validation."""

    cfg: HatTranslationConfig

    @classmethod
    def setup_task(cls, cfg: HatTranslationConfig, **kwargs: Any) -> "HatTranslationTask":
        """Check the data directory before fairseq reads it."""
        if cfg.subnet_sampling not in SAMPLINGS:
            raise HatConfigError(f"--subnet-sampling {cfg.subnet_sampling!r}: allowed "
                                 f"{', '.join(SAMPLINGS)}")
        if cfg.sandwich_random < 0:
            raise HatConfigError(f"--sandwich-random {cfg.sandwich_random}: must be >= 0")
        if not 0 <= cfg.distill_weight <= 1:
            raise HatConfigError(f"--distill-weight {cfg.distill_weight}: must be in [0, 1]")
        if cfg.distill_weight > 0 and cfg.subnet_sampling != "sandwich":
            raise HatConfigError("--distill-weight needs --subnet-sampling sandwich (the largest "
                                 "SubTransformer of the update is the teacher)")
        if cfg.stop_converged_bits < 0 or not 0 < cfg.stop_converged_window < 1:
            raise HatConfigError(
                f"--stop-converged-bits {cfg.stop_converged_bits} / --stop-converged-window "
                f"{cfg.stop_converged_window}: need bits >= 0 and 0 < window < 1")
        convergence.ACTIVE = None
        if cfg.stop_converged_bits > 0:
            convergence.ACTIVE = convergence.ConvergenceStop(cfg.stop_converged_bits,
                                                             cfg.stop_converged_window)
            stop_when_converged()
        paths = utils.split_paths(cfg.data) if cfg.data else []
        if not paths:
            raise HatConfigError("no data directory given (key 'data' or the first argument)")
        for p in paths:
            if not os.path.isdir(p):
                raise HatConfigError(f"data directory {p} does not exist (key 'data'); "
                                     f"{how_to_get(p)}")
        for lang in (cfg.source_lang, cfg.target_lang):
            if lang is not None and not os.path.isfile(os.path.join(paths[0], f"dict.{lang}.txt")):
                have = sorted(f for f in os.listdir(paths[0]) if f.startswith("dict."))
                raise HatConfigError(
                    f"{paths[0]}: dictionary dict.{lang}.txt not found (languages "
                    f"{cfg.source_lang}-{cfg.target_lang}); present: {have or 'none'}")
        return super().setup_task(cfg, **kwargs)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False,
                     **kwargs: Any) -> None:
        """Load a split, or say which splits exist."""
        paths = utils.split_paths(self.cfg.data)
        path = paths[(epoch - 1) % len(paths)]
        src, tgt = self.cfg.source_lang, self.cfg.target_lang
        names = [f"{split}.{src}-{tgt}.{src}.idx", f"{split}.{tgt}-{src}.{src}.idx"]
        if not any(os.path.exists(os.path.join(path, n)) for n in names):
            present = sorted({f.split(".")[0] for f in os.listdir(path) if f.endswith(".idx")})
            raise HatConfigError(f"{path}: split '{split}' ({src}-{tgt}) not found; splits "
                                 f"present: {present or 'none'}")
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)

    def get_batch_iterator(self, dataset: Any, **kwargs: Any) -> Any:
        """fairseq's iterator, with the batches of an uninterrupted run also after a resume.

        fairseq builds a reusable iterator's batches once, ordering equal-length sentences with
        a seed of the epoch it is first built for, and keeps them (reshuffling their order each
        epoch): an uninterrupted run trains every epoch on epoch 1's batches. A run resumed in
        a later epoch would build that epoch's instead; build epoch 1's, as it has.
        """
        epoch = kwargs.get("epoch", 1)
        reusable = (not kwargs.get("disable_iterator_cache", False)
                    and not kwargs.get("update_epoch_batch_itr", False)
                    and self.can_reuse_epoch_itr(dataset))
        if not reusable or epoch <= 1 or dataset in self.dataset_to_epoch_iter:
            return super().get_batch_iterator(dataset, **kwargs)
        itr = super().get_batch_iterator(dataset, **{**kwargs, "epoch": 1})
        itr.epoch = epoch  # where it continues (a resumed run then loads its position)
        dataset.set_epoch(epoch)
        return itr

    # ----- SuperTransformer hooks ---------------------------------------------------------
    @staticmethod
    def _samples_subnets(model: Any) -> bool:
        core = unwrap(model)
        return hasattr(core, "space") and not getattr(core.args, "train_subtransformer", False)

    def build_criterion(self, cfg: Any, from_checkpoint: bool = False) -> Any:
        """fairseq's criterion; with ``--distill-weight`` its in-place distillation form."""
        criterion = super().build_criterion(cfg, from_checkpoint)
        if self.cfg.distill_weight > 0:
            from fairseq.criterions.label_smoothed_cross_entropy import (
                LabelSmoothedCrossEntropyCriterion,
            )

            from hat.tasks.distillation import InplaceDistillation

            if type(criterion) is not LabelSmoothedCrossEntropyCriterion:
                raise HatConfigError("--distill-weight needs --criterion "
                                     "label_smoothed_cross_entropy")
            criterion = InplaceDistillation(criterion, self.cfg.distill_weight)
        return criterion

    def update_subnets(self, core: Any, update_num: int) -> list[SubConfig]:
        """The SubTransformers one update trains (the same on every rank and after a resume)."""
        seed = self.cfg.subnet_seed
        if self.cfg.subnet_sampling == "uniform":
            return [core.space.sample_for_update(update_num, seed)]
        randoms = [core.space.sample(random.Random(f"sandwich {update_num} {seed} {k}"))
                   for k in range(self.cfg.sandwich_random)]
        return [core.space.largest(), core.space.smallest(), *randoms]

    def train_step(self, sample: Any, model: Any, criterion: Any, optimizer: Any,
                   update_num: int, ignore_grad: bool = False) -> Any:
        """Activate this update's SubTransformer(s), run fairseq's step for each, then tell
        ``hat_adam`` what they used."""
        core = unwrap(model)
        if convergence.ACTIVE is not None:
            convergence.ACTIVE.update = update_num + 1
        if not self._samples_subnets(model):
            out = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
            if hasattr(core, "active_regions"):
                configs = [core.sample_config]
                if self._needs_regions(optimizer, configs):
                    self._hand_regions(optimizer, configs, core.active_regions())
            zero_fill_unused_grads(model)
            return out
        configs = self.update_subnets(core, update_num)
        regions: dict[Any, list] | None = {} if self._needs_regions(optimizer, configs) else None
        distill = hasattr(criterion, "teacher")
        total: Any = None
        for k, cfg in enumerate(configs):
            if cfg != core.sample_config:
                core.set_sample_config(cfg)
            self._log_subnet(update_num, cfg)
            if regions is not None:
                for param, boxes in core.active_regions().items():
                    regions.setdefault(param, []).extend(boxes)
            if distill:  # the update's first SubTransformer (the largest) teaches the others
                criterion.mode = "teach" if k == 0 else "learn"
            out = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
            total = out if total is None else _add_step_outputs(total, out)
        if distill:
            criterion.mode, criterion.teacher = None, None
        if regions is not None:
            self._hand_regions(optimizer, configs, regions)
        zero_fill_unused_grads(model)
        return total

    def _needs_regions(self, optimizer: Any, configs: list[SubConfig]) -> bool:
        """Whether ``hat_adam`` must be told the blocks ``configs`` use (not when the update
        trains the same SubTransformers as the last one, as in retraining)."""
        if getattr(self, "_regions_for", None) == (id(optimizer), tuple(configs)):
            return False
        return uses_slice_adam(optimizer)

    def _hand_regions(self, optimizer: Any, configs: list[SubConfig],
                      regions: dict[Any, list]) -> None:
        set_active_regions(optimizer, regions)
        self._regions_for = (id(optimizer), tuple(configs))

    def _log_subnet(self, update_num: int, cfg: SubConfig) -> None:
        if not self.cfg.subnet_log:
            return
        rank = int(os.environ.get("RANK", 0))
        with open(self.cfg.subnet_log, "a") as f:
            f.write(json.dumps({"update": update_num, "rank": rank, "hash": cfg.hash(),
                                "config": cfg.to_dict()}) + "\n")

    def valid_step(self, sample: Any, model: Any, criterion: Any) -> Any:
        """Validate the largest and the smallest SubTransformer (HAT)."""
        if not self._samples_subnets(model):
            return super().valid_step(sample, model, criterion)
        core = unwrap(model)
        previous = core.sample_config
        results = {}
        for name, cfg in (("largest", core.space.largest()), ("smallest", core.space.smallest())):
            core.set_sample_config(cfg)
            results[name] = super().valid_step(sample, model, criterion)
        core.set_sample_config(previous)
        (loss_l, size, log_l), (loss_s, _, log_s) = results["largest"], results["smallest"]
        log = dict(log_l)
        for key in ("loss", "nll_loss"):
            if key in log_l:
                log[f"{key}_largest"], log[f"{key}_smallest"] = log_l[key], log_s[key]
                log[key] = (log_l[key] + log_s[key]) / 2
        return (loss_l + loss_s) / 2, size, log

    def reduce_metrics(self, logging_outputs: list[dict], criterion: Any) -> None:
        """Also log the largest/smallest SubTransformer's validation loss (base 2)."""
        super().reduce_metrics(logging_outputs, criterion)
        if not logging_outputs or "loss_largest" not in logging_outputs[0]:
            return
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        for name in ("largest", "smallest"):
            loss = sum(float(log.get(f"loss_{name}", 0)) for log in logging_outputs)
            metrics.log_scalar(f"loss_{name}", loss / max(sample_size, 1) / math.log(2),
                               sample_size, round=3)
            if f"nll_loss_{name}" in logging_outputs[0]:
                nll = sum(float(log.get(f"nll_loss_{name}", 0)) for log in logging_outputs)
                metrics.log_scalar(f"nll_loss_{name}", nll / max(ntokens, 1) / math.log(2),
                                   ntokens, round=3)
