"""Keras 3 layers of the Transformer families bert4keras builds.

All layers use ``keras.ops`` only, keep the original bert4keras names and
weight orders (which the checkpoint name maps in :mod:`bert4keras.models` rely
on), have ``get_config`` and are registered for serialization, so a ``.keras``
file of a fine-tuned model loads back with plain ``keras.saving.load_model``.

Shapes use ``batch``, ``seq_len`` (query length ``q_len``, key length
``k_len``), ``hidden`` and ``heads``.
"""

import math

import keras
from keras import ops

from bert4keras import backend as B

register = keras.saving.register_keras_serializable(package="bert4keras")


@register
class Embedding(keras.layers.Layer):
    """Token embedding whose table can also serve as a tied output projection.

    ``mode='embedding'``: ``(batch, seq_len)`` ids -> ``(batch, seq_len, output_dim)``.
    ``mode='dense'``: ``(batch, seq_len, output_dim)`` -> ``(batch, seq_len,
    input_dim)`` logits ``x @ E^T`` (the MLM head of BERT shares the table).

    Weights: ``embeddings`` ``(input_dim, output_dim)``.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs, mode="embedding"):
        table = ops.cast(self.embeddings, self.compute_dtype)
        if mode == "embedding":
            return ops.take(table, ops.cast(inputs, "int32"), axis=0)
        if mode == "dense":
            return ops.matmul(inputs, ops.transpose(table))
        raise ValueError("Embedding mode must be 'embedding' or 'dense', got %r" % mode)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


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
class BiasAdd(keras.layers.Layer):
    """Adds a trainable bias over the last axis (BERT's ``MLM-Bias``)."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")
        self.built = True

    def call(self, inputs):
        return inputs + ops.cast(self.bias, inputs.dtype)


@register
class TokenSlice(keras.layers.Layer):
    """``(batch, seq_len, hidden) -> (batch, hidden)``: the vector at ``index``.

    BERT's ``Pooler`` takes the [CLS] vector (index 0).
    """

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, inputs):
        return inputs[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update(index=self.index)
        return config


@register
class AttentionMask(keras.layers.Layer):
    """Builds the additive attention bias from token ids (and segment ids).

    Inputs: ``token_ids`` ``(batch, seq_len)`` (id 0 is [PAD]) or
    ``[token_ids, segment_ids]`` for ``mode='unilm'``.

    Output: float32 ``(batch, 1, q_len, k_len)`` (``(batch, 1, 1, k_len)`` for
    ``mode='padding'``) with 0 where attention is allowed and -1e12 elsewhere.

    Modes: ``'padding'`` (keys that are [PAD] are hidden: a BERT encoder),
    ``'lm'`` (plus causal: GPT-style language model), ``'unilm'`` (plus the
    UniLM seq2seq rule over segment ids; Dong et al. 2019).
    """

    def __init__(self, mode="padding", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("padding", "lm", "unilm"):
            raise ValueError("AttentionMask mode must be padding, lm or unilm; got %r" % mode)
        self.mode = mode

    def call(self, inputs):
        if self.mode == "unilm":
            token_ids, segment_ids = inputs
        else:
            token_ids = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        keep = B.padding_visibility(token_ids)
        if self.mode == "lm":
            keep = keep * B.causal_visibility(ops.shape(token_ids)[1])
        elif self.mode == "unilm":
            keep = keep * B.unilm_visibility(segment_ids)
        return B.visibility_to_bias(keep)

    def compute_output_spec(self, inputs):
        token_ids = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        batch, seq_len = token_ids.shape[0], token_ids.shape[1]
        q_len = 1 if self.mode == "padding" else seq_len
        return keras.KerasTensor((batch, 1, q_len, seq_len), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config


@register
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017).

    Inputs: ``[q, k, v]`` or ``[q, k, v, bias]`` with ``q`` ``(batch, q_len,
    hidden)``, ``k``/``v`` ``(batch, k_len, hidden)`` and an additive float
    ``bias`` broadcastable to ``(batch, heads, q_len, k_len)`` (see
    :class:`AttentionMask`).

    Output: ``(batch, q_len, out_dim)``.

    Weights, in this order (the checkpoint maps rely on it): ``q_dense``,
    ``k_dense``, ``v_dense``, ``o_dense``, each a kernel and (``use_bias``) a
    bias. Scores and softmax are computed in float32 under mixed precision.
    """

    def __init__(self, heads, head_size, out_dim=None, key_size=None, use_bias=True,
                 attention_scale=True, attention_dropout=0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.heads = int(heads)
        self.head_size = int(head_size)
        self.out_dim = int(out_dim or heads * head_size)
        self.key_size = int(key_size or head_size)
        self.use_bias = use_bias
        self.attention_scale = attention_scale
        self.attention_dropout = float(attention_dropout or 0.0)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        dense = dict(use_bias=use_bias, kernel_initializer=self.kernel_initializer,
                     dtype=self.dtype_policy)
        self.q_dense = keras.layers.Dense(self.key_size * self.heads, name="q_dense", **dense)
        self.k_dense = keras.layers.Dense(self.key_size * self.heads, name="k_dense", **dense)
        self.v_dense = keras.layers.Dense(self.head_size * self.heads, name="v_dense", **dense)
        self.o_dense = keras.layers.Dense(self.out_dim, name="o_dense", **dense)
        self.dropout = keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        q_shape, k_shape, v_shape = input_shape[:3]
        self.q_dense.build(q_shape)
        self.k_dense.build(k_shape)
        self.v_dense.build(v_shape)
        self.o_dense.build(tuple(q_shape[:-1]) + (self.head_size * self.heads,))
        self.built = True

    def _split_heads(self, x, size):
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], self.heads, size))

    def call(self, inputs, training=None):
        q, k, v = inputs[:3]
        bias = inputs[3] if len(inputs) > 3 else None
        qw = ops.transpose(self._split_heads(self.q_dense(q), self.key_size), (0, 2, 1, 3))
        kw = ops.transpose(self._split_heads(self.k_dense(k), self.key_size), (0, 2, 3, 1))
        vw = ops.transpose(self._split_heads(self.v_dense(v), self.head_size), (0, 2, 1, 3))
        scores = ops.cast(ops.matmul(qw, kw), "float32")  # (batch, heads, q_len, k_len)
        if self.attention_scale:
            scores = scores / math.sqrt(self.key_size)
        if bias is not None:
            scores = scores + ops.cast(bias, "float32")
        probs = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        if self.attention_dropout:
            probs = self.dropout(probs, training=training)
        o = ops.matmul(probs, vw)  # (batch, heads, q_len, head_size)
        o = ops.transpose(o, (0, 2, 1, 3))
        shape = ops.shape(o)
        o = ops.reshape(o, (shape[0], shape[1], self.heads * self.head_size))
        return self.o_dense(o)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.out_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads,
            head_size=self.head_size,
            out_dim=self.out_dim,
            key_size=self.key_size,
            use_bias=self.use_bias,
            attention_scale=self.attention_scale,
            attention_dropout=self.attention_dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@register
class LayerNormalization(keras.layers.Layer):
    """Layer normalization (Ba et al. 2016), optionally conditional.

    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta`` over the last axis,
    computed in float32. With ``conditional=True`` the inputs are ``[x, c]``
    and ``gamma``/``beta`` are shifted by zero-initialised projections of
    ``c`` (the conditional LayerNorm of bert4keras, used for relation
    extraction). Input/output ``(batch, seq_len, hidden)``.

    Weights: ``gamma`` then ``beta`` (then ``beta_dense``, ``gamma_dense``).
    """

    def __init__(self, center=True, scale=True, epsilon=1e-12, conditional=False, **kwargs):
        super().__init__(**kwargs)
        self.center = center
        self.scale = scale
        self.epsilon = float(epsilon)
        self.conditional = conditional

    def build(self, input_shape):
        shape = input_shape[0] if self.conditional else input_shape
        dim = shape[-1]
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.center:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if self.conditional:
            cond_shape = input_shape[1]
            if self.center:
                self.beta_dense = keras.layers.Dense(dim, use_bias=False,
                                                     kernel_initializer="zeros", name="beta_dense")
                self.beta_dense.build(cond_shape)
            if self.scale:
                self.gamma_dense = keras.layers.Dense(dim, use_bias=False,
                                                      kernel_initializer="zeros", name="gamma_dense")
                self.gamma_dense.build(cond_shape)
        self.built = True

    def call(self, inputs):
        if self.conditional:
            x, cond = inputs
            cond = ops.cast(cond, "float32")
            for _ in range(len(x.shape) - len(cond.shape)):
                cond = ops.expand_dims(cond, 1)
        else:
            x = inputs
        dtype = x.dtype
        x = ops.cast(x, "float32")
        mean = ops.mean(x, axis=-1, keepdims=True)
        x = x - mean
        var = ops.mean(ops.square(x), axis=-1, keepdims=True)
        x = x * ops.rsqrt(var + self.epsilon)
        if self.scale:
            gamma = ops.cast(self.gamma, "float32")
            if self.conditional:
                gamma = gamma + ops.cast(self.gamma_dense(cond), "float32")
            x = x * gamma
        if self.center:
            beta = ops.cast(self.beta, "float32")
            if self.conditional:
                beta = beta + ops.cast(self.beta_dense(cond), "float32")
            x = x + beta
        return ops.cast(x, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def get_config(self):
        config = super().get_config()
        config.update(center=self.center, scale=self.scale, epsilon=self.epsilon,
                      conditional=self.conditional)
        return config


@register
class FeedForward(keras.layers.Layer):
    """Position-wise feed-forward block: ``Dense(units, act) -> Dense(hidden)``.

    Input/output ``(batch, seq_len, hidden)``. Weights: ``i0_dense`` kernel and
    bias, then ``o_dense`` kernel and bias.
    """

    def __init__(self, units, activation="relu", use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = activation
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.i0_dense = keras.layers.Dense(self.units, activation=B.get_activation(activation),
                                           use_bias=use_bias, name="i0_dense",
                                           kernel_initializer=self.kernel_initializer,
                                           dtype=self.dtype_policy)
        self.o_dense = None

    def build(self, input_shape):
        self.i0_dense.build(input_shape)
        self.o_dense = keras.layers.Dense(input_shape[-1], use_bias=self.use_bias, name="o_dense",
                                          kernel_initializer=self.kernel_initializer,
                                          dtype=self.dtype_policy)
        self.o_dense.build(tuple(input_shape[:-1]) + (self.units,))
        self.built = True

    def call(self, inputs):
        return self.o_dense(self.i0_dense(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        activation = self.activation
        if callable(activation):
            activation = keras.activations.serialize(activation)
        config.update(units=self.units, activation=activation, use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


custom_objects = {
    cls.__name__: cls
    for cls in (Embedding, PositionEmbedding, BiasAdd, TokenSlice, AttentionMask,
                MultiHeadAttention, LayerNormalization, FeedForward)
}
