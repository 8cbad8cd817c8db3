"""The one place where fairseq is adapted to recent torch.

With torch >= 2.6, ``torch.load`` defaults to ``weights_only=True``, which refuses the argparse
Namespace / omegaconf objects inside every fairseq checkpoint. Fairseq's checkpoint_utils is the
only caller we redirect: it gets a ``torch`` whose ``load`` passes ``weights_only=False``.
Only load checkpoints you trust (pickle can run code).
"""

from __future__ import annotations

import functools
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


def patch_fairseq() -> None:
    """Make fairseq's checkpoint loading work on torch >= 2.6 (idempotent)."""
    import fairseq.checkpoint_utils as cu

    if not isinstance(cu.torch, _TorchTrustedLoad):
        cu.torch = _TorchTrustedLoad()
