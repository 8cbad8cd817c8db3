"""In-place distillation for sandwich updates (``--distill-weight W``).

In an update that trains the largest SubTransformer first (``--subnet-sampling sandwich``), the
largest's output distribution on the batch, detached, becomes the target of the other
SubTransformers of the update: their loss is ``(1 - W) x`` label-smoothed cross-entropy ``+ W x``
cross-entropy against the largest's distribution, over the same target tokens (nats, summed, as
fairseq's criterion). The largest itself keeps the plain loss; validation is unchanged.
"""

from __future__ import annotations

from typing import Any

from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
)


class InplaceDistillation(LabelSmoothedCrossEntropyCriterion):
    """fairseq's label-smoothed cross-entropy, plus the largest SubTransformer as teacher."""

    def __init__(self, base: LabelSmoothedCrossEntropyCriterion, weight: float) -> None:
        super().__init__(base.task, base.sentence_avg, base.eps, base.ignore_prefix_size,
                         base.report_accuracy)
        self.weight = weight
        self.mode: str | None = None  # "teach" (record the teacher), "learn" (use it), None
        self.teacher: Any = None

    def forward(self, model: Any, sample: Any, reduce: bool = True) -> Any:
        net_output = model(**sample["net_input"])
        loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        log = {"loss": loss.data, "nll_loss": nll_loss.data, "ntokens": sample["ntokens"],
               "nsentences": sample["target"].size(0), "sample_size": sample_size}
        if self.mode is not None and model.training:
            lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
            if self.mode == "teach":
                self.teacher = lprobs.detach().exp()
            elif self.teacher is not None:
                keep = target.ne(self.padding_idx)
                soft = -(self.teacher * lprobs).sum(-1).masked_fill(~keep, 0.0)
                soft = soft.sum() if reduce else soft
                loss = (1 - self.weight) * loss + self.weight * soft
                log["loss"] = loss.data
        return loss, sample_size, log
