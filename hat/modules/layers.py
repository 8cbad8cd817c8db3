"""Post-norm encoder and decoder layers with elastic widths and HAT's dropout scaling."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from hat.modules.attention import ElasticAttention, IncrementalState
from hat.modules.elastic import ElasticLayerNorm, ElasticLinear, scaled_dropout


@dataclass(frozen=True)
class Regularization:
    """Dropout settings (HAT scales most of them with the sampled width)."""

    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    scale_encoder_attn_dropout: bool = True


@dataclass(frozen=True)
class LayerShape:
    """Build-time sizes of one layer: its width, FFN size and head counts, the Q/K/V width, the
    SuperTransformer's width (dropout scaling) and, for a decoder layer, the encoder's width."""

    embed_dim: int
    ffn_dim: int
    heads: int
    qkv_dim: int
    super_embed_dim: int
    encoder_embed_dim: int | None = None  # decoder layers: the encoder output's width
    ende_heads: int | None = None  # decoder layers: encoder-decoder attention heads


class DropoutRates:
    """Dropout probabilities of one layer; HAT scales them by ``sampled dim / super dim``."""

    def __init__(
        self,
        dropout: float,
        activation_dropout: float,
        super_dim: int,
        scale_encoder_attn_dropout: bool,
    ) -> None:
        self.base, self.base_act, self.super_dim = dropout, activation_dropout, super_dim
        self.scale_attn_out = scale_encoder_attn_dropout
        self.set(super_dim)

    def set(self, dim: int) -> None:
        """Recompute the rates for an active width."""
        self.dropout = scaled_dropout(self.base, dim, self.super_dim)
        self.activation = scaled_dropout(self.base_act, dim, self.super_dim)
        # HAT's quirk: the dropout after ENCODER self-attention stays unscaled.
        self.encoder_attn_out = self.dropout if self.scale_attn_out else self.base


class EncoderLayer(nn.Module):
    """Self-attention and FFN, each followed by dropout, residual and LayerNorm."""

    def __init__(self, shape: LayerShape, reg: Regularization, attn_impl: str = "sdpa") -> None:
        super().__init__()
        d = shape.embed_dim
        self.self_attn = ElasticAttention(
            d, d, shape.qkv_dim, shape.heads, reg.attention_dropout, attn_impl
        )
        self.self_attn_layer_norm = ElasticLayerNorm(d)
        self.fc1 = ElasticLinear(d, shape.ffn_dim)
        self.fc2 = ElasticLinear(shape.ffn_dim, d)
        self.final_layer_norm = ElasticLayerNorm(d)
        self.rates = DropoutRates(reg.dropout, reg.activation_dropout, shape.super_embed_dim,
                                  reg.scale_encoder_attn_dropout)

    def set_sample(self, embed_dim: int, ffn_dim: int, heads: int) -> None:
        """Configure the active widths and head count."""
        self.self_attn.set_sample(embed_dim, embed_dim, heads)
        self.self_attn_layer_norm.set_sample(embed_dim)
        self.fc1.set_sample(embed_dim, ffn_dim)
        self.fc2.set_sample(ffn_dim, embed_dim)
        self.final_layer_norm.set_sample(embed_dim)
        self.rates.set(embed_dim)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        """``x [B, T, d]`` -> ``[B, T, d]``."""
        r, train = self.rates, self.training
        h = self.self_attn(x, key_padding_mask=padding_mask)
        x = self.self_attn_layer_norm(x + F.dropout(h, r.encoder_attn_out, train))
        x = self.final_layer_norm(x + ffn(self, x, r, train))
        return x


class DecoderLayer(nn.Module):
    """Causal self-attention, encoder-decoder attention and FFN, each post-normed."""

    def __init__(self, shape: LayerShape, reg: Regularization, attn_impl: str = "sdpa") -> None:
        super().__init__()
        d, q, p = shape.embed_dim, shape.qkv_dim, reg.attention_dropout
        if shape.encoder_embed_dim is None or shape.ende_heads is None:
            raise ValueError("a decoder layer needs encoder_embed_dim and ende_heads")
        self.self_attn = ElasticAttention(d, d, q, shape.heads, p, attn_impl)
        self.self_attn_layer_norm = ElasticLayerNorm(d)
        self.encoder_attn = ElasticAttention(d, shape.encoder_embed_dim, q, shape.ende_heads, p,
                                             attn_impl)
        self.encoder_attn_layer_norm = ElasticLayerNorm(d)
        self.fc1 = ElasticLinear(d, shape.ffn_dim)
        self.fc2 = ElasticLinear(shape.ffn_dim, d)
        self.final_layer_norm = ElasticLayerNorm(d)
        self.rates = DropoutRates(reg.dropout, reg.activation_dropout, shape.super_embed_dim, True)

    def set_sample(
        self, embed_dim: int, encoder_embed_dim: int, ffn_dim: int, self_heads: int, ende_heads: int
    ) -> None:
        """Configure the active widths and head counts."""
        self.self_attn.set_sample(embed_dim, embed_dim, self_heads)
        self.self_attn_layer_norm.set_sample(embed_dim)
        self.encoder_attn.set_sample(embed_dim, encoder_embed_dim, ende_heads)
        self.encoder_attn_layer_norm.set_sample(embed_dim)
        self.fc1.set_sample(embed_dim, ffn_dim)
        self.fc2.set_sample(ffn_dim, embed_dim)
        self.final_layer_norm.set_sample(embed_dim)
        self.rates.set(embed_dim)

    def forward(
        self,
        x: Tensor,
        encoder_out: Tensor,
        encoder_padding_mask: Tensor | None,
        incremental_state: IncrementalState | None = None,
    ) -> Tensor:
        """``x [B, T, d]`` attends causally to itself and to ``encoder_out [B, S, d_enc]``."""
        r, train = self.rates, self.training
        h = self.self_attn(x, causal=True, incremental_state=incremental_state)
        x = self.self_attn_layer_norm(x + F.dropout(h, r.dropout, train))
        h = self.encoder_attn(
            x,
            encoder_out,
            key_padding_mask=encoder_padding_mask,
            incremental_state=incremental_state,
        )
        x = self.encoder_attn_layer_norm(x + F.dropout(h, r.dropout, train))
        x = self.final_layer_norm(x + ffn(self, x, r, train))
        return x


def ffn(layer: EncoderLayer | DecoderLayer, x: Tensor, r: DropoutRates, train: bool) -> Tensor:
    """The dropped-out FFN branch of a layer."""
    h = F.dropout(F.relu(layer.fc1(x)), r.activation, train)
    return F.dropout(layer.fc2(h), r.dropout, train)
