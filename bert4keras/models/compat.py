"""bert4keras 0.11.5's model options and helpers over our model families.

:func:`bert4keras.models.build_transformer_model` accepts 0.11.5's options;
when one is given, the family class is extended by :class:`LegacyOptions`
(see :func:`legacy_class`), which changes only what the option asks for:

* ``sequence_length``: inputs of a fixed length ``(batch, sequence_length)``.
* ``prefix``: every layer (and input) name starts with it; the name maps and
  ``transformer.layers`` keep the plain names.
* ``layers``: a dict of layers (another transformer's ``.layers``); a layer of
  the same name is reused, not created: two models, one set of weights.
* ``custom_position_ids``: one more input, ``Input-Position`` ``(batch,
  seq_len)`` int, the positions the (absolute or rotary) position encoding
  reads instead of ``0 .. seq_len - 1``.
* ``hierarchical_position``: ``Embedding-Position`` becomes a
  :class:`~bert4keras.layers.legacy.HierarchicalPositionEmbedding` (``True``
  or ``alpha``): inputs up to ``max_position ** 2`` tokens.
* ``shared_segment_embeddings``: segments are embedded by ``Embedding-Token``.
* ``compound_tokens``: ``len(compound_tokens)`` more vocabulary rows, loaded as
  the mean of the listed tokens' rows
  (:func:`~bert4keras.models.legacy_methods.compound_rows`).
* ``residual_attention_scores``: RealFormer (arXiv:2012.11747): each
  attention adds the previous attention's scores to its bias.
* ``ignore_invalid_weights``: weights missing from the checkpoint are skipped
  with a warning instead of raising.
* ``autoresize_weights``: a stored tensor of another shape is resized by
  :func:`bert4keras.snippets.orthogonally_resize` (and rescaled as 0.11.5 did
  for attention and feed-forward kernels).
* ``layer_norm_cond`` (a tensor ``(batch, dim)``),
  ``layer_norm_cond_hidden_size``, ``layer_norm_cond_hidden_act``: every
  ``LayerNormalization`` becomes conditional on it (inputs ``[x, cond]``;
  its ``gamma``/``beta`` still load from the checkpoint).
* ``additional_input_layers``: more ``keras.Input`` s of the Keras model
  (e.g. the ones ``layer_norm_cond`` is computed from).
* ``attention_caches``: ``{attention layer name: [k_cache, v_cache]}``,
  tensors ``(batch, cache_len, hidden)`` put in front of that layer's keys and
  values (visible to every query).

The T5 classes take only ``ignore_invalid_weights`` and
``autoresize_weights`` of these (the others raise). ``LM_Mask``,
``UniLM_Mask``, ``extend_with_language_model``,
``extend_with_unified_language_model`` and ``data_parallel`` are 0.11.5's
names for ``application='lm'|'unilm'`` and for data parallelism.
"""

import warnings

import keras
import numpy as np

from bert4keras import checkpoints
from bert4keras.layers import (
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    PositionEmbedding,
    SinusoidalPositionEmbedding,
)
from bert4keras.layers.legacy import (
    CachePaddedBias,
    HierarchicalPositionEmbedding,
    ScoredMultiHeadAttention,
)
from bert4keras.models.base import _is_output_activation, _mixed_policy
from bert4keras.models.legacy_methods import compound_rows

#: option -> default; a value other than the default selects :class:`LegacyOptions`.
OPTIONS = {
    "sequence_length": None, "prefix": None, "layers": None, "custom_position_ids": False,
    "hierarchical_position": None, "shared_segment_embeddings": False,
    "compound_tokens": None, "residual_attention_scores": False,
    "ignore_invalid_weights": False, "autoresize_weights": False, "layer_norm_cond": None,
    "layer_norm_cond_hidden_size": None, "layer_norm_cond_hidden_act": None,
    "additional_input_layers": None, "attention_caches": None,
}
#: the options the T5 classes take
T5_OPTIONS = ("ignore_invalid_weights", "autoresize_weights")


def is_default(value, default):
    """``value`` is the option's default (a tensor never is)."""
    return value is default or (not hasattr(value, "shape") and value == default)


class LegacyOptions:
    """Mixin over a family class that implements 0.11.5's model options
    (listed in the module docstring; all keyword-only, defaults as there)."""

    def __init__(self, **kwargs):
        options = {k: kwargs.pop(k, v) for k, v in OPTIONS.items()}
        super().__init__(**kwargs)
        if getattr(self, "is_encoder_decoder", False) or type(self).__name__.startswith(
                ("T5", "MT5")):
            bad = sorted(k for k, v in options.items()
                         if k not in T5_OPTIONS and not is_default(v, OPTIONS[k]))
            if bad:
                raise ValueError("%s does not support the 0.11.5 option(s) %s; only %s"
                                 % (type(self).__name__, ", ".join(bad), ", ".join(T5_OPTIONS)))
        shared = options.pop("layers")
        for key, value in options.items():
            setattr(self, key, value)
        self.prefix = self.prefix or ""
        # another model's layers (a dict, or a Transformer): reused by name, one weight set;
        # a copy, so that layers only this model has do not join the other model's dict
        if shared is not None:
            self.layers = dict(getattr(shared, "layers", shared))
        if self.compound_tokens:
            self.vocab_size += len(self.compound_tokens)
        self._scores = self._position_ids = self._loading = None

    # -- graph ------------------------------------------------------------------
    def build(self, attention_caches=None, layer_norm_cond=None,
              layer_norm_cond_hidden_size=None, layer_norm_cond_hidden_act=None,
              additional_input_layers=None, **kwargs):
        """0.11.5's ``build(**options)``: the options given here override the
        constructor's; a built model is returned as it is."""
        for key, value in dict(attention_caches=attention_caches, layer_norm_cond=layer_norm_cond,
                               layer_norm_cond_hidden_size=layer_norm_cond_hidden_size,
                               layer_norm_cond_hidden_act=layer_norm_cond_hidden_act,
                               additional_input_layers=additional_input_layers).items():
            if value is not None:
                setattr(self, key, value)
        if self.model is not None:
            return self.model
        return super().build()

    def get_inputs(self):
        self._scores = None
        inputs = super().get_inputs()
        if self.sequence_length is not None or self.prefix:
            inputs = [keras.Input(shape=(self.sequence_length,) + tuple(i.shape[2:]),
                                  dtype=i.dtype, name=self.prefixed(i.name)) for i in inputs]
        if self.custom_position_ids:
            self._position_ids = keras.Input(shape=(self.sequence_length,), dtype="int32",
                                             name=self.prefixed("Input-Position"))
            inputs = list(inputs) + [self._position_ids]
        return inputs

    def keras_model(self, inputs, outputs, name=None):
        self.set_inputs(inputs, self.additional_input_layers)
        self.set_outputs(outputs)
        return super().keras_model(self.inputs, outputs, name=name)

    def apply(self, inputs, layer=None, arguments=None, name=None, **kwargs):
        if name == "Embedding-Segment" and self.shared_segment_embeddings:
            name = "Embedding-Token"
        if self.call_hook is not None:  # a cached decoding step: the plain graph
            return super().apply(inputs, layer, arguments, name=name, **kwargs)
        arguments = dict(arguments or {})
        if isinstance(layer, type) and name not in self.layers:
            layer, kwargs = self._legacy_layer(layer, kwargs)
        current = self.layers.get(name)
        kind = current if current is not None else layer

        def is_a(cls):  # the layer (or the class it will be made from) is a cls
            return isinstance(kind, cls) or isinstance(kind, type) and issubclass(kind, cls)

        if self.custom_position_ids and is_a((PositionEmbedding, SinusoidalPositionEmbedding)):
            arguments["positions"] = self._position_ids
        if self.layer_norm_cond is not None and is_a(LayerNormalization):
            inputs = [inputs, self.layer_norm_cond]
        if is_a(MultiHeadAttention):
            inputs = self._attention_inputs(list(inputs), name, kind, kwargs.get("p_bias"))
        if current is None and self.prefix and layer is not None:
            if _is_output_activation(layer, kwargs) and _mixed_policy():
                kwargs = dict(kwargs, dtype="float32")
            self.layers[name] = layer(name=self.prefixed(name), **kwargs)
        outputs = super().apply(inputs, layer, arguments, name=name, **kwargs)
        if isinstance(self.layers[name], ScoredMultiHeadAttention):
            outputs, self._scores = outputs
        return outputs

    def _legacy_layer(self, layer, kwargs):
        """The class and arguments that replace a new layer's, per the options."""
        if self.hierarchical_position and issubclass(layer, PositionEmbedding):
            layer = HierarchicalPositionEmbedding
            kwargs = dict(kwargs, hierarchical=self.hierarchical_position)
        if self.layer_norm_cond is not None and issubclass(layer, LayerNormalization):
            kwargs = dict(kwargs, conditional=True,
                          hidden_units=self.layer_norm_cond_hidden_size,
                          hidden_activation=self.layer_norm_cond_hidden_act or "linear",
                          hidden_initializer=self.initializer)
        if self.residual_attention_scores and issubclass(layer, MultiHeadAttention):
            layer = ScoredMultiHeadAttention
        return layer, kwargs

    def _attention_inputs(self, inputs, name, kind, p_bias=None):
        """``[q, k, v, (bias), (position)]`` with cached keys/values in front
        and the previous attention scores added to the bias."""
        p_bias = kind.p_bias if not isinstance(kind, type) else p_bias
        position = [inputs.pop()] if p_bias else []
        q, k, v = inputs[:3]
        bias = inputs[3] if len(inputs) > 3 else None
        caches = self.attention_caches or {}
        if name in caches:
            k_cache, v_cache = caches[name]
            k = self.apply([k_cache, k], keras.layers.Concatenate, axis=1,
                           name=name + "-Cached-Key")
            v = self.apply([v_cache, v], keras.layers.Concatenate, axis=1,
                           name=name + "-Cached-Value")
            if bias is not None:
                bias = self.apply([bias, k_cache], CachePaddedBias, name=name + "-Cached-Bias")
        if self.residual_attention_scores and self._scores is not None:
            bias = self._scores if bias is None else self.apply(
                [bias, self._scores], keras.layers.Add, name=name + "-Attention-Bias")
        return [q, k, v] + ([bias] if bias is not None else []) + position

    # -- weights -------------------------------------------------------------------
    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        """As :meth:`Transformer.load_weights_from_checkpoint`, with
        ``compound_tokens``, ``ignore_invalid_weights`` and
        ``autoresize_weights`` applied."""
        if self.compound_tokens or self.ignore_invalid_weights or self.autoresize_weights:
            self._loading = checkpoints.open_checkpoint(checkpoint)
        try:
            return super().load_weights_from_checkpoint(checkpoint, mapping)
        finally:
            self._loading = None

    def _weight_mapping(self, mapping):
        # a conditional LayerNorm has gamma, beta first, then its projections of the condition
        conditional = {k: v for k, v in mapping.items()
                       if getattr(self.layers.get(k), "conditional", False)}
        pairs = super()._weight_mapping({k: v for k, v in mapping.items()
                                         if k not in conditional})
        for layer_name, specs in conditional.items():
            pairs[layer_name] = list(zip(self.layers[layer_name].weights[:len(specs)], specs))
        if self._loading is None:
            return pairs
        return {layer_name: [p for p in (self._adapt(layer_name, i, w, spec)
                                         for i, (w, spec) in enumerate(items)) if p]
                for layer_name, items in pairs.items()}

    def _adapt(self, layer_name, index, weight, spec):
        """``(weight or a stand-in, spec)``, or None to skip a missing variable."""
        reader = self._loading
        alternatives, transposed = checkpoints.parse_spec(spec)
        found = [(checkpoints.resolve(reader, n, self.hf_prefixes), c) for n, c in alternatives]
        found = [(s, c) for s, c in found if s is not None]
        if not found:
            if self.ignore_invalid_weights:
                warnings.warn("%s: %r is not in checkpoint %r, but ignored (weight %s kept)"
                              % (type(self).__name__, spec, reader.path, weight.path),
                              stacklevel=4)
                return None
            return weight, spec  # checkpoints.load names it in its error
        shape = list(reader.shape(found[0][0]))
        if found[0][1] is not None:
            shape[-1] //= found[0][1][1]
        if transposed:
            shape = shape[::-1]
        vocab_axis = self.vocab_axes.get(layer_name, 0)
        is_vocab = layer_name in self.vocab_layers
        if is_vocab and self.keep_tokens is not None:
            shape[vocab_axis] = len(self.keep_tokens)
        if is_vocab and self.compound_tokens:
            shape[vocab_axis] = weight.shape[vocab_axis] - len(self.compound_tokens)

            def transform(value):
                return compound_rows(value, self.compound_tokens, vocab_axis)
        elif self.autoresize_weights and tuple(shape) != tuple(weight.shape):
            transform = self._resizer(layer_name, index, tuple(shape), tuple(weight.shape))
        else:
            return weight, spec
        return _StandIn(weight, tuple(shape), transform), spec

    def _resizer(self, layer_name, index, old, new):
        """0.11.5's ``autoresize_weights``: resize, then keep the scale of
        attention scores (q, k weights by ``(new/old)**0.25`` of the head
        width) and of feed-forward outputs."""
        from bert4keras.snippets import orthogonally_resize

        layer = self.layers[layer_name]
        factor = 1.0
        if isinstance(layer, MultiHeadAttention) and layer.attention_scale:
            if index < (4 if layer.use_bias else 2):
                factor = (new[-1] / old[-1]) ** 0.25
        elif isinstance(layer, FeedForward):
            first = (2 if layer.use_bias else 1) - (2 if self.hidden_act in (
                "relu", "leaky_relu") else 0)
            factor = np.sqrt(new[-1] / old[-1]) if index < first else np.sqrt(old[0] / new[0])
        return lambda value: orthogonally_resize(value, new) * factor


class _StandIn:
    """A Keras weight as :func:`bert4keras.checkpoints.load` sees it: the
    stored shape, and a transform applied on assignment."""

    def __init__(self, weight, shape, transform):
        self.weight, self.shape, self.transform = weight, shape, transform
        self.dtype, self.path = weight.dtype, weight.path

    def assign(self, value):
        self.weight.assign(np.asarray(self.transform(value)).astype(self.weight.dtype))


_LEGACY_CLASSES = {}


def legacy_class(cls):
    """``cls`` extended by :class:`LegacyOptions` (one class per ``cls``,
    named as ``cls``)."""
    if issubclass(cls, LegacyOptions):
        return cls
    if cls not in _LEGACY_CLASSES:
        _LEGACY_CLASSES[cls] = type(cls.__name__, (LegacyOptions, cls),
                                    {"__doc__": cls.__doc__, "__module__": cls.__module__})
    return _LEGACY_CLASSES[cls]


# -- 0.11.5's attention-mask mixins and extend_with_* ----------------------------------------

class LM_Mask:
    """Mixin: a causal (left-to-right language model) attention mask, i.e.
    ``application='lm'`` (``class MyLM(LM_Mask, BERT)`` as in 0.11.5)."""

    def __init__(self, *args, **kwargs):
        kwargs["application"] = "lm"
        super().__init__(*args, **kwargs)


class UniLM_Mask:
    """Mixin: the UniLM seq2seq mask (Dong et al. 2019, arXiv:1905.03197):
    segment-0 tokens see segment 0, segment-1 tokens also see the earlier
    segment-1 tokens; i.e. ``application='unilm'``."""

    def __init__(self, *args, **kwargs):
        kwargs["application"] = "unilm"
        super().__init__(*args, **kwargs)


def _with_head(self):
    for head in ("with_mlm", "with_lm"):
        if hasattr(self, head):
            setattr(self, head, getattr(self, head) or True)
            return


def extend_with_language_model(BaseModel):
    """``BaseModel`` with :class:`LM_Mask` and its LM head switched on
    (``with_mlm`` / ``with_lm`` at least True), as 0.11.5."""

    class LanguageModel(LM_Mask, BaseModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _with_head(self)

    LanguageModel.__name__ = LanguageModel.__qualname__ = BaseModel.__name__
    return LanguageModel


def extend_with_unified_language_model(BaseModel):
    """``BaseModel`` with :class:`UniLM_Mask` and its LM head switched on, as 0.11.5."""

    class UnifiedLanguageModel(UniLM_Mask, BaseModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _with_head(self)

    UnifiedLanguageModel.__name__ = UnifiedLanguageModel.__qualname__ = BaseModel.__name__
    return UnifiedLanguageModel


# -- data parallelism ------------------------------------------------------------------------

def _gpus():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return ["cuda:%d" % i for i in range(torch.cuda.device_count())]
    return []


def data_parallel(model, devices=None, parts=None):
    """0.11.5's multi-GPU wrapper: ``model`` itself when there is at most one
    device (data parallelism over one device is the model).

    Keras 3 cannot split an already built model over devices. For several
    GPUs build the model inside ``tf.distribute.MirroredStrategy().scope()``
    (TensorFlow backend) or after
    ``keras.distribution.set_distribution(keras.distribution.DataParallel())``
    (JAX backend); ``model.fit`` then splits each batch evenly.

    Args:
        model: a ``keras.Model``.
        devices: device names, their number, or None for every GPU.
        parts: per-device batch shares (0.11.5); only equal shares exist now.

    Returns:
        ``model``.

    Raises:
        NotImplementedError: more than one device, or unequal ``parts``
            (the message says what to use instead).
    """
    if devices is None:
        devices = _gpus()
    count = devices if isinstance(devices, int) else len(devices)
    if parts is not None and (not isinstance(parts, int) and len(set(parts)) > 1):
        raise NotImplementedError(
            "data_parallel(parts=%r): unequal batch shares are not available in Keras 3; "
            "use tf.distribute.MirroredStrategy or keras.distribution.DataParallel, which "
            "split each batch evenly" % (parts,))
    if count <= 1:
        return model
    raise NotImplementedError(
        "data_parallel over %d devices: Keras 3 cannot split a built model. Build it inside "
        "`with tf.distribute.MirroredStrategy().scope():` (TensorFlow backend) or after "
        "`keras.distribution.set_distribution(keras.distribution.DataParallel())` (JAX "
        "backend), then call model.fit as usual." % count)
