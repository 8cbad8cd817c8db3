"""Elastic building blocks: every weight is used through its front slice."""

from hat.modules.attention import ElasticAttention
from hat.modules.elastic import (
    ElasticLayerNorm,
    ElasticLinear,
    SinusoidalPositions,
    scaled_dropout,
)
from hat.modules.layers import DecoderLayer, EncoderLayer, LayerShape, Regularization

__all__ = [
    "DecoderLayer",
    "ElasticAttention",
    "ElasticLayerNorm",
    "ElasticLinear",
    "EncoderLayer",
    "LayerShape",
    "Regularization",
    "SinusoidalPositions",
    "scaled_dropout",
]
