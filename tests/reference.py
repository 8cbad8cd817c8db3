"""A deliberately plain re-computation of a SubTransformer's logits from SuperTransformer weights.

It reads the super state dict and slices every tensor by hand (per head, per layer, no fairseq,
no SDPA), following SPEC.md directly. The equivalence tests compare the models against it.
"""

from __future__ import annotations

import math

import torch

from hat.space import SubConfig


def sinusoids(n: int, dim: int, pad: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000) / (half - 1)))
    ang = torch.arange(n, dtype=torch.float64)[:, None] * freq[None, :]
    t = torch.cat([torch.sin(ang), torch.cos(ang)], 1)
    t[pad] = 0
    return t


def layer_norm(x, w, b, d):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w[:d] + b[:d]


def attention(sd, p, xq, xkv, heads, d_q, d_kv, qkv, kv_pad=None, causal=False):
    W, B = sd[p + "in_proj_weight"], sd[p + "in_proj_bias"]
    q = xq @ W[:qkv, :d_q].T + B[:qkv]
    k = xkv @ W[qkv:2 * qkv, :d_kv].T + B[qkv:2 * qkv]
    v = xkv @ W[2 * qkv:, :d_kv].T + B[2 * qkv:]
    hd = qkv // heads
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        s = (q[:, sl] * hd ** -0.5) @ k[:, sl].T
        if kv_pad is not None:
            s[:, kv_pad] = float("-inf")
        if causal:
            s = s + torch.triu(torch.full_like(s, float("-inf")), 1)
        outs.append(torch.softmax(s, -1) @ v[:, sl])
    o = torch.cat(outs, -1)
    return o @ sd[p + "out_proj.weight"][:d_q, :qkv].T + sd[p + "out_proj.bias"][:d_q]


def ffn(sd, p, x, d, f):
    h = torch.relu(x @ sd[p + "fc1.weight"][:f, :d].T + sd[p + "fc1.bias"][:f])
    return h @ sd[p + "fc2.weight"][:d, :f].T + sd[p + "fc2.bias"][:d]


def positions(tokens, pad):
    pos, n = [], 0
    for t in tokens.tolist():
        if t == pad:
            pos.append(pad)
        else:
            n += 1
            pos.append(pad + n)
    return pos


def reference_logits(sd: dict, cfg: SubConfig, src: torch.Tensor, prev: torch.Tensor,
                     super_dim_enc: int, super_dim_dec: int, super_enc_layers: int,
                     qkv: int, pad: int = 1, separate_out: bool = False) -> torch.Tensor:
    """Logits [B, T, V] for one batch, in float64, sentence by sentence."""
    sd = {k: v.double() for k, v in sd.items()}
    out = []
    for b in range(src.size(0)):
        s_tok, t_tok = src[b], prev[b]
        e = cfg.encoder_embed_dim
        pe = sinusoids(1024, super_dim_enc, pad)[:, :e]
        x = math.sqrt(e) * sd["encoder.embed_tokens.weight"][s_tok, :e] + pe[positions(s_tok, pad)]
        kv_pad = (s_tok == pad).nonzero().flatten().tolist()
        states = []
        for i in range(cfg.encoder_layer_num):
            p = f"encoder.layers.{i}."
            h = attention(sd, p + "self_attn.", x, x, cfg.encoder_self_attention_heads[i], e, e,
                          qkv, kv_pad or None)
            x = layer_norm(x + h, sd[p + "self_attn_layer_norm.weight"],
                           sd[p + "self_attn_layer_norm.bias"], e)
            x = layer_norm(x + ffn(sd, p, x, e, cfg.encoder_ffn_embed_dim[i]),
                           sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"], e)
            states.append(x)
        states += [states[-1]] * (super_enc_layers - len(states))
        d = cfg.decoder_embed_dim
        pd = sinusoids(1024, super_dim_dec, pad)[:, :d]
        y = math.sqrt(d) * sd["decoder.embed_tokens.weight"][t_tok, :d] + pd[positions(t_tok, pad)]
        S = s_tok.size(0)
        for i in range(cfg.decoder_layer_num):
            p = f"decoder.layers.{i}."
            h = attention(sd, p + "self_attn.", y, y, cfg.decoder_self_attention_heads[i], d, d,
                          qkv, causal=True)
            y = layer_norm(y + h, sd[p + "self_attn_layer_norm.weight"],
                           sd[p + "self_attn_layer_norm.bias"], d)
            a = cfg.decoder_arbitrary_ende_attn[i]
            n = {-1: 1, 1: 2, 2: 3}[a]
            enc = torch.cat([states[-1 - j] for j in range(n)], 0)  # last layer first, along time
            enc_pad = [j * S + q for j in range(n) for q in kv_pad]
            h = attention(sd, p + "encoder_attn.", y, enc, cfg.decoder_ende_attention_heads[i], d,
                          e, qkv, enc_pad or None)
            y = layer_norm(y + h, sd[p + "encoder_attn_layer_norm.weight"],
                           sd[p + "encoder_attn_layer_norm.bias"], d)
            y = layer_norm(y + ffn(sd, p, y, d, cfg.decoder_ffn_embed_dim[i]),
                           sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"], d)
        w_out = sd["decoder.embed_out"] if separate_out else sd["decoder.embed_tokens.weight"]
        out.append(y @ w_out[:, :d].T)
    return torch.stack(out)
