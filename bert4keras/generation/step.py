"""One pass of a model's own layers over new positions, with caches.

:class:`DecodingStep` is what a cached decoder hands to the model: the
``call_hook`` of :meth:`bert4keras.models.Transformer.hooked` while the
model's graph code runs on real tensors, and the context the layers read.
It knows nothing of any model: a layer that behaves differently in a cached
step has a ``call_cached(inputs, step, **arguments)`` method, every other
layer is called as usual. The layers of :mod:`bert4keras.layers` that have one:

* attention keeps its keys/values in the step's caches
  (:meth:`~bert4keras.layers.MultiHeadAttention.call_cached`);
* position layers encode the step's positions or slots;
* masks return :meth:`DecodingStep.attention_bias` (a context mask keeps its
  bias with the caches).

The one rule written here rather than in a layer: a layer whose activation
is softmax (an LM head) runs without it, so decoding reads logits (the
search takes their log-softmax itself).
"""

import keras
from keras import ops

from bert4keras import backend as Bk
from bert4keras.layers.direct import _layer_call as _plain_call
from bert4keras.layers.direct import direct_call

__all__ = ["DecodingStep"]


class DecodingStep:
    """The context of one pass over ``q_len`` new positions: slots ``index
    .. index + q_len - 1`` of caches of ``cache_len`` slots.

    Args:
        index: scalar int (tensor or Python), slot of the first new position.
        positions: int32 ``(rows, q_len)``, absolute positions of the new
            positions (the slot minus the row's left padding).
        visible: bool ``(rows, cache_len)``, the keys that may be attended
            to: written slots that are not left padding, the new ones
            included.
        cache_len: static int, slots of every self-attention cache.
        prompt_end: slots below it are the prompt, which attends both ways
            where a mask asks for it (UniLM).
        caches: the caches the last pass left (:attr:`new_caches`, in call
            order), or None on a first pass (layers then start their caches).
        beams: ``(ancestors, k)`` in beam search after the first pass: slot
            ``s`` of row ``r`` was written by the group's beam
            ``ancestors[r, s]`` (see ``MultiHeadAttention.call_with_cache``).
        copies: rows each input becomes after this (first) pass: the caches
            kept are expanded to that many rows.
        beam_copies: those copies are the beams of one beam search (their
            self-attention caches sit side by side).
        pick: scalar position whose output :meth:`select` keeps (None: the
            last).
        direct: run the layers' ``call`` directly where Keras'
            ``Layer.__call__`` would change nothing
            (:func:`~bert4keras.layers.direct.direct_call`); only valid
            when no layer of the pass reads a Keras mask (see
            :func:`reads_masks`). Eager PyTorch spends about as long in that
            bookkeeping as in the matmuls of a batch-1 step. Kept as
            :attr:`direct`, which a layer's ``call_cached`` may read to call
            its own sublayers directly too (``FeedForward``).
        constants: a dict that outlives the pass, kept by the decoder for one
            decoding run: :meth:`constant` stores there what a layer derives
            from its weights once per run (None: made again each pass).

    After the pass: :attr:`new_caches` (the caches for the next pass),
    :attr:`slot_caches` (one bool per cache: whether it holds one entry per
    slot, so that a decoder may grow it, see :meth:`keep`) and
    :attr:`new_visible` (``visible`` with the keys a mask hid removed).
    """

    def __init__(self, index, positions, visible, cache_len, prompt_end=0, caches=None,
                 beams=None, copies=1, beam_copies=False, pick=None, direct=False,
                 constants=None):
        self.index = ops.convert_to_tensor(index, "int32")
        self.positions = positions
        self.q_len = positions.shape[1]
        self.slots = self.index + ops.arange(self.q_len, dtype="int32")
        self.visible = self.new_visible = visible
        self.cache_len = int(cache_len)
        self.prompt_end = prompt_end
        self.caches = caches
        self.beams = beams
        self.copies = int(copies)
        self.beam_copies = bool(beam_copies)
        self.pick = pick
        self.direct = bool(direct)
        self.call = direct_call if direct else _plain_call
        self.constants = {} if constants is None else constants
        self.new_caches = []
        self.slot_caches = []

    # -- the hook ---------------------------------------------------------------
    def __call__(self, layer, inputs, arguments):
        """``Transformer.call_hook``: one layer call of the pass."""
        cached = getattr(layer, "call_cached", None)
        if cached is not None:
            return cached(inputs, self, **arguments)
        if getattr(layer, "activation", None) is _SOFTMAX:  # a softmax head: its logits
            layer.activation = _LINEAR
            try:
                return self.call(layer, inputs, **arguments)
            finally:
                layer.activation = _SOFTMAX
        return self.call(layer, inputs, **arguments)

    # -- what the layers read -----------------------------------------------------
    def cache(self, make):
        """The calling layer's cache: the one it kept in the last pass, or
        ``make()`` on a first pass. Each :meth:`cache` is followed by one
        :meth:`keep` (caches are matched by call order)."""
        if self.caches is None:
            return make()
        return self.caches[len(self.new_caches)]

    def constant(self, key, make):
        """``make()``, made once per decoding run and kept under ``key`` (e.g.
        a weight in the layout a step's kernel reads fastest). Only for
        eager steps (PyTorch): a traced step must not keep tensors across
        traces."""
        if key not in self.constants:
            self.constants[key] = make()
        return self.constants[key]

    def keep(self, cache, expand, slots=False):
        """Keep ``cache`` (any structure of tensors) for the next pass;
        ``expand(cache, copies)`` gives each input's ``copies`` rows of it
        (called on a first pass with ``copies > 1`` only).

        ``slots``: ``cache`` is a tuple of self-attention caches in the layout
        of ``MultiHeadAttention.call_with_cache`` (``(rows, k * cache_len,
        size)``, one entry per slot of each of ``k`` beams), which a decoder
        may grow to more slots between passes (``cache_segments`` of
        :class:`~bert4keras.generation.CachedDecoder`);
        any other cache (a projected context, a bias) is kept as it is."""
        self.new_caches.append(expand(cache, self.copies) if self.copies > 1 else cache)
        self.slot_caches.append(bool(slots))

    def attention_bias(self, hide=None, bidirectional_prompt=False):
        """The self-attention bias ``(rows, 1, q_len, cache_len)``: a new
        position sees the visible keys up to itself (and, with
        ``bidirectional_prompt``, the whole prompt); unwritten slots are
        hidden.

        Args:
            hide: bool ``(rows, q_len)``: the new positions whose keys are
                hidden from now on (a mask's padding rule); recorded in
                :attr:`new_visible`.
            bidirectional_prompt: the prompt's slots (below ``prompt_end``)
                are seen by every position.
        """
        visible = self.visible
        if hide is not None:
            hidden = ops.slice_update(ops.zeros(ops.shape(visible), "int32"),
                                      (ops.zeros((), "int32"), self.index),
                                      ops.cast(hide, "int32"))
            visible = ops.logical_and(visible, ops.equal(hidden, 0))
        self.new_visible = visible
        k = ops.arange(self.cache_len, dtype="int32")[None, None, :]
        seen = k <= self.slots[None, :, None]
        if bidirectional_prompt:
            seen = ops.logical_or(seen, k < self.prompt_end)
        keep = ops.logical_and(visible[:, None, :], seen)
        return Bk.visibility_to_bias(ops.cast(keep, "float32"))[:, None]

    def select(self, x):
        """``(rows, q_len, ...) -> (rows, 1, ...)`` at ``pick`` (or the last)."""
        if self.pick is None:
            return x[:, -1:]
        return ops.take(x, ops.reshape(ops.cast(self.pick, "int32"), (1,)), axis=1)


_SOFTMAX = keras.activations.get("softmax")
_LINEAR = keras.activations.get("linear")


def positions(slots, pad):
    """``(rows, q_len)`` positions of ``slots`` in rows left-padded by ``pad``."""
    return ops.maximum(slots[None, :] - pad[:, None], 0)


def reads_masks(layers):
    """Whether a layer among ``layers`` (those a decoding pass calls) reads
    Keras masks: its ``call`` takes ``mask`` and it has no ``call_cached``.
    If none does, a :class:`DecodingStep` may call the layers directly
    (``direct=True``), dropping the masks Keras would attach."""
    return any(getattr(layer, "_call_has_mask_arg", True)
               and getattr(layer, "call_cached", None) is None for layer in layers)
