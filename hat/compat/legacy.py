"""Checkpoints written by HAT's fairseq 0.8, read by fairseq 0.12.

They pickle objects of modules that fairseq 0.12 no longer has (``extra_state['train_meters']``
holds ``fairseq.meters.AverageMeter``s): every fairseq class a checkpoint names is unpickled as a
plain stand-in (:class:`LegacyObject`), never as the real class (nothing of fairseq is imported or
called on a pickle's behalf). Their ``args`` values that fairseq 0.12's config rejects are
replaced by their 0.12 meaning (:func:`clean_legacy_args`).
"""

from __future__ import annotations

import argparse
from typing import Any


class LegacyObject:
    """Stand-in for an object of a fairseq class that a checkpoint pickled (e.g. fairseq 0.8's
    ``fairseq.meters.AverageMeter``): it keeps the pickled attributes (or the arguments it was
    called with), runs nothing of the real class and pickles again as a plain dict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            self.__dict__["args"] = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (dict(self.__dict__),)

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} (fairseq 0.8) {self.__dict__}>"


_LEGACY_CLASSES: dict[tuple[str, str], type] = {}


def legacy_class(module: str, name: str) -> type:
    """The stand-in class (a :class:`LegacyObject` subclass) for fairseq's ``module.name``."""
    key = (module, name)
    if key not in _LEGACY_CLASSES:
        _LEGACY_CLASSES[key] = type(name.rpartition(".")[2] or "LegacyObject", (LegacyObject,),
                                    {"__module__": module, "__qualname__": name})
    return _LEGACY_CLASSES[key]


# fairseq-0.8 argument values that fairseq 0.12's config rejects: key -> {old value: new value}
LEGACY_ARG_VALUES: dict[str, dict[Any, Any]] = {
    "print_alignment": {False: None, True: "hard"},  # 0.8 a flag, 0.12 a choice (hard / soft)
}


def clean_legacy_args(state: Any) -> Any:
    """A loaded checkpoint with the values of its fairseq-0.8 ``args`` (HAT's own train.py
    saved them) that fairseq 0.12 cannot read replaced by their 0.12 meaning, so that every
    path (fairseq's loads, ``train.py --restore-file``, export, BLEU) reads it alike."""
    args = state.get("args") if isinstance(state, dict) else None
    if isinstance(args, argparse.Namespace):
        for key, values in LEGACY_ARG_VALUES.items():
            value = getattr(args, key, None)
            if isinstance(value, bool) and value in values:
                setattr(args, key, values[value])
    return state
