"""bert4keras 0.11.5's ``bert4keras.backend``: ``K`` (the Keras 2 backend API
on ``keras.ops``) and the module's own helpers, against NumPy written here
from the Keras 2 / bert4keras definitions.

Runs on the backend of the process (TensorFlow by default); tests/test_backends.py
reruns this file on JAX in its JAX process (Keras fixes the backend per process).
"""

import keras
import numpy as np
import pytest

from bert4keras import backend as B
from bert4keras.backend import K, keras as b_keras, search_layer

RNG = np.random.RandomState(0)
X = RNG.normal(size=(2, 3, 4)).astype("float32")
Y = RNG.normal(size=(2, 3, 4)).astype("float32")
EPS = 1e-7


def np_(x):
    if isinstance(x, (list, tuple)):
        return [np_(v) for v in x]
    return np.asarray(keras.ops.convert_to_numpy(x))


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np_(a), np.asarray(b), rtol=tol, atol=tol)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_names_and_config():
    assert b_keras is keras
    assert K.floatx() == "float32" and K.epsilon() == pytest.approx(1e-7)
    assert K.backend() == keras.backend.backend()
    assert K.int_shape(X) == (2, 3, 4) and K.ndim(X) == 3
    assert K.dtype(K.cast(X, "float16")) == "float16"
    assert tuple(int(d) for d in K.shape(X)) == (2, 3, 4)
    with pytest.raises(AttributeError, match="keras.ops"):
        K.no_such_function  # noqa: B018


@pytest.mark.parametrize("name, args, ref", [
    ("sum", (X, 1, True), X.sum(1, keepdims=True)),
    ("sum", (X,), X.sum()),
    ("mean", (X, -1), X.mean(-1)),
    ("max", (X, (0, 2)), X.max((0, 2))),
    ("min", (X, 1), X.min(1)),
    ("prod", (X, 2), X.prod(2)),
    ("std", (X, 1), X.std(1)),
    ("var", (X, 1, True), X.var(1, keepdims=True)),
    ("logsumexp", (X, -1), np.log(np.exp(X).sum(-1))),
    ("argmax", (X,), X.argmax(-1)),
    ("argmin", (X, 1), X.argmin(1)),
    ("cumsum", (X,), X.cumsum(0)),  # Keras 2: axis 0 by default
    ("cumprod", (X, 2), X.cumprod(2)),
    ("concatenate", ([X, Y],), np.concatenate([X, Y], -1)),  # axis -1 by default
    ("concatenate", ([X, Y], 1), np.concatenate([X, Y], 1)),
    ("stack", ([X, Y], 1), np.stack([X, Y], 1)),
    ("expand_dims", (X,), X[..., None]),
    ("squeeze", (X[:, :1], 1), X[:, 0]),
    ("reshape", (X, (2, 12)), X.reshape(2, 12)),
    ("reshape", (X, (2, -1), -1), X.reshape(2, 3, 2, 2)),  # bert4keras's extended form
    ("flatten", (X,), X.reshape(-1)),
    ("flatten", (X, 1), X.reshape(2, 12)),
    ("batch_flatten", (X,), X.reshape(2, 12)),
    ("permute_dimensions", (X, (2, 0, 1)), X.transpose(2, 0, 1)),
    ("transpose", (X[0],), X[0].T),
    ("tile", (X, [1, 2, 1]), np.tile(X, [1, 2, 1])),
    ("repeat_elements", (X, 2, 1), np.repeat(X, 2, 1)),
    ("repeat", (X[:, 0], 3), np.repeat(X[:, None, 0], 3, 1)),
    ("reverse", (X, 1), X[:, ::-1]),
    ("exp", (X,), np.exp(X)),
    ("log", (np.abs(X),), np.log(np.abs(X))),
    ("sqrt", (X,), np.sqrt(np.maximum(X, 0))),  # Keras 2 clips negatives
    ("square", (X,), X ** 2),
    ("abs", (X,), np.abs(X)),
    ("pow", (np.abs(X), 3), np.abs(X) ** 3),
    ("sign", (X,), np.sign(X)),
    ("round", (X * 3,), np.round(X * 3)),
    ("sin", (X,), np.sin(X)),
    ("cos", (X,), np.cos(X)),
    ("maximum", (X, Y), np.maximum(X, Y)),
    ("minimum", (X, Y), np.minimum(X, Y)),
    ("clip", (X, -0.5, 0.5), np.clip(X, -0.5, 0.5)),
    ("clip", (X, 0.5, 0.1), np.full_like(X, 0.5)),  # max < min: max raised to min
    ("clip", (X, 0.0, None), np.maximum(X, 0)),
    ("equal", (X > 0, Y > 0), (X > 0) == (Y > 0)),
    ("not_equal", (X > 0, Y > 0), (X > 0) != (Y > 0)),
    ("greater", (X, Y), X > Y),
    ("greater_equal", (X, Y), X >= Y),
    ("less", (X, Y), X < Y),
    ("less_equal", (X, Y), X <= Y),
    ("any", (X > 1, 1), (X > 1).any(1)),
    ("all", (X > -1,), (X > -1).all()),
    ("softmax", (X,), softmax(X)),
    ("softmax", (X, 1), softmax(X, 1)),
    ("relu", (X,), np.maximum(X, 0)),
    ("relu", (X, 0.1, 0.5), np.minimum(np.where(X > 0, X, 0.1 * X), 0.5)),
    ("relu", (X, 0.0, None, 0.5), np.where(X > 0.5, X, 0)),
    ("sigmoid", (X,), 1 / (1 + np.exp(-X))),
    ("hard_sigmoid", (X,), np.clip(0.2 * X + 0.5, 0, 1)),  # Keras 2's, not Keras 3's
    ("tanh", (X,), np.tanh(X)),
    ("elu", (X,), np.where(X > 0, X, np.exp(X) - 1)),
    ("softplus", (X,), np.log1p(np.exp(X))),
    ("softsign", (X,), X / (1 + np.abs(X))),
    ("l2_normalize", (X, -1), X / np.sqrt((X ** 2).sum(-1, keepdims=True))),
    ("l2_normalize", (X,), X / np.sqrt((X ** 2).sum())),
    ("zeros_like", (X,), np.zeros_like(X)),
    ("ones_like", (X,), np.ones_like(X)),
    ("stop_gradient", (X,), X),
    ("arange", (5,), np.arange(5)),
    ("arange", (-3,), np.arange(0)),  # Keras 2: a negative lone start means 0
    ("arange", (1, 7, 2), np.arange(1, 7, 2)),
    ("gather", (X[0], [2, 0, 2]), X[0][[2, 0, 2]]),
    ("one_hot", (np.array([[0, 2], [1, 1]]), 3), np.eye(3)[[[0, 2], [1, 1]]]),
    ("temporal_padding", (X, (1, 2)), np.pad(X, [(0, 0), (1, 2), (0, 0)])),
    ("bias_add", (X, Y[0, 0]), X + Y[0, 0]),
])
def test_k_against_numpy(name, args, ref):
    close(getattr(K, name)(*args), ref)


def test_dot_and_batch_dot():
    a, b = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 4, 5))
    m = RNG.normal(size=(4, 6))
    close(K.dot(a, m), np.dot(a, m))                      # (2, 3, 6)
    close(K.dot(a, b[0]), np.dot(a, b[0]))
    close(K.dot(a, b), np.dot(a, b))                      # N-D: last of a, 2nd last of b
    close(K.dot(a[0], m), a[0] @ m)
    # batch_dot: the examples of the Keras 2 docs, against explicit loops
    x, y = RNG.normal(size=(4, 20, 1)), RNG.normal(size=(4, 30, 20))
    out = np_(K.batch_dot(x, y, axes=(1, 2)))
    assert out.shape == (4, 1, 30)
    ref = np.stack([x[i].T @ y[i].T for i in range(4)])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    close(K.batch_dot(a, b), np.stack([a[i] @ b[i] for i in range(2)]))  # default axes
    v, w = RNG.normal(size=(3, 5)), RNG.normal(size=(3, 5))
    out = np_(K.batch_dot(v, w))
    assert out.shape == (3, 1)                           # 1-D result -> (batch, 1)
    np.testing.assert_allclose(out[:, 0], (v * w).sum(1), rtol=1e-5)
    close(K.batch_dot(v, w, axes=1), (v * w).sum(1, keepdims=True))
    q, k = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 5, 4))
    close(K.batch_dot(q, k, axes=[2, 2]), np.einsum("bid,bjd->bij", q, k))
    with pytest.raises(ValueError, match="batch axis"):
        K.batch_dot(q, k, axes=0)


def test_switch_and_where():
    cond = X[..., 0] > 0                                  # lower rank than X
    close(K.switch(cond, X, Y), np.where(cond[..., None], X, Y))
    close(K.switch(True, lambda: X, lambda: Y), X)
    close(K.switch(np.array(False), X, Y), Y)
    close(K.where(X > 0, X, 0), np.where(X > 0, X, 0))    # Python scalar takes X's dtype
    out = K.where(X > 0, 1, 0)
    assert K.dtype(out) == "float32"
    close(out, (X > 0).astype("float32"))


def test_crossentropies():
    probs = softmax(X)
    target = np.eye(4)[RNG.randint(0, 4, size=(2, 3))].astype("float32")
    unnormalised = probs * 3.0
    ref = -(target * np.log(np.clip(probs, EPS, 1 - EPS))).sum(-1)
    close(K.categorical_crossentropy(target, unnormalised), ref)   # renormalised
    close(K.categorical_crossentropy(target, X, from_logits=True),
          -(target * np.log(softmax(X))).sum(-1))
    ids = target.argmax(-1)
    close(K.sparse_categorical_crossentropy(ids, probs), ref)
    close(K.sparse_categorical_crossentropy(ids[..., None].astype("float32"), probs), ref)
    close(K.sparse_categorical_crossentropy(ids, X, from_logits=True),
          -np.log(np.take_along_axis(softmax(X), ids[..., None], -1))[..., 0])
    p = 1 / (1 + np.exp(-X))
    t = (Y > 0).astype("float32")
    pc = np.clip(p, EPS, 1 - EPS)
    close(K.binary_crossentropy(t, p), -(t * np.log(pc) + (1 - t) * np.log(1 - pc)), 1e-4)
    close(K.binary_crossentropy(t, X, from_logits=True),
          np.maximum(X, 0) - X * t + np.log1p(np.exp(-np.abs(X))))


def test_random():
    u = np_(K.random_uniform((2000,), -1.0, 3.0, seed=1))
    assert u.min() >= -1 and u.max() < 3 and abs(u.mean() - 1) < 0.1
    n = np_(K.random_normal((4000,), 2.0, 0.5, seed=2))
    assert abs(n.mean() - 2) < 0.05 and abs(n.std() - 0.5) < 0.05
    t = np_(K.truncated_normal((4000,), 0.0, 1.0, seed=3))
    assert np.abs(t).max() <= 2.0 + 1e-6
    b = np_(K.random_binomial((4000,), p=0.25, seed=4))
    assert set(np.unique(b)) <= {0.0, 1.0} and abs(b.mean() - 0.25) < 0.05


def test_variables_and_values():
    v = K.variable(np.ones((2, 3)))
    assert isinstance(v, keras.Variable) and K.dtype(v) == "float32"
    K.set_value(v, np.full((2, 3), 2.0))
    np.testing.assert_array_equal(K.eval(v), np.full((2, 3), 2.0))
    K.update_add(v, np.ones((2, 3)))
    K.batch_set_value([(v, K.get_value(v) * 2)])
    np.testing.assert_array_equal(K.batch_get_value([v])[0], np.full((2, 3), 6.0))
    z = K.zeros((3, 4))
    assert isinstance(z, keras.Variable) and K.int_shape(z) == (3, 4)   # Keras 2: a variable
    np.testing.assert_array_equal(K.eval(K.ones((2,))), [1.0, 1.0])
    np.testing.assert_array_equal(K.eval(K.eye(2)), np.eye(2))
    np.testing.assert_array_equal(np_(K.constant(1.5, shape=(2, 2))), np.full((2, 2), 1.5))
    assert K.count_params(z) == 12
    assert K.symbolic(len) is len


def test_unavailable_names_raise_with_advice():
    with pytest.raises(NotImplementedError, match="keras.Model"):
        K.function([], [])
    with pytest.raises(NotImplementedError, match="keras.Input"):
        K.placeholder((None, 3))
    with pytest.raises(NotImplementedError, match="session"):
        K.get_session()
    with pytest.raises(NotImplementedError, match="tf.config"):
        K.set_session(None)
    with pytest.raises(NotImplementedError, match="training="):
        K.set_learning_phase(1)
    with pytest.raises(NotImplementedError, match="GradientTape"):
        K.gradients(K.sum(K.variable(X) ** 2), [K.variable(X)])   # eager
    with pytest.raises(NotImplementedError, match="keras.remat"):
        B.graph_mode_decorator(len)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF graph only")
def test_gradients_in_a_tensorflow_graph():
    import tensorflow as tf

    v = K.variable(X)

    @tf.function
    def grad():
        return K.gradients(K.sum(K.square(v.value) * 3.0), [v])[0]

    close(grad(), 6 * X)


def test_learning_phase_follows_the_layer_call():
    class Phase(keras.layers.Layer):
        def call(self, x):
            return K.in_train_phase(x * 0 + 1.0, x * 0)

    x = keras.Input((2,))
    model = keras.Model(x, Phase()(x))
    data = np.ones((1, 2), "float32")
    close(model(data, training=True), np.ones((1, 2)))
    close(model(data, training=False), np.zeros((1, 2)))
    close(model.predict(data, verbose=0), np.zeros((1, 2)))
    assert K.learning_phase() == 0
    close(K.in_train_phase(X, Y, training=True), X)
    close(K.in_test_phase(X, Y, training=True), Y)


def test_pooling_and_rnn():
    close(K.pool1d(X, 2, 1), np.maximum(X[:, :-1], X[:, 1:]))
    close(B.pool1d(X, 3, 1, pool_mode="avg"), X.mean(1, keepdims=True))
    img = RNG.normal(size=(1, 4, 4, 2)).astype("float32")
    ref = img.reshape(1, 2, 2, 2, 2, 2).max((2, 4))
    close(K.pool2d(img, (2, 2), (2, 2)), ref)

    def step(x_t, states):
        total = states[0] + x_t
        return total, [total]

    last, outputs, states = K.rnn(step, X, [np.zeros((2, 4), "float32")])
    close(outputs, X.cumsum(1))
    close(last, X.sum(1))


# -- bert4keras.backend helpers --------------------------------------------------------


def test_sequence_masking_0115_signature():
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    close(B.sequence_masking(X, mask), X * mask[..., None])
    close(B.sequence_masking(X, mask, 5.0, 1), np.where(mask[..., None] > 0, X, 5.0))
    scores = RNG.normal(size=(2, 3, 3)).astype("float32")
    both = mask[:, :, None] * mask[:, None, :]
    out, full = B.sequence_masking(scores, mask, -np.inf, [1, 2], return_mask=True)
    close(out, np.where(both > 0, scores, -1e12))        # -inf means -1e12 (finite)
    np.testing.assert_array_equal(np_(full), both > 0)
    bias = RNG.normal(size=(2, 3, 3)).astype("float32")
    close(B.sequence_masking(scores, mask, 0, -1, bias),
          np.where(mask[:, None, :] > 0, scores + bias, 0))
    close(B.sequence_masking(scores, None, 0, bias=bias), scores + bias)
    keep = np.tril(np.ones((3, 3), bool))[None]
    close(B.sequence_masking(scores, mask, -1.0, -1, keep),
          np.where(keep & (mask[:, None, :] > 0), scores, -1.0))


def test_batch_gather_align_reshape_flatten():
    params = RNG.normal(size=(2, 5, 3))
    idx = np.array([[4, 0], [1, 1]])
    ref = np.stack([params[b, idx[b]] for b in range(2)])
    close(B.batch_gather(params, idx), ref)
    close(B.batch_gather(params[..., 0], idx.astype("float32")), ref[..., 0])
    m = np.ones((2, 4))
    assert np_(B.align(m, [0, 3], 4)).shape == (2, 1, 1, 4)
    assert np_(B.align(m, [0, -1], 3)).shape == (2, 1, 4)
    close(B.reshape(X, (2, -1), -1), X.reshape(2, 3, 2, 2))
    close(B.reshape(X, (1, 3), 1, (4, 1), 2), X.reshape(2, 1, 3, 4, 1))
    close(B.flatten(X.reshape(2, 3, 2, 2), 2), X)
    close(B.root_mean_square(X, -1), np.sqrt((X ** 2).mean(-1)))
    close(B.divisible_temporal_padding(X, 2), np.pad(X, [(0, 0), (0, 1), (0, 0)]))
    assert B.dtype(1.0) is None and B.dtype(X) == "float32"


def test_multilabel_crossentropies_against_their_definition():
    scores = RNG.normal(size=(3, 6)).astype("float32") * 3
    labels = (RNG.rand(3, 6) > 0.6).astype("float32")

    def reference(y, s):  # Su 2020: log(1 + sum_neg e^s) + log(1 + sum_pos e^-s)
        return np.array([np.log1p(np.exp(s[i][y[i] == 0]).sum())
                         + np.log1p(np.exp(-s[i][y[i] == 1]).sum()) for i in range(len(s))])

    close(B.multilabel_categorical_crossentropy(labels, scores), reference(labels, scores),
          1e-4)
    soft = RNG.rand(3, 6).astype("float32")              # soft labels (kexue.fm/archives/9064)
    close(B.multilabel_categorical_crossentropy(soft, scores),
          np.log1p(((1 - soft) * np.exp(scores)).sum(-1))
          + np.log1p((soft * np.exp(-scores)).sum(-1)), 1e-4)
    masked = scores.copy()
    masked[:, -1] = -np.inf                              # an ignored class
    close(B.multilabel_categorical_crossentropy(labels[:, :-1], masked[:, :-1]),
          B.multilabel_categorical_crossentropy(np.concatenate([labels[:, :-1], np.zeros(
              (3, 1), "float32")], 1), masked), 1e-4)
    positives = [np.nonzero(labels[i])[0] for i in range(3)]
    width = max(len(p) for p in positives)
    ids = np.zeros((3, width), "int32")                  # padded with 0 = dummy class
    for i, p in enumerate(positives):
        ids[i, :len(p)] = p + 1
    shifted = np.concatenate([np.zeros((3, 1), "float32"), scores], 1)
    close(B.sparse_multilabel_categorical_crossentropy(ids, shifted, mask_zero=True),
          reference(labels, scores), 1e-4)


def test_attention_normalize_and_rope():
    a = RNG.normal(size=(2, 3, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    m = mask[:, None, :] > 0
    e = np.where(m, np.exp(a - a.max(-1, keepdims=True)), 0)
    close(B.attention_normalize(a, mask), e / e.sum(-1, keepdims=True))
    n = mask.sum(-1)[:, None, None]
    close(B.attention_normalize(a, mask, method="squared_relu"),
          np.where(m, np.maximum(a, 0) ** 2, 0) / n)
    scale = np.log(np.maximum(n, 16)) / np.log(512)
    e = np.where(m, np.exp(a * scale - (a * scale).max(-1, keepdims=True)), 0)
    close(B.attention_normalize(a, mask, method="softmax_plus"), e / e.sum(-1, keepdims=True))
    with pytest.raises(ValueError, match="unknown method"):
        B.attention_normalize(a, method="cosine")
    # RoPE on (batch, n, d): pair (x0, x1) rotated by t = pos * 10000^(-2i/d)
    x = RNG.normal(size=(1, 5, 4)).astype("float32")
    table = B.sinusoidal_embeddings(np.arange(5)[None], 4)
    rotated = np_(B.apply_rotary_position_embeddings(table, x)[0])
    theta = np.arange(5)[:, None] * 10000.0 ** (-np.arange(2) * 2 / 4)
    c, s = np.cos(theta), np.sin(theta)
    ref = np.stack([x[0, :, 0::2] * c - x[0, :, 1::2] * s,
                    x[0, :, 1::2] * c + x[0, :, 0::2] * s], -1).reshape(5, 4)
    np.testing.assert_allclose(rotated[0], ref, rtol=1e-5, atol=1e-5)
    init = np_(B.Sinusoidal()((5, 4)))
    np.testing.assert_allclose(init, np_(table)[0], rtol=1e-6)


def test_set_gelu_piecewise_linear_and_more():
    assert B.get_activation("gelu") is B.gelu_erf
    try:
        B.set_gelu("tanh")
        assert B.get_activation("gelu") is B.gelu_tanh
    finally:
        B.set_gelu("erf")
    with pytest.raises(ValueError):
        B.set_gelu("sigmoid")
    values = [float(np_(B.piecewise_linear(t, {1000: 1.0, 2000: 0.1}))) for t in
              (0, 500, 1000, 1500, 3000)]
    np.testing.assert_allclose(values, [0, 0.5, 1.0, 0.55, 0.1], rtol=1e-6)
    close(B.swish(X), X / (1 + np.exp(-X)))
    close(B.leaky_relu(X), np.where(X > 0, X, 0.2 * X))
    assert B.recompute_grad(len) is len
    assert B.is_tf_keras == (keras.backend.backend() == "tensorflow")
    assert isinstance(B.get_available_gpus(), list)
    assert B.custom_objects["gelu"] is B.gelu_erf


def test_search_layer():
    ids = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(10, 4, name="Embedding-Token")(ids)
    inner = keras.Model(ids, keras.layers.Dense(4, name="inner-dense")(emb), name="inner")
    x = keras.Input((None,), dtype="int32")
    y = keras.layers.Dense(2, name="head")(inner(x))
    assert search_layer(y, "head").name == "head"
    assert search_layer(y, "Embedding-Token") is inner.get_layer("Embedding-Token")
    assert search_layer(y, "nothing") is None
    with pytest.raises(ValueError, match="get_layer"):
        search_layer(np.zeros(3), "head")
