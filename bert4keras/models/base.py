"""The :class:`Transformer` base class: the graph of a model family.

A family is a small subclass that says which layers exist
(``apply_embeddings``, ``apply_main_layers``, ``apply_final_layers``) and how
their weights are named in each checkpoint format. The name map is data:
``{keras layer name: [(google name, hf name), ...]}`` in the order of the
layer's ``weights``, each name in the checkpoint-name language of
:mod:`bert4keras.checkpoints` (``:T`` transposed, ``|`` alternatives,
``[k/n]`` a chunk); ``{i}`` is the block index in the per-block map. Reading
and writing the files, and matching names, happen in
:mod:`bert4keras.checkpoints`; this class only hands it the mapping.

Each family may also declare a ``signature``: checkpoint names that must be
present (and names that must be absent) in its checkpoints, so that a
checkpoint of another family is named in the error instead of only its first
missing variable.

Recompute (``recompute=True`` or ``RECOMPUTE=1``) wraps each block in one
layer run under ``keras.remat``: see :mod:`bert4keras.models.recompute`.

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

import contextlib

import keras
import numpy as np

from bert4keras import checkpoints
from bert4keras.checkpoints import (
    FORMATS,
    CheckpointError,
    open_checkpoint,
    write_tf_checkpoint,
)
from bert4keras.layers import AttentionMask
from bert4keras.models import config as _config
from bert4keras.models.legacy_methods import LegacyMethods
from bert4keras.models.recompute import TransformerModel, recompute_block, recompute_from_env


class Transformer(LegacyMethods):
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
    #: of :meth:`apply` while set (see :meth:`hooked`): a cached decoder runs
    #: this model's own graph code on real tensors, with key/value caches.
    call_hook = None
    #: an encoder-decoder: :meth:`encode` gives the context that
    #: :meth:`apply_decoder` attends to
    is_encoder_decoder = False
    #: the token that opens a decoder's output, if the model has one
    decoder_start_id = None
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

        Without recompute this is just ``fn(*args)``; with ``self.recompute``
        the block's layers run inside one
        :class:`~bert4keras.models.recompute.RecomputeBlock` called ``name``
        (see :func:`~bert4keras.models.recompute.recompute_block`).
        """
        if not self.recompute or self.call_hook is not None or self._recorder is not None:
            return fn(*args)
        return recompute_block(self, name, fn, args)

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
        self.model = self.keras_model(inputs, self.apply_layers(inputs), name=self.name)
        return self.model

    def apply_layers(self, inputs, select=None):
        """One pass of the whole model: embeddings, attention bias, every
        block, final layers -- on placeholders (:meth:`build`) or, under
        :meth:`hooked`, on real tensors (a cached decoding step).

        Args:
            inputs: as :meth:`get_inputs` (token ids, and segment ids if used).
            select: optional ``fn(x) -> x`` applied to the last block's output
                ``(batch, seq_len, hidden)`` before the final layers (a
                decoder keeps only the positions it reads).
        """
        self._pass_tensors = {}  # what shared_by_blocks keeps for this pass only
        try:
            x = self.apply_embeddings(inputs)
            bias = self.compute_attention_bias(inputs)
            for index in range(self.num_hidden_layers):
                x = self.apply_block(self.block_name(index), self.apply_main_layers, x, index,
                                     bias)
            if select is not None:
                x = select(x)
            return self.apply_final_layers(x)
        finally:
            self._pass_tensors = {}

    def shared_by_blocks(self, name, fn):
        """``fn()`` once per pass of :meth:`apply_layers`, the same tensor for
        every block of that pass (e.g. one position table all attention
        layers read); ``name`` keys it."""
        tensors = self.__dict__.setdefault("_pass_tensors", {})
        if name not in tensors:
            tensors[name] = fn()
        return tensors[name]

    def encode(self, inputs):
        """The context an encoder-decoder's decoder attends to, ``(batch,
        enc_len, hidden)``, from the encoder's inputs (real tensors).

        Raises:
            TypeError: the model is not an encoder-decoder.
        """
        raise TypeError("%s is not an encoder-decoder model: it has no encode()"
                        % type(self).__name__)

    def apply_decoder(self, inputs, context=None, select=None):
        """The layers that score the next token: :meth:`apply_layers` of a
        decoder-only model; an encoder-decoder's decoder over ``context``
        (overridden there). ``inputs``: ``[token_ids(, segment_ids)]``;
        ``select`` as :meth:`apply_layers`."""
        if context is not None:
            raise TypeError("%s is not an encoder-decoder model: it takes no context"
                            % type(self).__name__)
        return self.apply_layers(inputs, select=select)

    @contextlib.contextmanager
    def hooked(self, hook):
        """While inside, every layer call of :meth:`apply` (of this model and
        of the stacks it is made of) is ``hook(layer, inputs, arguments)``."""
        self.call_hook = hook
        try:
            yield self
        finally:
            del self.call_hook

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
        reader = open_checkpoint(checkpoint)
        if mapping is None:
            mapping = self.variable_mapping(reader.format)
        vocab_axes = {name: self.vocab_axes.get(name, 0) for name in self.vocab_layers}
        checkpoints.load(reader, self._weight_mapping(mapping), prefixes=self.hf_prefixes,
                         keep_tokens=self.keep_tokens, vocab_axes=vocab_axes,
                         signature=self.signature)

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
