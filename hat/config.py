"""fairseq's command lines: YAML configs (:mod:`hat.config_files`) in, fairseq args out.

:func:`parse_fairseq_args` reads ``--configs``, ``--sub-configs`` and ``--evo-configs`` (their
keys become options, the real command line last, so it overrides all of them) into fairseq's
parser. Keys fairseq does not know, a bad arch, a missing file or a value of the wrong type are
reported with the file and key (or as the command line's when it gave the value). The data path
is ``data:``, ``--data DIR`` or fairseq's positional ``DIR`` anywhere among the options.
``--help`` is HAT's short list (:func:`short_help`); ``--help-all`` adds fairseq's.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hat.config_files import (
    NO_DATA,
    Expanded,
    add_config_file_args,
    did_you_mean,
    expand,
    is_option,
    known_options,
    origin_error,
    print_help,
)
from hat.errors import HatConfigError

PROBABILITIES = ("dropout", "attention_dropout", "activation_dropout", "relu_dropout")


def _looks_like_data(tok: str, action: argparse.Action | None) -> bool:
    """A directory, which the option's values cannot be: the data path after a list option
    (``--latency-constraint 5 data-bin``)."""
    if not os.path.isdir(tok):
        return False
    if action is None or action.type is None or not callable(action.type):
        return True
    try:
        action.type(tok)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return True
    return False


def _positionals(rest: list[str], parser: argparse.ArgumentParser) -> list[int]:
    """Indices of the command line's positional arguments, read with the parser's options
    (how many values each takes). A list option's values end before a directory when no
    positional came before it: fairseq's data path may follow any option."""
    actions = dict(parser._option_string_actions)  # noqa: SLF001
    found: list[int] = []
    i, n = 0, len(rest)
    while i < n:
        tok = rest[i]
        i += 1
        if tok == "--":
            found += range(i, n)
            break
        if not is_option(tok):
            found.append(i - 1)
            continue
        if "=" in tok:
            continue
        act = actions.get(tok)
        nargs = act.nargs if act is not None else "*"
        if nargs == argparse.REMAINDER:
            break
        lo, hi = {None: (1, 1), "?": (0, 1), "*": (0, n), "+": (1, n)}.get(
            nargs, (nargs, nargs) if isinstance(nargs, int) else (0, n))
        k = 0
        while i < n and k < hi and not is_option(rest[i]):
            if k >= lo and lo != hi and not found and _looks_like_data(rest[i], act):
                break
            i += 1
            k += 1
    return found


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
        print_help(short_help(add_extra, training=training_help))
        raise SystemExit(0)
    if "--help-all" in argv:  # ours with the search-space keys, then fairseq's full list
        print_help(short_help(add_extra, training=training_help, space_keys=True))
        argv = [("--help" if a == "--help-all" else a) for a in argv]
    e = expand(argv)
    if "--help" not in argv:
        check_arch(e.tokens(), e.origin)

    def make_parser() -> argparse.ArgumentParser:
        parser = (parser_factory or options.get_training_parser)()
        add_config_file_args(parser)
        if add_extra is not None:
            add_extra(parser)
        return parser

    if any(not is_option(t) for t in e.rest):  # a data path among the options?
        _take_data_path(e, make_parser)
    origin = e.origin
    parser = make_parser()
    parser.error = _raise_with_origin(origin)  # type: ignore[method-assign]
    args, extra = options.parse_args_and_arch(parser, input_args=e.tokens(), parse_known=True)
    known = known_options(parser)
    for opt, path in origin.items():
        if opt not in known:
            raise HatConfigError(f"{path}: unknown key '{opt[2:]}'" + did_you_mean(opt, known))
    if extra:
        bad = next((t for t in extra if t.startswith("-")), extra[0])
        raise HatConfigError(f"command line: unknown option or value '{bad}'"
                             + did_you_mean(bad, known))
    check_probabilities(args, origin)
    for name, path in e.given.items():
        setattr(args, name, path)
    if origins is not None:
        origins.update(origin)
    return args


class _ParseFailed(Exception):
    pass


def _take_data_path(e: Expanded, make_parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Find the data path among the command line's options (fairseq's positional may come
    anywhere) and move it to ``e.cli_data``. The options' arities come from the whole parser,
    which fairseq builds while parsing (arch, task, optimizer), so this parses once first."""
    from fairseq import options

    parser = make_parser()

    def fail(message: str) -> None:
        raise _ParseFailed(message)

    parser.error = fail  # type: ignore[method-assign]
    trial = [e.cli_data or e.yaml_data or NO_DATA] + e.yaml_tokens + e.rest
    try:  # a failure (reported by the real parse) still leaves the options it had added
        options.parse_args_and_arch(parser, input_args=trial, parse_known=True)
    except (SystemExit, Exception):  # noqa: BLE001 - the real parse reports it
        pass
    else:
        if not any(a.dest == "data" for a in parser._positionals._group_actions):  # noqa: SLF001
            return  # this stage takes no data path
    found = _positionals(e.rest, parser)
    if not found:
        return
    i = found[0]
    if e.cli_data not in (None, NO_DATA):
        raise HatConfigError(f"command line: two data directories, '{e.cli_data}' and "
                             f"'{e.rest[i]}'; give one")
    e.cli_data = e.rest[i]
    e.rest = e.rest[:i] + e.rest[i + 1:]


def check_probabilities(args: argparse.Namespace, origin: dict[str, str]) -> None:
    """dropout, attention-dropout, activation-dropout: probabilities in [0, 1) (a SubTransformer
    scales them up, so a bad one would fail deep in torch with another number)."""
    for name in PROBABILITIES:
        v = getattr(args, name, None)
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not 0 <= v < 1:
            key = name.replace("_", "-")
            src = origin.get("--" + key, "command line")
            raise HatConfigError(f"{src}: {key} {v:g} is not a probability: allowed "
                                 f"0 <= {key} < 1")


def short_help(add_extra: Callable[[argparse.ArgumentParser], None] | None = None,
               training: bool = False, space_keys: bool = False) -> str:
    """``--help``: what the command does and an example (its script's docstring), then its own
    and HAT's options; fairseq's long list and the search-space keys stay behind --help-all.
    ``training``: also the SuperTransformer training options (task, optimizer, data, length,
    output); ``space_keys``: list the SuperTransformer and search-space keys too."""
    script = Path(sys.argv[0] if sys.argv and sys.argv[0] else "hat")
    prog = (f"python -m hat.{script.stem}" if script.parent.name == "hat" else script.name)
    main_doc = _script_doc(script)
    evo = " [--evo-configs=YAML]" if script.stem == "evo_search" else ""
    parser = argparse.ArgumentParser(
        prog=prog, add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"%(prog)s --configs=YAML [--sub-configs=YAML]{evo} [options]",
        description=(main_doc + "\n\n" if main_doc else "") +
        "Every option is also a key of the YAML files (the command line wins). fairseq's own\n"
        "options (training, data, distributed, ...) and the SuperTransformer / search-space\n"
        "keys (encoder-embed-choice, ...) are accepted too: --help-all lists them.")
    parser._optionals.title = f"{prog} options"  # noqa: SLF001 - argparse has no public API
    g = parser.add_argument_group("config files")
    for opt, text in (("--configs", "YAML config (HAT keys)"),
                      ("--sub-configs", "second YAML config, applied after --configs"),
                      ("--evo-configs", "search YAML config, applied after the others")):
        g.add_argument(opt, metavar="YAML", help=text)
    g.add_argument("--data", metavar="DIR", help="fairseq data-bin directory (the YAML key "
                   "data:; also accepted as a positional DIR anywhere on the command line)")
    g.add_argument("--help-all", action="store_true", help="also list fairseq's options and "
                   "the search-space keys")
    if add_extra is not None:
        add_extra(parser)
    if training:
        _training_help(parser.add_argument_group(
            "SuperTransformer training (docs/training.md)"))
    if space_keys:
        from hat.models.supertransformer import TransformerSuperModel

        TransformerSuperModel.add_args(parser.add_argument_group(
            "SuperTransformer and search space (HAT's keys; arch transformersuper*)"))
    return parser.format_help()


def _script_doc(script: Path) -> str:
    """The docstring of the running script (what it does, an example), read without running
    it; empty when it is not a Python file."""
    import ast

    try:
        return (ast.get_docstring(ast.parse(script.read_text())) or "").strip()
    except (OSError, SyntaxError, ValueError):
        return ""


def _training_help(group: Any) -> None:
    """The optimizer choice and the task's own options, as help lines."""
    from hat.tasks.translation import own_options

    for opt, meta, text in (
            ("--max-update", "N", "updates to train (the configs set HAT's)"),
            ("--save-dir", "DIR", "where checkpoints go (checkpoint_last.pt resumes a run)"),
            ("--restore-file", "PT", "a checkpoint to start from"),
            ("--max-tokens", "N", "tokens per batch"), ("--lr", "LR", "peak learning rate"),
            ("--fp16", None, "mixed precision on a GPU")):
        if meta:
            group.add_argument(opt, metavar=meta, help=text)
        else:
            group.add_argument(opt, action="store_true", help=text)
    group.add_argument("--optimizer", metavar="NAME",
                       help="hat_adam (the configs' default: weights the sampled SubTransformer "
                            "did not use stay put) or adam (HAT's), or any fairseq optimizer")
    for f in own_options():
        group.add_argument("--" + f.name.replace("_", "-"), metavar=f.name.split("_")[-1].upper(),
                           help=f"{f.metadata.get('help', '')} (default: {f.default!r})")


def _raise_with_origin(origin: dict[str, str]) -> Callable[[str], Any]:
    """fairseq's parser errors, named by file and key; a missing data path said plainly."""
    named = origin_error(origin)

    def error(message: str) -> None:
        if re.search(r"arguments are required: .*\bdata\b", message):
            raise HatConfigError("no data directory given: put 'data: DIR' in the YAML config, "
                                 "or pass --data DIR (or DIR) on the command line")
        named(message)

    return error
