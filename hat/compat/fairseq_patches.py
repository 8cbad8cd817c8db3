"""The patches of fairseq's modules: :func:`patch_fairseq` (restricted checkpoint loading,
atomic saves, bf16 on GPUs, batched fp16 copies) and :func:`stop_when_converged` (early
stopping)."""

from __future__ import annotations

import sys
from typing import Any

from hat.compat.atomic_save import make_saves_atomic
from hat.compat.fp16_sync import batch_fp16_copies
from hat.compat.quiet import import_fairseq_quietly
from hat.compat.unpickle import restrict_torch_load


def _xla_available() -> bool:
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_bf16(args: Any) -> Any:
    """Stock fairseq turns ``--bf16`` into ``--tpu``; without torch_xla, mean bf16 on the GPU.

    The model then runs in bfloat16 with fp32 master weights (fairseq's FP16Optimizer without
    loss scaling).
    """
    if getattr(args, "bf16", False) and getattr(args, "tpu", False) and not _xla_available():
        args.tpu = False
    return args


def patch_fairseq() -> None:
    """Adapt fairseq to recent torch and to bf16 on GPUs (idempotent).

    - checkpoint_utils (and distributed.utils) load full checkpoints, HAT's fairseq-0.8 ones
      included, with :class:`~hat.compat.unpickle.RestrictedUnpickler`
      (:data:`~hat.compat.unpickle.restricted_pickle`);
    - checkpoint_utils saves checkpoints and copies them to checkpoint_last/best.pt atomically
      (:mod:`hat.compat.atomic_save`);
    - ``convert_namespace_to_omegaconf`` (every fairseq entry point goes through it after
      parsing) applies :func:`gpu_bf16`;
    - the fp16/bf16 wrapper copies gradients and parameters to and from its flat fp32 buffer
      in one batch each (:mod:`hat.compat.fp16_sync`);
    - (:func:`stop_when_converged`, called by the task when its option is on:
      ``fairseq_cli.train.should_stop_early`` also stops a converged training.)
    """
    import_fairseq_quietly()
    import fairseq.checkpoint_utils as cu
    import fairseq.dataclass.utils as du
    import fairseq.distributed.utils as dist_utils

    for module in (cu, dist_utils):
        restrict_torch_load(module)
    make_saves_atomic(cu)
    batch_fp16_copies()
    convert = du.convert_namespace_to_omegaconf
    if not getattr(convert, "_hat_bf16", False):
        def convert_with_gpu_bf16(args: Any) -> Any:
            return convert(gpu_bf16(args))

        convert_with_gpu_bf16._hat_bf16 = True  # type: ignore[attr-defined]
        du.convert_namespace_to_omegaconf = convert_with_gpu_bf16
        for name, module in list(sys.modules.items()):
            if name.startswith(("fairseq", "fairseq_cli")) and getattr(
                    module, "convert_namespace_to_omegaconf", None) is convert:
                module.convert_namespace_to_omegaconf = convert_with_gpu_bf16


def stop_when_converged() -> None:
    """Extend fairseq's early-stopping check with :mod:`hat.convergence` (idempotent; only
    where fairseq's training loop is running, so ``import hat`` stays free of it)."""
    ft = sys.modules.get("fairseq_cli.train")
    if ft is None:
        return

    original = ft.should_stop_early
    if getattr(original, "_hat_converged", False):
        return

    def should_stop_early(cfg: Any, valid_loss: Any) -> bool:
        from hat import convergence

        stop = original(cfg, valid_loss)
        tracker = convergence.ACTIVE
        if valid_loss is not None and tracker is not None:
            warmup = int(getattr(cfg.lr_scheduler, "warmup_updates", 0) or 0)
            if tracker.observe(cfg.checkpoint.save_dir, float(valid_loss), warmup) and not stop:
                import logging

                logging.getLogger("hat.train").info(
                    "converged: valid %s gained %.3f bits over the last %d%% of updates "
                    "(< %g); stopping", cfg.checkpoint.best_checkpoint_metric,
                    convergence.gain_over_window(tracker.history, tracker.window),
                    round(tracker.window * 100), tracker.bits)
                stop = True
        return stop

    should_stop_early._hat_converged = True  # type: ignore[attr-defined]
    ft.should_stop_early = should_stop_early
