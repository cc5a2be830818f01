"""A model family defined here, with position encodings the library does not
have, decodes with the key/value cache exactly as without it -- with no line
of the library changed for it.

The toy family is a pre-norm causal LM (a :class:`Transformer` subclass) with
two position encodings of its own, each a layer that says how it behaves in
a cached decoding step (``call_cached``):

* ``LinearDistanceBias`` -- a per-head penalty linear in the query-key
  distance added to the attention scores (the ALiBi idea, Press et al. 2022),
  through ``MultiHeadAttention(p_bias='t5_relative')``; in a cached step it
  computes the rows of the step's new slots against every cache slot;
* ``CosinePositions`` -- a fixed absolute encoding ``cos(p * w_i)`` added to
  the token embeddings; in a cached step it encodes the step's positions.

Reference: the same Keras model rerun over the whole right-padded sequence at
every step through a plain ``AutoRegressiveDecoder.predict`` (no cache, no
``call_cached``), greedy and beam search, on a ragged batch; and with the
caches grown over three segments (``cache_segments=3``: the position layers
read the segment's ``step.cache_len``).
"""

import keras
import numpy as np
from keras import ops

from bert4keras.generation import AutoRegressiveDecoder, CachedDecoder
from bert4keras.layers import (
    CausalMask,
    Embedding,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
)
from bert4keras.models.base import Transformer
from conftest import tf_op_by_op

VOCAB, HEADS = 61, 4


class LinearDistanceBias(keras.layers.Layer):
    """``-slope_h * |j - i|`` for query ``i``, key ``j`` and head ``h``
    (slopes ``2^(-2(h+1))``): ``(q_len, k_len, heads)``."""

    def __init__(self, heads, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads

    def _bias(self, q_idx, k_idx):
        distance = ops.abs(ops.cast(k_idx[None, :] - q_idx[:, None], "float32"))
        slopes = 2.0 ** (-2.0 * ops.arange(1, self.heads + 1, dtype="float32"))
        return -distance[..., None] * slopes

    def call(self, inputs):
        q, k = inputs
        return self._bias(ops.arange(ops.shape(q)[1]), ops.arange(ops.shape(k)[1]))

    def call_cached(self, inputs, step):
        return self._bias(step.slots, ops.arange(step.cache_len, dtype="int32"))


class CosinePositions(keras.layers.Layer):
    """``x + cos(p * w)`` with fixed frequencies ``w`` ``(dim,)``."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.freqs = np.linspace(0.05, 1.5, dim).astype("float32")

    def call(self, inputs, positions=None):
        if positions is None:
            positions = ops.arange(ops.shape(inputs)[1])[None]
        angles = ops.cast(positions, "float32")[..., None] * self.freqs
        return inputs + ops.cast(ops.cos(angles), inputs.dtype)

    def call_cached(self, inputs, step):
        return self(inputs, positions=step.positions)


class ToyLM(Transformer):
    """Pre-norm causal LM with the two position encodings above and a tied
    softmax head."""

    def __init__(self, **kwargs):
        super().__init__(segment_vocab_size=0, application="lm", **kwargs)

    def compute_attention_bias(self, inputs):
        return self.apply(inputs[0], CausalMask, name="Toy-Causal-Mask")

    def apply_embeddings(self, inputs):
        x = self.apply(inputs[0], Embedding, input_dim=self.vocab_size,
                       output_dim=self.hidden_size, name="Embedding-Token")
        return self.apply(x, CosinePositions, dim=self.hidden_size, name="Embedding-Cosine")

    def apply_main_layers(self, x, index, attention_bias):
        position = self.shared_by_blocks("distance", lambda: self.apply(
            [x, x], LinearDistanceBias, heads=self.num_attention_heads,
            name="Embedding-Distance"))
        name = "Transformer-%d-" % index
        y = self.apply(x, LayerNormalization, name=name + "Attention-Norm")
        y = self.apply([y, y, y, attention_bias, position], MultiHeadAttention,
                       heads=self.num_attention_heads, head_size=self.attention_head_size,
                       p_bias="t5_relative", name=name + "Attention")
        x = self.apply([x, y], keras.layers.Add, name=name + "Attention-Add")
        y = self.apply(x, LayerNormalization, name=name + "FeedForward-Norm")
        y = self.apply(y, FeedForward, units=self.intermediate_size, name=name + "FeedForward")
        return self.apply([x, y], keras.layers.Add, name=name + "FeedForward-Add")

    def apply_final_layers(self, x):
        x = self.apply(x, LayerNormalization, name="Output-Norm")
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        return self.apply(x, keras.layers.Activation, activation="softmax", name="LM-Softmax")


class Rerun(AutoRegressiveDecoder):
    """No cache: the Keras model over the whole (right-padded) sequence."""

    WIDTH = 24

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        ids = np.concatenate([inputs[0], output_ids], 1)
        padded = np.pad(ids, ((0, 0), (0, self.WIDTH - ids.shape[1])))
        return ops.convert_to_numpy(self.model.predict_on_batch(padded))[:, ids.shape[1] - 1]


def test_toy_family_decodes_the_same_with_the_cache():
    toy = ToyLM(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=HEADS,
                intermediate_size=48)
    toy.build()
    rng = np.random.RandomState(0)
    for weight in toy.model.weights:  # varied greedy paths: unit-scale projections
        shape = tuple(weight.shape)
        value = (1.0 + 0.1 * rng.randn(*shape)) if len(shape) == 1 and "gamma" in weight.path \
            else (0.1 * rng.randn(*shape) if len(shape) == 1 else rng.randn(*shape)
                  / np.sqrt(shape[0]))
        weight.assign(value.astype("float32"))
    batch = [list(rng.randint(5, VOCAB, size=n)) for n in (6, 3, 8)]
    options = dict(end_id=3, maxlen=10)
    cached = CachedDecoder(toy, **options)
    # its caches grow twice (eager steps, op by op on TensorFlow, as the uncached
    # reference: segments under XLA, and graph mode, are test_generation's)
    grown = CachedDecoder(toy, cache_segments=3, jit_compile=False, **options)
    uncached = CachedDecoder(toy, use_cache=False, jit_compile=False, **options)
    plain = Rerun(toy.model, start_id=None, **options)
    for method, kwargs in (("greedy", {}), ("beam", dict(num_beams=3))):
        ours = cached.generate(batch, method=method, **kwargs)
        assert len({tuple(r) for r in ours}) > 1, ours  # not one repeated answer
        with tf_op_by_op():
            again = uncached.generate(batch, method=method, **kwargs)
            segmented = grown.generate(batch, method=method, **kwargs)
        for a, c in zip(ours, segmented):
            assert a.tolist() == c.tolist(), (method, a, c)
        for prompt, a, b in zip(batch, ours, again):
            reference = plain.beam_search([prompt], topk=3) if method == "beam" \
                else plain.greedy_search([prompt])
            assert a.tolist() == b.tolist() == reference.tolist(), (method, a, b, reference)


def test_generation_package_names_no_family():
    """``bert4keras/generation/`` knows no model family: none of the family
    class names (nor their module names) appears in its source."""
    import os
    import re

    import bert4keras.generation as generation
    from bert4keras.models import MODELS  # noqa: F401  (every family module imported)
    from bert4keras.models.base import Transformer

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    names = {cls.__name__ for cls in subclasses(Transformer) if cls.__module__.startswith(
        "bert4keras.models")}
    names |= {cls.__module__.rsplit(".", 1)[-1] for cls in subclasses(Transformer)
              if cls.__module__.startswith("bert4keras.models.")} - {"base"}
    assert {"T5", "GPT2", "RoFormer", "NEZHA", "bert"} <= names
    folder = os.path.dirname(generation.__file__)
    for filename in sorted(os.listdir(folder)):
        if filename.endswith(".py"):
            with open(os.path.join(folder, filename), encoding="utf-8") as f:
                text = re.sub(r"bert4keras", "", f.read())
            found = {n for n in names if re.search(r"\b%s\b" % re.escape(n), text, re.I)}
            assert not found, (filename, sorted(found))
