"""A small synthetic parallel corpus with real translation structure, for tests and smoke runs.

Two invented languages, written with language codes ``src`` and ``tgt``:

* ``src`` is SVO with adjectives before the noun, prepositions, a sentence-final adverb, plural
  nouns marked with ``-s`` and verbs agreeing in number with the subject.
* ``tgt`` is SOV: subject, adverb, postpositional phrase, object followed by the object particle
  ``ke``, then the verb. Adjectives follow the noun in reverse order. Every target noun has a
  lexical gender (m/f); determiners and adjectives agree with their noun in gender and number,
  and the verb agrees with the subject in gender and number.

The lexicon (about 1.5k word forms over both languages) is fixed; ``seed`` only changes which
sentences are drawn. Sentences are 5-25 tokens, whitespace tokenized, no BPE needed.

Files written by :func:`make_toy_corpus` under ``out_dir``::

    raw/{train,valid,test}.{src,tgt}    tokenized text (input of fairseq-preprocess)
    raw/test.detok.{src,tgt}            detokenized test text (reference for sacrebleu)
    data-bin/                           fairseq binarized data (dict.{src,tgt}.txt,
                                        {train,valid,test}.src-tgt.{src,tgt}.{bin,idx})
    toy_corpus.json                     parameters; a matching re-run returns at once
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from hat.atomic import atomic_write_text

logger = logging.getLogger(__name__)

SRC_LANG = "src"
TGT_LANG = "tgt"
SPLITS = ("train", "valid", "test")
MIN_LEN, MAX_LEN = 5, 25
_FORMAT_VERSION = 1
_LEXICON_SEED = 20200705

# Target agreement suffixes, keyed by (gender, number).
_ADJ_SUFFIX = {("m", "sg"): "o", ("f", "sg"): "a", ("m", "pl"): "i", ("f", "pl"): "e"}
_VERB_SUFFIX = {("m", "sg"): "ot", ("f", "sg"): "at", ("m", "pl"): "ont", ("f", "pl"): "ant"}
# Determiners: source word per (kind, number) and target word per (kind, gender, number).
_SRC_DET = {
    ("def", "sg"): "ta", ("def", "pl"): "ta",
    ("indef", "sg"): "an", ("indef", "pl"): "som",
    ("dem", "sg"): "tis", ("dem", "pl"): "tes",
}
_TGT_DET = {
    ("def", "m", "sg"): "il", ("def", "f", "sg"): "la", ("def", "m", "pl"): "ilo",
    ("def", "f", "pl"): "lai",
    ("indef", "m", "sg"): "un", ("indef", "f", "sg"): "una", ("indef", "m", "pl"): "dei",
    ("indef", "f", "pl"): "dee",
    ("dem", "m", "sg"): "kesto", ("dem", "f", "sg"): "kesta", ("dem", "m", "pl"): "kesti",
    ("dem", "f", "pl"): "keste",
}
_CONJ = {"und": "e", "bat": "ma"}
_OBJ_PARTICLE = "ke"


@dataclass
class Lexicon:
    """Parallel stems: entry ``i`` of a source list translates entry ``i`` of the target list."""

    nouns_src: list[str] = field(default_factory=list)
    nouns_tgt: list[str] = field(default_factory=list)
    genders: list[str] = field(default_factory=list)
    adjs_src: list[str] = field(default_factory=list)
    adjs_tgt: list[str] = field(default_factory=list)
    verbs_src: list[str] = field(default_factory=list)
    verbs_tgt: list[str] = field(default_factory=list)
    advs_src: list[str] = field(default_factory=list)
    advs_tgt: list[str] = field(default_factory=list)
    preps_src: list[str] = field(default_factory=list)
    preps_tgt: list[str] = field(default_factory=list)


def _reserved_words() -> set[str]:
    words = set(_SRC_DET.values()) | set(_TGT_DET.values())
    words |= set(_CONJ) | set(_CONJ.values()) | {_OBJ_PARTICLE, ".", ","}
    return words


def build_lexicon(n_nouns: int = 200, n_adjs: int = 60, n_verbs: int = 80, n_advs: int = 20,
                  n_preps: int = 8) -> Lexicon:
    """Build the fixed invented lexicon; every surface form is unique across both languages."""
    rng = random.Random(_LEXICON_SEED)
    used = _reserved_words()
    src_cons, tgt_cons = "bdfgklmnprstvz", "cdhjklmnqrstwx"

    def fresh(consonants: str, vowels: str, suffixes: tuple[str, ...], end: str = "") -> str:
        while True:
            n_syll = rng.choice((2, 2, 3))
            stem = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(n_syll))
            stem += end
            forms = {stem + s for s in suffixes}
            if len(forms) == len(suffixes) and not forms & used:
                used.update(forms)
                return stem

    lex = Lexicon()
    for _ in range(n_nouns):
        lex.nouns_src.append(fresh(src_cons, "aeiou", ("", "s")))
        lex.nouns_tgt.append(fresh(tgt_cons, "aeiuy", ("", "n")))
        lex.genders.append(rng.choice("mf"))
    adj_sfx = tuple(sorted(set(_ADJ_SUFFIX.values())))
    verb_sfx = tuple(sorted(set(_VERB_SUFFIX.values())))
    for _ in range(n_adjs):
        lex.adjs_src.append(fresh(src_cons, "aeiou", ("",), end="ig"))
        lex.adjs_tgt.append(fresh(tgt_cons, "aeiuy", adj_sfx, end="r"))
    for _ in range(n_verbs):
        lex.verbs_src.append(fresh(src_cons, "aeiou", ("e", "en"), end="d"))
        lex.verbs_tgt.append(fresh(tgt_cons, "aeiuy", verb_sfx, end="v"))
    for _ in range(n_advs):
        lex.advs_src.append(fresh(src_cons, "aeiou", ("",), end="lik"))
        lex.advs_tgt.append(fresh(tgt_cons, "aeiuy", ("",), end="men"))
    for _ in range(n_preps):
        lex.preps_src.append(fresh(src_cons, "aeiou", ("",)))
        lex.preps_tgt.append(fresh(tgt_cons, "aeiuy", ("",)))
    return lex


def _zipf_weights(n: int) -> list[float]:
    return [1.0 / (i + 8) for i in range(n)]


class _Generator:
    """Draws aligned (source tokens, target tokens) sentence pairs from the grammar."""

    def __init__(self, lex: Lexicon, seed: int) -> None:
        self.lex = lex
        self.rng = random.Random(seed)
        self.noun_w = _zipf_weights(len(lex.nouns_src))
        self.verb_w = _zipf_weights(len(lex.verbs_src))
        self.adj_w = _zipf_weights(len(lex.adjs_src))

    def _pick(self, n: int, weights: list[float]) -> int:
        return self.rng.choices(range(n), weights=weights)[0]

    def noun_phrase(self) -> tuple[list[str], list[str], str, str]:
        """Return (src tokens, tgt tokens, gender, number) of a determiner-adjectives-noun NP."""
        lex, rng = self.lex, self.rng
        noun = self._pick(len(lex.nouns_src), self.noun_w)
        gender = lex.genders[noun]
        number = "pl" if rng.random() < 0.35 else "sg"
        kind = rng.choices(("def", "indef", "dem"), weights=(5, 3, 1))[0]
        n_adj = rng.choices((0, 1, 2), weights=(5, 3, 1))[0]
        adjs = [self._pick(len(lex.adjs_src), self.adj_w) for _ in range(n_adj)]
        src_noun = lex.nouns_src[noun] + ("s" if number == "pl" else "")
        tgt_noun = lex.nouns_tgt[noun] + ("n" if number == "pl" else "")
        src = [_SRC_DET[kind, number]] + [lex.adjs_src[a] for a in adjs] + [src_noun]
        tgt_adjs = [lex.adjs_tgt[a] + _ADJ_SUFFIX[gender, number] for a in reversed(adjs)]
        tgt = [_TGT_DET[kind, gender, number], tgt_noun] + tgt_adjs
        return src, tgt, gender, number

    def clause(self) -> tuple[list[str], list[str]]:
        """SVO [PP] [ADV] in the source; S [ADV] [PP] O ke V in the target."""
        lex, rng = self.lex, self.rng
        subj_s, subj_t, gender, number = self.noun_phrase()
        obj_s, obj_t, _, _ = self.noun_phrase()
        verb = self._pick(len(lex.verbs_src), self.verb_w)
        verb_s = lex.verbs_src[verb] + ("en" if number == "pl" else "e")
        verb_t = lex.verbs_tgt[verb] + _VERB_SUFFIX[gender, number]
        pp_s: list[str] = []
        pp_t: list[str] = []
        if rng.random() < 0.4:
            prep = rng.randrange(len(lex.preps_src))
            np_s, np_t, _, _ = self.noun_phrase()
            pp_s, pp_t = [lex.preps_src[prep]] + np_s, np_t + [lex.preps_tgt[prep]]
        adv_s: list[str] = []
        adv_t: list[str] = []
        if rng.random() < 0.3:
            adv = rng.randrange(len(lex.advs_src))
            adv_s, adv_t = [lex.advs_src[adv]], [lex.advs_tgt[adv]]
        src = subj_s + [verb_s] + obj_s + pp_s + adv_s
        tgt = subj_t + adv_t + pp_t + obj_t + [_OBJ_PARTICLE, verb_t]
        return src, tgt

    def sentence(self) -> tuple[str, str]:
        """One sentence pair (tokenized, space separated) of MIN_LEN..MAX_LEN tokens per side."""
        while True:
            src, tgt = self.clause()
            if self.rng.random() < 0.35:
                conj = self.rng.choice(sorted(_CONJ))
                src2, tgt2 = self.clause()
                src += [",", conj] + src2
                tgt += [",", _CONJ[conj]] + tgt2
            src.append(".")
            tgt.append(".")
            if all(MIN_LEN <= len(s) <= MAX_LEN for s in (src, tgt)):
                return " ".join(src), " ".join(tgt)


def generate_corpus(n_train: int = 6000, n_valid: int = 300, n_test: int = 300,
                    seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Return ``{split: [(src, tgt), ...]}``; no source sentence occurs twice across splits."""
    gen = _Generator(build_lexicon(), seed)
    seen: set[str] = set()
    corpus: dict[str, list[tuple[str, str]]] = {}
    for split, n in zip(SPLITS, (n_train, n_valid, n_test)):
        pairs: list[tuple[str, str]] = []
        while len(pairs) < n:
            src, tgt = gen.sentence()
            if src not in seen:
                seen.add(src)
                pairs.append((src, tgt))
        corpus[split] = pairs
    return corpus


def detokenize(line: str) -> str:
    """Detokenize a toy sentence: attach ``.`` and ``,`` to the preceding word."""
    return re.sub(r" ([.,])", r"\1", line.strip())


def _write_lines(path: Path, lines: list[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _data_bin_complete(data_bin: Path) -> bool:
    names = [f"dict.{SRC_LANG}.txt", f"dict.{TGT_LANG}.txt"]
    names += [f"{split}.{SRC_LANG}-{TGT_LANG}.{lang}.{ext}" for split in SPLITS
              for lang in (SRC_LANG, TGT_LANG) for ext in ("bin", "idx")]
    return all((data_bin / name).is_file() for name in names)


def make_toy_corpus(out_dir: Path, n_train: int = 6000, seed: int = 0,
                    joined_dictionary: bool = True, n_valid: int = 300, n_test: int = 300,
                    workers: int = 1) -> Path:
    """Write the toy corpus under ``out_dir`` and binarize it; return the data-bin directory.

    A second call with the same arguments on a complete ``out_dir`` returns at once.
    """
    from hat.data.text import fairseq_preprocess

    out_dir = Path(out_dir)
    params = {"version": _FORMAT_VERSION, "n_train": n_train, "n_valid": n_valid,
              "n_test": n_test, "seed": seed, "joined_dictionary": joined_dictionary}
    manifest = out_dir / "toy_corpus.json"
    data_bin = out_dir / "data-bin"
    if manifest.is_file() and _data_bin_complete(data_bin):
        try:
            if json.loads(manifest.read_text(encoding="utf-8")) == params:
                logger.info("toy corpus already in %s", out_dir)
                return data_bin
        except json.JSONDecodeError:
            pass
    manifest.unlink(missing_ok=True)
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    corpus = generate_corpus(n_train, n_valid, n_test, seed)
    for split, pairs in corpus.items():
        _write_lines(raw / f"{split}.{SRC_LANG}", [s for s, _ in pairs])
        _write_lines(raw / f"{split}.{TGT_LANG}", [t for _, t in pairs])
    _write_lines(raw / f"test.detok.{SRC_LANG}", [detokenize(s) for s, _ in corpus["test"]])
    _write_lines(raw / f"test.detok.{TGT_LANG}", [detokenize(t) for _, t in corpus["test"]])
    fairseq_preprocess(raw, data_bin, SRC_LANG, TGT_LANG, joined_dictionary=joined_dictionary,
                       workers=workers)
    _write_lines(manifest, [json.dumps(params, sort_keys=True)])
    logger.info("toy corpus written to %s", out_dir)
    return data_bin
