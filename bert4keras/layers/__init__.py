"""Keras 3 layers of the Transformer families bert4keras builds.

``core`` (embeddings, normalization, feed-forward), ``position`` (position
encodings), ``attention`` (masks and multi-head attention). Everything is
importable from ``bert4keras.layers`` as in the original toolkit.
"""

from bert4keras.layers.attention import AttentionMask, MultiHeadAttention
from bert4keras.layers.core import (
    BiasAdd,
    Embedding,
    FeedForward,
    LayerNormalization,
    TokenSlice,
    register,
)
from bert4keras.layers.position import PositionEmbedding

custom_objects = {
    cls.__name__: cls
    for cls in (Embedding, PositionEmbedding, BiasAdd, TokenSlice, AttentionMask,
                MultiHeadAttention, LayerNormalization, FeedForward)
}
