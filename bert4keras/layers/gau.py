"""``GatedAttentionUnit``: the single-head gated attention of FLASH (bert4keras 0.11.5).

Hua, Dai, Liu, Le 2022, "Transformer Quality in Linear Time"
(arXiv:2202.10447); Su's notes: https://kexue.fm/archives/8934.
"""

import math

import keras
from keras import ops

from bert4keras import backend as B
from bert4keras.layers.core import Dense, fresh_initializer, register
from bert4keras.layers.dropout import Dropout
from bert4keras.layers.quantization import QuantizableSublayers
from bert4keras.layers.misc import ScaleOffset


@register
class GatedAttentionUnit(QuantizableSublayers, keras.layers.Layer):
    """Gated attention unit: one attention head gating an expanded MLP.

    Self-attention (``self_attention=True``), input ``x`` ``(batch, n, hidden)``::

        u, v, z = split(act(x W_i + b_i), [units, units, key_size])
        q, k    = z * gamma_q + beta_q, z * gamma_k + beta_k
        A       = normalize(q k^T / sqrt(key_size))       # (batch, n, n)
        output  = (u * (A v)) W_o + b_o                    # (batch, n, hidden)

    ``normalize`` is :func:`bert4keras.backend.attention_normalize` with
    ``normalization`` ('squared_relu' as in the paper: ``relu(s)^2 / n``,
    'softmax', or 'softmax_plus'). With ``self_attention=False`` the inputs
    are ``[q, k, v]``: ``u, q = split(act(q W_uq), [units, key_size])``,
    ``k = act(k W_k)``, ``v = act(v W_v)``.

    Call arguments (0.11.5's): ``a_bias=True`` means one more input after
    ``x`` (or ``q, k, v``): an additive float bias broadcastable to
    ``(batch, n, n)`` (a ``(batch, 1, n, n)`` bias of
    :class:`~bert4keras.layers.AttentionMask` works too) or a bool keep-mask;
    ``p_bias='rotary'`` means one more input, last: a sinusoidal table
    ``(batch|1, n, key_size)`` that rotates ``q`` and ``k`` (RoPE). Keys
    whose Keras mask is 0 get no attention (the mask of ``x``, or of ``v``).

    Weights: ``i_dense`` (self-attention; ``uq_dense``, ``k_dense``,
    ``v_dense`` otherwise), ``q_scaleoffset``, ``k_scaleoffset`` (self-attention),
    ``o_dense``; no biases and no ``beta``'s with ``use_bias=False``.
    """

    def __init__(self, units, key_size, activation="swish", use_bias=True,
                 normalization="squared_relu", self_attention=True, attention_scale=True,
                 attention_dropout=None, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.key_size = int(key_size)
        self.activation = keras.activations.get(B.get_activation(activation))
        self.use_bias = bool(use_bias)
        self.normalization = normalization
        self.self_attention = bool(self_attention)
        self.attention_scale = bool(attention_scale)
        self.attention_dropout = attention_dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def _dense(self, units, name, activation=None):
        return Dense(units, activation=activation, use_bias=self.use_bias,
                     kernel_initializer=fresh_initializer(self.kernel_initializer),
                     name=name, dtype=self.dtype_policy)

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        hidden = shapes[0][-1]
        if self.self_attention:
            self.i_dense = self._dense(2 * self.units + self.key_size, "i_dense",
                                       self.activation)
            self.i_dense.build(shapes[0])
            key_shape = tuple(shapes[0][:-1]) + (self.key_size,)
            self.q_scaleoffset = ScaleOffset(offset=self.use_bias, name="q_scaleoffset",
                                             dtype=self.dtype_policy)
            self.q_scaleoffset.build(key_shape)
            self.k_scaleoffset = ScaleOffset(offset=self.use_bias, name="k_scaleoffset",
                                             dtype=self.dtype_policy)
            self.k_scaleoffset.build(key_shape)
        else:
            self.uq_dense = self._dense(self.units + self.key_size, "uq_dense", self.activation)
            self.uq_dense.build(shapes[0])
            self.k_dense = self._dense(self.key_size, "k_dense", self.activation)
            self.k_dense.build(shapes[1])
            self.v_dense = self._dense(self.units, "v_dense", self.activation)
            self.v_dense.build(shapes[2])
        self.o_dense = self._dense(hidden, "o_dense")
        self.o_dense.build(tuple(shapes[0][:-1]) + (self.units,))
        self.dropout = Dropout(self.attention_dropout or 0.0)
        self.built = True

    def call(self, inputs, mask=None, a_bias=None, p_bias=None, training=None):
        if not isinstance(inputs, (list, tuple)):
            inputs, mask = [inputs], [mask]
        inputs = list(inputs)
        if not isinstance(mask, (list, tuple)):
            mask = [mask] * len(inputs)
        n = 1 if self.self_attention else 3
        key_mask = mask[0] if self.self_attention else mask[2]
        bias = None
        if a_bias:
            bias = inputs[n]
            n += 1
            if len(bias.shape) == 4:  # (batch, 1, n, n) of AttentionMask
                bias = ops.squeeze(bias, 1)
        if self.self_attention:
            u, v, z = ops.split(self.i_dense(inputs[0]),
                                [self.units, 2 * self.units], axis=-1)
            q, k = self.q_scaleoffset(z), self.k_scaleoffset(z)
        else:
            u, q = ops.split(self.uq_dense(inputs[0]), [self.units], axis=-1)
            k, v = self.k_dense(inputs[1]), self.v_dense(inputs[2])
        if p_bias == "rotary":
            q, k = B.apply_rotary_position_embeddings(inputs[n], q, k)
        scores = ops.einsum("bmd,bnd->bmn", q, k)
        if self.attention_scale:
            scores = scores / math.sqrt(self.key_size)
        if bias is not None and B.dtype(bias) != "bool":
            bias = ops.cast(bias, scores.dtype)
        weights = B.attention_normalize(scores, key_mask, -1, self.normalization, bias)
        if self.attention_dropout:
            weights = self.dropout(weights, training=training)
        return self.o_dense(u * ops.einsum("bmn,bnd->bmd", weights, v))

    def compute_mask(self, inputs, mask=None):
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def compute_output_shape(self, input_shape):
        return input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, key_size=self.key_size,
                      activation=keras.activations.serialize(self.activation),
                      use_bias=self.use_bias, normalization=self.normalization,
                      self_attention=self.self_attention,
                      attention_scale=self.attention_scale,
                      attention_dropout=self.attention_dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
