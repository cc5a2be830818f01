"""bert4keras 0.11.5's small ``Transformer`` methods, as a base of
:class:`bert4keras.models.base.Transformer`.

User code written for 0.11.5 calls these on the object that
``build_transformer_model(..., return_keras_model=False)`` returns, or on
its own subclasses: ``simplify``, ``load_embeddings``, ``set_inputs``,
``set_outputs``, ``prefixed``, ``load_variable``, ``create_variable`` and
the ``input(s)``/``output(s)`` attributes. They sit here, not in the graph
code; the options that change the graph (``prefix``, ``layers``, ...) are in
:mod:`bert4keras.models.compat`.
"""

import keras
import numpy as np


def compound_rows(table, compound_tokens, axis=0):
    """``table`` with one new row per compound token appended on ``axis``.

    Each new row is the (weighted) mean of existing rows, as 0.11.5's
    ``compound_tokens``: an item is a list of token ids (equal weights) or a
    pair ``(ids, weights)``.

    Args:
        table: array whose ``axis`` is the vocabulary, e.g. ``(vocab,
            hidden)`` embeddings or a ``(vocab,)`` output bias.
        compound_tokens: list of items as above; ids index ``table``.

    Returns:
        ``np.ndarray`` with ``len(compound_tokens)`` more entries on ``axis``.

    Raises:
        ValueError: an id beyond the table, or weights of another length.
    """
    table = np.asarray(table)
    rows = []
    for item in compound_tokens:
        if isinstance(item, tuple) and len(item) == 2 and not np.isscalar(item[0]):
            ids, weights = list(item[0]), list(item[1])
        else:
            ids, weights = list(item), [1.0] * len(item)
        if len(ids) != len(weights) or not ids:
            raise ValueError("compound token %r: needs ids and as many weights" % (item,))
        if max(ids) >= table.shape[axis]:
            raise ValueError("compound token %r refers to id %d but the table has %d rows"
                             % (item, max(ids), table.shape[axis]))
        rows.append(np.average(np.take(table, ids, axis=axis), axis=axis, weights=weights))
    if not rows:
        return table
    return np.concatenate([table, np.stack(rows, axis=axis).astype(table.dtype)], axis=axis)


class LegacyMethods:
    """0.11.5's helper methods of ``Transformer`` (mixed into ours)."""

    #: layer-name prefix (``build_transformer_model(prefix=...)``)
    prefix = ""
    #: extra embedding rows (``build_transformer_model(compound_tokens=...)``)
    compound_tokens = None

    def prefixed(self, name):
        """``name`` with the model's layer-name prefix (None stays None)."""
        return None if name is None else (self.prefix or "") + name

    @staticmethod
    def simplify(inputs):
        """``inputs`` without its None items; a single item unwrapped."""
        inputs = [i for i in inputs if i is not None]
        return inputs[0] if len(inputs) == 1 else inputs

    def load_embeddings(self, embeddings):
        """A stored ``(vocab, ...)`` embedding table (or output bias) as this
        model holds it: rows of ``keep_tokens`` kept, then one mean row per
        ``compound_tokens`` item appended (see :func:`compound_rows`)."""
        embeddings = np.asarray(embeddings).astype(keras.config.floatx())
        if getattr(self, "keep_tokens", None) is not None:
            embeddings = embeddings[np.asarray(self.keep_tokens)]
        if self.compound_tokens:
            embeddings = compound_rows(embeddings, self.compound_tokens)
        return embeddings

    def load_variable(self, checkpoint, name):
        """The stored value of ``name`` (a checkpoint name as in
        :meth:`variable_mapping`) from a TF checkpoint / Hugging Face directory
        or a ``{name: array}`` dict, as a NumPy array.

        Raises:
            CheckpointError: no such variable (the checkpoint is named).
        """
        from bert4keras import checkpoints

        if isinstance(checkpoint, dict):
            return np.asarray(checkpoint[name])
        reader = checkpoints.open_checkpoint(checkpoint)
        stored = checkpoints.resolve(reader, name, getattr(self, "hf_prefixes", ()))
        if stored is None:
            raise checkpoints.CheckpointError("Variable %r is missing from checkpoint %r"
                                              % (name, reader.path))
        return reader.get(stored)

    def create_variable(self, name, value, dtype=None):
        """``(keras.Variable holding value, value)`` (0.11.5 used it to write
        checkpoints; :meth:`save_weights_as_checkpoint` needs no variables)."""
        dtype = dtype or keras.config.floatx()
        return keras.Variable(np.asarray(value, dtype), dtype=dtype, name=name), value

    def set_inputs(self, inputs, additional_input_layers=None):
        """Set ``self.inputs`` (a list) and ``self.input`` (the one input, or
        the list), with ``additional_input_layers`` appended."""
        inputs = [] if inputs is None else list(inputs) if isinstance(inputs, (list, tuple)) \
            else [inputs]
        if additional_input_layers is not None:
            if not isinstance(additional_input_layers, (list, tuple)):
                additional_input_layers = [additional_input_layers]
            inputs.extend(additional_input_layers)
        self.inputs = inputs
        self.input = inputs if len(inputs) > 1 else inputs[0]

    def set_outputs(self, outputs):
        """Set ``self.outputs`` (a list) and ``self.output`` (the one output,
        or the list)."""
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        self.outputs = outputs
        self.output = outputs if len(outputs) > 1 else outputs[0]

    def __getattr__(self, name):
        # input(s)/output(s) of a model built without set_inputs: the Keras model's
        if name in ("input", "inputs", "output", "outputs"):
            model = self.__dict__.get("model")
            if model is not None:
                return getattr(model, name)
        raise AttributeError("%r object has no attribute %r" % (type(self).__name__, name))
