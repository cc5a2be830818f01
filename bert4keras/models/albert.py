"""ALBERT (Lan et al. 2020, https://arxiv.org/abs/1909.11942).

BERT with a factorised embedding (``embedding_size`` columns, then
``Embedding-Mapping`` up to ``hidden_size``) and one set of block weights
shared by every layer. Google's release stores that block once, under
``bert/encoder/transformer/group_0/inner_group_0/``; Hugging Face under
``albert.encoder.albert_layer_groups.0.albert_layers.0.``.
"""

import numpy as np
from keras import ops

from bert4keras.models.bert import BERT

_GOOGLE_BLOCK = "bert/encoder/transformer/group_0/inner_group_0/"
_HF_BLOCK = "albert.encoder.albert_layer_groups.0.albert_layers.0."

#: The shared block, keyed by the layer-name suffix after ``Transformer[-i]``.
_BLOCK = {
    "-MultiHeadSelfAttention": [
        (_GOOGLE_BLOCK + "attention_1/self/query/kernel", _HF_BLOCK + "attention.query.weight:T"),
        (_GOOGLE_BLOCK + "attention_1/self/query/bias", _HF_BLOCK + "attention.query.bias"),
        (_GOOGLE_BLOCK + "attention_1/self/key/kernel", _HF_BLOCK + "attention.key.weight:T"),
        (_GOOGLE_BLOCK + "attention_1/self/key/bias", _HF_BLOCK + "attention.key.bias"),
        (_GOOGLE_BLOCK + "attention_1/self/value/kernel", _HF_BLOCK + "attention.value.weight:T"),
        (_GOOGLE_BLOCK + "attention_1/self/value/bias", _HF_BLOCK + "attention.value.bias"),
        (_GOOGLE_BLOCK + "attention_1/output/dense/kernel", _HF_BLOCK + "attention.dense.weight:T"),
        (_GOOGLE_BLOCK + "attention_1/output/dense/bias", _HF_BLOCK + "attention.dense.bias"),
    ],
    "-MultiHeadSelfAttention-Norm": [
        (_GOOGLE_BLOCK + "LayerNorm/gamma", _HF_BLOCK + "attention.LayerNorm.weight"),
        (_GOOGLE_BLOCK + "LayerNorm/beta", _HF_BLOCK + "attention.LayerNorm.bias"),
    ],
    "-FeedForward": [
        (_GOOGLE_BLOCK + "ffn_1/intermediate/dense/kernel", _HF_BLOCK + "ffn.weight:T"),
        (_GOOGLE_BLOCK + "ffn_1/intermediate/dense/bias", _HF_BLOCK + "ffn.bias"),
        (_GOOGLE_BLOCK + "ffn_1/intermediate/output/dense/kernel",
         _HF_BLOCK + "ffn_output.weight:T"),
        (_GOOGLE_BLOCK + "ffn_1/intermediate/output/dense/bias", _HF_BLOCK + "ffn_output.bias"),
    ],
    "-FeedForward-Norm": [
        (_GOOGLE_BLOCK + "LayerNorm_1/gamma", _HF_BLOCK + "full_layer_layer_norm.weight"),
        (_GOOGLE_BLOCK + "LayerNorm_1/beta", _HF_BLOCK + "full_layer_layer_norm.bias"),
    ],
}

#: Embeddings and heads: Google's names are BERT's; Hugging Face's differ.
_HF_OUTSIDE = {
    "Embedding-Token": ["albert.embeddings.word_embeddings.weight"],
    "Embedding-Segment": ["albert.embeddings.token_type_embeddings.weight"],
    "Embedding-Position": ["albert.embeddings.position_embeddings.weight"],
    "Embedding-Norm": ["albert.embeddings.LayerNorm.weight", "albert.embeddings.LayerNorm.bias"],
    "Embedding-Mapping": ["albert.encoder.embedding_hidden_mapping_in.weight:T",
                          "albert.encoder.embedding_hidden_mapping_in.bias"],
    "Pooler-Dense": ["albert.pooler.weight:T", "albert.pooler.bias"],
    "NSP-Proba": ["sop_classifier.classifier.weight:T", "sop_classifier.classifier.bias"],
    "MLM-Dense": ["predictions.dense.weight:T", "predictions.dense.bias"],
    "MLM-Norm": ["predictions.LayerNorm.weight", "predictions.LayerNorm.bias"],
    "MLM-Bias": ["predictions.bias|predictions.decoder.bias"],
}


def _outside_map():
    return {layer: [(google, hf) for (google, _), hf in zip(BERT.name_map[layer], names)]
            for layer, names in _HF_OUTSIDE.items()}


class ALBERT(BERT):
    """ALBERT with its one shared block (layer names without an index:
    ``Transformer-MultiHeadSelfAttention``, ``Transformer-FeedForward``,
    ``...-Norm``, as the original bert4keras).

    Args: as :class:`BERT`, plus ``embedding_size`` (128 in the releases).
    ``with_nsp`` is ALBERT's sentence-order head (same variable names).
    ``num_hidden_groups`` / ``inner_group_num`` must be 1 (every release).
    """

    name_map = {**_outside_map(), **{"Transformer" + k: v for k, v in _BLOCK.items()}}
    block_name_map = {}
    hf_prefixes = ("albert.",)
    config_keys = {"embedding_size": "embedding_size"}
    hf_model_type = "albert"
    hf_architectures = {"": "AlbertModel", "mlm": "AlbertForMaskedLM",
                        "mlm+nsp": "AlbertForPreTraining"}
    signature = {
        "family": "albert",
        "present": [(_GOOGLE_BLOCK + "attention_1/self/query/kernel",
                     _HF_BLOCK + "attention.query.weight")],
    }

    def __init__(self, num_hidden_groups=1, inner_group_num=1, **kwargs):
        if num_hidden_groups != 1 or inner_group_num != 1:
            raise ValueError("Only ALBERT with num_hidden_groups=1 and inner_group_num=1 (every "
                             "released model) is supported; got %s and %s"
                             % (num_hidden_groups, inner_group_num))
        super().__init__(**kwargs)

    def block_name(self, index):
        return "Transformer"

    def has_embedding_mapping(self):
        """ALBERT always projects its embeddings (Google's
        ``embedding_hidden_mapping_in``, transformers' likewise), even when
        ``embedding_size == hidden_size``: skipping it would silently drop a
        stored weight."""
        return True


class ALBERT_Unshared(ALBERT):
    """ALBERT's weights in BERT's per-layer layout (``Transformer-%d-...``):
    the shared checkpoint block is loaded into every layer, which can then be
    fine-tuned apart. The checkpoint formats hold one shared block, so
    ``save_weights_as_checkpoint`` writes only while every layer still holds
    the same values, and raises once they differ (it would otherwise keep
    one layer and silently drop the others)."""

    name_map = _outside_map()
    block_name_map = {"Transformer-{i}" + k: v for k, v in _BLOCK.items()}

    def block_name(self, index):
        return "Transformer-%d" % index

    def checkpoint_tensors(self, fmt="google"):
        """As :meth:`Transformer.checkpoint_tensors`, after checking that the
        per-layer copies of the shared block are still equal.

        Raises:
            ValueError: naming the first weight whose layers differ.
        """
        first = {}
        for index in range(self.num_hidden_layers):
            for suffix in _BLOCK:
                layer = self.layers.get(("Transformer-%d" % index) + suffix)
                if layer is None:
                    continue
                for position, weight in enumerate(layer.weights):
                    value = np.asarray(ops.convert_to_numpy(weight))
                    key = (suffix, position)
                    if key not in first:
                        first[key] = value
                    elif not np.array_equal(first[key], value):
                        raise ValueError(
                            "ALBERT_Unshared: weight %s differs from Transformer-0's; ALBERT's "
                            "checkpoint formats hold one shared block, so these layers cannot be "
                            "written without losing some of them" % weight.path)
        return super().checkpoint_tensors(fmt)


MODELS = {
    "albert": ALBERT,
    "albert_unshared": ALBERT_Unshared,
}
