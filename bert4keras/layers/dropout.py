"""``Dropout``: Keras' inverted dropout with masks drawn as raw random bits on
TensorFlow and JAX (see :class:`Dropout` for why and how)."""

import math

import keras
from keras import ops

from bert4keras.layers.core import register
from bert4keras.layers.tf_direct import in_xla_trace as _in_xla_trace


@register
class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` (same arguments, config and ``SeedGenerator``:
    one ``seed_generator.next()`` per training call), with the masks drawn as
    raw random bits on TensorFlow and JAX.

    Inverted dropout (Srivastava et al. 2014, as Keras): during training each
    element of ``inputs`` (any shape; ``noise_shape`` broadcasts as in Keras)
    is kept with probability ``1 - rate`` and scaled by ``1 / (1 - rate)``,
    else zeroed; identity otherwise. An element is kept when its uint32 is
    below ``round((1 - rate) * 2**32)`` (a keep rate exact to 2**-32).

    Why not Keras' code: on a CPU the random numbers cost more than the
    matmuls around them once compiled. A BERT-base training step at batch
    16 x 128 draws ~77M of them. On TensorFlow Keras calls
    ``tf.nn.experimental.stateless_dropout`` (Philox floats), which XLA lowers
    to a slow elementwise loop; here the same seed draws uint32s
    (``tf.random.stateless_uniform`` with ``minval=maxval=None``): Threefry
    when traced for XLA, Philox (the only one TensorFlow's kernels have)
    otherwise (the step times this saved are in benchmarks/HISTORY.md). On JAX
    Keras calls
    ``jax.random.bernoulli``, whose Threefry becomes a loop of elementwise
    XLA ops; here XLA's native Threefry-2x32 (``lax.rng_bit_generator``)
    draws two keys per call from the seed and each element's bits are a
    keyed hash of its index (:func:`_jax_keep_mask`). The masks therefore
    differ from Keras' (not their distribution). On torch (CPU tensors) each
    element's keep test is one int16 of a tensor of random int64s drawn by a
    ``torch.Generator`` seeded as Keras seeds it (:func:`_torch_dropout`;
    Keras draws ``torch.bernoulli`` of a full probability tensor, one
    Mersenne Twister number per element and three more passes); there the
    keep rate is exact to 2**-16. Other devices, and rates outside ``(0,
    1)``, go to Keras.
    """

    def call(self, inputs, training=False):
        backend = keras.backend.backend()
        drops = bool(training) and 0.0 < self.rate < 1.0
        if drops and backend == "torch":
            outputs = _torch_dropout(inputs, self.rate, self.noise_shape, self.seed_generator)
            if outputs is not None:
                return outputs
        if not (drops and backend in ("jax", "tensorflow")):
            return super().call(inputs, training=training)
        keep = 1.0 - self.rate
        threshold = min(round(keep * 2.0 ** 32), 2 ** 32 - 1)
        draw = _tf_keep_mask if backend == "tensorflow" else _jax_keep_mask
        mask = draw(inputs, self.noise_shape, self.seed_generator.next(), threshold)
        return ops.where(mask, inputs * ops.cast(1.0 / keep, inputs.dtype),
                         ops.zeros_like(inputs))


def _tf_keep_mask(inputs, noise_shape, seed, threshold):
    """Boolean keep mask, shape ``noise_shape`` (None = the input's size
    there) or the input's: uint32s (Threefry under XLA, else Philox) from
    ``seed`` (Keras' seed cast to int32 as Keras' TensorFlow backend does)
    compared with ``threshold``."""
    import tensorflow as tf

    if seed.dtype != tf.int32:
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    shape = tf.shape(inputs)
    if noise_shape is not None:
        shape = tf.stack([shape[i] if n is None else n for i, n in enumerate(noise_shape)])
    # XLA's Threefry: ~3x Philox's speed once compiled; the TensorFlow
    # kernels (graph mode) only have Philox
    alg = "threefry" if _in_xla_trace() else "philox"
    bits = tf.random.stateless_uniform(shape, seed=seed, minval=None, maxval=None,
                                       dtype=tf.uint32, alg=alg)
    return bits < tf.constant(threshold, tf.uint32)


def _jax_keep_mask(inputs, noise_shape, seed, threshold):
    """Boolean keep mask as :func:`_tf_keep_mask`: each element's uint32 is a
    keyed hash of its flat index, two rounds of MurmurHash3's 32-bit finalizer
    (``fmix32``, a bijection with full avalanche) with a fresh 32-bit key
    before each round; the two keys are drawn by XLA's native Threefry-2x32
    (``lax.rng_bit_generator``) keyed by Keras' seed, so consecutive seeds
    give unrelated keys.

    Why not Threefry for every element: in a compiled BERT-base training
    step on this project's AMD EPYC (Zen 4) machine the per-element
    ``rng_bit_generator`` added 1.3 s to a 6.9 s step; the hash fuses into the
    consumer and added ~0.1 s (benchmarks/HISTORY.md). Masks of more than 2**32
    elements (where the index would wrap) fall back to per-element Threefry.
    """
    import jax.numpy as jnp
    from jax import lax

    shape = tuple(inputs.shape)
    if noise_shape is not None:
        shape = tuple(s if n is None else n for s, n in zip(shape, noise_shape))
    seed = jnp.asarray(seed, "uint32").reshape((2,))
    key = jnp.concatenate([seed, jnp.zeros((2,), "uint32")])  # (threefry key, counter 0)
    size = math.prod(shape)
    if size >= 2 ** 32:
        _, bits = lax.rng_bit_generator(key, shape, dtype=jnp.uint32,
                                        algorithm=lax.RandomAlgorithm.RNG_THREE_FRY)
        return bits < jnp.uint32(threshold)
    _, keys = lax.rng_bit_generator(key, (2,), dtype=jnp.uint32,
                                    algorithm=lax.RandomAlgorithm.RNG_THREE_FRY)
    bits = lax.iota(jnp.uint32, size).reshape(shape)
    bits = _fmix32(_fmix32(bits ^ keys[0]) ^ keys[1])
    return bits < jnp.uint32(threshold)


def _fmix32(h):
    """MurmurHash3's 32-bit finalizer (Appleby): xor-shifts and two odd
    multipliers, a bijection of uint32 in which every input bit flips each
    output bit with probability ~1/2. ``h``: a JAX uint32 array."""
    import jax.numpy as jnp

    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _torch_dropout(inputs, rate, noise_shape, seed_generator):
    """Inverted dropout of a CPU torch tensor, or None for another device.

    The keep mask, of ``noise_shape`` (None = the input's size there) or the
    input's shape: 64-bit random words from a ``torch.Generator`` seeded with
    Keras' next seed (``seed_generator.next()``, combined as Keras' torch
    backend does), read as four int16 each; an element is kept when its int16
    is below ``round((1 - rate) * 2**16) - 2**15``: one draw per four elements
    and no probability tensor (the training step this saved is in
    benchmarks/HISTORY.md, Zen 5 section). The output is ``inputs * mask / (1 - rate)``
    (:func:`_masked_scale`, the mask read as uint8, in place of a slower
    ``torch.where`` with a scalar), and so is the gradient.
    """
    import torch

    if not isinstance(inputs, torch.Tensor) or inputs.device.type != "cpu":
        return None
    keep = 1.0 - rate
    shape = tuple(inputs.shape)
    if noise_shape is not None:
        shape = tuple(s if n is None else int(n) for s, n in zip(shape, noise_shape))
    seed = seed_generator.next()
    generator = torch.Generator()
    generator.manual_seed(int(seed[0] + seed[1]) & 0xFFFFFFFF)
    size = math.prod(shape)
    words = torch.empty((size + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None,
                                                                  generator=generator)
    draws = words.view(torch.int16)[:size].view(shape)
    threshold = min(round(keep * 2 ** 16), 2 ** 16 - 1) - 2 ** 15
    return _masked_scale(inputs, draws < threshold, 1.0 / keep)


_MASKED_SCALE = []  # [the autograd.Function], made on first use (torch imported then)


def _masked_scale(inputs, mask, scale):
    """``inputs * mask * scale`` (mask bool, broadcastable), differentiable in
    ``inputs``: a product with the mask's uint8 view and an in-place scaling,
    forward and backward, the mask kept as that view (1 byte per element, as
    ``where`` keeps it). (``torch.addcmul`` does it in one pass, but raised the
    peak RSS of a BERT-base training step in a probe; the figures are in the
    issue note.) A NaN or inf input stays NaN where it is dropped (as
    TensorFlow's dropout, a product, does), where ``torch.where`` would
    write 0."""
    import torch

    if not _MASKED_SCALE:
        class MaskedScale(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, mask_u8, scale):
                ctx.save_for_backward(mask_u8)
                ctx.scale = scale
                return torch.mul(x, mask_u8).mul_(scale)

            @staticmethod
            def backward(ctx, dy):
                (mask_u8,) = ctx.saved_tensors
                return torch.mul(dy, mask_u8).mul_(ctx.scale), None, None

        _MASKED_SCALE.append(MaskedScale)
    return _MASKED_SCALE[0].apply(inputs, mask.view(torch.uint8), scale)

