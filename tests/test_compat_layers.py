"""bert4keras 0.11.5's layers on Keras 3: ``Loss`` used the old way trains,
``GatedAttentionUnit`` against a NumPy forward pass written from the paper,
``ScaleOffset``/conditional ``LayerNormalization`` against NumPy, the small
sequence/batch layers, and an old-style script of our own that runs.

tests/test_backends.py reruns this file in its JAX process.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from bert4keras import layers as L
from bert4keras.backend import K
from bert4keras.models import build_transformer_model

RNG = np.random.RandomState(0)


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def weights(layer):
    return [np_(w) for w in layer.weights]


def swish(x):
    return x / (1 + np.exp(-x))


class CrossEntropy(L.Loss):
    """The UniLM recipe's loss: predict segment-1 tokens, one step ahead."""

    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        # as 0.11.5: the inputs carry no Keras mask, the MLM output the padding mask
        assert mask[0] is None and mask[1] is None and mask[2] is not None
        y_true, y_mask, y_pred = y_true[:, 1:], K.cast(y_mask[:, 1:], K.floatx()), \
            y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        return K.sum(loss * y_mask) / K.sum(y_mask)


def test_loss_subclass_trains_a_unilm_model_the_old_way():
    keras.utils.set_random_seed(1)
    model = build_transformer_model(model="bert", vocab_size=24, hidden_size=16,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=24, max_position=16,
                                    application="unilm", with_mlm=True)
    output = CrossEntropy(2)(model.inputs + model.outputs)
    train = keras.Model(model.inputs, output)
    train.compile(optimizer=keras.optimizers.Adam(1e-2))   # no loss argument
    rng = np.random.RandomState(0)
    source = rng.randint(4, 24, size=(16, 5))
    tokens = np.concatenate([np.full((16, 1), 2), source, np.full((16, 1), 3), source[:, ::-1],
                             np.full((16, 1), 3)], 1).astype("int32")   # target: reversed source
    segments = np.concatenate([np.zeros((16, 7)), np.ones((16, 6))], 1).astype("int32")
    before = float(train.evaluate([tokens, segments], verbose=0))
    history = train.fit([tokens, segments], epochs=15, batch_size=8, verbose=0)
    after = float(train.evaluate([tokens, segments], verbose=0))
    assert np.isfinite(before) and after < 0.7 * before, (before, history.history["loss"])
    probs = train.predict([tokens[:2], segments[:2]], verbose=0)
    assert probs.shape == (2, 13, 24)                       # the output passed through


def test_loss_output_axis_and_errors():
    a, b = keras.Input((3,)), keras.Input((3,))

    class Diff(L.Loss):
        def compute_loss(self, inputs, mask=None):
            return K.mean(K.square(inputs[0] - inputs[1]))

    both = Diff(name="both")([a, b])
    picked = Diff([1, 0], name="picked")([a, b])
    assert isinstance(both, list) and len(both) == 2 and isinstance(picked, list)
    assert Diff.from_config(Diff(output_axis=[1, 0]).get_config()).output_axis == [1, 0]
    model = keras.Model([a, b], keras.layers.Add()(both + picked))
    x = [np.ones((2, 3), "float32"), np.zeros((2, 3), "float32")]
    np.testing.assert_allclose(model.predict(x, verbose=0), 2 * np.ones((2, 3)))
    with pytest.raises(NotImplementedError, match="compute_loss"):
        L.Loss()(np.ones((2, 3), "float32"))


def test_loss_sees_integer_inputs_as_floats():
    """0.11.5 recipes multiply a float loss by int inputs (``loss * y_mask``
    with ``y_mask`` the segment ids, float32 in 0.11.5); outputs keep int32."""

    class MaskedSum(L.Loss):
        def compute_loss(self, inputs, mask=None):
            y_mask, y_pred = inputs
            assert K.dtype(y_mask) == K.floatx()
            return K.sum(y_pred * y_mask) / K.sum(y_mask)   # no cast, as in the recipes

    segments = keras.Input((None,), dtype="int32")
    scores = keras.Input((None,))
    outputs = MaskedSum()([segments, scores])
    assert outputs[0].dtype == "int32"
    model = keras.Model([segments, scores], outputs)
    model.compile(optimizer="sgd")
    seg = np.array([[0, 1, 1], [0, 0, 1]], "int32")
    val = np.array([[5.0, 1.0, 2.0], [7.0, 9.0, 4.0]], "float32")
    expected = (val * seg).sum() / seg.sum()   # NumPy: 7 / 3
    np.testing.assert_allclose(model.evaluate([seg, val], verbose=0), expected, rtol=1e-6)
    got_seg, _ = model.predict([seg, val], verbose=0)
    assert got_seg.dtype == np.int32


def gau_reference(x, w, units, key_size, mask, normalization, bias=None, table=None):
    """GAU forward (Hua et al. 2022, Su's notes), straight from the formulas."""
    (wi, bi, bq, gq, bk, gk, wo, bo) = w  # ScaleOffset keeps 0.11.5 order: beta, gamma
    h = swish(x @ wi + bi)
    u, v, z = h[..., :units], h[..., units:2 * units], h[..., 2 * units:]
    q, k = z * gq + bq, z * gk + bk
    if table is not None:  # RoPE: rotate pairs by t
        def rope(t):
            c, s = np.repeat(table[..., 1::2], 2, -1), np.repeat(table[..., 0::2], 2, -1)
            r = np.stack([-t[..., 1::2], t[..., 0::2]], -1).reshape(t.shape)
            return t * c + r * s
        q, k = rope(q), rope(k)
    a = np.einsum("bmd,bnd->bmn", q, k) / np.sqrt(key_size)
    if bias is not None:
        a = a + bias
    keep = mask[:, None, :] > 0
    if normalization == "squared_relu":
        n = mask.sum(-1)[:, None, None]
        attn = np.where(keep, np.maximum(a, 0) ** 2, 0) / n
    else:
        e = np.where(keep, np.exp(a - a.max(-1, keepdims=True)), 0)
        attn = e / e.sum(-1, keepdims=True)
    return (u * np.einsum("bmn,bnd->bmd", attn, v)) @ wo + bo


@pytest.mark.parametrize("normalization", ["squared_relu", "softmax"])
def test_gated_attention_unit_against_numpy(normalization):
    keras.utils.set_random_seed(2)
    units, key_size = 6, 4
    ids = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(20, 8, mask_zero=True)
    layer = L.GatedAttentionUnit(units, key_size, normalization=normalization)
    model = keras.Model(ids, [emb(ids), layer(emb(ids))])
    for w in layer.weights:  # away from the ones/zeros initial values
        w.assign(np_(w) + RNG.normal(0, 0.3, w.shape).astype("float32"))
    emb.embeddings.assign(RNG.normal(size=(20, 8)).astype("float32"))  # scores far from 0
    data = np.array([[3, 5, 7, 9, 0], [4, 6, 0, 0, 0]], "int32")
    x, out = model.predict(data, verbose=0)
    ref = gau_reference(x, weights(layer), units, key_size, (data > 0).astype(float),
                        normalization)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_gated_attention_unit_with_bias_rope_and_cross_attention():
    keras.utils.set_random_seed(3)
    x_in = keras.Input((5, 8))
    bias_in = keras.Input((5, 5))
    table = L.SinusoidalPositionEmbedding(4, merge_mode="zero")(x_in)
    layer = L.GatedAttentionUnit(6, 4, normalization="softmax")
    model = keras.Model([x_in, bias_in], layer([x_in, bias_in, table], a_bias=True,
                                               p_bias="rotary"))
    for w in layer.weights:
        w.assign(np_(w) + RNG.normal(0, 0.3, w.shape).astype("float32"))
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    bias = np.where(np.tril(np.ones((5, 5))) > 0, 0, -1e12)[None].repeat(2, 0).astype("float32")
    pos = np.arange(5)[:, None] * 10000.0 ** (-np.arange(2) * 2 / 4)
    sinusoid = np.stack([np.sin(pos), np.cos(pos)], -1).reshape(1, 5, 4)
    ref = gau_reference(x, weights(layer), 6, 4, np.ones((2, 5)), "softmax", bias, sinusoid)
    np.testing.assert_allclose(model.predict([x, bias], verbose=0), ref, rtol=1e-4, atol=1e-5)
    # cross attention: u, q from q; k, v from their own inputs
    cross = L.GatedAttentionUnit(6, 4, self_attention=False, normalization="softmax",
                                 attention_dropout=0.1)
    q, kv = x, RNG.normal(size=(2, 5, 8)).astype("float32")
    out = np_(cross([q, kv, kv]))
    wuq, buq, wk, bk, wv, bv, wo, bo = weights(cross)
    uq = swish(q @ wuq + buq)
    u, qq = uq[..., :6], uq[..., 6:]
    a = np.einsum("bmd,bnd->bmn", qq, swish(kv @ wk + bk)) / 2.0
    e = np.exp(a - a.max(-1, keepdims=True))
    ref = (u * np.einsum("bmn,bnd->bmd", e / e.sum(-1, keepdims=True),
                         swish(kv @ wv + bv))) @ wo + bo
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_scale_offset_and_conditional_layer_normalization():
    keras.utils.set_random_seed(4)
    x = RNG.normal(size=(2, 3, 5)).astype("float32")
    c = RNG.normal(size=(2, 4)).astype("float32")
    affine = L.ScaleOffset(conditional=True, hidden_units=3, hidden_activation="swish")
    out = np_(affine([x, c]))
    for w in affine.weights:
        w.assign(np_(w) + RNG.normal(0, 0.3, w.shape).astype("float32"))
    beta, gamma, wh, wb, wg = weights(affine)                # 0.11.5's order
    h = swish(c @ wh)[:, None]
    np.testing.assert_allclose(np_(affine([x, c])), x * (gamma + h @ wg) + (beta + h @ wb),
                               rtol=1e-5, atol=1e-5)
    assert out.shape == x.shape
    np.testing.assert_allclose(np_(L.ScaleOffset(scale=2.0, offset=False)(x)), 2 * x)
    norm = L.ConditionalLayerNormalization(hidden_units=3, hidden_activation="swish")
    norm([x, c])
    for w in norm.weights:
        w.assign(np_(w) + RNG.normal(0, 0.3, w.shape).astype("float32"))
    gamma, beta, wh, wb, wg = weights(norm)
    assert norm.epsilon == pytest.approx(1e-7)                # 0.11.5: K.epsilon()
    z = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-7)
    h = swish(c @ wh)[:, None]
    np.testing.assert_allclose(np_(norm([x, c])), z * (gamma + h @ wg) + (beta + h @ wb),
                               rtol=1e-4, atol=1e-5)
    plain = L.LayerNormalization(offset=False, unit_variance=False, zero_mean=True)
    np.testing.assert_allclose(np_(plain(x)), x - x.mean(-1, keepdims=True), atol=1e-6)
    assert not plain.center and L.LayerNormalization.from_config(plain.get_config()).center \
        is False


def test_sequence_and_batch_layers():
    ids = keras.Input((None,), dtype="int32")
    vec = keras.Input((2,))
    masked = keras.layers.Embedding(10, 3, mask_zero=True)(ids)
    plain = keras.layers.Dense(3)(masked)
    joined = L.Concatenate1D()([masked, keras.layers.Lambda(lambda t: t * 1.0)(plain)])
    with_vec = L.ConcatSeq2Vec()([joined, vec])
    parts = L.BatchSplit(2)(with_vec)
    again = L.BatchConcat()(parts)
    model = keras.Model([ids, vec], [joined, with_vec, again] + parts)
    data = np.array([[1, 2, 0], [3, 0, 0], [4, 5, 6]], "int32")
    v = RNG.normal(size=(3, 2)).astype("float32")
    j, w, a, p1, p2 = model.predict([data, v], verbose=0)
    assert j.shape == (3, 6, 3) and w.shape == (3, 6, 5)
    np.testing.assert_allclose(w[..., 3:], np.repeat(v[:, None], 6, 1), rtol=1e-6)
    np.testing.assert_allclose(a, w, rtol=1e-6)
    assert p1.shape[0] == 2 and p2.shape[0] == 1           # ceil(3 / 2), then the rest
    mask = np_(L.Concatenate1D().compute_mask(
        [np.zeros((3, 3, 1)), np.zeros((3, 2, 1))], [data > 0, None]))
    np.testing.assert_array_equal(mask, np.concatenate([data > 0, np.ones((3, 2), bool)], 1))
    quarter, rest = L.BatchSplit([1, 3])(np.arange(8.0).reshape(8, 1))
    emb = keras.layers.Embedding(10, 4, mask_zero=True)
    pooled = L.GlobalMaxPooling1D()(emb(keras.ops.convert_to_tensor(data)))
    table = np_(emb.embeddings)[data]
    ref = np.where((data > 0)[..., None], table, -np.inf).max(1)
    np.testing.assert_allclose(np_(pooled), ref, rtol=1e-6)
    assert np_(quarter).shape == (2, 1) and np_(rest).shape == (6, 1)


OLD_SCRIPT = '''
#! -*- coding: utf-8 -*-
# an old-style bert4keras script: K maths in Lambda layers and a Loss layer,
# search_layer, K.eval / K.set_value on the embedding table
import numpy as np
from bert4keras.backend import keras, K, search_layer, batch_gather, sequence_masking
from bert4keras.backend import multilabel_categorical_crossentropy
from bert4keras.layers import Loss, Lambda, Dense, Input, LayerNormalization
from bert4keras.models import build_transformer_model
from keras.models import Model

bert = build_transformer_model(model='bert', vocab_size=20, hidden_size=8,
                               num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=12, max_position=16,
                               return_keras_model=False)
token_ids, segment_ids = bert.model.inputs
labels_in = Input(shape=(3,), name='Labels')
picks_in = Input(shape=(2,), name='Picks')


def pick_tokens(inputs):
    output, picks = inputs
    vectors = batch_gather(output, K.cast(picks, 'int32'))
    return K.concatenate([vectors[:, 0], vectors[:, 1]], 1)


def masked_mean(inputs):
    output, ids = inputs
    mask = K.cast(K.not_equal(ids, 0), K.floatx())
    return K.sum(sequence_masking(output, mask), 1) / K.sum(mask, 1, keepdims=True)


picked = Lambda(pick_tokens)([bert.model.output, picks_in])
pooled = Lambda(masked_mean)([bert.model.output, token_ids])
cond = LayerNormalization(conditional=True, hidden_units=4, hidden_activation='swish')(
    [bert.model.output, picked])
scores = Dense(3)(Lambda(lambda x: K.max(x, 1))(cond))
scores = Lambda(lambda x: x[0] + K.sum(x[1], 1, keepdims=True) * 0)([scores, pooled])


class MultiLabelLoss(Loss):
    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        return K.mean(multilabel_categorical_crossentropy(y_true, y_pred))


output = MultiLabelLoss(1)([labels_in, scores])
model = Model(bert.model.inputs + [picks_in, labels_in], output)
model.compile(optimizer=keras.optimizers.Adam(1e-2))

rng = np.random.RandomState(0)
ids = rng.randint(1, 20, size=(16, 6))
ids[:, -2:] = 0
x = [ids, np.zeros_like(ids), rng.randint(0, 4, size=(16, 2)), (rng.rand(16, 3) > 0.5) * 1.0]
history = model.fit(x, epochs=8, batch_size=8, verbose=0).history['loss']
assert history[-1] < history[0], history

embedding = search_layer(model.output, 'Embedding-Token')
table = K.eval(embedding.embeddings)
K.set_value(embedding.embeddings, table * 0)
assert np.abs(K.eval(embedding.embeddings)).max() == 0
print('OLD SCRIPT OK', K.int_shape(embedding.embeddings), round(history[0], 3),
      round(history[-1], 3))
'''


def test_an_old_style_script_runs(tmp_path):
    path = tmp_path / "old_script.py"
    path.write_text(textwrap.dedent(OLD_SCRIPT))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([sys.executable, str(path)], env=env, capture_output=True,
                         text=True, timeout=600, cwd=str(tmp_path))
    assert run.returncode == 0 and "OLD SCRIPT OK (20, 8)" in run.stdout, run.stderr[-3000:]


# --- MultiHeadAttention's 0.11.5 options, position options, Embedding(mask_zero) ---

def sinusoid(positions, dim):
    """``[sin t0, cos t0, sin t1, ...]``, ``t_i = p / 10000^(2i/dim)`` (Vaswani et al.)."""
    t = np.asarray(positions, "float64")[..., None] / 10000.0 ** (2 * np.arange(dim // 2) / dim)
    return np.stack([np.sin(t), np.cos(t)], -1).reshape(t.shape[:-1] + (dim,))


def rope(t, table):
    """Rotate pairs ``(t[2i], t[2i+1])`` by the angles of ``table`` (RoFormer)."""
    c, s = np.repeat(table[..., 1::2], 2, -1), np.repeat(table[..., 0::2], 2, -1)
    r = np.stack([-t[..., 1::2], t[..., 0::2]], -1).reshape(t.shape)
    return t * c + r * s


def mha_reference(q, k, v, w, heads, size, normalization="softmax", bias=None, v_mask=None,
                  mode=None, position=None):
    """Multi-head attention from the formulas; returns (output, scaled scores)."""
    qk, qb, kk, kb, vk, vb, ok, ob = w
    split = lambda x: x.reshape(x.shape[:2] + (heads, size))  # noqa: E731
    qw, kw, vw = split(q @ qk + qb), split(k @ kk + kb), split(v @ vk + vb)
    if mode == "rotary":
        qw, kw = rope(qw, position[:, :, None]), rope(kw, position[:, :, None])
    a = np.einsum("bqhd,bkhd->bhqk", qw, kw)
    if mode == "typical_relative":
        a = a + np.einsum("bqhd,qkd->bhqk", qw, position)
    elif mode == "t5_relative":
        a = a + position.transpose(2, 0, 1)[None]
    a = a / np.sqrt(size)
    scores, full = a, a if bias is None else a + bias[:, None]
    keep = np.ones_like(full, bool) if v_mask is None else np.broadcast_to(
        v_mask[:, None, None, :] > 0, full.shape)
    n = keep.sum(-1, keepdims=True)
    if normalization == "squared_relu":
        p = np.where(keep, np.maximum(full, 0) ** 2, 0) / n
    else:
        if normalization == "softmax_plus":
            full = full * np.log(np.maximum(n, 16)) / np.log(512)
        e = np.where(keep, np.exp(full - full.max(-1, keepdims=True)), 0)
        p = e / e.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", p, vw)
    if mode == "typical_relative":
        o = o + np.einsum("bhqk,qkd->bqhd", p, position)
    return o.reshape(o.shape[:2] + (-1,)) @ ok + ob, scores


@pytest.mark.parametrize("normalization", ["softmax", "squared_relu", "softmax_plus"])
def test_multi_head_attention_normalization_bias_masks_and_scores(normalization):
    keras.utils.set_random_seed(4)
    ids = keras.Input((None,), dtype="int32")
    bias_in = keras.Input((5, 5))
    emb = L.Embedding(20, 8, mask_zero=True, embeddings_initializer="normal")
    layer = L.MultiHeadAttention(2, 4, normalization=normalization,
                                 return_attention_scores=True)
    x = emb(ids)
    out, scores = layer([x, x, x, bias_in], a_bias=True)  # 0.11.5's call form
    assert getattr(out, "_keras_mask", None) is not None
    model = keras.Model([ids, bias_in], [x, out, scores])
    data = np.array([[3, 5, 7, 9, 0], [0, 6, 2, 0, 0]], "int32")
    bias = RNG.normal(size=(2, 5, 5)).astype("float32")
    xv, got, got_scores = model.predict([data, bias], verbose=0)
    v_mask = (data > 0).astype(int)
    v_mask[:, 0] = 1  # Embedding's rule: the first position is never masked
    ref, ref_scores = mha_reference(xv, xv, xv, weights(layer), 2, 4, normalization, bias,
                                    v_mask)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_scores, ref_scores, rtol=1e-4, atol=1e-5)
    # the query's mask is the output's
    eager = layer([emb(data), emb(data), emb(data), bias], a_bias=True)
    np.testing.assert_array_equal(np_(eager[0]._keras_mask), v_mask > 0)
    config = layer.get_config()
    assert config["normalization"] == normalization and config["return_attention_scores"]
    with pytest.raises(ValueError, match="normalization"):
        L.MultiHeadAttention(2, 4, normalization="cosine")


@pytest.mark.parametrize("mode", ["rotary", "typical_relative", "t5_relative"])
def test_multi_head_attention_p_bias_in_the_call(mode):
    keras.utils.set_random_seed(5)
    q = RNG.normal(size=(2, 5, 8)).astype("float32")
    bool_bias = np.tril(np.ones((5, 5), bool))[None, None]  # a bool a_bias is a visibility
    if mode == "rotary":
        position = sinusoid(np.arange(5)[None], 4).astype("float32")
    elif mode == "typical_relative":
        position = RNG.normal(size=(5, 5, 4)).astype("float32")
    else:
        position = RNG.normal(size=(5, 5, 2)).astype("float32")
    old = L.MultiHeadAttention(2, 4)  # 0.11.5: the mode is a call option
    got = np_(old([q, q, q, bool_bias, position], a_bias=True, p_bias=mode))
    bias = np.where(bool_bias, 0.0, -1e12)[0]
    ref, _ = mha_reference(q, q, q, weights(old), 2, 4, bias=np.broadcast_to(bias, (2, 5, 5)),
                           mode=mode, position=position)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # no a_bias: the position input is inputs[3]
    got = np_(old([q, q, q, position], p_bias=mode))
    ref, _ = mha_reference(q, q, q, weights(old), 2, 4, mode=mode, position=position)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # our form (mode in the constructor) is unchanged by the call options
    ours = L.MultiHeadAttention(2, 4, p_bias=mode)
    ours([q, q, q, position])
    ours.set_weights(old.get_weights())
    np.testing.assert_allclose(np_(ours([q, q, q, position])), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="inputs"):
        old([q, q, q], a_bias=True, p_bias=mode)


def test_position_embeddings_hierarchical_and_custom_position_ids():
    keras.utils.set_random_seed(6)
    layer = L.PositionEmbedding(4, 6, hierarchical=True, embeddings_initializer="normal")
    x = RNG.normal(size=(2, 11, 6)).astype("float32")  # longer than the table
    got = np_(layer(x))
    p = np_(layer.embeddings)
    u = (p - 0.4 * p[:1]) / 0.6
    k = np.arange(11)
    np.testing.assert_allclose(got, x + 0.4 * u[k // 4] + 0.6 * u[k % 4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, :4], x[:, :4] + p, rtol=1e-5, atol=1e-5)  # p_k for k < n
    assert layer.max_positions == 16 and layer.get_config()["hierarchical"] == 0.4
    legacy = L.HierarchicalPositionEmbedding(4, 6, hierarchical=0.3)
    assert isinstance(legacy, L.PositionEmbedding) and legacy.hierarchical == 0.3
    with pytest.raises(ValueError, match="hierarchical"):
        L.PositionEmbedding(4, 6, hierarchical=1.5)
    with pytest.raises(ValueError, match="max_position"):
        L.PositionEmbedding(4, 6)(x)

    ids = np.array([[3, 1, 0, 2], [0, 0, 1, 1]], "int32")
    custom = L.PositionEmbedding(4, 6, merge_mode="concat", custom_position_ids=True,
                                 embeddings_initializer="normal")
    got = np_(custom([x[:, :4], ids]))
    np.testing.assert_allclose(got, np.concatenate([x[:, :4], np_(custom.embeddings)[ids]], -1),
                               rtol=1e-6)
    assert custom.compute_output_shape([(2, 4, 6), (2, 4)]) == (2, 4, 12)
    with pytest.raises(ValueError, match="position_ids"):
        custom(x)

    sin = L.SinusoidalPositionEmbedding(6, merge_mode="zero", custom_position_ids=True)
    got = np_(sin([x[:, :4], ids]))
    np.testing.assert_allclose(got, sinusoid(ids, 6), rtol=1e-5, atol=1e-6)
    sin = L.SinusoidalPositionEmbedding(6, merge_mode="add", custom_position_ids=True)
    np.testing.assert_allclose(np_(sin([x[:, :4], ids.astype("float32")])),
                               x[:, :4] + sinusoid(ids, 6), rtol=1e-5, atol=1e-5)
    for layer in (custom, sin):  # the options survive a config round trip
        assert type(layer).from_config(layer.get_config()).custom_position_ids


def test_embedding_mask_zero_reaches_a_loss():
    seen = {}

    class MaskedMean(L.Loss):
        """mt5-style: the loss reads the mask of its second input."""

        def compute_loss(self, inputs, mask=None):
            seen["mask"] = mask
            y_mask = K.cast(mask[1], K.floatx())
            return K.sum(K.mean(inputs[1], -1) * y_mask) / K.sum(y_mask)

    ids = keras.Input((None,), dtype="int32")
    emb = L.Embedding(10, 3, mask_zero=True, embeddings_initializer="normal")
    x = emb(ids)
    logits = emb(x, mode="dense")  # the dense mode passes the mask through
    out = MaskedMean(1)([x, logits])
    model = keras.Model(ids, out)
    data = np.array([[0, 4, 0, 5], [2, 0, 0, 0]], "int32")
    model.predict(data, verbose=0)
    assert seen["mask"] is not None and seen["mask"][1] is not None
    keep = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], bool)  # position 0 never masked
    np.testing.assert_array_equal(np_(emb.compute_mask(data)), keep)
    table = np_(emb.embeddings)
    want = ((table[data] @ table.T).mean(-1) * keep).sum() / keep.sum()
    x_eager = emb(data)  # eagerly, the masks ride on the tensors
    layer = MaskedMean(1)
    layer([x_eager, emb(x_eager, mode="dense")])
    np.testing.assert_allclose(np_(layer.losses[0]), want, rtol=1e-5)
    assert L.Embedding(10, 3).compute_mask(data) is None
    assert L.Embedding(10, 3, mask_zero=True).get_config()["mask_zero"] is True
