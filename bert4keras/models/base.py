"""The :class:`Transformer` base class: graph building and checkpoint I/O.

A family is a small subclass that says which layers exist
(``apply_embeddings``, ``apply_main_layers``, ``apply_final_layers``) and how
their weights are named in each checkpoint format. The name map is data:
``{keras layer name: [(google name, hf name), ...]}`` in the order of the
layer's ``weights``; a ``:T`` suffix marks a tensor stored transposed relative
to the Keras weight, ``|`` separates alternative spellings, and ``{i}`` is the
block index in the per-block map. A ``[k/n]`` suffix names chunk ``k`` of
``n`` equal parts of the stored tensor's last axis (GPT-2's fused ``c_attn``
holds query, key and value side by side).

Each family may also declare a ``signature``: checkpoint names that must be
present (and names that must be absent) in its checkpoints, so that a
checkpoint of another family is named in the error instead of only its first
missing variable.

Recompute (gradient checkpointing): with ``recompute=True`` (or the
environment variable ``RECOMPUTE=1``, the original toolkit's switch) every
Transformer block -- the attention, feed-forward, dropout, residual and norm
layers whose names start with the block's name, e.g. ``Transformer-3-`` -- is
wrapped in one :class:`RecomputeBlock` layer that runs those same layers
under ``keras.remat``: only the block's inputs are kept for the backward pass
and everything inside the block is computed again there (Chen et al. 2016,
"Training Deep Nets with Sublinear Memory Cost"). The layers keep their
names and weights, so checkpoints load as before.

Mixed precision: build the model after
``keras.mixed_precision.set_global_policy('mixed_float16')`` (or
``'mixed_bfloat16'``). Weights stay float32; matmuls run in the compute
dtype; attention scores and softmax, LayerNorm statistics (with float32
``gamma``/``beta``) and the heads' output activations (``Activation`` layers
and softmax/sigmoid ``Dense`` heads, built with ``dtype='float32'``) run in
float32, and Keras losses cast predictions to float32. For ``mixed_float16``,
``model.compile`` wraps the optimizer in ``keras.optimizers.LossScaleOptimizer``
(dynamic loss scaling) by itself when the model was built under that policy;
in a custom training loop wrap it yourself,
``keras.optimizers.LossScaleOptimizer(keras.optimizers.AdamW(...))``, and
differentiate ``optimizer.scale_loss(loss)``. bfloat16 needs no loss scaling.
"""

import os
import random
import warnings

import keras
import numpy as np
from keras import ops

from bert4keras.checkpoints import (
    CheckpointError,
    open_checkpoint,
    resolve,
    write_tf_checkpoint,
)
from bert4keras.layers import AttentionMask

FORMATS = ("google", "hf")

#: Families that declare a ``signature`` (filled by ``Transformer.__init_subclass__``).
_SIGNED_FAMILIES = []


class Transformer:
    """Base class: builds a functional ``keras.Model`` and loads/saves weights.

    Args:
        vocab_size: rows of the token embedding (before ``keep_tokens``).
        hidden_size: width of the residual stream, ``hidden``.
        num_hidden_layers: number of Transformer blocks.
        num_attention_heads: ``heads``; ``head_size = hidden_size // heads``
            unless ``attention_head_size`` is given.
        intermediate_size: inner width of the feed-forward block.
        hidden_act: activation name (``'gelu'`` is the exact erf GELU).
        dropout_rate, attention_dropout_rate: dropout probabilities.
        embedding_size: embedding width if it differs from ``hidden_size``
            (then an ``Embedding-Mapping`` projection is added).
        max_position: rows of the position table; longer inputs raise.
        segment_vocab_size: segment (token type) vocabulary; 0 means no
            ``Input-Segment``.
        layer_norm_eps: LayerNorm epsilon (1e-12 in Google BERT).
        initializer_range: stddev of the truncated-normal initializer.
        keep_tokens: list of original token ids to keep (a simplified
            vocabulary); the vocabulary-indexed weights are sliced to it.
        application: ``'encoder'`` (bidirectional), ``'lm'`` (causal) or
            ``'unilm'`` (UniLM seq2seq mask from segment ids).
        recompute: recompute each Transformer block in the backward pass
            (see :meth:`apply_block`); ``None`` reads the environment
            variable ``RECOMPUTE`` (``1``/``0``, default off).
        name: the Keras model name.
    """

    #: ``{layer name: [(google name, hf name), ...]}`` for layers outside blocks.
    name_map = {}
    #: the same for each block; ``{i}`` is replaced by the block index.
    block_name_map = {}
    #: model prefixes that Hugging Face files may or may not carry.
    hf_prefixes = ()
    #: layers whose first axis is the vocabulary (sliced by ``keep_tokens``).
    vocab_layers = ("Embedding-Token", "MLM-Bias")
    #: vocabulary axis (of the Keras weight) of ``vocab_layers`` where it is not 0.
    vocab_axes = {}
    #: how this family's checkpoints look: ``{"family": model key, "present":
    #: [(google name, hf name), ...], "absent": [...]}``; ``None`` = no check.
    signature = None

    @classmethod
    def translate_config(cls, config):
        """Rename a family's own config keys (e.g. of a Hugging Face
        ``config.json``) to constructor arguments; the default keeps ``config``."""
        return config

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("signature"):
            _SIGNED_FAMILIES.append(cls)

    def __init__(self, vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
                 intermediate_size, hidden_act="gelu", dropout_rate=0.0,
                 attention_dropout_rate=0.0, embedding_size=None, attention_head_size=None,
                 attention_key_size=None, max_position=512, segment_vocab_size=2,
                 layer_norm_eps=1e-12, initializer_range=0.02, keep_tokens=None,
                 application="encoder", recompute=None, name=None):
        if application not in ("encoder", "lm", "unilm"):
            raise ValueError("application must be 'encoder', 'lm' or 'unilm', got %r" % application)
        if hidden_size % num_attention_heads and attention_head_size is None:
            raise ValueError("hidden_size=%d is not divisible by num_attention_heads=%d"
                             % (hidden_size, num_attention_heads))
        self.keep_tokens = None if keep_tokens is None else np.asarray(keep_tokens, "int64")
        self.vocab_size = len(self.keep_tokens) if keep_tokens is not None else int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.attention_head_size = int(attention_head_size or hidden_size // num_attention_heads)
        self.attention_key_size = int(attention_key_size or self.attention_head_size)
        self.intermediate_size = int(intermediate_size)
        self.hidden_act = hidden_act
        self.dropout_rate = float(dropout_rate or 0.0)
        self.attention_dropout_rate = float(attention_dropout_rate or 0.0)
        self.embedding_size = int(embedding_size or hidden_size)
        self.max_position = int(max_position)
        self.segment_vocab_size = int(segment_vocab_size or 0)
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        self.application = application
        self.recompute = recompute_from_env() if recompute is None else bool(recompute)
        self.name = name
        self.layers = {}
        self.model = None

    @property
    def initializer(self):
        """A new ``TruncatedNormal(stddev=initializer_range)`` at every use.

        A Keras 3 initializer instance without a seed draws its seed once, so
        one shared instance returns the same values at every call: the query,
        key and value kernels, and every Transformer block, would start out
        identical (attention then looks only at the token itself, and
        training from scratch sits on a unigram plateau). A fresh instance
        per weight draws a fresh seed from Keras' global RNG, which
        ``keras.utils.set_random_seed`` makes reproducible.
        """
        return keras.initializers.TruncatedNormal(stddev=self.initializer_range)

    # -- graph building -------------------------------------------------------
    #: ``hook(layer, inputs, arguments) -> outputs`` replacing every layer call
    #: of :meth:`apply` while set: :mod:`bert4keras.generation` runs this
    #: model's own graph code on real tensors, with key/value caches.
    call_hook = None
    #: the :class:`_BlockRecorder` of :meth:`apply_block` while it records a block
    _recorder = None

    def apply(self, inputs, layer=None, arguments=None, name=None, **kwargs):
        """Call the layer called ``name``, creating it from ``layer(**kwargs)``
        the first time (so a second call with the same name shares weights)."""
        if name not in self.layers:
            if self.call_hook is not None:
                raise RuntimeError("Layer %r is not part of the built model" % name)
            if _is_output_activation(layer, kwargs) and _mixed_policy():
                kwargs = dict(kwargs, dtype="float32")  # probabilities/logits in float32
            self.layers[name] = layer(name=name, **kwargs)
        hook = self.call_hook if self.call_hook is not None else self._recorder
        if hook is not None:
            return hook(self.layers[name], inputs, arguments or {})
        return self.layers[name](inputs, **(arguments or {}))

    def block_name(self, index):
        """Name of block ``index``; its layers' names start with it plus ``-``
        (ALBERT's one shared block: no index)."""
        return "Transformer-%d" % index

    def apply_block(self, name, fn, *args):
        """``fn(*args)``: the layer calls of the Transformer block ``name``.

        Without recompute this is just ``fn(*args)``. With ``self.recompute``
        the block is built twice: once as plain layer calls (so every layer
        has an ``.output`` in this graph, as without recompute), then again
        on placeholders, recording the calls of the layers whose names start
        with ``name + '-'`` into a small functional model. Tensors the block
        takes from outside (the hidden states, the attention bias, a position
        table, T5's context) become that model's inputs; layers with other
        names (shared position tables, masks) stay in the outer graph. The
        block's output in the returned graph is that of a
        :class:`RecomputeBlock` called ``name`` wrapping the small model.
        Blocks that call the same layers again (ALBERT's shared block, the T5
        decoder built twice) reuse the same :class:`RecomputeBlock`.

        Raises:
            ValueError: a layer named outside the block consumes a tensor
                computed inside it, or a reused block calls other layers.
        """
        if not self.recompute or self.call_hook is not None or self._recorder is not None:
            return fn(*args)
        fn(*args)  # the plain graph: builds the layers and gives them an .output
        recorder = _BlockRecorder(name)
        self._recorder = recorder
        seeds = random.getstate()  # Keras draws initializer seeds from Python's RNG
        try:
            outputs = fn(*args)
        finally:
            del self._recorder
            random.setstate(seeds)  # so the weights match those built without recompute
        if not all(recorder.is_internal(t) for t in keras.tree.flatten(outputs)):
            raise ValueError("Block %r returned a tensor that none of its layers (named %r...) "
                             "computed" % (name, name + "-"))
        wrapper = self.layers.get(name)
        calls = [layer.name for layer in recorder.layers]
        recorded = self.__dict__.setdefault("_block_calls", {})
        if wrapper is None:
            block = keras.Model(recorder.placeholders, outputs, name=name + "-Block")
            wrapper = self.layers[name] = RecomputeBlock(block, name=name)
            recorded[name] = calls
        elif not isinstance(wrapper, RecomputeBlock) or recorded.get(name) != calls:
            raise ValueError("Block %r was built before with other layer calls; a reused block "
                             "must call the same layers in the same order" % name)
        return wrapper(recorder.externals)

    def keras_model(self, inputs, outputs, name=None):
        """``keras.Model(inputs, outputs, name=name)``; a :class:`TransformerModel`
        (whose ``get_layer`` also finds the layers inside recomputed blocks)
        when ``self.recompute``."""
        cls = TransformerModel if self.recompute else keras.Model
        return cls(inputs, outputs, name=name)

    def get_inputs(self):
        """``Input-Token`` ``(batch, seq_len)`` and, if segments are used,
        ``Input-Segment`` ``(batch, seq_len)``; both int32."""
        inputs = [keras.Input(shape=(None,), dtype="int32", name="Input-Token")]
        if self.segment_vocab_size > 0:
            inputs.append(keras.Input(shape=(None,), dtype="int32", name="Input-Segment"))
        return inputs

    def build(self):
        """Build ``self.model`` (a functional ``keras.Model``) and return it."""
        inputs = self.get_inputs()
        x = self.apply_embeddings(inputs)
        bias = self.compute_attention_bias(inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_block(self.block_name(index), self.apply_main_layers, x, index, bias)
        outputs = self.apply_final_layers(x)
        self.model = self.keras_model(inputs, outputs, name=self.name)
        return self.model

    def compute_attention_bias(self, inputs):
        """The additive bias ``(batch, 1, q_len|1, k_len)`` for ``application``."""
        if self.application == "unilm":
            if len(inputs) < 2:
                raise ValueError("application='unilm' needs segment ids (segment_vocab_size > 0)")
            return self.apply(inputs[:2], AttentionMask, mode="unilm", name="Attention-UniLM-Mask")
        if self.application == "lm":
            return self.apply(inputs[0], AttentionMask, mode="lm", name="Attention-LM-Mask")
        return self.apply(inputs[0], AttentionMask, mode="padding", name="Attention-Mask")

    def dropout(self, x, name, rate=None):
        rate = self.dropout_rate if rate is None else rate
        if rate <= 0:
            return x
        return self.apply(x, keras.layers.Dropout, rate=rate, name=name)

    def apply_embeddings(self, inputs):
        raise NotImplementedError

    def apply_main_layers(self, x, index, attention_bias):
        raise NotImplementedError

    def apply_final_layers(self, x):
        return x

    # -- weights ----------------------------------------------------------------
    def variable_mapping(self, fmt="google"):
        """``{layer name: [(stored name, transposed), ...]}`` for one format.

        Only layers present in the built model are listed.
        """
        column = FORMATS.index(fmt)
        entries = dict(self.name_map)
        for index in range(self.num_hidden_layers):
            for layer, names in self.block_name_map.items():
                entries[layer.format(i=index)] = [
                    tuple(None if n is None else n.format(i=index) for n in pair)
                    for pair in names
                ]
        mapping = {}
        for layer, pairs in entries.items():
            if layer not in self.layers:
                continue
            spec = []
            for pair in pairs:
                stored = pair[column]
                if stored is None:
                    raise CheckpointError("%s has no %s-format name for %s"
                                          % (type(self).__name__, fmt, layer))
                spec.append((stored[:-2], True) if stored.endswith(":T") else (stored, False))
            mapping[layer] = spec
        return mapping

    def load_weights_from_checkpoint(self, checkpoint_path):
        """Load weights from a Google TF checkpoint or a Hugging Face directory.

        Raises:
            CheckpointError: naming the checkpoint and the first variable that
                is missing, or both names and both shapes on a shape mismatch.
        """
        reader = open_checkpoint(checkpoint_path)
        mapping = self.variable_mapping(reader.format)
        for layer_name, spec in mapping.items():
            weights = self.layers[layer_name].weights
            if len(weights) != len(spec):
                raise CheckpointError("Layer %s has %d weights but the %s map lists %d"
                                      % (layer_name, len(weights), reader.format, len(spec)))
            for weight, (names, transposed) in zip(weights, spec):
                stored = None
                for name in names.split("|"):
                    name, chunk = _split_chunk(name)
                    stored = resolve(reader, name, self.hf_prefixes)
                    if stored is not None:
                        break
                if stored is None:
                    raise CheckpointError(
                        "Variable %r (for layer %s) is missing from checkpoint %r, which has %d "
                        "variables%s" % (names, layer_name, reader.path, len(reader.names()),
                                         self._describe_checkpoint(reader)))
                value = reader.get(stored)
                if chunk is not None:
                    value = np.split(value, chunk[1], axis=-1)[chunk[0]]
                if transposed:
                    value = value.T
                if self.keep_tokens is not None and layer_name in self.vocab_layers:
                    axis = self.vocab_axes.get(layer_name, 0)
                    if value.shape[axis] <= self.keep_tokens.max():
                        raise CheckpointError(
                            "keep_tokens refers to id %d but %r in %r has only %d rows"
                            % (self.keep_tokens.max(), stored, reader.path, value.shape[axis]))
                    value = np.take(value, self.keep_tokens, axis=axis)
                if tuple(value.shape) != tuple(weight.shape):
                    raise CheckpointError(
                        "Shape mismatch: checkpoint variable %r in %r has shape %s%s but model "
                        "weight %s of layer %s has shape %s (check the config against the "
                        "checkpoint)" % (stored, reader.path, tuple(reader.shape(stored)),
                                         (" (chunk %d of %d)" % chunk if chunk else "")
                                         + (" (transposed)" if transposed else ""), weight.path,
                                         layer_name, tuple(weight.shape)))
                weight.assign(value.astype(weight.dtype))
        if self.matches_checkpoint(reader) is False:
            found = checkpoint_families(reader)
            if found:
                warnings.warn(
                    "Loaded %r into model=%r, but the checkpoint looks like model=%s"
                    % (reader.path, self.signature["family"],
                       " or ".join(repr(f) for f in found)), stacklevel=2)

    def _describe_checkpoint(self, reader):
        sample = ", ".join(reader.names()[:3])
        text = "; first few: %s" % sample if sample else ""
        if _SIGNED_FAMILIES:
            found = checkpoint_families(reader)
            if found:
                text += ". Its variables look like model=%s" % " or ".join(
                    repr(f) for f in found)
            else:
                text += ". It matches none of the known families (%s)" % ", ".join(
                    sorted({c.signature["family"] for c in _SIGNED_FAMILIES}))
            if self.signature:
                family = self.signature["family"]
                if found and family in found:
                    text += ("; that is this model's family, so the checkpoint lacks an "
                             "optional part (a head such as with_pool/with_nsp/with_mlm "
                             "that it was not trained with?)")
                else:
                    text += "; this model is model=%r" % family
        return text

    @classmethod
    def matches_checkpoint(cls, reader):
        """True if ``reader`` has every ``present`` and no ``absent`` name of
        this family's ``signature`` (None when the family declares none)."""
        if not cls.signature:
            return None
        column = FORMATS.index(reader.format)

        def has(pair):
            names = pair[column]
            return names is not None and any(
                resolve(reader, _split_chunk(n)[0], cls.hf_prefixes) for n in names.split("|"))

        return (all(has(p) for p in cls.signature.get("present", ()))
                and not any(has(p) for p in cls.signature.get("absent", ())))

    def checkpoint_tensors(self, fmt="google"):
        """``{stored name: array}`` of the model's weights in a format's names."""
        tensors, chunks = {}, {}
        for layer_name, spec in self.variable_mapping(fmt).items():
            for weight, (names, transposed) in zip(self.layers[layer_name].weights, spec):
                value = keras.ops.convert_to_numpy(weight.value)
                value = value.T if transposed else value
                name, chunk = _split_chunk(names.split("|")[0])
                if chunk is None:
                    tensors[name] = value
                else:
                    chunks.setdefault(name, {})[chunk[0]] = value
        for name, parts in chunks.items():
            tensors[name] = np.concatenate([parts[k] for k in sorted(parts)], axis=-1)
        return tensors

    def save_weights_as_checkpoint(self, filename):
        """Write the weights as a Google-format TF checkpoint at prefix ``filename``.

        With ``keep_tokens`` the written vocabulary is the kept one, so the
        checkpoint pairs with the simplified ``vocab.txt``.
        """
        write_tf_checkpoint(filename, self.checkpoint_tensors("google"))


def _split_chunk(name):
    """``'w[1/3]'`` -> ``('w', (1, 3))``; a name without the suffix -> ``(name, None)``."""
    if name.endswith("]") and "[" in name:
        base, _, spec = name[:-1].rpartition("[")
        index, _, parts = spec.partition("/")
        return base, (int(index), int(parts))
    return name, None


def checkpoint_families(reader):
    """``model=`` keys whose ``signature`` a checkpoint reader matches."""
    found = []
    for cls in _SIGNED_FAMILIES:
        if cls.matches_checkpoint(reader) and cls.signature["family"] not in found:
            found.append(cls.signature["family"])
    return found


def _mixed_policy():
    policy = keras.mixed_precision.global_policy()
    return policy.compute_dtype != policy.variable_dtype


def _is_output_activation(layer, kwargs):
    """An ``Activation`` layer (the heads' ``MLM-Activation``, ``LM-Activation``,
    ...) or a ``Dense`` with a softmax/sigmoid (``NSP-Proba``,
    ``Discriminator-Prediction``, T5.1.1's ``Decoder-Output-LM``)."""
    if isinstance(layer, type) and issubclass(layer, keras.layers.Activation):
        return True
    return kwargs.get("activation") in ("softmax", "sigmoid")


# -- recompute ------------------------------------------------------------------

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
    seq_len, hidden)``, attention bias, and position or context tensors as the
    family needs). Output: the block's output ``(batch, seq_len, hidden)``.
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
            outputs = self.block(list(tensors), training=training)
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
class TransformerModel(keras.Model):
    """The functional model :func:`build_transformer_model` returns with
    recompute: a plain functional ``keras.Model`` except that ``get_layer``
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
