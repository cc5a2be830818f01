"""Position encodings: trainable absolute (BERT), and the relative/rotary
schemes of the other families.

Cached decoding: every layer here has ``call_cached(inputs, step)``, its
output for the new positions of one decoding step (see
:class:`bert4keras.generation.DecodingStep`): the absolute layers encode the
positions the step gives them (``step.positions``, ``(batch, q_len)``), the
relative ones the distances from the step's slots (``step.slots``, the
``q_len`` new positions from a start index) to every slot of the cache
(``step.cache_len``).
"""

import keras
import numpy as np
from keras import ops

from bert4keras import backend as B
from bert4keras.layers.core import register


@register
class PositionEmbedding(keras.layers.Layer):
    """Trainable absolute position embedding (BERT), merged into its input.

    Input ``(batch, seq_len, output_dim)``, or ``[x, position_ids]`` with
    ``custom_position_ids=True`` (``position_ids`` int ``(batch|1,
    seq_len)``, the table rows to use; bert4keras 0.11.5's layout). Output
    the shape of ``x`` with the position rows added (``merge_mode='add'``),
    multiplied (``'mul'``: ``x * (p + 1)``), concatenated (``'concat'``) or
    returned alone (``'zero'``).

    ``hierarchical`` (bert4keras 0.11.5's option; Su Jianlin,
    "层次分解位置编码，让BERT可以处理超长文本", kexue.fm/archives/7947, 2020):
    with ``alpha`` (``True`` means 0.4) and the table ``p_0 .. p_{n-1}``
    (``n = input_dim``), let ``u_i = (p_i - alpha p_0) / (1 - alpha)``;
    position ``k`` is encoded as ``alpha u_{k // n} + (1 - alpha) u_{k % n}``,
    which equals ``p_k`` for ``k < n`` and reaches ``n * n`` positions.

    Weights: ``embeddings`` ``(input_dim, output_dim)``.

    Raises:
        ValueError: ``hierarchical`` outside (0, 1); when ``seq_len``
            exceeds :attr:`max_positions` and the length is known when the
            graph is built; on TensorFlow with an unknown length, an
            ``InvalidArgumentError`` with the same message at run time.
    """

    def __init__(self, input_dim, output_dim, merge_mode="add", hierarchical=None,
                 embeddings_initializer="zeros", custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in ("add", "mul", "zero", "concat"):
            raise ValueError("merge_mode must be add, mul, zero or concat; got %r" % merge_mode)
        if hierarchical:
            hierarchical = 0.4 if hierarchical is True else float(hierarchical)
            if not 0.0 < hierarchical < 1.0:
                raise ValueError("%s: hierarchical (alpha) must be True or in (0, 1), got %r"
                                 % (self.name, hierarchical))
        else:
            hierarchical = None
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.merge_mode = merge_mode
        self.hierarchical = hierarchical
        self.custom_position_ids = bool(custom_position_ids)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = True  # a Keras mask on the input passes through

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    @property
    def max_positions(self):
        """Positions this layer can encode (the table's rows, ``input_dim``,
        or ``input_dim**2`` when ``hierarchical``); cached decoding refuses a
        prompt plus new tokens longer than this."""
        return self.input_dim * self.input_dim if self.hierarchical else self.input_dim

    def call(self, inputs, positions=None):
        """``positions``: int ``(batch|1, seq_len)``, the positions to encode
        (default: the second input with ``custom_position_ids``, else ``0 ..
        seq_len - 1``, checked against :attr:`max_positions`)."""
        inputs, positions = _with_positions(self, inputs, positions)
        if positions is None:
            seq_len = inputs.shape[1]
            if seq_len is None:
                seq_len = ops.shape(inputs)[1]
            B.check_max_length(seq_len, self.max_positions, self.name)
            positions = ops.arange(seq_len)[None]
        positions = ops.cast(positions, "int32")
        table = ops.cast(self.embeddings, inputs.dtype)
        if self.hierarchical:
            alpha = self.hierarchical
            table = (table - alpha * table[:1]) / (1.0 - alpha)
            high = ops.take(table, positions // self.input_dim, axis=0)
            low = ops.take(table, positions % self.input_dim, axis=0)
            pos = alpha * high + (1.0 - alpha) * low
        else:
            pos = ops.take(table, positions, axis=0)
        return _merge(inputs, pos, self.merge_mode)

    def call_cached(self, inputs, step):
        """The rows ``step.positions`` ``(batch, q_len)`` merged into the new
        positions ``inputs`` ``(batch, q_len, dim)`` (a cached decoding step)."""
        return self(inputs, positions=step.positions)

    def compute_output_shape(self, input_shape):
        if self.custom_position_ids:
            input_shape = input_shape[0]
        if self.merge_mode == "concat":
            return tuple(input_shape[:2]) + (input_shape[2] + self.output_dim,)
        return tuple(input_shape[:2]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            merge_mode=self.merge_mode,
            hierarchical=self.hierarchical,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
            custom_position_ids=self.custom_position_ids,
        )
        return config


@register
class SinusoidalPositionEmbedding(keras.layers.Layer):
    """Fixed sinusoidal position embedding (no weights), merged into its input.

    Row ``p`` is ``[sin t0, cos t0, sin t1, cos t1, ...]`` with ``t_i = p *
    10000^(-2i/output_dim)`` (see :func:`bert4keras.backend.sinusoidal_embeddings`).
    RoFormer uses ``merge_mode='zero'`` to get the table alone and rotates
    queries and keys with it (``MultiHeadAttention(p_bias='rotary')``).

    Input ``(batch, seq_len, hidden)``, or ``[x, position_ids]`` with
    ``custom_position_ids=True`` (``position_ids`` ``(batch|1, seq_len)``,
    int or float; bert4keras 0.11.5's layout). Output: ``x + table``
    (``'add'``), ``x * (table + 1)`` (``'mul'``), the concatenation
    (``'concat'``), or the table alone (``'zero'``: ``(1, seq_len,
    output_dim)``, ``(batch|1, seq_len, output_dim)`` for custom positions).
    """

    def __init__(self, output_dim, merge_mode="add", custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in ("add", "mul", "zero", "concat"):
            raise ValueError("merge_mode must be add, mul, zero or concat; got %r" % merge_mode)
        self.output_dim = int(output_dim)
        self.merge_mode = merge_mode
        self.custom_position_ids = bool(custom_position_ids)
        self.supports_masking = True  # a Keras mask on the input passes through

    def call(self, inputs, positions=None):
        """``positions``: ``(batch|1, seq_len)`` positions to encode (default:
        the second input with ``custom_position_ids``, else ``0 .. seq_len -
        1``)."""
        inputs, positions = _with_positions(self, inputs, positions)
        if positions is None:
            positions = ops.arange(ops.shape(inputs)[1])[None]
        table = B.sinusoidal_embeddings(ops.cast(positions, "float32"), self.output_dim)
        if self.merge_mode == "zero":
            return table
        return _merge(inputs, ops.cast(table, inputs.dtype), self.merge_mode)

    def call_cached(self, inputs, step):
        """The encoding of ``step.positions`` ``(batch, q_len)``: ``(batch,
        q_len, output_dim)`` (``'zero'``) or merged into ``inputs``."""
        return self(inputs, positions=step.positions)

    def compute_output_shape(self, input_shape):
        if self.custom_position_ids:
            input_shape, position_shape = input_shape
            if self.merge_mode == "zero":
                return tuple(position_shape[:2]) + (self.output_dim,)
        if self.merge_mode == "zero":
            return (1, input_shape[1], self.output_dim)
        if self.merge_mode == "concat":
            return tuple(input_shape[:2]) + (input_shape[2] + self.output_dim,)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, merge_mode=self.merge_mode,
                      custom_position_ids=self.custom_position_ids)
        return config


def _with_positions(layer, inputs, positions):
    """``(x, positions)`` from a position layer's inputs: with
    ``custom_position_ids`` the inputs are ``[x, position_ids]`` (an explicit
    ``positions`` argument wins).

    Raises:
        ValueError: ``custom_position_ids`` and the inputs are not a pair.
    """
    if not layer.custom_position_ids:
        return inputs, positions
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise ValueError("%s: custom_position_ids=True takes [inputs, position_ids], got %r"
                         % (layer.name, inputs))
    return inputs[0], inputs[1] if positions is None else positions


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
        return self._between(ops.arange(ops.shape(q)[1]), ops.arange(ops.shape(k)[1]))

    def call_cached(self, inputs, step):
        """The new positions (slots ``step.slots``) against every slot of the
        cache: ``(q_len, step.cache_len, output_dim)``. Left padding shifts
        queries and keys alike, so slot differences are position differences."""
        return self._between(step.slots, ops.arange(step.cache_len, dtype="int32"))

    def _between(self, q_idx, k_idx):
        """Rows of the table for query indices ``(q_len,)`` and key indices
        ``(k_len,)``: ``(q_len, k_len, output_dim)``."""
        max_distance = (self.input_dim - 1) // 2
        distance = ops.cast(k_idx[None, :], "int32") - ops.cast(q_idx[:, None], "int32")
        rows = ops.clip(distance, -max_distance, max_distance) + max_distance
        return ops.take(ops.convert_to_tensor(self._table), rows, axis=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][1], input_shape[1][1], self.output_dim)

    def compute_mask(self, inputs, mask=None):
        return None  # a (q_len, k_len) table, not a sequence of the batch

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
        return self._biases(self._buckets(ops.shape(q)[1], ops.shape(k)[1]))

    def call_cached(self, inputs, step):
        """The new positions (slots ``step.slots``) against every slot of the
        cache: ``(q_len, step.cache_len, output_dim)`` (slot differences are
        position differences under left padding; the bucket table is a
        constant of the static ``cache_len``)."""
        buckets = self._buckets(step.cache_len, step.cache_len)
        return self._biases(ops.take(buckets, step.slots, axis=0))

    def _buckets(self, q_len, k_len):
        return B.t5_relative_position_buckets(
            q_len, k_len, num_buckets=self.input_dim, max_distance=self.max_distance,
            bidirectional=self.bidirectional)

    def _biases(self, buckets):
        return ops.take(ops.cast(self.embeddings, "float32"), buckets, axis=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][1], input_shape[1][1], self.output_dim)

    def compute_mask(self, inputs, mask=None):
        return None  # a (q_len, k_len) table, not a sequence of the batch

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


def _merge(inputs, table, mode):
    """A position table ``(batch|1, seq_len, dim)`` merged into ``inputs``
    ``(batch, seq_len, hidden)`` by ``mode``: ``'add'``, ``'mul'`` (``x *
    (table + 1)``), ``'zero'`` (the table alone, broadcast to the batch) or
    ``'concat'`` (along the last axis)."""
    if mode == "add":
        return inputs + table
    if mode == "mul":
        return inputs * (table + 1.0)
    shape = tuple(ops.shape(inputs)[:2]) + (ops.shape(table)[-1],)
    if mode == "zero":
        return ops.broadcast_to(table, shape)
    return ops.concatenate([inputs, ops.broadcast_to(table, shape)], axis=-1)
