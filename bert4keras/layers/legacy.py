"""Layers behind bert4keras 0.11.5's ``build_transformer_model`` options.

:func:`bert4keras.models.build_transformer_model` swaps these in for the
plain layers of the same name when an option asks for them, so the layer
names and weights (and hence the checkpoint maps) stay those of the plain
model:

* :class:`HierarchicalPositionEmbedding` (``hierarchical_position``):
  :class:`~bert4keras.layers.PositionEmbedding` that encodes positions beyond
  its table;
* :class:`ScoredMultiHeadAttention` (``residual_attention_scores``):
  :class:`~bert4keras.layers.MultiHeadAttention` that also returns its
  attention scores;
* :class:`CachePaddedBias` (``attention_caches``): an attention bias widened
  to cover cached keys.
"""

import keras
from keras import ops

from bert4keras.layers.attention import MultiHeadAttention
from bert4keras.layers.core import register
from bert4keras.layers.position import PositionEmbedding


@register
class HierarchicalPositionEmbedding(PositionEmbedding):
    """:class:`~bert4keras.layers.PositionEmbedding` with ``hierarchical``
    on by default (``True``: ``alpha = 0.4``, bert4keras 0.11.5's default):
    positions up to ``input_dim**2`` by hierarchical decomposition (see
    there). Same weight ``embeddings`` ``(input_dim, output_dim)``.

    Raises:
        ValueError: ``hierarchical`` false or outside (0, 1).
    """

    def __init__(self, input_dim, output_dim, hierarchical=True, **kwargs):
        if not hierarchical:
            raise ValueError("HierarchicalPositionEmbedding needs hierarchical=True or an "
                             "alpha in (0, 1), got %r; use PositionEmbedding" % (hierarchical,))
        super().__init__(input_dim, output_dim, hierarchical=hierarchical, **kwargs)


@register
class ScoredMultiHeadAttention(MultiHeadAttention):
    """:class:`~bert4keras.layers.MultiHeadAttention` with
    ``return_attention_scores=True``: the output is ``[output, scores]``,
    ``scores`` ``(batch, heads, q_len, k_len)`` float32 the scaled dot
    products (with the position terms, without the bias input). RealFormer
    (He et al. 2020, arXiv:2012.11747) adds them to the next layer's bias
    (``residual_attention_scores``). Same weights as the plain layer.
    """

    def __init__(self, *args, **kwargs):
        kwargs["return_attention_scores"] = True
        super().__init__(*args, **kwargs)


@register
class CachePaddedBias(keras.layers.Layer):
    """An attention bias widened by zeros in front for cached keys.

    Inputs ``[bias, cache]``: ``bias`` ``(batch|1, 1|heads, q_len|1,
    k_len)``, ``cache`` ``(batch, cache_len, dim)``. Output ``(...,
    cache_len + k_len)``: the cached positions are visible to every query
    (0.11.5's ``attention_caches``, whose caches carry no mask).
    """

    def call(self, inputs):
        bias, cache = inputs
        shape = ops.shape(bias)
        pad = ops.zeros(tuple(shape[:-1]) + (ops.shape(cache)[1],), dtype=bias.dtype)
        return ops.concatenate([pad, bias], axis=-1)

    def compute_output_shape(self, input_shape):
        bias, cache = input_shape
        k = None if bias[-1] is None or cache[1] is None else bias[-1] + cache[1]
        return tuple(bias[:-1]) + (k,)
