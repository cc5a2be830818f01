"""BERT (and Chinese RoBERTa-wwm, which uses BERT's layout)."""

import keras

from bert4keras import backend as B
from bert4keras.layers import (
    BiasAdd,
    Dense,
    Embedding,
    FeedForward,
    LayerNormalization,
    MaskedAdd,
    MultiHeadAttention,
    PositionEmbedding,
    TokenSlice,
)
from bert4keras.models.base import Transformer


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
    hf_model_type = "bert"
    hf_architectures = {"": "BertModel", "mlm": "BertForMaskedLM",
                        "nsp": "BertForNextSentencePrediction", "mlm+nsp": "BertForPreTraining"}
    signature = {
        "family": "bert",
        "present": [("bert/embeddings/position_embeddings",
                     "bert.embeddings.position_embeddings.weight"),
                    ("bert/encoder/layer_0/attention/self/query/kernel",
                     "bert.encoder.layer.0.attention.self.query.weight")],
    }

    # Hooks for the BERT-like families (ALBERT, NEZHA, RoFormer, ELECTRA):
    #: add the trainable absolute ``Embedding-Position`` (NEZHA, RoFormer: no).
    absolute_positions = True
    #: position mode of every ``MultiHeadAttention`` (see its ``p_bias``).
    p_bias = None
    #: biases in attention and feed-forward projections (RoFormer-V2: no).
    use_bias = True

    def __init__(self, with_pool=False, with_nsp=False, with_mlm=False, **kwargs):
        super().__init__(**kwargs)
        self.with_pool = with_pool or bool(with_nsp)
        self.with_nsp = with_nsp
        self.with_mlm = with_mlm

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
        if self.absolute_positions:
            x = self.apply(x, PositionEmbedding, input_dim=self.max_position,
                           output_dim=self.embedding_size, merge_mode="add",
                           embeddings_initializer=self.initializer, name="Embedding-Position")
        x = self.norm(x, "Embedding-Norm")
        x = self.dropout(x, "Embedding-Dropout")
        if self.has_embedding_mapping():
            x = self.apply(x, Dense, units=self.hidden_size,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def has_embedding_mapping(self):
        """Whether ``Embedding-Mapping`` projects the embeddings to ``hidden_size``
        (BERT: only when ``embedding_size`` differs)."""
        return self.embedding_size != self.hidden_size

    def norm(self, x, name):
        """The LayerNorm called ``name`` (RoFormer-V2 overrides it)."""
        return self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name=name)

    def attention_inputs(self, x, attention_bias):
        """Inputs of a block's self-attention (plus a position input with ``p_bias``)."""
        return [x, x, x, attention_bias]

    def apply_main_layers(self, x, index, attention_bias=None):
        """One post-LN block: attention -> add & norm -> FFN -> add & norm.

        ``attention_bias`` defaults to the built model's (see
        :meth:`Transformer.apply_main_layers`)."""
        attention_bias = self.resolve_attention_bias(attention_bias)
        name = self.block_name(index) + "-MultiHeadSelfAttention"
        y = self.apply(self.attention_inputs(x, attention_bias), MultiHeadAttention,
                       heads=self.num_attention_heads, head_size=self.attention_head_size,
                       out_dim=self.hidden_size, key_size=self.attention_key_size,
                       use_bias=self.use_bias, p_bias=self.p_bias, mask_keys=False,
                       attention_dropout=self.attention_dropout_rate,
                       kernel_initializer=self.initializer, name=name)
        y = self.dropout(y, name + "-Dropout")
        x = self.apply([x, y], keras.layers.Add, name=name + "-Add")
        x = self.norm(x, name + "-Norm")
        name = self.block_name(index) + "-FeedForward"
        y = self.apply(x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
                       use_bias=self.use_bias, kernel_initializer=self.initializer, name=name)
        y = self.dropout(y, name + "-Dropout")
        x = self.apply([x, y], keras.layers.Add, name=name + "-Add")
        return self.norm(x, name + "-Norm")

    def apply_final_layers(self, x):
        outputs = [x]
        if self.with_pool:
            y = self.apply(x, TokenSlice, index=0, name="Pooler")
            activation = "tanh" if self.with_pool is True else self.with_pool
            y = self.apply(y, Dense, units=self.hidden_size, activation=activation,
                           kernel_initializer=self.initializer, name="Pooler-Dense")
            if self.with_nsp:
                activation = "softmax" if self.with_nsp is True else self.with_nsp
                y = self.apply(y, Dense, units=2, activation=activation,
                               kernel_initializer=self.initializer, name="NSP-Proba")
            outputs.append(y)
        if self.with_mlm:
            y = self.apply(x, Dense, units=self.embedding_size,
                           activation=B.get_activation(self.hidden_act),
                           kernel_initializer=self.initializer, name="MLM-Dense")
            y = self.norm(y, "MLM-Norm")
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


def bert_names_with_prefix(mapping, hf_prefix, drop=()):
    """BERT's name map with the Hugging Face ``bert.`` prefix replaced.

    For the families that reuse BERT's checkpoint names (NEZHA, RoFormer):
    Google names stay, Hugging Face names ``bert.x`` become ``hf_prefix + x``.

    Args:
        mapping: a name map as :attr:`BERT.name_map` (layer name -> list of
            ``(google_name, hf_name or None)``).
        hf_prefix: the family's Hugging Face prefix, e.g. ``"nezha."``.
        drop: layer names left out of the result.

    Returns:
        A new dict of the same form.
    """
    return {layer: [(google, None if hf is None else hf.replace("bert.", hf_prefix, 1))
                    for google, hf in pairs]
            for layer, pairs in mapping.items() if layer not in drop}


MODELS = {
    "bert": BERT,
    "roberta": BERT,  # Chinese RoBERTa-wwm releases use BERT's layout and names
}
