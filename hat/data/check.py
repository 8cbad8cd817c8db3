"""Checks of a fairseq data-bin folder before a long run reads it: each dictionary in fairseq's
``<token> <count>`` format, and the binarized splits' token ids within their dictionary (a
dictionary smaller than the one the data was binarized with ends training in an IndexError)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hat.errors import HatConfigError

FULL_SCAN_BYTES = 256 << 20  # a split this small is read whole; a larger one at its ends
SAMPLE_BYTES = 16 << 20  # bytes read at each end (and in 8 places between) of a larger one
OVERWRITE_FLAG = "#fairseq:overwrite"
FAIRSEQ_SPECIALS = 4  # <s> <pad> </s> <unk>, which Dictionary.load puts before the file's


def dictionary_size(path: str | os.PathLike) -> int:
    """Symbols of fairseq dictionary file ``path`` as ``Dictionary.load`` counts them (the 4
    specials and one per line); :class:`HatConfigError` naming the line that is not
    ``<token> <count> [#fairseq:overwrite]`` or repeats a token without that flag."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise HatConfigError(f"{path}, line {line}: not UTF-8 (byte {e.start}); a fairseq "
                             "dictionary is UTF-8 text, one '<token> <count>' a line") from None
    seen = {"<s>", "<pad>", "</s>", "<unk>"}
    lines = text.splitlines()
    for i, raw in enumerate(lines, 1):
        parts = raw.rstrip().rsplit(" ", 1)
        overwrite = len(parts) == 2 and parts[1] == OVERWRITE_FLAG
        if overwrite:
            parts = parts[0].rsplit(" ", 1)
        if len(parts) != 2 or not parts[0] or not _is_int(parts[1]):
            raise HatConfigError(
                f"{path}, line {i}: {raw[:60]!r} is not '<token> <count>' (fairseq's dictionary "
                "format: a token, a space, an integer count); this file is not a fairseq "
                "dictionary: put back the dict.*.txt that fairseq-preprocess wrote with the data")
        if parts[0] in seen and not overwrite:
            raise HatConfigError(
                f"{path}, line {i}: token {parts[0]!r} appears twice (fairseq refuses a repeated "
                f"token without the {OVERWRITE_FLAG} flag); put back the dict.*.txt that "
                "fairseq-preprocess wrote with the data")
        seen.add(parts[0])
    return FAIRSEQ_SPECIALS + len(lines)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def max_token_id(prefix: str | os.PathLike) -> int | None:
    """The largest token id of the binarized dataset ``prefix`` (``.bin`` + ``.idx``); None when
    it is not there, empty or not a format this reads. A split of more than
    :data:`FULL_SCAN_BYTES` is read at its ends and in 8 places between (legacy formats: their
    first and last 1000 sentences)."""
    from fairseq.data import indexed_dataset

    prefix = str(prefix)
    if not (os.path.isfile(prefix + ".bin") and os.path.isfile(prefix + ".idx")):
        return None
    impl = indexed_dataset.infer_dataset_impl(prefix)
    if impl == "mmap":
        dtype = indexed_dataset.MMapIndexedDataset.Index(prefix + ".idx").dtype
        size = os.path.getsize(prefix + ".bin") // np.dtype(dtype).itemsize
        if size == 0:
            return None
        tokens = np.memmap(prefix + ".bin", dtype=dtype, mode="r", shape=(size,))
        return _max_of(tokens, size)
    if impl in ("cached", "lazy"):
        ds = indexed_dataset.IndexedDataset(prefix, fix_lua_indexing=True)
        n = len(ds)
        ids = range(n) if n <= 2000 else [*range(1000), *range(n - 1000, n)]
        return max((int(ds[i].max()) for i in ids if ds.sizes[i] > 0), default=None)
    return None


def _max_of(tokens: np.ndarray, size: int) -> int:
    chunk = 1 << 24
    if size * tokens.itemsize <= FULL_SCAN_BYTES:
        return max(int(tokens[i:i + chunk].max()) for i in range(0, size, chunk))
    n = SAMPLE_BYTES // tokens.itemsize
    starts = [0, size - n, *(int(size * k / 9) for k in range(1, 9))]
    return max(int(tokens[s:s + n].max()) for s in starts)


def split_prefix(folder: str | os.PathLike, split: str, src: str, tgt: str, lang: str
                 ) -> Path | None:
    """``<folder>/<split>.<src>-<tgt>.<lang>`` (or the reversed pair, as fairseq accepts)."""
    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        p = Path(folder) / f"{split}.{pair}.{lang}"
        if p.with_name(p.name + ".idx").is_file():
            return p
    return None


def check_binarized_data(data: str, splits: Iterable[str], src: str | None = None,
                         tgt: str | None = None) -> None:
    """Refuse a data-bin folder (``data``: fairseq's path, folders separated by ':') whose
    dictionary is not fairseq's format or is smaller than the token ids of ``splits``. Missing
    folders, dictionaries and splits are left to the task's own errors."""
    from fairseq.data import data_utils

    folders = [f for f in str(data or "").split(":") if f]
    if not folders or not os.path.isdir(folders[0]):
        return
    if src is None or tgt is None:
        src, tgt = data_utils.infer_language_pair(folders[0])
    if src is None or tgt is None:
        return
    for lang in dict.fromkeys((src, tgt)):
        dict_path = Path(folders[0]) / f"dict.{lang}.txt"
        if not dict_path.is_file():
            continue
        n = dictionary_size(dict_path)
        for folder in folders:
            for split in dict.fromkeys(splits):
                prefix = split_prefix(folder, split, src, tgt, lang)
                biggest = max_token_id(prefix) if prefix is not None else None
                if biggest is None or biggest < n:
                    continue
                raise HatConfigError(
                    f"{prefix}.bin: token id {biggest} is outside the dictionary {dict_path} "
                    f"({n} symbols with fairseq's 4 specials: ids 0-{n - 1}); "
                    "the data was binarized with a larger dictionary. Put back the dict.*.txt "
                    "it was binarized with, or binarize the text again with this dictionary "
                    f"(fairseq-preprocess --srcdict/--tgtdict {dict_path})")
