"""Data preparation: the resumable step pipeline that runs a task's recipe, and its command line.

Each task follows the shell recipe HAT ships (itself derived from fairseq's
``examples/translation/prepare-*.sh``), with the Perl tools replaced by Python packages:
Moses punctuation normalization / non-printing-character removal / tokenization via
``sacremoses``, ``clean-corpus-n`` re-implemented here, BPE via ``subword-nmt``, and
binarization via fairseq's preprocess.

Output layout under ``out`` (by default ``data/<task>``)::

    orig/         downloaded archives and their extracted contents (unless --raw-dir is given)
    tmp/          intermediate text (tokenized, split, BPE-applied)
    tokenized/    final BPE text {train,valid,test}.{src,tgt}, the BPE ``code``, and
                  test.detok.{src,tgt}: the test set's original text (reference for sacrebleu)
    data-bin/     fairseq binarized data
    .steps/       one marker per finished step; a re-run skips finished steps

Every file is written to a temporary name and renamed when complete, so an interrupted run
can be resumed by running the same command again.

``--raw-dir DIR`` skips the download: DIR must hold the archives' contents extracted in place
(the same layout as ``orig/``); :func:`expected_files` lists the files per task. Files may
also be present gzip-compressed with an extra ``.gz`` suffix.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from hat.cli import run_cli
from hat.corpora import TASKS, task_recipe
from hat.data.fetch import fetch_raw
from hat.data.recipes import DataPrepError, TaskRecipe, expected_files
from hat.data.text import (
    check_raw_files,
)
from hat.data.wmt import WmtPipeline

logger = logging.getLogger(__name__)


def prepare(task: str, out: Path, raw_dir: Path | None = None, workers: int = 1,
            bpe_tokens: int | None = None, recipe: TaskRecipe | None = None) -> Path:
    """Prepare ``task`` end to end into ``out``; return the fairseq data-bin directory.

    Without ``raw_dir`` the corpora are downloaded into ``out/orig``. ``recipe`` overrides the
    registered recipe of ``task`` (e.g. a ``dataclasses.replace``-d one).
    """
    recipe = recipe or task_recipe(task)
    if bpe_tokens is not None:
        if bpe_tokens < 1:
            raise DataPrepError(f"--bpe-tokens must be a positive number of merges, got "
                                f"{bpe_tokens}")
        recipe = replace(recipe, bpe_tokens=bpe_tokens)
    if workers < 1:
        raise DataPrepError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    if recipe.catalogs:
        from hat.data.debian import prepare_debian

        return prepare_debian(recipe, out, catalog_dir=raw_dir, workers=workers)
    if raw_dir is None:
        raw_dir = out / "orig"
        fetch_raw(recipe, raw_dir)
    else:
        raw_dir = Path(raw_dir)
        if not raw_dir.is_dir():
            raise DataPrepError(f"task {recipe.name}: --raw-dir {raw_dir} is not a directory")
    check_raw_files(recipe, raw_dir)
    logger.info("preparing %s from %s into %s (BPE %d merges)", recipe.name, raw_dir, out,
                recipe.bpe_tokens)
    data_bin = WmtPipeline(recipe, out, raw_dir, workers).run()
    logger.info("%s ready: %s", recipe.name, data_bin)
    return data_bin


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``scripts/prepare_data.py``."""
    p = argparse.ArgumentParser(
        description="Download and preprocess a HAT translation task into a fairseq data-bin.")
    known = sorted(n for n, t in TASKS.items() if t.recipe)
    p.add_argument("--task", required=True, help=f"one of: {', '.join(known)}")
    p.add_argument("--out", type=Path, help="output directory (default: data/<task>)")
    p.add_argument("--raw-dir", type=Path,
                   help="directory with the already extracted raw files; skips the download")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    p.add_argument("--bpe-tokens", type=int, help="number of BPE merges (default: per task)")
    p.add_argument("--list-files", action="store_true",
                   help="print the raw files the task expects in --raw-dir and exit")
    p.add_argument("--quiet", action="store_true", help="only log warnings and errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")

    def body() -> None:
        recipe = task_recipe(args.task)
        if args.list_files and recipe.catalogs:
            from hat.data.debian import DEBIAN_PACKAGES, HELD_OUT_PACKAGES, VALID_UNSEEN_PACKAGES

            for name in DEBIAN_PACKAGES:
                held = ("test_unseen" if name in HELD_OUT_PACKAGES else
                        "valid_unseen" if name in VALID_UNSEEN_PACKAGES else "")
                print(name + (f"\t(held out: {held})" if held else ""))
        elif args.list_files:
            for rel, archive in expected_files(recipe):
                print(f"{rel}\t(from {archive})")
        else:
            prepare(args.task, args.out or Path("data") / args.task, raw_dir=args.raw_dir,
                    workers=args.workers, bpe_tokens=args.bpe_tokens)

    return run_cli(body)
