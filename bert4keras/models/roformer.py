"""RoFormer and RoFormer-V2 (Su et al. 2021, https://arxiv.org/abs/2104.09864;
ZhuiyiTechnology/roformer and roformer-v2).

RoFormer is BERT without the absolute position embedding: every attention
layer rotates its queries and keys by position-dependent angles (rotary
position embedding, RoPE; pairs ``(2i, 2i+1)`` rotated by ``p * 10000^(-2i/d)``,
the same as Hugging Face's ``RoFormerSelfAttention``). Its checkpoints use
Google BERT's names (``bert/...``); Hugging Face's ``RoFormerModel`` uses
``roformer.`` names.

RoFormer-V2 drops every bias and the LayerNorm parameters: its norms are
``x / sqrt(mean(x^2) + eps)`` without mean subtraction, gain or offset (the
original toolkit's ``LayerNormalization(zero_mean=False, scale=False,
offset=False)``), and its embedding dropout comes before the norm. Its
checkpoints hold BERT's names minus every ``gamma``, ``beta`` and ``bias``.
Hugging Face has no RoFormer-V2 class.
"""

import keras

from bert4keras.layers import (Dense, Embedding, LayerNormalization, MaskedAdd,
                               SinusoidalPositionEmbedding)
from bert4keras.models.bert import BERT, bert_names_with_prefix


class RoFormer(BERT):
    """RoFormer: BERT's layers and names, no ``Embedding-Position``, and
    ``MultiHeadAttention(p_bias='rotary')`` fed by one shared
    ``Embedding-Rotary-Position`` (a weightless ``SinusoidalPositionEmbedding``).

    Args: as :class:`BERT` (``embedding_size`` for the small models);
    Hugging Face's ``rotary_value=True`` is not supported. Sequences are not
    limited by ``max_position``. Hugging Face's RoFormer has no pooler or NSP
    head, so ``with_pool``/``with_nsp`` load only from the original format.
    """

    name_map = {
        **bert_names_with_prefix(BERT.name_map, "roformer.", drop=("Embedding-Position",)),
        "Embedding-Mapping": [
            ("bert/encoder/embedding_hidden_mapping_in/kernel",
             "roformer.embeddings_project.weight:T"),
            ("bert/encoder/embedding_hidden_mapping_in/bias", "roformer.embeddings_project.bias")],
        "Pooler-Dense": [("bert/pooler/dense/kernel", None), ("bert/pooler/dense/bias", None)],
        "NSP-Proba": [("cls/seq_relationship/output_weights:T", None),
                      ("cls/seq_relationship/output_bias", None)],
    }
    block_name_map = bert_names_with_prefix(BERT.block_name_map, "roformer.")
    hf_prefixes = ("roformer.",)
    config_keys = {"embedding_size": "embedding_size"}
    hf_model_type = "roformer"
    hf_architectures = {"": "RoFormerModel", "mlm": "RoFormerForMaskedLM"}
    signature = {
        "family": "roformer",
        "present": [("bert/encoder/layer_0/attention/self/query/kernel",
                     "roformer.encoder.layer.0.attention.self.query.weight"),
                    ("bert/encoder/layer_0/attention/self/query/bias",
                     "roformer.encoder.layer.0.attention.self.query.bias")],
        "absent": [("bert/embeddings/position_embeddings",
                    "roformer.embeddings.position_embeddings.weight")],
    }
    absolute_positions = False
    p_bias = "rotary"

    def __init__(self, rotary_value=False, **kwargs):
        if rotary_value:
            raise ValueError("RoFormer with rotary_value=True (rotary values) is not supported")
        super().__init__(**kwargs)

    def attention_inputs(self, x, attention_bias):
        position = self.shared_by_blocks("position", lambda: self.apply(  # one table per pass
            x, SinusoidalPositionEmbedding, output_dim=self.attention_key_size,
            merge_mode="zero", name="Embedding-Rotary-Position"))
        return [x, x, x, attention_bias, position]


def _without_parameters_of_norms_and_biases(mapping):
    """RoFormer-V2's map: BERT's minus gamma/beta/bias (and layers left empty)."""
    out = {}
    for layer, pairs in mapping.items():
        kept = [(g, h) for g, h in pairs if not g.endswith(("/gamma", "/beta", "/bias"))]
        if kept and not layer.startswith(("MLM-", "Pooler", "NSP")):
            out[layer] = [(g, None) for g, _ in kept]
    return out


class RoFormerV2(RoFormer):
    """RoFormer-V2: rotary attention, no biases, weightless RMS norms
    (``LayerNormalization(zero_mean=False, center=False, scale=False)``).

    Layer names as the original toolkit (``Embedding-Norm``,
    ``Transformer-%d-...``); with ``with_mlm`` the tied ``Embedding-Token``
    output then ``Output-MLM-Activation`` (softmax, or the given activation).
    ``with_pool``/``with_nsp`` are refused (RoFormer-V2 has no such heads),
    and ``with_mlm`` needs ``embedding_size == hidden_size`` (as every
    release). ``layer_norm_eps`` defaults to 1e-7 (Keras's epsilon, which the
    original toolkit's norm used).
    """

    name_map = _without_parameters_of_norms_and_biases(RoFormer.name_map)
    block_name_map = _without_parameters_of_norms_and_biases(RoFormer.block_name_map)
    hf_model_type = None  # transformers has no RoFormer-V2 class: save with format='google'
    hf_architectures = {}
    signature = {
        "family": "roformer_v2",
        "present": [("bert/encoder/layer_0/attention/self/query/kernel", None)],
        "absent": [("bert/encoder/layer_0/attention/self/query/bias", None),
                   ("bert/embeddings/position_embeddings", None)],
    }
    use_bias = False

    def __init__(self, layer_norm_eps=1e-7, **kwargs):
        for head in ("with_pool", "with_nsp"):
            if kwargs.get(head):
                raise ValueError("RoFormer-V2 has no %s head" % head[len("with_"):])
        super().__init__(layer_norm_eps=layer_norm_eps, **kwargs)
        if self.with_mlm and self.embedding_size != self.hidden_size:
            raise ValueError("RoFormer-V2 with_mlm needs embedding_size == hidden_size (no "
                             "checkpoint name is known for its output mapping)")

    def norm(self, x, name):
        return self.apply(x, LayerNormalization, zero_mean=False, center=False, scale=False,
                          epsilon=self.layer_norm_eps, name=name)

    def apply_embeddings(self, inputs):
        self.remember_embedded_inputs(inputs)
        x = self.apply(inputs[0], Embedding, input_dim=self.vocab_size,
                       output_dim=self.embedding_size, mask_zero=True,
                       embeddings_initializer=self.initializer, name="Embedding-Token")
        if self.segment_vocab_size > 0:
            s = self.apply(inputs[1], Embedding, input_dim=self.segment_vocab_size,
                           output_dim=self.embedding_size,
                           embeddings_initializer=self.initializer, name="Embedding-Segment")
            x = self.apply([x, s], MaskedAdd, name="Embedding-Token-Segment")
        x = self.dropout(x, "Embedding-Dropout")
        x = self.norm(x, "Embedding-Norm")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, Dense, units=self.hidden_size, use_bias=False,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def apply_final_layers(self, x):
        if not self.with_mlm:
            return x
        x = self.dropout(x, "Output-MLM-Dropout")
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        activation = "softmax" if self.with_mlm is True else self.with_mlm
        return self.apply(x, keras.layers.Activation, activation=activation,
                          name="Output-MLM-Activation")


MODELS = {
    "roformer": RoFormer,
    "roformer_v2": RoFormerV2,
}
