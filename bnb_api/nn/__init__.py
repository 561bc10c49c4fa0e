"""Quantized layers and parameters with bitsandbytes' names (``bnb_api.nn.Linear4bit`` etc.)."""

from bnb_api.nn.modules import (
    Embedding,
    Embedding4bit,
    Embedding8bit,
    EmbeddingFP4,
    EmbeddingNF4,
    Linear4bit,
    Linear8bitLt,
    LinearFP4,
    LinearNF4,
    StableEmbedding,
)
from bnb_api.nn.params import Int8Params, Params4bit

__all__ = [
    "Embedding",
    "Embedding4bit",
    "Embedding8bit",
    "EmbeddingFP4",
    "EmbeddingNF4",
    "Int8Params",
    "Linear4bit",
    "Linear8bitLt",
    "LinearFP4",
    "LinearNF4",
    "Params4bit",
    "StableEmbedding",
]
