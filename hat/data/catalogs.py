"""Gettext catalogs as translation pairs: a reader of GNU ``.mo`` files and the cleaning rules
that turn software messages into sentence pairs (see :mod:`hat.data.debian` for the choices:
contexts, plurals, fuzzy entries, header).
"""

from __future__ import annotations

import html
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from hat.data.recipes import DataPrepError

# --------------------------------------------------------------------------------------------
# GNU .mo files
# --------------------------------------------------------------------------------------------

MO_MAGIC = 0x950412DE


@dataclass(frozen=True)
class MoEntry:
    """One message of a .mo catalog (``msgstrs`` has one string per plural form)."""

    context: str | None
    msgid: str
    msgid_plural: str | None
    msgstrs: tuple[str, ...]


def read_mo(data: bytes, name: str = "<mo>") -> list[MoEntry]:
    """Parse a GNU .mo catalog (either byte order); entries in file order, header included."""
    if len(data) < 20:
        raise DataPrepError(f"{name}: not a .mo file ({len(data)} bytes, shorter than a header)")
    for order in ("<", ">"):
        if struct.unpack_from(order + "I", data)[0] == MO_MAGIC:
            break
    else:
        raise DataPrepError(f"{name}: not a .mo file (magic {data[:4].hex()}, expected "
                            "950412de in either byte order)")
    revision, count, orig_off, trans_off = struct.unpack_from(order + "4I", data, 4)
    if revision >> 16 > 1:
        raise DataPrepError(f"{name}: unsupported .mo major revision {revision >> 16}")

    def table(offset: int) -> list[bytes]:
        if offset + 8 * count > len(data):
            raise DataPrepError(f"{name}: string table at {offset} ({count} entries) runs past "
                                f"the end of the file ({len(data)} bytes)")
        out = []
        for i in range(count):
            length, start = struct.unpack_from(order + "2I", data, offset + 8 * i)
            if start + length > len(data):
                raise DataPrepError(f"{name}: string {i} at {start}+{length} runs past the end "
                                    f"of the file ({len(data)} bytes)")
            out.append(data[start:start + length])
        return out

    originals, translations = table(orig_off), table(trans_off)
    charset = "utf-8"
    entries = []
    for raw_id, raw_str in zip(originals, translations):
        if not raw_id:  # the header: find its charset (all de/fr catalogs here are UTF-8)
            m = re.search(rb"charset=([\w-]+)", raw_str)
            charset = m.group(1).decode("ascii") if m else "utf-8"
        try:
            msgid, msgstr = raw_id.decode(charset), raw_str.decode(charset)
        except (UnicodeDecodeError, LookupError):
            msgid = raw_id.decode("utf-8", "replace")
            msgstr = raw_str.decode("utf-8", "replace")
        context = None
        if "\x04" in msgid:
            context, msgid = msgid.split("\x04", 1)
        singular, _, plural = msgid.partition("\x00")
        entries.append(MoEntry(context, singular, plural if "\x00" in msgid else None,
                               tuple(msgstr.split("\x00"))))
    return entries


def plural_count(entries: Sequence[MoEntry]) -> int | None:
    """``nplurals`` of the catalog's header (the entry with an empty msgid), or None."""
    for e in entries:
        if e.msgid == "" and e.context is None:
            m = re.search(r"nplurals\s*=\s*(\d+)", e.msgstrs[0])
            return int(m.group(1)) if m else None
    return None


def catalog_pairs(entries: Sequence[MoEntry]) -> Iterator[tuple[str | None, str, str]]:
    """Yield ``(context, source, target)`` of every non-header message (see the module doc
    for plurals); the header yields ``(None, "", header)`` so that it can be counted."""
    two_forms = plural_count(entries) == 2
    for e in entries:
        yield e.context, e.msgid, e.msgstrs[0]
        if e.msgid_plural is not None and two_forms and len(e.msgstrs) == 2:
            yield e.context, e.msgid_plural, e.msgstrs[1]


# --------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------

CLEAN_RULES = (  # removal rules, in the order they are tried
    "header", "empty_translation", "translator_credits", "markup_only", "placeholder_only",
    "untranslated", "length", "length_ratio", "duplicate_pair")
EDIT_RULES = ("whitespace_normalized", "accelerator_removed", "markup_stripped")

_WS = re.compile(r"\s+")
_TAG = re.compile(r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>")
_BLOCK_TAG = re.compile(r"</?(?:br|p|div|li|ul|ol|tr|td|th|table|h\d|qt|html|body)\b[^<>]*>",
                        re.I)
_PAREN_ACCEL = re.compile(r"\s*\([&_~][^\W_]\)")  # "(&F)", "(_F)" after a translated label
_AMP_ACCEL = re.compile(r"&(?=[^\W_])(?![A-Za-z]+;|#\d+;|#x[0-9a-fA-F]+;)")
_UNDERSCORE_ACCEL = re.compile(r"_(?=[^\W_])")
_TILDE_ACCEL = re.compile(r"(?<![\w/])~(?=[^\W_])")
_PLACEHOLDER = re.compile(r"""
      %(?:\([^)]*\))?[-+ #0']*(?:\d+\$)?(?:\d+|\*)?(?:\.(?:\d+|\*))?
        (?:hh|h|ll|l|L|q|j|z|t|I64|I32|I)?[diouxXeEfFgGaAcCsSpn@%]   # printf, %(name)s, %1$s
    | %\d+                                                            # Qt %1
    | \{[^{}\s]*\}                                                    # {0} {name}
    | \$\{?[A-Za-z_]\w*\}?                                            # $VAR ${VAR}
    | (?:https?|ftp|file|mailto):\S+ | www\.\S+ | [\w.+-]+@[\w-]+\.[\w.-]+  # URLs, e-mail
    | (?:~|\.{1,2})?/[\w.~/-]+                                        # paths
    """, re.X)
_LETTER = re.compile(r"[^\W\d_]")
_CREDITS_IDS = {"translator-credits", "translator_credits", "translator credits", "your names",
                "your emails"}
_CREDITS_CONTEXTS = {"NAME OF TRANSLATORS", "EMAIL OF TRANSLATORS"}


def strip_accelerators(text: str) -> str:
    """Remove keyboard accelerator marks: ``&File`` (``&&`` is a literal ``&``), ``_File`` /
    ``Ö_ffnen`` (only when the string has a single underscore: more are identifiers),
    ``~File`` and a trailing ``(&F)``; HTML entities are left alone."""
    text = _PAREN_ACCEL.sub("", text)
    if "&" in text:
        text = _AMP_ACCEL.sub("", text.replace("&&", "\x00")).replace("\x00", "&")
    if text.count("_") == 1:
        text = _UNDERSCORE_ACCEL.sub("", text)
    if text.count("~") == 1:
        text = _TILDE_ACCEL.sub("", text)
    return text


def strip_markup(text: str) -> str:
    """Remove XML/HTML tags (block tags become a space) and decode HTML entities."""
    text = _TAG.sub("", _BLOCK_TAG.sub(" ", text))
    return html.unescape(text)


def has_words(text: str) -> bool:
    """True when ``text`` has a letter outside placeholders, URLs, e-mail addresses and paths."""
    return _LETTER.search(_PLACEHOLDER.sub(" ", text)) is not None


def normalize_source(text: str) -> str:
    """The split key of a source: casefolded, whitespace collapsed."""
    return _WS.sub(" ", text).strip().casefold()


@dataclass
class Cleaner:
    """Applies the cleaning rules to ``(context, source, target)`` triples, counting each."""

    min_tokens: int = 1
    max_tokens: int = 80
    max_ratio: float = 3.0
    ratio_min_tokens: int = 5  # the ratio rule only looks at pairs whose longer side has >= this
    counts: dict[str, int] = field(default_factory=dict)
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.counts = {rule: 0 for rule in CLEAN_RULES + EDIT_RULES} | self.counts

    def params(self) -> dict:
        """The settings (for step markers and the manifest)."""
        return {"min_tokens": self.min_tokens, "max_tokens": self.max_tokens,
                "max_ratio": self.max_ratio, "ratio_min_tokens": self.ratio_min_tokens}

    def _drop(self, rule: str) -> None:
        self.counts[rule] += 1

    def _edit(self, text: str) -> tuple[str, set[str]]:
        edits = set()
        out = _WS.sub(" ", text).strip()
        if out != text:
            edits.add("whitespace_normalized")
        stripped = strip_accelerators(out)
        if stripped != out:
            edits.add("accelerator_removed")
            out = stripped
        if _TAG.search(out) or re.search(r"&(?:[A-Za-z]+|#\d+);", out):
            edits.add("markup_stripped")
            out = _WS.sub(" ", strip_markup(out)).strip()
        return out, edits

    def clean(self, context: str | None, source: str, target: str) -> tuple[str, str] | None:
        """The cleaned pair, or None (the rule that removed it is counted)."""
        if source == "":
            return self._drop("header")
        if not target.strip():
            return self._drop("empty_translation")
        if source.strip().lower() in _CREDITS_IDS or context in _CREDITS_CONTEXTS:
            return self._drop("translator_credits")
        src, src_edits = self._edit(source)
        tgt, tgt_edits = self._edit(target)
        for rule in src_edits | tgt_edits:
            self.counts[rule] += 1
        if not src or not tgt:
            return self._drop("markup_only")
        if not has_words(src) or not has_words(tgt):
            return self._drop("placeholder_only")
        if src == tgt:
            return self._drop("untranslated")
        n_src, n_tgt = len(src.split()), len(tgt.split())
        if not (self.min_tokens <= n_src <= self.max_tokens
                and self.min_tokens <= n_tgt <= self.max_tokens):
            return self._drop("length")
        longer, shorter = max(n_src, n_tgt), min(n_src, n_tgt)
        if longer >= self.ratio_min_tokens and longer / shorter > self.max_ratio:
            return self._drop("length_ratio")
        if (src, tgt) in self._seen:
            return self._drop("duplicate_pair")
        self._seen.add((src, tgt))
        return src, tgt


