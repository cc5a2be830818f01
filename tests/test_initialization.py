"""Random initialisation: every weight gets its own draw.

A Keras 3 initializer instance without a seed fixes its seed when created, so
sharing one instance between weights of the same shape gives them identical
values. Before this was fixed, every query/key/value/output kernel of every
block started identical, and models trained from scratch sat for thousands of
steps on the unigram plateau (attention could only look at the token itself).
"""

import json

import keras
import numpy as np

from bert4keras.layers import GlobalPointer, MultiHeadAttention
from bert4keras.models import build_transformer_model

CONFIG = dict(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
              intermediate_size=16, max_position_embeddings=32, type_vocab_size=2,
              hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def kernels(model):
    return {w.path: np.asarray(w.numpy()) for w in model.weights if w.path.endswith("kernel")}


def test_every_kernel_starts_different_and_seeded_runs_repeat(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(CONFIG))
    keras.utils.set_random_seed(3)
    model = build_transformer_model(str(path), None, with_mlm=True, with_pool=True)
    values = kernels(model)
    # q, k, v, o and both FFN kernels of all 3 blocks are (hidden, hidden): all distinct
    square = {k: v for k, v in values.items() if v.shape == (16, 16)}
    assert len(square) >= 3 * 6
    names = sorted(square)
    for i, a in enumerate(names):
        assert np.std(square[a]) > 0.01, a  # TruncatedNormal(0.02), not zeros
        for b in names[i + 1:]:
            assert not np.allclose(square[a], square[b]), (a, b)
    keras.utils.set_random_seed(3)
    again = kernels(build_transformer_model(str(path), None, with_mlm=True, with_pool=True))
    assert sorted(again) == sorted(values)
    for name in values:
        np.testing.assert_array_equal(again[name], values[name], err_msg=name)


def test_layers_given_one_initializer_instance_draw_per_weight():
    init = keras.initializers.GlorotUniform()
    attention = MultiHeadAttention(heads=2, head_size=4, kernel_initializer=init)
    x = np.ones((1, 3, 8), "float32")
    attention([x, x, x])
    q, k, v, o = (np.asarray(d.kernel.numpy()) for d in
                  (attention.q_dense, attention.k_dense, attention.v_dense, attention.o_dense))
    assert not np.allclose(q, k) and not np.allclose(k, v) and not np.allclose(v, o)
    pointer = GlobalPointer(heads=2, head_size=4, kernel_initializer=init)
    pointer(x)
    # a seeded initializer stays as given (the user asked for those values)
    seeded = MultiHeadAttention(heads=2, head_size=4,
                                kernel_initializer=keras.initializers.GlorotUniform(seed=1))
    seeded([x, x, x])
    np.testing.assert_array_equal(seeded.q_dense.kernel.numpy(), seeded.k_dense.kernel.numpy())
