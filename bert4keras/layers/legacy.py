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

import math

import keras
from keras import ops

from bert4keras.layers.attention import MultiHeadAttention
from bert4keras.layers.core import register
from bert4keras.layers.position import PositionEmbedding, _merge


@register
class HierarchicalPositionEmbedding(PositionEmbedding):
    """Trainable absolute positions extended past the table by hierarchical
    decomposition (Su Jianlin, "层次分解位置编码，让BERT可以处理超长文本",
    kexue.fm/archives/7947, 2020; bert4keras 0.11.5's ``hierarchical=True``).

    With the table ``p_0 .. p_{n-1}`` (``n = input_dim``) and ``alpha`` in
    (0, 1), let ``u_i = (p_i - alpha p_0) / (1 - alpha)``; position ``k`` is
    encoded as ``alpha u_{k // n} + (1 - alpha) u_{k % n}``. For ``k < n``
    this is exactly ``p_k``, so a trained model is unchanged on inputs it
    could already read, and positions up to ``n * n - 1`` get distinct codes.

    Args:
        hierarchical: ``alpha``; ``True`` means 0.4 (0.11.5's default).
        input_dim, output_dim, merge_mode, embeddings_initializer: as
            :class:`~bert4keras.layers.PositionEmbedding` (same weight
            ``embeddings``, ``(input_dim, output_dim)``).

    Input ``(batch, seq_len, output_dim)`` with any ``seq_len <= input_dim**2``
    (not checked); ``positions`` ``(batch|1, seq_len)`` as there.
    """

    def __init__(self, input_dim, output_dim, hierarchical=True, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        alpha = 0.4 if hierarchical is True else float(hierarchical)
        if not 0.0 < alpha < 1.0:
            raise ValueError("hierarchical (alpha) must be True or in (0, 1), got %r"
                             % (hierarchical,))
        self.hierarchical = alpha

    def call(self, inputs, positions=None):
        if positions is None:
            positions = ops.arange(ops.shape(inputs)[1])[None]
        positions = ops.cast(positions, "int32")
        alpha = self.hierarchical
        table = ops.cast(self.embeddings, inputs.dtype)
        table = (table - alpha * table[:1]) / (1.0 - alpha)
        high = ops.take(table, positions // self.input_dim, axis=0)
        low = ops.take(table, positions % self.input_dim, axis=0)
        return _merge(inputs, alpha * high + (1.0 - alpha) * low, self.merge_mode)

    @property
    def max_positions(self):
        return self.input_dim * self.input_dim

    def get_config(self):
        config = super().get_config()
        config.update(hierarchical=self.hierarchical)
        return config


@register
class ScoredMultiHeadAttention(MultiHeadAttention):
    """:class:`~bert4keras.layers.MultiHeadAttention` that returns ``[output,
    scores]``: ``scores`` ``(batch, heads, q_len, k_len)`` float32 are the
    scaled dot products (with the position terms, without the bias input),
    i.e. 0.11.5's ``return_attention_scores=True``. RealFormer (He et al.
    2020, arXiv:2012.11747) adds them to the next layer's bias
    (``residual_attention_scores``). Same weights as the plain layer.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # untracked: holds the scores of the call in progress only
        object.__setattr__(self, "_scores", [])

    def call(self, inputs, training=None):
        self._scores.append(None)
        output = super().call(inputs, training=training)
        return [output, self._scores.pop()]

    def _probabilities(self, scores, bias, training=None):
        if self._scores:  # inside call (a cached step keeps nothing)
            self._scores[-1] = (scores / math.sqrt(self.key_size) if self.attention_scale
                                else scores)
        return super()._probabilities(scores, bias, training)

    def compute_output_shape(self, input_shape):
        output = super().compute_output_shape(input_shape)
        q_shape, k_shape = input_shape[0], input_shape[1]
        return [output, (q_shape[0], self.heads, q_shape[1], k_shape[1])]


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
