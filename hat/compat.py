"""The one place where fairseq is adapted to recent torch.

With torch >= 2.6, ``torch.load`` defaults to ``weights_only=True``, which refuses the argparse
Namespace / omegaconf objects inside every fairseq checkpoint. Fairseq loads checkpoints in
``checkpoint_utils`` and, in distributed training, unpickles the checkpoint that rank 0 broadcasts
in ``distributed.utils``; exactly these two modules get a ``torch`` whose ``load`` passes
``weights_only=False``. Only load checkpoints you trust (pickle can run code).
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

import torch


class _TorchTrustedLoad(types.ModuleType):
    """Proxy of the torch module whose ``load`` unpickles full checkpoints."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    @functools.wraps(torch.load)
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


def trusted_load(path: Any, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a full (pickled) fairseq/HAT checkpoint."""
    return torch.load(path, map_location=map_location, weights_only=False)


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


# Warnings a user cannot act on (fairseq's own use of Hydra, torch APIs fairseq still calls).
_NOISE = (
    r"(?s).*is validated against ConfigStore schema with the same name",
    r"(?s).*is no longer experimental",
    r"(?s).*version_base parameter is not specified",
    r"(?s).*deprecated keyword in package header",
    r"(?s).*strict flag in the compose API is deprecated",
    r"(?s).*torch\.cuda\.amp\.autocast.*is deprecated",
    r"(?s).*'pin_memory' argument is set as true but no accelerator is found",
)


def _import_fairseq_quietly() -> None:
    """Import fairseq without its import-time logging side effects: its speech modules call
    ``logging.basicConfig`` (one at DEBUG level, which turns on every library's debug lines)
    and log a tensorboardX notice. The root logger is left as it was, so a CLI's own
    ``basicConfig`` (fairseq_cli.train's included) still takes effect."""
    import logging
    import warnings

    if "fairseq" in sys.modules:
        return
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    speech = logging.getLogger("fairseq.tasks.text_to_speech")
    speech.setLevel(logging.WARNING)  # "Please install tensorboardX"
    import fairseq  # noqa: F401

    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    speech.setLevel(logging.NOTSET)


def patch_fairseq() -> None:
    """Adapt fairseq to recent torch and to bf16 on GPUs (idempotent).

    - checkpoint_utils loads full checkpoints (``weights_only=False``);
    - ``convert_namespace_to_omegaconf`` (every fairseq entry point goes through it after
      parsing) applies :func:`gpu_bf16`.
    """
    _import_fairseq_quietly()
    import fairseq.checkpoint_utils as cu
    import fairseq.dataclass.utils as du
    import fairseq.distributed.utils as dist_utils

    for module in (cu, dist_utils):
        if not isinstance(module.torch, _TorchTrustedLoad):
            module.torch = _TorchTrustedLoad()
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
