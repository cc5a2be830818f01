"""The :class:`Transformer` base class: the graph of a model family.

A family is a small subclass that says which layers exist
(``apply_embeddings``, ``apply_main_layers``, ``apply_final_layers``); how
their weights are named in each checkpoint format is data on the class, read
by :mod:`bert4keras.models.weights`.

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

from bert4keras.layers import AttentionMask, Dropout
from bert4keras.models.legacy_methods import LegacyMethods
from bert4keras.models.weights import CheckpointWeights, DeferredInitializer
from bert4keras.models.recompute import TransformerModel, recompute_block, recompute_from_env
from bert4keras.models.validation import ValidatedModel, input_limits


class Transformer(CheckpointWeights, LegacyMethods):
    """Base class: builds a functional ``keras.Model``; weights on disk come
    through :class:`~bert4keras.models.weights.CheckpointWeights`.

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

        While a checkpoint is about to be loaded (``build_transformer_model``
        with a ``checkpoint_path``) the instance is wrapped in a
        :class:`~bert4keras.models.weights.DeferredInitializer`: the weights
        start as a marker constant and only those the checkpoint leaves unset are drawn,
        after loading, with the same seeds (see
        :meth:`~bert4keras.models.weights.CheckpointWeights.load_weights_from_checkpoint`).
        """
        real = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        registry = self.__dict__.get("_defer_init")
        return real if registry is None else DeferredInitializer(real, registry)

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
        when ``self.recompute``; either way a
        :class:`~bert4keras.models.validation.ValidatedModel`, which checks
        host (NumPy) inputs against the vocabulary sizes and ``max_position``
        before they reach a compiled function (see that module for where)."""
        cls = TransformerModel if self.recompute else ValidatedModel
        return cls(inputs, outputs, name=name, input_limits=input_limits(self, inputs))

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
            if self.call_hook is None:  # the model's own pass, not a decoding step
                self.attention_bias = bias  # 0.11.5's attribute; see apply_main_layers
                self._bias_inputs = _identity(inputs)
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
        return self.apply(x, Dropout, rate=rate, name=name)

    def apply_embeddings(self, inputs):
        raise NotImplementedError

    def apply_main_layers(self, x, index, attention_bias=None):
        """Block ``index`` on ``x`` ``(batch, seq_len, hidden)``, same shape out.

        ``attention_bias`` ``(batch, 1, q_len|1, k_len)`` defaults to
        ``self.attention_bias``, the bias of the model's own inputs stored
        when it was built, so ``bert.apply_main_layers(x, i)`` works as in
        0.11.5 (e.g. BERT-of-Theseus) on tensors computed from
        ``bert.model.inputs``.  Families override this method.
        """
        raise NotImplementedError

    def remember_embedded_inputs(self, inputs):
        """Called by ``apply_embeddings``: the inputs whose attention bias
        :meth:`resolve_attention_bias` gives by default (not while hooked)."""
        if self.call_hook is None:
            self._embedded_inputs = inputs

    def resolve_attention_bias(self, attention_bias):
        """``attention_bias``, or, if None, the bias of the inputs last given
        to ``apply_embeddings`` (those of the model itself once built:
        ``self.attention_bias``, stored by :meth:`apply_layers`).

        Raises:
            ValueError: None given and the model was never built.
        """
        if attention_bias is not None:
            return attention_bias
        inputs = self.__dict__.get("_embedded_inputs")
        if inputs is not None and _identity(inputs) != self.__dict__.get("_bias_inputs"):
            # apply_embeddings ran on other inputs (BERT-of-Theseus feeds one
            # model's inputs to another): the bias of those inputs
            self.attention_bias = self.compute_attention_bias(inputs)
            self._bias_inputs = _identity(inputs)
        stored = getattr(self, "attention_bias", None)
        if stored is None:
            raise ValueError(
                "%s.apply_main_layers(x, index) without attention_bias uses the bias "
                "stored when the model is built; build it first (build_transformer_model) "
                "or pass attention_bias" % type(self).__name__)
        return stored

    def apply_final_layers(self, x):
        return x


def _identity(inputs):
    """Identity key of a tensor or a list of tensors."""
    return tuple(map(id, inputs)) if isinstance(inputs, (list, tuple)) else (id(inputs),)


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
