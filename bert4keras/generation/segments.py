"""Decoding in segments: caches that grow with the output.

A compiled decoding step (TensorFlow's XLA, ``jax.jit``) has static shapes,
so it reads every slot of its self-attention caches, written or not: with one
cache of the final length, the early steps of a long output read mostly
empty slots. :class:`~bert4keras.generation.CachedDecoder` can instead decode
the output in a few segments (``cache_segments``), each a compiled loop over
caches that end where the segment does; between two segments the caches grow
(:func:`grow`, one tensor at a time, so that only one cache has an old and a
new copy at once). For 256 new tokens after 32 prompt tokens, four segments
read on average two thirds of the slots one full-length cache would; each
segment is one more compiled function.

What grows: the caches a layer kept with ``DecodingStep.keep(..., slots=True)``
(self-attention keys and values, ``(rows, k * cache_len, size)`` with the
``k`` beams of a group side by side), the state's ``visible`` and beam
``ancestors`` ``(rows, cache_len)``. A projected context (cross-attention) or
a context bias never grows. Unwritten slots are zeros and not visible, as in
a cache preallocated to the full length, so the tokens are the same either
way (tests/test_generation.py).
"""

import contextlib

import keras
import numpy as np
from keras import ops

from bert4keras.loading import numpy_dtype

__all__ = ["cache_lengths", "grow", "run_segments", "weight_bytes", "with_cache_len"]


def _itemsize(dtype):
    return numpy_dtype(keras.backend.standardize_dtype(dtype)).itemsize


def weight_bytes(variables):
    """Bytes of ``variables`` (a step reads each weight once)."""
    return sum(int(np.prod(v.shape)) * _itemsize(v.dtype) for v in variables)


def with_cache_len(static, cache_len):
    """A decoding shape ``(inputs, opt, prompt_len, cache_len, prompt_end)``
    (``CachedDecoder._setup``) with caches of ``cache_len`` slots."""
    return static[:3] + (cache_len,) + static[4:]


def cache_lengths(transformer, static, segments, weights, whole_caches=None):
    """The cache lengths of the segments of a decoding shape, ascending, the
    last the full ``cache_len``.

    Args:
        transformer: the decoded :class:`~bert4keras.models.Transformer`
            (its depth, heads and head sizes give the cache bytes).
        static: the decoding shape (see :func:`with_cache_len`).
        segments: ``cache_segments`` (a positive int), or None for the
            default: one segment per 64 new tokens, at most 4, where the
            full-length self-attention caches of all rows would hold at least
            a quarter of ``weights`` (a step reads both once: below that,
            segments save little and cost compiles, as for one greedy row of
            a 124M-parameter decoder); 1 where the steps read only the slots
            written so far (``whole_caches`` false).
        weights: the model's weight bytes (:func:`weight_bytes`).
        whole_caches: whether a step reads every slot of its caches (compiled
            steps: XLA, ``jax.jit``, ``torch.compile``); None: on every
            backend but PyTorch, whose eager steps read the written slots.

    Returns:
        A list of ints; ``[cache_len]`` for one segment.
    """
    inputs, opt, prompt_len, cache_len, _ = static
    if segments is None:
        t = transformer
        slot_bytes = (getattr(t, "num_decoder_layers", t.num_hidden_layers)
                      * t.num_attention_heads * (t.attention_key_size + t.attention_head_size)
                      * _itemsize(t.model.compute_dtype))
        small = 4 * slot_bytes * cache_len * inputs * opt.rows < weights
        if whole_caches is None:
            whole_caches = keras.backend.backend() != "torch"
        segments = 1 if small or not whole_caches else min(4, max(1, opt.max_new // 64))
    if segments == 1:
        return [cache_len]
    # equal shares of the new slots (the step t writes slot prompt_len + t - 1)
    ends = {prompt_len + -(-i * opt.max_new // segments) for i in range(1, segments)}
    return sorted(ends | {cache_len})


def grow(state, length, opt, slot_caches):
    """Grow a decoding state's slot caches, ``visible`` and ``ancestors`` to
    ``length`` slots, in place.

    Args:
        state: the decoding state (a dict; its ``caches`` a list).
        length: the new number of slots per beam.
        opt: the search ``Options`` (beam search lays ``num_beams`` caches
            side by side).
        slot_caches: ``DecodingStep.slot_caches`` of the model's first pass:
            which of ``state['caches']`` grow.

    On PyTorch the new tensors are made under ``torch.inference_mode``, as
    the steps' own outputs are: ``torch.compile`` guards on that property,
    and a grown state of ordinary tensors matched another compiled version
    of the step than the segment's later steps, so :meth:`CachedDecoder.warm_up
    <bert4keras.generation.CachedDecoder.warm_up>` (one step per segment)
    left one compilation per grown segment to the first ``generate``.
    """
    with _inference_mode():
        _grow(state, length, opt, slot_caches)


def _inference_mode():
    """``torch.inference_mode()`` on the PyTorch backend, else nothing."""
    if keras.backend.backend() != "torch":
        return contextlib.nullcontext()
    import torch

    return torch.inference_mode()


def _grow(state, length, opt, slot_caches):
    old = state["visible"].shape[1]
    extra, beams = length - old, opt.num_beams if opt.method == "beam" else 1
    for key in ("visible", "ancestors"):
        if key in state:
            x = state[key]
            state[key] = ops.concatenate([x, ops.zeros((x.shape[0], extra), x.dtype)], 1)
    caches = state["caches"]
    for i, slots in enumerate(slot_caches):
        if slots:
            grown = list(caches[i])
            for j, x in enumerate(grown):  # (rows, beams * old, size)
                rows, size = x.shape[0], x.shape[2]
                x = ops.reshape(x, (rows, beams, old, size))
                x = ops.concatenate([x, ops.zeros((rows, beams, extra, size), x.dtype)], 2)
                grown[j] = ops.reshape(x, (rows, beams * length, size))
            caches[i] = tuple(grown)


def run_segments(state, t, stop, static, lengths, slot_caches, compiled_run):
    """Decode the steps ``t .. stop - 1`` through the segments they reach.

    ``compiled_run(length)``: the compiled decoding loop over caches of
    ``length`` slots (called as ``run(state, stop)``). The caches grow before
    a step whose slot is past them. Returns ``(state, t)``: ``t`` is ``stop``
    unless every row stopped earlier (then the state is returned at the end
    of the segment in which they did).
    """
    opt, prompt_len = static[1], static[2]
    while t < stop:
        length = state["visible"].shape[1]
        if prompt_len + t - 1 >= length:  # the slot of step t is past the cache
            length = min(n for n in lengths if n > prompt_len + t - 1)
            grow(state, length, opt, slot_caches)
        end = min(stop, length - prompt_len + 1)
        state, t = compiled_run(length)(state, ops.convert_to_tensor(end, "int32")), end
        if t < stop and bool(ops.convert_to_numpy(state["done"])):
            break
    return state, t
