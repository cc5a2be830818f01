"""Recompute (gradient checkpointing) of whole Transformer blocks.

With ``recompute=True`` (or the environment variable ``RECOMPUTE=1``, the
original toolkit's switch) every Transformer block -- the attention,
feed-forward, dropout, residual and norm layers whose names start with the
block's name, e.g. ``Transformer-3-`` -- is wrapped in one
:class:`RecomputeBlock` layer that runs those same layers under
``keras.remat``: only the block's inputs are kept for the backward pass and
everything inside the block is computed again there (Chen et al. 2016,
"Training Deep Nets with Sublinear Memory Cost"). The layers keep their names
and weights, so checkpoints load as before.

:func:`recompute_block` is what :meth:`Transformer.apply_block
<bert4keras.models.base.Transformer.apply_block>` calls when recompute is on;
:class:`TransformerModel` is the functional model returned then.
"""

import os
import random

import keras
import numpy as np
from keras import ops

from bert4keras.models.validation import ValidatedModel

__all__ = ["RecomputeBlock", "TransformerModel", "recompute_block", "recompute_from_env"]


def recompute_block(owner, name, fn, args):
    """Build Transformer block ``name`` (``fn(*args)``) as one :class:`RecomputeBlock`.

    The block is built twice: once as plain layer calls (so every layer has
    an ``.output`` in this graph, as without recompute), then again on
    placeholders, recording the calls of the layers whose names start with
    ``name + '-'`` into a small functional model. Tensors the block takes from
    outside (the hidden states ``(batch, seq_len, hidden)``, the attention
    bias, a position table, an encoder's context) become that model's inputs;
    layers with other names (shared position tables, masks) stay in the outer
    graph. Blocks that call the same layers again (ALBERT's shared block, an
    encoder-decoder's decoder built twice) reuse the same
    :class:`RecomputeBlock`.

    Args:
        owner: the :class:`~bert4keras.models.base.Transformer` building the
            graph; its ``layers`` dict receives the wrapper under ``name`` and
            its ``_recorder`` attribute is set while the block is recorded.
        name: the block's name (``'Transformer-3'``).
        fn, args: the block's layer calls, ``fn(*args)``.

    Returns:
        The block's output in the outer graph (the :class:`RecomputeBlock`'s).

    Raises:
        ValueError: a layer named outside the block consumes a tensor
            computed inside it, the block returns a tensor none of its layers
            computed, or a reused block calls other layers.
    """
    fn(*args)  # the plain graph: builds the layers and gives them an .output
    recorder = _BlockRecorder(name)
    owner._recorder = recorder
    seeds = random.getstate()  # Keras draws initializer seeds from Python's RNG
    try:
        outputs = fn(*args)
    finally:
        del owner._recorder
        random.setstate(seeds)  # so the weights match those built without recompute
    if not all(recorder.is_internal(t) for t in keras.tree.flatten(outputs)):
        raise ValueError("Block %r returned a tensor that none of its layers (named %r...) "
                         "computed" % (name, name + "-"))
    wrapper = owner.layers.get(name)
    calls = [layer.name for layer in recorder.layers]
    recorded = owner.__dict__.setdefault("_block_calls", {})
    if wrapper is None:
        block = keras.Model(recorder.placeholders, outputs, name=name + "-Block")
        wrapper = owner.layers[name] = RecomputeBlock(block, name=name)
        recorded[name] = calls
    elif not isinstance(wrapper, RecomputeBlock) or recorded.get(name) != calls:
        raise ValueError("Block %r was built before with other layer calls; a reused block "
                         "must call the same layers in the same order" % name)
    return wrapper(recorder.externals)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def recompute_from_env(environ=None):
    """The ``RECOMPUTE`` environment variable as a bool (unset: False).

    Raises:
        ValueError: a value other than 1/0/true/false/yes/no/on/off.
    """
    value = (os.environ if environ is None else environ).get("RECOMPUTE", "")
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError("Environment variable RECOMPUTE=%r: expected 1 or 0 (true/false)" % value)


class _BlockRecorder:
    """The ``call_hook`` of :meth:`Transformer.apply_block`'s second pass.

    Calls of layers named ``prefix...`` are re-run on placeholders: each
    tensor from outside the block gets one ``keras.Input`` of its exact shape
    and dtype (``placeholders``, in order of first use, the outer tensors in
    ``externals``); calls of other layers run on the outer tensors.
    """

    def __init__(self, name):
        self.name = name
        self.prefix = name + "-"
        self.externals, self.placeholders, self.layers = [], [], []
        self._placeholder_of = {}
        self._internal = set()

    def is_internal(self, tensor):
        return id(tensor) in self._internal

    def _map(self, tensor):
        if not isinstance(tensor, keras.KerasTensor) or id(tensor) in self._internal:
            return tensor
        if id(tensor) not in self._placeholder_of:
            placeholder = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype,
                                      name="%s-Input-%d" % (self.name, len(self.placeholders)))
            self._placeholder_of[id(tensor)] = placeholder
            self.externals.append(tensor)
            self.placeholders.append(placeholder)
        return self._placeholder_of[id(tensor)]

    def __call__(self, layer, inputs, arguments):
        if not layer.name.startswith(self.prefix):
            if any(self.is_internal(t) for t in keras.tree.flatten(inputs)):
                raise ValueError(
                    "Layer %r is called inside block %r on a tensor the block computed, but its "
                    "name does not start with %r, so it cannot be recomputed with the block"
                    % (layer.name, self.name, self.prefix))
            return layer(inputs, **arguments)
        self.layers.append(layer)
        outputs = layer(keras.tree.map_structure(self._map, inputs), **arguments)
        self._internal.update(id(t) for t in keras.tree.flatten(outputs))
        return outputs


def _current_stateless_scope():
    # Keras keeps the active StatelessScope (JAX training: every variable's
    # traced value) in its global state; no public accessor exists.
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    return get_stateless_scope()


class _SeedScope(keras.StatelessScope):
    """Inside a recomputed block: dropout seed states read from fixed values.

    Variable reads fall through to the enclosing scope's values (JAX
    training) or the variables; the seed generators' states read ``states``,
    the values they had before the block, so the forward pass and its
    recomputation draw the same dropout masks. Their updates stay inside
    the scope and are only counted (``draws``); :class:`RecomputeBlock`
    advances the real states afterwards, outside the rematerialised function.

    Raises:
        NotImplementedError: a layer of the block updates a variable other
            than a seed state (e.g. batch statistics) or adds a loss.
    """

    def __init__(self, generators, states):
        super().__init__(collect_losses=True, initialize_variables=False)
        outer = _current_stateless_scope()
        if outer is not None:
            self.state_mapping.update(outer.state_mapping)
        self._seed_ids = {id(g.state): g for g in generators}
        for generator, state in zip(generators, states):
            self.state_mapping[id(generator.state)] = state
        self.draws = {}

    def add_update(self, update):
        variable = update[0]
        generator = self._seed_ids.get(id(variable))
        if generator is None:
            raise NotImplementedError(
                "Variable %r is updated inside a recomputed block; recompute supports blocks "
                "whose only state is dropout seeds" % getattr(variable, "path", variable))
        self.draws[id(generator)] = self.draws.get(id(generator), 0) + 1
        super().add_update(update)

    def add_loss(self, loss):
        raise NotImplementedError("A layer adds a loss inside a recomputed block (activity "
                                  "regularisation); recompute does not support that")


@keras.saving.register_keras_serializable(package="bert4keras")
class RecomputeBlock(keras.layers.Layer):
    """One Transformer block, recomputed in the backward pass.

    ``block`` is a functional ``keras.Model`` over the block's own layers
    (``Transformer-%d-MultiHeadSelfAttention``, ``...-Norm``,
    ``...-FeedForward``, ...; built by :meth:`Transformer.apply_block`). The
    call runs ``block`` under ``keras.remat`` (``tf.recompute_grad``,
    ``jax.checkpoint``, ``torch.utils.checkpoint``), with the tensors passed
    positionally (TensorFlow's ``custom_gradient`` takes no keyword
    arguments in graph mode), so only the block's inputs are stored for the
    backward pass. Dropout inside the block draws the same masks in the
    forward pass, in its recomputation and as the same model without
    recompute (see :class:`_SeedScope`).

    Inputs: the list of tensors ``block`` takes (hidden states ``(batch,
    seq_len, hidden)`` first, attention bias, and position or context tensors
    as the family needs). Output: the block's output ``(batch, seq_len,
    hidden)``, with the Keras mask of the hidden states.
    Inputs are passed on uncast (``autocast=False``): the layers inside cast
    as they would in the plain graph.
    """

    def __init__(self, block, **kwargs):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        if not isinstance(block, keras.Model):
            raise TypeError("RecomputeBlock needs a keras.Model, got %r" % type(block).__name__)
        self.block = block

    def build(self, input_shape=None):
        self.built = True

    def _block_seed_generators(self):
        """The seed generators of the block's layers (dropout), in layer order."""
        found = []
        for layer in self.block._flatten_layers(include_self=False, recursive=True):
            for generator in getattr(layer, "_seed_generators", ()):
                if all(generator is not g for g in found):
                    found.append(generator)
        return found

    def _forward(self, tensors, training, generators, states, draws):
        """The block on ``tensors`` with the seed states fixed to ``states``."""
        with _SeedScope(generators, states) as scope:
            # no Keras masks inside: the block's layers use none (its output mask is
            # set by compute_mask), and the functional block would warn it drops them
            outputs = self.block(list(tensors), training=training, mask=[None] * len(tensors))
        draws.clear()
        draws.update(scope.draws)
        return outputs

    def call(self, inputs, training=None):
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        generators = self._block_seed_generators()
        states = [g.state.value * 1 for g in generators]  # "* 1": a copy, not the variable
        draws = {}

        def forward(*args):
            return self._forward(args, training, generators, states, draws)

        outputs = keras.remat(forward)(*tensors)
        for generator, state in zip(generators, states):
            count = draws.get(id(generator), 0)
            if count:
                step = ops.convert_to_tensor(np.array([0, count]), dtype=generator.state.dtype)
                generator.state.assign(ops.add(state, step))
        return outputs

    def compute_mask(self, inputs, mask=None):
        """The Keras mask of the hidden states (the first input), as the
        block's layers would pass it on without recompute."""
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def compute_output_spec(self, inputs, training=None):
        return self.block.compute_output_spec(list(inputs) if isinstance(inputs, (list, tuple))
                                              else [inputs])

    def get_config(self):
        config = super().get_config()
        config.pop("autocast", None)
        config["block"] = keras.saving.serialize_keras_object(self.block)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        block = keras.saving.deserialize_keras_object(config.pop("block"))
        return cls(block, **config)


@keras.saving.register_keras_serializable(package="bert4keras")
class TransformerModel(ValidatedModel):
    """The functional model :func:`build_transformer_model` returns with
    recompute: a :class:`~bert4keras.models.validation.ValidatedModel` (host
    inputs checked against the vocabulary and ``max_position``) except that ``get_layer``
    also finds the layers inside its :class:`RecomputeBlock` wrappers
    (``get_layer('Transformer-0-MultiHeadSelfAttention')`` works as without
    recompute; ``get_layer('Transformer-0')`` is the wrapper itself)."""

    def get_layer(self, name=None, index=None):
        if name is not None and index is None:
            for layer in self.layers:
                if layer.name == name:
                    return layer
            for layer in self.layers:
                if isinstance(layer, RecomputeBlock):
                    for inner in layer.block.layers:
                        if inner.name == name:
                            return inner
        return super().get_layer(name=name, index=index)
