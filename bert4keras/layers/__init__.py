"""Keras 3 layers of the Transformer families bert4keras builds.

``core`` (embeddings, normalization, feed-forward), ``position`` (position
encodings), ``attention`` (masks and multi-head attention). Everything is
importable from ``bert4keras.layers`` as in the original toolkit.
"""

from bert4keras.layers.attention import AttentionMask, MultiHeadAttention
from bert4keras.layers.core import (
    BiasAdd,
    CausalMask,
    ContextMask,
    Embedding,
    FeedForward,
    LayerNormalization,
    SequenceMasking,
    TokenSlice,
    register,
)
from bert4keras.layers.crf import (
    ConditionalRandomField,
    EfficientGlobalPointer,
    GlobalPointer,
    MaximumEntropyMarkovModel,
    global_pointer_crossentropy,
    global_pointer_f1,
)
from bert4keras.layers.position import (
    PositionEmbedding,
    RelativePositionEmbedding,
    RelativePositionEmbeddingT5,
    SinusoidalPositionEmbedding,
)

custom_objects = {
    cls.__name__: cls
    for cls in (Embedding, PositionEmbedding, BiasAdd, TokenSlice, AttentionMask,
                MultiHeadAttention, LayerNormalization, FeedForward,
                SinusoidalPositionEmbedding, RelativePositionEmbedding,
                RelativePositionEmbeddingT5, CausalMask, SequenceMasking, ContextMask,
                ConditionalRandomField, MaximumEntropyMarkovModel, GlobalPointer,
                EfficientGlobalPointer)
}
