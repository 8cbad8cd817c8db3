"""HAT's two BLEU metrics on 1-best hypotheses: tokenized BLEU with compound splitting (as HAT
reports it; equals multi-bleu.perl) and sacreBLEU on Moses-detokenized output with its signature."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hat.errors import HatConfigError

_COMPOUND = re.compile(r"(\S)-(\S)")


# the modules each metric scores with (both are install requirements of hat; an environment
# installed with --no-deps, e.g. a GPU image, can lack them)
METRIC_MODULES = {"normal": ("sacrebleu",), "sacre": ("sacrebleu", "sacremoses")}


def check_metric_installed(metric: str, where: str) -> None:
    """Refuse, before any work, a metric whose modules are not importable here."""
    import importlib.util

    missing = [m for m in METRIC_MODULES[metric] if importlib.util.find_spec(m) is None]
    if missing:
        raise HatConfigError(
            f"{where}: BLEU ({metric}) needs the Python module(s) {', '.join(missing)}, which "
            f"this Python ({sys.executable}) cannot import; pip install "
            f"{' '.join(missing)} (or install hat with its dependencies)")


def compound_split(line: str) -> str:
    """HAT/tensor2tensor compound splitting: ``a-b`` -> ``a ##AT##-##AT## b``."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


@dataclass
class BleuResult:
    """One corpus BLEU score."""

    bleu: float
    metric: str
    signature: str
    n: int
    precisions: list[float] = field(default_factory=list)
    bp: float = 1.0
    hyp_len: int = 0
    ref_len: int = 0
    label: str = ""

    def line(self) -> str:
        """``BLEU = 27.40 (normal, tokenized, compound-split) 60.1/33.2/... (BP = ...)``."""
        prec = "/".join(f"{p:.1f}" for p in self.precisions)
        ratio = self.hyp_len / self.ref_len if self.ref_len else 0.0
        return (f"BLEU = {self.bleu:.2f} ({self.label}) {prec} (BP = {self.bp:.3f} ratio = "
                f"{ratio:.3f} hyp_len = {self.hyp_len} ref_len = {self.ref_len}) n = {self.n}")


def _check_lengths(hyps: Sequence[str], refs: Sequence[str], what: str) -> None:
    if len(hyps) != len(refs):
        raise HatConfigError(f"{what}: {len(hyps)} hypotheses but {len(refs)} reference lines")


def _result(metric: Any, score: Any, n: int, label: str, name: str, extra: str = ""
            ) -> BleuResult:
    return BleuResult(bleu=float(score.score), metric=name,
                      signature=str(metric.get_signature()) + extra, n=n,
                      precisions=[float(p) for p in score.precisions], bp=float(score.bp),
                      hyp_len=int(score.sys_len), ref_len=int(score.ref_len), label=label)


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str], compound: bool = True
                   ) -> BleuResult:
    """Corpus BLEU of tokenized text (multi-bleu.perl), optionally after compound splitting."""
    from sacrebleu.metrics import BLEU

    _check_lengths(hyps, refs, "normal BLEU")
    if compound:
        hyps, refs = [compound_split(h) for h in hyps], [compound_split(r) for r in refs]
    metric = BLEU(tokenize="none", smooth_method="none", force=True)
    score = metric.corpus_score(list(hyps), [list(refs)])
    label = "normal, tokenized" + (", compound-split" if compound else "")
    return _result(metric, score, len(hyps), label, "normal",
                   "|compound-split:" + ("yes" if compound else "no"))


def moses_detokenize(lines: Sequence[str], lang: str) -> list[str]:
    """Moses-detokenize tokenized lines (unescaping ``&amp;`` etc.)."""
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer(lang=lang or "en")
    return [detok.detokenize(line.split()) for line in lines]


def sacre_bleu(hyps: Sequence[str], refs: Sequence[str], lowercase: bool = False
               ) -> BleuResult:
    """sacreBLEU (13a tokenization) of detokenized hypotheses against raw references."""
    from sacrebleu.metrics import BLEU

    _check_lengths(hyps, refs, "sacreBLEU")
    metric = BLEU(lowercase=lowercase)
    score = metric.corpus_score(list(hyps), [list(refs)])
    return _result(metric, score, len(hyps), "sacre, detokenized", "sacre")


def paired_bootstrap(a: Sequence[str], b: Sequence[str], refs: Sequence[str],
                     metric: str = "sacre", *, compound: bool = True, lowercase: bool = False,
                     samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """BLEU(a) - BLEU(b) on the same references, with its 95% paired-bootstrap interval
    (Koehn, 2004): ``samples`` resamplings of the sentences with replacement, the same ones for
    both systems. ``metric`` as in :func:`sacre_bleu` (detokenized text) or
    :func:`tokenized_bleu` ("normal", tokenized text)."""
    import numpy as np
    from sacrebleu.metrics import BLEU

    if metric not in METRIC_MODULES:
        raise HatConfigError(f"paired bootstrap: metric {metric!r}; allowed "
                             f"{', '.join(METRIC_MODULES)}")
    _check_lengths(a, refs, "paired bootstrap")
    _check_lengths(b, refs, "paired bootstrap")
    if metric == "normal":
        bleu = BLEU(tokenize="none", smooth_method="none", force=True)
        if compound:
            a, b, refs = ([compound_split(x) for x in xs] for xs in (a, b, refs))
    else:
        bleu = BLEU(lowercase=lowercase)
    # sentence statistics (n-gram matches and totals, lengths) summed per resampling: the same
    # private sacreBLEU helpers its own significance tests use (sacrebleu >= 2.0)
    stats = [np.asarray(bleu._extract_corpus_statistics(list(x), [list(refs)]), dtype=np.int64)
             for x in (a, b)]
    n = len(refs)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=samples)

    def scores(st: Any) -> Any:
        return np.array([bleu._compute_score_from_stats(list(row)).score
                         for row in weights @ st])

    diff = scores(stats[0]) - scores(stats[1])
    full = (bleu._compute_score_from_stats(list(stats[0].sum(0))).score
            - bleu._compute_score_from_stats(list(stats[1].sum(0))).score)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"difference": round(float(full), 4), "ci95": [round(float(lo), 4),
                                                           round(float(hi), 4)],
            "samples": samples, "seed": seed, "sentences": n}


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a text file without their newlines."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]
