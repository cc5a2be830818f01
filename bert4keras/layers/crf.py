"""Output layers for sequence labelling: CRF and MEMM.

* :class:`ConditionalRandomField` -- a linear-chain CRF (Lafferty et al.
  2001) over per-token emission scores, trained with the exact negative
  log-likelihood (forward algorithm in log space) and decoded with
  :class:`bert4keras.snippets.ViterbiDecoder`.
* :class:`MaximumEntropyMarkovModel` -- the locally normalised counterpart
  (McCallum et al. 2000) in the bidirectional form of the original
  bert4keras (https://kexue.fm/archives/7213).

The span-scoring heads (``GlobalPointer``, ``EfficientGlobalPointer``) live
in :mod:`bert4keras.layers.global_pointer` and share the padding convention
below (and this module's input helpers).

Padding. Keras loss functions only see ``y_true`` and ``y_pred``, so these
layers write :data:`bert4keras.backend.NEG_INF` (-1e12) into the scores of
padded positions, and the losses read the padding back from those values
(any score below -1e6 counts as padding). The layers learn where the
padding is in one of two ways:

* call them on ``[scores, token_ids]`` -- positions whose token id is 0
  ([PAD]) are padding; or
* pass ``mask=`` (``(batch, seq_len)``, 1/True for real tokens), or let
  Keras propagate one from an upstream layer.

With neither, every position is real. Padding must be at the end of a row
(the CRF and MEMM assume the real tokens form a prefix).

All layers use ``keras.ops`` only, run on every backend, have ``get_config``
and are registered for ``keras.saving``.
"""

import keras
import numpy as np
from keras import ops

from bert4keras import backend as B
from bert4keras.layers.core import register

__all__ = ["PAD_THRESHOLD", "ConditionalRandomField", "MaximumEntropyMarkovModel"]

#: scores at or below this value are read as padding by the losses
PAD_THRESHOLD = -1e6


def _split_inputs(inputs, mask):
    """``(scores, mask)`` from ``scores`` or ``[scores, token_ids]``."""
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 2:
            raise ValueError("expected scores or [scores, token_ids], got %d inputs" % len(inputs))
        inputs, token_ids = inputs
        mask = ops.not_equal(token_ids, 0)
    return inputs, mask


def _scores_shape(input_shape):
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
            input_shape[0], (list, tuple)):
        return tuple(input_shape[0])
    return tuple(input_shape)


def _mask_from_scores(y_pred):
    """``(batch, seq_len)`` float mask: 0 where the layer wrote padding."""
    return ops.cast(ops.all(ops.greater(y_pred, PAD_THRESHOLD), axis=-1), y_pred.dtype)


def _sparse_labels(y_true, y_pred):
    """int32 ``(batch, seq_len)`` labels, whatever trailing 1-axis Keras added."""
    return ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")


def _concrete(tensor):
    """True when ``tensor`` holds values now (eager), not a traced placeholder."""
    if isinstance(tensor, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(tensor, jax.core.Tracer)
    return True


def _check_length(y_pred, name, axis=1):
    """Raise for a batch of empty sequences (``seq_len``, axis ``axis``, 0),
    known statically or from concrete values; nothing can be scored there."""
    seq_len = y_pred.shape[axis]
    if seq_len is None and _concrete(y_pred):
        seq_len = ops.shape(y_pred)[axis]
    if seq_len is not None and int(seq_len) == 0:
        raise ValueError("%s: a batch of empty sequences (seq_len 0, scores shape %s); drop "
                         "empty samples before batching" % (name, tuple(y_pred.shape)))


def _invalid_rows(bad, name, what, values=None):
    """``bad``: bool ``(batch, ...)``, True where a label cannot be right.

    Eager (concrete) values: raise ``ValueError`` naming the first bad place.
    Traced (compiled) ones: return the bool ``(batch,)`` rows to set to NaN, so
    the loss is loud without a check inside the compiled function.
    """
    if _concrete(bad):
        found = ops.convert_to_numpy(bad)
        if found.any():
            where = tuple(int(i) for i in np.argwhere(found)[0])
            value = "" if values is None else " (value %s)" % ops.convert_to_numpy(values)[where]
            raise ValueError("%s: %s %s%s" % (name, what, where, value))
    return ops.any(ops.reshape(bad, (ops.shape(bad)[0], -1)), axis=1)


def _bad_dense_label_rows(layer, y_true, y_pred, mask):
    """Rows with a real position whose label row is not a distribution over
    the labels (see :func:`_invalid_rows`); ``y_true`` cast to float."""
    total = ops.sum(y_true, axis=-1)
    bad = ops.logical_and(mask > 0, ops.logical_or(
        ops.greater(ops.abs(total - 1.0), 1e-3), ops.any(ops.less(y_true, 0.0), axis=-1)))
    return _invalid_rows(bad, "%s %r" % (type(layer).__name__, layer.name),
                         "a label row that is not a distribution over the %d labels (sums "
                         "to other than 1) at the real (unpadded) (row, position)"
                         % y_pred.shape[-1])


def _bad_sparse_label_rows(layer, labels, y_pred, mask):
    """Rows with a real position whose label is outside ``[0, num_labels)``
    (see :func:`_invalid_rows`)."""
    num_labels = ops.shape(y_pred)[-1]
    bad = ops.logical_and(mask > 0, ops.logical_or(
        ops.less(labels, 0), ops.greater_equal(labels, num_labels)))
    return _invalid_rows(bad, "%s %r" % (type(layer).__name__, layer.name),
                         "label outside [0, num_labels=%s) at the real (unpadded) "
                         "(row, position)" % y_pred.shape[-1], labels)


def _nan_where(rows, loss):
    return ops.where(rows, ops.cast(float("nan"), loss.dtype), loss)


def _masked_token_accuracy(labels, y_pred):
    mask = _mask_from_scores(y_pred)
    predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
    hits = ops.cast(ops.equal(labels, predicted), y_pred.dtype) * mask
    return ops.sum(hits) / ops.maximum(ops.sum(mask), 1.0)


class _TransitionLayer(keras.layers.Layer):
    """Shared part of CRF and MEMM: masking of the emissions and the
    learning-rate multiplier of the transition weights.

    The multiplier uses the reparametrisation of the original toolkit: the
    variable stores ``trans / lr_multiplier`` and the layer uses ``variable *
    lr_multiplier``. The gradient of the variable is then ``lr_multiplier``
    times the gradient of ``trans``, so a scale-invariant optimizer (Adam,
    AdamW, ...) moves ``trans`` ``lr_multiplier`` times faster; with plain
    SGD the effective step is ``lr_multiplier ** 2`` times larger.
    """

    def __init__(self, lr_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        self.lr_multiplier = float(lr_multiplier)
        self.supports_masking = True

    def _scaled_initializer(self):
        base = keras.initializers.GlorotUniform(seed=None)
        multiplier = self.lr_multiplier

        def initializer(shape, dtype=None):
            return base(shape, dtype=dtype) / multiplier

        return initializer

    def call(self, inputs, mask=None):
        scores, mask = _split_inputs(inputs, mask)
        return B.sequence_masking(scores, mask, "-inf", axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return _scores_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(lr_multiplier=self.lr_multiplier)
        return config


@register
class ConditionalRandomField(_TransitionLayer):
    """Linear-chain conditional random field over emission scores.

    The score of a label path ``y`` for emissions ``e`` (``(seq_len,
    num_labels)``) is ``sum_t e[t, y_t] + sum_{t>0} trans[y_{t-1}, y_t]``;
    ``p(y | e) = exp(score(y)) / Z``. There are no separate start/end
    transitions (the original bert4keras labels ``[CLS]``/``[SEP]`` with a
    fixed tag instead; :class:`bert4keras.snippets.ViterbiDecoder` can pin
    the first and last labels).

    Input: emissions ``(batch, seq_len, num_labels)`` (or ``[emissions,
    token_ids]``, see the module docstring). Output: the emissions with the
    padded positions set to -1e12; feed them to :meth:`sparse_loss` /
    :meth:`dense_loss` and, at inference, to ``ViterbiDecoder(crf.trans)``.

    Args:
        lr_multiplier: learning-rate multiplier of the transition matrix
            (the emissions of a pretrained encoder are learned with a small
            learning rate; the randomly initialised transitions often need a
            larger one).

    Weights: ``trans`` ``(num_labels, num_labels)``, stored divided by
    ``lr_multiplier``; the property :attr:`trans` gives the effective matrix.
    """

    def build(self, input_shape):
        num_labels = _scores_shape(input_shape)[-1]
        self._trans = self.add_weight(name="trans", shape=(num_labels, num_labels),
                                      initializer=self._scaled_initializer())
        self.built = True

    @property
    def trans(self):
        """The effective transition matrix ``(num_labels, num_labels)``:
        ``trans[i, j]`` scores label ``i`` followed by label ``j``."""
        return self._trans * self.lr_multiplier

    def path_score(self, y_true, y_pred, mask=None):
        """Unnormalised score of the (one-hot or soft) label paths ``y_true``.

        Args:
            y_true: ``(batch, seq_len, num_labels)``.
            y_pred: emissions ``(batch, seq_len, num_labels)``.
            mask: ``(batch, seq_len)`` 0/1, or None to read it from
                ``y_pred``.

        Returns:
            ``(batch,)``.
        """
        if mask is None:
            mask = _mask_from_scores(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype) * mask[:, :, None]
        emissions = ops.where(mask[:, :, None] > 0, y_pred, ops.zeros_like(y_pred))
        point = ops.sum(y_true * emissions, axis=(1, 2))
        trans = ops.cast(self.trans, y_pred.dtype)
        pairs = ops.einsum("bni,ij,bnj->b", y_true[:, :-1], trans, y_true[:, 1:])
        return point + pairs

    def log_partition(self, y_pred, mask=None):
        """``log Z`` by the forward algorithm in log space.

        ``alpha_0 = e_0``; ``alpha_t[j] = logsumexp_i(alpha_{t-1}[i] +
        trans[i, j]) + e_t[j]`` for real positions (padding carries
        ``alpha`` over unchanged); ``log Z = logsumexp(alpha_last)``.

        Args:
            y_pred: emissions ``(batch, seq_len, num_labels)``.
            mask: ``(batch, seq_len)`` 0/1, or None to read it from
                ``y_pred``.

        Returns:
            ``(batch,)``.
        """
        if mask is None:
            mask = _mask_from_scores(y_pred)
        emissions = ops.where(mask[:, :, None] > 0, y_pred, ops.zeros_like(y_pred))
        trans = ops.cast(self.trans, y_pred.dtype)[None]
        # One tensor to scan over, time first: emissions, mask, "is first
        # position" flag. (Keras's TF scan mishandles several inputs when the
        # length is unknown at trace time; its torch scan fails on zero steps,
        # hence the first position is a step too.)
        first = ops.cast(ops.equal(ops.arange(ops.shape(mask)[1]), 0), mask.dtype)
        first = ops.broadcast_to(first[None, :, None], ops.shape(mask[:, :, None]))
        steps = ops.concatenate([emissions, mask[:, :, None], first], axis=-1)
        steps = ops.transpose(steps, (1, 0, 2))

        def step(alpha, inputs):
            emission, keep, is_first = inputs[:, :-2], inputs[:, -2:-1], inputs[:, -1:]
            new = ops.logsumexp(alpha[:, :, None] + trans, axis=1) + emission
            new = ops.where(is_first > 0, emission, new)
            return ops.where(keep > 0, new, alpha), None

        alpha, _ = ops.scan(step, ops.zeros_like(emissions[:, 0]), steps)
        return ops.logsumexp(alpha, axis=-1)

    def dense_loss(self, y_true, y_pred):
        """Negative log-likelihood ``log Z - score(y)`` for one-hot labels.

        Args:
            y_true: ``(batch, seq_len, num_labels)`` one-hot (or soft: each
                real position a distribution); padded positions are ignored.
            y_pred: the layer's output.

        Returns:
            ``(batch,)``.

        Raises:
            ValueError: (eager values) a real position whose label row does
                not sum to 1 (e.g. the all-zero one-hot of an out-of-range
                label), or ``seq_len`` 0; compiled, that row's loss is NaN.
        """
        _check_length(y_pred, "%s %r" % (type(self).__name__, self.name))
        mask = _mask_from_scores(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        rows = _bad_dense_label_rows(self, y_true, y_pred, mask)
        loss = self.log_partition(y_pred, mask) - self.path_score(y_true, y_pred, mask)
        return _nan_where(rows, loss)

    def sparse_loss(self, y_true, y_pred):
        """:meth:`dense_loss` for integer labels ``(batch, seq_len)``.

        Labels at padded positions are ignored (any value, e.g. -1); at real
        positions they must lie in ``[0, num_labels)``.

        Raises:
            ValueError: (eager values) a label outside ``[0, num_labels)`` at
                a real position, naming its (row, position); or ``seq_len``
                0. Under a compiled function the check cannot raise: the loss
                of such a row is NaN instead (never a finite wrong value).
        """
        labels = _sparse_labels(y_true, y_pred)
        num_labels = ops.shape(y_pred)[-1]
        _check_length(y_pred, "%s %r" % (type(self).__name__, self.name))
        rows = _bad_sparse_label_rows(self, labels, y_pred, _mask_from_scores(y_pred))
        loss = self.dense_loss(ops.one_hot(ops.clip(labels, 0, num_labels - 1), num_labels,
                                           dtype=y_pred.dtype), y_pred)
        return _nan_where(rows, loss)

    def sparse_accuracy(self, y_true, y_pred):
        """Token accuracy of the per-token argmax of the emissions (not of
        the Viterbi path), over the real tokens; a cheap training metric."""
        return _masked_token_accuracy(_sparse_labels(y_true, y_pred), y_pred)

    def dense_accuracy(self, y_true, y_pred):
        """:meth:`sparse_accuracy` for one-hot labels."""
        return _masked_token_accuracy(ops.cast(ops.argmax(y_true, axis=-1), "int32"), y_pred)


@register
class MaximumEntropyMarkovModel(_TransitionLayer):
    """Maximum entropy Markov model head, bidirectional as in bert4keras.

    Left to right, label ``y_t`` gets the locally normalised distribution
    ``softmax((e_t + trans[y_{t-1}]) / 2)`` (``softmax(e_0)`` at ``t = 0``);
    right to left the same with ``trans^T`` over each row's real tokens
    reversed. The loss is the mean of the two cross-entropies. Decoding uses
    ``ViterbiDecoder(memm.trans)``.

    Input/output as :class:`ConditionalRandomField`.

    Args:
        lr_multiplier: learning-rate multiplier of the transition weights.
        hidden_dim: None for a full ``(num_labels, num_labels)`` matrix;
            an int ``r`` for a low-rank ``trans = l_trans @ r_trans^T`` with
            two ``(num_labels, r)`` factors (for many labels).
    """

    def __init__(self, lr_multiplier=1, hidden_dim=None, **kwargs):
        super().__init__(lr_multiplier=lr_multiplier, **kwargs)
        self.hidden_dim = None if hidden_dim is None else int(hidden_dim)

    def build(self, input_shape):
        num_labels = _scores_shape(input_shape)[-1]
        init = self._scaled_initializer()
        if self.hidden_dim is None:
            self._trans = self.add_weight(name="trans", shape=(num_labels, num_labels),
                                          initializer=init)
        else:
            shape = (num_labels, self.hidden_dim)
            self._l_trans = self.add_weight(name="l_trans", shape=shape, initializer=init)
            self._r_trans = self.add_weight(name="r_trans", shape=shape, initializer=init)
        self.built = True

    @property
    def trans(self):
        """The effective transition matrix ``(num_labels, num_labels)``."""
        if self.hidden_dim is None:
            return self._trans * self.lr_multiplier
        left = self._l_trans * self.lr_multiplier
        right = self._r_trans * self.lr_multiplier
        return ops.matmul(left, ops.transpose(right))

    @staticmethod
    def _reverse_real(x, mask):
        """Reverse the real prefix of every row of ``x`` ``(batch, seq_len, ...)``."""
        seq_len = ops.shape(mask)[1]
        lengths = ops.cast(ops.sum(mask, axis=1), "int32")[:, None]
        idx = ops.arange(seq_len, dtype="int32")[None]
        idx = ops.where(idx < lengths, lengths - 1 - idx, idx)
        idx = ops.reshape(idx, tuple(ops.shape(idx)) + (1,) * (len(x.shape) - 2))
        return ops.take_along_axis(x, ops.broadcast_to(idx, ops.shape(x)), axis=1)

    def _one_direction(self, labels, y_pred, mask, backwards):
        emissions = ops.where(mask[:, :, None] > 0, y_pred, ops.zeros_like(y_pred))
        trans = ops.cast(self.trans, y_pred.dtype)
        if backwards:
            labels = self._reverse_real(labels, mask)
            emissions = self._reverse_real(emissions, mask)
            trans = ops.transpose(trans)
        history = ops.take(trans, labels, axis=0)  # row trans[y_t] for every t
        history = ops.concatenate([emissions[:, :1], history[:, :-1]], axis=1)
        logits = (emissions + history) / 2
        log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
        picked = ops.take_along_axis(log_probs, labels[:, :, None], axis=-1)[:, :, 0]
        return -ops.sum(picked * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)

    def sparse_loss(self, y_true, y_pred):
        """Mean of the left-to-right and right-to-left cross-entropies.

        Labels at padded positions are ignored (any value, e.g. -1); at real
        positions they must lie in ``[0, num_labels)``, as for
        :meth:`ConditionalRandomField.sparse_loss`.

        Args:
            y_true: integer labels ``(batch, seq_len)``.
            y_pred: the layer's output.

        Returns:
            ``(batch,)``: per sequence, the cross-entropy averaged over its
            real tokens.

        Raises:
            ValueError: (eager values) a label outside ``[0, num_labels)`` at
                a real position, naming its (row, position) and value; or
                ``seq_len`` 0. Under a compiled function the check cannot
                raise: the loss of such a row is NaN instead (never a finite
                wrong value).
        """
        labels = _sparse_labels(y_true, y_pred)
        _check_length(y_pred, "%s %r" % (type(self).__name__, self.name))
        mask = _mask_from_scores(y_pred)
        rows = _bad_sparse_label_rows(self, labels, y_pred, mask)
        labels = ops.clip(labels, 0, ops.shape(y_pred)[-1] - 1)  # padding: any value
        forward = self._one_direction(labels, y_pred, mask, backwards=False)
        backward = self._one_direction(labels, y_pred, mask, backwards=True)
        return _nan_where(rows, (forward + backward) / 2)

    def dense_loss(self, y_true, y_pred):
        """:meth:`sparse_loss` for one-hot labels ``(batch, seq_len, num_labels)``
        (a soft row counts as its argmax).

        Raises:
            ValueError: (eager values) a real position whose label row is not
                a distribution over the labels (e.g. the all-zero one-hot of
                an out-of-range label, which would otherwise count as label
                0), or ``seq_len`` 0; compiled, that row's loss is NaN.
        """
        _check_length(y_pred, "%s %r" % (type(self).__name__, self.name))
        y_true = ops.cast(y_true, y_pred.dtype)
        rows = _bad_dense_label_rows(self, y_true, y_pred, _mask_from_scores(y_pred))
        return _nan_where(rows, self.sparse_loss(ops.argmax(y_true, axis=-1), y_pred))

    def sparse_accuracy(self, y_true, y_pred):
        """Token accuracy of the per-token argmax of the emissions."""
        return _masked_token_accuracy(_sparse_labels(y_true, y_pred), y_pred)

    def dense_accuracy(self, y_true, y_pred):
        """:meth:`sparse_accuracy` for one-hot labels."""
        return _masked_token_accuracy(ops.cast(ops.argmax(y_true, axis=-1), "int32"), y_pred)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim)
        return config
