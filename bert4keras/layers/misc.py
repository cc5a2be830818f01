"""Small layers of bert4keras 0.11.5: an affine ``ScaleOffset``, sequence
concatenation that keeps masks (``Concatenate1D``, ``ConcatSeq2Vec``), a
``GlobalMaxPooling1D`` that skips padding, batch splitting for hand-made data
parallelism (``BatchSplit``/``BatchConcat``), and ``integerize_shape``.
"""

import keras
import numpy as np
from keras import ops

from bert4keras.backend import align
from bert4keras.layers.core import Dense, fresh_initializer, register
from bert4keras.layers.quantization import QuantizableSublayers


@register
class ScaleOffset(QuantizableSublayers, keras.layers.Layer):
    """``y = x * gamma + beta`` over the last axis (0.11.5's ``ScaleOffset``).

    ``scale``/``offset``: True for a trainable ``gamma`` (init 1) / ``beta``
    (init 0), False or None for none, or a number used as a constant. With
    ``conditional=True`` the inputs are ``[x, c]``, ``c`` ``(batch, cond_dim)``,
    and ``gamma``/``beta`` are shifted by zero-initialised projections of
    ``c`` (first passed through ``Dense(hidden_units, hidden_activation,
    use_bias=False)`` when ``hidden_units`` is set), as in conditional layer
    normalization (Su 2019, https://kexue.fm/archives/7124).

    Input/output ``(batch, ..., dim)``. Weights (0.11.5's order): ``beta``,
    ``gamma``, then ``hidden_dense``, ``beta_dense``, ``gamma_dense``.
    """

    def __init__(self, scale=True, offset=True, conditional=False, hidden_units=None,
                 hidden_activation="linear", hidden_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset
        self.conditional = bool(conditional)
        self.hidden_units = None if hidden_units is None else int(hidden_units)
        self.hidden_activation = keras.activations.get(hidden_activation)
        self.hidden_initializer = keras.initializers.get(hidden_initializer)
        self.supports_masking = True

    def _uses(self, value):
        return value is not False and value is not None

    def build(self, input_shape):
        shape = input_shape[0] if self.conditional else input_shape
        dim = shape[-1]
        if self.offset is True:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if self.scale is True:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.conditional:
            cond_shape = input_shape[1]
            if self.hidden_units is not None:
                self.hidden_dense = Dense(
                    self.hidden_units, activation=self.hidden_activation, use_bias=False,
                    kernel_initializer=fresh_initializer(self.hidden_initializer),
                    name="hidden_dense")
                self.hidden_dense.build(cond_shape)
                cond_shape = tuple(cond_shape[:-1]) + (self.hidden_units,)
            if self._uses(self.offset):
                self.beta_dense = Dense(dim, use_bias=False, kernel_initializer="zeros",
                                        name="beta_dense")
                self.beta_dense.build(cond_shape)
            if self._uses(self.scale):
                self.gamma_dense = Dense(dim, use_bias=False, kernel_initializer="zeros",
                                         name="gamma_dense")
                self.gamma_dense.build(cond_shape)
        self.built = True

    def call(self, inputs):
        if self.conditional:
            inputs, cond = inputs
            if self.hidden_units is not None:
                cond = self.hidden_dense(cond)
            cond = align(cond, [0, -1], len(inputs.shape))
        if self._uses(self.scale):
            gamma = self.gamma if self.scale is True else self.scale
            gamma = ops.cast(gamma, inputs.dtype)
            if self.conditional:
                gamma = gamma + ops.cast(self.gamma_dense(cond), inputs.dtype)
            inputs = inputs * gamma
        if self._uses(self.offset):
            beta = self.beta if self.offset is True else self.offset
            beta = ops.cast(beta, inputs.dtype)
            if self.conditional:
                beta = beta + ops.cast(self.beta_dense(cond), inputs.dtype)
            inputs = inputs + beta
        return inputs

    def compute_mask(self, inputs, mask=None):
        if self.conditional and isinstance(mask, (list, tuple)):
            return mask[0]
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, offset=self.offset, conditional=self.conditional,
                      hidden_units=self.hidden_units,
                      hidden_activation=keras.activations.serialize(self.hidden_activation),
                      hidden_initializer=keras.initializers.serialize(self.hidden_initializer))
        return config


def _true_mask(x):
    return ops.ones_like(x[..., 0], dtype="bool")


@register
class Concatenate1D(keras.layers.Layer):
    """Concatenate sequences along axis 1: ``[(batch, n_i, dim)] -> (batch, sum n_i, dim)``.

    Keras masks are concatenated too; an input without one counts as all
    real tokens (``keras.layers.Concatenate`` could not mix the two in 0.11.5's days).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=1)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        masks = [_true_mask(x) if m is None else ops.cast(m, "bool")
                 for x, m in zip(inputs, mask)]
        return ops.concatenate(masks, axis=1)

    def compute_output_shape(self, input_shape):
        lengths = [shape[1] for shape in input_shape]
        total = None if None in lengths else sum(lengths)
        return (input_shape[0][0], total) + tuple(input_shape[0][2:])


@register
class ConcatSeq2Vec(keras.layers.Layer):
    """``[seq (batch, n, d1), vec (batch, d2)] -> (batch, n, d1 + d2)``: the
    vector is repeated at every position and concatenated to the sequence."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        seq, vec = inputs
        vec = ops.broadcast_to(ops.expand_dims(ops.cast(vec, seq.dtype), 1),
                               ops.shape(seq)[:2] + tuple(ops.shape(vec)[1:]))
        return ops.concatenate([seq, vec], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def compute_output_shape(self, input_shape):
        seq, vec = input_shape
        dim = None if seq[-1] is None or vec[-1] is None else seq[-1] + vec[-1]
        return tuple(seq[:-1]) + (dim,)


@register
class BatchSplit(keras.layers.Layer):
    """Split the batch axis into parts (0.11.5, for hand-made data parallelism).

    Args:
        parts: an int ``k`` (``k`` near-equal slices, the first ones of size
            ``ceil(batch / k)``) or a list of proportions (e.g. ``[1, 3]``).

    Input: a tensor or a list of tensors; output: the parts of each input,
    in order (a list of ``len(inputs) * k`` tensors).
    """

    def __init__(self, parts, **kwargs):
        super().__init__(**kwargs)
        self.parts = list(parts) if isinstance(parts, (list, tuple)) else int(parts)
        self.supports_masking = True

    def _count(self):
        return len(self.parts) if isinstance(self.parts, list) else self.parts

    def _bounds(self, batch_size):
        if isinstance(self.parts, list):
            total = float(sum(self.parts))
            cuts = [ops.cast(ops.cast(batch_size, "float32") * (c / total), "int32")
                    for c in np.cumsum(self.parts)]
        else:
            stride = (batch_size + self.parts - 1) // self.parts
            cuts = [stride * (i + 1) for i in range(self.parts)]
        return cuts

    def _split(self, x):
        if keras.backend.is_keras_tensor(x):  # a symbolic mask while the graph is built
            return [keras.KerasTensor((None,) + tuple(x.shape[1:]), dtype=x.dtype)
                    for _ in range(self._count())]
        cuts = self._bounds(ops.shape(x)[0])
        outputs = []
        for i in range(len(cuts)):
            start = 0 if i == 0 else cuts[i - 1]
            end = ops.shape(x)[0] if i == len(cuts) - 1 else cuts[i]
            outputs.append(x[start:end])
        return outputs

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            return [part for x in inputs for part in self._split(x)]
        return self._split(inputs)

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            return [part for x, m in zip(inputs, mask) for part in
                    (self._split(m) if m is not None else [None] * self._count())]
        return self._split(mask) if mask is not None else [None] * self._count()

    def compute_output_spec(self, inputs):
        def parts(x):
            return [keras.KerasTensor((None,) + tuple(x.shape[1:]), dtype=x.dtype)
                    for _ in range(self._count())]

        if isinstance(inputs, (list, tuple)):
            return [p for x in inputs for p in parts(x)]
        return parts(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(parts=self.parts)
        return config


@register
class BatchConcat(keras.layers.Layer):
    """Concatenate a list of tensors along the batch axis (undoes :class:`BatchSplit`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=0)

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)) and all(m is not None for m in mask):
            return ops.concatenate(list(mask), axis=0)
        return None

    def compute_output_shape(self, input_shape):
        return (None,) + tuple(input_shape[0][1:])


@register
class GlobalMaxPooling1D(keras.layers.GlobalMaxPooling1D):
    """``keras.layers.GlobalMaxPooling1D`` that ignores masked steps (0.11.5
    replaced Keras's with this): ``(batch, steps, features) -> (batch, features)``,
    the maximum over the steps whose Keras mask is 1 (channels_last)."""

    def __init__(self, data_format="channels_last", **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        axis = 1 if self.data_format == "channels_last" else 2
        if mask is not None:
            from bert4keras.backend import sequence_masking

            inputs = sequence_masking(inputs, mask, "-inf", axis)
        return ops.max(inputs, axis=axis, keepdims=self.keepdims)

    def compute_mask(self, inputs, mask=None):
        return None


def integerize_shape(func):
    """0.11.5's decorator for ``build(self, input_shape)``: shape entries
    become ints or None (Keras 3 shapes already are; kept for old layers)."""

    def convert(item):
        if isinstance(item, (list, tuple)):
            return type(item)(convert(i) for i in item)
        return None if item is None else int(item)

    def build(self, input_shape):
        return func(self, convert(input_shape))

    return build
