"""bert4keras 0.11.5's ``bert4keras.models`` surface: the class names, the
``build_transformer_model`` options and the ``Transformer`` helper methods.

Numbers are checked against NumPy (a BERT forward pass written here from
the weights, the checkpoint's stored tensors) or against exact identities
(hierarchical positions equal the table below ``max_position``; doubling
the feed-forward width by ``autoresize_weights`` keeps the outputs).
tests/test_backends.py reruns the numerical tests in its JAX process
(``COMPAT_MODELS_NUMERICAL``).
"""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from scipy.special import erf

from bert4keras.checkpoints import CheckpointError
from bert4keras.models import BERT, build_transformer_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_DIR = os.path.join(ROOT, "checkpoints", "chinese_bert_small")
SMALL_CONFIG = os.path.join(SMALL_DIR, "bert_config.json")
TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position=24, dropout_rate=0.0)
ATOL = 2e-5


def stored(name):
    """A tensor of the shipped small checkpoint, read by TensorFlow itself."""
    import tensorflow as tf

    return tf.train.load_variable(SMALL_DIR, name)


def tiny(**kwargs):
    keras.utils.set_random_seed(1)
    return build_transformer_model(None, return_keras_model=False, **dict(TINY, **kwargs))


def randomize(transformer, seed=0):
    """Non-trivial values for every weight (LayerNorm too)."""
    rng = np.random.default_rng(seed)
    for w in transformer.model.weights:
        w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))


def ids_and_segments(batch=2, length=7, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (batch, length)).astype("int32")
    ids[1, -2:] = 0  # padding
    seg = (np.arange(length)[None] >= length // 2).astype("int32").repeat(batch, 0)
    return ids, seg


# -- a NumPy BERT (the reference) -------------------------------------------------------

def np_layer_norm(x, gamma, beta, eps=1e-12):
    x = x - x.mean(-1, keepdims=True)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * gamma + beta


def np_bert(t, ids, seg, positions=None, residual=False, caches=None):
    """Post-LN BERT on ``t``'s weights (erf GELU, padding mask); ``residual``:
    RealFormer as 0.11.5 (the previous layer's scaled scores added to the
    logits); ``caches``: ``{block index: (k_cache, v_cache)}`` put in front
    of that block's keys/values, visible to every query."""
    def w(name):
        return [np.asarray(v, "float64") for v in t.layers[name].get_weights()]

    n = ids.shape[1]
    positions = np.arange(n)[None] if positions is None else positions
    x = w("Embedding-Token")[0][ids] + w("Embedding-Segment")[0][seg] \
        + w("Embedding-Position")[0][positions]
    x = np_layer_norm(x, *w("Embedding-Norm"))
    mask = np.where(ids > 0, 0.0, -1e12)[:, None, None, :]
    heads, prev = t.num_attention_heads, None
    for i in range(t.num_hidden_layers):
        name = "Transformer-%d-MultiHeadSelfAttention" % i
        wq, bq, wk, bk, wv, bv, wo, bo = w(name)
        kv, bias = x, mask
        if caches and i in caches:
            kc, vc = caches[i]
            bias = np.concatenate([np.zeros(mask.shape[:-1] + (kc.shape[1],)), mask], -1)
        b, d = x.shape[0], x.shape[-1] // heads
        q = (x @ wq + bq).reshape(b, n, heads, d)
        k, v = kv @ wk + bk, kv @ wv + bv
        if caches and i in caches:
            k = np.concatenate([caches[i][0] @ wk + bk, k], 1)
            v = np.concatenate([caches[i][1] @ wv + bv, v], 1)
        k, v = k.reshape(b, -1, heads, d), v.reshape(b, -1, heads, d)
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
        logits = scores + bias + (prev if residual and prev is not None else 0)
        prev = scores
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        o = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, n, heads * d) @ wo + bo
        x = np_layer_norm(x + o, *w(name + "-Norm"))
        name = "Transformer-%d-FeedForward" % i
        w1, b1, w2, b2 = w(name)
        h = x @ w1 + b1
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        x = np_layer_norm(x + h @ w2 + b2, *w(name + "-Norm"))
    return x


# -- names -----------------------------------------------------------------------------------

NAMES_0115 = ["Transformer", "LM_Mask", "UniLM_Mask", "BERT", "ALBERT", "ALBERT_Unshared",
              "NEZHA", "RoFormer", "RoFormerV2", "ELECTRA", "GPT", "GPT2", "GPT2_ML",
              "T5_Base", "T5_Encoder", "T5_Decoder", "T5", "extend_with_language_model",
              "extend_with_unified_language_model", "data_parallel", "build_transformer_model"]


def test_every_0115_model_name_is_importable():
    import bert4keras.models as models

    namespace = {}
    exec("from bert4keras.models import *", namespace)
    for name in NAMES_0115:
        assert name in models.__all__ and name in namespace, name
    for name in NAMES_0115[3:17]:
        cls = getattr(models, name)
        assert issubclass(cls, models.Transformer) and cls.__name__ == name, name


def test_lm_mask_mixins_and_extend_with():
    from bert4keras.models import LM_Mask, extend_with_language_model, \
        extend_with_unified_language_model

    class MyLM(LM_Mask, BERT):
        pass

    ids, seg = ids_and_segments()
    expected = tiny(application="lm", with_mlm=True)
    expected_out = expected.model.predict([ids, seg], verbose=0)
    for cls in (extend_with_language_model(BERT), MyLM):
        t = tiny(model=cls, **({"with_mlm": True} if cls is MyLM else {}))
        assert t.application == "lm" and t.with_mlm
        np.testing.assert_allclose(t.model.predict([ids, seg], verbose=0), expected_out,
                                   atol=ATOL)
    unilm = tiny(model=extend_with_unified_language_model(BERT))
    assert unilm.application == "unilm" and unilm.with_mlm
    assert unilm.model.get_layer("Attention-UniLM-Mask") is not None


# -- options ---------------------------------------------------------------------------------

def test_hierarchical_position_1024_tokens_on_a_512_position_model():
    """First 512 outputs of a causal model on 1,024 tokens == the plain model's
    on those 512 tokens; positions >= 512 follow Su's decomposition."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 13585, (1, 1024)).astype("int32")
    seg = np.zeros_like(ids)
    plain = build_transformer_model(SMALL_CONFIG, SMALL_DIR, application="lm", with_mlm=False)
    long = build_transformer_model(SMALL_CONFIG, SMALL_DIR, application="lm", with_mlm=False,
                                   hierarchical_position=True, return_keras_model=False)
    out_long = long.model.predict([ids, seg], verbose=0)
    assert out_long.shape == (1, 1024, 192) and np.isfinite(out_long).all()
    out_plain = plain.predict([ids[:, :512], seg[:, :512]], verbose=0)
    np.testing.assert_allclose(out_long[:, :512], out_plain, atol=1e-4, rtol=0)
    assert not np.allclose(out_long[:, 512:], out_long[:, :512], atol=1e-2)
    # the position codes themselves, from the stored table
    table = stored("bert/embeddings/position_embeddings").astype("float64")
    alpha = 0.4
    u = (table - alpha * table[:1]) / (1 - alpha)
    layer = long.layers["Embedding-Position"]
    got = keras.ops.convert_to_numpy(layer(keras.ops.zeros((1, 1024, 192))))[0]
    for p in (0, 511, 512, 700, 1023):
        want = table[p] if p < 512 else alpha * u[p // 512] + (1 - alpha) * u[p % 512]
        np.testing.assert_allclose(got[p], want, atol=1e-5, err_msg=str(p))


def test_custom_position_ids():
    ids, seg = ids_and_segments()
    t = tiny(custom_position_ids=True)
    randomize(t)
    assert [i.name for i in t.model.inputs] == ["Input-Token", "Input-Segment", "Input-Position"]
    positions = (np.arange(7)[None] * 2 + np.array([[1], [3]])).astype("int32")
    out = t.model.predict([ids, seg, positions], verbose=0)
    np.testing.assert_allclose(out, np_bert(t, ids, seg, positions), atol=1e-4)


def test_custom_position_ids_rotary_is_shift_invariant():
    """RoFormer's rotary attention depends on position differences only."""
    ids, seg = ids_and_segments()
    plain = tiny(model="roformer")
    shifted = tiny(model="roformer", custom_position_ids=True, layers=plain)
    randomize(plain)
    positions = (np.arange(7)[None] + np.array([[5], [11]])).astype("int32")
    np.testing.assert_allclose(shifted.model.predict([ids, seg, positions], verbose=0),
                               plain.model.predict([ids, seg], verbose=0), atol=1e-4)
    assert not np.allclose(shifted.model.predict([ids, seg, positions * 2], verbose=0),
                           plain.model.predict([ids, seg], verbose=0), atol=1e-3)


def test_compound_tokens_rows_are_means_of_the_stored_rows():
    compound = [[101, 102, 103], ([7, 8], [3.0, 1.0])]
    t = build_transformer_model(SMALL_CONFIG, SMALL_DIR, with_mlm=True,
                                compound_tokens=compound, return_keras_model=False)
    assert t.vocab_size == 13585 + 2
    table = stored("bert/embeddings/word_embeddings")
    bias = stored("cls/predictions/output_bias")
    got = t.layers["Embedding-Token"].get_weights()[0]
    np.testing.assert_allclose(got[:13585], table, atol=0)
    np.testing.assert_allclose(got[13585], table[[101, 102, 103]].mean(0), atol=1e-6)
    np.testing.assert_allclose(got[13586], (3 * table[7] + table[8]) / 4, atol=1e-6)
    got_bias = t.layers["MLM-Bias"].get_weights()[0]
    np.testing.assert_allclose(got_bias[13586], (3 * bias[7] + bias[8]) / 4, atol=1e-6)
    assert t.model.output.shape[-1] == 13587
    # with keep_tokens: the ids of compound_tokens index the kept vocabulary
    keep = [0, 100, 101, 102, 5000]
    t = build_transformer_model(SMALL_CONFIG, SMALL_DIR, keep_tokens=keep,
                                compound_tokens=[[1, 4]], return_keras_model=False)
    got = t.layers["Embedding-Token"].get_weights()[0]
    np.testing.assert_allclose(got[:5], table[keep], atol=0)
    np.testing.assert_allclose(got[5], (table[100] + table[5000]) / 2, atol=1e-6)
    np.testing.assert_allclose(t.load_embeddings(table)[5], got[5], atol=1e-6)


def test_layers_shares_one_weight_set_between_two_models():
    ids, seg = ids_and_segments()
    encoder = tiny()
    lm = tiny(with_mlm=True, application="unilm", layers=encoder.layers)
    shared = set(encoder.layers)
    assert all(lm.layers[n] is encoder.layers[n] for n in shared)
    own = {id(w) for w in encoder.model.weights}
    extra = [w for w in lm.model.weights if id(w) not in own]
    assert {w.path.split("/")[0] for w in extra} == {"MLM-Dense", "MLM-Norm", "MLM-Bias"}
    randomize(encoder, seed=3)  # changes the LM too
    randomize_only = {"MLM-Dense", "MLM-Norm", "MLM-Bias"}
    for name in randomize_only:
        for w in lm.layers[name].weights:
            w.assign(np.random.default_rng(4).normal(0, 0.3, w.shape).astype("float32"))
    # the LM's probabilities from the encoder's weights (UniLM mask: no padding here)
    ids = np.where(ids == 0, 3, ids).astype("int32")
    x = np_bert(encoder, ids, np.zeros_like(ids))
    kernel, bias = lm.layers["MLM-Dense"].get_weights()
    x = x @ kernel + bias
    x = np_layer_norm(0.5 * x * (1 + erf(x / np.sqrt(2))), *lm.layers["MLM-Norm"].get_weights())
    logits = x @ encoder.layers["Embedding-Token"].get_weights()[0].T \
        + lm.layers["MLM-Bias"].get_weights()[0]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(lm.model.predict([ids, np.zeros_like(ids)], verbose=0), probs,
                               atol=1e-5)
    # one set of weights: a training step of the LM moves the encoder's weights
    before = encoder.layers["Transformer-0-FeedForward"].get_weights()[0].copy()
    lm.model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    lm.model.train_on_batch([ids, seg], ids)
    assert not np.allclose(encoder.layers["Transformer-0-FeedForward"].get_weights()[0], before)
    # a Transformer object works as `layers=` too
    again = tiny(layers=lm)
    assert again.layers["Embedding-Token"] is encoder.layers["Embedding-Token"]


def test_prefix_names_every_layer_and_input():
    t = build_transformer_model(SMALL_CONFIG, SMALL_DIR, prefix="Student-",
                                return_keras_model=False)
    plain = build_transformer_model(SMALL_CONFIG, SMALL_DIR)
    assert all(layer.name.startswith("Student-") for layer in t.model.layers)
    assert [i.name for i in t.model.inputs] == ["Student-Input-Token", "Student-Input-Segment"]
    assert t.prefixed("Embedding-Token") == "Student-Embedding-Token"
    np.testing.assert_array_equal(
        t.model.get_layer("Student-Transformer-3-FeedForward").get_weights()[0],
        stored("bert/encoder/layer_3/intermediate/dense/kernel"))
    ids, seg = ids_and_segments(vocab=13585)
    np.testing.assert_allclose(t.model.predict([ids, seg], verbose=0),
                               plain.predict([ids, seg], verbose=0), atol=1e-5)
    # two models of the same family in one Keras graph: unique names
    both = keras.Model(plain.inputs + t.model.inputs, [plain.output, t.model.output])
    assert len({layer.name for layer in both.layers}) == len(both.layers)


def test_layer_norm_cond_and_additional_input_layers(tmp_path):
    ids, seg = ids_and_segments()
    c_in = keras.Input(shape=(1,), name="Input-Class")
    cond = keras.layers.Dense(6, name="Class-Vector")(c_in)
    plain = tiny()
    t = tiny(layer_norm_cond=cond, layer_norm_cond_hidden_size=5,
             layer_norm_cond_hidden_act="tanh", additional_input_layers=c_in)
    assert [i.name for i in t.model.inputs] == ["Input-Token", "Input-Segment", "Input-Class"]
    norm = t.layers["Embedding-Norm"]
    assert norm.conditional and norm.hidden_units == 5
    # its gamma/beta load as an ordinary LayerNorm's; its condition projections start at 0
    path = str(tmp_path / "model.ckpt")
    randomize(plain, seed=4)
    plain.save_weights_as_checkpoint(path)
    t.load_weights_from_checkpoint(path)
    c = np.array([[0.5], [-1.0]], "float32")
    np.testing.assert_allclose(t.model.predict([ids, seg, c], verbose=0),
                               np_bert(plain, ids, seg), atol=1e-4)
    # with nonzero projections: LN(x) * (gamma + W_g h) + (beta + W_b h), h = tanh(W c')
    rng = np.random.default_rng(5)
    for w in norm.weights[2:]:
        w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    sub = keras.Model(t.model.inputs, t.model.get_layer("Embedding-Norm").output)
    emb = keras.Model(t.model.inputs, t.model.get_layer("Embedding-Position").output)
    x = emb.predict([ids, seg, c], verbose=0).astype("float64")
    cv = keras.Model(c_in, cond).predict(c, verbose=0)
    gamma, beta, wh, wb, wg = [np.asarray(v, "float64") for v in norm.get_weights()]
    h = np.tanh(cv @ wh)[:, None, :]
    want = np_layer_norm(x, gamma + h @ wg, beta + h @ wb)
    np.testing.assert_allclose(sub.predict([ids, seg, c], verbose=0), want, atol=1e-4)


def test_residual_attention_scores_against_numpy():
    ids, seg = ids_and_segments()
    t = tiny(residual_attention_scores=True)
    randomize(t, seed=6)
    out = t.model.predict([ids, seg], verbose=0)
    np.testing.assert_allclose(out, np_bert(t, ids, seg, residual=True), atol=1e-4)
    assert not np.allclose(out, np_bert(t, ids, seg, residual=False), atol=1e-3)
    assert t.model.get_layer("Transformer-1-MultiHeadSelfAttention-Attention-Bias")


def test_attention_caches_against_numpy():
    ids, seg = ids_and_segments()
    k_in = keras.Input(shape=(None, 16), name="K-Cache")
    v_in = keras.Input(shape=(None, 16), name="V-Cache")
    t = tiny(attention_caches={"Transformer-1-MultiHeadSelfAttention": [k_in, v_in]},
             additional_input_layers=[k_in, v_in])
    randomize(t, seed=7)
    rng = np.random.default_rng(8)
    kc, vc = rng.normal(size=(2, 2, 3, 16)).astype("float32")
    out = t.model.predict([ids, seg, kc, vc], verbose=0)
    np.testing.assert_allclose(out, np_bert(t, ids, seg, caches={1: (kc, vc)}), atol=1e-4)


def test_sequence_length_fixes_the_input_shape():
    t = tiny(sequence_length=7, custom_position_ids=True)
    assert [tuple(i.shape) for i in t.model.inputs] == [(None, 7)] * 3


def test_shared_segment_embeddings():
    ids, seg = ids_and_segments()
    t = tiny(shared_segment_embeddings=True)
    assert "Embedding-Segment" not in t.layers
    randomize(t, seed=9)
    x = keras.Model(t.model.inputs, t.model.get_layer("Embedding-Token-Segment").output)
    table = t.layers["Embedding-Token"].get_weights()[0]
    np.testing.assert_allclose(x.predict([ids, seg], verbose=0), table[ids] + table[seg],
                               atol=1e-6)


def test_ignore_invalid_weights(tmp_path):
    source = tiny()
    randomize(source, seed=10)
    source.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    with pytest.raises(CheckpointError, match="pooler"):
        tiny(with_pool=True).load_weights_from_checkpoint(str(tmp_path / "model.ckpt"))
    t = tiny(with_pool=True, ignore_invalid_weights=True)
    pool = t.layers["Pooler-Dense"].get_weights()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.load_weights_from_checkpoint(str(tmp_path / "model.ckpt"))
    assert any("pooler" in str(w.message) and "ignored" in str(w.message) for w in caught)
    for a, b in zip(t.layers["Pooler-Dense"].get_weights(), pool):
        np.testing.assert_array_equal(a, b)
    ids, seg = ids_and_segments()
    hidden = keras.Model(t.model.inputs, t.model.get_layer("Transformer-1-FeedForward-Norm").output)
    np.testing.assert_allclose(hidden.predict([ids, seg], verbose=0),
                               source.model.predict([ids, seg], verbose=0), atol=1e-5)


def test_autoresize_weights_doubling_the_feed_forward_keeps_the_outputs(tmp_path):
    """Doubling the inner width duplicates each pair of hidden units at half
    the output weight: the same function (0.11.5's rescaling)."""
    source = tiny()
    randomize(source, seed=11)
    source.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    with pytest.raises(CheckpointError, match="Shape mismatch"):
        tiny(intermediate_size=64).load_weights_from_checkpoint(str(tmp_path / "model.ckpt"))
    wide = tiny(intermediate_size=64, autoresize_weights=True)
    wide.load_weights_from_checkpoint(str(tmp_path / "model.ckpt"))
    ids, seg = ids_and_segments()
    np.testing.assert_allclose(wide.model.predict([ids, seg], verbose=0),
                               np_bert(source, ids, seg), atol=1e-4)


def test_option_layers_load_back_from_a_keras_file(tmp_path):
    """A model built with hierarchical positions and residual attention saves
    as ``.keras`` and loads in a new process after only ``import bert4keras``."""
    ids, seg = ids_and_segments(length=30)  # longer than max_position=24
    t = tiny(hierarchical_position=0.3, residual_attention_scores=True)
    randomize(t, seed=12)
    t.model.save(str(tmp_path / "m.keras"))
    np.save(str(tmp_path / "want.npy"), t.model.predict([ids, seg], verbose=0))
    np.save(str(tmp_path / "ids.npy"), np.stack([ids, seg]))
    script = ("import sys, numpy as np, keras, bert4keras\n"
              "d = sys.argv[1]; ids, seg = np.load(d + '/ids.npy')\n"
              "m = keras.saving.load_model(d + '/m.keras')\n"
              "np.testing.assert_allclose(m.predict([ids, seg], verbose=0), "
              "np.load(d + '/want.npy'), atol=1e-5)\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


# -- Transformer methods ------------------------------------------------------------------------

def test_transformer_methods(tmp_path):
    t = build_transformer_model(SMALL_CONFIG, SMALL_DIR, return_keras_model=False)
    assert t.simplify([1, None, 2]) == [1, 2] and t.simplify([None, 3]) == 3
    assert t.prefixed("X") == "X" and t.prefixed(None) is None
    name = "bert/embeddings/position_embeddings"
    np.testing.assert_array_equal(t.load_variable(SMALL_DIR, name), stored(name))
    np.testing.assert_array_equal(t.load_variable({name: np.ones(2)}, name), np.ones(2))
    variable, value = t.create_variable("v", np.ones((2, 3)))
    assert tuple(variable.shape) == (2, 3) and value.shape == (2, 3)
    assert t.input is t.model.input and t.outputs == t.model.outputs
    t.set_inputs(t.model.inputs[0], additional_input_layers=[t.model.inputs[1]])
    assert t.inputs == list(t.model.inputs) and t.input == t.inputs
    t.set_outputs(t.model.output)
    assert t.output is t.model.output and t.outputs == [t.model.output]
    mapping = t.variable_mapping()
    assert mapping["Embedding-Position"] == [name]
    # load_weights_from_checkpoint(mapping=...): only the listed layers
    fresh = tiny(**dict(TINY, vocab_size=13585, hidden_size=192, intermediate_size=768,
                        num_attention_heads=4, max_position=512))
    fresh.load_weights_from_checkpoint(SMALL_DIR, mapping={"Embedding-Position": [name]})
    np.testing.assert_array_equal(fresh.layers["Embedding-Position"].get_weights()[0],
                                  stored(name))


def test_data_parallel():
    from bert4keras.models import data_parallel

    model = tiny().model
    assert data_parallel(model) is model  # no GPU here: the model itself
    with pytest.raises(NotImplementedError, match="MirroredStrategy"):
        data_parallel(model, devices=2)
    with pytest.raises(NotImplementedError, match="unequal"):
        data_parallel(model, devices=2, parts=[1, 3])


def test_t5_rejects_options_it_does_not_take():
    with pytest.raises(ValueError, match="prefix"):
        build_transformer_model(None, model="t5", vocab_size=20, hidden_size=8,
                                num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16, prefix="X-")


def test_lm_and_unilm_switch_on_the_mlm_head_as_in_0_11_5():
    """bert4keras 0.11.5: application='lm'/'unilm' implies with_mlm=True, so
    an old seq2seq script reads next-token probabilities from model.output."""
    for application in ("lm", "unilm"):
        model = build_transformer_model(SMALL_CONFIG, SMALL_DIR, application=application)
        probs = model.predict([np.array([[101, 2769, 102]]), np.zeros((1, 3), "int32")],
                              verbose=0)
        assert probs.shape == (1, 3, 13585)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    hidden = build_transformer_model(SMALL_CONFIG, SMALL_DIR, application="lm", with_mlm=False)
    assert hidden.output.shape[-1] == 192


def test_apply_main_layers_without_bias_uses_the_built_models_bias():
    """0.11.5's ``apply_main_layers(inputs, index)`` (BERT-of-Theseus calls it):
    the bias defaults to the padding bias of the built model's own inputs."""
    from bert4keras.layers import AttentionMask

    t = build_transformer_model(SMALL_CONFIG, SMALL_DIR, return_keras_model=False)
    assert t.attention_bias is not None
    x = t.apply_embeddings(t.model.inputs)  # reuses the built embedding layers
    implicit = keras.Model(t.model.inputs, t.apply_main_layers(x, 0))
    bias = AttentionMask(mode="padding")(t.model.inputs[0])  # a new layer, same rule
    explicit = keras.Model(t.model.inputs, t.apply_main_layers(x, 0, bias))
    ids, seg = ids_and_segments(batch=2, length=6, vocab=13584, seed=3)
    ids[1, 4:] = 0  # padding, so the bias matters
    expected = explicit.predict([ids, seg], verbose=0)
    np.testing.assert_allclose(implicit.predict([ids, seg], verbose=0), expected, atol=1e-5)
    # and block 0 of the built model computes the same thing
    block0 = keras.Model(t.model.inputs,
                         t.model.get_layer("Transformer-0-FeedForward-Norm").output)
    np.testing.assert_allclose(block0.predict([ids, seg], verbose=0), expected, atol=1e-5)
    # BERT-of-Theseus: a second model embeds the first one's inputs, so its
    # default bias is that of those inputs (same weights: same numbers)
    other = build_transformer_model(SMALL_CONFIG, SMALL_DIR, return_keras_model=False,
                                    prefix="Successor-")
    y = other.apply_main_layers(other.apply_embeddings(t.model.inputs), 0)
    theseus = keras.Model(t.model.inputs, y)
    np.testing.assert_allclose(theseus.predict([ids, seg], verbose=0), expected, atol=1e-5)
