"""How a model family's weights meet checkpoint files.

:class:`CheckpointWeights` is the half of :class:`~bert4keras.models.base.Transformer`
that is not the graph: the name map is data, ``{keras layer name: [(google
name, hf name), ...]}`` in the order of the layer's ``weights``, each name in
the checkpoint-name language of :mod:`bert4keras.checkpoints` (``:T``
transposed, ``|`` alternatives, ``[k/n]`` a chunk); ``{i}`` is the block index
in the per-block map. Reading and writing the files and matching names happen
in :mod:`bert4keras.checkpoints`; this class only hands it the mapping.

Each family may also declare a ``signature``: checkpoint names that must be
present (and names that must be absent) in its checkpoints, so that a
checkpoint of another family is named in the error instead of only its first
missing variable.
"""

import gc
import math

import keras

from bert4keras import allocator, checkpoints
from bert4keras.checkpoints import (
    FORMATS,
    CheckpointError,
    open_checkpoint,
    write_tf_checkpoint,
)
from bert4keras.loading import BLOCK_BYTES
from bert4keras.models import config as _config

__all__ = ["CheckpointWeights", "DeferredInitializer"]


class DeferredInitializer(keras.initializers.Initializer):
    """A marker value now; ``real`` (a seeded random initializer) once it is
    known that a checkpoint did not set the weight.

    ``build_transformer_model(config, checkpoint)`` builds with these so the
    random draws of weights that are overwritten at once are never made: they
    cost time, and memory -- Keras' truncated normal on torch holds four
    candidates per value (a 147 MiB GPT-2 embedding drew 1.3 GB), and the
    freed temporaries of hundreds of draws stay in the allocator's heap. The
    real initializer was constructed (and drew its seed) when the model was
    built, so a weight drawn later gets the values it would have had.

    Each call fills its weight with one constant, ``-2**100 * (1 + k /
    2**20)`` for the ``k``-th call, which no checkpoint stores:
    :meth:`CheckpointWeights._draw_deferred` finds the weights still holding
    it and draws them with ``registry[k]``. Non-float32/64 weights are drawn
    at once.
    """

    def __init__(self, real, registry):
        self.real, self.registry = real, registry

    def __call__(self, shape, dtype=None):
        dtype = keras.backend.standardize_dtype(dtype or keras.backend.floatx())
        if dtype not in ("float32", "float64") or len(self.registry) >= 1 << 20:
            return self.real(shape, dtype=dtype)
        self.registry.append(self.real)
        return keras.ops.full(shape, marker(len(self.registry) - 1), dtype=dtype)

    def get_config(self):
        config = self.real.get_config()  # (never written to a file: see _draw_deferred)
        return {"real_class": type(self.real), "real_config": config,
                "registry": self.registry, "seed": config.get("seed")}

    @classmethod
    def from_config(cls, config):
        """A deferred copy: an unseeded real initializer draws a new seed."""
        return cls(config["real_class"].from_config(config["real_config"]), config["registry"])


def _nbytes(weight):
    """Bytes of a model weight (a Keras variable, or a stand-in wrapping one)
    as the float32 tensor a checkpoint stores for it."""
    return 4 * math.prod(getattr(weight, "weight", weight).shape)


def marker(k):
    """The constant of the ``k``-th deferred weight (exact in float32)."""
    return -(2.0 ** 100) * (1 + k / 2.0 ** 20)


def marker_index(value):
    """``k`` if ``value`` is :func:`marker` ``(k)``, else None."""
    value = float(value)
    if not value <= -(2.0 ** 100):
        return None
    k = round((-value / 2.0 ** 100 - 1) * 2.0 ** 20)
    return k if marker(k) == value else None


class CheckpointWeights:
    """Checkpoint name maps and the weight I/O built on them.

    A mixin of :class:`~bert4keras.models.base.Transformer`: it reads
    ``self.layers`` (``{name: keras layer}``), ``self.num_hidden_layers``
    and ``self.keep_tokens`` of the built model.
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
    #: ``{config key: constructor argument}``, merged with the bases' maps
    #: (see :mod:`bert4keras.models.config`); read by :meth:`translate_config`
    #: and, backwards, written to a Hugging Face ``config.json``.
    config_keys = _config.GOOGLE_CONFIG_KEYS
    #: ``transformers``' ``model_type`` of this family; None: no such class.
    hf_model_type = None
    #: ``{heads: transformers class}`` (see :func:`bert4keras.models.config.hf_architecture`).
    hf_architectures = {}

    @classmethod
    def translate_config(cls, config):
        """A config dict (Google ``bert_config.json`` or Hugging Face
        ``config.json``) with its keys renamed to constructor arguments by the
        merged ``config_keys``; families override it to convert values too."""
        return _config.rename_config_keys(config, _config.merged_config_keys(cls))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("signature"):
            checkpoints.register_family(cls.signature, cls.hf_prefixes)

    def variable_mapping(self, fmt="google"):
        """``{layer name: [stored name, ...]}`` for one checkpoint format.

        One entry per weight of the layer, in the order of its ``weights``,
        in the checkpoint-name language of :mod:`bert4keras.checkpoints`
        (``:T``, ``|``, ``[k/n]``). Only layers present in the built model are
        listed.

        Raises:
            CheckpointError: the family has no name in ``fmt`` for a layer.
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
            if any(pair[column] is None for pair in pairs):
                raise CheckpointError("%s has no %s-format name for %s"
                                      % (type(self).__name__, fmt, layer))
            mapping[layer] = [pair[column] for pair in pairs]
        return mapping

    def _weight_mapping(self, mapping):
        """``{layer: [(weight, spec)]}`` from ``{layer: [spec]}``.

        Raises:
            CheckpointError: a layer is unknown or has another number of weights.
        """
        pairs = {}
        for layer_name, specs in mapping.items():
            if layer_name not in self.layers:
                raise CheckpointError("The mapping names layer %r, which the model does not have"
                                      % layer_name)
            weights = self.layers[layer_name].weights
            if len(weights) != len(specs):
                raise CheckpointError("Layer %s has %d weights but the mapping lists %d"
                                      % (layer_name, len(weights), len(specs)))
            pairs[layer_name] = list(zip(weights, specs))
        return pairs

    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        """Load weights from a Google TF checkpoint or a Hugging Face directory.

        Args:
            checkpoint: a TF checkpoint prefix or directory, or a directory of
                ``*.safetensors`` (see :func:`bert4keras.checkpoints.open_checkpoint`).
            mapping: ``{layer name: [stored name, ...]}`` to load instead of
                :meth:`variable_mapping` of the checkpoint's format.

        Raises:
            CheckpointError: naming the checkpoint and the first variable that
                is missing, or both names and both shapes on a shape mismatch.
        """
        loaded = set()
        pairs = {}
        try:
            reader = open_checkpoint(checkpoint)
            if mapping is None:
                mapping = self.variable_mapping(reader.format)
            vocab_axes = {name: self.vocab_axes.get(name, 0) for name in self.vocab_layers}
            pairs = self._weight_mapping(mapping)
            checkpoints.load(reader, pairs, prefixes=self.hf_prefixes,
                             keep_tokens=self.keep_tokens, vocab_axes=vocab_axes,
                             signature=self.signature)
            loaded = {id(getattr(weight, "weight", weight))  # compat's stand-ins wrap one
                      for items in pairs.values() for weight, _ in items}
        finally:
            self._draw_deferred(loaded)
            # a reference cycle (JAX backend) held the largest stored tensor until
            # the next automatic collection: 147 MiB for GPT-2 small's embedding.
            # A full collection costs 0.3-0.5 s in a process with many objects, so
            # only when a tensor that size can be held (small models: no collection)
            if any(_nbytes(weight) > BLOCK_BYTES for items in pairs.values()
                   for weight, _ in items):
                gc.collect()
                allocator.release_free_memory()  # the file's tensors, now garbage

    def _draw_deferred(self, loaded):
        """Draw every weight that still holds a :class:`DeferredInitializer`
        marker and is not in ``loaded`` (ids of the weights a checkpoint set)
        with its real initializer, and put the real initializers back on the
        layers (their configs and any later use see the plain initializer)."""
        registry = self.__dict__.get("_defer_init")
        if registry is None:
            return
        self._defer_init = None
        import numpy as np

        for variable in self.model.variables if self.model is not None else ():
            if id(variable) in loaded or not np.prod(variable.shape, dtype=int):
                continue
            value = keras.ops.convert_to_numpy(variable)
            k = marker_index(value.reshape(-1)[0])
            if k is not None and k < len(registry) and (value == value.reshape(-1)[0]).all():
                variable.assign(registry[k](variable.shape, dtype=variable.dtype))
        for layer in self.layers.values():
            for sub in getattr(layer, "_flatten_layers", lambda layer=layer: [layer])():
                for name, value in list(vars(sub).items()):
                    if isinstance(value, DeferredInitializer):
                        object.__setattr__(sub, name, value.real)

    @classmethod
    def matches_checkpoint(cls, reader):
        """True if ``reader`` has every ``present`` and no ``absent`` name of
        this family's ``signature`` (None when the family declares none)."""
        return checkpoints.matches_signature(reader, cls.signature, cls.hf_prefixes)

    def checkpoint_tensors(self, fmt="google"):
        """``{stored name: np.ndarray}`` of the model's weights in a format's names."""
        return checkpoints.collect(self._weight_mapping(self.variable_mapping(fmt)))

    def save_weights_as_checkpoint(self, filename, mapping=None, dtype=None, format="google"):
        """Write the weights in the original format or as a Hugging Face directory.

        Args:
            filename: ``format='google'``: a TF checkpoint prefix
                (``out/bert_model.ckpt``, see
                :func:`~bert4keras.checkpoints.write_tf_checkpoint`);
                ``format='huggingface'``: a directory, which gets
                ``model.safetensors`` and ``config.json`` that
                ``transformers``' ``from_pretrained`` loads (see
                :func:`~bert4keras.models.config.huggingface_export`; the
                ``architectures`` class follows the heads, e.g.
                ``BertForPreTraining`` for ``with_mlm`` + ``with_nsp``).
            mapping: ``{layer name: [stored name, ...]}`` to write instead of
                the family's name map for ``format`` (as for
                :meth:`load_weights_from_checkpoint`).
            dtype: cast every tensor to this dtype (e.g. ``'float16'``).
            format: ``'google'`` (default) or ``'huggingface'`` (``'hf'``).

        With ``keep_tokens`` the written vocabulary is the kept one (and
        ``config.json`` says so), so the files pair with the simplified
        ``vocab.txt``. Families without a ``transformers`` class (NEZHA,
        GPT2-ML, RoFormer-V2, the T5 decoder alone) raise for
        ``'huggingface'``; ALBERT_Unshared writes its last block's weights
        under the shared names.

        Raises:
            ValueError: an unknown ``format``, or a model ``transformers``
                cannot express (the family is named).
            CheckpointError: a layer has no name in the format.
        """
        if format not in ("google", "huggingface", "hf"):
            raise ValueError("format must be 'google' or 'huggingface', got %r" % (format,))
        fmt = "google" if format == "google" else "hf"
        config = None
        if mapping is not None:
            tensors = checkpoints.collect(self._weight_mapping(mapping))
            if fmt == "hf":
                config = _config.huggingface_config(self)
        elif fmt == "hf":
            config, tensors = _config.huggingface_export(self)
        else:
            tensors = self.checkpoint_tensors("google")
        if dtype is not None:
            tensors = {name: value.astype(dtype) for name, value in tensors.items()}
        if fmt == "google":
            write_tf_checkpoint(filename, tensors)
        else:
            checkpoints.write_hf_directory(filename, tensors, config)
