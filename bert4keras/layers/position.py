"""Position encodings: trainable absolute (BERT), and the relative/rotary
schemes of the other families."""

import keras
import numpy as np
from keras import ops

from bert4keras import backend as B
from bert4keras.layers.core import register


@register
class PositionEmbedding(keras.layers.Layer):
    """Trainable absolute position embedding (BERT), merged into its input.

    Input ``(batch, seq_len, output_dim)``; output the same shape with row
    ``i`` of the table added (``merge_mode='add'``), multiplied (``'mul'``),
    concatenated (``'concat'``) or returned alone (``'zero'``).

    Raises:
        ValueError: when ``seq_len > input_dim`` (the table's rows, i.e.
            ``max_position``) and the length is known when the graph is built;
            on TensorFlow with an unknown length, an ``InvalidArgumentError``
            with the same message at run time.
    """

    def __init__(self, input_dim, output_dim, merge_mode="add",
                 embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.merge_mode = merge_mode
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs):
        seq_len = inputs.shape[1]
        if seq_len is None:
            seq_len = ops.shape(inputs)[1]
        B.check_max_length(seq_len, self.input_dim, self.name)
        table = ops.cast(self.embeddings, inputs.dtype)
        pos = ops.take(table, ops.arange(seq_len), axis=0)[None]
        if self.merge_mode == "add":
            return inputs + pos
        if self.merge_mode == "mul":
            return inputs * (pos + 1.0)
        if self.merge_mode == "zero":
            return ops.broadcast_to(pos, ops.shape(inputs)[:2] + (self.output_dim,))
        pos = ops.broadcast_to(pos, (ops.shape(inputs)[0], seq_len, self.output_dim))
        return ops.concatenate([inputs, pos], axis=-1)

    def compute_output_shape(self, input_shape):
        if self.merge_mode == "concat":
            return tuple(input_shape[:2]) + (input_shape[2] + self.output_dim,)
        return tuple(input_shape[:2]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            merge_mode=self.merge_mode,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


@register
class SinusoidalPositionEmbedding(keras.layers.Layer):
    """Fixed sinusoidal position embedding (no weights), merged into its input.

    Row ``p`` is ``[sin t0, cos t0, sin t1, cos t1, ...]`` with ``t_i = p *
    10000^(-2i/output_dim)`` (see :func:`bert4keras.backend.sinusoidal_embeddings`).
    RoFormer uses ``merge_mode='zero'`` to get the table alone and rotates
    queries and keys with it (``MultiHeadAttention(p_bias='rotary')``).

    Input ``(batch, seq_len, hidden)``. Output: ``inputs + table``
    (``'add'``), ``inputs * (table + 1)`` (``'mul'``), the concatenation
    (``'concat'``), or the table alone ``(1, seq_len, output_dim)`` (``'zero'``).
    """

    def __init__(self, output_dim, merge_mode="add", **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in ("add", "mul", "zero", "concat"):
            raise ValueError("merge_mode must be add, mul, zero or concat; got %r" % merge_mode)
        self.output_dim = int(output_dim)
        self.merge_mode = merge_mode

    def call(self, inputs):
        seq_len = ops.shape(inputs)[1]
        table = B.sinusoidal_embeddings(ops.arange(seq_len)[None], self.output_dim)
        if self.merge_mode == "zero":
            return table
        table = ops.cast(table, inputs.dtype)
        if self.merge_mode == "add":
            return inputs + table
        if self.merge_mode == "mul":
            return inputs * (table + 1.0)
        table = ops.broadcast_to(table, (ops.shape(inputs)[0], seq_len, self.output_dim))
        return ops.concatenate([inputs, table], axis=-1)

    def compute_output_shape(self, input_shape):
        if self.merge_mode == "zero":
            return (1, input_shape[1], self.output_dim)
        if self.merge_mode == "concat":
            return tuple(input_shape[:2]) + (input_shape[2] + self.output_dim,)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, merge_mode=self.merge_mode)
        return config


@register
class RelativePositionEmbedding(keras.layers.Layer):
    """NEZHA's functional relative position encoding (Wei et al. 2019).

    For query position ``i`` and key position ``j`` the clipped distance
    ``d = clip(j - i, -M, M)`` (``M = (input_dim - 1) // 2``, 64 in NEZHA)
    selects row ``d + M`` of a fixed table whose row ``r`` is the interleaved
    sinusoid ``[sin(r w_0), cos(r w_0), ...]``, ``w_k = 10000^(-2k/output_dim)``
    -- the table of huawei-noah's NEZHA ``_generate_relative_positions_embeddings``.
    The table is a constant (computed once in float64), not a weight.

    Inputs: ``[q, k]`` ``(batch, q_len, ...)``, ``(batch, k_len, ...)`` (only
    the lengths are used). Output: float32 ``(q_len, k_len, output_dim)``, the
    ``position`` input of ``MultiHeadAttention(p_bias='typical_relative')``.
    """

    def __init__(self, input_dim, output_dim, **kwargs):
        super().__init__(**kwargs)
        if input_dim < 1 or input_dim % 2 == 0:
            raise ValueError("input_dim must be 2 * max_distance + 1, got %d" % input_dim)
        if output_dim % 2:
            raise ValueError("output_dim must be even, got %d" % output_dim)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        rows = np.arange(self.input_dim, dtype="float64")[:, None]
        freqs = np.power(10000.0, -2.0 * np.arange(self.output_dim // 2) / self.output_dim)
        angles = rows * freqs
        self._table = np.stack([np.sin(angles), np.cos(angles)], -1).reshape(
            self.input_dim, self.output_dim).astype("float32")

    def call(self, inputs):
        q, k = inputs
        max_distance = (self.input_dim - 1) // 2
        q_idx = ops.arange(ops.shape(q)[1])[:, None]
        k_idx = ops.arange(ops.shape(k)[1])[None, :]
        rows = ops.clip(k_idx - q_idx, -max_distance, max_distance) + max_distance
        return ops.take(ops.convert_to_tensor(self._table), rows, axis=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][1], input_shape[1][1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, output_dim=self.output_dim)
        return config


@register
class RelativePositionEmbeddingT5(keras.layers.Layer):
    """T5's learned relative position bias (Raffel et al. 2020).

    Each (query, key) distance falls in one of ``input_dim`` buckets
    (:func:`bert4keras.backend.t5_relative_position_buckets`:
    ``bidirectional`` for the encoder, causal for the decoder); each bucket
    holds one scalar per head.

    Inputs: ``[q, k]`` ``(batch, q_len, ...)``, ``(batch, k_len, ...)`` (only
    the lengths are used). Output: float32 ``(q_len, k_len, output_dim)``,
    the ``position`` input of ``MultiHeadAttention(p_bias='t5_relative')``.

    Weights: ``embeddings`` ``(input_dim, output_dim)`` = (buckets, heads);
    mesh-TF checkpoints store it transposed (``relative_attention_bias``,
    ``(heads, buckets)``).
    """

    def __init__(self, input_dim, output_dim, max_distance=128, bidirectional=True,
                 embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.max_distance = int(max_distance)
        self.bidirectional = bool(bidirectional)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs):
        q, k = inputs
        buckets = B.t5_relative_position_buckets(
            ops.shape(q)[1], ops.shape(k)[1], num_buckets=self.input_dim,
            max_distance=self.max_distance, bidirectional=self.bidirectional)
        return ops.take(ops.cast(self.embeddings, "float32"), buckets, axis=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][1], input_shape[1][1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            max_distance=self.max_distance,
            bidirectional=self.bidirectional,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config
