"""Data preparation recipes for the four HAT translation tasks.

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
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from multiprocessing import Pool
from pathlib import Path
from typing import TextIO

from hat.errors import HatConfigError

logger = logging.getLogger(__name__)


class DataPrepError(HatConfigError):
    """A missing or malformed raw file, a failed download, or a bad task/option."""


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """One file to fetch into the raw dir; archives (.tgz/.tar/.zip) are extracted in place."""

    filename: str
    urls: tuple[str, ...]
    size: int | None = None
    sha256: str | None = None

    @property
    def is_archive(self) -> bool:
        return self.filename.endswith((".tgz", ".tar.gz", ".tar", ".zip"))


@dataclass(frozen=True)
class Corpus:
    """A parallel text in the raw dir.

    ``kind`` is one of ``plain`` (one file per language, ``files[lang]``), ``tsv`` (one
    tab-separated file ``files[lang]`` for both languages, column ``columns[lang]``), ``sgm``
    (WMT SGML / IWSLT XML with ``<seg id=..>`` lines) or ``tags`` (IWSLT ``train.tags.*``).
    ``archive`` names the download that provides the files.
    """

    name: str
    kind: str
    files: dict[str, str]
    archive: str
    columns: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskRecipe:
    """Everything that differs between the tasks."""

    name: str
    src: str
    tgt: str
    downloads: tuple[Download, ...]
    train: tuple[Corpus, ...]
    test: tuple[Corpus, ...]
    valid: tuple[Corpus, ...] = ()
    valid_every: int | None = None  # take every N-th train line as valid (when valid is empty)
    normalize_punct: bool = True  # normalize-punctuation + remove-non-printing-char on train
    aggressive_dash: bool = True  # tokenizer -a
    lowercase: bool = False
    clean_before_bpe: bool = False  # IWSLT cleans tokenized train text; WMT cleans BPE text
    clean_min: int = 1
    clean_max: int = 250
    clean_ratio: float = 1.5
    bpe_tokens: int = 40000
    joined_dictionary: bool = True
    catalogs: bool = False  # built from Debian gettext catalogs by hat.data.debian
    notes: str = ""

    @property
    def langs(self) -> tuple[str, str]:
        return (self.src, self.tgt)


_STATMT = "http://statmt.org"
_DATA_STATMT = "http://data.statmt.org"


def _plain(name: str, prefix: str, archive: str, langs: Sequence[str]) -> Corpus:
    return Corpus(name, "plain", {lang: f"{prefix}.{lang}" for lang in langs}, archive)


def _tsv(name: str, path: str, archive: str, columns: dict[str, int]) -> Corpus:
    return Corpus(name, "tsv", {lang: path for lang in columns}, archive, columns)


def _sgm(name: str, files: dict[str, str], archive: str) -> Corpus:
    return Corpus(name, "sgm", files, archive)


def _wmt14_en_de() -> TaskRecipe:
    en_de = ("en", "de")
    return TaskRecipe(
        name="wmt14.en-de", src="en", tgt="de",
        downloads=(
            Download("training-parallel-europarl-v7.tgz",
                     (f"{_STATMT}/wmt13/training-parallel-europarl-v7.tgz",)),
            Download("training-parallel-commoncrawl.tgz",
                     (f"{_STATMT}/wmt13/training-parallel-commoncrawl.tgz",)),
            Download("training-parallel-nc-v12.tgz",
                     (f"{_DATA_STATMT}/wmt17/translation-task/training-parallel-nc-v12.tgz",)),
            Download("dev.tgz", (f"{_DATA_STATMT}/wmt17/translation-task/dev.tgz",)),
            Download("test-full.tgz", (f"{_STATMT}/wmt14/test-full.tgz",)),
        ),
        train=(
            _plain("europarl-v7", "training/europarl-v7.de-en",
                   "training-parallel-europarl-v7.tgz", en_de),
            _plain("commoncrawl", "commoncrawl.de-en", "training-parallel-commoncrawl.tgz",
                   en_de),
            _plain("news-commentary-v12", "training/news-commentary-v12.de-en",
                   "training-parallel-nc-v12.tgz", en_de),
        ),
        valid=(_sgm("newstest2013", {"en": "dev/newstest2013-src.en.sgm",
                                     "de": "dev/newstest2013-ref.de.sgm"}, "dev.tgz"),),
        test=(_sgm("newstest2014", {"en": "test-full/newstest2014-deen-src.en.sgm",
                                    "de": "test-full/newstest2014-deen-ref.de.sgm"},
                   "test-full.tgz"),),
        bpe_tokens=40000,
        notes="fairseq prepare-wmt14en2de.sh corpora (News Commentary v12, its default), but "
              "newstest2013 as valid as in HAT's data instead of a 1% train hold-out. HAT's "
              "released binaries use Google's preprocessed WMT16 set (32k BPE): pass "
              "--bpe-tokens 32000 to match its vocabulary size.",
    )


def _wmt14_en_fr() -> TaskRecipe:
    en_fr = ("en", "fr")
    return TaskRecipe(
        name="wmt14.en-fr", src="en", tgt="fr",
        downloads=(
            Download("training-parallel-europarl-v7.tgz",
                     (f"{_STATMT}/wmt13/training-parallel-europarl-v7.tgz",)),
            Download("training-parallel-commoncrawl.tgz",
                     (f"{_STATMT}/wmt13/training-parallel-commoncrawl.tgz",)),
            Download("training-parallel-un.tgz", (f"{_STATMT}/wmt13/training-parallel-un.tgz",)),
            Download("training-parallel-nc-v9.tgz",
                     (f"{_STATMT}/wmt14/training-parallel-nc-v9.tgz",)),
            Download("training-giga-fren.tar", (f"{_STATMT}/wmt10/training-giga-fren.tar",)),
            Download("test-full.tgz", (f"{_STATMT}/wmt14/test-full.tgz",)),
        ),
        train=(
            _plain("europarl-v7", "training/europarl-v7.fr-en",
                   "training-parallel-europarl-v7.tgz", en_fr),
            _plain("commoncrawl", "commoncrawl.fr-en", "training-parallel-commoncrawl.tgz",
                   en_fr),
            _plain("un", "un/undoc.2000.fr-en", "training-parallel-un.tgz", en_fr),
            _plain("news-commentary-v9", "training/news-commentary-v9.fr-en",
                   "training-parallel-nc-v9.tgz", en_fr),
            _plain("giga-fren", "giga-fren.release2.fixed", "training-giga-fren.tar", en_fr),
        ),
        valid_every=1333,
        test=(_sgm("newstest2014", {"en": "test-full/newstest2014-fren-src.en.sgm",
                                    "fr": "test-full/newstest2014-fren-ref.fr.sgm"},
                   "test-full.tgz"),),
        bpe_tokens=40000,
        notes="HAT/fairseq prepare-wmt14en2fr.sh: valid is every 1333rd train line.",
    )


def _wmt19_en_de() -> TaskRecipe:
    en_de = ("en", "de")
    de_first = {"de": 0, "en": 1}
    return TaskRecipe(
        name="wmt19.en-de", src="en", tgt="de",
        downloads=(
            Download("europarl-v9.de-en.tsv.gz",
                     ("http://www.statmt.org/europarl/v9/training/europarl-v9.de-en.tsv.gz",)),
            Download("en-de.bicleaner07.txt.gz",
                     ("https://s3.amazonaws.com/web-language-models/paracrawl/release3/"
                      "en-de.bicleaner07.txt.gz",)),
            Download("training-parallel-commoncrawl.tgz",
                     ("http://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz",)),
            Download("news-commentary-v14.de-en.tsv.gz",
                     (f"{_DATA_STATMT}/news-commentary/v14/training/"
                      "news-commentary-v14.de-en.tsv.gz",)),
            Download("wikititles-v1.de-en.tsv.gz",
                     (f"{_DATA_STATMT}/wikititles/v1/wikititles-v1.de-en.tsv.gz",)),
            Download("rapid2019.de-en.zip",
                     ("https://s3-eu-west-1.amazonaws.com/tilde-model/rapid2019.de-en.zip",)),
            Download("dev.tgz", (f"{_DATA_STATMT}/wmt19/translation-task/dev.tgz",)),
        ),
        train=(
            _tsv("paracrawl-v3", "en-de.bicleaner07.txt", "en-de.bicleaner07.txt.gz",
                 {"en": 0, "de": 1}),
            _tsv("news-commentary-v14", "news-commentary-v14.de-en.tsv",
                 "news-commentary-v14.de-en.tsv.gz", de_first),
            _tsv("wikititles-v1", "wikititles-v1.de-en.tsv", "wikititles-v1.de-en.tsv.gz",
                 de_first),
            _tsv("europarl-v9", "europarl-v9.de-en.tsv", "europarl-v9.de-en.tsv.gz", de_first),
            _plain("commoncrawl", "commoncrawl.de-en", "training-parallel-commoncrawl.tgz",
                   en_de),
            _plain("rapid2019", "rapid2019.de-en", "rapid2019.de-en.zip", en_de),
        ),
        valid=(_sgm("newstest2017", {"en": "dev/newstest2017-ende-src.en.sgm",
                                     "de": "dev/newstest2017-ende-ref.de.sgm"}, "dev.tgz"),),
        test=(_sgm("newstest2018", {"en": "dev/newstest2018-ende-src.en.sgm",
                                    "de": "dev/newstest2018-ende-ref.de.sgm"}, "dev.tgz"),),
        bpe_tokens=40000,
        notes="HAT's WMT19 recipe: ParaCrawl v3 (bicleaner 0.7), News Commentary v14, Wiki "
              "Titles v1, Europarl v9, Common Crawl, Rapid 2019; newstest2017 valid, "
              "newstest2018 test; 40k joint BPE as HAT uses (not 32k).",
    )


def _iwslt14_de_en() -> TaskRecipe:
    talks = ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")
    return TaskRecipe(
        name="iwslt14.de-en", src="de", tgt="en",
        downloads=(
            Download("de-en.tgz", ("http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz",
                                   "https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz")),
        ),
        train=(Corpus("train.tags", "tags", {lang: f"de-en/train.tags.de-en.{lang}"
                                             for lang in ("de", "en")}, "de-en.tgz"),),
        valid_every=23,
        test=tuple(_sgm(f"IWSLT14.{t}", {lang: f"de-en/IWSLT14.{t}.de-en.{lang}.xml"
                                         for lang in ("de", "en")}, "de-en.tgz")
                   for t in talks),
        normalize_punct=False,
        aggressive_dash=False,
        lowercase=True,
        clean_before_bpe=True,
        clean_max=175,
        bpe_tokens=10000,
        joined_dictionary=False,
        notes="HAT/fairseq prepare-iwslt14.sh: lowercased, valid is every 23rd train line, test "
              "is dev2010+dev2012(TEDX)+tst2010-2012; joint BPE, separate dictionaries.",
    )


def _debian(tgt: str) -> TaskRecipe:
    def plain(name: str) -> Corpus:
        return Corpus(name, "plain", {lang: f"{name}.{lang}" for lang in ("en", tgt)}, "")

    return TaskRecipe(
        name=f"debian.en-{tgt}", src="en", tgt=tgt, downloads=(),
        train=(plain("train"),), valid=(plain("valid"),), test=(plain("test"),),
        bpe_tokens=10000, catalogs=True,
        notes="Debian gettext catalogs (hat.data.debian; --raw-dir: a catalog folder instead "
              "of the package download). 10k joint BPE merges: ~200k short UI strings, an "
              "IWSLT14-sized corpus, where 10k is the usual choice.")


TASKS: dict[str, TaskRecipe] = {
    r.name: r for r in (_wmt14_en_de(), _wmt14_en_fr(), _wmt19_en_de(), _iwslt14_de_en(),
                        _debian("de"), _debian("fr"))
}


def task_recipe(task: str) -> TaskRecipe:
    """Return the recipe of ``task``; raise DataPrepError listing the known tasks otherwise."""
    try:
        return TASKS[task]
    except KeyError:
        raise DataPrepError(
            f"unknown task {task!r}; allowed tasks: {', '.join(sorted(TASKS))}") from None


def expected_files(task: str | TaskRecipe) -> list[tuple[str, str]]:
    """List ``(relative path, archive)`` of every raw file a task reads from the raw dir."""
    recipe = task_recipe(task) if isinstance(task, str) else task
    out: list[tuple[str, str]] = []
    for corpus in recipe.train + recipe.valid + recipe.test:
        for lang in recipe.langs:
            item = (corpus.files[lang], corpus.archive)
            if item not in out:
                out.append(item)
    return out


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(dl: Download, path: Path) -> str | None:
    """Return a reason why ``path`` is not the expected download, or None when it is."""
    if dl.size is not None and path.stat().st_size != dl.size:
        return f"size {path.stat().st_size} != expected {dl.size}"
    if dl.sha256 is not None and _file_digest(path) != dl.sha256:
        return "sha256 mismatch"
    return None


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing a partial file with an HTTP Range request."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "hat-data-prep/1.0"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=timeout) as resp:
        if offset and resp.status != 206:
            offset = 0  # server ignored the range: start over
        length = resp.headers.get("Content-Length")
        total = int(length) + offset if length is not None else None
        done, last_log = offset, time.monotonic()
        with open(part, "ab" if offset else "wb") as f:
            for block in iter(lambda: resp.read(1 << 20), b""):
                f.write(block)
                done += len(block)
                if time.monotonic() - last_log > 30:
                    last_log = time.monotonic()
                    of = f" of {total / 2**20:.0f}" if total else ""
                    logger.info("  %s: %.0f%s MiB", part.name, done / 2**20, of)
    if total is not None and part.stat().st_size != total:
        raise DataPrepError(f"download of {url} is incomplete: got {part.stat().st_size} of "
                            f"{total} bytes; run again to resume")


def download(dl: Download, raw_dir: Path, timeout: float = 60.0) -> Path:
    """Fetch ``dl`` into ``raw_dir`` (skipped when a complete file exists); return its path."""
    dest = raw_dir / dl.filename
    if dest.is_file():
        problem = _verify(dl, dest)
        if problem is None:
            logger.info("%s already downloaded", dl.filename)
            return dest
        raise DataPrepError(f"{dest}: {problem}; delete it to download again")
    raw_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in dl.urls:
        logger.info("downloading %s", url)
        try:
            _fetch(url, part, timeout)
            break
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{url}: {err}")
            logger.warning("download failed: %s: %s", url, err)
    else:
        raise DataPrepError(
            f"could not download {dl.filename} ({'; '.join(errors)}); fetch it by hand into "
            f"{raw_dir} and run again, or extract it and pass --raw-dir")
    problem = _verify(dl, part)
    if problem is not None:
        part.unlink()
        raise DataPrepError(f"downloaded {dl.filename} is corrupt: {problem}")
    os.replace(part, dest)
    return dest


def _merge_move(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into ``dst``, merging directories that already exist."""
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge_move(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def extract(archive: Path, raw_dir: Path) -> None:
    """Extract a .tgz/.tar/.zip archive into ``raw_dir`` once (a marker file records it)."""
    marker = raw_dir / f".{archive.name}.extracted"
    if marker.exists():
        return
    logger.info("extracting %s", archive.name)
    staging = raw_dir / f".{archive.name}.extracting"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
        else:
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(staging, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extractall(staging)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise DataPrepError(f"{archive}: cannot extract ({err}); delete it to download "
                            "again") from None
    _merge_move(staging, raw_dir)
    shutil.rmtree(staging)
    marker.touch()


def fetch_raw(recipe: TaskRecipe, raw_dir: Path) -> None:
    """Download and extract every file of ``recipe`` into ``raw_dir``."""
    for dl in recipe.downloads:
        path = download(dl, raw_dir)
        if dl.is_archive:
            extract(path, raw_dir)


# --------------------------------------------------------------------------------------------
# Raw formats
# --------------------------------------------------------------------------------------------


def resolve_raw(raw_dir: Path, rel: str) -> Path | None:
    """Return ``raw_dir/rel`` or its ``.gz`` variant, whichever exists, else None."""
    for cand in (raw_dir / rel, raw_dir / f"{rel}.gz"):
        if cand.is_file():
            return cand
    return None


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
    with _atomic_open([joined]) as (out,):
        for path in train_files:
            for line in read_lines(path):
                out.write(line + "\n")
    with _atomic_open([codes]) as (out,), open(joined, encoding="utf-8") as inp:
        _learn(inp, out, num_merges, min_frequency=2, num_workers=max(1, workers))
    joined.unlink()


# --------------------------------------------------------------------------------------------
# Files and steps
# --------------------------------------------------------------------------------------------


@contextmanager
def _atomic_open(paths: Sequence[Path]) -> Iterator[list[TextIO]]:
    """Open ``paths`` for writing under temporary names; rename them all on success."""
    tmps = [p.with_name(p.name + ".tmp") for p in paths]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    files = [open(t, "w", encoding="utf-8", newline="\n") for t in tmps]
    try:
        yield files
    except BaseException:
        for f, t in zip(files, tmps):
            f.close()
            t.unlink(missing_ok=True)
        raise
    for f in files:
        f.close()
    for t, p in zip(tmps, paths):
        os.replace(t, p)


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


class _Pipeline:
    """Runs a recipe step by step; a step whose marker and outputs exist is skipped."""

    STEPS = ("train_tok", "train_clean", "eval_tok", "split", "bpe_learn", "bpe_apply",
             "finalize", "binarize")

    def __init__(self, recipe: TaskRecipe, out: Path, raw_dir: Path, workers: int) -> None:
        self.r, self.out, self.raw, self.workers = recipe, out, raw_dir, workers
        self.tmp, self.tok, self.bin = out / "tmp", out / "tokenized", out / "data-bin"
        self.steps_dir = out / ".steps"

    def _params(self, step: str) -> dict:
        """What a finished step depends on (besides the steps before it, which re-run it)."""
        r = self.r
        params: dict = {"step": step, "task": r.name, "raw_dir": str(self.raw.resolve())}
        if step in ("train_clean", "finalize"):
            params["clean"] = [r.clean_min, r.clean_max, r.clean_ratio]
        params.update({"split": {"valid_every": r.valid_every},
                       "bpe_learn": {"bpe_tokens": r.bpe_tokens}}.get(step, {}))
        return params

    def step(self, name: str, outputs: Sequence[Path], fn: Callable[[], None]) -> None:
        marker = self.steps_dir / f"{name}.json"
        params = self._params(name)
        if marker.is_file() and all(p.exists() for p in outputs):
            try:
                if json.loads(marker.read_text(encoding="utf-8")) == params:
                    logger.info("[%s] %s: done before, skipping", self.r.name, name)
                    return
            except json.JSONDecodeError:
                pass
        for later in self.STEPS[self.STEPS.index(name):]:
            (self.steps_dir / f"{later}.json").unlink(missing_ok=True)
        logger.info("[%s] %s ...", self.r.name, name)
        start = time.monotonic()
        fn()
        with _atomic_open([marker]) as (f,):
            f.write(json.dumps(params, sort_keys=True))
        logger.info("[%s] %s finished in %.1fs", self.r.name, name, time.monotonic() - start)

    def side(self, stem: str, lang: str, where: Path | None = None) -> Path:
        return (where or self.tmp) / f"{stem}.{lang}"

    def pair(self, stem: str, where: Path | None = None) -> list[Path]:
        return [self.side(stem, lang, where) for lang in self.r.langs]

    # -- steps -----------------------------------------------------------------------------

    def _process_corpora(self, corpora: Sequence[Corpus], outputs: Sequence[Path],
                         train: bool, raw_outputs: Sequence[Path] = ()) -> None:
        """Run each language side of ``corpora`` through the Moses steps into ``outputs``
        (and, for ``raw_outputs``, copy the untokenized text)."""
        r = self.r
        counts: dict[str, list[int]] = {}
        with _atomic_open(list(outputs) + list(raw_outputs)) as files:
            raw_files = files[2:] or [None, None]
            for lang, f, raw_f in zip(r.langs, files[:2], raw_files):
                proc = MosesProcessor(lang, normalize_punct=train and r.normalize_punct,
                                      aggressive_dash=r.aggressive_dash, fix_quotes=not train,
                                      lowercase=r.lowercase and not train)
                for corpus in corpora:
                    lines = read_corpus_side(corpus, lang, self.raw)
                    if raw_f is not None:
                        lines = _tee(lines, raw_f)
                    n = 0
                    for line in map_lines(proc, lines, self.workers):
                        f.write(line + "\n")
                        n += 1
                    counts.setdefault(corpus.name, []).append(n)
                    logger.info("  %s.%s: %d lines", corpus.name, lang, n)
            for corpus in corpora:
                n_src, n_tgt = counts[corpus.name]
                if n_src != n_tgt:
                    raise DataPrepError(
                        f"task {r.name}: corpus {corpus.name} is not parallel: "
                        f"{corpus.files[r.src]} gives {n_src} lines, {corpus.files[r.tgt]} "
                        f"gives {n_tgt}")

    def _clean(self, inputs: Sequence[Path], outputs: Sequence[Path], lower: bool) -> None:
        r = self.r
        pairs = zip(read_lines(inputs[0]), read_lines(inputs[1]))
        kept = 0
        with _atomic_open(outputs) as (fs, ft):
            for s, t in clean_pairs(pairs, r.clean_min, r.clean_max, r.clean_ratio):
                if lower:
                    s, t = s.lower(), t.lower()
                fs.write(s + "\n")
                ft.write(t + "\n")
                kept += 1
        logger.info("  cleaned %s: kept %d pairs", inputs[0].stem, kept)

    def _split(self, inputs: Sequence[Path], every: int) -> None:
        with _atomic_open(self.pair("train") + self.pair("valid")) as files:
            for inp, train_f, valid_f in zip(inputs, files[:2], files[2:]):
                for i, line in enumerate(read_lines(inp), 1):
                    (valid_f if i % every == 0 else train_f).write(line + "\n")

    def _apply_bpe(self, codes: Path, stems: dict[str, str], dest: Path, prefix: str) -> None:
        proc = BpeProcessor(codes)
        for split, stem in stems.items():
            for lang in self.r.langs:
                with _atomic_open([self.side(prefix + split, lang, dest)]) as (f,):
                    for line in map_lines(proc, read_lines(self.side(stem, lang)), self.workers):
                        f.write(line + "\n")

    def run(self) -> Path:
        r = self.r
        self.step("train_tok", self.pair("train.tok"),
                  lambda: self._process_corpora(r.train, self.pair("train.tok"), train=True))
        base = "train.tok"
        if r.clean_before_bpe:
            self.step("train_clean", self.pair("train.clean"),
                      lambda: self._clean(self.pair("train.tok"), self.pair("train.clean"),
                                          lower=r.lowercase))
            base = "train.clean"
        test_raw = self.pair("test.detok", self.tok)
        eval_out = self.pair("test") + test_raw + ([] if r.valid_every else self.pair("valid"))

        def eval_tok() -> None:
            self._process_corpora(r.test, self.pair("test"), train=False, raw_outputs=test_raw)
            if not r.valid_every:
                self._process_corpora(r.valid, self.pair("valid"), train=False)

        self.step("eval_tok", eval_out, eval_tok)
        # text stem (in tmp/) of each split before BPE
        stems = {"train": base, "valid": "valid", "test": "test"}
        if r.valid_every:
            stems["train"] = "train"
            self.step("split", self.pair("train") + self.pair("valid"),
                      lambda: self._split(self.pair(base), r.valid_every))
        codes = self.tok / "code"
        self.step("bpe_learn", [codes],
                  lambda: learn_bpe(self.pair(stems["train"]), codes, r.bpe_tokens,
                                    self.workers))
        final = [self.side(s, lang, self.tok) for s in stems for lang in r.langs]
        if r.clean_before_bpe:
            self.step("bpe_apply", final, lambda: self._apply_bpe(codes, stems, self.tok, ""))
        else:
            bpe_out = [self.side(f"bpe.{s}", lang) for s in stems for lang in r.langs]
            self.step("bpe_apply", bpe_out,
                      lambda: self._apply_bpe(codes, stems, self.tmp, "bpe."))

            def finalize() -> None:
                for s in ("train", "valid"):
                    self._clean(self.pair(f"bpe.{s}"), self.pair(s, self.tok), lower=False)
                for lang in r.langs:
                    shutil.copyfile(self.side("bpe.test", lang), self.side("test", lang, self.tok))

            self.step("finalize", final, finalize)
        self.step("binarize", [self.bin / f"dict.{lang}.txt" for lang in r.langs],
                  lambda: fairseq_preprocess(self.tok, self.bin, r.src, r.tgt,
                                             r.joined_dictionary, self.workers))
        return self.bin


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
    data_bin = _Pipeline(recipe, out, raw_dir, workers).run()
    logger.info("%s ready: %s", recipe.name, data_bin)
    return data_bin


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``scripts/prepare_data.py``."""
    p = argparse.ArgumentParser(
        description="Download and preprocess a HAT translation task into a fairseq data-bin.")
    p.add_argument("--task", required=True, help=f"one of: {', '.join(sorted(TASKS))}")
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
    try:
        recipe = task_recipe(args.task)
        if args.list_files and recipe.catalogs:
            from hat.data.debian import DEBIAN_PACKAGES, HELD_OUT_PACKAGES

            for name in DEBIAN_PACKAGES:
                print(name + ("\t(held out: test_unseen)" if name in HELD_OUT_PACKAGES else ""))
            return 0
        if args.list_files:
            for rel, archive in expected_files(recipe):
                print(f"{rel}\t(from {archive})")
            return 0
        prepare(args.task, args.out or Path("data") / args.task, raw_dir=args.raw_dir,
                workers=args.workers, bpe_tokens=args.bpe_tokens)
    except HatConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
