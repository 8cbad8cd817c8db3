"""The search space: the one object that samples, validates, encodes and describes SubTransformers.

A SubTransformer is a :class:`~hat.subconfig.SubConfig`; a :class:`SearchSpace` knows the
SuperTransformer's dimensions and the per-dimension choices. Everything else (model, profiler,
latency features, evolutionary genes, YAML files) goes through these two classes. The dimension
table, :class:`SubConfig` and the YAML helpers live in :mod:`hat.subconfig` and are re-exported
here.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hat.errors import HatConfigError, where
from hat.subconfig import (
    ARBITRARY_CHOICES,
    CHOICE_KEYS,
    DECODER_LISTS,
    DIMENSION,
    DIMENSIONS,
    ENCODER_LISTS,
    FEATURE_NAMES,
    HEAD_FIELDS,
    SUB_YAML_KEYS,
    Dimension,
    SubConfig,
    as_int,
    attended_layers,
    key_hash,
    read_subtransformer_yaml,
    subtransformer_yaml_dict,
    values_of,
    write_subtransformer_yaml,
)

__all__ = [
    "ARBITRARY_CHOICES", "CHOICE_KEYS", "DECODER_LISTS", "DIMENSION", "DIMENSIONS",
    "ENCODER_LISTS", "FEATURE_NAMES", "HEAD_FIELDS", "IWSLT_SPACE1", "SUB_YAML_KEYS",
    "WMT_SPACE0", "Dimension", "SearchSpace", "SubConfig", "attended_layers", "key_hash",
    "read_subtransformer_yaml", "subtransformer_yaml_dict", "write_subtransformer_yaml",
]


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
                object.__setattr__(self, f.name, tuple(as_int(v, _key(f.name), self.source)))
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
    def _broken(self, rule: str, dim: Dimension, v: int) -> str | None:
        """The one set of rules a value of ``dim`` follows, as a choice of the space or as a
        SubTransformer's value: which part of ``rule`` ``v`` breaks (None: it is fine).
        ``bound``: 1..the SuperTransformer's dimension; ``heads``: a head count divides
        qkv-dim; ``arbitrary``: an allowed arbitrary-attention value (``arbitrary``) that
        attends to encoder layers which exist (``attends``)."""
        if rule == "bound":
            return "bound" if dim.bound and not 1 <= v <= getattr(self, dim.bound) else None
        if rule == "heads":
            return "heads" if dim.field in HEAD_FIELDS and self.qkv_dim % v else None
        if dim.field != "decoder_arbitrary_ende_attn":
            return None
        if v not in ARBITRARY_CHOICES:
            return "arbitrary"
        return "attends" if attended_layers(v) > self.encoder_layers else None

    def _check(self, rules: Sequence[str], items: Sequence[tuple[Dimension, list[int]]],
               say: Callable[[str, Dimension, int], str]) -> None:
        """Raise ``HatConfigError(say(broken, dim, v))`` at the first value of ``items`` that
        breaks one of ``rules`` (rule by rule, then in the order of ``items``)."""
        for rule in rules:
            for dim, values in items:
                for v in values:
                    broken = self._broken(rule, dim, v)
                    if broken is not None:
                        raise HatConfigError(say(broken, dim, v))

    def _check_choices(self) -> None:
        src = where(self.source)
        if self.qkv_dim <= 0:
            raise HatConfigError(f"{src}qkv-dim must be positive, got {self.qkv_dim}")

        def say(broken: str, dim: Dimension, v: int) -> str:
            name = _key(dim.choice)
            if broken == "bound":
                return (f"{src}{name} contains {v}, outside 1..{getattr(self, dim.bound)} "
                        f"(the SuperTransformer's {_key(dim.bound)})")
            if broken == "heads":
                return (f"{src}{name} contains {v} heads, which do not divide qkv-dim "
                        f"{self.qkv_dim}")
            if broken == "arbitrary":
                return f"{src}{name} contains {v}; allowed values are {list(ARBITRARY_CHOICES)}"
            return (f"{src}{name} contains {v} (attend to the last {attended_layers(v)} encoder "
                    f"layers) but encoder-layers is {self.encoder_layers}")

        self._check(("bound", "heads", "arbitrary"),
                    [(d, list(getattr(self, d.choice))) for d in DIMENSIONS], say)

    def validate(self, cfg: SubConfig, source: str | None = None, strict: bool = False) -> None:
        """Raise HatConfigError unless ``cfg`` fits the SuperTransformer (the rules the space's
        choices follow, then one value per layer).

        ``strict`` additionally requires every value to be one of the space's choices.
        """
        src = where(source)

        def say(broken: str, dim: Dimension, v: int) -> str:
            name = SUB_YAML_KEYS[dim.field]
            if broken == "bound":
                hi = getattr(self, dim.bound)
                return (f"{src}{name} = {v} does not fit the SuperTransformer: allowed 1..{hi} "
                        f"({_key(dim.bound)} = {hi})")
            if broken == "heads":
                return (f"{src}{name} = {v} heads do not divide qkv-dim {self.qkv_dim}; "
                        f"allowed: divisors of {self.qkv_dim}")
            if broken == "arbitrary":
                return (f"{src}{name} = {v} is not allowed; allowed values are "
                        f"{list(ARBITRARY_CHOICES)} (-1: last encoder layer, 1: last two, "
                        "2: last three)")
            return (f"{src}{name} = {v} attends to the last {attended_layers(v)} encoder layers "
                    f"but encoder-layers is {self.encoder_layers}")

        # layer numbers first (the lists' lengths depend on them), then the table's order
        items = [(d, values_of(cfg, d.field)) for d in
                 sorted(DIMENSIONS, key=lambda d: not d.field.endswith("_layer_num"))]
        self._check(("bound",), items, say)
        for name in ENCODER_LISTS:
            self._check_list_len(cfg, name, cfg.encoder_layer_num, "encoder_layer_num", src)
        for name in DECODER_LISTS:
            self._check_list_len(cfg, name, cfg.decoder_layer_num, "decoder_layer_num", src)
        self._check(("heads", "arbitrary"), items, say)
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
        for name, values, choice in ((f, values_of(cfg, f), DIMENSION[f].choice) for f in order):
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
            values = values_of(cfg, name)
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

