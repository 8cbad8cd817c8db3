"""YAML configs in, fairseq args out: the one place where command lines are parsed.

HAT's YAML files use fairseq's option names as keys (``max-tokens: 4096``). ``--configs``,
``--sub-configs`` and ``--evo-configs`` name such files; their keys become command-line options
(in that order, the real command line last, so it overrides all of them). Keys fairseq does
not know, a bad arch, a missing file or a value of the wrong type are reported with the file
and key.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hat.errors import HatConfigError
from hat.yamlio import load_yaml

CONFIG_OPTIONS = ("--configs", "--sub-configs", "--evo-configs")
CONFIG_FILE_KEYS = ("configs", "sub_configs", "evo_configs")


def add_config_file_args(parser: argparse.ArgumentParser) -> None:
    """``--configs`` / ``--sub-configs`` (YAML files with HAT's keys)."""
    parser.add_argument("--configs", metavar="YAML", help="YAML config (HAT keys)")
    parser.add_argument("--sub-configs", metavar="YAML",
                        help="second YAML config, applied after --configs")
    parser.add_argument("--evo-configs", metavar="YAML",
                        help="search YAML config (evo_search.py), applied after the others")


def yaml_to_tokens(path: str) -> tuple[list[str], list[str], dict[str, str]]:
    """A YAML config as (positional tokens, option tokens, {option: file})."""
    data = load_yaml(path)
    positional: list[str] = []
    tokens: list[str] = []
    origin: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise HatConfigError(f"{path}: keys must be strings, got {key!r}")
        if key == "data":
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


def expand_config_files(argv: list[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Replace ``--configs``/``--sub-configs``/``--evo-configs`` by their keys (the command
    line's options follow them, so they win; ``--no-KEY`` switches off a YAML's ``KEY: true``).

    Returns (tokens, {option: file it came from}, {'configs': path, ...}).
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_config_file_args(pre)
    files, rest = pre.parse_known_args(argv)
    positional: list[str] = []
    tokens: list[str] = []
    origin: dict[str, str] = {}
    given = {}
    for name in CONFIG_FILE_KEYS:
        path = getattr(files, name)
        if path:
            given[name] = path
            pos, toks, org = yaml_to_tokens(path)
            positional = pos or positional
            tokens += toks
            origin.update(org)
    tokens, rest = _switch_off(tokens, rest)
    if rest and not rest[0].startswith("-"):  # data given on the command line wins
        return rest[:1] + tokens + rest[1:], origin, given
    return positional[-1:] + tokens + rest, origin, given


def _switch_off(tokens: list[str], rest: list[str]) -> tuple[list[str], list[str]]:
    """``--no-KEY`` on the command line switches off a flag a YAML set (``KEY: true``)."""
    flags = {t for i, t in enumerate(tokens) if t.startswith("--")
             and (i + 1 == len(tokens) or tokens[i + 1].startswith("--"))}
    off = {"--" + t[5:] for t in rest if t.startswith("--no-") and "--" + t[5:] in flags}
    if not off:
        return tokens, rest
    return ([t for t in tokens if t not in off],
            [t for t in rest if not (t.startswith("--no-") and "--" + t[5:] in off)])


def _known_options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)  # noqa: SLF001 - argparse has no public API


def check_arch(tokens: list[str], origin: dict[str, str]) -> None:
    """Reject a missing or unknown ``--arch`` before fairseq does so from deep inside argparse."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    if not any(t == "--arch" or t.startswith("--arch=") or t == "-a" for t in tokens):
        raise HatConfigError(
            "no model architecture given: pass a config with --configs (for example "
            "--configs=configs/wmt14.en-de/supertransformer/space0.yml for a SuperTransformer, or "
            "--configs=<SubTransformer>.yml --sub-configs=configs/<task>/subtransformer/common.yml "
            "for a SubTransformer), or --arch on the command line")
    for i, tok in enumerate(tokens):
        if tok.startswith("--arch"):
            value = tok.split("=", 1)[1] if "=" in tok else (tokens[i + 1] if i + 1 < len(tokens)
                                                              else "")
            if value not in ARCH_MODEL_REGISTRY:
                ours = sorted(a for a in ARCH_MODEL_REGISTRY if "transformersuper" in a
                              or a.startswith("hat_"))
                src = origin.get("--arch", "command line")
                raise HatConfigError(
                    f"{src}: arch '{value}' is not a registered architecture; HAT's are "
                    f"{', '.join(ours)} (any fairseq arch is also accepted)")


def parse_fairseq_args(
    argv: list[str] | None = None,
    parser_factory: Callable[[], argparse.ArgumentParser] | None = None,
    add_extra: Callable[[argparse.ArgumentParser], None] | None = None,
    origins: dict[str, str] | None = None,
    training_help: bool = False,
) -> argparse.Namespace:
    """Parse a command line with YAML configs into fairseq args, with clear errors.

    ``parser_factory`` defaults to fairseq's training parser; ``add_extra`` registers
    script-level options (e.g. ``--profile``); ``origins``, when given, is filled with
    {option: YAML file it came from}; ``training_help``: ``--help`` also lists the
    SuperTransformer training options (train.py).
    """
    from fairseq import options

    import hat  # noqa: F401  (registers models and task)

    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(short_help(add_extra, training=training_help))
        raise SystemExit(0)
    if "--help-all" in argv:  # fairseq's full option list
        argv = [("--help" if a == "--help-all" else a) for a in argv]
    tokens, origin, given = expand_config_files(argv)
    if "--help" not in argv:
        check_arch(tokens, origin)
    parser = (parser_factory or options.get_training_parser)()
    add_config_file_args(parser)
    if add_extra is not None:
        add_extra(parser)
    parser.error = _raise_with_origin(origin)  # type: ignore[method-assign]
    args, extra = options.parse_args_and_arch(parser, input_args=tokens, parse_known=True)
    known = _known_options(parser)
    for opt, path in origin.items():
        if opt not in known:
            raise HatConfigError(f"{path}: unknown key '{opt[2:]}'" + _did_you_mean(opt, known))
    if extra:
        bad = next((t for t in extra if t.startswith("-")), extra[0])
        raise HatConfigError(f"command line: unknown option or value '{bad}'"
                             + _did_you_mean(bad, known))
    for name, path in given.items():
        setattr(args, name, path)
    if origins is not None:
        origins.update(origin)
    return args


def short_help(add_extra: Callable[[argparse.ArgumentParser], None] | None = None,
               training: bool = False) -> str:
    """``--help``: this script's and HAT's options; fairseq's long list stays behind --help-all.
    ``training``: also the SuperTransformer training options (task and optimizer)."""
    from hat.models.supertransformer import TransformerSuperModel

    script = Path(sys.argv[0] if sys.argv and sys.argv[0] else "hat")
    prog = (f"python -m hat.{script.stem}" if script.parent.name == "hat" else script.name)
    parser = argparse.ArgumentParser(
        prog=prog, add_help=False, usage="%(prog)s --configs=YAML [--sub-configs=YAML] [options]",
        description="Options of this command (keys of --configs/--sub-configs/--evo-configs YAML "
                    "files or command-line options; the command line wins). fairseq's own "
                    "options (training, data, distributed, ...) are accepted too: --help-all lists "
                    "them.")
    parser._optionals.title = f"{prog} options"  # noqa: SLF001 - argparse has no public API
    g = parser.add_argument_group("config files")
    for opt, text in (("--configs", "YAML config (HAT keys)"),
                      ("--sub-configs", "second YAML config, applied after --configs"),
                      ("--evo-configs", "search YAML config, applied after the others")):
        g.add_argument(opt, metavar="YAML", help=text)
    g.add_argument("--help-all", action="store_true", help="also list fairseq's options")
    if add_extra is not None:
        add_extra(parser)
    if training:
        _training_help(parser.add_argument_group(
            "SuperTransformer training (docs/training.md)"))
    TransformerSuperModel.add_args(parser.add_argument_group(
        "SuperTransformer and search space (HAT's keys; arch transformersuper*)"))
    return parser.format_help()


def _training_help(group: Any) -> None:
    """The optimizer choice and the task's own options, as help lines."""
    from hat.tasks.translation import own_options

    group.add_argument("--optimizer", metavar="NAME",
                       help="hat_adam (the configs' default: weights the sampled SubTransformer "
                            "did not use stay put) or adam (HAT's), or any fairseq optimizer")
    for f in own_options():
        group.add_argument("--" + f.name.replace("_", "-"), metavar=f.name.split("_")[-1].upper(),
                           help=f"{f.metadata.get('help', '')} (default: {f.default!r})")


def _did_you_mean(opt: str, known: set[str]) -> str:
    close = difflib.get_close_matches(opt, sorted(known), n=3, cutoff=0.75)
    return f" (did you mean {', '.join(c[2:] for c in close)}?)" if close else ""


def _raise_with_origin(origin: dict[str, str]) -> Callable[[str], Any]:
    def error(message: str) -> None:
        m = re.search(r"argument (--[\w-]+)", message)
        where = origin.get(m.group(1)) if m else None
        prefix = f"{where}: key '{m.group(1)[2:]}': " if where and m else ""
        raise HatConfigError(prefix + message)

    return error
