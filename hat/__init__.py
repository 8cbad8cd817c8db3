"""HAT: Hardware-Aware Transformers as a fairseq plugin.

Importing ``hat`` registers the ``transformersuper`` and ``hat_subtransformer`` models (and the
task) with fairseq, so ``fairseq-train --user-dir <path to hat>`` works as well as our scripts.
A command that needs no torch (``download_model.py --help``) sets ``HAT_LAZY = True`` in its
``__main__`` module before importing ``hat`` and calls :func:`register` where it needs fairseq.
"""

import sys

__all__ = ["SearchSpace", "SubConfig", "register"]
__version__ = "0.1.0"
_registered = False


def register() -> None:
    """Patch fairseq (hat.compat) and register HAT's models, optimizer and task (idempotent)."""
    global _registered
    if _registered:
        return
    from hat.compat import patch_fairseq

    patch_fairseq()
    from hat import models, optim, tasks  # noqa: F401  (registers models, hat_adam, task)

    _registered = True


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: the public classes without import cost
    if name in ("SearchSpace", "SubConfig"):
        from hat import space

        return getattr(space, name)
    raise AttributeError(f"module 'hat' has no attribute {name!r}")


if not getattr(sys.modules.get("__main__"), "HAT_LAZY", False):
    register()
