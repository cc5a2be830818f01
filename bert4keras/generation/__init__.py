"""Autoregressive decoding: greedy search, beam search and sampling.

Two doors, one set of search rules:

* :class:`AutoRegressiveDecoder` (:mod:`~bert4keras.generation.decoder`) --
  the original toolkit's pattern: subclass it and write ``predict``.
* :class:`CachedDecoder` (:mod:`~bert4keras.generation.cached`) -- cached,
  compiled, batched decoding of a :class:`~bert4keras.models.Transformer`,
  running the model's own layers through a :class:`DecodingStep`
  (:mod:`~bert4keras.generation.step`): each layer that behaves differently
  in a cached step says how (``call_cached``), so a new model family or
  position encoding decodes with the cache without a change here.

The search rules (scores, stop tokens, beams, sampling) live in
:mod:`bert4keras.generation.search`. Nothing in this package names a model
family.
"""

from bert4keras.generation.cached import CachedDecoder
from bert4keras.generation.decoder import AutoRegressiveDecoder
from bert4keras.generation.step import DecodingStep

__all__ = ["AutoRegressiveDecoder", "CachedDecoder", "DecodingStep"]
