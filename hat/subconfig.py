"""A SubTransformer: the table of the ten searchable dimensions, :class:`SubConfig` (one
SubTransformer's values) and HAT's SubTransformer YAML files.

The search space over these values (bounds, choices, sampling, genes) is
:class:`hat.space.SearchSpace`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hat.errors import HatConfigError, where
from hat.yamlio import load_yaml, write_yaml

ARBITRARY_CHOICES = (-1, 1, 2)


@dataclass(frozen=True)
class Dimension:
    """One searchable dimension: the one table that validation, genes, YAML keys and the
    command-line options read (the SubConfig and SearchSpace fields are checked against it)."""

    field: str  # SubConfig field
    yaml_key: str  # HAT's SubTransformer YAML key (and command-line option)
    choice: str  # SearchSpace field: the values the search may take
    bound: str | None  # SearchSpace field of the SuperTransformer that caps it (None: none)
    count: str | None = None  # per-layer list: the layer-number field it has one value for


# In HAT's SubTransformer-YAML order; the per-layer lists of one side in gene order.
DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("encoder_embed_dim", "encoder-embed-dim-subtransformer", "encoder_embed_choice",
              "encoder_embed_dim"),
    Dimension("decoder_embed_dim", "decoder-embed-dim-subtransformer", "decoder_embed_choice",
              "decoder_embed_dim"),
    Dimension("encoder_ffn_embed_dim", "encoder-ffn-embed-dim-all-subtransformer",
              "encoder_ffn_embed_dim_choice", "encoder_ffn_embed_dim", "encoder_layer_num"),
    Dimension("decoder_ffn_embed_dim", "decoder-ffn-embed-dim-all-subtransformer",
              "decoder_ffn_embed_dim_choice", "decoder_ffn_embed_dim", "decoder_layer_num"),
    Dimension("encoder_layer_num", "encoder-layer-num-subtransformer",
              "encoder_layer_num_choice", "encoder_layers"),
    Dimension("decoder_layer_num", "decoder-layer-num-subtransformer",
              "decoder_layer_num_choice", "decoder_layers"),
    Dimension("encoder_self_attention_heads", "encoder-self-attention-heads-all-subtransformer",
              "encoder_self_attention_heads_choice", "encoder_attention_heads",
              "encoder_layer_num"),
    Dimension("decoder_self_attention_heads", "decoder-self-attention-heads-all-subtransformer",
              "decoder_self_attention_heads_choice", "decoder_attention_heads",
              "decoder_layer_num"),
    Dimension("decoder_ende_attention_heads", "decoder-ende-attention-heads-all-subtransformer",
              "decoder_ende_attention_heads_choice", "decoder_attention_heads",
              "decoder_layer_num"),
    Dimension("decoder_arbitrary_ende_attn", "decoder-arbitrary-ende-attn-all-subtransformer",
              "decoder_arbitrary_ende_attn_choice", None, "decoder_layer_num"),
)
DIMENSION = {d.field: d for d in DIMENSIONS}
# views of the table
SUB_YAML_KEYS = {d.field: d.yaml_key for d in DIMENSIONS}  # field -> YAML key
CHOICE_KEYS = tuple(d.choice for d in DIMENSIONS)
ENCODER_LISTS = tuple(d.field for d in DIMENSIONS if d.count == "encoder_layer_num")
DECODER_LISTS = tuple(d.field for d in DIMENSIONS if d.count == "decoder_layer_num")
HEAD_FIELDS = tuple(d.field for d in DIMENSIONS if d.field.endswith("_heads"))

FEATURE_NAMES = (
    "encoder_embed_dim",
    "encoder_layer_num",
    "encoder_ffn_embed_dim_avg",
    "encoder_self_attention_heads_avg",
    "decoder_embed_dim",
    "decoder_layer_num",
    "decoder_ffn_embed_dim_avg",
    "decoder_self_attention_heads_avg",
    "decoder_ende_attention_heads_avg",
    "decoder_arbitrary_ende_attn_avg",
)


def attended_layers(arbitrary: int) -> int:
    """Encoder layers one decoder layer attends to: -1 -> 1 (the last), 1 -> 2, 2 -> 3."""
    return 1 if arbitrary == -1 else arbitrary + 1


@dataclass(frozen=True)
class SubConfig:
    """One SubTransformer. Per-layer tuples hold exactly ``*_layer_num`` entries."""

    encoder_embed_dim: int
    encoder_layer_num: int
    encoder_ffn_embed_dim: tuple[int, ...]
    encoder_self_attention_heads: tuple[int, ...]
    decoder_embed_dim: int
    decoder_layer_num: int
    decoder_ffn_embed_dim: tuple[int, ...]
    decoder_self_attention_heads: tuple[int, ...]
    decoder_ende_attention_heads: tuple[int, ...]
    decoder_arbitrary_ende_attn: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ENCODER_LISTS + DECODER_LISTS:
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> SubConfig:
        """Build from a flat dict of SubConfig field names; lists past layer_num are cut."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if d.get(n) is None]
        if missing:
            keys = ", ".join(SUB_YAML_KEYS[n] for n in missing)
            raise HatConfigError(f"{where(source)}SubTransformer config is missing {keys}")
        vals: dict[str, Any] = {}
        for n in names:
            v = d[n]
            if n in ENCODER_LISTS + DECODER_LISTS:
                if isinstance(v, (int, float)):
                    v = [v]
                if not isinstance(v, (list, tuple)):
                    raise HatConfigError(
                        f"{where(source)}{SUB_YAML_KEYS[n]} must be a list of integers, got {v!r}"
                    )
            vals[n] = as_int(v, SUB_YAML_KEYS[n], source)
        for n in ENCODER_LISTS:
            _check_len(vals, n, "encoder_layer_num", source)
        for n in DECODER_LISTS:
            _check_len(vals, n, "decoder_layer_num", source)
        enc_n, dec_n = vals["encoder_layer_num"], vals["decoder_layer_num"]
        for n in ENCODER_LISTS:
            vals[n] = vals[n][:enc_n]
        for n in DECODER_LISTS:
            vals[n] = vals[n][:dec_n]
        return cls(**vals)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict with list values (JSON/YAML friendly)."""
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
        }

    def key(self) -> str:
        """Canonical text of this SubTransformer (the search's memo key)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """Short stable hash (12 hex digits of the SHA-1 of :meth:`key`): the one that
        ``--subnet-log``, the search's CSVs and summaries all write, so they join."""
        return key_hash(self.key())

    def describe(self) -> str:
        """One-line human summary."""
        return (
            f"enc {self.encoder_embed_dim}x{self.encoder_layer_num}"
            f" ffn{list(self.encoder_ffn_embed_dim)}"
            f" h{list(self.encoder_self_attention_heads)} | dec {self.decoder_embed_dim}"
            f"x{self.decoder_layer_num} ffn{list(self.decoder_ffn_embed_dim)}"
            f" h{list(self.decoder_self_attention_heads)}"
            f" eh{list(self.decoder_ende_attention_heads)}"
            f" arb{list(self.decoder_arbitrary_ende_attn)}"
        )


def key_hash(key: str) -> str:
    """:meth:`SubConfig.hash` of a canonical text made by :meth:`SubConfig.key`."""
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def as_int(v: Any, key: str, source: str | None) -> Any:
    """``v`` (a number or a list of numbers) as int(s); a non-integer value names ``key``."""
    def one(x: Any) -> int:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or int(x) != x:
            raise HatConfigError(f"{where(source)}{key} must hold integers, got {x!r}")
        return int(x)

    return [one(x) for x in v] if isinstance(v, (list, tuple)) else one(v)


def _check_len(vals: dict[str, Any], name: str, num: str, source: str | None) -> None:
    n = vals[num]
    if len(vals[name]) < n:
        raise HatConfigError(
            f"{where(source)}{SUB_YAML_KEYS[name]} has {len(vals[name])} entries but "
            f"{SUB_YAML_KEYS[num]} is {n}: one value per layer is required"
        )


def values_of(cfg: SubConfig, name: str) -> list[int]:
    """The values of one field of ``cfg`` as a list (a single value as a 1-element list)."""
    v = getattr(cfg, name)
    return list(v) if isinstance(v, tuple) else [v]


# ----- SubTransformer YAML files ------------------------------------------------------------
def read_subtransformer_yaml(path: str | os.PathLike, strict_keys: bool = True) -> SubConfig:
    """Read a SubTransformer YAML with HAT's ``*-subtransformer`` keys."""
    path = Path(path)
    data = load_yaml(path)
    by_key = {v: k for k, v in SUB_YAML_KEYS.items()}
    if strict_keys:
        unknown = [k for k in data if k not in by_key]
        if unknown:
            raise HatConfigError(
                f"{path}: unknown key '{unknown[0]}' in a SubTransformer YAML; allowed keys: "
                + ", ".join(SUB_YAML_KEYS.values())
            )
    return SubConfig.from_dict({by_key[k]: v for k, v in data.items() if k in by_key}, str(path))


def subtransformer_yaml_dict(cfg: SubConfig) -> dict[str, Any]:
    """HAT's YAML keys -> values for one SubTransformer."""
    d = cfg.to_dict()
    return {SUB_YAML_KEYS[k]: d[k] for k in SUB_YAML_KEYS}


def write_subtransformer_yaml(
    cfg: SubConfig, path: str | os.PathLike, header: str | None = None
) -> None:
    """Write a SubTransformer YAML atomically (lists cut to layer_num)."""
    write_yaml(path, subtransformer_yaml_dict(cfg), header)
