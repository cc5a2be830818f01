"""Span-scoring heads for (nested) entity recognition: GlobalPointer.

* :class:`GlobalPointer` -- one ``q . k`` score per (head, start, end)
  (Su 2021, https://kexue.fm/archives/8373).
* :class:`EfficientGlobalPointer` -- shared ``q``/``k`` plus per-head start
  and end biases (Su 2022, https://kexue.fm/archives/8877).
* :func:`global_pointer_crossentropy` (the multi-label cross-entropy over all
  spans of a head) and :func:`global_pointer_f1` (a batch span F1 metric).

Both layers keep bert4keras 0.11.5's arguments, weight names and weight
layouts, so weights trained with the original toolkit mean the same here.
Padding follows the convention of :mod:`bert4keras.layers.crf`: call the
layers on ``[hidden, token_ids]`` (token id 0 is padding) or pass ``mask=``;
padded rows and columns of the output are -1e12 and the loss ignores them.

All layers use ``keras.ops`` only, run on every backend, have ``get_config``
and are registered for ``keras.saving``.
"""

import math

import keras
from keras import ops

from bert4keras import backend as B
from bert4keras.layers.core import Dense, fresh_initializer, register
from bert4keras.layers.quantization import QuantizableSublayers
from bert4keras.layers.crf import (PAD_THRESHOLD, _check_length, _invalid_rows, _nan_where,
                                   _scores_shape, _split_inputs)

__all__ = [
    "EfficientGlobalPointer",
    "GlobalPointer",
    "global_pointer_crossentropy",
    "global_pointer_f1",
]


def _span_mask(logits, mask, tril_mask):
    """Set padded rows/columns (and, with ``tril_mask``, spans that end
    before they start) of ``(batch, heads, seq_len, seq_len)`` to -1e12."""
    seq_len = ops.shape(logits)[-1]
    keep = None
    if mask is not None:
        real = ops.cast(mask, "bool")
        keep = ops.logical_and(real[:, None, :, None], real[:, None, None, :])
    if tril_mask:
        idx = ops.arange(seq_len)
        upper = (idx[None, :] >= idx[:, None])[None, None]
        keep = upper if keep is None else ops.logical_and(keep, upper)
    if keep is None:
        return logits
    return ops.where(keep, logits, ops.cast(B.NEG_INF, logits.dtype))


@register
class GlobalPointer(QuantizableSublayers, keras.layers.Layer):
    """GlobalPointer span scores for (nested) entity recognition (Su 2021).

    Every head (entity type) ``h`` scores the span ``[i, j]`` as
    ``q_{h,i} . k_{h,j} / sqrt(head_size)``, where ``q``/``k`` are linear
    projections of the hidden states, rotated by RoPE so the score depends
    on the relative position ``j - i``. A span is predicted when its score
    is positive.

    Input: hidden states ``(batch, seq_len, hidden)`` (or ``[hidden,
    token_ids]``, token id 0 = padding). Output: ``(batch, heads, seq_len,
    seq_len)``; padded rows and columns and, with ``tril_mask``, spans with
    ``j < i`` are -1e12. Train with :func:`global_pointer_crossentropy` on
    0/1 targets of the same shape.

    Args:
        heads: number of entity types.
        head_size: width of ``q`` and ``k`` per head (even with RoPE).
        RoPE: rotary relative position (Su et al. 2021).
        use_bias: bias of the projection.
        tril_mask: mask the spans that end before they start.
        kernel_initializer: of the projection.

    Raises:
        ValueError: ``RoPE`` with an odd ``head_size``.

    Weights (bert4keras 0.11.5's layout): ``dense`` ``(hidden, heads *
    head_size * 2)``; output block ``h`` (``2 * head_size`` wide) holds head
    ``h``'s ``q`` (first half) and ``k`` (second half).
    """

    def __init__(self, heads, head_size, RoPE=True, use_bias=True, tril_mask=True,
                 kernel_initializer="lecun_normal", **kwargs):
        super().__init__(**kwargs)
        self.heads = int(heads)
        self.head_size = int(head_size)
        if RoPE and self.head_size % 2:
            raise ValueError("%s %r: RoPE needs an even head_size, got %d"
                             % (type(self).__name__, self.name, self.head_size))
        self.RoPE = bool(RoPE)
        self.use_bias = bool(use_bias)
        self.tril_mask = bool(tril_mask)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def _dense(self, units, name, input_shape):
        layer = Dense(units, use_bias=self.use_bias, name=name,
                      kernel_initializer=fresh_initializer(self.kernel_initializer))
        layer.build(input_shape)
        return layer

    def build(self, input_shape):
        self.dense = self._dense(self.heads * self.head_size * 2, "dense",
                                 _scores_shape(input_shape))
        self.built = True

    def _rotate(self, qw, kw):
        """Rotary position embedding of ``(batch, seq_len, heads, d)`` q and k."""
        if not self.RoPE:
            return qw, kw
        positions = ops.arange(ops.shape(qw)[1], dtype="float32")[None]
        table = B.sinusoidal_embeddings(positions, self.head_size)
        return B.apply_rotary_position_embeddings(table, qw, kw)

    def call(self, inputs, mask=None):
        inputs, mask = _split_inputs(inputs, mask)
        x = self.dense(inputs)
        x = ops.reshape(x, tuple(ops.shape(x)[:2]) + (self.heads, 2 * self.head_size))
        qw, kw = self._rotate(x[..., :self.head_size], x[..., self.head_size:])
        logits = ops.einsum("bmhd,bnhd->bhmn", qw, kw) / math.sqrt(self.head_size)
        return _span_mask(logits, mask, self.tril_mask)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        shape = _scores_shape(input_shape)
        return (shape[0], self.heads, shape[1], shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads,
            head_size=self.head_size,
            RoPE=self.RoPE,
            use_bias=self.use_bias,
            tril_mask=self.tril_mask,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@register
class EfficientGlobalPointer(GlobalPointer):
    """GlobalPointer with shared span features (Su 2022).

    All heads share one ``q``/``k`` pair, the even and odd outputs of one
    projection ``p = p_dense(x)`` (``2 * head_size`` wide); each head adds a
    start and an end bias, linear in ``p``: with ``b = q_dense(p) / 2``
    (``2 * heads`` wide),
    ``s_h(i, j) = q_i . k_j / sqrt(head_size) + b_i[2h + 1] + b_j[2h]``.
    Far fewer parameters than :class:`GlobalPointer` when there are many
    types.

    Input/output, arguments, errors and loss as :class:`GlobalPointer`.

    Weights (bert4keras 0.11.5's names and layout): ``p_dense`` ``(hidden,
    2 * head_size)`` (even outputs ``q``, odd outputs ``k``); ``q_dense``
    ``(2 * head_size, 2 * heads)``, whose output ``2h + 1`` is head ``h``'s
    start bias and output ``2h`` its end bias, both halved.
    """

    def build(self, input_shape):
        shape = _scores_shape(input_shape)
        self.p_dense = self._dense(2 * self.head_size, "p_dense", shape)
        self.q_dense = self._dense(2 * self.heads, "q_dense",
                                   tuple(shape[:-1]) + (2 * self.head_size,))
        self.built = True

    def call(self, inputs, mask=None):
        inputs, mask = _split_inputs(inputs, mask)
        p = self.p_dense(inputs)
        qw, kw = self._rotate(p[..., None, 0::2], p[..., None, 1::2])
        logits = ops.einsum("bmd,bnd->bmn", qw[:, :, 0], kw[:, :, 0]) / math.sqrt(self.head_size)
        bias = ops.transpose(self.q_dense(p), (0, 2, 1)) / 2  # (batch, 2 * heads, seq_len)
        start, end = bias[:, 1::2], bias[:, 0::2]
        logits = logits[:, None] + start[:, :, :, None] + end[:, :, None, :]
        return _span_mask(logits, mask, self.tril_mask)


@keras.saving.register_keras_serializable(package="bert4keras")
def global_pointer_crossentropy(y_true, y_pred):
    """Multi-label categorical cross-entropy over all spans of each head.

    For every (sample, head) the ``seq_len ** 2`` span scores are one
    multi-label problem (:func:`bert4keras.backend.multilabel_categorical_crossentropy`);
    masked spans score -1e12 and add nothing.

    Args:
        y_true: 0/1 ``(batch, heads, seq_len, seq_len)``.
        y_pred: :class:`GlobalPointer` output, same shape.

    Returns:
        ``(batch,)``: the loss averaged over the heads.

    Raises:
        ValueError: (eager values) a gold span on a masked position -- a
            padded start or end, or (``tril_mask``) an end before its start --
            which the layer scored -1e12 and no model can predict, naming its
            (row, head, start, end); or ``seq_len`` 0. Under a compiled
            function the check cannot raise: that row's loss is NaN instead.
    """
    _check_length(y_pred, "global_pointer_crossentropy", axis=2)
    shape = ops.shape(y_pred)
    flat = (shape[0], shape[1], -1)
    y_true = ops.cast(y_true, y_pred.dtype)
    bad = ops.logical_and(ops.greater(y_true, 0), ops.less_equal(y_pred, PAD_THRESHOLD))
    rows = _invalid_rows(bad, "global_pointer_crossentropy",
                         "gold span on a masked position (padding, or end before start), "
                         "(row, head, start, end) =")
    y_true = ops.reshape(y_true, flat)
    loss = B.multilabel_categorical_crossentropy(y_true, ops.reshape(y_pred, flat))
    return _nan_where(rows, ops.mean(loss, axis=1))


@keras.saving.register_keras_serializable(package="bert4keras")
def global_pointer_f1(y_true, y_pred):
    """Span F1 of a batch: ``2 |gold & predicted| / (|gold| + |predicted|)``
    with predicted = score > 0 (a batch-averaged metric for training logs;
    score whole data sets by collecting the spans instead).

    Args:
        y_true: 0/1 ``(batch, heads, seq_len, seq_len)``.
        y_pred: :class:`GlobalPointer` output, same shape.

    Returns:
        A scalar; 0 for a batch with neither gold nor predicted spans.
    """
    y_true = ops.cast(y_true, "float32")
    predicted = ops.cast(ops.greater(y_pred, 0), "float32")
    return 2 * ops.sum(y_true * predicted) / ops.maximum(ops.sum(y_true + predicted), 1e-12)
