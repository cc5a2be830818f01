"""Transformer model families and :func:`build_transformer_model`.

A family is a small subclass of :class:`Transformer` that says which layers
exist (``apply_embeddings``, ``apply_main_layers``, ``apply_final_layers``)
and how their weights are named in each checkpoint format. The name map is
data: ``{keras layer name: [(google name, hf name), ...]}`` in the order of
the layer's ``weights``; a ``:T`` suffix marks a tensor stored transposed
relative to the Keras weight, ``|`` separates alternative spellings, and
``{i}`` is the block index in the per-block map.
"""

import inspect
import json
import os

import keras
import numpy as np

from bert4keras import backend as B
from bert4keras.checkpoints import (
    CheckpointError,
    open_checkpoint,
    resolve,
    write_tf_checkpoint,
)
from bert4keras.layers import (
    AttentionMask,
    BiasAdd,
    Embedding,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    PositionEmbedding,
    TokenSlice,
)

FORMATS = ("google", "hf")


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

    def __init__(self, vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
                 intermediate_size, hidden_act="gelu", dropout_rate=0.0,
                 attention_dropout_rate=0.0, embedding_size=None, attention_head_size=None,
                 attention_key_size=None, max_position=512, segment_vocab_size=2,
                 layer_norm_eps=1e-12, initializer_range=0.02, keep_tokens=None,
                 application="encoder", name=None):
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
        self.initializer = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.application = application
        self.name = name
        self.layers = {}
        self.model = None

    # -- graph building -------------------------------------------------------
    def apply(self, inputs, layer=None, arguments=None, name=None, **kwargs):
        """Call the layer called ``name``, creating it from ``layer(**kwargs)``
        the first time (so a second call with the same name shares weights)."""
        if name not in self.layers:
            self.layers[name] = layer(name=name, **kwargs)
        return self.layers[name](inputs, **(arguments or {}))

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
            x = self.apply_main_layers(x, index, bias)
        outputs = self.apply_final_layers(x)
        self.model = keras.Model(inputs, outputs, name=self.name)
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
                    stored = resolve(reader, name, self.hf_prefixes)
                    if stored is not None:
                        break
                if stored is None:
                    raise CheckpointError(
                        "Variable %r (for layer %s) is missing from checkpoint %r, which has %d "
                        "variables%s" % (names, layer_name, reader.path, len(reader.names()),
                                         self._describe_checkpoint(reader)))
                value = reader.get(stored)
                if transposed:
                    value = value.T
                if self.keep_tokens is not None and layer_name in self.vocab_layers:
                    if value.shape[0] <= self.keep_tokens.max():
                        raise CheckpointError(
                            "keep_tokens refers to id %d but %r in %r has only %d rows"
                            % (self.keep_tokens.max(), stored, reader.path, value.shape[0]))
                    value = value[self.keep_tokens]
                if tuple(value.shape) != tuple(weight.shape):
                    raise CheckpointError(
                        "Shape mismatch: checkpoint variable %r in %r has shape %s%s but model "
                        "weight %s of layer %s has shape %s (check the config against the "
                        "checkpoint)" % (stored, reader.path, tuple(reader.shape(stored)),
                                         " (transposed)" if transposed else "", weight.path,
                                         layer_name, tuple(weight.shape)))
                weight.assign(value.astype(weight.dtype))

    def _describe_checkpoint(self, reader):
        sample = ", ".join(reader.names()[:3])
        return "; first few: %s" % sample if sample else ""

    def checkpoint_tensors(self, fmt="google"):
        """``{stored name: array}`` of the model's weights in a format's names."""
        tensors = {}
        for layer_name, spec in self.variable_mapping(fmt).items():
            for weight, (names, transposed) in zip(self.layers[layer_name].weights, spec):
                value = keras.ops.convert_to_numpy(weight.value)
                tensors[names.split("|")[0]] = value.T if transposed else value
        return tensors

    def save_weights_as_checkpoint(self, filename):
        """Write the weights as a Google-format TF checkpoint at prefix ``filename``.

        With ``keep_tokens`` the written vocabulary is the kept one, so the
        checkpoint pairs with the simplified ``vocab.txt``.
        """
        write_tf_checkpoint(filename, self.checkpoint_tensors("google"))


class BERT(Transformer):
    """BERT (Devlin et al. 2019) in Google's checkpoint layout.

    Args:
        with_pool: add ``Pooler`` + ``Pooler-Dense`` (tanh, or the given
            activation) over the [CLS] vector.
        with_nsp: add ``NSP-Proba`` (2-way softmax, or the given activation,
            e.g. ``'linear'`` for logits); implies ``with_pool``.
        with_mlm: add the MLM head (``MLM-Dense``, ``MLM-Norm``, the tied
            ``Embedding-Token`` output, ``MLM-Bias``, ``MLM-Activation``
            softmax, or the given activation).

    Outputs (as the original bert4keras): the sequence output ``(batch,
    seq_len, hidden)`` alone; with a pooler or NSP head just that
    ``(batch, hidden|2)``; with MLM just ``(batch, seq_len, vocab)``; with
    both, ``[pooled_or_nsp, mlm]``.
    """

    name_map = {
        "Embedding-Token": [("bert/embeddings/word_embeddings",
                             "bert.embeddings.word_embeddings.weight")],
        "Embedding-Segment": [("bert/embeddings/token_type_embeddings",
                               "bert.embeddings.token_type_embeddings.weight")],
        "Embedding-Position": [("bert/embeddings/position_embeddings",
                                "bert.embeddings.position_embeddings.weight")],
        "Embedding-Norm": [("bert/embeddings/LayerNorm/gamma", "bert.embeddings.LayerNorm.weight"),
                           ("bert/embeddings/LayerNorm/beta", "bert.embeddings.LayerNorm.bias")],
        "Embedding-Mapping": [
            ("bert/encoder/embedding_hidden_mapping_in/kernel",
             "bert.encoder.embedding_hidden_mapping_in.weight:T"),
            ("bert/encoder/embedding_hidden_mapping_in/bias",
             "bert.encoder.embedding_hidden_mapping_in.bias")],
        "Pooler-Dense": [("bert/pooler/dense/kernel", "bert.pooler.dense.weight:T"),
                         ("bert/pooler/dense/bias", "bert.pooler.dense.bias")],
        "NSP-Proba": [("cls/seq_relationship/output_weights:T", "cls.seq_relationship.weight:T"),
                      ("cls/seq_relationship/output_bias", "cls.seq_relationship.bias")],
        "MLM-Dense": [("cls/predictions/transform/dense/kernel",
                       "cls.predictions.transform.dense.weight:T"),
                      ("cls/predictions/transform/dense/bias",
                       "cls.predictions.transform.dense.bias")],
        "MLM-Norm": [("cls/predictions/transform/LayerNorm/gamma",
                      "cls.predictions.transform.LayerNorm.weight"),
                     ("cls/predictions/transform/LayerNorm/beta",
                      "cls.predictions.transform.LayerNorm.bias")],
        "MLM-Bias": [("cls/predictions/output_bias",
                      "cls.predictions.bias|cls.predictions.decoder.bias")],
    }
    block_name_map = {
        "Transformer-{i}-MultiHeadSelfAttention": [
            ("bert/encoder/layer_{i}/attention/self/query/kernel",
             "bert.encoder.layer.{i}.attention.self.query.weight:T"),
            ("bert/encoder/layer_{i}/attention/self/query/bias",
             "bert.encoder.layer.{i}.attention.self.query.bias"),
            ("bert/encoder/layer_{i}/attention/self/key/kernel",
             "bert.encoder.layer.{i}.attention.self.key.weight:T"),
            ("bert/encoder/layer_{i}/attention/self/key/bias",
             "bert.encoder.layer.{i}.attention.self.key.bias"),
            ("bert/encoder/layer_{i}/attention/self/value/kernel",
             "bert.encoder.layer.{i}.attention.self.value.weight:T"),
            ("bert/encoder/layer_{i}/attention/self/value/bias",
             "bert.encoder.layer.{i}.attention.self.value.bias"),
            ("bert/encoder/layer_{i}/attention/output/dense/kernel",
             "bert.encoder.layer.{i}.attention.output.dense.weight:T"),
            ("bert/encoder/layer_{i}/attention/output/dense/bias",
             "bert.encoder.layer.{i}.attention.output.dense.bias"),
        ],
        "Transformer-{i}-MultiHeadSelfAttention-Norm": [
            ("bert/encoder/layer_{i}/attention/output/LayerNorm/gamma",
             "bert.encoder.layer.{i}.attention.output.LayerNorm.weight"),
            ("bert/encoder/layer_{i}/attention/output/LayerNorm/beta",
             "bert.encoder.layer.{i}.attention.output.LayerNorm.bias"),
        ],
        "Transformer-{i}-FeedForward": [
            ("bert/encoder/layer_{i}/intermediate/dense/kernel",
             "bert.encoder.layer.{i}.intermediate.dense.weight:T"),
            ("bert/encoder/layer_{i}/intermediate/dense/bias",
             "bert.encoder.layer.{i}.intermediate.dense.bias"),
            ("bert/encoder/layer_{i}/output/dense/kernel",
             "bert.encoder.layer.{i}.output.dense.weight:T"),
            ("bert/encoder/layer_{i}/output/dense/bias",
             "bert.encoder.layer.{i}.output.dense.bias"),
        ],
        "Transformer-{i}-FeedForward-Norm": [
            ("bert/encoder/layer_{i}/output/LayerNorm/gamma",
             "bert.encoder.layer.{i}.output.LayerNorm.weight"),
            ("bert/encoder/layer_{i}/output/LayerNorm/beta",
             "bert.encoder.layer.{i}.output.LayerNorm.bias"),
        ],
    }
    hf_prefixes = ("bert.",)

    def __init__(self, with_pool=False, with_nsp=False, with_mlm=False, **kwargs):
        super().__init__(**kwargs)
        self.with_pool = with_pool or bool(with_nsp)
        self.with_nsp = with_nsp
        self.with_mlm = with_mlm

    def apply_embeddings(self, inputs):
        x = self.apply(inputs[0], Embedding, input_dim=self.vocab_size,
                       output_dim=self.embedding_size,
                       embeddings_initializer=self.initializer, name="Embedding-Token")
        if self.segment_vocab_size > 0:
            s = self.apply(inputs[1], Embedding, input_dim=self.segment_vocab_size,
                           output_dim=self.embedding_size,
                           embeddings_initializer=self.initializer, name="Embedding-Segment")
            x = self.apply([x, s], keras.layers.Add, name="Embedding-Token-Segment")
        x = self.apply(x, PositionEmbedding, input_dim=self.max_position,
                       output_dim=self.embedding_size, merge_mode="add",
                       embeddings_initializer=self.initializer, name="Embedding-Position")
        x = self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name="Embedding-Norm")
        x = self.dropout(x, "Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def apply_main_layers(self, x, index, attention_bias):
        """One post-LN block: attention -> add & norm -> FFN -> add & norm."""
        name = "Transformer-%d-MultiHeadSelfAttention" % index
        y = self.apply([x, x, x, attention_bias], MultiHeadAttention,
                       heads=self.num_attention_heads, head_size=self.attention_head_size,
                       out_dim=self.hidden_size, key_size=self.attention_key_size,
                       attention_dropout=self.attention_dropout_rate,
                       kernel_initializer=self.initializer, name=name)
        y = self.dropout(y, name + "-Dropout")
        x = self.apply([x, y], keras.layers.Add, name=name + "-Add")
        x = self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name=name + "-Norm")
        name = "Transformer-%d-FeedForward" % index
        y = self.apply(x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
                       kernel_initializer=self.initializer, name=name)
        y = self.dropout(y, name + "-Dropout")
        x = self.apply([x, y], keras.layers.Add, name=name + "-Add")
        return self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name=name + "-Norm")

    def apply_final_layers(self, x):
        outputs = [x]
        if self.with_pool:
            y = self.apply(x, TokenSlice, index=0, name="Pooler")
            activation = "tanh" if self.with_pool is True else self.with_pool
            y = self.apply(y, keras.layers.Dense, units=self.hidden_size, activation=activation,
                           kernel_initializer=self.initializer, name="Pooler-Dense")
            if self.with_nsp:
                activation = "softmax" if self.with_nsp is True else self.with_nsp
                y = self.apply(y, keras.layers.Dense, units=2, activation=activation,
                               kernel_initializer=self.initializer, name="NSP-Proba")
            outputs.append(y)
        if self.with_mlm:
            y = self.apply(x, keras.layers.Dense, units=self.embedding_size,
                           activation=B.get_activation(self.hidden_act),
                           kernel_initializer=self.initializer, name="MLM-Dense")
            y = self.apply(y, LayerNormalization, epsilon=self.layer_norm_eps, name="MLM-Norm")
            y = self.apply(y, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
            y = self.apply(y, BiasAdd, name="MLM-Bias")
            activation = "softmax" if self.with_mlm is True else self.with_mlm
            y = self.apply(y, keras.layers.Activation, activation=activation,
                           name="MLM-Activation")
            outputs.append(y)
        if len(outputs) == 1:
            return outputs[0]
        if len(outputs) == 2:
            return outputs[1]
        return outputs[1:]


#: ``model=`` keys of :func:`build_transformer_model`.
MODELS = {
    "bert": BERT,
    "roberta": BERT,  # Chinese RoBERTa-wwm releases use BERT's layout and names
}

#: Google/Hugging Face config keys -> constructor arguments.
CONFIG_KEYS = {
    "max_position_embeddings": "max_position",
    "type_vocab_size": "segment_vocab_size",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
}
REQUIRED_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers",
                        "num_attention_heads", "intermediate_size")


def load_config(config_path):
    """Read a Google ``bert_config.json`` or a Hugging Face ``config.json``.

    ``config_path`` may be the file or a directory holding one of them.

    Raises:
        FileNotFoundError / ValueError: naming the file when it is missing or
            not valid JSON.
    """
    path = os.fspath(config_path)
    if os.path.isdir(path):
        for candidate in ("config.json", "bert_config.json"):
            if os.path.exists(os.path.join(path, candidate)):
                path = os.path.join(path, candidate)
                break
        else:
            raise FileNotFoundError("No config.json or bert_config.json in directory %r" % path)
    if not os.path.exists(path):
        raise FileNotFoundError("Config file not found: %r" % path)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError("Cannot read config %r: %s" % (path, exc)) from exc
    if not isinstance(config, dict):
        raise ValueError("Config %r is not a JSON object" % path)
    config["_path"] = path
    return config


def _accepted_arguments(cls):
    names = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        names.update(inspect.signature(klass.__init__).parameters)
    return names - {"self", "kwargs"}


def build_transformer_model(config_path=None, checkpoint_path=None, model="bert",
                            application="encoder", return_keras_model=True, **kwargs):
    """Build a Keras 3 Transformer from a config and load a checkpoint.

    Args:
        config_path: Google ``bert_config.json``, Hugging Face ``config.json``,
            or a directory with either. May be None if every required size is
            given in ``kwargs``.
        checkpoint_path: Google TF checkpoint prefix or directory, or a Hugging
            Face directory of ``*.safetensors`` (sharded too); None leaves the
            random initialisation.
        model: a key of :data:`MODELS` (``'bert'``, ``'roberta'``) or a
            :class:`Transformer` subclass.
        application: ``'encoder'``, ``'lm'`` or ``'unilm'``.
        return_keras_model: return the ``keras.Model`` (default) or the
            :class:`Transformer` object (its ``.model`` is the Keras model).
        **kwargs: constructor arguments overriding the config: ``with_pool``,
            ``with_nsp``, ``with_mlm``, ``keep_tokens``, ``max_position``,
            ``segment_vocab_size``, ``dropout_rate``, ...

    Returns:
        ``keras.Model`` with inputs ``Input-Token`` (and ``Input-Segment``),
        each ``(batch, seq_len)`` int32.

    Raises:
        KeyError: a required size is missing from the config (the file and
            key are named).
        CheckpointError: the checkpoint is missing, lacks a variable or does
            not match the config (see :meth:`Transformer.load_weights_from_checkpoint`).
    """
    config = load_config(config_path) if config_path is not None else {"_path": "<kwargs>"}
    if isinstance(model, str):
        if model.lower() not in MODELS:
            raise ValueError("Unknown model %r; known: %s" % (model, ", ".join(sorted(MODELS))))
        cls = MODELS[model.lower()]
    else:
        cls = model
    args = {}
    for key, value in config.items():
        args[CONFIG_KEYS.get(key, key)] = value
    args.update(kwargs)
    args["application"] = application
    missing = [k for k in REQUIRED_CONFIG_KEYS if args.get(k) is None]
    if missing:
        raise KeyError("Config %s lacks required key(s): %s" % (config["_path"], ", ".join(missing)))
    accepted = _accepted_arguments(cls)
    unknown = set(kwargs) - accepted
    if unknown:
        raise TypeError("%s got unknown argument(s): %s" % (cls.__name__, ", ".join(sorted(unknown))))
    transformer = cls(**{k: v for k, v in args.items() if k in accepted})
    transformer.build()
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer.model if return_keras_model else transformer
