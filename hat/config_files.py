"""YAML config files in, command-line tokens out: how every command line reads its configs.

HAT's YAML files use the long option names as keys (``max-tokens: 4096``; ``max_tokens`` is
the same key). ``--configs`` (and, for fairseq's command lines, ``--sub-configs`` and
``--evo-configs``) name such files; their keys become command-line options, in that order and
the real command line last, so it overrides all of them. ``KEY: true`` is the flag ``--KEY``,
a list the option's values, ``null`` or ``false`` nothing; ``--no-KEY`` on the command line
switches off a YAML's ``KEY: true``. A key given twice in one file is an error; a later file
or the command line overriding it is not.

:func:`parse_with_configs` parses a plain argparse parser this way (latency_predictor.py);
fairseq's command lines (the ``data:`` path, fairseq's parser) go through :mod:`hat.config`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hat.errors import HatConfigError
from hat.yamlio import load_yaml

CONFIG_OPTIONS = ("--configs", "--sub-configs", "--evo-configs")
CONFIG_FILE_KEYS = ("configs", "sub_configs", "evo_configs")
NO_DATA = "(no-data)"  # a stage that needs no data puts this first; a data path replaces it
_SHORT_OPTIONS = {"-a": "--arch", "-s": "--source-lang", "-t": "--target-lang"}  # fairseq's


def add_config_file_args(parser: argparse.ArgumentParser) -> None:
    """``--configs`` / ``--sub-configs`` / ``--evo-configs`` (YAML files with HAT's keys)."""
    parser.add_argument("--configs", metavar="YAML", help="YAML config (HAT keys)")
    parser.add_argument("--sub-configs", metavar="YAML",
                        help="second YAML config, applied after --configs")
    parser.add_argument("--evo-configs", metavar="YAML",
                        help="search YAML config (evo_search.py), applied after the others")


def yaml_to_tokens(path: str, data_key: str | None = "data",
                   ) -> tuple[list[str], list[str], dict[str, str]]:
    """A YAML config as (positional tokens, option tokens, {option: file}); ``data_key`` is
    the key whose value is a positional (fairseq's data path), None for none."""
    data = load_yaml(path, same_key=_option_name)
    positional: list[str] = []
    tokens: list[str] = []
    origin: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise HatConfigError(f"{path}: keys must be strings, got {key!r}")
        if key == data_key:
            positional.append(str(value))
            continue
        opt = "--" + key.replace("_", "-")
        origin[opt] = path
        if value is None or value is False:
            continue
        if value is True:
            tokens.append(opt)
        elif isinstance(value, (list, tuple)):
            tokens.append(opt)
            tokens.extend(str(v) for v in value)
        elif isinstance(value, dict):
            raise HatConfigError(f"{path}: key '{key}' holds a mapping; expected a value or a list")
        else:
            tokens.extend([opt, str(value)])
    return positional, tokens, origin


def _option_name(key: Any) -> Any:
    """The option a YAML key sets (``max_tokens`` and ``max-tokens`` are one)."""
    return key.replace("_", "-") if isinstance(key, str) else key


@dataclass
class Expanded:
    """A command line with its config files read: the YAML's data path and options, the
    command line's data path (``--data`` or a positional) and options, {option: YAML file}
    for the options the command line does not override, {'configs': path, ...}."""

    yaml_data: str | None
    yaml_tokens: list[str]
    cli_data: str | None
    rest: list[str]
    origin: dict[str, str]
    given: dict[str, str]

    def tokens(self) -> list[str]:
        """The data path first (the command line's wins), the YAMLs' options, then the
        command line's (so they win)."""
        data = self.cli_data or self.yaml_data
        return ([data] if data else []) + self.yaml_tokens + self.rest


def expand(argv: Sequence[str], options: Sequence[str] = CONFIG_OPTIONS,
           data: bool = True) -> Expanded:
    """Read the config files ``options`` name on ``argv``. ``data``: the YAML key ``data:``,
    ``--data DIR`` and a first positional are fairseq's data path."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for opt in options:
        pre.add_argument(opt)
    files, rest = pre.parse_known_args(list(argv))
    positional: list[str] = []
    tokens: list[str] = []
    origin: dict[str, str] = {}
    given = {}
    for opt in options:
        name = opt[2:].replace("-", "_")
        path = getattr(files, name)
        if path:
            given[name] = path
            pos, toks, org = yaml_to_tokens(path, data_key="data" if data else None)
            positional = pos or positional
            tokens += toks
            origin.update(org)
    tokens, rest = _switch_off(tokens, rest)
    cli_data = None
    if data:
        cli_data, rest = _pop_data_option(rest)
        if rest and not rest[0].startswith("-"):  # a data path first on the command line
            if cli_data is None:
                cli_data, rest = rest[0], rest[1:]
            elif rest[0] == NO_DATA:
                rest = rest[1:]
    given_here = {_SHORT_OPTIONS.get(o, o) for o in (t.split("=", 1)[0] for t in rest)}
    tokens = _drop_options(tokens, given_here & set(origin))  # the command line's win
    for opt in given_here:  # a value given on the command line did not come from a YAML
        origin.pop(opt, None)
    return Expanded(positional[-1] if positional else None, tokens, cli_data, rest, origin,
                    given)


def expand_config_files(argv: list[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Replace ``--configs``/``--sub-configs``/``--evo-configs`` by their keys (the command
    line's options follow them, so they win; ``--no-KEY`` switches off a YAML's ``KEY: true``;
    a data path, ``--data DIR`` or first on the command line, replaces the YAML's ``data:``).

    Returns (tokens, {option: file it came from, for options the command line does not
    override}, {'configs': path, ...}).
    """
    e = expand(argv)
    return e.tokens(), e.origin, e.given


def parse_with_configs(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
                       options: Sequence[str] = ("--configs",)) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) with a plain argparse ``parser`` whose long
    options are also the keys of the YAML files ``options`` name (the parser defines them too,
    for its help). The command line overrides the YAMLs, which override the defaults; an
    unknown key, a bad value or option is a :class:`HatConfigError` naming the file and key
    (or the command line). ``args.configs`` is the file read."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print_help(parser.format_help().rstrip("\n"))
        raise SystemExit(0)
    known = known_options(parser)
    for tok in argv:  # an abbreviation (--config) would reach the parser, the file unread
        pre = tok.split("=", 1)[0]
        hits = [o for o in known if o.startswith(pre)] if pre.startswith("--") else []
        if len(hits) == 1 and hits[0] in options and pre != hits[0]:
            raise HatConfigError(f"command line: write {hits[0]} in full, not {pre}")
    e = expand(argv, options, data=False)
    keys = known - {"--help", *options}
    for opt, path in e.origin.items():
        if opt not in keys:
            hint = did_you_mean(opt, keys) or (
                f" (known keys: {', '.join(sorted(k[2:] for k in keys if k[:2] == '--'))})")
            raise HatConfigError(f"{path}: unknown key '{opt[2:]}'{hint}")
    parser.error = origin_error(e.origin)  # type: ignore[method-assign]
    args, extra = parser.parse_known_args(e.tokens())
    if extra:
        bad = next((t for t in extra if t.startswith("-")), extra[0])
        raise HatConfigError(f"command line: unknown option or value '{bad}'"
                             + did_you_mean(bad, known))
    for opt in options:
        name = opt[2:].replace("-", "_")
        setattr(args, name, e.given.get(name))
    return args


def _pop_data_option(rest: list[str]) -> tuple[str | None, list[str]]:
    """``--data DIR`` / ``--data=DIR`` (the YAML key ``data:``) taken out of the command line."""
    found: list[str] = []
    out: list[str] = []
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("--data="):
            found.append(tok.split("=", 1)[1])
        elif tok == "--data":
            if i + 1 == len(rest) or (rest[i + 1].startswith("-") and len(rest[i + 1]) > 1):
                raise HatConfigError("command line: --data needs a value: the fairseq "
                                     "data-bin directory (--data DIR)")
            found.append(rest[i + 1])
            i += 1
        else:
            out.append(tok)
        i += 1
    if len(found) > 1:
        raise HatConfigError(f"command line: --data is given {len(found)} times "
                             f"({', '.join(found)}); give one data directory")
    if found and out and not out[0].startswith("-") and out[0] != NO_DATA:
        raise HatConfigError(f"command line: two data directories, '{found[0]}' (--data) and "
                             f"'{out[0]}' (positional); give one")
    return (found[0] if found else None), out


def _drop_options(tokens: list[str], drop: set[str]) -> list[str]:
    """``tokens`` without the options ``drop`` and their values (a bad value the command line
    replaces is not an error)."""
    out: list[str] = []
    skip = False
    for tok in tokens:
        if tok.startswith("--"):
            skip = tok in drop
        if not skip:
            out.append(tok)
    return out


def _switch_off(tokens: list[str], rest: list[str]) -> tuple[list[str], list[str]]:
    """``--no-KEY`` on the command line switches off a flag a YAML set (``KEY: true``)."""
    flags = {t for i, t in enumerate(tokens) if t.startswith("--")
             and (i + 1 == len(tokens) or tokens[i + 1].startswith("--"))}
    off = {"--" + t[5:] for t in rest if t.startswith("--no-") and "--" + t[5:] in flags}
    if not off:
        return tokens, rest
    return ([t for t in tokens if t not in off],
            [t for t in rest if not (t.startswith("--no-") and "--" + t[5:] in off)])


_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def is_option(tok: str) -> bool:
    """As argparse reads it: ``-x``/``--xx``, not ``-`` or a negative number."""
    return tok.startswith("-") and tok != "-" and not _NEGATIVE_NUMBER.match(tok)


def known_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string ``parser`` accepts (``-h``, ``--help``, ...)."""
    return set(parser._option_string_actions)  # noqa: SLF001 - argparse has no public API


def did_you_mean(opt: str, known: set[str]) -> str:
    """`` (did you mean a, b?)`` with the known options close to ``opt``; empty for none."""
    close = difflib.get_close_matches(opt, sorted(known), n=3, cutoff=0.75)
    return f" (did you mean {', '.join(c[2:] for c in close)}?)" if close else ""


def origin_error(origin: dict[str, str]) -> Callable[[str], Any]:
    """A parser's ``error``: its message as a :class:`HatConfigError` naming the YAML file and
    key that gave the value, or the command line."""
    def error(message: str) -> None:
        m = re.search(r"argument (--[\w-]+)", message)
        opt = m.group(1) if m else ""
        if opt in origin:
            raise HatConfigError(f"{origin[opt]}: key '{opt[2:]}': {message}")
        raise HatConfigError(f"command line: {message}")

    return error


def print_help(text: str) -> None:
    """Print help; a reader that stops early (``--help | head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd error at exit
        raise SystemExit(0) from None
