"""The ``debian.en-*`` task: the WMT text steps on the catalog corpus, the unseen-package
splits (``valid_unseen``, ``test_unseen``) and ``manifest.json`` (:class:`DebianPipeline`),
and :func:`prepare_debian`, which fetches the catalogs (or takes a folder of them) and runs
it."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from hat.atomic import atomic_text_files, atomic_write_json
from hat.data.catalogs import Cleaner
from hat.data.debian.corpus import SPLITS, build_corpus, corpus_stats
from hat.data.debian.fetch import fetch_catalogs
from hat.data.debian.packages import (
    DEBIAN_PACKAGES,
    DEFAULT_CACHE,
    HELD_OUT_PACKAGES,
    VALID_UNSEEN_PACKAGES,
)
from hat.data.recipes import Corpus, DataPrepError, TaskRecipe
from hat.data.text import fairseq_preprocess, learn_bpe, read_lines
from hat.data.wmt import WmtPipeline

logger = logging.getLogger(__name__)


class DebianPipeline(WmtPipeline):
    """The WMT text steps on the catalog corpus (all splits normalized alike, no second
    length cleaning: the corpus step did it on words), plus the unseen-package splits."""

    STEPS = ("corpus", "tokenize", "bpe_learn", "bpe_apply", "binarize", "manifest")

    def __init__(self, recipe: TaskRecipe, out: Path, catalog_dir: Path, packages: Sequence[str],
                 held_out: Sequence[str], failures: dict[str, str], workers: int,
                 valid_frac: float = 0.015, test_frac: float = 0.015,
                 valid_unseen: Sequence[str] = ()) -> None:
        super().__init__(recipe, out, out / "orig", workers)
        self.catalog_dir, self.packages, self.held_out = catalog_dir, list(packages), held_out
        self.valid_unseen = valid_unseen
        self.failures, self.valid_frac, self.test_frac = failures, valid_frac, test_frac
        self.cleaner = Cleaner()
        self.versions = {p: (catalog_dir / p / "VERSION").read_text(encoding="utf-8").strip()
                         for p in self.packages}

    def _params(self, step: str) -> dict:
        params = super()._params(step)
        params.pop("raw_dir")
        if step == "corpus":
            params.update(versions=self.versions, held_out=sorted(self.held_out),
                          valid_unseen=sorted(self.valid_unseen),
                          clean=self.cleaner.params(), valid=self.valid_frac,
                          test=self.test_frac, catalog_dir=str(self.catalog_dir.resolve()),
                          split_key="moses-normalised, tokenized, casefolded")
        if step == "bpe_learn":
            params["bpe_tokens"] = self.r.bpe_tokens
        return params

    def _corpus(self) -> None:
        corpus = build_corpus(self.catalog_dir, self.packages, self.r.tgt, self.held_out,
                              self.valid_frac, self.test_frac, self.cleaner, self.r.src,
                              self.valid_unseen)
        files = [self.side(s, lang, self.raw) for s in SPLITS for lang in self.r.langs]
        with atomic_text_files(files) as handles:
            for i, split in enumerate(SPLITS):
                fs, ft = handles[2 * i], handles[2 * i + 1]
                for s, t in corpus.splits[split]:
                    fs.write(s + "\n")
                    ft.write(t + "\n")
        atomic_write_json(self.raw / "corpus.json", {
            "packages": corpus.packages, "cleaning": corpus.cleaning,
            "unseen_dropped_seen_source": corpus.unseen_dropped,
            "normalised_duplicates": corpus.normalised_duplicates,
            "splits": {s: corpus_stats(p) for s, p in corpus.splits.items()}})
        for split in SPLITS:
            logger.info("  %s: %d pairs", split, len(corpus.splits[split]))
        if not corpus.splits["train"] or not corpus.splits["valid"] or not corpus.splits["test"]:
            raise DataPrepError(
                f"task {self.r.name}: the catalogs in {self.catalog_dir} give too few pairs "
                f"(train {len(corpus.splits['train'])}, valid {len(corpus.splits['valid'])}, "
                f"test {len(corpus.splits['test'])}); add packages")

    def _unseen(self) -> list[str]:
        """The unseen-package splits this corpus has (a split without packages is empty)."""
        return [s for s in SPLITS if s.endswith("_unseen")
                and (self.raw / f"{s}.{self.r.src}").stat().st_size > 0]

    def _tokenize(self) -> None:
        stems = {"train": "train.tok", "valid": "valid", "test": "test"}
        splits = [s for s in SPLITS if not s.endswith("_unseen") or s in self._unseen()]
        for split in splits:
            corpus = Corpus(split, "plain", {lang: f"{split}.{lang}" for lang in self.r.langs},
                            "")
            raw = self.pair(f"{split}.detok", self.tok) if split.startswith("test") else []
            self._process_corpora([corpus], self.pair(stems.get(split, split)), train=True,
                                  raw_outputs=raw)

    def _binarize(self) -> None:
        tok = self.tok
        extra = []  # an unseen split is binarized as the second valid / test split, renamed
        for split in self._unseen():
            base = split[:-len("_unseen")]
            extra += [f"--{base}pref", f"{tok / base},{tok / split}"]
        fairseq_preprocess(tok, self.bin, self.r.src, self.r.tgt, True, self.workers, extra)
        for split in self._unseen():
            base = split[:-len("_unseen")]
            for f in sorted(self.bin.glob(f"{base}1.*")):
                os.replace(f, f.with_name(split + f.name[len(base) + 1:]))

    def _manifest(self) -> None:
        corpus = json.loads((self.raw / "corpus.json").read_text(encoding="utf-8"))
        vocab = sum(1 for _ in read_lines(self.bin / f"dict.{self.r.src}.txt"))
        atomic_write_json(self.out / "manifest.json", {
            "task": self.r.name, "source": "Debian gettext catalogs (apt-get download)",
            "catalog_dir": str(self.catalog_dir), "held_out_packages": sorted(self.held_out),
            "packages": corpus["packages"],
            "failures": [{"package": p, "reason": r} for p, r in sorted(self.failures.items())],
            "cleaning": corpus["cleaning"],
            "valid_unseen_packages": sorted(self.valid_unseen),
            "unseen_dropped_seen_source": corpus["unseen_dropped_seen_source"],
            "normalised_duplicates": corpus.get("normalised_duplicates", 0),
            "splits": corpus["splits"], "bpe_merges": self.r.bpe_tokens,
            "vocabulary_size": vocab + 4,  # dict.txt lists all but <s> <pad> </s> <unk>
            "vocabulary_note": "fairseq joined dictionary (BPE types + 4 special symbols)"})

    def run(self) -> Path:
        """Run every step (skipping finished ones); return the data-bin folder."""
        raw_files = [self.side(s, lang, self.raw) for s in SPLITS for lang in self.r.langs]
        self.step("corpus", raw_files + [self.raw / "corpus.json"], self._corpus)
        splits = ["train.tok", "valid", "test", *self._unseen()]
        self.step("tokenize", [p for s in splits for p in self.pair(s)], self._tokenize)
        codes = self.tok / "code"
        self.step("bpe_learn", [codes],
                  lambda: learn_bpe(self.pair("train.tok"), codes, self.r.bpe_tokens,
                                    self.workers))
        stems = {"train": "train.tok", **{s: s for s in splits[1:]}}
        final = [self.side(s, lang, self.tok) for s in stems for lang in self.r.langs]
        self.step("bpe_apply", final, lambda: self._apply_bpe(codes, stems, self.tok, ""))
        self.step("binarize", [self.bin / f"dict.{lang}.txt" for lang in self.r.langs],
                  self._binarize)
        self.step("manifest", [self.out / "manifest.json"], self._manifest)
        return self.bin


def prepare_debian(recipe: TaskRecipe, out: Path, catalog_dir: Path | None = None,
                   cache: Path = DEFAULT_CACHE, workers: int = 1,
                   packages: Sequence[str] | None = None,
                   held_out: Sequence[str] = HELD_OUT_PACKAGES,
                   valid_unseen: Sequence[str] = VALID_UNSEEN_PACKAGES) -> Path:
    """Prepare a ``debian.en-*`` task into ``out``; return its data-bin folder.

    Without ``catalog_dir`` the packages are fetched into ``cache`` (``catalogs/`` there is
    used); with it, its ``<package>/{VERSION,<lang>/*.mo}`` folders are used as they are
    (``packages`` defaults to all of them).
    """
    failures: dict[str, str] = {}
    if catalog_dir is None:
        packages = list(packages or DEBIAN_PACKAGES)
        start = time.monotonic()
        failures = fetch_catalogs(packages, Path(cache))
        logger.info("fetched %d/%d packages in %.0fs", len(packages) - len(failures),
                    len(packages), time.monotonic() - start)
        catalog_dir = Path(cache) / "catalogs"
    else:
        catalog_dir = Path(catalog_dir)
        if not catalog_dir.is_dir():
            raise DataPrepError(f"task {recipe.name}: catalog folder {catalog_dir} is not a "
                                "directory (expected <package>/VERSION and <package>/<lang>/*.mo)")
        if packages is None:
            packages = sorted(p.name for p in catalog_dir.iterdir()
                              if (p / "VERSION").is_file())
    usable = [p for p in packages if p not in failures and (catalog_dir / p / "VERSION").is_file()]
    for p in packages:
        if p not in failures and p not in usable:
            failures[p] = f"no {catalog_dir / p / 'VERSION'}"
    if not usable:
        raise DataPrepError(f"task {recipe.name}: no package catalogs in {catalog_dir} "
                            f"({len(failures)} packages failed); see the log")
    logger.info("preparing %s from %d packages' catalogs in %s (BPE %d merges)", recipe.name,
                len(usable), catalog_dir, recipe.bpe_tokens)
    pipeline = DebianPipeline(recipe, Path(out), catalog_dir, usable,
                              [p for p in held_out if p in usable], failures, workers,
                              valid_unseen=[p for p in valid_unseen if p in usable])
    data_bin = pipeline.run()
    logger.info("%s ready: %s (manifest %s)", recipe.name, data_bin, Path(out) / "manifest.json")
    return data_bin
