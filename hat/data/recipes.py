"""The translation tasks' recipes: what to download, which corpora make train/valid/test,
and the settings that differ between tasks (normalization, cleaning, BPE size)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hat.errors import HatConfigError


class DataPrepError(HatConfigError):
    """A missing or malformed raw file, a failed download, or a bad task/option."""


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


def wmt14_en_de() -> TaskRecipe:
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


def wmt14_en_fr() -> TaskRecipe:
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


def wmt19_en_de() -> TaskRecipe:
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


def iwslt14_de_en() -> TaskRecipe:
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


def debian(tgt: str) -> TaskRecipe:
    def plain(name: str) -> Corpus:
        return Corpus(name, "plain", {lang: f"{name}.{lang}" for lang in ("en", tgt)}, "")

    return TaskRecipe(
        name=f"debian.en-{tgt}", src="en", tgt=tgt, downloads=(),
        train=(plain("train"),), valid=(plain("valid"),), test=(plain("test"),),
        bpe_tokens=10000, catalogs=True,
        notes="Debian gettext catalogs (hat.data.debian; --raw-dir: a catalog folder instead "
              "of the package download). 10k joint BPE merges: ~200k short UI strings, an "
              "IWSLT14-sized corpus, where 10k is the usual choice.")


def expected_files(recipe: TaskRecipe) -> list[tuple[str, str]]:
    """List ``(relative path, archive)`` of every raw file a recipe reads from the raw dir."""
    out: list[tuple[str, str]] = []
    for corpus in recipe.train + recipe.valid + recipe.test:
        for lang in recipe.langs:
            item = (corpus.files[lang], corpus.archive)
            if item not in out:
                out.append(item)
    return out
