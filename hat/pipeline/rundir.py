"""A pipeline run folder that can be resumed from any directory and moved.

The pipeline works with the folder's absolute path. Its stage records (``pipeline.json``) hold
paths inside the folder as ``$RUN/...``, so they stay right wherever the folder is; the files the
stages' CLIs read (their YAML configs, a search's state) hold absolute paths, so each command
runs from any directory, and :func:`relocate` rewrites them when the folder has moved.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from hat.atomic import atomic_write_text

RUN = "$RUN"
"""How a stage record writes the run folder."""

# the files under a run folder that name paths a later command reads
RELOCATED = ("configs/*.yml", "search/*.yml", "search/*.state.json", "commands.sh")


def portable(obj: Any, run: Path) -> Any:
    """``obj`` (a stage's outputs) with every path inside ``run`` written as ``$RUN/...``."""
    base = str(run)
    if isinstance(obj, dict):
        return {k: portable(v, run) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v, run) for v in obj]
    if isinstance(obj, str) and (obj == base or obj.startswith(base + os.sep)):
        return RUN + obj[len(base):]
    return obj


def local(obj: Any, run: Path) -> Any:
    """The inverse of :func:`portable` for the folder's place now."""
    if isinstance(obj, dict):
        return {k: local(v, run) for k, v in obj.items()}
    if isinstance(obj, list):
        return [local(v, run) for v in obj]
    if isinstance(obj, str) and (obj == RUN or obj.startswith(RUN + "/")):
        return str(run) + obj[len(RUN):]
    return obj


def relocate(run: Path, was: str) -> list[Path]:
    """Point the run folder's configs (and a search's state) from its old place ``was`` to
    ``run``; returns the files rewritten."""
    old = re.compile(re.escape(was) + r"(?=[/\s'\",]|$)", re.MULTILINE)
    changed = []
    for pattern in RELOCATED:
        for path in sorted(run.glob(pattern)):
            text = path.read_text()
            new = old.sub(lambda _: str(run), text)
            if new != text:
                atomic_write_text(path, new)
                changed.append(path)
    return changed
