"""The one place where fairseq is adapted to recent torch.

- :mod:`hat.compat.unpickle`: restricted unpickling of checkpoints (:func:`load_checkpoint_file`,
  :class:`RestrictedUnpickler`, :func:`allowed_globals`, :data:`restricted_pickle`): a pickle
  that asks to run code is refused before any of it runs;
- :mod:`hat.compat.legacy`: fairseq 0.8's checkpoints (:class:`LegacyObject` stand-ins for its
  classes, :func:`clean_legacy_args` for its ``args``);
- :mod:`hat.compat.atomic_save`: fairseq's checkpoint saves and copies made atomic;
- :mod:`hat.compat.fp16_sync`: the fp16/bf16 wrapper's copies to and from its flat fp32
  buffer batched (one launch each way instead of one per parameter);
- :mod:`hat.compat.quiet`: fairseq imported without its logging side effects and warnings;
- :mod:`hat.compat.fairseq_patches`: :func:`patch_fairseq` (installs the above, and
  :func:`gpu_bf16`) and :func:`stop_when_converged`;
- :mod:`hat.compat.optimizer`: where fairseq's optimizer keeps each parameter
  (:func:`optimizer_param_layout`, :func:`inner_optimizer`).
"""

from hat.compat.fairseq_patches import gpu_bf16, patch_fairseq, stop_when_converged
from hat.compat.legacy import LEGACY_ARG_VALUES, LegacyObject, clean_legacy_args
from hat.compat.optimizer import inner_optimizer, optimizer_param_layout
from hat.compat.unpickle import (
    RestrictedUnpickler,
    allowed_globals,
    load_checkpoint_file,
    restricted_pickle,
)

__all__ = [
    "LEGACY_ARG_VALUES",
    "LegacyObject",
    "RestrictedUnpickler",
    "allowed_globals",
    "clean_legacy_args",
    "gpu_bf16",
    "inner_optimizer",
    "load_checkpoint_file",
    "optimizer_param_layout",
    "patch_fairseq",
    "restricted_pickle",
    "stop_when_converged",
]
