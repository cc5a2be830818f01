"""bert4keras.backend.training_activation (the GELUs of a training pass keep only
their input for the gradient): the same values, and the gradient of the
framework's own autodiff through the plain activation, on TensorFlow and JAX
(torch: returned unchanged); FeedForward's training pass gives the same output
and weight gradients as its inference pass."""

import keras
import numpy as np
import pytest

from bert4keras import backend as B
from bert4keras.layers import FeedForward


def value_and_grad(fn, x):
    """``(fn(x), d sum(fn(x) * w) / dx)`` by the backend's autodiff (``w`` fixed)."""
    w = np.random.RandomState(1).normal(size=x.shape).astype(x.dtype)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * w)
        return y.numpy(), tape.gradient(loss, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(fn(x)), np.asarray(jax.grad(lambda x: (fn(x) * w).sum())(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    y = fn(x)
    (y * torch.tensor(w)).sum().backward()
    return y.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("name", ["gelu", "gelu_new"])
def test_same_values_and_gradient(name):
    act = B.get_activation(name)
    x = np.random.RandomState(0).normal(0.0, 3.0, (64, 48)).astype("float32")
    y_ref, g_ref = value_and_grad(act, x)
    y, g = value_and_grad(B.training_activation(act), x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5)  # float32 rounding
    if keras.backend.backend() == "torch":
        assert B.training_activation(act) is act
    assert B.training_activation(keras.activations.relu) is keras.activations.relu


def test_feed_forward_training_pass():
    x = np.random.RandomState(2).normal(size=(2, 5, 8)).astype("float32")
    for activation in ("gelu", ["gelu_new", "linear"]):
        layer = FeedForward(16, activation=activation)
        layer.build(x.shape)
        y, g = value_and_grad(lambda x: layer(x, training=False), x)
        y_train, g_train = value_and_grad(lambda x: layer(x, training=True), x)
        np.testing.assert_array_equal(y_train, y)
        np.testing.assert_allclose(g_train, g, rtol=1e-5, atol=1e-6)

