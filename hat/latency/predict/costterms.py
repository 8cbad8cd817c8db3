"""Analytic cost terms of a SubTransformer, computed from HAT's 10 features.

A linear model on these terms is a latency model with one coefficient per kind of work: each term
is proportional to the arithmetic (or the kernel launches) of one part of the network, with
HAT's fixed ``qkv_dim`` (projections are ``embed_dim x 512``) and averages turned back into sums
(``layer_num x ffn_avg`` = the summed FFN width). A few measured rows of a new device pin the
13 coefficients far better than they pin a 400-wide MLP (:mod:`hat.latency.predict.fewshot`).
"""

from __future__ import annotations

import numpy as np

from hat.latency.csvio import N_FEATURES

COST_TERMS: tuple[str, ...] = (
    "constant",                      # embedding lookups, beam bookkeeping, launch floor
    "enc_layers",                    # per-layer fixed work (norms, attention softmax)
    "enc_layers*enc_dim",            # Q/K/V/out projections (enc_dim x qkv_dim each)
    "enc_dim*enc_ffn_sum",           # FFN matmuls
    "enc_heads_sum",                 # per-head attention kernels
    "dec_dim",                       # output projection onto the vocabulary
    "dec_layers",
    "dec_layers*dec_dim",            # self- and cross-attention query/out projections
    "dec_dim*dec_ffn_sum",
    "dec_self_heads_sum",
    "dec_ende_heads_sum",
    "dec_ende_inputs_sum",           # encoder layers attended to (arbitrary en-de attention)
    "dec_ende_inputs_sum*enc_dim",   # their key/value projections
)


def cost_terms(features: np.ndarray) -> np.ndarray:
    """[N,10] HAT features -> [N,13] cost terms (float64), in the order of :data:`COST_TERMS`."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise ValueError(f"features must have shape [N, {N_FEATURES}], got {x.shape}")
    de, le, fe, he, dd, ld, fd, hd, hx, arb = x.T
    return np.stack([
        np.ones(len(x)), le, le * de, le * de * fe, le * he,
        dd, ld, ld * dd, ld * dd * fd, ld * hd, ld * hx, ld * arb, ld * arb * de,
    ], axis=1)


def fit_relative_ridge(a: np.ndarray, y: np.ndarray, lam: float = 1e-3,
                       relative: bool = True) -> np.ndarray:
    """Coefficients ``c`` minimising ``sum(((a @ c - y) / y)^2) + lam * |D c|^2``, where ``D``
    scales each column of ``a / y`` to unit norm (so ``lam`` does not depend on units).
    ``relative=False``: plain squared error ``sum((a @ c - y)^2)`` instead (same ridge)."""
    a = np.asarray(a, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    div = y if relative else np.ones_like(y)
    w = a / div[:, None]
    scale = np.linalg.norm(w, axis=0)
    scale[scale == 0] = 1.0
    n = a.shape[1]
    lhs = np.vstack([w / scale, np.sqrt(lam) * np.eye(n)])
    rhs = np.r_[y / div, np.zeros(n)]
    c, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    return c / scale
