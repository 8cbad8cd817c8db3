"""Importing fairseq quietly: without its import-time logging side effects and the warnings a
user cannot act on."""

from __future__ import annotations

import sys
from typing import Any

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


def import_fairseq_quietly() -> None:
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
    for name in ("fairseq_cli.train", "fairseq_cli.preprocess"):
        logging.getLogger(name).addFilter(_drop_config_dump)


def _drop_config_dump(record: Any) -> bool:
    """fairseq_cli.train and .preprocess log their whole config (up to 10 kB on one line) first:
    a line nobody acts on; checkpoints and preprocess.log keep it."""
    return isinstance(record.msg, str)
