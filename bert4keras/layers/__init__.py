"""Keras 3 layers of the Transformer families bert4keras builds.

``core`` (embeddings, normalization, feed-forward), ``dropout`` (dropout masks
as raw random bits), ``position`` (position encodings), ``attention`` (masks
and multi-head attention), ``crf`` (CRF and MEMM heads), ``global_pointer``
(GlobalPointer span heads and their loss).
Everything in ``__all__`` is importable from ``bert4keras.layers`` as in the
original toolkit; ``custom_objects`` maps the name of every layer class in
``__all__`` to the class (all of them are also registered with
``keras.saving`` under the package ``bert4keras``).

bert4keras 0.11.5's ``layers`` module also re-exported ``keras.layers``
(``from bert4keras.layers import Dense, Input, Lambda`` worked): a name not
defined here is looked up in ``keras.layers``, then in
:mod:`bert4keras.backend` (``K``, ``sequence_masking``, ...). ``loss``
(:class:`Loss`), ``gau`` (:class:`GatedAttentionUnit`) and ``misc``
(``ScaleOffset``, ``Concatenate1D``, ``BatchSplit``, ...) hold the rest of
0.11.5's layers; ``legacy`` the layers behind ``build_transformer_model``'s
0.11.5 options (hierarchical positions, attention scores, cache bias).
"""

import keras

from bert4keras.layers.attention import AttentionMask, MultiHeadAttention
from bert4keras.layers.core import (
    BiasAdd,
    CausalMask,
    ConditionalLayerNormalization,
    ContextMask,
    Dense,
    Embedding,
    FeedForward,
    LayerNormalization,
    MaskedAdd,
    DropMask,
    SequenceMasking,
    TokenSlice,
    register,
)
from bert4keras.layers.crf import ConditionalRandomField, MaximumEntropyMarkovModel
from bert4keras.layers.dropout import Dropout
from bert4keras.layers.gau import GatedAttentionUnit
from bert4keras.layers.global_pointer import (
    EfficientGlobalPointer,
    GlobalPointer,
    global_pointer_crossentropy,
    global_pointer_f1,
)
from bert4keras.layers.legacy import (
    CachePaddedBias,
    HierarchicalPositionEmbedding,
    ScoredMultiHeadAttention,
)
from bert4keras.layers.loss import Loss
from bert4keras.layers.misc import (
    BatchConcat,
    BatchSplit,
    Concatenate1D,
    ConcatSeq2Vec,
    GlobalMaxPooling1D,
    ScaleOffset,
    integerize_shape,
)
from bert4keras.layers.position import (
    PositionEmbedding,
    RelativePositionEmbedding,
    RelativePositionEmbeddingT5,
    SinusoidalPositionEmbedding,
)

__all__ = [
    "AttentionMask",
    "BatchConcat",
    "BatchSplit",
    "BiasAdd",
    "CachePaddedBias",
    "CausalMask",
    "ConcatSeq2Vec",
    "Concatenate1D",
    "ConditionalLayerNormalization",
    "ConditionalRandomField",
    "ContextMask",
    "Dense",
    "EfficientGlobalPointer",
    "Embedding",
    "FeedForward",
    "GatedAttentionUnit",
    "GlobalMaxPooling1D",
    "GlobalPointer",
    "HierarchicalPositionEmbedding",
    "LayerNormalization",
    "Loss",
    "MaskedAdd",
    "DropMask",
    "Dropout",
    "MaximumEntropyMarkovModel",
    "MultiHeadAttention",
    "PositionEmbedding",
    "RelativePositionEmbedding",
    "RelativePositionEmbeddingT5",
    "ScaleOffset",
    "ScoredMultiHeadAttention",
    "SequenceMasking",
    "SinusoidalPositionEmbedding",
    "TokenSlice",
    "custom_objects",
    "global_pointer_crossentropy",
    "global_pointer_f1",
    "integerize_shape",
    "register",
]

custom_objects = {
    name: obj for name, obj in ((name, globals().get(name)) for name in __all__)
    if isinstance(obj, type) and issubclass(obj, keras.layers.Layer)
}


def __getattr__(name):
    """0.11.5 compatibility: ``keras.layers`` names, then ``bert4keras.backend`` names."""
    if not name.startswith("__"):
        if hasattr(keras.layers, name):
            return getattr(keras.layers, name)
        from bert4keras import backend

        if name in vars(backend):
            return vars(backend)[name]
    raise AttributeError("module 'bert4keras.layers' has no attribute %r" % name)
