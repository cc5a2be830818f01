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
  (e.g. ``DataGenerator.forfit()``): every batch as the generator yields it.

Not checked: ``tf.data.Dataset`` and ``keras.utils.PyDataset`` inputs and
backend tensors (check those where the data is made, e.g. the pretraining
records carry their vocabulary size).
"""

import types

import keras
import numpy as np

__all__ = ["InputRangeError", "ValidatedModel", "check_inputs", "input_limits"]


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
    ``train_on_batch`` and ``fit``, and every batch of a Python generator.

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
        """``data`` checked now (host arrays) or per batch (an iterator).
        ``packed``: batches are ``(x, y[, sample_weight])`` tuples."""
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

    def predict(self, x, *args, **kwargs):
        return super().predict(self._checked(x, False), *args, **kwargs)

    def predict_on_batch(self, x):
        self.check_inputs(x)
        return super().predict_on_batch(x)

    def fit(self, x=None, *args, **kwargs):
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._checked(kwargs["validation_data"], True)
        return super().fit(self._checked(x, False), *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        return super().evaluate(self._checked(x, False), *args, **kwargs)

    def train_on_batch(self, x, *args, **kwargs):
        self.check_inputs(x)
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        self.check_inputs(x)
        return super().test_on_batch(x, *args, **kwargs)
