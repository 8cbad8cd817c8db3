"""Elastic building blocks: every weight is used through its front slice."""

from hat.modules.attention import ElasticAttention
from hat.modules.elastic import (
    ElasticLayerNorm,
    ElasticLinear,
    SinusoidalPositions,
    scaled_dropout,
)
from hat.modules.layers import DecoderLayer, EncoderLayer

__all__ = [
    "DecoderLayer",
    "ElasticAttention",
    "ElasticLayerNorm",
    "ElasticLinear",
    "EncoderLayer",
    "SinusoidalPositions",
    "scaled_dropout",
]
