"""bert4keras.layers.Dropout: Keras' inverted dropout on every backend (on JAX
with masks hashed from keys that ``lax.rng_bit_generator`` draws), checked
against its definition (binomial keep rate, 1 / (1 - rate) scaling, broadcast
noise shape) and for independence: neighbouring elements, consecutive calls
and two layers' masks agree as often as independent coin flips do."""

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras.layers import Dropout


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
    if keras.backend.backend() != "jax":  # this whole file runs on JAX in test_backends.py
        pytest.skip("JAX's gradient: in tests/test_backends.py's JAX process")
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

    from bert4keras.layers import dropout

    layer = Dropout(0.25, noise_shape=(None, 1, None), seed=5)
    x = tf.Variable(tf.ones((4, 8, 16)))
    traced_for_xla = []

    @tf.function(jit_compile=jit_compile,
                 input_signature=[tf.TensorSpec((None, 8, 16), tf.float32)])
    def step(scale):
        traced_for_xla.append(dropout._in_xla_trace())  # picks Threefry, else Philox
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


def _pair_rate_ok(a, b, p=0.5):
    """``P(a and b)`` of two boolean arrays is that of independent
    Bernoulli(p) draws, ``p**2``, within 6 standard deviations."""
    n = a.size
    both = np.logical_and(a, b).mean()
    return abs(both - p * p) < 6 * np.sqrt(p * p * (1 - p * p) / n), both


def test_masks_are_independent_of_position_call_and_layer():
    x = np.ones((256, 128, 64), "float32")  # 2M elements, every axis longer than 1
    layer, other = Dropout(0.5, seed=11), Dropout(0.5, seed=12)
    first = ops.convert_to_numpy(layer(x, training=True)) != 0
    second = ops.convert_to_numpy(layer(x, training=True)) != 0  # the next seed
    theirs = ops.convert_to_numpy(other(x, training=True)) != 0
    pairs = {"last-axis neighbours": (first[..., 1:], first[..., :-1]),
             "middle-axis neighbours": (first[:, 1:], first[:, :-1]),
             "first-axis neighbours": (first[1:], first[:-1]),
             "elements 2**16 apart": (first.reshape(-1)[2 ** 16:], first.reshape(-1)[:-2 ** 16]),
             "consecutive calls": (first, second),
             "two layers": (first, theirs)}
    for name, (a, b) in pairs.items():
        ok, both = _pair_rate_ok(a, b)
        assert ok, (name, both)
    for mask in (first, second, theirs):  # each keeps half, and half of every row
        assert abs(mask.mean() - 0.5) < 6 * np.sqrt(0.25 / mask.size)
        rows = mask.mean(axis=(1, 2))
        assert np.abs(rows - 0.5).max() < 6 * np.sqrt(0.25 / (128 * 64))


def test_jax_hash_is_murmur3_fmix32():
    """The JAX masks' mixer against MurmurHash3's 32-bit finalizer written
    here in plain Python (and its known value fmix32(1) = 0x514e28b7); JAX
    arrays on every Keras backend (JAX is a test requirement)."""
    import jax.numpy as jnp

    from bert4keras.layers.dropout import _fmix32

    def fmix32(h):
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    xs = np.array([0, 1, 2, 0xDEADBEEF, 0xFFFFFFFF] + list(range(1000, 1100)), np.uint32)
    got = np.asarray(_fmix32(jnp.asarray(xs)))
    assert [int(g) for g in got] == [fmix32(int(x)) for x in xs]
    assert fmix32(1) == 0x514E28B7
