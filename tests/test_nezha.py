"""NEZHA against a NumPy forward pass written here from the paper and the
original code, on random weights stored in NEZHA's release format; the
former Hugging Face ``nezha.`` names; checkpoint round trip; ``.keras``
reload; wrong-family errors; and ``application='lm'|'unilm'`` on every
encoder family of this issue.

Reference: Wei et al. 2019, "NEZHA: Neural Contextualized Representation for
Chinese Language Understanding" (https://arxiv.org/abs/1909.00204), section
3.2 "Functional Relative Positional Encoding", and huawei-noah/
Pretrained-Language-Model ``NEZHA-TensorFlow/modeling.py``
(``_generate_relative_positions_matrix``: distance ``j - i`` clipped to
``[-M, M]`` and shifted by ``M``; ``_generate_relative_positions_embeddings``:
row ``r`` is ``sin(r / 10000^(2k/d))`` at ``2k`` and ``cos`` at ``2k+1``;
``attention_layer``: ``scores = (q k^T + q a^K^T) / sqrt(d)``, context
``= probs v + probs a^V`` with ``a^K = a^V`` that table). BERT's post-LN
block, pooler and MLM head around it as in google-research/bert.
"""

import json
import math

import keras
import numpy as np
import pytest

from conftest import save_tf1_checkpoint
from bert4keras.checkpoints import CheckpointError, open_checkpoint
from bert4keras.models import build_transformer_model

ATOL = 1e-5
CONFIG = dict(vocab_size=57, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, hidden_act="gelu", hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0, max_position_embeddings=512,
              type_vocab_size=2, initializer_range=0.02, max_relative_position=4,
              use_relative_position=True)


def random_nezha_weights(config, seed=0):
    """Random weights under NEZHA's (Google BERT's) variable names."""
    rng = np.random.RandomState(seed)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]

    def w(*shape, scale=0.2):
        return (scale * rng.randn(*shape)).astype("float32")

    t = {"bert/embeddings/word_embeddings": w(v, h, scale=0.5),
         "bert/embeddings/token_type_embeddings": w(2, h, scale=0.5),
         "bert/embeddings/LayerNorm/gamma": 1 + w(h, scale=0.1),
         "bert/embeddings/LayerNorm/beta": w(h, scale=0.1),
         "bert/pooler/dense/kernel": w(h, h), "bert/pooler/dense/bias": w(h),
         "cls/predictions/transform/dense/kernel": w(h, h),
         "cls/predictions/transform/dense/bias": w(h),
         "cls/predictions/transform/LayerNorm/gamma": 1 + w(h, scale=0.1),
         "cls/predictions/transform/LayerNorm/beta": w(h, scale=0.1),
         "cls/predictions/output_bias": w(v),
         "cls/seq_relationship/output_weights": w(2, h),
         "cls/seq_relationship/output_bias": w(2)}
    for n in range(config["num_hidden_layers"]):
        p = "bert/encoder/layer_%d/" % n
        for part in ("query", "key", "value"):
            t[p + "attention/self/%s/kernel" % part] = w(h, h)
            t[p + "attention/self/%s/bias" % part] = w(h)
        t[p + "attention/output/dense/kernel"] = w(h, h)
        t[p + "attention/output/dense/bias"] = w(h)
        t[p + "intermediate/dense/kernel"] = w(h, i)
        t[p + "intermediate/dense/bias"] = w(i)
        t[p + "output/dense/kernel"] = w(i, h)
        t[p + "output/dense/bias"] = w(h)
        for norm in ("attention/output/LayerNorm/", "output/LayerNorm/"):
            t[p + norm + "gamma"] = 1 + w(h, scale=0.1)
            t[p + norm + "beta"] = w(h, scale=0.1)
    return t


# -- the NumPy reference ----------------------------------------------------------

def layer_norm(x, gamma, beta, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def relative_position_table(length, depth, max_relative_position):
    """``(length, length, depth)``: NEZHA's ``_generate_relative_positions_embeddings``."""
    distance = np.arange(length)[None, :] - np.arange(length)[:, None]  # j - i
    index = np.clip(distance, -max_relative_position, max_relative_position)
    index = index + max_relative_position
    table = np.zeros((2 * max_relative_position + 1, depth))
    for pos in range(table.shape[0]):
        for k in range(depth // 2):
            table[pos, 2 * k] = np.sin(pos / np.power(10000, 2 * k / depth))
            table[pos, 2 * k + 1] = np.cos(pos / np.power(10000, 2 * k / depth))
    return table[index]


def nezha_reference(t, config, ids, seg):
    t = {k: v.astype("float64") for k, v in t.items()}
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    d = hidden // heads
    batch, length = ids.shape
    rel = relative_position_table(length, d, config["max_relative_position"])
    x = t["bert/embeddings/word_embeddings"][ids] + t["bert/embeddings/token_type_embeddings"][seg]
    x = layer_norm(x, t["bert/embeddings/LayerNorm/gamma"], t["bert/embeddings/LayerNorm/beta"])
    adder = (1.0 - (ids > 0)[:, None, None, :]) * -10000.0  # google-research/bert's mask
    for n in range(config["num_hidden_layers"]):
        p = "bert/encoder/layer_%d/" % n

        def proj(name, inp):
            scope = p + "attention/self/%s/" % name
            y = inp @ t[scope + "kernel"] + t[scope + "bias"]
            return y.reshape(batch, length, heads, d).transpose(0, 2, 1, 3)  # b h s d

        q, k, v = proj("query", x), proj("key", x), proj("value", x)
        scores = q @ k.transpose(0, 1, 3, 2) + np.einsum("bhid,ijd->bhij", q, rel)
        scores = scores / math.sqrt(d) + adder
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs = probs / probs.sum(-1, keepdims=True)
        context = probs @ v + np.einsum("bhij,ijd->bhid", probs, rel)
        context = context.transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        out = (context @ t[p + "attention/output/dense/kernel"]
               + t[p + "attention/output/dense/bias"])
        x = layer_norm(x + out, t[p + "attention/output/LayerNorm/gamma"],
                       t[p + "attention/output/LayerNorm/beta"])
        ffn = gelu(x @ t[p + "intermediate/dense/kernel"] + t[p + "intermediate/dense/bias"])
        ffn = ffn @ t[p + "output/dense/kernel"] + t[p + "output/dense/bias"]
        x = layer_norm(x + ffn, t[p + "output/LayerNorm/gamma"], t[p + "output/LayerNorm/beta"])
    pooled = np.tanh(x[:, 0] @ t["bert/pooler/dense/kernel"] + t["bert/pooler/dense/bias"])
    nsp = (pooled @ t["cls/seq_relationship/output_weights"].T
           + t["cls/seq_relationship/output_bias"])
    y = gelu(x @ t["cls/predictions/transform/dense/kernel"]
             + t["cls/predictions/transform/dense/bias"])
    y = layer_norm(y, t["cls/predictions/transform/LayerNorm/gamma"],
                   t["cls/predictions/transform/LayerNorm/beta"])
    mlm = y @ t["bert/embeddings/word_embeddings"].T + t["cls/predictions/output_bias"]
    return dict(sequence=x, pooled=pooled, nsp=nsp, mlm=mlm)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nezha_weights():
    return random_nezha_weights(CONFIG)


@pytest.fixture(scope="module")
def google_nezha(nezha_weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("nezha")
    save_tf1_checkpoint(nezha_weights, str(path / "model.ckpt-900000"))
    with open(path / "bert_config.json", "w") as f:
        json.dump(CONFIG, f)
    return str(path)


@pytest.fixture(scope="module")
def hf_nezha(nezha_weights, tmp_path_factory):
    """The same weights under transformers 4.x ``NezhaForPreTraining`` names."""
    from safetensors.numpy import save_file

    tensors = {}
    for name, value in nezha_weights.items():
        hf = name.replace("bert/", "nezha/").replace("/", ".")
        hf = hf.replace("layer_", "layer.").replace(".gamma", ".weight").replace(".beta", ".bias")
        if hf.endswith(".kernel"):
            hf, value = hf[: -len(".kernel")] + ".weight", value.T
        elif "embeddings" in hf and "LayerNorm" not in hf:
            hf += ".weight"
        hf = hf.replace("cls.predictions.output_bias", "cls.predictions.bias")
        hf = hf.replace("cls.seq_relationship.output_weights", "cls.seq_relationship.weight")
        hf = hf.replace("cls.seq_relationship.output_bias", "cls.seq_relationship.bias")
        tensors[hf] = np.ascontiguousarray(value)
    path = tmp_path_factory.mktemp("hf_nezha")
    save_file(tensors, str(path / "model.safetensors"))
    config = dict(CONFIG, model_type="nezha", architectures=["NezhaForPreTraining"])
    with open(path / "config.json", "w") as f:
        json.dump(config, f)
    return str(path)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.RandomState(5)
    ids = rng.randint(1, CONFIG["vocab_size"], (3, 13)).astype("int32")
    seg = rng.randint(0, 2, (3, 13)).astype("int32")
    ids[0, 9:] = 0
    seg[0, 9:] = 0
    return ids, seg


def our_outputs(config, checkpoint, ids, seg):
    sequence = build_transformer_model(config, checkpoint, model="nezha")
    pooled = build_transformer_model(config, checkpoint, model="nezha", with_pool=True)
    heads = build_transformer_model(config, checkpoint, model="nezha", with_nsp="linear",
                                    with_mlm="linear")
    nsp, mlm = heads.predict([ids, seg], verbose=0)
    return dict(sequence=sequence.predict([ids, seg], verbose=0),
                pooled=pooled.predict([ids, seg], verbose=0), nsp=nsp, mlm=mlm)


def assert_close(ours, theirs):
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], atol=ATOL, rtol=0, err_msg=key)


# -- tests ------------------------------------------------------------------------------

def test_google_checkpoint_matches_numpy_reference(google_nezha, nezha_weights, inputs):
    ids, seg = inputs  # length 13 > max_relative_position 4: the clipping is exercised
    assert_close(our_outputs(google_nezha, google_nezha, ids, seg),
                 nezha_reference(nezha_weights, CONFIG, ids, seg))


def test_relative_position_table(google_nezha):
    model = build_transformer_model(google_nezha, model="nezha")
    layer = model.get_layer("Embedding-Relative-Position")
    x = np.zeros((1, 9, 8), "float32")
    table = keras.ops.convert_to_numpy(layer([x, x]))
    np.testing.assert_allclose(table, relative_position_table(9, 8, 4), atol=1e-6)
    assert not layer.weights  # functional: nothing to load or train


def test_hf_nezha_names_load_the_same(hf_nezha, nezha_weights, inputs):
    ids, seg = inputs
    assert_close(our_outputs(hf_nezha, hf_nezha, ids, seg),
                 nezha_reference(nezha_weights, CONFIG, ids, seg))


def test_save_weights_as_checkpoint_round_trip(google_nezha, nezha_weights, inputs, tmp_path):
    ids, seg = inputs
    transformer = build_transformer_model(google_nezha, google_nezha, model="nezha",
                                          with_nsp=True, with_mlm=True, return_keras_model=False)
    out = str(tmp_path / "nezha.ckpt")
    transformer.save_weights_as_checkpoint(out)
    assert set(open_checkpoint(out).names()) == set(nezha_weights)
    assert_close(our_outputs(google_nezha, out, ids, seg),
                 nezha_reference(nezha_weights, CONFIG, ids, seg))


def test_keras_file_reloads_and_predicts_the_same(google_nezha, inputs, tmp_path):
    ids, seg = inputs
    model = build_transformer_model(google_nezha, google_nezha, model="nezha", with_mlm=True)
    model.save(tmp_path / "nezha.keras")
    loaded = keras.saving.load_model(tmp_path / "nezha.keras")
    np.testing.assert_allclose(loaded.predict([ids, seg], verbose=0),
                               model.predict([ids, seg], verbose=0), atol=1e-6)


def test_bert_on_a_nezha_checkpoint_names_the_family(google_nezha):
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(google_nezha, google_nezha, model="bert")
    message = str(info.value)
    assert "bert/embeddings/position_embeddings" in message
    assert "look like model='nezha' or 'roformer'" in message


def test_nezha_on_a_bert_checkpoint_warns(google_bert):
    with pytest.warns(UserWarning, match="looks like model='bert'"):
        build_transformer_model(google_bert, google_bert, model="nezha")


# -- application='lm' / 'unilm' on every encoder family ------------------------------

SMALL = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=24, max_position=32)


def _changed_positions(model, ids, seg, position):
    base = model.predict([ids, seg], verbose=0)
    changed = ids.copy()
    changed[:, position] = changed[:, position] % 39 + 1
    new = model.predict([changed, seg], verbose=0)
    return np.abs(new - base).max(axis=(0, 2)) > 1e-6


@pytest.mark.parametrize("family", ["albert", "albert_unshared", "nezha", "electra",
                                    "roformer", "roformer_v2"])
def test_lm_and_unilm_applications(family):
    extra = {"embedding_size": 8} if family in ("albert", "albert_unshared", "electra") else {}
    keras.utils.set_random_seed(0)
    ids = np.arange(1, 9, dtype="int32")[None]
    seg = np.array([[0, 0, 0, 1, 1, 1, 1, 1]], "int32")
    n = ids.shape[1]
    lm = build_transformer_model(model=family, application="lm", with_mlm=False, **SMALL, **extra)
    unilm = build_transformer_model(model=family, application="unilm", with_mlm=False, **SMALL,
                                   **extra)
    for position in range(n):
        np.testing.assert_array_equal(_changed_positions(lm, ids, seg, position),
                                      np.arange(n) >= position, err_msg="lm %d" % position)
        expected = np.ones(n, bool) if seg[0, position] == 0 else np.arange(n) >= position
        np.testing.assert_array_equal(_changed_positions(unilm, ids, seg, position), expected,
                                      err_msg="unilm %d" % position)
