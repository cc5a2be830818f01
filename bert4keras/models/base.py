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
"""

import warnings

import keras
import numpy as np

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
    #: ``hook(layer, inputs, arguments) -> outputs`` replacing every layer call
    #: of :meth:`apply` while set: :mod:`bert4keras.generation` runs this
    #: model's own graph code on real tensors, with key/value caches.
    call_hook = None

    def apply(self, inputs, layer=None, arguments=None, name=None, **kwargs):
        """Call the layer called ``name``, creating it from ``layer(**kwargs)``
        the first time (so a second call with the same name shares weights)."""
        if name not in self.layers:
            if self.call_hook is not None:
                raise RuntimeError("Layer %r is not part of the built model" % name)
            self.layers[name] = layer(name=name, **kwargs)
        if self.call_hook is not None:
            return self.call_hook(self.layers[name], inputs, arguments or {})
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
