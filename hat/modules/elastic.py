"""Linear, LayerNorm and positional embeddings whose active size is set at run time.

Built at their largest (super) size, they compute with the front slice of their weights chosen by
``set_sample``. Built at exactly the active size (a standalone SubTransformer) they use their
weights as they are: no slicing happens at run time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def scaled_dropout(p: float, sample_dim: int, super_dim: int) -> float:
    """HAT's dropout for a narrower SubTransformer: ``p * sample_dim / super_dim``."""
    return p * sample_dim / super_dim


class ElasticLinear(nn.Linear):
    """``y = x W[:out, :in]^T + b[:out]`` for the sampled (in, out)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.sample_in = in_features
        self.sample_out = out_features
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def set_sample(self, in_dim: int, out_dim: int) -> None:
        """Choose the active input and output widths."""
        self.sample_in, self.sample_out = in_dim, out_dim

    def active_weights(self) -> tuple[Tensor, Tensor | None]:
        """The weight and bias in use (views; the tensors themselves when nothing is sliced)."""
        if self.sample_in == self.in_features and self.sample_out == self.out_features:
            return self.weight, self.bias
        b = self.bias[: self.sample_out] if self.bias is not None else None
        return self.weight[: self.sample_out, : self.sample_in], b

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.active_weights()
        return F.linear(x, w, b)

    def active_boxes(self) -> dict[str, list[tuple[slice, ...]]]:
        """The blocks of each parameter in use (for ``hat_adam``)."""
        boxes = {"weight": [(slice(0, self.sample_out), slice(0, self.sample_in))]}
        if self.bias is not None:
            boxes["bias"] = [(slice(0, self.sample_out),)]
        return boxes

    def active_params(self) -> int:
        """Number of parameters in use."""
        n = self.sample_out * self.sample_in
        return n + (self.sample_out if self.bias is not None else 0)


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm over the first ``sample_dim`` channels with ``gamma[:d]``, ``beta[:d]``."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__(dim, eps=eps)
        self.sample_dim = dim

    def set_sample(self, dim: int) -> None:
        """Choose the active width."""
        self.sample_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        d = self.sample_dim
        if d == self.normalized_shape[0]:
            return F.layer_norm(x, (d,), self.weight, self.bias, self.eps)
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)

    def active_boxes(self) -> dict[str, list[tuple[slice, ...]]]:
        """The blocks of each parameter in use (for ``hat_adam``)."""
        return {"weight": [(slice(0, self.sample_dim),)], "bias": [(slice(0, self.sample_dim),)]}

    def active_params(self) -> int:
        """Number of parameters in use."""
        return 2 * self.sample_dim


def sinusoid_table(num_positions: int, dim: int, padding_idx: int | None) -> Tensor:
    """Fairseq-style sinusoids: ``dim//2`` sine channels then ``dim//2`` cosine channels."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float) * -step)
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    if padding_idx is not None:
        table[padding_idx, :] = 0
    return table


def make_positions(tokens: Tensor, padding_idx: int) -> Tensor:
    """Position numbers starting at ``padding_idx + 1``; padding keeps ``padding_idx``."""
    mask = tokens.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


class SinusoidalPositions(nn.Module):
    """Sinusoidal positions built for the SUPER dim and sliced to the sampled dim.

    A 512-wide slice of a 640-wide table (320 sine + 192 cosine channels) differs from a
    512-wide table, which is why a standalone SubTransformer still records the super dim.
    """

    def __init__(self, super_dim: int, padding_idx: int, init_size: int = 1024) -> None:
        super().__init__()
        self.super_dim = super_dim
        self.padding_idx = padding_idx
        self.sample_dim = super_dim
        # Only in the state dict for compatibility with HAT/fairseq checkpoints.
        self.register_buffer("_float_tensor", torch.zeros(1))
        self.register_buffer(
            "table", sinusoid_table(init_size, super_dim, padding_idx), persistent=False
        )

    def set_sample(self, dim: int) -> None:
        """Choose the active width."""
        self.sample_dim = dim

    def forward(self, tokens: Tensor, incremental: bool = False) -> Tensor:
        """Embeddings ``[B, T, d]`` for ``tokens`` (only the last position when incremental)."""
        positions = make_positions(tokens, self.padding_idx)
        if incremental:
            positions = positions[:, -1:]
        # Largest possible position from the shape alone: no device->host sync per step (and
        # capturable in a CUDA graph).
        self.reserve(tokens.size(1))
        return F.embedding(positions, self.table[:, : self.sample_dim]).detach()

    def at(self, position: Tensor, n: int) -> Tensor:
        """The embedding ``[n, 1, d]`` of one position given as a 0-d tensor (static decoding:
        no shape depends on the step)."""
        row = self.table[:, : self.sample_dim].index_select(0, position.view(1))  # [1, d]
        return row.unsqueeze(0).expand(n, 1, -1).detach()

    def reserve(self, positions: int) -> None:
        """Make the table hold ``positions`` positions after the padding index."""
        need = self.padding_idx + positions + 1
        if need > self.table.size(0):
            self.table = sinusoid_table(need, self.super_dim, self.padding_idx).to(self.table)
