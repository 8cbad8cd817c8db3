"""YAML config files, read and written in one place (HAT's configs, SubTransformer YAMLs, the
configs the pipeline writes): clear errors on reading, atomic writes with a comment header."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hat.atomic import atomic_write_text
from hat.errors import HatConfigError


def load_yaml(path: str | os.PathLike,
              same_key: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Load a YAML mapping with clear errors for missing files, bytes that are not UTF-8, bad
    syntax and a key given twice in one mapping (naming both lines). ``same_key`` maps a key
    to what it means (``max_tokens`` and ``max-tokens`` are one option), so two spellings of
    one key are also refused."""
    path = Path(path)
    if not path.is_file():
        raise HatConfigError(f"{path}: config file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise HatConfigError(
            f"{path}: not UTF-8 text: byte 0x{raw[e.start]:02x} at byte offset {e.start} "
            f"(line {line}) cannot be decoded; save the file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_loader(same_key))  # noqa: S506 - a SafeLoader
    except _DuplicateKey as e:
        raise HatConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise HatConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HatConfigError(
            f"{path}: expected a mapping of keys to values, got {type(data).__name__}"
        )
    return data


class _DuplicateKey(Exception):
    """A key given twice in one YAML mapping (the message names both lines)."""


def _loader(same_key: Callable[[Any], Any] | None) -> type[yaml.SafeLoader]:
    """A SafeLoader that refuses a key given twice in one mapping (merge keys, ``<<``, may
    still be overridden: that is what they are for)."""

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: dict[Any, tuple[Any, str]] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    norm = same_key(key) if same_key else key
                    hash(norm)
                except TypeError:  # an unhashable key: SafeLoader says so
                    continue
                mark = key_node.start_mark
                line = f"line {mark.line + 1}"
                if norm in seen:
                    first, first_line = seen[norm]
                    if first_line == line:  # a flow mapping on one line: say where on it
                        line = f"{line} column {mark.column + 1}"
                    also = "" if first == key else f" (as '{first}')"
                    raise _DuplicateKey(
                        f"key '{key}' is given twice, on {first_line}{also} and {line}; keep "
                        "one (a key is set once per file: a later config file or the command "
                        "line may override it)")
                seen[norm] = (key, line)
            return super().construct_mapping(node, deep=deep)

    return Loader


def write_yaml(path: str | os.PathLike, keys: dict[str, Any], header: str | None = None,
               width: int = 80) -> Path:
    """Write a mapping as YAML atomically (keys in the given order, short lists inline), with
    ``header`` as ``#`` comment lines on top."""
    body = yaml.safe_dump(keys, sort_keys=False, default_flow_style=None, width=width)
    lines = "".join(f"# {ln}\n" for ln in header.splitlines()) if header else ""
    atomic_write_text(path, lines + body)
    return Path(path)
