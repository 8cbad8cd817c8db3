"""The catalog corpus: read a package folder's ``.mo`` files, clean and deduplicate the pairs
and split them (train/valid/test by a hash of the normalised source; the held-out packages
give ``test_unseen``). See :mod:`hat.data.debian` for the choices."""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hat.data.catalogs import (
    Cleaner,
    catalog_pairs,
    normalize_source,
    read_mo,
)
from hat.data.debian.packages import HELD_OUT_PACKAGES, VALID_UNSEEN_PACKAGES
from hat.data.text import MosesProcessor

SPLITS = ("train", "valid", "test", "valid_unseen", "test_unseen")


class SplitKey:
    """The normalised form of a sentence that splits and deduplication compare: what the
    tokenize step makes of it (Moses punctuation normalisation and tokenizer), casefolded and
    whitespace-collapsed. Memoised (catalogs repeat strings)."""

    def __init__(self, lang: str, aggressive_dash: bool = False) -> None:
        self.moses = MosesProcessor(lang, normalize_punct=True, aggressive_dash=aggressive_dash)
        self.memo: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        key = self.memo.get(text)
        if key is None:
            key = self.memo[text] = normalize_source(self.moses(text))
        return key


def split_of(key: str, valid_frac: float, test_frac: float) -> str:
    """train/valid/test by a SHA-256 of a normalised source (independent of any seed)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    x = int.from_bytes(digest[:8], "big") / 2.0**64
    return "valid" if x < valid_frac else "test" if x < valid_frac + test_frac else "train"


@dataclass
class CatalogCorpus:
    """The cleaned pairs of one language pair, per split, with per-package statistics."""

    splits: dict[str, list[tuple[str, str]]]
    packages: list[dict]
    cleaning: dict[str, int]
    unseen_dropped: int
    normalised_duplicates: int = 0


def package_catalogs(catalog_dir: Path, package: str, lang: str) -> list[Path]:
    """The package's catalogs of ``lang`` in name order."""
    folder = catalog_dir / package / lang
    return sorted(folder.glob("*.mo"), key=lambda p: p.name) if folder.is_dir() else []


def build_corpus(catalog_dir: Path, packages: Sequence[str], lang: str,
                 held_out: Iterable[str] = HELD_OUT_PACKAGES, valid_frac: float = 0.015,
                 test_frac: float = 0.015, cleaner: Cleaner | None = None,
                 src_lang: str = "en",
                 valid_unseen: Iterable[str] = VALID_UNSEEN_PACKAGES) -> CatalogCorpus:
    """Read, clean and split the ``lang`` catalogs of ``packages``: train packages first,
    then the ``valid_unseen`` ones, then the held-out (``test_unseen``) ones, each group in
    name order. An unseen split keeps only sources that no earlier group has."""
    cleaner = cleaner or Cleaner()
    src_key, tgt_key = SplitKey(src_lang), SplitKey(lang)
    seen_pairs: set[tuple[str, str]] = set()
    duplicates = 0
    held = set(held_out)
    vheld = set(valid_unseen) - held
    unseen_split = {**{p: "valid_unseen" for p in vheld}, **{p: "test_unseen" for p in held}}
    order = (sorted(p for p in packages if p not in unseen_split)
             + sorted(p for p in packages if p in vheld) + sorted(p for p in packages if p in held))
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    seen_sources: set[str] = set()
    valid_sources: set[str] = set()  # valid_unseen's, kept out of test_unseen
    unseen_dropped = 0
    stats = []
    for package in order:
        version_file = catalog_dir / package / "VERSION"
        version = (version_file.read_text(encoding="utf-8").strip()
                   if version_file.is_file() else "unknown")
        mos = package_catalogs(catalog_dir, package, lang)
        n_entries = n_pairs = 0
        for mo in mos:
            for context, src, tgt in catalog_pairs(read_mo(mo.read_bytes(), str(mo))):
                n_entries += src != ""
                pair = cleaner.clean(context, src, tgt)
                if pair is None:
                    continue
                key = src_key(pair[0])
                both = (key, tgt_key(pair[1]))
                if both in seen_pairs:
                    duplicates += 1
                    continue
                seen_pairs.add(both)
                if package in unseen_split:
                    if key in seen_sources or (package in held and key in valid_sources):
                        unseen_dropped += 1
                        continue
                    splits[unseen_split[package]].append(pair)
                    if package in vheld:  # not in test_unseen either
                        valid_sources.add(key)
                else:
                    seen_sources.add(key)
                    splits[split_of(key, valid_frac, test_frac)].append(pair)
                n_pairs += 1
        stats.append({"package": package, "version": version, "catalogs": len(mos),
                      "messages": n_entries, "pairs": n_pairs,
                      "held_out": unseen_split.get(package, False)})
    stats.sort(key=lambda s: s["package"])
    return CatalogCorpus(splits, stats, dict(cleaner.counts), unseen_dropped, duplicates)


def corpus_stats(pairs: Sequence[tuple[str, str]]) -> dict:
    """Pairs and mean/median whitespace tokens per side."""
    out: dict = {"pairs": len(pairs)}
    for side, name in ((0, "src"), (1, "tgt")):
        lengths = [len(p[side].split()) for p in pairs] or [0]
        out[f"{name}_tokens_mean"] = round(statistics.fmean(lengths), 2)
        out[f"{name}_tokens_median"] = statistics.median(lengths)
    return out
