"""Multi-head attention with HAT's elastic sharing and cached incremental decoding.

Q/K/V always project to the fixed ``qkv_dim``; only their input columns follow the sampled embed
dims and the head count only changes the reshape (``head_dim = qkv_dim / heads``). Tensors are
batch-first: ``[B, T, C]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

from hat.modules.elastic import ElasticLinear

IncrementalState = dict[str, dict[str, Tensor | None]]
# Keys of an incremental state that asks for a STATIC key/value cache (hat.generate): the decode
# step as a 0-d long tensor, and the cache length. Self-attention then writes this step's keys and
# values into preallocated buffers at that step and attends to the positions up to it, so every
# shape stays the same from step to step (a decode step can be captured as a CUDA graph).
STATIC_STEP = "hat_static_step"
STATIC_LEN = "hat_static_len"
ATTENTION_IMPLS = ("sdpa", "reference")


def prefer_shape_agnostic_sdpa() -> None:
    """Keep SDPA off cuDNN's attention kernels (process-wide, GPU only).

    cuDNN builds an execution plan for every new attention shape. A SuperTransformer sees many
    (heads x head dim x sampled lengths x batch shapes), and on an H100 the plan building made
    random-subnet training several times slower; the flash / memory-efficient kernels have no
    per-shape setup.
    """
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)


@with_incremental_state
class ElasticAttention(nn.Module):
    """Self- or encoder-decoder attention.

    With equal query and key/value widths the projections live in one ``in_proj_weight``
    ``[3*qkv, dim]`` (HAT's layout); a standalone SubTransformer whose encoder and decoder widths
    differ keeps ``q_proj_weight [qkv, q_dim]`` and ``kv_proj_weight [2*qkv, kv_dim]`` instead.
    """

    def __init__(
        self,
        q_dim: int,
        kv_dim: int,
        qkv_dim: int,
        num_heads: int,
        attention_dropout: float = 0.0,
        impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl {impl!r}; allowed: {ATTENTION_IMPLS}")
        self.q_dim, self.kv_dim, self.qkv_dim = q_dim, kv_dim, qkv_dim
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.impl = impl
        self.fused = q_dim == kv_dim
        if self.fused:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * qkv_dim, q_dim))
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(qkv_dim, q_dim))
            self.kv_proj_weight = nn.Parameter(torch.empty(2 * qkv_dim, kv_dim))
            nn.init.xavier_uniform_(self.q_proj_weight)
            nn.init.xavier_uniform_(self.kv_proj_weight)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * qkv_dim))
        self.out_proj = ElasticLinear(qkv_dim, q_dim)
        self.sample_q, self.sample_kv, self.sample_heads = q_dim, kv_dim, num_heads

    def set_sample(self, q_dim: int, kv_dim: int, heads: int) -> None:
        """Choose the query width, the key/value input width and the number of heads."""
        self.sample_q, self.sample_kv, self.sample_heads = q_dim, kv_dim, heads
        self.out_proj.set_sample(self.qkv_dim, q_dim)

    def q_weights(self) -> tuple[Tensor, Tensor]:
        """Active query projection (weight, bias)."""
        q = self.qkv_dim
        w = self.in_proj_weight[:q] if self.fused else self.q_proj_weight
        if self.sample_q != w.size(1):
            w = w[:, : self.sample_q]
        return w, self.in_proj_bias[:q]

    def kv_weights(self) -> tuple[Tensor, Tensor]:
        """Active key+value projection (weight ``[2*qkv, kv]``, bias)."""
        q = self.qkv_dim
        w = self.in_proj_weight[q:] if self.fused else self.kv_proj_weight
        if self.sample_kv != w.size(1):
            w = w[:, : self.sample_kv]
        return w, self.in_proj_bias[q:]

    def active_boxes(self) -> dict[str, list[tuple[slice, ...]]]:
        """The blocks of its own parameters in use (``out_proj`` reports its own): every row of
        the Q/K/V projections and their bias, the sampled input columns."""
        q, all_ = self.qkv_dim, slice(None)
        if self.fused:
            boxes = {"in_proj_weight": [(slice(0, q), slice(0, self.sample_q)),
                                        (slice(q, 3 * q), slice(0, self.sample_kv))]}
        else:
            boxes = {"q_proj_weight": [(all_, slice(0, self.sample_q))],
                     "kv_proj_weight": [(all_, slice(0, self.sample_kv))]}
        boxes["in_proj_bias"] = [(all_,)]
        return boxes

    def active_params(self) -> int:
        """Parameters in use: sampled input columns x qkv, the whole bias, the sliced out_proj."""
        q = self.qkv_dim
        return q * self.sample_q + 2 * q * self.sample_kv + 3 * q + self.out_proj.active_params()

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.sample_heads, -1).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        incremental_state: IncrementalState | None = None,
    ) -> Tensor:
        """Attend ``query [B, T, d_q]`` to ``key [B, S, d_kv]`` (``None`` means self-attention).

        ``key_padding_mask [B, S]`` is True at padding. With ``incremental_state``,
        self-attention appends this step's keys/values to the cache and encoder-decoder
        attention projects the encoder output once.
        """
        self_attn = key is None
        qw, qb = self.q_weights()
        q = self._heads(F.linear(query, qw, qb))
        saved = self._get_cache(incremental_state)
        if not self_attn and saved is not None and "k" in saved:
            k, v = saved["k"], saved["v"]
        else:
            kw, kb = self.kv_weights()
            k, v = F.linear(query if self_attn else key, kw, kb).chunk(2, dim=-1)
            k, v = self._heads(k), self._heads(v)
            if incremental_state is not None and self_attn and STATIC_STEP in incremental_state:
                k, v, key_padding_mask = self._static_write(incremental_state, saved, k, v)
            elif incremental_state is not None:
                if self_attn and saved is not None:
                    k = torch.cat([saved["k"], k], dim=2)
                    v = torch.cat([saved["v"], v], dim=2)
                self._set_cache(incremental_state, {"k": k, "v": v})
        if incremental_state is not None and self_attn:
            causal = False  # one new query attends to everything cached so far
        p = self.attention_dropout if self.training else 0.0
        if self.impl == "sdpa":
            out = self._sdpa(q, k, v, key_padding_mask, causal, p)
        else:
            out = reference_attention(q, k, v, key_padding_mask, causal, p, self.training)
        b, h, t, hd = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * hd))

    @staticmethod
    def _sdpa(
        q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, causal: bool, p: float
    ) -> Tensor:
        if key_padding_mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        keep = ~key_padding_mask[:, None, None, :]
        if causal:
            t, s = q.size(2), k.size(2)
            keep = keep & torch.ones(t, s, dtype=torch.bool, device=q.device).tril()
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)

    def _static_write(self, state: IncrementalState, saved: dict | None, k: Tensor, v: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor]:
        """Write one step's keys/values into the static cache (allocated at the first step);
        returns the whole cache and the mask of the positions after this step."""
        n, h, _, hd = k.shape
        length = int(state[STATIC_LEN])  # type: ignore[arg-type]
        if saved is None:
            saved = {"k": k.new_zeros(n, h, length, hd), "v": v.new_zeros(n, h, length, hd)}
            self._set_cache(state, saved)
        step = state[STATIC_STEP]
        assert isinstance(step, Tensor)
        saved["k"].index_copy_(2, step.view(1), k)
        saved["v"].index_copy_(2, step.view(1), v)
        later = torch.arange(length, device=k.device) > step
        return saved["k"], saved["v"], later.unsqueeze(0).expand(n, length)

    def _get_cache(self, incremental_state: IncrementalState | None) -> dict | None:
        if incremental_state is None:
            return None
        return self.get_incremental_state(incremental_state, "attn_state")

    def _set_cache(self, incremental_state: IncrementalState, value: dict) -> None:
        self.set_incremental_state(incremental_state, "attn_state", value)

    def reorder_incremental_state(
        self, incremental_state: IncrementalState, new_order: Tensor
    ) -> None:
        """Follow the beam: reorder the cached keys/values along the batch."""
        saved = self._get_cache(incremental_state)
        if saved is None:
            return
        if STATIC_STEP in incremental_state:  # in place: the buffers keep their addresses
            for t in saved.values():
                t.copy_(t.index_select(0, new_order))
        else:
            self._set_cache(
                incremental_state, {k: v.index_select(0, new_order) for k, v in saved.items()}
            )


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None,
    causal: bool,
    dropout_p: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Plain attention (scaled q, fp32 softmax) — the readable twin of the SDPA path."""
    scores = torch.matmul(q * (q.size(-1) ** -0.5), k.transpose(-1, -2))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    if causal:
        t, s = scores.shape[-2:]
        future = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).type_as(scores)
    probs = F.dropout(probs, p=dropout_p, training=training)
    return torch.matmul(probs, v)
