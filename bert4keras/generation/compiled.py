"""The decoding functions of :class:`~bert4keras.generation.CachedDecoder`, per backend.

How a step function runs on each Keras backend: compiled by XLA on
TensorFlow (``tf.function(jit_compile=True)``) and JAX (``jax.jit`` with the
weights as arguments and the decoding state donated), eager under
``torch.inference_mode`` on PyTorch; and the one gather whose fast form
differs by backend.
"""

import keras
from keras import ops

__all__ = ["compile_step", "take_rows"]


def take_rows(x, rows):
    """``x[rows]`` along axis 0 (indices known in range: JAX's default
    out-of-range handling makes this gather several times slower)."""
    if keras.backend.backend() == "jax":
        import jax.numpy as jnp

        return jnp.take(x, rows, axis=0, mode="clip")
    return ops.take(x, rows, axis=0)


def compile_step(fn, variables, jit, donate=False, packed=None):
    """One compiled function: XLA on TensorFlow, ``jax.jit`` (weights passed
    as arguments, the state buffers donated) on JAX, eager under
    ``torch.inference_mode`` on torch (the caches are written in place there, see
    ``MultiHeadAttention.call_with_cache``; with ``packed``, a dict, also under
    :func:`~bert4keras.layers.direct.packed_weights`), eager elsewhere."""
    backend = keras.backend.backend()
    if backend == "jax" and jit:
        import jax

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        jitted = jax.jit(pure, donate_argnums=(1,) if donate else ())
        return lambda *args: jitted([v.value for v in variables], *args)
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn, jit_compile=bool(jit), autograph=False)
        # each compiled function serves one input shape; many are made on purpose
        compiled._omit_frequent_tracing_warning = True
        return compiled
    if backend == "torch":  # eager: no autograd graph, no version counters
        import torch

        from bert4keras.layers.direct import packed_weights

        def inference(*args):
            with torch.inference_mode(), packed_weights(packed):
                return fn(*args)

        return inference
    return fn
