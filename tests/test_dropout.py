"""bert4keras.layers.Dropout: Keras' inverted dropout on every backend (on JAX
with masks from ``lax.rng_bit_generator``), checked against its definition
(binomial keep rate, 1 / (1 - rate) scaling, broadcast noise shape)."""

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras.layers import Dropout
from conftest import rerun_under_jax


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_rate_and_scaling(rate):
    x = np.random.RandomState(0).uniform(1.0, 2.0, (64, 32, 48)).astype("float32")
    layer = Dropout(rate, seed=1)
    y = ops.convert_to_numpy(layer(x, training=True))
    kept = y != 0
    n = kept.size
    # kept count ~ Binomial(n, 1 - rate): within 6 standard deviations
    assert abs(kept.sum() - n * (1 - rate)) < 6 * np.sqrt(n * rate * (1 - rate))
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    # a fresh mask per call, and inference is the identity
    again = ops.convert_to_numpy(layer(x, training=True)) != 0
    assert (again != kept).mean() > 0.5 * 2 * rate * (1 - rate)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x, training=False)), x)


def test_noise_shape_and_seed():
    x = np.ones((8, 16, 32), "float32")
    y = ops.convert_to_numpy(Dropout(0.5, noise_shape=(None, 1, None), seed=7)(x, training=True))
    assert (y == y[:, :1]).all()  # one mask for every position
    z = ops.convert_to_numpy(Dropout(0.5, noise_shape=(None, 1, None), seed=7)(x, training=True))
    np.testing.assert_array_equal(y, z)  # same seed, same first mask
    assert isinstance(Dropout(0.5), keras.layers.Dropout)
    assert Dropout.from_config(Dropout(0.3, seed=2).get_config()).rate == 0.3


def test_gradient_is_the_mask():
    if keras.backend.backend() != "jax":  # the JAX branch: this whole file again on JAX
        rerun_under_jax(__file__)
        return
    import jax
    import jax.numpy as jnp

    layer = Dropout(0.25, seed=4)
    x = jnp.ones((4, 8, 16), "float32")
    state = [v.value for v in layer.non_trainable_variables]

    def f(x):
        y, _ = layer.stateless_call([], state, x, training=True)
        return jnp.sum(y), y

    grad, y = jax.jit(jax.grad(f, has_aux=True))(x)
    np.testing.assert_allclose(np.asarray(grad), np.where(np.asarray(y) != 0, 1 / 0.75, 0.0),
                               rtol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_tensorflow_compiled_gradient_is_the_mask(jit_compile):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow branch (this file also runs on JAX)")
    import tensorflow as tf

    from bert4keras.layers import core

    layer = Dropout(0.25, noise_shape=(None, 1, None), seed=5)
    x = tf.Variable(tf.ones((4, 8, 16)))
    traced_for_xla = []

    @tf.function(jit_compile=jit_compile,
                 input_signature=[tf.TensorSpec((None, 8, 16), tf.float32)])
    def step(scale):
        traced_for_xla.append(core._in_xla_trace())  # picks Threefry, else Philox
        with tf.GradientTape() as tape:
            y = layer(x * scale, training=True)
            loss = tf.reduce_sum(y)
        return tape.gradient(loss, x), y

    grad, y = step(tf.ones((4, 8, 16)))
    grad, y = grad.numpy(), y.numpy()
    assert traced_for_xla == [jit_compile]
    assert (y == y[:, :1]).all() and 0 < (y == 0).mean() < 1
    np.testing.assert_allclose(grad, np.where(y != 0, 1 / 0.75, 0.0), rtol=1e-6)
    # the seed generator advances inside the compiled function: a new mask
    _, again = step(tf.ones((4, 8, 16)))
    assert (again.numpy() != y).any()
