"""bert4keras.optimizers.AdamW / Adam: on torch one fused kernel per step
(bert4keras/optimizers/fused.py), the same update as Keras' class.

References: a float64 NumPy transcription of the update (Kingma & Ba's Adam
with epsilon outside the bias correction as Keras writes it; decoupled decay,
Loshchilov & Hutter; Google BERT's update without bias correction) fed the
same gradients, and Keras' own ``keras.optimizers.AdamW`` on the same model.

The torch tests run in tests/test_backends.py's ``KERAS_BACKEND=torch``
process; on TensorFlow the class must be Keras' own (never the fused path).
"""

import keras
import numpy as np
import pytest

from bert4keras.optimizers import Adam, AdamW, extend_with_parameter_wise_lr
from bert4keras.optimizers import extend_with_weight_decay, fused

on_torch = pytest.mark.skipif(keras.backend.backend() != "torch",
                              reason="runs in tests/test_backends.py's torch process")

LR, B1, B2 = 1e-2, 0.9, 0.999


def count_fused(monkeypatch):
    import torch
    calls = []
    for name in ("_fused_adam_", "_fused_adamw_"):
        op = getattr(torch, name)
        monkeypatch.setattr(torch, name,
                            lambda *a, _op=op, _name=name, **k: calls.append(_name) or _op(*a, **k))
    return calls


def reference(grads, w0, eps, weight_decay=0.0, bias_correction=True, amsgrad=False):
    """Float64 Adam as Keras writes it, with decoupled decay at the same lr."""
    w = w0.astype("float64")
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    v_max = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        w = w - w * weight_decay * LR
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        v_max = np.maximum(v_max, v)
        alpha = LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t) if bias_correction else LR
        w = w - alpha * m / (np.sqrt(v_max if amsgrad else v) + eps)
    return w


def apply_steps(optimizer, steps=4, seed=0):
    """Apply ``steps`` random gradients to a kernel (decayed) and a bias
    (excluded by name); return the final values and the gradients."""
    rng = np.random.default_rng(seed)
    values = {"kernel": rng.normal(size=(8, 6)), "bias": rng.normal(size=(6,))}
    variables = [keras.Variable(values[n].astype("float32"), name=n) for n in values]
    grads = {n: [rng.normal(size=values[n].shape) * 10.0 ** rng.integers(-4, 1)
                 for _ in range(steps)] for n in values}
    for t in range(steps):
        optimizer.apply([keras.ops.convert_to_tensor(grads[n][t].astype("float32"))
                         for n in values], variables)
    return values, grads, {v.name: keras.ops.convert_to_numpy(v) for v in variables}


CASES = {
    "AdamW": (lambda: AdamW(LR, weight_decay=0.05, epsilon=1e-6), 0.05, True, False),
    "AdamW amsgrad": (lambda: AdamW(LR, weight_decay=0.05, epsilon=1e-6, amsgrad=True),
                      0.05, True, True),
    "Adam": (lambda: Adam(LR), 0.0, True, False),
    "Adam no bias correction, decay": (
        lambda: Adam(LR, weight_decay=0.05, bias_correction=False), 0.05, False, False),
    # bert4keras 0.11.5's recipe: decay applied inside the extension's update_step
    "extend_with_weight_decay(Adam)": (
        lambda: extend_with_weight_decay(Adam, "AdamWFused")(
            LR, weight_decay_rate=0.05, exclude_from_weight_decay=["bias"],
            bias_correction=False), 0.05, False, False),
}


@on_torch
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_update_equals_the_formula(case, monkeypatch):
    make, decay, bias_correction, amsgrad = CASES[case]
    calls = count_fused(monkeypatch)
    optimizer = make()
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    values, grads, out = apply_steps(optimizer)
    assert len(calls) >= 4, calls  # the fused kernel did the updates
    assert ("_fused_adamw_" in calls) == bool(decay)
    eps = optimizer.epsilon
    for name in values:
        expected = reference(grads[name], values[name], eps,
                             weight_decay=decay if name == "kernel" else 0.0,
                             bias_correction=bias_correction, amsgrad=amsgrad)
        np.testing.assert_allclose(out[name], expected, rtol=2e-6, atol=2e-6, err_msg=name)


def fit(optimizer, **fit_kwargs):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(32, activation="gelu")(inputs)
    hidden = keras.layers.LayerNormalization()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype("float32")
    y = rng.integers(0, 3, 64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, **fit_kwargs)
    return model.get_weights()


@on_torch
@pytest.mark.parametrize("extra", [{}, {"gradient_accumulation_steps": 2, "use_ema": True},
                                   {"global_clipnorm": 0.1}])
def test_fit_equals_keras_adamw(extra, monkeypatch):
    def make(cls):
        optimizer = cls(LR, weight_decay=0.01, **extra)
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        return optimizer
    calls = count_fused(monkeypatch)
    ours = fit(make(AdamW))
    assert calls
    theirs = fit(make(keras.optimizers.AdamW))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)


@on_torch
def test_other_updates_fall_back_to_keras(monkeypatch):
    calls = count_fused(monkeypatch)
    # parameter-wise learning rates: an update_step of its own, Keras' path
    Wise = extend_with_parameter_wise_lr(AdamW, "WiseAdamWFused")
    assert fused.fused_plan(Wise(LR)) is None
    fit(Wise(LR, weight_decay=0.01, paramwise_lr_schedule={"dense": 0.5}))
    assert not calls
    monkeypatch.setattr(fused, "ENABLED", False)
    fit(AdamW(LR, weight_decay=0.01))
    assert not calls
    # a gradient in another dtype than its weight
    optimizer = AdamW(LR, weight_decay=0.01)
    variable = keras.Variable(np.ones((4,), "float32"))
    assert not optimizer._fused_applies([keras.ops.ones((4,), "float16")], [variable])
    assert optimizer._fused_applies([keras.ops.ones((4,), "float32")], [variable])
    # bfloat16 weights: torch's kernel would compute in float32 and round once, Keras
    # rounds after every operation -- Keras' update keeps its own results
    low = keras.Variable(np.ones((4,), "float32"), dtype="bfloat16")
    assert not optimizer._fused_applies([keras.ops.ones((4,), "bfloat16")], [low])


@on_torch
@pytest.mark.parametrize("release", [True, False])
def test_gradients_released_after_a_fused_update(release, monkeypatch):
    """``.grad`` set to None after the update (torch.optim's set_to_none): one
    step's gradients no longer live through the next forward pass."""
    monkeypatch.setattr(fused, "RELEASE_GRADIENTS", release)
    variable = keras.Variable(np.ones((4, 3), "float32"))
    (variable.value * 2.0).sum().backward()
    optimizer = AdamW(LR, weight_decay=0.01)
    optimizer.apply([variable.value.grad], [variable])
    assert (variable.value.grad is None) == release
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable),
                               reference([np.full((4, 3), 2.0)], np.ones((4, 3)), 1e-7,
                                         weight_decay=0.01), rtol=2e-6)


def test_tensorflow_and_jax_run_keras_adamw_unchanged(monkeypatch):
    if keras.backend.backend() == "torch":
        pytest.skip("the torch path is the tests above")
    ours = fit(AdamW(LR, weight_decay=0.01))
    theirs = fit(keras.optimizers.AdamW(LR, weight_decay=0.01))
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_adamw_saves_with_its_class():
    optimizer = AdamW(3e-4, weight_decay=0.02, epsilon=1e-6)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again) is AdamW
    assert again.weight_decay == pytest.approx(0.02) and again.epsilon == pytest.approx(1e-6)
    assert isinstance(again, keras.optimizers.AdamW)


def test_tensorflow_users_never_load_torch():
    """The fused path imports torch only on the torch backend: a TensorFlow
    process that imports the optimizers and builds/uses AdamW has no torch
    (it would cost the import's memory and seconds)."""
    import os
    import subprocess
    import sys

    code = ("import sys, keras, numpy as np\n"
            "from bert4keras.optimizers import AdamW, Adam\n"
            "v = keras.Variable(np.ones(3, 'float32'))\n"
            "AdamW(1e-3).apply([keras.ops.ones(3)], [v])\n"
            "Adam(1e-3, weight_decay=0.1).apply([keras.ops.ones(3)], [v])\n"
            "print('torch' in sys.modules)\n")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
