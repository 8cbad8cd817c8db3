"""Encoder and decoder shared by the SuperTransformer and the standalone SubTransformer.

Both are built from :class:`Widths` — the width each module is BUILT with. The SuperTransformer
builds every layer at the super dims and slices at run time; a standalone SubTransformer builds
each layer at exactly its own dims, so its weights are used whole. Tensors are batch-first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from fairseq.models import FairseqEncoder, FairseqIncrementalDecoder
from torch import Tensor, nn

from hat.checkpoint import drop_version_key
from hat.modules import (
    DecoderLayer,
    EncoderLayer,
    LayerShape,
    Regularization,
    SinusoidalPositions,
    scaled_dropout,
)
from hat.modules.attention import STATIC_STEP
from hat.space import SubConfig, attended_layers

EncoderOut = dict[str, list[Tensor]]


@dataclass(frozen=True)
class Widths:
    """Build-time sizes of one encoder or decoder.

    ``embed_dim``: width of the layers; ``super_embed_dim``: the SuperTransformer's width (for the
    sinusoid table and dropout scaling); ``ffn``/``heads``/``ende_heads``: one entry per layer;
    ``super_layers``: the SuperTransformer's layer count (arbitrary attention indexes it);
    ``encoder_embed_dim``: (decoder only) the width of the encoder output it attends to.
    """

    embed_dim: int
    super_embed_dim: int
    ffn: tuple[int, ...]
    heads: tuple[int, ...]
    super_layers: int
    qkv_dim: int
    ende_heads: tuple[int, ...] = ()
    encoder_embed_dim: int = 0


def slice_cols(weight: Tensor, d: int) -> Tensor:
    """The first ``d`` columns of an embedding table (the table itself when it is ``d`` wide)."""
    return weight if weight.size(1) == d else weight[:, :d]


class HatEncoder(FairseqEncoder):
    """Token + sinusoidal embeddings, then post-norm layers; returns every layer's output."""

    def __init__(
        self,
        dictionary: Any,
        embed_tokens: nn.Embedding,
        widths: Widths,
        reg: Regularization,
        max_positions: int = 1024,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__(dictionary)
        self.widths, self.reg = widths, reg
        self.padding_idx = embed_tokens.padding_idx
        self.embed_tokens = embed_tokens
        self.embed_positions = SinusoidalPositions(widths.super_embed_dim, self.padding_idx)
        self.max_source_positions = max_positions
        self.layers = nn.ModuleList(
            EncoderLayer(LayerShape(widths.embed_dim, f, h, widths.qkv_dim, widths.super_embed_dim),
                         reg, attn_impl)
            for f, h in zip(widths.ffn, widths.heads)
        )
        self.sample_embed_dim, self.sample_layer_num = widths.embed_dim, len(self.layers)
        self.sample_dropout = reg.dropout
        self._padding_of: tuple[Tensor, bool] | None = None  # the last batch, has it padding

    def set_sample(self, cfg: SubConfig) -> None:
        """Activate the encoder part of a SubTransformer."""
        d = cfg.encoder_embed_dim
        self.sample_embed_dim, self.sample_layer_num = d, cfg.encoder_layer_num
        self.sample_dropout = scaled_dropout(self.reg.dropout, d, self.widths.super_embed_dim)
        self.embed_positions.set_sample(d)
        for i in range(cfg.encoder_layer_num):
            self.layers[i].set_sample(
                d, cfg.encoder_ffn_embed_dim[i], cfg.encoder_self_attention_heads[i]
            )

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Tensor | None = None,
        has_padding: bool | None = None,
        **kwargs: Any,
    ) -> EncoderOut:
        """``src_tokens [B, S]`` -> dict with ``encoder_out [B, S, d]`` (last layer),
        ``encoder_states`` (every active layer) and ``encoder_padding_mask [B, S]``.

        ``encoder_padding_mask`` is empty when no position is padding (then attention needs no
        mask); ``has_padding`` (when the caller knows) skips the device->host check for it."""
        d = self.sample_embed_dim
        x = math.sqrt(d) * F.embedding(
            src_tokens, slice_cols(self.embed_tokens.weight, d), self.padding_idx
        )
        x = x + self.embed_positions(src_tokens).to(x.dtype)
        x = F.dropout(x, self.sample_dropout, self.training)
        pad = src_tokens.eq(self.padding_idx)
        if has_padding is None:
            has_padding = self._has_padding(src_tokens, pad)
        mask = pad if has_padding else None
        states = []
        for layer in self.layers[: self.sample_layer_num]:
            x = layer(x, mask)
            states.append(x)
        return {
            "encoder_out": [x],
            "encoder_padding_mask": [pad] if mask is not None else [],
            "encoder_states": states,
            "src_tokens": [],
            "src_lengths": [],
        }

    def _has_padding(self, src_tokens: Tensor, pad: Tensor) -> bool:
        """Whether the batch has padding (a device read); the passes of one update over the
        same batch (the sandwich's SubTransformers) read it once."""
        seen = self._padding_of
        if seen is not None and seen[0] is src_tokens:
            return seen[1]
        has = bool(pad.any())
        self._padding_of = (src_tokens, has)
        return has

    def reorder_encoder_out(self, encoder_out: EncoderOut, new_order: Tensor) -> EncoderOut:
        """Select/reorder batch entries (beam search)."""
        return {k: [t.index_select(0, new_order) for t in v] for k, v in encoder_out.items()}

    def max_positions(self) -> int:
        """Longest source the model accepts."""
        return self.max_source_positions

    def upgrade_state_dict_named(self, state_dict: dict[str, Any], name: str) -> dict[str, Any]:
        """Accept HAT/fairseq checkpoints: drop their ``<name>.version`` buffer (none here)."""
        return drop_version_key(state_dict, name)


class HatDecoder(FairseqIncrementalDecoder):
    """Post-norm decoder with arbitrary encoder-decoder attention and cached decoding."""

    def __init__(
        self,
        dictionary: Any,
        embed_tokens: nn.Embedding,
        widths: Widths,
        reg: Regularization,
        output_weight: nn.Parameter | None = None,
        max_positions: int = 1024,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__(dictionary)
        self.widths, self.reg = widths, reg
        self.padding_idx = embed_tokens.padding_idx
        self.embed_tokens = embed_tokens
        self.embed_positions = SinusoidalPositions(widths.super_embed_dim, self.padding_idx)
        self.max_target_positions = max_positions
        if output_weight is not None:  # separate output projection (IWSLT)
            self.embed_out = output_weight
        self.layers = nn.ModuleList(
            DecoderLayer(LayerShape(widths.embed_dim, f, h, widths.qkv_dim, widths.super_embed_dim,
                                    widths.encoder_embed_dim, eh), reg, attn_impl)
            for f, h, eh in zip(widths.ffn, widths.heads, widths.ende_heads)
        )
        self.sample_embed_dim, self.sample_layer_num = widths.embed_dim, len(self.layers)
        self.sample_dropout = reg.dropout
        self.sample_arbitrary: tuple[int, ...] = (1,) * len(self.layers)

    def set_sample(self, cfg: SubConfig) -> None:
        """Activate the decoder part of a SubTransformer."""
        d = cfg.decoder_embed_dim
        self.sample_embed_dim, self.sample_layer_num = d, cfg.decoder_layer_num
        self.sample_dropout = scaled_dropout(self.reg.dropout, d, self.widths.super_embed_dim)
        self.sample_arbitrary = cfg.decoder_arbitrary_ende_attn
        self.embed_positions.set_sample(d)
        for i in range(cfg.decoder_layer_num):
            self.layers[i].set_sample(
                d,
                cfg.encoder_embed_dim,
                cfg.decoder_ffn_embed_dim[i],
                cfg.decoder_self_attention_heads[i],
                cfg.decoder_ende_attention_heads[i],
            )

    def output_weight(self) -> Tensor:
        """The (sliced) output projection: ``embed_out`` or the shared embedding table."""
        w = self.embed_out if hasattr(self, "embed_out") else self.embed_tokens.weight
        return slice_cols(w, self.sample_embed_dim)

    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: EncoderOut | None = None,
        incremental_state: dict | None = None,
        features_only: bool = False,
        **kwargs: Any,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Teacher-forced (or, with ``incremental_state``, one-step) decoding."""
        x = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        if not features_only:
            x = self.output_layer(x)
        return x, {"attn": [None], "inner_states": None}

    def extract_features(
        self,
        prev_output_tokens: Tensor,
        encoder_out: EncoderOut | None,
        incremental_state: dict | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Decoder states before the output projection, ``[B, T, d]``."""
        assert encoder_out is not None, "HatDecoder needs the encoder output"
        d = self.sample_embed_dim
        step = incremental_state.get(STATIC_STEP) if incremental_state is not None else None
        if step is not None:  # static cache: the position comes from the step, not the shape
            positions = self.embed_positions.at(step + (self.padding_idx + 1),
                                                prev_output_tokens.size(0))
        else:
            positions = self.embed_positions(
                prev_output_tokens, incremental=incremental_state is not None
            )
        tokens = prev_output_tokens[:, -1:] if incremental_state is not None else prev_output_tokens
        x = math.sqrt(d) * F.embedding(
            tokens, slice_cols(self.embed_tokens.weight, d), self.padding_idx
        )
        x = F.dropout(x + positions.to(x.dtype), self.sample_dropout, self.training)
        states = self._padded_encoder_states(encoder_out)
        # (the encoder gives a padding mask only for a batch with padding: no device read here)
        pad = (
            encoder_out["encoder_padding_mask"][0] if encoder_out["encoder_padding_mask"] else None
        )
        memo: dict[int, tuple[Tensor, Tensor | None]] = {}
        for i, layer in enumerate(self.layers[: self.sample_layer_num]):
            n = attended_layers(self.sample_arbitrary[i])
            if n not in memo:
                memo[n] = (
                    torch.cat(states[::-1][:n], dim=1),
                    torch.cat([pad] * n, dim=1) if pad is not None else None,
                )
            enc, enc_pad = memo[n]
            x = layer(x, enc, enc_pad, incremental_state)
        return x

    def _padded_encoder_states(self, encoder_out: EncoderOut) -> list[Tensor]:
        """All SUPER encoder layers' outputs; skipped layers repeat the last real output."""
        states = list(encoder_out["encoder_states"]) or list(encoder_out["encoder_out"])
        missing = self.widths.super_layers - len(states)
        return states + [states[-1]] * max(missing, 0)

    def output_layer(self, features: Tensor) -> Tensor:
        """Project to the vocabulary."""
        return F.linear(features, self.output_weight())

    def max_positions(self) -> int:
        """Longest target the model accepts."""
        return self.max_target_positions

    def upgrade_state_dict_named(self, state_dict: dict[str, Any], name: str) -> dict[str, Any]:
        """Accept HAT/fairseq checkpoints: drop their ``<name>.version`` buffer (none here)."""
        return drop_version_key(state_dict, name)


def new_embedding(num: int, dim: int, padding_idx: int) -> nn.Embedding:
    """Embedding table with fairseq's N(0, dim^-0.5) init and a zero padding row."""
    emb = nn.Embedding(num, dim, padding_idx=padding_idx)
    nn.init.normal_(emb.weight, mean=0, std=dim**-0.5)
    nn.init.zeros_(emb.weight[padding_idx])
    return emb


def new_output_weight(num: int, dim: int) -> nn.Parameter:
    """Separate output projection ``[V, dim]``."""
    w = nn.Parameter(torch.empty(num, dim))
    nn.init.normal_(w, mean=0, std=dim**-0.5)
    return w
