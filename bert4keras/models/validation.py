"""Input checks on the host: token and segment ids in range, lengths in the table.

An embedding lookup does not fail on a bad id everywhere: compiled gathers
(XLA, JAX) clamp an id ``>= vocab_size`` to the last row and a negative id
reads from the end of the table, so a wrong vocabulary gives silent garbage.
And on JAX, a model whose compiled function once raised (a 513-token input on
a 512-position model) fails every later call (``'NoneType' object is not
callable``, a Keras 3 bug). So the ids and lengths are checked here, on the
host, before the inputs reach any compiled function -- once per call or per
batch with NumPy ``min``/``max``, never inside the compiled training step.

:class:`ValidatedModel` is the functional ``keras.Model`` that
:func:`~bert4keras.models.build_transformer_model` returns. Where the check
applies (host data only; tensors already on a device are passed on unchecked):

* ``model(x)``, ``predict``, ``predict_on_batch``, ``evaluate``,
  ``test_on_batch``, ``train_on_batch`` and ``fit`` (also ``validation_data``)
  with NumPy arrays or nested lists, as a list, a dict keyed by input name,
  or a single array: the whole array, once per call;
* ``fit`` / ``evaluate`` / ``predict`` on a Python generator or iterator
  (e.g. ``DataGenerator.forfit()``): every batch as the generator yields it;
* ``fit`` / ``evaluate`` / ``predict`` on a ``tf.data.Dataset`` (also
  ``validation_data``): every batch, by a ``map`` appended to the pipeline
  (:func:`check_dataset`). The check runs in the ``tf.data`` runtime on the
  host, not in the compiled training step, so XLA (``jit_compile=True``),
  which clamps out-of-range gathers and drops assertions, cannot hide it; its
  cost is a ``min``/``max`` per input per batch. A failing batch stops the
  call with :class:`InputRangeError` (naming the input, id, position in the
  batch and range), raised from TensorFlow's ``InvalidArgumentError``.

Not checked: ``keras.utils.PyDataset``, ``tf.distribute`` distributed
datasets, torch ``DataLoader`` inputs and backend tensors (check those where
the data is made, e.g. the pretraining records carry their vocabulary size).
"""

import re
import sys
import types

import keras
import numpy as np

__all__ = ["InputRangeError", "ValidatedModel", "check_dataset", "check_inputs", "input_limits"]


class InputRangeError(ValueError):
    """An input id outside its vocabulary, or a sequence longer than the
    model's position table; the message names the input, the bad value (and
    where it is) and the allowed range."""


def input_limits(transformer, inputs):
    """The limits of the model inputs ``inputs`` of ``transformer``.

    Inputs named ``...Input-Token`` take ids in ``[0, rows of
    Embedding-Token)`` (``vocab_size``), ``...Input-Segment`` ids in ``[0,
    segment_vocab_size)`` (the token vocabulary with
    ``shared_segment_embeddings``), ``...Input-Position`` ids in ``[0,
    max_position)``; token and segment inputs are at most ``max_position``
    long, the fewest rows of an absolute position table of the model (a
    layer's ``max_positions``; none for relative positions).

    Returns:
        ``{input name: {"ids": [upper, what], "max_length": int or None}}``,
        JSON-serialisable (it is part of the model's config).
    """
    layers = getattr(transformer, "layers", {}) or {}
    lengths = [getattr(layer, "max_positions", None) for layer in layers.values()]
    lengths = [int(n) for n in lengths if isinstance(n, (int, np.integer))]
    max_length = min(lengths) if lengths else None
    vocab = getattr(layers.get("Embedding-Token"), "input_dim", None)
    vocab = int(vocab if vocab is not None else transformer.vocab_size)
    if getattr(transformer, "shared_segment_embeddings", False):
        segments = [vocab, "vocab_size (shared_segment_embeddings)"]
    else:
        segments = [int(getattr(transformer, "segment_vocab_size", 0) or 0), "segment_vocab_size"]
    limits = {}
    for tensor in keras.tree.flatten(inputs):
        name = _input_name(tensor)
        if name.endswith("Input-Token"):
            limits[name] = {"ids": [vocab, "vocab_size"], "max_length": max_length}
        elif name.endswith("Input-Segment") and segments[0] > 0:
            limits[name] = {"ids": segments, "max_length": max_length}
        elif name.endswith("Input-Position") and max_length is not None:
            limits[name] = {"ids": [max_length, "max_position"], "max_length": None}
    return limits


def _input_name(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation.name if history is not None else str(getattr(tensor, "name", ""))


def _is_host_data(x):
    if isinstance(x, np.ndarray):
        return True
    return isinstance(x, (list, tuple)) and all(
        isinstance(v, (list, tuple, int, np.integer, np.ndarray)) for v in x)


def check_array(values, name, upper=None, what="vocab_size", max_length=None):
    """Check one host array of ids ``(batch, seq_len)``.

    Raises:
        InputRangeError: an id outside ``[0, upper)`` (the message names
            ``name``, the id, its ``(row, column)`` and ``what``), or
            ``seq_len > max_length``.
    """
    values = np.asarray(values)
    if max_length is not None and values.ndim >= 2 and values.shape[1] > max_length:
        raise InputRangeError(
            "%s: sequence length %d exceeds max_position=%d; truncate the input (e.g. "
            "Tokenizer.encode(..., maxlen=%d))" % (name, values.shape[1], max_length, max_length))
    if upper is None or values.size == 0 or values.dtype.kind not in "iuf":
        return
    low, high = values.min(), values.max()
    if low >= 0 and high < upper:
        return
    bad = low if low < 0 else high
    where = tuple(int(i) for i in np.argwhere(values == bad)[0])
    raise InputRangeError("%s: id %s at %s is outside [0, %d) (%s=%d)"
                          % (name, bad.item(), where, upper, what, upper))


def check_inputs(x, names, limits):
    """Check the model input ``x`` (a list in the order of ``names``, a dict
    keyed by input name, or one array) against ``limits`` (as
    :func:`input_limits`); values that are not host data are skipped.

    Raises:
        InputRangeError: see :func:`check_array`.
    """
    if not limits or x is None:
        return
    if (len(names) == 1 and isinstance(x, (list, tuple)) and len(x) == 1
            and isinstance(x[0], np.ndarray)):
        x = x[0]  # [array] for a one-input model
    if isinstance(x, dict):
        pairs = x.items()
    elif isinstance(x, (list, tuple)) and len(names) > 1:
        pairs = zip(names, x)
    else:
        pairs = [(names[0], x)] if names else []
    for name, values in pairs:
        limit = limits.get(name)
        if limit is not None and _is_host_data(values):
            upper, what = limit["ids"]
            check_array(values, name, upper, what, limit.get("max_length"))


#: Marks the message of a failed :func:`check_dataset` assertion inside TensorFlow's error.
_DATASET_MARK = ("<<bert4keras-input-check>>", "<<end-input-check>>")


def _is_dataset(data):
    tf = sys.modules.get("tensorflow")  # a tf.data.Dataset implies TensorFlow is imported
    return tf is not None and isinstance(data, tf.data.Dataset)


def _dataset_check_op(tf, values, name, upper, what, max_length):
    """Assertion ops for one batched tensor of ids (see :func:`check_array`)."""
    checks = []
    if max_length is not None and values.shape.rank is not None and values.shape.rank >= 2:
        length = tf.shape(values)[1]
        checks.append(tf.debugging.Assert(length <= max_length, [tf.strings.join([
            "%s%s: sequence length " % (_DATASET_MARK[0], name), tf.strings.as_string(length),
            " of a tf.data batch exceeds max_position=%d%s" % (max_length, _DATASET_MARK[1])])]))
    if upper is not None and (values.dtype.is_integer or values.dtype.is_floating):
        flat = tf.reshape(values, [-1])
        bad = tf.logical_or(flat < 0, flat >= tf.cast(upper, values.dtype))

        def message():  # only built for a failing batch
            index = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int64)
            where = tf.unravel_index(index, tf.shape(values, out_type=tf.int64))
            return tf.strings.join([
                "%s%s: id " % (_DATASET_MARK[0], name), tf.strings.as_string(flat[index]),
                " at (", tf.strings.reduce_join(tf.strings.as_string(where), separator=", "),
                ") of a tf.data batch is outside [0, %d) (%s=%d)%s"
                % (upper, what, upper, _DATASET_MARK[1])])

        any_bad = tf.reduce_any(bad)
        text = tf.cond(any_bad, message, lambda: tf.constant(""))
        checks.append(tf.debugging.Assert(tf.logical_not(any_bad), [text]))
    return checks


def check_dataset(dataset, names, limits):
    """``dataset`` with every batch's model input checked against ``limits``.

    Elements are read as Keras reads them: a tuple is ``(x[, y[,
    sample_weight]])``, anything else is ``x``; ``x`` is a dict keyed by
    input name, a tuple in the order of ``names`` or one tensor (see
    :func:`check_inputs`). The element is passed on unchanged; a failing
    batch makes the iterator raise TensorFlow's ``InvalidArgumentError``
    carrying the message, which :class:`ValidatedModel` turns into
    :class:`InputRangeError` (:func:`find_input_error`).

    Args:
        dataset: a batched ``tf.data.Dataset``.
        names: the model's input names, in order.
        limits: as :func:`input_limits`.

    Returns:
        The dataset with a ``map`` appended (``dataset`` itself when no input
        has limits).
    """
    import tensorflow as tf

    if not limits or not names:
        return dataset

    def check_x(x):
        if isinstance(x, dict):
            pairs = list(x.items())
        elif isinstance(x, (list, tuple)) and len(names) > 1:
            pairs = list(zip(names, x))
        else:
            pairs = [(names[0], x)]
        checked = []
        for name, values in pairs:
            limit = limits.get(name)
            if limit is not None and isinstance(values, tf.Tensor):
                upper, what = limit["ids"]
                ops = _dataset_check_op(tf, values, name, upper, what, limit.get("max_length"))
                with tf.control_dependencies(ops):
                    values = tf.identity(values)
            checked.append(values)
        if isinstance(x, dict):
            return dict(zip(x, checked))
        if isinstance(x, (list, tuple)) and len(names) > 1:
            return type(x)(checked) + type(x)(x[len(checked):])
        return checked[0]

    spec = dataset.element_spec  # a tuple or list is (x[, y[, sample_weight]]) for Keras

    def check(*args):  # tf.data unpacks a tuple element into the arguments
        if isinstance(spec, tuple):
            return (check_x(args[0]),) + tuple(args[1:])
        if isinstance(spec, list):
            return [check_x(args[0][0])] + list(args[0][1:])
        return check_x(args[0])

    return dataset.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def find_input_error(exc):
    """The :class:`InputRangeError` behind ``exc``, or None.

    Looks through ``exc`` and its ``__cause__`` / ``__context__`` chain for an
    :class:`InputRangeError` (a generator's batch) or a failed
    :func:`check_dataset` assertion (TensorFlow's ``InvalidArgumentError``,
    which is turned into an :class:`InputRangeError` whose cause it is).
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, InputRangeError):
            return exc
        match = re.search(re.escape(_DATASET_MARK[0]) + "(.*?)" + re.escape(_DATASET_MARK[1]),
                          str(exc), re.S)
        if match is not None:
            error = InputRangeError(match.group(1))
            error.__cause__ = exc
            return error
        exc = exc.__cause__ or exc.__context__
    return None


def _is_iterator(data):
    return isinstance(data, types.GeneratorType) or (
        hasattr(data, "__next__") and not isinstance(data, (np.ndarray, list, tuple, dict)))


@keras.saving.register_keras_serializable(package="bert4keras")
class ValidatedModel(keras.Model):
    """A functional ``keras.Model`` that checks its host inputs first.

    Built by ``Transformer.keras_model`` with ``input_limits`` (see
    :func:`input_limits`); saved with the model (``.keras`` files reload it
    after ``import bert4keras``). Where the check applies is in the module
    docstring: NumPy / list inputs of ``__call__``, ``predict``,
    ``predict_on_batch``, ``evaluate``, ``test_on_batch``,
    ``train_on_batch`` and ``fit``, and every batch of a Python generator or
    a ``tf.data.Dataset``.

    Raises:
        InputRangeError: from any of those methods, before the compiled
            function runs, for an id outside its vocabulary or a sequence
            longer than ``max_position``.
    """

    def __init__(self, *args, **kwargs):
        limits = kwargs.pop("input_limits", None)
        super().__init__(*args, **kwargs)
        self.input_limits = dict(limits or {})

    def get_config(self):
        config = super().get_config()
        config["input_limits"] = self.input_limits
        return config

    def _input_names(self):
        return [_input_name(t) for t in self.inputs]

    def check_inputs(self, x):
        """:func:`check_inputs` of ``x`` against this model's limits."""
        check_inputs(x, self._input_names(), self.input_limits)

    def _checked(self, data, packed):
        """``data`` checked now (host arrays) or per batch (an iterator, a
        ``tf.data.Dataset``). ``packed``: batches are ``(x, y[,
        sample_weight])`` tuples."""
        if _is_dataset(data):
            return check_dataset(data, self._input_names(), self.input_limits)
        if _is_iterator(data):
            def batches():
                for batch in data:
                    self.check_inputs(batch[0] if isinstance(batch, tuple) else batch)
                    yield batch

            return batches()
        if packed and isinstance(data, tuple):
            self.check_inputs(data[0])
        elif not packed:
            self.check_inputs(data)
        return data

    def __call__(self, *args, **kwargs):
        self.check_inputs(args[0] if args else kwargs.get("inputs"))
        return super().__call__(*args, **kwargs)

    def _state_variables(self):
        optimizer = getattr(self, "optimizer", None)
        return (list(self.trainable_variables) + list(self.non_trainable_variables)
                + list(getattr(optimizer, "variables", None) or [])
                + list(self.metrics_variables))

    def _restore_jax_state(self, saved):
        """After an error inside ``fit`` / ``evaluate`` / ``predict`` on JAX:
        attach the state of the last finished batch (``predict`` and
        ``evaluate`` do not on an error), then the values held before the
        call to any variable still empty (the error came before a batch ran,
        so those values were not donated to a step)."""
        if not getattr(self, "_jax_state_synced", True):
            self.jax_state_sync()
        self._jax_state = None
        for variable, value in saved:
            if getattr(variable, "_value", True) is None:
                variable._value = value

    def _run(self, method, *args, **kwargs):
        """``method(*args, **kwargs)`` (``fit``, ``evaluate``, ``predict``) where
        a batch refused by a check (a generator's, :func:`check_dataset`'s)
        raises :class:`InputRangeError` (:func:`find_input_error`).

        On JAX, Keras takes the weights out of the variables while it loops
        over the batches and puts them back at the end, which an error raised
        by the data skips: the variables stay empty (every later call fails
        with ``'NoneType' object is not callable``) or hold buffers donated to
        a step. :meth:`_restore_jax_state` puts the state back, so a refused
        batch never poisons the model.
        """
        saved = None
        if keras.backend.backend() == "jax":  # references to immutable arrays: no copy
            saved = [(v, getattr(v, "_value", None)) for v in self._state_variables()]
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if saved is not None:
                self._restore_jax_state(saved)
            error = find_input_error(exc)
            if error is None or error is exc:
                raise
            raise error from error.__cause__

    def predict(self, x, *args, **kwargs):
        return self._run(super().predict, self._checked(x, False), *args, **kwargs)

    def predict_on_batch(self, x):
        self.check_inputs(x)
        return super().predict_on_batch(x)

    def fit(self, x=None, *args, **kwargs):
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._checked(kwargs["validation_data"], True)
        return self._run(super().fit, self._checked(x, False), *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        return self._run(super().evaluate, self._checked(x, False), *args, **kwargs)

    def train_on_batch(self, x, *args, **kwargs):
        self.check_inputs(x)
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        self.check_inputs(x)
        return super().test_on_batch(x, *args, **kwargs)
