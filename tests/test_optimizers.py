"""bert4keras.optimizers: every update rule against a NumPy reference written
here, slot counts, serialization, and a tiny ``fit`` per optimizer.

Backend-neutral (keras.ops / convert_to_numpy), e.g.
``KERAS_BACKEND=jax python -m pytest -q tests/test_optimizers.py``.
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras.optimizers import (
    PiecewiseLinear,
    Tiger,
    extend_with_layer_adaptation,
    extend_with_lazy_optimization,
    extend_with_lookahead,
    extend_with_parameter_wise_lr,
    layerwise_lr_decay,
    piecewise_linear,
)

ATOL = 1e-5


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def make_variable(path, value):
    """keras.Variable whose ``.path`` is ``path`` (nested name scopes)."""
    *scopes, name = path.split("/")

    def build(i):
        if i == len(scopes):
            return keras.Variable(np.array(value, "float32"), name=name)
        with keras.name_scope(scopes[i]):
            return build(i + 1)

    variable = build(0)
    assert variable.path == path
    return variable


def make_variables(values):
    return [make_variable(p, v) for p, v in values.items()]


def apply(optimizer, variables, grads):
    optimizer.apply([ops.convert_to_tensor(np.asarray(g, "float32")) for g in grads], variables)


def numpy_of(variables):
    return [ops.convert_to_numpy(v) for v in variables]


def close(actual, expected, atol=ATOL):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=1e-5)


def random_grads(rng, shapes, zero_rows=None):
    grads = [rng.normal(size=s).astype("float32") for s in shapes]
    if zero_rows:
        for index, rows in zero_rows.items():
            grads[index][rows] = 0.0
    return grads


# Shapes used by most reference tests: (path, initial value).
def model_like_values(rng):
    return {
        "Embedding-Token/embeddings": rng.normal(size=(6, 4)) * 0.1,
        "Transformer-0-FeedForward/o_dense/kernel": rng.normal(size=(4, 3)) * 0.2,
        "Transformer-0-FeedForward/o_dense/bias": rng.normal(size=(3,)) * 0.1,
        "Transformer-0-FeedForward-Norm/gamma": 1.0 + rng.normal(size=(3,)) * 0.1,
        "Transformer-0-FeedForward-Norm/beta": rng.normal(size=(3,)) * 0.1,
    }


# ---------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------

def tiger_reference(values, grad_steps, lr, beta=0.965, wd=0.01, k=1, shrink=1.0,
                    lazy=False):
    """Tiger as in bojone/tiger tiger.py, with a whole-step non-finite guard."""
    paths = list(values)
    w = [np.array(v, "float64") for v in values.values()]
    m = [np.zeros_like(x) for x in w]
    for t, grads in enumerate(grad_steps):
        finite = all(np.isfinite(g).all() for g in grads)
        for i, path in enumerate(paths):
            if not finite:
                centre = 1.0 if path.endswith("/gamma") else 0.0
                w[i] = (w[i] - centre) * shrink + centre
                continue
            g = np.asarray(grads[i], "float64")
            b1 = beta if t % k == 0 else 1.0
            eta = lr if (t + 1) % k == 0 else 0.0
            decay = wd
            embedding = path.endswith("embeddings")
            if any(s in path for s in ("bias", "beta", "gamma")):
                eta, decay = eta * 0.5, 0.0
            elif embedding:
                eta = eta * np.sqrt(np.mean(w[i] ** 2, axis=-1, keepdims=True))
            else:
                eta = eta * np.sqrt(np.mean(w[i] ** 2))
            new_m = b1 * m[i] + (1 - beta) / k * g
            new_w = w[i] - eta * (np.sign(new_m) + decay * w[i])
            if lazy and embedding:
                touched = np.any(g != 0, axis=-1, keepdims=True)
                new_m = np.where(touched, new_m, m[i])
                new_w = np.where(touched, new_w, w[i])
            m[i], w[i] = new_m, new_w
    return w, m


def adamw_delta(w, g, m, v, t, lr, wd, beta_1=0.9, beta_2=0.999, eps=1e-7):
    """One Keras AdamW step (decay first, then Adam). Returns (new_w, m, v)."""
    w = w - w * wd * lr
    m = m + (g - m) * (1 - beta_1)
    v = v + (g * g - v) * (1 - beta_2)
    alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    return w - m * alpha / (np.sqrt(v) + eps), m, v


# ---------------------------------------------------------------------------
# PiecewiseLinear
# ---------------------------------------------------------------------------

def test_piecewise_linear_values():
    steps = [0, 1, 500, 999, 1000, 1500, 2000, 2001, 10 ** 6]
    schedule = PiecewiseLinear({1000: 1.0, "2000": 0.1}, scale=3e-5)  # "2000": JSON keys
    got = [float(ops.convert_to_numpy(schedule(s))) for s in steps]
    expected = 3e-5 * np.interp(steps, [0, 1000, 2000], [0.0, 1.0, 0.1])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)

    # Without from_zero the first value holds before the first point.
    got = [float(ops.convert_to_numpy(piecewise_linear(s, {10: 2.0, 20: 4.0}, from_zero=False)))
           for s in [0, 10, 15, 20, 30]]
    np.testing.assert_allclose(got, [2.0, 2.0, 3.0, 4.0, 4.0], rtol=1e-6)
    # Integer step tensors (what optimizers pass) work as well.
    step = ops.convert_to_tensor(np.array(250, "int32"))
    assert abs(float(ops.convert_to_numpy(PiecewiseLinear({0: 0, 1000: 1, 10000: 0.1})(step)))
               - 0.25) < 1e-6


def test_piecewise_linear_serialization_round_trip():
    schedule = PiecewiseLinear({0: 0.0, 1000: 1.0, 10000: 0.1}, scale=2e-5)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(schedule)))
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, PiecewiseLinear)
    for step in [0, 10, 1000, 5000, 20000]:
        assert np.isclose(float(ops.convert_to_numpy(restored(step))),
                          float(ops.convert_to_numpy(schedule(step))), rtol=1e-6)
    # Inside an optimizer config too.
    optimizer = Tiger(learning_rate=schedule)
    config = json.loads(json.dumps(optimizer.get_config(), default=str))
    again = Tiger.from_config(config)
    assert isinstance(again._learning_rate, PiecewiseLinear)
    assert again._learning_rate.get_config() == schedule.get_config()


@pytest.mark.parametrize("bad", [{}, {1: 0.0, "1": 1.0}, {-5: 1.0}, {"a": 1.0}])
def test_piecewise_linear_rejects_bad_schedules(bad):
    with pytest.raises(ValueError):
        PiecewiseLinear(bad)


# ---------------------------------------------------------------------------
# Tiger
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("wd,lazy", [(0.0, False), (0.01, False), (0.01, True)])
def test_tiger_matches_reference(wd, lazy):
    rng = np.random.RandomState(0)
    values = model_like_values(rng)
    variables = make_variables(values)
    shapes = [np.shape(v) for v in values.values()]
    steps = [random_grads(rng, shapes, zero_rows={0: [1, 3 + t % 2]}) for t in range(6)]
    optimizer = Tiger(learning_rate=0.01, weight_decay=wd, lazy_embeddings=lazy)
    for grads in steps:
        apply(optimizer, variables, grads)
    expected_w, expected_m = tiger_reference(values, steps, lr=0.01, wd=wd, lazy=lazy)
    close(numpy_of(variables), expected_w)
    close(numpy_of(optimizer._momentums), expected_m)


def test_tiger_plain_rule_without_rms_scaling():
    rng = np.random.RandomState(1)
    w0 = rng.normal(size=(3, 2))
    variable = make_variable("dense/kernel", w0)
    optimizer = Tiger(learning_rate=0.1, beta=0.9, weight_decay=0.1, rms_scaling=False)
    w, m = w0.copy(), np.zeros_like(w0)
    for _ in range(5):
        g = rng.normal(size=w0.shape)
        apply(optimizer, [variable], [g])
        m = 0.9 * m + 0.1 * g
        w = w - 0.1 * (np.sign(m) + 0.1 * w)
    close(numpy_of([variable]), [w])


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_tiger_skips_whole_step_on_non_finite_gradient(bad_value):
    rng = np.random.RandomState(2)
    values = model_like_values(rng)
    variables = make_variables(values)
    shapes = [np.shape(v) for v in values.values()]
    steps = [random_grads(rng, shapes) for _ in range(6)]
    steps[2][2][0] = bad_value  # only the bias gradient is broken, at step 2
    optimizer = Tiger(learning_rate=0.01, shrink_ratio=1.0)  # the skip option
    for t, grads in enumerate(steps):
        if t == 2:
            before_w = numpy_of(variables)
            before_m = numpy_of(optimizer._momentums)
        apply(optimizer, variables, grads)
        if t == 2:  # nothing moved: neither weights nor momentum, of any variable
            close(numpy_of(variables), before_w, atol=0)
            close(numpy_of(optimizer._momentums), before_m, atol=0)
    expected_w, expected_m = tiger_reference(values, steps, lr=0.01)
    close(numpy_of(variables), expected_w)
    close(numpy_of(optimizer._momentums), expected_m)
    assert int(ops.convert_to_numpy(optimizer.iterations)) == 6


def test_tiger_reference_shrink_on_non_finite_gradient():
    rng = np.random.RandomState(3)
    values = model_like_values(rng)
    variables = make_variables(values)
    shapes = [np.shape(v) for v in values.values()]
    steps = [random_grads(rng, shapes) for _ in range(5)]
    steps[3][0][0, 0] = np.nan
    optimizer = Tiger(learning_rate=0.01, shrink_ratio=0.99)
    for grads in steps:
        apply(optimizer, variables, grads)
    expected_w, expected_m = tiger_reference(values, steps, lr=0.01, shrink=0.99)
    close(numpy_of(variables), expected_w)
    close(numpy_of(optimizer._momentums), expected_m)


def test_tiger_own_gradient_accumulation_matches_reference():
    rng = np.random.RandomState(4)
    values = model_like_values(rng)
    variables = make_variables(values)
    shapes = [np.shape(v) for v in values.values()]
    steps = [random_grads(rng, shapes) for _ in range(8)]
    optimizer = Tiger(learning_rate=0.01, grad_accum_steps=2)
    for t, grads in enumerate(steps):
        before = numpy_of(variables)
        apply(optimizer, variables, grads)
        if t % 2 == 0:  # weights move only at the last micro-step of a group
            close(numpy_of(variables), before, atol=0)
    expected_w, expected_m = tiger_reference(values, steps, lr=0.01, k=2)
    close(numpy_of(variables), expected_w)
    close(numpy_of(optimizer._momentums), expected_m)


def test_tiger_with_keras_gradient_accumulation_matches_averaged_reference():
    rng = np.random.RandomState(5)
    values = model_like_values(rng)
    variables = make_variables(values)
    shapes = [np.shape(v) for v in values.values()]
    micro = [random_grads(rng, shapes) for _ in range(8)]
    optimizer = Tiger(learning_rate=0.01, gradient_accumulation_steps=2)
    for grads in micro:
        apply(optimizer, variables, grads)
    averaged = [[(a + b) / 2 for a, b in zip(micro[i], micro[i + 1])] for i in range(0, 8, 2)]
    expected_w, _ = tiger_reference(values, averaged, lr=0.01)
    close(numpy_of(variables), expected_w)


def _count(optimizer, word):
    return sum(word in v.path for v in optimizer.variables)


def test_tiger_has_one_slot_per_weight():
    rng = np.random.RandomState(6)
    values = model_like_values(rng)
    n = len(values)
    shapes = [np.shape(v) for v in values.values()]

    plain = Tiger()
    plain.build(make_variables(values))
    assert len(plain._momentums) == n
    assert _count(plain, "momentum") == n
    assert len(plain.variables) == n + 2  # + iteration counter, learning rate

    own = Tiger(grad_accum_steps=4)  # Tiger's own accumulation: no extra memory
    own.build(make_variables(values))
    assert len(own.variables) == n + 2

    keras_acc = Tiger(gradient_accumulation_steps=4)
    variables = make_variables(values)
    for _ in range(4):
        apply(keras_acc, variables, random_grads(rng, shapes))
    # Still exactly one momentum of our own per weight; Keras adds its own
    # `gradient_accumulator` per weight on top.
    assert len(keras_acc._momentums) == n
    assert _count(keras_acc, "momentum") == n
    assert _count(keras_acc, "gradient_accumulator") == n
    assert len(keras_acc.variables) == 2 * n + 2


def test_tiger_lazy_embeddings_keep_rare_rows_bounded():
    """Blog 9736: a row seen once keeps moving under sign(m); lazy rows do not."""
    rng = np.random.RandomState(7)
    table0 = rng.normal(size=(8, 4)) * 0.1
    first = rng.normal(size=(8, 4))       # step 0: every token is seen
    frequent = rng.normal(size=(1, 4))    # afterwards only token 0, same direction
    results = {}
    for lazy in (False, True):
        table = make_variable("Embedding-Token/embeddings", table0)
        optimizer = Tiger(learning_rate=0.1, weight_decay=0.01, lazy_embeddings=lazy)
        apply(optimizer, [table], [first])
        after_first = ops.convert_to_numpy(table).copy()
        grad = np.zeros((8, 4))
        grad[0] = frequent
        for _ in range(60):
            apply(optimizer, [table], [grad])
        results[lazy] = (after_first, ops.convert_to_numpy(table))
    after_first, final = results[True]
    np.testing.assert_array_equal(final[1:], after_first[1:])  # rare rows untouched
    assert np.abs(final[1:]).max() < 0.5
    _, drifted = results[False]
    assert np.abs(drifted[1:]).max() > 10 * np.abs(after_first[1:]).max()


def test_tiger_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Tiger(beta=1.0)
    with pytest.raises(ValueError):
        Tiger(grad_accum_steps=0)
    with pytest.raises(ValueError):
        Tiger(shrink_ratio=0.0)
    with pytest.raises(ValueError):
        Tiger(grad_accum_steps=2, gradient_accumulation_steps=2)
    with pytest.raises(ValueError):
        Tiger(grad_accum_steps=2, lazy_embeddings=True)


# ---------------------------------------------------------------------------
# Lookahead
# ---------------------------------------------------------------------------

def test_lookahead_matches_reference():
    rng = np.random.RandomState(8)
    w0 = rng.normal(size=(3, 2))
    variable = make_variable("dense/kernel", w0)
    SGDLookahead = extend_with_lookahead(keras.optimizers.SGD)
    optimizer = SGDLookahead(learning_rate=0.1, lookahead_steps=3, lookahead_alpha=0.5)
    fast, slow = w0.copy(), w0.copy()
    for t in range(8):
        g = rng.normal(size=w0.shape)
        apply(optimizer, [variable], [g])
        fast = fast - 0.1 * g
        if (t + 1) % 3 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow.copy()
        close(numpy_of([variable]), [fast])
    close(numpy_of(optimizer._slow_weights), [slow])


def test_lookahead_rejects_bad_arguments():
    AdamLookahead = extend_with_lookahead(keras.optimizers.Adam)
    with pytest.raises(ValueError):
        AdamLookahead(lookahead_steps=0)
    with pytest.raises(ValueError):
        AdamLookahead(lookahead_alpha=1.5)
    with pytest.raises(TypeError):
        extend_with_lookahead(int)


# ---------------------------------------------------------------------------
# Lazy updates
# ---------------------------------------------------------------------------

def test_lazy_adamw_matches_reference():
    rng = np.random.RandomState(9)
    values = {"Embedding-Token/embeddings": rng.normal(size=(5, 3)),
              "dense/kernel": rng.normal(size=(3, 2))}
    variables = make_variables(values)
    LazyAdamW = extend_with_lazy_optimization(keras.optimizers.AdamW)
    optimizer = LazyAdamW(learning_rate=0.01, weight_decay=0.1)
    assert optimizer.lazy_variables == ["embeddings"]
    w = [np.array(v, "float64") for v in values.values()]
    m = [np.zeros_like(x) for x in w]
    v = [np.zeros_like(x) for x in w]
    for t in range(1, 7):
        grads = random_grads(rng, [x.shape for x in w], zero_rows={0: [t % 5, (t + 2) % 5]})
        apply(optimizer, variables, grads)
        for i in range(2):
            new_w, new_m, new_v = adamw_delta(w[i], grads[i], m[i], v[i], t, 0.01, 0.1)
            if i == 0:
                touched = np.any(grads[i] != 0, axis=-1, keepdims=True)
                new_w = np.where(touched, new_w, w[i])
                new_m = np.where(touched, new_m, m[i])
                new_v = np.where(touched, new_v, v[i])
            w[i], m[i], v[i] = new_w, new_m, new_v
        close(numpy_of(variables), w)
    close(numpy_of(optimizer._momentums), m)
    close(numpy_of(optimizer._velocities), v)


# ---------------------------------------------------------------------------
# Parameter-wise learning rates
# ---------------------------------------------------------------------------

def test_layerwise_lr_decay_follows_electra():
    multipliers = layerwise_lr_decay(2, 0.5)
    assert multipliers == {"Embedding-": 0.5 ** 4, "Transformer-0-": 0.5 ** 3,
                           "Transformer-1-": 0.5 ** 2}
    with pytest.raises(ValueError):
        layerwise_lr_decay(2, 0.0)
    with pytest.raises(ValueError):
        layerwise_lr_decay(-1, 0.5)


def test_parameter_wise_lr_matches_reference():
    rng = np.random.RandomState(10)
    values = {
        "Embedding-Token/embeddings": rng.normal(size=(4, 3)),
        "Transformer-0-FeedForward/o_dense/kernel": rng.normal(size=(3, 3)),
        "Transformer-1-FeedForward/o_dense/kernel": rng.normal(size=(3, 3)),
        "Transformer-10-FeedForward/o_dense/bias": rng.normal(size=(3,)),
        "Transformer-1-FeedForward-Norm/gamma": rng.normal(size=(3,)),
    }
    multipliers = dict(layerwise_lr_decay(2, 0.5), kernel=2.0)
    expected_multipliers = [0.5 ** 4, 0.5 ** 3 * 2, 0.5 ** 2 * 2, 1.0, 0.5 ** 2]
    variables = make_variables(values)
    AdamWLR = extend_with_parameter_wise_lr(keras.optimizers.AdamW)
    optimizer = AdamWLR(learning_rate=0.01, weight_decay=0.1, multipliers=multipliers,
                        weight_decay_exclude=["Norm", "bias"])
    w = [np.array(x, "float64") for x in values.values()]
    m = [np.zeros_like(x) for x in w]
    v = [np.zeros_like(x) for x in w]
    for t in range(1, 6):
        grads = random_grads(rng, [x.shape for x in w])
        apply(optimizer, variables, grads)
        for i, path in enumerate(values):
            wd = 0.0 if ("Norm" in path or "bias" in path) else 0.1
            lr = 0.01 * expected_multipliers[i]
            w[i], m[i], v[i] = adamw_delta(w[i], grads[i], m[i], v[i], t, lr, wd)
    close(numpy_of(variables), w)
    assert [optimizer.lr_multiplier(x) for x in variables] == pytest.approx(expected_multipliers)


# ---------------------------------------------------------------------------
# Layer adaptation
# ---------------------------------------------------------------------------

def test_layer_adaptation_matches_reference():
    rng = np.random.RandomState(11)
    values = {"dense/kernel": rng.normal(size=(4, 3)),
              "dense/bias": rng.normal(size=(3,)) * 0.1}
    variables = make_variables(values)
    Lamb = extend_with_layer_adaptation(keras.optimizers.AdamW)
    optimizer = Lamb(learning_rate=0.01, weight_decay=0.01)
    w = [np.array(x, "float64") for x in values.values()]
    m = [np.zeros_like(x) for x in w]
    v = [np.zeros_like(x) for x in w]
    for t in range(1, 7):
        grads = random_grads(rng, [x.shape for x in w])
        apply(optimizer, variables, grads)
        for i, path in enumerate(values):
            new_w, m[i], v[i] = adamw_delta(w[i], grads[i], m[i], v[i], t, 0.01, 0.01)
            if path.endswith("kernel"):  # LAMB: step length lr * ||w||
                delta = w[i] - new_w
                ratio = 0.01 * np.linalg.norm(w[i]) / np.linalg.norm(delta)
                new_w = w[i] - ratio * delta
            w[i] = new_w
    close(numpy_of(variables), w)


# ---------------------------------------------------------------------------
# Stacking, fit, saving
# ---------------------------------------------------------------------------

def test_factories_cache_and_stack():
    A = extend_with_parameter_wise_lr(keras.optimizers.AdamW)
    assert extend_with_parameter_wise_lr(keras.optimizers.AdamW) is A
    B = extend_with_lookahead(A)
    optimizer = B(learning_rate=1e-3, multipliers={"x": 0.5}, lookahead_steps=2)
    config = optimizer.get_config()
    assert config["multipliers"] == {"x": 0.5} and config["lookahead_steps"] == 2
    again = B.from_config(json.loads(json.dumps(config)))
    assert again.multipliers == {"x": 0.5}


def _tiny_data():
    rng = np.random.RandomState(0)
    ids = rng.randint(1, 20, size=(32, 6)).astype("int32")
    labels = (ids == 3).any(axis=1).astype("int32") + (ids == 5).any(axis=1).astype("int32")
    return ids, np.minimum(labels, 1)


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="Embedding-Token")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(16, activation="relu", name="Transformer-0-FeedForward")(x)
    x = keras.layers.LayerNormalization(name="Transformer-0-FeedForward-Norm")(x)
    outputs = keras.layers.Dense(2, name="Classifier")(x)
    return keras.Model(inputs, outputs)


FIT_CASES = {
    "tiger": lambda: Tiger(learning_rate=0.02),
    "tiger_lazy_keras_accumulation": lambda: Tiger(learning_rate=0.02, lazy_embeddings=True,
                                                   gradient_accumulation_steps=2),
    "tiger_own_accumulation": lambda: Tiger(learning_rate=0.02, grad_accum_steps=2),
    "lookahead_adam": lambda: extend_with_lookahead(keras.optimizers.Adam)(
        learning_rate=0.01, lookahead_steps=3),
    "lazy_adam": lambda: extend_with_lazy_optimization(keras.optimizers.Adam)(
        learning_rate=0.01),
    "layerwise_adamw": lambda: extend_with_parameter_wise_lr(keras.optimizers.AdamW)(
        learning_rate=0.01, multipliers=layerwise_lr_decay(1, 0.8),
        weight_decay_exclude=["Norm", "bias"]),
    "lamb_adamw": lambda: extend_with_layer_adaptation(keras.optimizers.AdamW)(
        learning_rate=0.01),
    "lamb_tiger_schedule": lambda: extend_with_layer_adaptation(Tiger)(
        learning_rate=PiecewiseLinear({4: 0.05, 40: 0.01})),
}


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_fit_loss_decreases(case):
    ids, labels = _tiny_data()
    model = _tiny_model()
    jit = False if keras.backend.backend() == "tensorflow" else "auto"
    model.compile(optimizer=FIT_CASES[case](), jit_compile=jit,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ids, labels, batch_size=8, epochs=8, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses


def test_saved_model_restores_optimizers(tmp_path):
    ids, labels = _tiny_data()
    for optimizer in (Tiger(learning_rate=PiecewiseLinear({10: 0.01}), lazy_embeddings=True),
                      extend_with_parameter_wise_lr(keras.optimizers.AdamW)(
                          learning_rate=0.01, multipliers={"Embedding-": 0.5})):
        model = _tiny_model()
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        model.fit(ids, labels, batch_size=16, epochs=1, verbose=0)
        path = str(tmp_path / "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        assert type(restored.optimizer) is type(optimizer)
        assert restored.optimizer.get_config() == optimizer.get_config()
        close(numpy_of(restored.optimizer.variables), numpy_of(optimizer.variables), atol=0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="IndexedSlices are TF's")
def test_sparse_gradients_match_dense_ones():
    """TensorFlow hands embedding gradients over as IndexedSlices (repeated ids)."""
    import tensorflow as tf

    rng = np.random.RandomState(12)
    table0 = rng.normal(size=(6, 3))
    rows = np.array([4, 1, 4, 0], "int32")
    values = rng.normal(size=(4, 3)).astype("float32")
    dense = np.zeros((6, 3), "float32")
    np.add.at(dense, rows, values)
    LazyAdam = extend_with_lazy_optimization(keras.optimizers.Adam)
    for make in (lambda: Tiger(learning_rate=0.01, lazy_embeddings=True),
                 lambda: LazyAdam(learning_rate=0.01)):
        results = []
        for grad in (tf.IndexedSlices(tf.constant(values), tf.constant(rows), tf.constant([6, 3])),
                     tf.constant(dense)):
            table = make_variable("Embedding-Token/embeddings", table0)
            optimizer = make()
            for _ in range(3):
                optimizer.apply([grad], [table])
            results.append(ops.convert_to_numpy(table))
        close([results[0]], [results[1]])
        np.testing.assert_array_equal(results[0][[2, 3, 5]], table0[[2, 3, 5]].astype("float32"))
