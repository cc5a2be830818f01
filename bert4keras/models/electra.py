"""ELECTRA (Clark et al. 2020, https://arxiv.org/abs/2003.10555).

The discriminator is a BERT encoder stored under ``electra/`` (Google,
google-research/electra) or ``electra.`` (Hugging Face); with
``embedding_size != hidden_size`` the projection is ``electra/embeddings_project``.
Its replaced-token head is ``discriminator_predictions/dense`` (hidden ->
hidden, the hidden activation) then ``discriminator_predictions/dense_1``
(hidden -> 1), in Hugging Face ``...dense`` and ``...dense_prediction``.
"""

from bert4keras import backend as B
from bert4keras.layers import Dense
from bert4keras.models.bert import BERT

_ENCODER_LAYERS = ("Embedding-Token", "Embedding-Segment", "Embedding-Position",
                   "Embedding-Norm")


def _electra_names(pairs):
    return [(google.replace("bert/", "electra/", 1), hf.replace("bert.", "electra.", 1))
            for google, hf in pairs]


class ELECTRA(BERT):
    """ELECTRA's discriminator encoder.

    Args: as :class:`BERT` (``embedding_size`` for the small/base
    releases' factorised embedding) except the heads: ELECTRA checkpoints have
    no pooler, NSP or MLM head, so ``with_pool``/``with_nsp``/``with_mlm`` are
    refused.
        with_discriminator: add ``Discriminator-Dense`` (hidden units, the
            hidden activation) and ``Discriminator-Prediction`` (1 unit,
            ``'sigmoid'`` or the given activation, e.g. ``'linear'`` for
            logits). Output ``(batch, seq_len, 1)``: the probability (or
            logit) that each token was replaced.
    """

    name_map = {
        **{layer: _electra_names(BERT.name_map[layer]) for layer in _ENCODER_LAYERS},
        "Embedding-Mapping": [("electra/embeddings_project/kernel",
                               "electra.embeddings_project.weight:T"),
                              ("electra/embeddings_project/bias",
                               "electra.embeddings_project.bias")],
        "Discriminator-Dense": [("discriminator_predictions/dense/kernel",
                                 "discriminator_predictions.dense.weight:T"),
                                ("discriminator_predictions/dense/bias",
                                 "discriminator_predictions.dense.bias")],
        "Discriminator-Prediction": [("discriminator_predictions/dense_1/kernel",
                                      "discriminator_predictions.dense_prediction.weight:T"),
                                     ("discriminator_predictions/dense_1/bias",
                                      "discriminator_predictions.dense_prediction.bias")],
    }
    block_name_map = {layer: _electra_names(pairs) for layer, pairs in BERT.block_name_map.items()}
    hf_prefixes = ("electra.",)
    config_keys = {"embedding_size": "embedding_size"}
    hf_model_type = "electra"
    hf_architectures = {"": "ElectraModel", "discriminator": "ElectraForPreTraining"}
    signature = {
        "family": "electra",
        "present": [("electra/encoder/layer_0/attention/self/query/kernel",
                     "electra.encoder.layer.0.attention.self.query.weight")],
    }

    def __init__(self, with_discriminator=False, **kwargs):
        for head in ("with_pool", "with_nsp", "with_mlm"):
            if kwargs.get(head):
                raise ValueError("ELECTRA has no %s head in its checkpoints (use "
                                 "with_discriminator, or build on the sequence output)"
                                 % head[len("with_"):])
        super().__init__(**kwargs)
        self.with_discriminator = with_discriminator

    def apply_final_layers(self, x):
        if not self.with_discriminator:
            return x
        x = self.apply(x, Dense, units=self.hidden_size,
                       activation=B.get_activation(self.hidden_act),
                       kernel_initializer=self.initializer, name="Discriminator-Dense")
        activation = "sigmoid" if self.with_discriminator is True else self.with_discriminator
        return self.apply(x, Dense, units=1, activation=activation,
                          kernel_initializer=self.initializer, name="Discriminator-Prediction")


MODELS = {"electra": ELECTRA}
