"""The model a latency measurement times: a randomly initialised SuperTransformer at the super
dims with the task's vocabulary sizes (weights do not matter for latency), the sentence length
and the default number of timed runs. Used by latency_dataset.py, ``train.py --latcpu/--latgpu``
and the search's measured winners."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from hat.corpora import latency_length
from hat.errors import HatConfigError
from hat.latency.measure.timing import DUMMY_TOKEN
from hat.space import SearchSpace

DEFAULT_LATITER = {"cpu": 10, "cuda": 20}  # timed runs per SubTransformer (HAT's repo configs)
WMT_VOCAB = 32768  # HAT's wmt16_en_de joined dictionary


def sentence_length(arch: str, given: int | None = None) -> int:
    """Dummy source length and decoder steps: ``given``, else the task catalogue's for ``arch``
    (23 for IWSLT archs, else 30)."""
    return given or latency_length(arch)


def vocab_sizes(args: Any) -> tuple[int, int]:
    """(source, target) dictionary sizes: the data's dict files, else the config keys."""
    src, tgt = args.lat_src_vocab_size, args.lat_tgt_vocab_size
    data = Path(str(getattr(args, "data", "") or ""))
    s_lang, t_lang = getattr(args, "source_lang", None), getattr(args, "target_lang", None)
    if src is None and s_lang and (data / f"dict.{s_lang}.txt").is_file():
        src = dictionary_size(data / f"dict.{s_lang}.txt")
    if tgt is None and t_lang and (data / f"dict.{t_lang}.txt").is_file():
        tgt = dictionary_size(data / f"dict.{t_lang}.txt")
    src = src or WMT_VOCAB
    tgt = src if getattr(args, "share_all_embeddings", False) else (tgt or src)
    if src <= DUMMY_TOKEN or tgt <= DUMMY_TOKEN:
        raise HatConfigError(f"lat vocabulary sizes must exceed {DUMMY_TOKEN}, got {src}/{tgt}")
    return src, tgt


def dictionary_size(path: str | os.PathLike) -> int:
    """Symbols of a fairseq dictionary file as ``Dictionary.load`` counts them (with the 4
    specials)."""
    from fairseq.data import Dictionary

    return len(Dictionary.load(str(path)))


def build_model(args: Any, seed: int = 1) -> tuple[torch.nn.Module, SearchSpace, dict[str, Any]]:
    """A randomly initialised SuperTransformer at the super dims, its sampling space, and a
    description of it (weights do not matter for latency)."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    from hat.checkpoint import ShapeTask, dummy_dictionary

    src_n, tgt_n = vocab_sizes(args)
    src = dummy_dictionary(src_n)
    tgt = src if args.share_all_embeddings or tgt_n == src_n else dummy_dictionary(tgt_n)
    torch.manual_seed(seed)
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, ShapeTask(src, tgt))
    space = model.space
    info = {"arch": args.arch, "src_vocab": src_n, "tgt_vocab": tgt_n,
            "share_all_embeddings": bool(args.share_all_embeddings),
            "attn_impl": getattr(args, "attn_impl", None)}
    return model, space, info
