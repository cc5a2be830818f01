"""NEZHA (Wei et al. 2019, https://arxiv.org/abs/1909.00204).

BERT without the absolute position embedding: every attention layer adds
fixed sinusoidal embeddings of the clipped relative distance to the keys (in
the scores) and to the values (in the output), the "functional relative
position encoding" of huawei-noah/Pretrained-Language-Model (NEZHA), with
``max_relative_position = 64``. Checkpoints use Google BERT's names
(``bert/...``); Hugging Face's former ``NezhaModel`` (transformers 4.x,
removed in 5.x) used BERT's with a ``nezha.`` prefix.
"""

from bert4keras.layers import RelativePositionEmbedding
from bert4keras.models.bert import BERT, bert_names_with_prefix


class NEZHA(BERT):
    """NEZHA: BERT's layers and names, no ``Embedding-Position``, and
    ``MultiHeadAttention(p_bias='typical_relative')`` fed by one shared
    ``Embedding-Relative-Position`` layer (no weights).

    Args: as :class:`BERT`, plus
        max_relative_position: the clipping distance ``M`` (64 in NEZHA's
            ``bert_config.json``); the table has ``2M + 1`` rows.
    Sequences are not limited by ``max_position``.
    """

    name_map = bert_names_with_prefix(BERT.name_map, "nezha.", drop=("Embedding-Position",))
    block_name_map = bert_names_with_prefix(BERT.block_name_map, "nezha.")
    hf_prefixes = ("nezha.",)
    hf_model_type = None  # transformers 5 has no NEZHA class: save with format='google'
    hf_architectures = {}
    signature = {
        "family": "nezha",
        "present": [("bert/encoder/layer_0/attention/self/query/kernel",
                     "nezha.encoder.layer.0.attention.self.query.weight"),
                    ("bert/encoder/layer_0/attention/self/query/bias",
                     "nezha.encoder.layer.0.attention.self.query.bias")],
        "absent": [("bert/embeddings/position_embeddings",
                    "nezha.embeddings.position_embeddings.weight")],
    }
    absolute_positions = False
    p_bias = "typical_relative"

    def __init__(self, max_relative_position=64, **kwargs):
        super().__init__(**kwargs)
        self.max_relative_position = int(max_relative_position)

    def attention_inputs(self, x, attention_bias):
        position = self.shared_by_blocks("position", lambda: self.apply(  # one table per pass
            [x, x], RelativePositionEmbedding, input_dim=2 * self.max_relative_position + 1,
            output_dim=self.attention_key_size, name="Embedding-Relative-Position"))
        return [x, x, x, attention_bias, position]


MODELS = {"nezha": NEZHA}
