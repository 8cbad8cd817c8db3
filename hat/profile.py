"""#Params and FLOPs of a SubTransformer with HAT's conventions.

Both exclude the embedding tables and the output projection. #Params counts the active (sliced)
weights. FLOPs = 2 x MACs of one teacher-forced pass with batch 1 and source/target length 30
(WMT) or 23 (IWSLT), counted as HAT's profiler (torchprofile) counts them: every matrix product
(projections, attention scores and weighted sums; attention over the time-concatenated encoder
layers for arbitrary attention) plus one MAC per output element of the embedding scaling, the
query scaling, the position computation and each affine LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

from hat.space import SubConfig, attended_layers


@dataclass(frozen=True)
class Profile:
    """Result of profiling one SubTransformer."""

    params: int
    macs: int

    @property
    def params_m(self) -> float:
        """Parameters in millions."""
        return self.params / 1e6

    @property
    def flops_g(self) -> float:
        """GFLOPs (2 x MACs)."""
        return 2 * self.macs / 1e9


def count_params(cfg: SubConfig, qkv_dim: int = 512) -> int:
    """Active parameters excluding embeddings and the output projection."""
    q = qkv_dim

    def attn(d_q: int, d_kv: int) -> int:
        return q * d_q + 2 * q * d_kv + 3 * q + d_q * q + d_q

    def ffn(d: int, f: int) -> int:
        return d * f + f + f * d + d

    e, dd = cfg.encoder_embed_dim, cfg.decoder_embed_dim
    n = sum(attn(e, e) + ffn(e, f) + 4 * e for f in cfg.encoder_ffn_embed_dim)
    n += sum(attn(dd, dd) + attn(dd, e) + ffn(dd, f) + 6 * dd for f in cfg.decoder_ffn_embed_dim)
    return n


def count_macs(
    cfg: SubConfig,
    src_len: int = 30,
    tgt_len: int = 30,
    qkv_dim: int = 512,
    elementwise: bool = True,
) -> int:
    """MACs of one teacher-forced pass (batch 1) with torchprofile's conventions.

    ``elementwise=False`` counts matrix products only (what torch's FlopCounterMode sees).
    """
    q, S, T = qkv_dim, src_len, tgt_len
    e, dd = cfg.encoder_embed_dim, cfg.decoder_embed_dim
    k = 1 if elementwise else 0

    def attn(t: int, s: int, d_q: int, d_kv: int) -> int:
        proj = t * d_q * q + 2 * s * d_kv * q + t * q * d_q
        return proj + 2 * t * s * q + k * t * q  # scores, weighted sum, query scaling

    macs = k * (S * e + S)  # embedding scale, position numbering
    for f in cfg.encoder_ffn_embed_dim:
        macs += attn(S, S, e, e) + 2 * S * e * f + k * 2 * S * e  # 2 LayerNorms
    macs += k * (T * dd + T)
    for i, f in enumerate(cfg.decoder_ffn_embed_dim):
        s_enc = S * attended_layers(cfg.decoder_arbitrary_ende_attn[i])
        macs += attn(T, T, dd, dd) + attn(T, s_enc, dd, e) + 2 * T * dd * f + k * 3 * T * dd
    return macs


def profile(cfg: SubConfig, qkv_dim: int = 512, length: int = 30) -> Profile:
    """#Params and MACs of ``cfg`` (source and target of ``length`` tokens)."""
    return Profile(count_params(cfg, qkv_dim), count_macs(cfg, length, length, qkv_dim))
