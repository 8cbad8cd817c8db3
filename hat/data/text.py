"""Text steps of the recipes: reading the raw formats (plain, TSV, SGML, IWSLT tags), the Moses
steps, cleaning and BPE over many lines (in worker processes), atomic text outputs and
fairseq binarization."""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from multiprocessing import Pool
from pathlib import Path
from typing import TextIO

from hat.atomic import atomic_text_files
from hat.data.fetch import resolve_raw
from hat.data.recipes import Corpus, DataPrepError, TaskRecipe, expected_files

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Raw formats
# --------------------------------------------------------------------------------------------


def open_text(path: Path) -> TextIO:
    """Open UTF-8 text (gzip when the name ends in .gz); lines end only at ``\\n``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="\n")
    return open(path, encoding="utf-8", errors="replace", newline="\n")


def read_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a (possibly gzipped) text file without the line break."""
    with open_text(path) as f:
        for line in f:
            yield line.rstrip("\n")


def read_tsv_column(path: Path, column: int) -> Iterator[str]:
    """Yield field ``column`` of each tab-separated line ('' when the line has fewer fields)."""
    for line in read_lines(path):
        fields = line.split("\t")
        yield fields[column] if column < len(fields) else ""


_SEG_OPEN = re.compile(r"<seg[^>]*>\s*")
_SEG_CLOSE = re.compile(r"\s*</seg>\s*")
_SPACES = re.compile(r"\s+")


def strip_seg(line: str) -> str:
    """Remove the ``<seg ...>`` / ``</seg>`` tags and the whitespace next to them."""
    return _SEG_CLOSE.sub("", _SEG_OPEN.sub("", line))


def read_sgm(path: Path) -> Iterator[str]:
    """Yield the segments of a WMT ``.sgm`` or IWSLT ``.xml`` file (the ``<seg id`` lines)."""
    for line in read_lines(path):
        if "<seg id" in line:
            yield strip_seg(line)


# IWSLT train.tags markup, handled exactly as the standard recipe (prepare-iwslt14.sh) does:
# lines containing one of IWSLT_DROP are dropped, IWSLT_STRIP_TAGS are deleted from the rest
# (other markup lines, e.g. <speaker>, are kept, so the data matches published setups).
IWSLT_DROP = ("<url>", "<talkid>", "<keywords>")
IWSLT_STRIP_TAGS = ("<title>", "</title>", "<description>", "</description>")


def read_iwslt_tags(path: Path) -> Iterator[str]:
    """Yield the text lines of an IWSLT ``train.tags.*`` file, as the standard recipe does."""
    for line in read_lines(path):
        if any(tag in line for tag in IWSLT_DROP):
            continue
        for tag in IWSLT_STRIP_TAGS:
            line = line.replace(tag, "")
        yield line


def read_corpus_side(corpus: Corpus, lang: str, raw_dir: Path) -> Iterator[str]:
    """Yield one language side of ``corpus`` from the raw dir."""
    path = resolve_raw(raw_dir, corpus.files[lang])
    if path is None:
        raise DataPrepError(f"missing raw file {raw_dir / corpus.files[lang]}")
    if corpus.kind == "plain":
        return read_lines(path)
    if corpus.kind == "tsv":
        return read_tsv_column(path, corpus.columns[lang])
    if corpus.kind == "sgm":
        return read_sgm(path)
    if corpus.kind == "tags":
        return read_iwslt_tags(path)
    raise DataPrepError(f"corpus {corpus.name}: unknown kind {corpus.kind!r}; allowed: plain, "
                        "tsv, sgm, tags")


def check_raw_files(recipe: TaskRecipe, raw_dir: Path) -> None:
    """Raise DataPrepError naming every raw file of ``recipe`` missing from ``raw_dir``."""
    urls = {dl.filename: dl.urls[0] for dl in recipe.downloads}
    missing = [f"  {rel} (from {archive}: {urls.get(archive, '?')})"
               for rel, archive in expected_files(recipe) if resolve_raw(raw_dir, rel) is None]
    if missing:
        raise DataPrepError(
            f"task {recipe.name}: {len(missing)} raw file(s) missing in {raw_dir}:\n"
            + "\n".join(missing)
            + "\nextract the archives there (or drop --raw-dir to download them)")


# --------------------------------------------------------------------------------------------
# Text processing (Moses steps, cleaning, BPE)
# --------------------------------------------------------------------------------------------


class MosesProcessor:
    """One line through the Moses pipeline of the recipe: normalize, tokenize, lowercase."""

    def __init__(self, lang: str, normalize_punct: bool = False, aggressive_dash: bool = False,
                 fix_quotes: bool = False, lowercase: bool = False) -> None:
        self.lang = lang
        self.normalize_punct = normalize_punct
        self.aggressive_dash = aggressive_dash
        self.fix_quotes = fix_quotes
        self.lowercase = lowercase
        self._tools: tuple | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tools": None}

    def _load(self) -> tuple:
        import regex
        from sacremoses import MosesPunctNormalizer, MosesTokenizer

        self._tools = (MosesPunctNormalizer(lang=self.lang), MosesTokenizer(lang=self.lang),
                       regex.compile(r"\p{C}"))
        return self._tools

    def __call__(self, line: str) -> str:
        normalizer, tokenizer, non_printing = self._tools or self._load()
        if self.normalize_punct:
            line = non_printing.sub(" ", normalizer.normalize(line))
        if self.fix_quotes:
            line = line.replace("\u2019", "'")
        line = tokenizer.tokenize(line, aggressive_dash_splits=self.aggressive_dash,
                                  return_str=True, escape=True)
        return line.lower() if self.lowercase else line


class BpeProcessor:
    """Apply learned subword-nmt BPE codes to one line."""

    def __init__(self, codes: Path) -> None:
        self.codes = codes
        self._bpe = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_bpe": None}

    def __call__(self, line: str) -> str:
        if self._bpe is None:
            from subword_nmt.apply_bpe import BPE

            with open(self.codes, encoding="utf-8") as f:
                self._bpe = BPE(f)
        return self._bpe.process_line(line)


_WORKER_FN: Callable[[str], str] | None = None


def _init_worker(fn: Callable[[str], str]) -> None:
    global _WORKER_FN
    _WORKER_FN = fn


def _run_chunk(chunk: list[str]) -> list[str]:
    assert _WORKER_FN is not None
    return [_WORKER_FN(line) for line in chunk]


def _tee(lines: Iterable[str], out: TextIO) -> Iterator[str]:
    for line in lines:
        out.write(line + "\n")
        yield line


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(lines)
    while chunk := list(islice(it, size)):
        yield chunk


def map_lines(fn: Callable[[str], str], lines: Iterable[str], workers: int = 1,
              chunk_size: int = 2000) -> Iterator[str]:
    """Apply ``fn`` to every line, in order, with ``workers`` processes when > 1."""
    if workers <= 1:
        yield from (fn(line) for line in lines)
        return
    with Pool(workers, initializer=_init_worker, initargs=(fn,)) as pool:
        for out in pool.imap(_run_chunk, _chunks(lines, chunk_size)):
            yield from out


def clean_pairs(pairs: Iterable[tuple[str, str]], min_len: int = 1, max_len: int = 250,
                ratio: float = 1.5) -> Iterator[tuple[str, str]]:
    """Moses ``clean-corpus-n.perl -ratio R``: normalize spaces, drop pairs by length/ratio."""
    for src, tgt in pairs:
        src = _SPACES.sub(" ", src.replace("|", "")).strip(" ")
        tgt = _SPACES.sub(" ", tgt.replace("|", "")).strip(" ")
        if not src or not tgt:
            continue
        n_src, n_tgt = len(src.split(" ")), len(tgt.split(" "))
        if not (min_len <= n_src <= max_len and min_len <= n_tgt <= max_len):
            continue
        if n_src / n_tgt > ratio or n_tgt / n_src > ratio:
            continue
        yield src, tgt


def learn_bpe(train_files: Sequence[Path], codes: Path, num_merges: int, workers: int = 1) -> None:
    """Learn joint BPE codes (``learn_bpe.py -s N``) on the concatenation of ``train_files``."""
    from subword_nmt.learn_bpe import learn_bpe as _learn

    joined = codes.with_name(codes.name + ".input")
    with atomic_text_files([joined]) as (out,):
        for path in train_files:
            for line in read_lines(path):
                out.write(line + "\n")
    with atomic_text_files([codes]) as (out,), open(joined, encoding="utf-8") as inp:
        _learn(inp, out, num_merges, min_frequency=2, num_workers=max(1, workers))
    joined.unlink()


# --------------------------------------------------------------------------------------------
# Files and steps
# --------------------------------------------------------------------------------------------


def fairseq_preprocess(text_dir: Path, dest_dir: Path, src: str, tgt: str,
                       joined_dictionary: bool, workers: int = 1,
                       extra_args: Sequence[str] = ()) -> Path:
    """Binarize ``text_dir/{train,valid,test}.{src,tgt}`` into ``dest_dir`` (atomically)."""
    from fairseq import options
    from fairseq_cli import preprocess

    staging = dest_dir.with_name(dest_dir.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    argv = ["--source-lang", src, "--target-lang", tgt,
            "--trainpref", str(text_dir / "train"), "--validpref", str(text_dir / "valid"),
            "--testpref", str(text_dir / "test"), "--destdir", str(staging),
            "--workers", str(max(1, workers)), *extra_args]
    if joined_dictionary:
        argv.append("--joined-dictionary")
    for split in ("train", "valid", "test"):
        for lang in (src, tgt):
            if not (text_dir / f"{split}.{lang}").is_file():
                raise DataPrepError(f"fairseq-preprocess input missing: {text_dir}/{split}.{lang}")
    args = options.get_preprocessing_parser().parse_args(argv)
    handlers = list(preprocess.logger.handlers)
    try:
        preprocess.main(args)
    finally:
        for handler in preprocess.logger.handlers[:]:
            if handler not in handlers:
                preprocess.logger.removeHandler(handler)
                handler.close()
    if dest_dir.exists():
        shutil.rmtree(dest_dir)
    os.replace(staging, dest_dir)
    return dest_dir
