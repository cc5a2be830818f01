"""The decoding functions of :class:`~bert4keras.generation.CachedDecoder`, per backend.

How a step function runs on each Keras backend: compiled by XLA on
TensorFlow (``tf.function(jit_compile=True)``) and JAX (``jax.jit`` with the
weights as arguments and the decoding state donated), eager under
``torch.inference_mode`` on PyTorch, or there, with ``jit_compile=True``, a
Python loop of steps compiled by ``torch.compile`` (:func:`compile_torch_loop`);
and the one gather whose fast form differs by backend.
"""

import keras
from keras import ops

__all__ = ["compile_step", "compile_torch_loop", "jit_mode", "take_rows", "TORCH_RECOMPILE_LIMIT"]

# Compiled versions torch.compile may keep of one decoding step: every
# decoding shape (batch, prompt bucket, cache length, method) is one, and they
# all share the step's code object, whose default limit (8) would send the
# ninth shape back to eager execution. In effect only while a step runs.
TORCH_RECOMPILE_LIMIT = 64


def jit_mode(jit_compile):
    """``CachedDecoder``'s ``jit_compile`` checked -- ``'auto'`` or a bool (1
    and NumPy bools included; ValueError for anything else) -- and whether it
    means steps compiled by ``torch.compile``: ``(value, torch_compile)``."""
    if jit_compile != "auto":
        if jit_compile not in (True, False):
            raise ValueError("jit_compile must be 'auto', True or False, got %r"
                             % (jit_compile,))
        jit_compile = bool(jit_compile)
    return jit_compile, jit_compile is True and keras.backend.backend() == "torch"


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


def _contiguous(x):
    return x.contiguous() if hasattr(x, "contiguous") else x


def compile_torch_loop(step):
    """The cached decoding loop of PyTorch with ``jit_compile=True``:
    ``run(state, stop)`` calls ``step`` (one token, the state dict in and
    out) until ``state['t']`` reaches ``stop`` (an int or scalar tensor) or
    ``state['done']``, as ``keras.ops.while_loop`` does eagerly, but each step
    is compiled by ``torch.compile`` (TorchInductor; ``dynamic=False``: one
    compiled version per decoding shape, made by the first call). Called as
    :func:`compile_step`'s PyTorch functions are, under
    ``torch.inference_mode`` and the decoder's
    :func:`~bert4keras.layers.direct.packed_weights`.

    What changes inside the compiled step (:mod:`bert4keras.layers.direct`):
    attention reads the whole preallocated cache (a static shape) instead of
    the slots written so far, oneDNN's linear is called through the opaque
    ``bert4keras::onednn_linear`` op, and the blocked kernel copies are the
    ones the run's eager prompt pass made or refreshed. The state's tensors
    are made contiguous before each call so that the first step (whose inputs
    come from the eager prompt pass, some of them broadcast views) and the
    next ones match the same compiled version. The compiled steps find the
    blocked copies through one process-wide slot (Dynamo cannot read the
    context variable the eager path uses): two decoders with
    ``packed_weights`` decoding at once in two threads are not supported.
    """
    import torch

    from bert4keras.layers.direct import traced_onednn_op

    traced_onednn_op()  # registered before tracing: a registration inside one breaks the graph
    compiled = torch.compile(step, dynamic=False)

    def run(state, stop):
        stop = int(stop)
        with torch._dynamo.config.patch(recompile_limit=TORCH_RECOMPILE_LIMIT):
            while not bool(state["done"]) and int(state["t"]) < stop:
                state = compiled(keras.tree.map_structure(_contiguous, state))
        return state

    return run
