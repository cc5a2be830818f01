"""Causal language models: OpenAI GPT (CDial-GPT), GPT-2 and GPT2-ML.

All three are causal (``application='lm'`` is implied) and end in an LM head
tied to ``Embedding-Token`` (``LM-Activation``: softmax, or the given
activation, e.g. ``with_lm='linear'`` for logits; ``with_lm=False`` returns
the last hidden states). They differ in where the LayerNorms sit:

* ``gpt`` -- post-LN like BERT but without ``Embedding-Norm`` (Radford et
  al. 2018; CDial-GPT, Wang et al. 2020, is this model).
* ``gpt2`` -- pre-LN plus a final ``Output-Norm`` (Radford et al. 2019).
* ``gpt2_ml`` -- imcaspar/gpt2-ml (Grover's layout, Zellers et al. 2019):
  ``Embedding-Norm``; attention without a norm, then
  ``h = x + Attention(x)`` and ``LN1(h + FFN(LN0(h)))``.

The attention bias is causal only (:class:`~bert4keras.layers.CausalMask`):
no token id counts as padding (GPT-2's id 0 is ``!``), so batches must be
right-padded; the outputs at real positions then equal those of an unpadded
run, and those at padding positions are meaningless.

Checkpoint formats:

* ``google`` (TF checkpoints as the original bert4keras reads them): GPT
  and GPT-2 under ``gpt/...`` (BERT's names with ``bert/`` -> ``gpt/`` and
  ``encoder`` -> ``transformer``; GPT-2's pre-norms are ``.../input/LayerNorm``,
  its final norm ``gpt/output/LayerNorm``) -- the names of bojone's
  CDial-GPT-tf conversion; GPT2-ML's own release under ``newslm/...``.
* ``hf``: ``OpenAIGPTLMHeadModel`` / ``OpenAIGPTModel`` and
  ``GPT2LMHeadModel`` / ``GPT2Model`` directories. Their ``Conv1D`` weights
  are stored ``[in, out]`` like Keras kernels (no transpose); the fused
  ``c_attn`` is split into query, key and value. GPT2-ML has no Hugging Face
  class.
"""

import keras

from bert4keras.layers import (
    CausalMask,
    Dense,
    Embedding,
    FeedForward,
    LayerNormalization,
    MaskedAdd,
    MultiHeadAttention,
    PositionEmbedding,
)
from bert4keras.models.base import Transformer


class GPT(Transformer):
    """OpenAI GPT: token (+ segment) + position embeddings, post-LN blocks.

    Args:
        with_lm: ``True`` (softmax), an activation name (``'linear'`` for
            logits) or ``False`` (no LM head: output the last hidden states).
        final_activation: the original toolkit's keyword for the activation
            of ``LM-Activation`` (overrides the one implied by ``with_lm``).
        shared_segment_embeddings: embed segment ids with ``Embedding-Token``
            (OpenAI GPT and CDial-GPT embed their token types, e.g. speaker
            ids, with the token table); otherwise ``Embedding-Segment``.
        segment_vocab_size: 0 (default): no ``Input-Segment``.

    Inputs: ``Input-Token`` (and ``Input-Segment``), ``(batch, seq_len)``.
    Output: ``(batch, seq_len, vocab)`` probabilities/logits, or ``(batch,
    seq_len, hidden)`` with ``with_lm=False``.
    """

    name_map = {
        "Embedding-Token": [("gpt/embeddings/word_embeddings",
                             "transformer.tokens_embed.weight")],
        "Embedding-Segment": [("gpt/embeddings/token_type_embeddings", None)],
        "Embedding-Position": [("gpt/embeddings/position_embeddings",
                                "transformer.positions_embed.weight")],
        "Embedding-Mapping": [("gpt/transformer/embedding_hidden_mapping_in/kernel", None),
                              ("gpt/transformer/embedding_hidden_mapping_in/bias", None)],
    }
    block_name_map = {
        "Transformer-{i}-MultiHeadSelfAttention": [
            ("gpt/transformer/layer_{i}/attention/self/query/kernel",
             "transformer.h.{i}.attn.c_attn.weight[0/3]"),
            ("gpt/transformer/layer_{i}/attention/self/query/bias",
             "transformer.h.{i}.attn.c_attn.bias[0/3]"),
            ("gpt/transformer/layer_{i}/attention/self/key/kernel",
             "transformer.h.{i}.attn.c_attn.weight[1/3]"),
            ("gpt/transformer/layer_{i}/attention/self/key/bias",
             "transformer.h.{i}.attn.c_attn.bias[1/3]"),
            ("gpt/transformer/layer_{i}/attention/self/value/kernel",
             "transformer.h.{i}.attn.c_attn.weight[2/3]"),
            ("gpt/transformer/layer_{i}/attention/self/value/bias",
             "transformer.h.{i}.attn.c_attn.bias[2/3]"),
            ("gpt/transformer/layer_{i}/attention/output/dense/kernel",
             "transformer.h.{i}.attn.c_proj.weight"),
            ("gpt/transformer/layer_{i}/attention/output/dense/bias",
             "transformer.h.{i}.attn.c_proj.bias"),
        ],
        "Transformer-{i}-MultiHeadSelfAttention-Norm": [
            ("gpt/transformer/layer_{i}/attention/output/LayerNorm/gamma",
             "transformer.h.{i}.ln_1.weight"),
            ("gpt/transformer/layer_{i}/attention/output/LayerNorm/beta",
             "transformer.h.{i}.ln_1.bias"),
        ],
        "Transformer-{i}-FeedForward": [
            ("gpt/transformer/layer_{i}/intermediate/dense/kernel",
             "transformer.h.{i}.mlp.c_fc.weight"),
            ("gpt/transformer/layer_{i}/intermediate/dense/bias",
             "transformer.h.{i}.mlp.c_fc.bias"),
            ("gpt/transformer/layer_{i}/output/dense/kernel",
             "transformer.h.{i}.mlp.c_proj.weight"),
            ("gpt/transformer/layer_{i}/output/dense/bias",
             "transformer.h.{i}.mlp.c_proj.bias"),
        ],
        "Transformer-{i}-FeedForward-Norm": [
            ("gpt/transformer/layer_{i}/output/LayerNorm/gamma", "transformer.h.{i}.ln_2.weight"),
            ("gpt/transformer/layer_{i}/output/LayerNorm/beta", "transformer.h.{i}.ln_2.bias"),
        ],
    }
    hf_prefixes = ("transformer.",)
    vocab_layers = ("Embedding-Token",)
    signature = {
        "family": "gpt",
        "present": [("gpt/transformer/layer_0/attention/output/LayerNorm/gamma",
                     "transformer.tokens_embed.weight")],
    }

    def __init__(self, with_lm=True, final_activation=None, shared_segment_embeddings=False,
                 segment_vocab_size=0, layer_norm_eps=1e-5, application="lm", **kwargs):
        if application == "encoder":  # the build_transformer_model default
            application = "lm"
        super().__init__(segment_vocab_size=segment_vocab_size, layer_norm_eps=layer_norm_eps,
                         application=application, **kwargs)
        self.with_lm = with_lm
        self.final_activation = final_activation
        self.shared_segment_embeddings = bool(shared_segment_embeddings)

    #: ``OpenAIGPTConfig``/``GPT2Config`` keys (besides BERT's, which
    #: configs in the original toolkit's style use).
    config_keys = {
        "n_embd": "hidden_size",
        "n_layer": "num_hidden_layers",
        "n_head": "num_attention_heads",
        "n_inner": "intermediate_size",
        "n_positions": "max_position",
        "resid_pdrop": "dropout_rate",
        "attn_pdrop": "attention_dropout_rate",
        "layer_norm_epsilon": "layer_norm_eps",
        "afn": "hidden_act",
        "activation_function": "hidden_act",
    }
    hf_model_type = "openai-gpt"
    hf_architectures = {"": "OpenAIGPTModel", "lm": "OpenAIGPTLMHeadModel"}

    @classmethod
    def translate_config(cls, config):
        """Accept an ``OpenAIGPTConfig``/``GPT2Config`` ``config.json`` too:
        the renames of ``config_keys``, then ``intermediate_size`` defaults to
        ``4 * hidden_size`` (``n_inner`` is null or absent there) and OpenAI
        GPT's ``afn='gelu'`` becomes ``'gelu_new'`` (transformers' OpenAI GPT
        "gelu" is the tanh approximation)."""
        config = super().translate_config(config)
        if config.get("model_type") in ("openai-gpt", "gpt2"):
            if config.get("intermediate_size") is None and "hidden_size" in config:
                config["intermediate_size"] = 4 * config["hidden_size"]
            if config.get("model_type") == "openai-gpt" and config.get("hidden_act") == "gelu":
                config["hidden_act"] = "gelu_new"
        return config

    def export_config(self, config):
        """The reverse of :meth:`translate_config` for a ``config.json``:
        ``embd_pdrop`` is the dropout rate; OpenAI GPT has no ``n_inner``
        (its inner width is ``4 * n_embd``) and names the tanh GELU ``'gelu'``.

        Raises:
            ValueError: OpenAI GPT with ``intermediate_size != 4 *
                hidden_size`` or an activation its ``afn`` lacks (the erf
                GELU among them).
        """
        config["embd_pdrop"] = self.dropout_rate
        if self.hf_model_type != "openai-gpt":
            return config
        if self.intermediate_size != 4 * self.hidden_size:
            raise ValueError("GPT: transformers' OpenAI GPT has an inner width of 4 * hidden_size "
                             "= %d, this model %d; save with format='google'"
                             % (4 * self.hidden_size, self.intermediate_size))
        config.pop("n_inner", None)
        act = str(self.hidden_act).lower()
        afn = {"gelu_new": "gelu", "gelu_tanh": "gelu", "gelu_pytorch_tanh": "gelu",
               "relu": "relu", "silu": "silu", "swish": "silu"}.get(act)
        if afn is None:
            raise ValueError("GPT: hidden_act=%r has no transformers OpenAI GPT equivalent (its "
                             "afn is relu, silu or 'gelu', the tanh GELU: hidden_act='gelu_new'); "
                             "save with format='google'" % (self.hidden_act,))
        config["afn"] = afn
        return config

    # -- graph ----------------------------------------------------------------
    def compute_attention_bias(self, inputs):
        if self.application == "unilm":
            return super().compute_attention_bias(inputs)
        return self.apply(inputs[0], CausalMask, name="Attention-LM-Mask")

    def token_embedding(self, ids):
        return self.apply(ids, Embedding, input_dim=self.vocab_size,
                          output_dim=self.embedding_size, mask_zero=True,
                          embeddings_initializer=self.initializer, name="Embedding-Token")

    def apply_embeddings(self, inputs):
        self.remember_embedded_inputs(inputs)
        x = self.token_embedding(inputs[0])
        if self.segment_vocab_size > 0:
            if self.shared_segment_embeddings:
                s = self.token_embedding(inputs[1])
            else:
                s = self.apply(inputs[1], Embedding, input_dim=self.segment_vocab_size,
                               output_dim=self.embedding_size,
                               embeddings_initializer=self.initializer, name="Embedding-Segment")
            x = self.apply([x, s], MaskedAdd, name="Embedding-Token-Segment")
        x = self.apply(x, PositionEmbedding, input_dim=self.max_position,
                       output_dim=self.embedding_size, merge_mode="add",
                       embeddings_initializer=self.initializer, name="Embedding-Position")
        x = self.embedding_norm(x)
        if self.embedding_dropout:
            x = self.dropout(x, "Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, Dense, units=self.hidden_size,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    #: dropout after the embeddings (Grover/GPT2-ML has none)
    embedding_dropout = True

    def embedding_norm(self, x):
        return x  # GPT has none; GPT2-ML overrides

    def norm(self, x, name):
        return self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name=name)

    def attention(self, x, bias, name):
        y = self.apply([x, x, x, bias], MultiHeadAttention, heads=self.num_attention_heads,
                       head_size=self.attention_head_size, out_dim=self.hidden_size,
                       key_size=self.attention_key_size, mask_keys=False,
                       attention_dropout=self.attention_dropout_rate,
                       kernel_initializer=self.initializer, name=name)
        return self.dropout(y, name + "-Dropout")

    def feed_forward(self, x, name):
        y = self.apply(x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
                       kernel_initializer=self.initializer, name=name)
        return self.dropout(y, name + "-Dropout")

    def apply_main_layers(self, x, index, attention_bias=None):
        """Post-LN: ``n = LN(x + Att(x))``, ``LN(n + FFN(n))``."""
        attention_bias = self.resolve_attention_bias(attention_bias)
        name = "Transformer-%d-MultiHeadSelfAttention" % index
        y = self.attention(x, attention_bias, name)
        x = self.norm(self.apply([x, y], keras.layers.Add, name=name + "-Add"), name + "-Norm")
        name = "Transformer-%d-FeedForward" % index
        y = self.feed_forward(x, name)
        return self.norm(self.apply([x, y], keras.layers.Add, name=name + "-Add"), name + "-Norm")

    def apply_final_layers(self, x):
        if not self.with_lm:
            return x
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        activation = self.final_activation or ("softmax" if self.with_lm is True else self.with_lm)
        return self.apply(x, keras.layers.Activation, activation=activation,
                          name="LM-Activation")


class GPT2(GPT):
    """GPT-2: token + position embeddings, pre-LN blocks, ``Output-Norm``.

    Same arguments as :class:`GPT` (no segments). Input ``Input-Token``.
    """

    name_map = {
        "Embedding-Token": [("gpt/embeddings/word_embeddings", "transformer.wte.weight")],
        "Embedding-Position": [("gpt/embeddings/position_embeddings", "transformer.wpe.weight")],
        "Embedding-Mapping": GPT.name_map["Embedding-Mapping"],
        "Output-Norm": [("gpt/output/LayerNorm/gamma", "transformer.ln_f.weight"),
                        ("gpt/output/LayerNorm/beta", "transformer.ln_f.bias")],
    }
    block_name_map = {
        "Transformer-{i}-MultiHeadSelfAttention":
            GPT.block_name_map["Transformer-{i}-MultiHeadSelfAttention"],
        "Transformer-{i}-MultiHeadSelfAttention-Norm": [
            ("gpt/transformer/layer_{i}/attention/input/LayerNorm/gamma",
             "transformer.h.{i}.ln_1.weight"),
            ("gpt/transformer/layer_{i}/attention/input/LayerNorm/beta",
             "transformer.h.{i}.ln_1.bias"),
        ],
        "Transformer-{i}-FeedForward": GPT.block_name_map["Transformer-{i}-FeedForward"],
        "Transformer-{i}-FeedForward-Norm": [
            ("gpt/transformer/layer_{i}/input/LayerNorm/gamma", "transformer.h.{i}.ln_2.weight"),
            ("gpt/transformer/layer_{i}/input/LayerNorm/beta", "transformer.h.{i}.ln_2.bias"),
        ],
    }
    signature = {
        "family": "gpt2",
        "present": [("gpt/output/LayerNorm/gamma", "transformer.wte.weight")],
    }
    config_keys = {"activation_function": "hidden_act"}  # written rather than OpenAI's afn
    hf_model_type = "gpt2"
    hf_architectures = {"": "GPT2Model", "lm": "GPT2LMHeadModel"}

    def __init__(self, segment_vocab_size=0, **kwargs):
        # no segment embedding in this layout: a segment size from another
        # family's config (BERT's type_vocab_size) is dropped here, and its
        # checkpoint is then named by the family check at load time
        super().__init__(segment_vocab_size=0, **kwargs)

    def get_inputs(self):
        return [keras.Input(shape=(None,), dtype="int32", name="Input-Token")]

    def apply_main_layers(self, x, index, attention_bias=None):
        """Pre-LN: ``h = x + Att(LN(x))``, ``h + FFN(LN(h))``."""
        attention_bias = self.resolve_attention_bias(attention_bias)
        name = "Transformer-%d-MultiHeadSelfAttention" % index
        y = self.attention(self.norm(x, name + "-Norm"), attention_bias, name)
        x = self.apply([x, y], keras.layers.Add, name=name + "-Add")
        name = "Transformer-%d-FeedForward" % index
        y = self.feed_forward(self.norm(x, name + "-Norm"), name)
        return self.apply([x, y], keras.layers.Add, name=name + "-Add")

    def apply_final_layers(self, x):
        x = self.norm(x, "Output-Norm")
        x = self.dropout(x, "Output-Dropout")
        return super().apply_final_layers(x)


class GPT2_ML(GPT):
    """GPT2-ML (imcaspar/gpt2-ml ``train/modeling.py``): Grover's layout.

    ``Embedding-Norm`` after token + position embeddings; each block is
    ``h = x + Att(x)`` then ``LN1(h + FFN(LN0(h)))`` (layers
    ``Transformer-%d-FeedForward-Norm-0`` / ``-Norm-1``). Same arguments as
    :class:`GPT` (no segments). Input ``Input-Token``.
    """

    name_map = {
        "Embedding-Token": [("newslm/embeddings/word_embed", None)],
        "Embedding-Position": [("newslm/embeddings/pos_embed", None)],
        "Embedding-Norm": [("newslm/embeddings/LayerNorm_embed_norm/gamma", None),
                           ("newslm/embeddings/LayerNorm_embed_norm/beta", None)],
    }
    block_name_map = {
        "Transformer-{i}-MultiHeadSelfAttention": [
            ("newslm/layer{i:02d}/query_layer/kernel", None),
            ("newslm/layer{i:02d}/query_layer/bias", None),
            ("newslm/layer{i:02d}/key_layer/kernel", None),
            ("newslm/layer{i:02d}/key_layer/bias", None),
            ("newslm/layer{i:02d}/value_layer/kernel", None),
            ("newslm/layer{i:02d}/value_layer/bias", None),
            ("newslm/layer{i:02d}/context_projection_layer/kernel", None),
            ("newslm/layer{i:02d}/context_projection_layer/bias", None),
        ],
        "Transformer-{i}-FeedForward-Norm-0": [
            ("newslm/layer{i:02d}/LayerNorm_mlp_ln0/gamma", None),
            ("newslm/layer{i:02d}/LayerNorm_mlp_ln0/beta", None),
        ],
        "Transformer-{i}-FeedForward": [
            ("newslm/layer{i:02d}/intermediate/kernel", None),
            ("newslm/layer{i:02d}/intermediate/bias", None),
            ("newslm/layer{i:02d}/output/kernel", None),
            ("newslm/layer{i:02d}/output/bias", None),
        ],
        "Transformer-{i}-FeedForward-Norm-1": [
            ("newslm/layer{i:02d}/LayerNorm_mlp_ln1/gamma", None),
            ("newslm/layer{i:02d}/LayerNorm_mlp_ln1/beta", None),
        ],
    }
    hf_prefixes = ()
    embedding_dropout = False
    signature = {
        "family": "gpt2_ml",
        "present": [("newslm/embeddings/word_embed", None)],
    }
    hf_model_type = None  # transformers has no GPT2-ML class: save with format='google'
    hf_architectures = {}

    def __init__(self, segment_vocab_size=0, **kwargs):
        # no segment embedding in this layout: a segment size from another
        # family's config (BERT's type_vocab_size) is dropped here, and its
        # checkpoint is then named by the family check at load time
        super().__init__(segment_vocab_size=0, **kwargs)

    def get_inputs(self):
        return [keras.Input(shape=(None,), dtype="int32", name="Input-Token")]

    def embedding_norm(self, x):
        return self.norm(x, "Embedding-Norm")

    def apply_main_layers(self, x, index, attention_bias=None):
        attention_bias = self.resolve_attention_bias(attention_bias)
        name = "Transformer-%d-MultiHeadSelfAttention" % index
        y = self.attention(x, attention_bias, name)
        x = self.apply([x, y], keras.layers.Add, name=name + "-Add")
        name = "Transformer-%d-FeedForward" % index
        y = self.feed_forward(self.norm(x, name + "-Norm-0"), name)
        x = self.apply([x, y], keras.layers.Add, name=name + "-Add")
        return self.norm(x, name + "-Norm-1")


MODELS = {
    "gpt": GPT,
    "gpt2": GPT2,
    "gpt2_ml": GPT2_ML,
}
