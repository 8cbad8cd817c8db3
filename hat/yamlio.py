"""YAML config files, read and written in one place (HAT's configs, SubTransformer YAMLs, the
configs the pipeline writes): clear errors on reading, atomic writes with a comment header."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from hat.atomic import atomic_write_text
from hat.errors import HatConfigError


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Load a YAML mapping with clear errors for missing files and bad syntax."""
    path = Path(path)
    if not path.is_file():
        raise HatConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise HatConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HatConfigError(
            f"{path}: expected a mapping of keys to values, got {type(data).__name__}"
        )
    return data


def write_yaml(path: str | os.PathLike, keys: dict[str, Any], header: str | None = None,
               width: int = 80) -> Path:
    """Write a mapping as YAML atomically (keys in the given order, short lists inline), with
    ``header`` as ``#`` comment lines on top."""
    body = yaml.safe_dump(keys, sort_keys=False, default_flow_style=None, width=width)
    lines = "".join(f"# {ln}\n" for ln in header.splitlines()) if header else ""
    atomic_write_text(path, lines + body)
    return Path(path)
