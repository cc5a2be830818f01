"""``Loss``: a layer that adds a loss computed from its inputs (bert4keras 0.11.5).

The seq2seq, language-model and relation-extraction recipes of bert4keras
define their training objective as a layer::

    class CrossEntropy(Loss):
        def compute_loss(self, inputs, mask=None):
            y_true, y_mask, y_pred = inputs
            ...
            return loss                      # a scalar

    output = CrossEntropy(2)(model.inputs + model.outputs)   # passes y_pred on
    model = keras.Model(model.inputs, output)
    model.compile(optimizer=...)              # no loss argument
    model.fit(batches_of_inputs_only)         # y is None

With Keras 3 this works unchanged: the layer calls ``self.add_loss`` during
the forward pass, and ``fit`` minimises the sum of the added losses when
``compile`` got no ``loss`` (Keras 3 collects ``add_loss`` terms per call, on
TensorFlow, JAX and PyTorch alike).
"""

import keras



def _pick(values, axis):
    if axis is None:
        return values
    if isinstance(axis, (list, tuple)):
        return [values[i] for i in axis]
    return values[axis]


def _float_if_integer(x):
    """``x`` cast to ``keras.config.floatx()`` if it is an integer or bool tensor."""
    dtype = keras.backend.standardize_dtype(getattr(x, "dtype", "float32"))
    if "int" in dtype or dtype == "bool":
        return keras.ops.cast(x, keras.config.floatx())
    return x


class Loss(keras.layers.Layer):
    """Adds ``compute_loss(inputs, mask)`` as a training loss, returns (part of) its inputs.

    Subclasses implement :meth:`compute_loss`. Inputs: a tensor or a list of
    tensors. Output: all inputs (``output_axis=None``), ``inputs[output_axis]``
    (an int), or a list of them (a list of ints).

    Args:
        output_axis: which inputs to return, as above.

    ``mask`` is the list of the inputs' Keras masks, with None for an input
    that carries none (0.11.5 code reads ``mask[1]``). As in 0.11.5, the
    models' sequence outputs carry the padding mask of their token ids (id
    0, except at position 0; see ``Embedding(mask_zero=True)``) and model
    inputs carry none.

    Integer (and bool) inputs reach :meth:`compute_loss` cast to
    ``keras.config.floatx()``: in 0.11.5 ``Input-Token`` / ``Input-Segment``
    were float inputs (the Keras 2 default), and recipes multiply float
    losses by them (``loss * y_mask`` with ``y_mask`` the segment ids); this
    library's inputs are int32, which Keras 3 would not multiply by a float.
    The layer's outputs keep the inputs' own dtypes.

    ``Loss`` itself is abstract and not registered for serialization; to
    save a ``.keras`` file with a subclass, decorate the subclass with
    ``@keras.saving.register_keras_serializable()``.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = list(output_axis) if isinstance(output_axis, tuple) else output_axis
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if isinstance(inputs, (list, tuple)):
            inputs = list(inputs)
            if mask is None:
                mask = [None] * len(inputs)
            loss = self.compute_loss([_float_if_integer(x) for x in inputs], mask)
        else:
            loss = self.compute_loss(_float_if_integer(inputs), mask)
        self.add_loss(loss)
        return _pick(inputs, self.output_axis)

    def compute_loss(self, inputs, mask=None):
        """The scalar loss; subclasses override it.

        Raises:
            NotImplementedError: always, here.
        """
        raise NotImplementedError(
            "%s: subclass Loss and implement compute_loss(self, inputs, mask=None), "
            "returning a scalar" % type(self).__name__)

    def compute_output_spec(self, inputs, mask=None):
        # not traced through call(): the loss is a training-time term only
        def spec(x):
            return keras.KerasTensor(x.shape, dtype=x.dtype)

        if isinstance(inputs, (list, tuple)):
            return _pick([spec(x) for x in inputs], self.output_axis)
        return spec(inputs)

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        if isinstance(inputs, (list, tuple)) and not isinstance(mask, (list, tuple)):
            mask = [mask] * len(inputs)
        return _pick(mask, self.output_axis)

    def get_config(self):
        config = super().get_config()
        config.update(output_axis=self.output_axis)
        return config
