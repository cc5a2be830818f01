"""T5 (Raffel et al. 2020) and its versions: T5 1.0, T5.1.1 and mT5 (Xue et al. 2021).

All versions: pre-norm blocks with RMS norm (no mean, no beta, epsilon
1e-6), no biases, unscaled attention, a learned relative position bias
(``Encoder-``/``Decoder-Embedding-Relative-Position``: 32 buckets,
bidirectional in the encoder, causal in the decoder, shared by all blocks
of a stack; cross-attention has none) and one token table
(``Embedding-Token``) shared by encoder and decoder. They differ in:

=================  ===========================  ================================
version            feed-forward                 LM head
=================  ===========================  ================================
``t5.1.0``         ``relu(x W_i) W_o``          tied to ``Embedding-Token``,
                                                input scaled by ``d_model**-0.5``
``t5.1.1``         ``(gelu(x W_i0) * x W_i1) W_o``  its own ``Decoder-Output-LM``
``mt5.1.1``        as t5.1.1                    as t5.1.1
=================  ===========================  ================================

(GELU is the tanh approximation, as mesh-tensorflow and ``transformers``
use it; a config may say otherwise.) The version is chosen by the
``model=`` key, never by a config's ``tie_word_embeddings``: transformers 5
forces that flag to True and ties ``lm_head`` to ``shared`` for every
T5/mT5, so its directories of 1.1 models lack ``lm_head.weight``; the 1.1
head is then read from ``shared.weight`` (what transformers 5 computes),
while directories written by earlier versions (the Hub's) carry their own
``lm_head.weight``. mT5 has T5.1.1's layout; its mesh-TF
checkpoints name the norms ``rms_norm/scale`` where T5's say
``layer_norm/scale`` and ``final_layer_norm/scale`` -- both spellings are
read for every version, the version's own is written.

``model=`` keys: ``t5``/``t5.1.0``, ``t5.1.1``, ``mt5.1.1``, each also with
``_encoder`` and ``_decoder``:

* encoder: input ``Encoder-Input-Token`` ``(batch, enc_len)`` (id 0 is
  padding), output ``(batch, enc_len, hidden)`` with padding rows zeroed
  (``Encoder-Output-Masked``).
* decoder: inputs ``Input-Context`` ``(batch, enc_len, hidden)`` (an encoder
  output: its all-zero rows are not attended to) and ``Decoder-Input-Token``
  ``(batch, dec_len)`` (starting with the decoder start id 0; right-padded),
  output ``(batch, dec_len, vocab)`` probabilities (``with_lm=True``),
  another activation (``with_lm='linear'``: logits) or the final hidden
  states (``with_lm=False``).
* the full model: inputs ``[Encoder-Input-Token, Decoder-Input-Token]``,
  the decoder's output. With ``return_keras_model=False`` the returned
  :class:`T5` object has ``.encoder`` and ``.decoder`` Keras models sharing
  its layers (for step-by-step decoding), as in the original toolkit.

Checkpoints: mesh-TF (``shared/embedding``,
``encoder/block_000/layer_000/SelfAttention/q``, ...,
``decoder/logits/kernel`` for 1.1) and Hugging Face ``T5ForConditionalGeneration``
/ ``MT5ForConditionalGeneration`` / ``T5EncoderModel`` directories.
"""

import contextlib

import keras

from bert4keras.layers import (
    AttentionMask,
    CausalMask,
    ContextMask,
    Dense,
    Embedding,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    RelativePositionEmbeddingT5,
    SequenceMasking,
)
from bert4keras.models import config as config_module
from bert4keras.models.base import Transformer

VERSIONS = ("t5.1.0", "t5.1.1", "mt5.1.1")


def _norm_name(stack, where, version):
    """Both spellings of a norm scale, the version's own first."""
    if where == "final":
        names = ["%s/final_layer_norm/scale" % stack, "%s/rms_norm/scale" % stack]
    else:
        names = ["%s/%s/layer_norm/scale" % (stack, where), "%s/%s/rms_norm/scale" % (stack, where)]
    if version == "mt5.1.1":
        names.reverse()
    return "|".join(names)


def _feed_forward_names(stack, layer, gated):
    google = "%s/block_{i:03d}/layer_%03d/DenseReluDense/" % (stack, layer)
    hf = "%s.block.{i}.layer.%d.DenseReluDense." % (stack, layer)
    inputs = ["wi_0", "wi_1"] if gated else ["wi"]
    return [(google + w + "/kernel", hf + w + ".weight:T") for w in inputs + ["wo"]]


def _attention_names(stack, layer, kind):
    google = "%s/block_{i:03d}/layer_%03d/%s/" % (stack, layer, kind)
    hf = "%s.block.{i}.layer.%d.%s." % (stack, layer, kind)
    return [(google + w, hf + w + ".weight:T") for w in "qkvo"]


def t5_name_maps(stack, version, gated):
    """``(name_map, block_name_map)`` of the encoder or decoder stack.

    Args:
        stack: ``'encoder'`` or ``'decoder'``.
        version: one of :data:`VERSIONS` (chooses the norm spelling written).
        gated: two input projections in the feed-forward (``wi_0``, ``wi_1``).
    """
    prefix = stack.capitalize() + "-"
    block = prefix + "Transformer-{i}-"
    name_map = {
        "Embedding-Token": [("shared/embedding", "shared.weight|encoder.embed_tokens.weight"
                             "|decoder.embed_tokens.weight")],
        prefix + "Embedding-Relative-Position": [
            ("%s/block_000/layer_000/SelfAttention/relative_attention_bias:T" % stack,
             "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight" % stack)],
        prefix + "Output-Norm": [(_norm_name(stack, "final", version),
                                  "%s.final_layer_norm.weight" % stack)],
    }
    layers = [("MultiHeadSelfAttention", "SelfAttention")]
    if stack == "decoder":
        layers.append(("MultiHeadCrossAttention", "EncDecAttention"))
        # transformers 5 saves 1.1/mT5 with lm_head tied to shared (no lm_head.weight)
        name_map["Decoder-Output-LM"] = [("decoder/logits/kernel",
                                          "lm_head.weight|shared.weight:T")]
    block_map = {}
    for index, (ours, theirs) in enumerate(layers):
        block_map[block + ours] = _attention_names(stack, index, theirs)
        block_map[block + ours + "-Norm"] = [(
            _norm_name(stack, "block_{i:03d}/layer_%03d" % index, version),
            "%s.block.{i}.layer.%d.layer_norm.weight" % (stack, index))]
    index = len(layers)
    block_map[block + "FeedForward"] = _feed_forward_names(stack, index, gated)
    block_map[block + "FeedForward-Norm"] = [(
        _norm_name(stack, "block_{i:03d}/layer_%03d" % index, version),
        "%s.block.{i}.layer.%d.layer_norm.weight" % (stack, index))]
    return name_map, block_map


class T5_Base(Transformer):
    """What the T5 stacks share: arguments, names, the pre-norm sub-layers.

    Args (besides :class:`~bert4keras.models.base.Transformer`'s):
        hidden_act: ``'relu'`` (T5 1.0 default) or a list for the gated
            feed-forward (1.1 default ``['gelu_new', 'linear']``).
        relative_attention_num_buckets, relative_attention_max_distance:
            the relative position buckets (32, 128).
        num_decoder_layers: decoder depth if it differs from the encoder's.
        layer_norm_eps: 1e-6.
    """

    #: set by the ``model=`` key (see :data:`MODELS`)
    version = "t5.1.0"
    hf_prefixes = ()
    vocab_layers = ("Embedding-Token", "Decoder-Output-LM")
    vocab_axes = {"Decoder-Output-LM": 1}

    def __init__(self, hidden_act=None, relative_attention_num_buckets=32,
                 relative_attention_max_distance=128, num_decoder_layers=None,
                 layer_norm_eps=1e-6, segment_vocab_size=0,
                 application="encoder", **kwargs):
        if application != "encoder":
            raise ValueError("%s is an encoder-decoder model; application=%r does not apply "
                             "(its decoder is causal already)" % (self.version, application))
        if hidden_act is None:
            hidden_act = "relu" if self.version == "t5.1.0" else ["gelu_new", "linear"]
        super().__init__(hidden_act=hidden_act, layer_norm_eps=layer_norm_eps,
                         segment_vocab_size=0, **kwargs)
        if self.embedding_size != self.hidden_size:
            raise ValueError("T5 has no embedding projection: embedding_size must equal "
                             "hidden_size (%d), got %d" % (self.hidden_size, self.embedding_size))
        self.relative_attention_num_buckets = int(relative_attention_num_buckets)
        self.relative_attention_max_distance = int(relative_attention_max_distance)
        # The version decides, not a config's tie_word_embeddings: transformers 5
        # writes True for every T5/mT5 (it always ties lm_head to shared).
        self.tie_word_embeddings = self.version == "t5.1.0"
        self.num_decoder_layers = int(num_decoder_layers or self.num_hidden_layers)
        self.gated = isinstance(hidden_act, (list, tuple)) and len(hidden_act) > 1
        self._init_kwargs = dict(  # for the stacks of the full model
            {k: v for k, v in kwargs.items() if k != "name"}, hidden_act=hidden_act,
            relative_attention_num_buckets=relative_attention_num_buckets,
            relative_attention_max_distance=relative_attention_max_distance,
            num_decoder_layers=num_decoder_layers,
            layer_norm_eps=layer_norm_eps)

    #: Hugging Face ``T5Config``/``MT5Config`` keys (besides BERT's, which
    #: configs in the original toolkit's style use).
    config_keys = {
        "d_model": "hidden_size",
        "d_ff": "intermediate_size",
        "d_kv": "attention_head_size",
        "num_heads": "num_attention_heads",
        "num_layers": "num_hidden_layers",
        "num_decoder_layers": "num_decoder_layers",
        "layer_norm_epsilon": "layer_norm_eps",
        "dropout_rate": "dropout_rate",
        "relative_attention_num_buckets": "relative_attention_num_buckets",
        "relative_attention_max_distance": "relative_attention_max_distance",
    }
    #: ``transformers`` class per head (``MT5`` instead of ``T5`` for mT5).
    hf_classes = {}

    @property
    def hf_model_type(self):
        return "mt5" if self.version == "mt5.1.1" else "t5"

    @property
    def hf_architectures(self):
        prefix = "MT5" if self.version == "mt5.1.1" else "T5"
        return {heads: prefix + name for heads, name in self.hf_classes.items()}

    @classmethod
    def translate_config(cls, config):
        """Accept a Hugging Face ``T5Config``/``MT5Config`` ``config.json`` too:
        the renames of ``config_keys``, then ``feed_forward_proj`` becomes
        ``hidden_act`` (``'gated-gelu'`` -> ``['gelu_new', 'linear']``: for
        it transformers, like mesh-TF, uses the tanh GELU)."""
        config = super().translate_config(config)
        proj = config.pop("feed_forward_proj", None)
        if proj is not None and "hidden_act" not in config:
            if proj.startswith("gated-"):
                act = proj[len("gated-"):]
                config["hidden_act"] = ["gelu_new" if act == "gelu" else act, "linear"]
            else:
                config["hidden_act"] = proj
        return config

    def export_config(self, config):
        """The reverse of :meth:`translate_config` for a ``config.json``:
        ``hidden_act`` becomes ``feed_forward_proj`` (a gated erf GELU is
        ``'gated-gelu_python'``, since transformers reads ``'gated-gelu'`` as
        the tanh one) and ``tie_word_embeddings`` says whether the LM head
        is the scaled embedding (T5 1.0) or its own ``lm_head`` (1.1, mT5;
        transformers 5 keeps an ``lm_head.weight`` that differs from
        ``shared.weight`` untied). BERT-style keys T5 lacks are dropped.

        Raises:
            ValueError: a gated ``hidden_act`` whose second entry is not
                ``'linear'``.
        """
        acts = list(self.hidden_act) if isinstance(self.hidden_act, (list, tuple)) else [
            self.hidden_act]
        if len(acts) > 2 or (len(acts) == 2 and str(acts[1]).lower() != "linear"):
            raise ValueError("%s: hidden_act=%r has no transformers feed_forward_proj (gated "
                             "means [act, 'linear'])" % (type(self).__name__, self.hidden_act))
        act = config_module.hf_activation_name(self, acts[0])
        if self.gated:
            act = {"gelu_new": "gelu", "gelu": "gelu_python"}.get(act, act)
            config["feed_forward_proj"] = "gated-" + act
        else:
            config["feed_forward_proj"] = act
        config["tie_word_embeddings"] = self.tie_word_embeddings
        for key in ("hidden_act", "attention_probs_dropout_prob", "max_position_embeddings",
                    "type_vocab_size", "initializer_range"):
            config.pop(key, None)
        return config

    # -- shared pieces ----------------------------------------------------------
    def norm(self, x, name):
        return self.apply(x, LayerNormalization, zero_mean=False, center=False,
                          epsilon=self.layer_norm_eps, name=name)

    def token_embedding(self, ids, prefix):
        x = self.apply(ids, Embedding, input_dim=self.vocab_size, output_dim=self.hidden_size,
                       mask_zero=True, embeddings_initializer=self.initializer,
                       name="Embedding-Token")
        return self.dropout(x, prefix + "Embedding-Dropout")

    def relative_positions(self, x, name, bidirectional):
        return self.apply([x, x], RelativePositionEmbeddingT5,
                          input_dim=self.relative_attention_num_buckets,
                          output_dim=self.num_attention_heads,
                          max_distance=self.relative_attention_max_distance,
                          bidirectional=bidirectional, embeddings_initializer=self.initializer,
                          name=name)

    def attention(self, x, inputs, name, p_bias=None):
        """``x + Dropout(Attention(RMSNorm(x), ...))`` for the layer called ``name``."""
        y = self.norm(x, name + "-Norm")
        q, kv = y, (y if inputs[0] is None else inputs[0])
        y = self.apply([q, kv, kv] + list(inputs[1:]), MultiHeadAttention,
                       heads=self.num_attention_heads, head_size=self.attention_head_size,
                       out_dim=self.hidden_size, key_size=self.attention_key_size,
                       use_bias=False, attention_scale=False, p_bias=p_bias, mask_keys=False,
                       attention_dropout=self.attention_dropout_rate,
                       kernel_initializer=self.initializer, name=name)
        y = self.dropout(y, name + "-Dropout")
        return self.apply([x, y], keras.layers.Add, name=name + "-Add")

    def feed_forward(self, x, name):
        y = self.norm(x, name + "-Norm")
        y = self.apply(y, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
                       use_bias=False, kernel_initializer=self.initializer, name=name)
        y = self.dropout(y, name + "-Dropout")
        return self.apply([x, y], keras.layers.Add, name=name + "-Add")


class T5_Encoder(T5_Base):
    """The T5 encoder stack (see the module docstring)."""

    hf_classes = {"": "EncoderModel"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.name_map, self.block_name_map = t5_name_maps("encoder", self.version, self.gated)

    def build(self):
        ids = keras.Input(shape=(None,), dtype="int32", name="Encoder-Input-Token")
        self.model = self.keras_model(ids, self.encode(ids), name=self.name)
        return self.model

    def encoder_block(self, x, mask, position, name):
        """One encoder block ``name``: self-attention then feed-forward."""
        x = self.attention(x, [None, mask, position], name + "-MultiHeadSelfAttention",
                           p_bias="t5_relative")
        return self.feed_forward(x, name + "-FeedForward")

    def encode(self, ids):
        x = self.token_embedding(ids, "Encoder-")
        mask = self.apply(ids, AttentionMask, mode="padding", name="Encoder-Attention-Mask")
        position = self.relative_positions(x, "Encoder-Embedding-Relative-Position", True)
        for index in range(self.num_hidden_layers):
            name = "Encoder-Transformer-%d" % index
            x = self.apply_block(name, self.encoder_block, x, mask, position, name)
        x = self.norm(x, "Encoder-Output-Norm")
        x = self.dropout(x, "Encoder-Output-Dropout")
        return self.apply([x, ids], SequenceMasking, name="Encoder-Output-Masked")


class T5_Decoder(T5_Base):
    """The T5 decoder stack with its LM head (see the module docstring).

    Args:
        with_lm: ``True`` (softmax), an activation (``'linear'``: logits) or
            ``False`` (the final hidden states, before the tied head's
            ``d_model**-0.5`` scaling).

    ``transformers`` has no class for the decoder alone: save it with
    ``format='google'``.
    """

    def __init__(self, with_lm=True, **kwargs):
        super().__init__(**kwargs)
        self.with_lm = with_lm
        self.num_hidden_layers = self.num_decoder_layers
        self.name_map, self.block_name_map = t5_name_maps("decoder", self.version, self.gated)

    def build(self):
        context = keras.Input(shape=(None, self.hidden_size), name="Input-Context")
        ids = keras.Input(shape=(None,), dtype="int32", name="Decoder-Input-Token")
        self.model = self.keras_model([context, ids], self.decode(context, ids), name=self.name)
        return self.model

    def decoder_block(self, x, causal, position, context, context_mask, name):
        """One decoder block ``name``: self-, cross-attention, feed-forward."""
        x = self.attention(x, [None, causal, position], name + "-MultiHeadSelfAttention",
                           p_bias="t5_relative")
        x = self.attention(x, [context, context_mask], name + "-MultiHeadCrossAttention")
        return self.feed_forward(x, name + "-FeedForward")

    def decode(self, context, ids, select=None):
        """The decoder over ``context`` ``(batch, enc_len, hidden)`` and
        ``ids`` ``(batch, dec_len)``; ``select``: optional ``fn(x) -> x``
        applied to the last block's output before the final norm and head."""
        x = self.token_embedding(ids, "Decoder-")
        causal = self.apply(x, CausalMask, name="Attention-LM-Mask")
        position = self.relative_positions(x, "Decoder-Embedding-Relative-Position", False)
        context_mask = self.apply(context, ContextMask, name="Decoder-Context-Mask")
        for index in range(self.num_hidden_layers):
            name = "Decoder-Transformer-%d" % index
            x = self.apply_block(name, self.decoder_block, x, causal, position, context,
                                 context_mask, name)
        if select is not None:
            x = select(x)
        x = self.norm(x, "Decoder-Output-Norm")
        x = self.dropout(x, "Decoder-Output-Dropout")
        if not self.with_lm:
            return x
        activation = "softmax" if self.with_lm is True else self.with_lm
        if self.tie_word_embeddings:
            x = self.apply(x, keras.layers.Rescaling, scale=self.hidden_size ** -0.5,
                           name="Decoder-Output-Scale")
            x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
            return self.apply(x, keras.layers.Activation, activation=activation,
                              name="Decoder-Output-LM-Activation")
        return self.apply(x, Dense, units=self.vocab_size, activation=activation,
                          use_bias=False, kernel_initializer=self.initializer,
                          name="Decoder-Output-LM")


class T5(T5_Base):
    """T5 encoder-decoder: ``.model`` maps ``[Encoder-Input-Token,
    Decoder-Input-Token]`` to the decoder's output; ``.encoder`` and
    ``.decoder`` are the two stacks as Keras models sharing the same layers.

    Args: those of :class:`T5_Decoder` (``with_lm``) and :class:`T5_Base`.
    """

    hf_classes = {"": "Model", "lm": "ForConditionalGeneration"}

    def __init__(self, with_lm=True, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        shared = dict(self._init_kwargs)
        self._encoder = self.encoder_class(name="%s_Encoder" % name if name else "Encoder",
                                           **shared)
        self._decoder = self.decoder_class(with_lm=with_lm,
                                           name="%s_Decoder" % name if name else "Decoder",
                                           **shared)
        self._decoder.layers = self._encoder.layers = self.layers  # one set of layers
        self.with_lm = with_lm
        self.encoder = self.decoder = None

    is_encoder_decoder = True
    decoder_start_id = 0

    def encode(self, inputs):
        """The encoder output ``(batch, enc_len, hidden)`` of token ids
        ``(batch, enc_len)`` (the built ``.encoder`` model)."""
        return self.encoder(inputs[0] if isinstance(inputs, (list, tuple)) else inputs)

    def apply_decoder(self, inputs, context=None, select=None):
        """The decoder stack over ``context``; ``inputs`` ``[decoder ids]``."""
        return self._decoder.decode(context, inputs[0], select=select)

    @contextlib.contextmanager
    def hooked(self, hook):
        with super().hooked(hook), self._encoder.hooked(hook), self._decoder.hooked(hook):
            yield self

    def build(self):
        self.encoder = self._encoder.build()
        self.decoder = self._decoder.build()
        enc_ids, dec_ids = self.encoder.inputs[0], self.decoder.inputs[1]
        outputs = self._decoder.decode(self.encoder.outputs[0], dec_ids)
        self.model = self.keras_model([enc_ids, dec_ids], outputs, name=self.name)
        return self.model

    def variable_mapping(self, fmt="google"):
        mapping = self._encoder.variable_mapping(fmt)
        mapping.update(self._decoder.variable_mapping(fmt))
        return mapping


def _signature(family, present, absent=()):
    return {"family": family, "present": present, "absent": list(absent)}


_FF0 = "encoder/block_000/layer_001/DenseReluDense/"
_HF_FF0 = "encoder.block.0.layer.1.DenseReluDense."
_SIGNATURES = {
    "t5.1.0": _signature("t5", [("shared/embedding", "shared.weight"),
                                (_FF0 + "wi/kernel", _HF_FF0 + "wi.weight")]),
    "t5.1.1": _signature("t5.1.1", [("shared/embedding", "shared.weight"),
                                    (_FF0 + "wi_0/kernel", _HF_FF0 + "wi_0.weight")],
                         [("encoder/rms_norm/scale", None)]),
    "mt5.1.1": _signature("mt5.1.1", [("shared/embedding", "shared.weight"),
                                      (_FF0 + "wi_0/kernel", _HF_FF0 + "wi_0.weight")],
                          [("encoder/final_layer_norm/scale", None)]),
}


def _versioned(cls, version, signature=None):
    """The subclass of ``cls`` for one T5 version (what a ``model=`` key selects)."""
    name = cls.__name__.replace("T5", {"t5.1.0": "T5_1_0", "t5.1.1": "T5_1_1",
                                        "mt5.1.1": "MT5_1_1"}[version], 1)
    attrs = {"version": version, "__doc__": cls.__doc__, "__module__": __name__}
    if signature:
        attrs["signature"] = signature
    return type(name, (cls,), attrs)


#: ``model=`` keys: ``t5``/``t5.1.0``, ``t5.1.1``, ``mt5.1.1``, each with
#: ``_encoder`` and ``_decoder`` variants.
MODELS = {}
for _version in VERSIONS:
    _encoder = _versioned(T5_Encoder, _version)
    _decoder = _versioned(T5_Decoder, _version)
    _model = _versioned(T5, _version, _SIGNATURES[_version])
    _model.encoder_class, _model.decoder_class = _encoder, _decoder
    _keys = ["t5", "t5.1.0"] if _version == "t5.1.0" else [_version]
    for _key in _keys:
        MODELS.update({_key: _model, _key + "_encoder": _encoder, _key + "_decoder": _decoder})
T5.encoder_class, T5.decoder_class = T5_Encoder, T5_Decoder
