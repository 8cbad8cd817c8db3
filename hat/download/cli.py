"""Command lines of :mod:`hat.download`: ``download_model.py`` (HAT's) and
``python -m hat.download data`` (what ``configs/<task>/get_preprocessed.sh`` runs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import hat.download as dl
from hat.cli import run_cli
from hat.download import catalog
from hat.errors import HatConfigError


# ----------------------------------------------------------------------------- command lines
def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mirror", metavar="DIR",
                   help="copy from this local folder instead of downloading (offline)")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 of the file")
    p.add_argument("--force", action="store_true",
                   help="fetch again even when a valid copy is present")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="network timeout in seconds (default 60)")


def model_parser(prog: str = "download_model.py") -> argparse.ArgumentParser:
    """download_model.py's options: HAT's (--model-name, --save-path, --download-all) and ours."""
    p = argparse.ArgumentParser(prog=prog, description="Download HAT's released models "
                                "(<save-path>/<name>.pt).", epilog="example: python "
                                f"download_model.py --model-name={dl.DEFAULT_MODEL}\nExit "
                                "status 1 when a download failed, 2 for bad input.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-name", default=dl.DEFAULT_MODEL,
                   help=f"model to download (default, as in HAT: {dl.DEFAULT_MODEL})")
    p.add_argument("--save-path", default=dl.DEFAULT_SAVE_PATH,
                   help=f"folder for <name>.pt (default {dl.DEFAULT_SAVE_PATH})")
    p.add_argument("--download-all", action="store_true",
                   help=f"all {len(catalog.HAT_MODELS)} models")
    p.add_argument("--list", action="store_true", help="print the model names and exit")
    _common_options(p)
    return p


def data_parser(prog: str = "python -m hat.download data") -> argparse.ArgumentParser:
    """get_preprocessed.sh's options."""
    p = argparse.ArgumentParser(prog=prog, description="Download and extract HAT's binarized "
                                "data of a task into data/<task>/data-bin.",
                                epilog="Exit status 1 when the download or a check failed, 2 for "
                                "bad input.")
    p.add_argument("--task", required=True, choices=sorted(dl.HAT_DATA))
    p.add_argument("--out", metavar="DIR", help="data-bin folder (default data/<task>/data-bin)")
    p.add_argument("--delete-archive", action="store_true",
                   help="delete the downloaded tgz after extracting it")
    _common_options(p)
    return p


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def models_main(argv: Sequence[str] | None = None, prog: str = "download_model.py") -> int:
    """Entry point of download_model.py."""
    args = model_parser(prog).parse_args(argv)
    if args.list:
        print("\n".join(catalog.HAT_MODELS))
        return 0

    def body() -> int:
        if args.download_all and args.sha256:
            raise HatConfigError("--sha256 checks one file: use it with --model-name, or put "
                                 "<name>.pt.sha256 files beside the models in the --mirror folder")
        if args.sha256:
            dl.check_sha256(args.sha256)
        if args.mirror and not Path(args.mirror).is_dir():
            raise HatConfigError(f"--mirror {args.mirror}: folder not found")
        names = (list(catalog.HAT_MODELS) if args.download_all
                 else [dl.check_model_name(args.model_name)])
        from hat.atomic import check_writable

        check_writable(Path(args.save_path) / f"{names[0]}.pt", "--save-path")  # before fetching
        import hat

        hat.register()  # fairseq with HAT's architectures: the downloads' checks read checkpoints
        failed = []
        for name in names:
            try:
                dl.download_model(name, args.save_path, args.mirror, args.sha256, args.force,
                                  args.timeout, log=lambda m: print(m, flush=True))
            except HatConfigError as e:  # this model failed (exit status 1); the others go on
                _err(str(e))
                failed.append(name)
        if len(names) > 1:
            print(f"| {len(names) - len(failed)} of {len(names)} models in {args.save_path}"
                  + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
        return 1 if failed else 0

    return run_cli(body)


def data_main(argv: Sequence[str] | None = None, prog: str = "python -m hat.download data"
              ) -> int:
    """Entry point of configs/<task>/get_preprocessed.sh."""
    args = data_parser(prog).parse_args(argv)

    def body() -> int:
        if args.sha256:
            dl.check_sha256(args.sha256)
        if args.mirror and not Path(args.mirror).is_dir():
            raise HatConfigError(f"--mirror {args.mirror}: folder not found")
        try:
            dl.fetch_data(args.task, args.out, args.mirror, args.sha256, args.force,
                          args.timeout, keep_archive=not args.delete_archive,
                          log=lambda m: print(m, flush=True))
        except dl.DownloadError as e:  # the network or the mirror failed: exit status 1
            _err(str(e))
            return 1
        return 0

    return run_cli(body)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hat.download {model,data} ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["model"]:
        return models_main(argv[1:], prog="python -m hat.download model")
    if argv[:1] == ["data"]:
        return data_main(argv[1:])
    print("usage: python -m hat.download model [download_model.py options]\n"
          "       python -m hat.download data --task TASK [options]", file=sys.stderr)
    return 2
