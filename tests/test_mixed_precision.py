"""Mixed precision (``mixed_float16``, ``mixed_bfloat16``) for every family.

Each family is built under float32 and under the mixed policy with the same
weights; the outputs must agree within a tolerance set by the compute
dtype's precision. float16 keeps 11 significant bits (unit roundoff
u = 2**-11 ~ 4.9e-4), bfloat16 8 (u = 2**-8 ~ 3.9e-3). Each matmul output,
residual add and activation is rounded once to the compute dtype, and a
2-layer model rounds the residual stream some 10-20 times; those errors
mostly cancel, and the largest difference measured here was about 4u (NEZHA
relative to its largest output in both dtypes). The tolerance is therefore
10u times the largest reference output: 5e-3 (float16) and 4e-2 (bfloat16).
A model that lost its float32 softmax or LayerNorm, or turned a fully masked
row into NaN, fails by far more.

Also: the output heads are float32, a fully padded sequence gives finite
outputs under float16 (the -1e12 attention bias overflows float16), float16
training runs with Keras' ``LossScaleOptimizer`` (added by ``compile``, or
used by hand in a custom loop) and gives finite losses and weights, and the
float16 helpers of ``bert4keras.backend`` stay finite.

This CPU runs bfloat16 matmuls very slowly, so the models are tiny (hidden
32, 2 layers, length 8).
"""

import functools

import numpy as np
import pytest

TINY = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position=32)
#: model key -> (extra constructor arguments, application)
FAMILIES = {
    "bert": (dict(with_nsp=True, with_mlm=True), "encoder"),
    "bert-unilm": (dict(with_mlm="linear"), "unilm"),
    "albert": (dict(embedding_size=16, with_mlm="linear"), "encoder"),
    "nezha": ({}, "encoder"),
    "electra": (dict(with_discriminator=True), "encoder"),
    "roformer": (dict(with_mlm="linear"), "encoder"),
    "roformer_v2": (dict(with_mlm=True), "encoder"),
    "gpt": (dict(with_lm="linear"), "lm"),
    "gpt2": ({}, "lm"),
    "gpt2_ml": (dict(with_lm="linear"), "lm"),
    "t5": ({}, "encoder"),
    "t5.1.1": (dict(with_lm="linear"), "encoder"),
    "mt5.1.1_encoder": ({}, "encoder"),
}
TOLERANCE = {"mixed_float16": 5e-3, "mixed_bfloat16": 4e-2}


@pytest.fixture(autouse=True)
def restore_policy():
    import keras

    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


def build(name, policy, recompute=False, **overrides):
    import keras

    from bert4keras.models import build_transformer_model

    kwargs, application = FAMILIES[name]
    args = dict(TINY, **kwargs)
    if name.startswith(("t5", "mt5")):
        args["segment_vocab_size"] = 0
    args.update(overrides)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    return build_transformer_model(model=name.split("-")[0], application=application,
                                   recompute=recompute, **args)


def batch_for(model):
    """ids (row 1 padded, row 2 all padding) and segment ids (UniLM: 0 then 1)."""
    rng = np.random.RandomState(0)
    ids = rng.randint(1, TINY["vocab_size"], (3, 8)).astype("int32")
    ids[1, 5:] = 0
    ids[2] = 0
    segments = (np.arange(8)[None] >= 4).astype("int32").repeat(3, 0)
    return [segments if t.name == "Input-Segment" else ids for t in model.inputs]


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


@functools.lru_cache(maxsize=None)
def reference(name):
    """``({path: weight}, [outputs])`` of the float32 model (shared by both policies)."""
    from keras import ops

    model = build(name, "float32")
    weights = {v.path: ops.convert_to_numpy(v) for v in model.weights}
    return weights, [ops.convert_to_numpy(y) for y in as_list(model(batch_for(model)))]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_outputs_close_to_float32(name, policy):
    from keras import ops

    weights, expected = reference(name)
    model = build(name, policy)
    assert {v.path for v in model.weights} == set(weights)
    for variable in model.weights:
        assert variable.dtype in ("float32", "int32", "int64", "uint32")  # masters stay float32
        variable.assign(weights[variable.path])
    outputs = as_list(model(batch_for(model)))
    for want, got, layer in zip(expected, outputs, model.output_names):
        got = ops.convert_to_numpy(ops.cast(got, "float32"))
        assert np.isfinite(got).all(), "%s: %s has non-finite values" % (name, layer)
        scale = np.abs(want).max()
        error = np.abs(got - want).max()
        assert error <= TOLERANCE[policy] * scale, (
            "%s %s %s: max |diff| %.3g > %.3g (largest output %.3g)"
            % (name, policy, layer, error, TOLERANCE[policy] * scale, scale))
    heads = [layer for layer in model.layers
             if layer.name.endswith("Activation") or layer.name in (
                 "NSP-Proba", "Discriminator-Prediction")]
    for layer in heads:  # output activations run (and return) float32
        assert layer.compute_dtype == "float32", layer.name


def test_float16_attention_and_norms_compute_in_float32():
    """The scores/softmax and LayerNorm statistics are float32 under float16:
    the gamma/beta used are exactly the float32 weights, and a fully padded
    row (every key masked) gives the float32 result, not NaN."""
    import keras
    from keras import ops

    from bert4keras.layers import LayerNormalization, MultiHeadAttention

    keras.mixed_precision.set_global_policy("mixed_float16")
    norm = LayerNormalization(epsilon=1e-12)
    x = np.random.RandomState(0).standard_normal((2, 3, 8)).astype("float16")
    norm(x)
    norm.gamma.assign(np.linspace(0.5, 1.5, 8).astype("float32"))
    norm.beta.assign(np.linspace(-0.1, 0.1, 8).astype("float32"))
    y = ops.convert_to_numpy(norm(x))
    assert y.dtype == np.float16
    # not autocast: the layer reads the float32 gamma/beta, not float16 copies
    assert norm.gamma.dtype == "float32" and norm.gamma._autocast is False
    x32 = x.astype("float32")
    want = ((x32 - x32.mean(-1, keepdims=True)) / x32.std(-1, keepdims=True)
            * np.linspace(0.5, 1.5, 8) + np.linspace(-0.1, 0.1, 8))
    np.testing.assert_allclose(y.astype("float32"), want, atol=4e-3)  # float16 output rounding
    attention = MultiHeadAttention(heads=2, head_size=4)
    q = ops.cast(x, "float16")
    bias = np.full((2, 1, 1, 3), -1e12, "float32")  # every key hidden
    out = ops.convert_to_numpy(attention([q, q, q, bias]))
    assert np.isfinite(out).all()


def test_backend_helpers_finite_in_float16():
    from keras import ops

    from bert4keras import backend as B

    x = ops.cast(np.array([[1.0, 2.0, 3.0]], "float32"), "float16")
    masked = ops.convert_to_numpy(B.sequence_masking(x, np.array([[1, 1, 0]]), "-inf"))
    assert np.isfinite(masked).all() and masked[0, 2] == -65504.0
    np.testing.assert_array_equal(masked[0, :2], [1.0, 2.0])
    y_true = np.array([[0, 1, 0, 1]], "float32")
    scores = np.array([[-2.0, 3.0, 0.5, 1.0]], "float32")
    loss16 = B.multilabel_categorical_crossentropy(y_true, ops.cast(scores, "float16"))
    loss32 = B.multilabel_categorical_crossentropy(y_true, scores)
    assert ops.convert_to_numpy(loss16).dtype == np.float32
    np.testing.assert_allclose(ops.convert_to_numpy(loss16), ops.convert_to_numpy(loss32),
                               rtol=1e-3)


@pytest.mark.parametrize("recompute", [False, True])
def test_float16_training_step_with_loss_scaling(recompute):
    """``compile`` wraps the optimizer in ``LossScaleOptimizer`` when the model
    was built under ``mixed_float16``; two steps give finite losses and
    finite, changed weights (with recompute too)."""
    import keras
    from keras import ops

    model = build("bert", "mixed_float16", recompute=recompute, with_nsp=False,
                  with_mlm="linear")
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = batch_for(model)
    x = [v[:2] for v in x]  # no all-padding row: it would have no target to learn
    y = np.random.RandomState(1).randint(1, TINY["vocab_size"], (2, 8)).astype("int32")
    before = [ops.convert_to_numpy(v) for v in model.trainable_variables]
    history = model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    after = [ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert all(np.isfinite(a).all() for a in after)
    assert sum(not np.array_equal(a, b) for a, b in zip(before, after)) > len(after) // 2
    assert float(ops.convert_to_numpy(model.optimizer.dynamic_scale)) > 1  # still scaling


def test_float16_custom_loop_with_loss_scale_optimizer():
    """The documented custom-loop recipe: differentiate ``scale_loss(loss)``;
    ``LossScaleOptimizer.apply`` unscales and skips non-finite steps."""
    import keras
    import tensorflow as tf
    from keras import ops

    model = build("gpt2", "mixed_float16")
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.AdamW(1e-3))
    ids = np.random.RandomState(2).randint(1, TINY["vocab_size"], (2, 8)).astype("int32")
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    variables = model.trainable_variables
    for _ in range(2):
        with tf.GradientTape() as tape:
            probs = model(ids[:, :-1], training=True)
            assert probs.dtype == "float32"  # LM-Activation is float32
            loss = loss_fn(ids[:, 1:], probs)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        assert np.isfinite(float(loss))
    assert all(np.isfinite(ops.convert_to_numpy(v)).all() for v in variables)
    assert int(ops.convert_to_numpy(optimizer.iterations)) == 2  # no step was skipped


def test_bfloat16_training_step():
    import keras

    model = build("t5.1.1", "mixed_bfloat16")
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    ids = np.random.RandomState(3).randint(1, TINY["vocab_size"], (2, 8)).astype("int32")
    history = model.fit([ids, ids], ids, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
