"""The search space: the one object that samples, validates, encodes and describes SubTransformers.

A SubTransformer is a :class:`SubConfig`; a :class:`SearchSpace` knows the SuperTransformer's
dimensions and the per-dimension choices. Everything else (model, profiler, latency features,
evolutionary genes, YAML files) goes through these two classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
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
            vals[n] = _as_int(v, SUB_YAML_KEYS[n], source)
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


def _as_int(v: Any, key: str, source: str | None) -> Any:
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


@dataclass(frozen=True)
class SearchSpace:
    """SuperTransformer dimensions plus the choices a SubTransformer may take."""

    encoder_embed_dim: int = 640
    decoder_embed_dim: int = 640
    encoder_ffn_embed_dim: int = 3072
    decoder_ffn_embed_dim: int = 3072
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    qkv_dim: int = 512
    encoder_embed_choice: tuple[int, ...] = (640, 512)
    decoder_embed_choice: tuple[int, ...] = (640, 512)
    encoder_layer_num_choice: tuple[int, ...] = (6,)
    decoder_layer_num_choice: tuple[int, ...] = (6, 5, 4, 3, 2, 1)
    encoder_ffn_embed_dim_choice: tuple[int, ...] = (3072, 2048, 1024)
    decoder_ffn_embed_dim_choice: tuple[int, ...] = (3072, 2048, 1024)
    encoder_self_attention_heads_choice: tuple[int, ...] = (8, 4)
    decoder_self_attention_heads_choice: tuple[int, ...] = (8, 4)
    decoder_ende_attention_heads_choice: tuple[int, ...] = (8, 4)
    decoder_arbitrary_ende_attn_choice: tuple[int, ...] = (-1, 1, 2)
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith("_choice"):
                v = getattr(self, f.name)
                if isinstance(v, (int, float)):
                    v = [v]
                object.__setattr__(self, f.name, tuple(_as_int(v, _key(f.name), self.source)))
                if not getattr(self, f.name):
                    raise HatConfigError(f"{where(self.source)}{_key(f.name)} must not be empty")
        self._check_choices()

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_args(cls, args: Any, source: str | None = None) -> SearchSpace:
        """Read super dims and ``*_choice`` lists from a fairseq/argparse namespace."""
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "source":
                continue
            v = getattr(args, f.name, None)
            if v is not None:
                kw[f.name] = v
        return cls(source=source, **kw)

    # ----- sampling -----------------------------------------------------------------------
    def sample_distinct(self, n: int, seed: int) -> list[SubConfig]:
        """``n`` distinct :meth:`sample` draws from ``random.Random(seed)``, in draw order (the
        fidelity check's random SubTransformers)."""
        rng, cfgs = random.Random(seed), []
        while len(cfgs) < n:
            c = self.sample(rng)
            if c not in cfgs:
                cfgs.append(c)
        return cfgs

    def sample(self, rng: random.Random) -> SubConfig:
        """Uniform sample in HAT's draw order (reproduces the original's stream for a seed)."""
        ch = rng.choice
        enc_d = ch(self.encoder_embed_choice)
        dec_d = ch(self.decoder_embed_choice)
        enc_n = ch(self.encoder_layer_num_choice)
        dec_n = ch(self.decoder_layer_num_choice)
        enc_ffn, enc_h = [], []
        for _ in range(enc_n):
            enc_ffn.append(ch(self.encoder_ffn_embed_dim_choice))
            enc_h.append(ch(self.encoder_self_attention_heads_choice))
        dec_ffn, dec_h, dec_eh = [], [], []
        for _ in range(dec_n):
            dec_ffn.append(ch(self.decoder_ffn_embed_dim_choice))
            dec_h.append(ch(self.decoder_self_attention_heads_choice))
            dec_eh.append(ch(self.decoder_ende_attention_heads_choice))
        arb = [ch(self.decoder_arbitrary_ende_attn_choice) for _ in range(self.decoder_layers)]
        return SubConfig(
            enc_d, enc_n, enc_ffn, enc_h, dec_d, dec_n, dec_ffn, dec_h, dec_eh, arb[:dec_n]
        )

    def sample_for_update(self, update_num: int, seed: int = 0) -> SubConfig:
        """The SubTransformer of one update: the RNG is re-seeded with the update number."""
        return self.sample(random.Random(update_num + seed))

    def largest(self, arbitrary: int = 1) -> SubConfig:
        """Largest SubTransformer (HAT validates it with arbitrary attention 1 everywhere)."""
        return self._extreme(max, arbitrary)

    def smallest(self, arbitrary: int = 1) -> SubConfig:
        """Smallest SubTransformer (HAT validates it with arbitrary attention 1 everywhere)."""
        return self._extreme(min, arbitrary)

    def _extreme(self, pick: Any, arbitrary: int) -> SubConfig:
        en, dn = pick(self.encoder_layer_num_choice), pick(self.decoder_layer_num_choice)
        return SubConfig(
            pick(self.encoder_embed_choice),
            en,
            [pick(self.encoder_ffn_embed_dim_choice)] * en,
            [pick(self.encoder_self_attention_heads_choice)] * en,
            pick(self.decoder_embed_choice),
            dn,
            [pick(self.decoder_ffn_embed_dim_choice)] * dn,
            [pick(self.decoder_self_attention_heads_choice)] * dn,
            [pick(self.decoder_ende_attention_heads_choice)] * dn,
            [arbitrary] * dn,
        )

    # ----- validation ---------------------------------------------------------------------
    def _check_choices(self) -> None:
        src = self.source
        if self.qkv_dim <= 0:
            raise HatConfigError(f"{where(src)}qkv-dim must be positive, got {self.qkv_dim}")
        limits = {d.choice: (getattr(self, d.bound), d.bound) for d in DIMENSIONS if d.bound}
        for name, (limit, bound) in limits.items():
            for v in getattr(self, name):
                if not 1 <= v <= limit:
                    raise HatConfigError(
                        f"{where(src)}{_key(name)} contains {v}, outside 1..{limit} "
                        f"(the SuperTransformer's {_key(bound)})"
                    )
        for name in (DIMENSION[f].choice for f in HEAD_FIELDS):
            for v in getattr(self, name):
                if self.qkv_dim % v:
                    raise HatConfigError(
                        f"{where(src)}{_key(name)} contains {v} heads, which do not divide "
                        f"qkv-dim {self.qkv_dim}"
                    )
        for v in self.decoder_arbitrary_ende_attn_choice:
            if v not in ARBITRARY_CHOICES:
                raise HatConfigError(
                    f"{where(src)}decoder-arbitrary-ende-attn-choice contains {v}; "
                    f"allowed values are {list(ARBITRARY_CHOICES)}"
                )
            if attended_layers(v) > self.encoder_layers:
                raise HatConfigError(
                    f"{where(src)}decoder-arbitrary-ende-attn-choice contains {v} (attend to the "
                    f"last {attended_layers(v)} encoder layers) but encoder-layers is "
                    f"{self.encoder_layers}"
                )

    def validate(self, cfg: SubConfig, source: str | None = None, strict: bool = False) -> None:
        """Raise HatConfigError unless ``cfg`` fits the SuperTransformer.

        ``strict`` additionally requires every value to be one of the space's choices.
        """
        src = where(source)
        # layer numbers first (the lists' lengths depend on them), then the table's order
        bounded = sorted((d for d in DIMENSIONS if d.bound),
                         key=lambda d: not d.field.endswith("_layer_num"))
        checks = [(d.field, _values(cfg, d.field), 1, getattr(self, d.bound), _key(d.bound))
                  for d in bounded]
        for name, values, lo, hi, super_key in checks:
            for v in values:
                if not lo <= v <= hi:
                    raise HatConfigError(
                        f"{src}{SUB_YAML_KEYS[name]} = {v} does not fit the SuperTransformer: "
                        f"allowed {lo}..{hi} ({super_key} = {hi})"
                    )
        for name in ENCODER_LISTS:
            self._check_list_len(cfg, name, cfg.encoder_layer_num, "encoder_layer_num", src)
        for name in DECODER_LISTS:
            self._check_list_len(cfg, name, cfg.decoder_layer_num, "decoder_layer_num", src)
        for name in HEAD_FIELDS:
            for h in getattr(cfg, name):
                if self.qkv_dim % h:
                    raise HatConfigError(
                        f"{src}{SUB_YAML_KEYS[name]} = {h} heads do not divide qkv-dim "
                        f"{self.qkv_dim}; allowed: divisors of {self.qkv_dim}"
                    )
        for a in cfg.decoder_arbitrary_ende_attn:
            if a in ARBITRARY_CHOICES and attended_layers(a) > self.encoder_layers:
                raise HatConfigError(
                    f"{src}{SUB_YAML_KEYS['decoder_arbitrary_ende_attn']} = {a} attends to the "
                    f"last {attended_layers(a)} encoder layers but encoder-layers is "
                    f"{self.encoder_layers}"
                )
            if a not in ARBITRARY_CHOICES:
                raise HatConfigError(
                    f"{src}{SUB_YAML_KEYS['decoder_arbitrary_ende_attn']} = {a} is not allowed; "
                    f"allowed values are {list(ARBITRARY_CHOICES)} (-1: last encoder layer, "
                    f"1: last two, 2: last three)"
                )
        if strict:
            self._check_in_choices(cfg, src)

    @staticmethod
    def _check_list_len(cfg: SubConfig, name: str, n: int, num: str, src: str) -> None:
        if len(getattr(cfg, name)) != n:
            raise HatConfigError(
                f"{src}{SUB_YAML_KEYS[name]} has {len(getattr(cfg, name))} entries but "
                f"{SUB_YAML_KEYS[num]} is {n}"
            )

    def _check_in_choices(self, cfg: SubConfig, src: str) -> None:
        order = [d.field for d in DIMENSIONS if d.count is None] + [*ENCODER_LISTS,
                                                                     *DECODER_LISTS]
        for name, values, choice in ((f, _values(cfg, f), DIMENSION[f].choice) for f in order):
            allowed = getattr(self, choice)
            for v in values:
                if v not in allowed:
                    raise HatConfigError(
                        f"{src}{SUB_YAML_KEYS[name]} = {v} is not in the search space; "
                        f"{_key(choice)} allows {list(allowed)}"
                    )

    def contains(self, cfg: SubConfig) -> bool:
        """True when every value of ``cfg`` is one of the space's choices."""
        try:
            self.validate(cfg, strict=True)
        except HatConfigError:
            return False
        return True

    # ----- features and genes -------------------------------------------------------------
    @staticmethod
    def features(cfg: SubConfig) -> list[float]:
        """HAT's 10 latency-predictor features (means over active layers)."""

        def mean(xs: Sequence[float]) -> float:
            return sum(xs) / len(xs)

        return [
            float(cfg.encoder_embed_dim),
            float(cfg.encoder_layer_num),
            mean(cfg.encoder_ffn_embed_dim),
            mean(cfg.encoder_self_attention_heads),
            float(cfg.decoder_embed_dim),
            float(cfg.decoder_layer_num),
            mean(cfg.decoder_ffn_embed_dim),
            mean(cfg.decoder_self_attention_heads),
            mean(cfg.decoder_ende_attention_heads),
            mean([attended_layers(a) for a in cfg.decoder_arbitrary_ende_attn]),
        ]

    def gene_layout(self) -> list[tuple[str, int]]:
        """(SubConfig field, gene positions) in gene order: per side (encoder, then decoder) its
        embed dim, its layer number, then its per-layer lists, one gene per SuperTransformer
        layer (genes past the sampled layer number are dormant)."""
        out: list[tuple[str, int]] = []
        for side, n in (("encoder", self.encoder_layers), ("decoder", self.decoder_layers)):
            out += [(f"{side}_embed_dim", 1), (f"{side}_layer_num", 1)]
            out += [(d.field, n) for d in DIMENSIONS if d.count == f"{side}_layer_num"]
        return out

    @property
    def num_genes(self) -> int:
        """2 + 2*enc_layers + 2 + 4*dec_layers (40 for a 6+6 SuperTransformer)."""
        return sum(k for _, k in self.gene_layout())

    def to_genes(self, cfg: SubConfig, dormant: Sequence[int] | None = None) -> list[int]:
        """Encode as a flat gene list; dormant genes (past layer_num) come from ``dormant``
        (a previous gene list) when given, else repeat the last active value."""
        g: list[int] = []
        for name, k in self.gene_layout():
            values = _values(cfg, name)
            for i in range(len(values), k):
                values.append(dormant[len(g) + i] if dormant is not None else values[-1])
            g += values
        return g

    def from_genes(self, genes: Sequence[int]) -> SubConfig:
        """Decode a gene list (dormant genes ignored)."""
        if len(genes) != self.num_genes:
            raise HatConfigError(f"expected {self.num_genes} genes, got {len(genes)}")
        g = [int(x) for x in genes]
        vals: dict[str, Any] = {}
        at = 0
        for name, k in self.gene_layout():
            vals[name] = g[at : at + k] if DIMENSION[name].count else g[at]
            at += k
        for name in ENCODER_LISTS + DECODER_LISTS:
            vals[name] = vals[name][: vals[DIMENSION[name].count]]
        return SubConfig(**vals)

    def gene_choices(self) -> list[tuple[int, ...]]:
        """The allowed values of every gene position, in gene order."""
        return [getattr(self, DIMENSION[name].choice) for name, k in self.gene_layout()
                for _ in range(k)]

    def sample_genes(self, rng: random.Random) -> list[int]:
        """A sampled SubTransformer as genes, dormant genes drawn uniformly afterwards."""
        cfg = self.sample(rng)
        dormant = [rng.choice(c) for c in self.gene_choices()]
        return self.to_genes(cfg, dormant=dormant)


def _key(name: str) -> str:
    return name.replace("_", "-")


# HAT's spaces: space0 of the WMT tasks (the defaults) and space1 of IWSLT14 De-En
WMT_SPACE0 = SearchSpace()
IWSLT_SPACE1 = SearchSpace(
    encoder_ffn_embed_dim=2048,
    decoder_ffn_embed_dim=2048,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_embed_dim_choice=(2048, 1024, 512),
    decoder_ffn_embed_dim_choice=(2048, 1024, 512),
    encoder_self_attention_heads_choice=(4, 2),
    decoder_self_attention_heads_choice=(4, 2),
    decoder_ende_attention_heads_choice=(4, 2),
)


def _values(cfg: SubConfig, name: str) -> list[int]:
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
