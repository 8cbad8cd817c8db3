"""The resumable step pipeline of HAT's WMT/IWSLT recipes (Moses tokenization with sacremoses,
length cleaning, split, subword-nmt BPE, fairseq binarization); one marker per finished step
under ``<out>/.steps``, every output written atomically."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hat.atomic import atomic_text_files
from hat.data.recipes import Corpus, DataPrepError, TaskRecipe
from hat.data.text import (
    BpeProcessor,
    MosesProcessor,
    _tee,
    clean_pairs,
    fairseq_preprocess,
    learn_bpe,
    map_lines,
    read_corpus_side,
    read_lines,
)

logger = logging.getLogger(__name__)


class WmtPipeline:
    """Runs a WMT/IWSLT recipe step by step (tokenize, clean, split, BPE, binarize); a step whose
    marker and outputs exist is skipped. :class:`hat.data.debian.DebianPipeline` extends it."""

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
        with atomic_text_files([marker]) as (f,):
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
        with atomic_text_files(list(outputs) + list(raw_outputs)) as files:
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
        with atomic_text_files(outputs) as (fs, ft):
            for s, t in clean_pairs(pairs, r.clean_min, r.clean_max, r.clean_ratio):
                if lower:
                    s, t = s.lower(), t.lower()
                fs.write(s + "\n")
                ft.write(t + "\n")
                kept += 1
        logger.info("  cleaned %s: kept %d pairs", inputs[0].stem, kept)

    def _split(self, inputs: Sequence[Path], every: int) -> None:
        with atomic_text_files(self.pair("train") + self.pair("valid")) as files:
            for inp, train_f, valid_f in zip(inputs, files[:2], files[2:]):
                for i, line in enumerate(read_lines(inp), 1):
                    (valid_f if i % every == 0 else train_f).write(line + "\n")

    def _apply_bpe(self, codes: Path, stems: dict[str, str], dest: Path, prefix: str) -> None:
        proc = BpeProcessor(codes)
        for split, stem in stems.items():
            for lang in self.r.langs:
                with atomic_text_files([self.side(prefix + split, lang, dest)]) as (f,):
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
