"""Decoding: :class:`AutoRegressiveDecoder` and the cached, compiled
:class:`CachedDecoder`.

* Parity with ``transformers`` ``generate()`` on the same random GPT-2 and T5
  weights: greedy (with and without a repetition penalty, one prompt at a
  time and a left-padded batch) and beam search (4 beams, scores summed:
  ``length_penalty=0``, ``early_stopping=True``; and the default rules with
  ``length_penalty=1``) must give the same tokens.
* Cached == uncached: every family that decodes (GPT, GPT-2, GPT2-ML, UniLM
  on BERT, RoFormer (rotary), NEZHA (relative) and ALBERT (one shared
  block), T5) gives the same tokens with the cache, with
  ``use_cache=False`` and through a plain user ``predict`` on the Keras model
  (the original toolkit's pattern), greedy and beam (with beams that trade
  histories, so cache slots are read from ancestor beams); a ragged batch
  gives each row's unbatched result.
* Segments (``cache_segments``): caches grown between compiled loops give the
  same tokens as one cache, checked against ``transformers`` (GPT-2 greedy and
  beam, T5) and in every family above; streaming across segments, seeded
  sampling, a batch that stops before the last segment, ``warm_up``, and the
  default rule (segments only for long outputs whose caches are large next to
  the weights).
* Beam attention: ``MultiHeadAttention.call_with_cache`` with ``beams`` ==
  the layer's uncached attention over each row's gathered history, for every
  ``p_bias`` (none, typical_relative, rotary, t5_relative), 1 and 2 new
  positions; the cache layout is checked.
* Sampling: ``topk=1`` is greedy, a seed reproduces, ``topk``/``topp`` never
  leave their allowed set (many draws); stop tokens, ``minlen``,
  ``min_ends``, streaming, the progress bar, ``wraps`` variants, ``warm_up``.
* Smoke runs of the two examples (random init, a few steps).

The random models are scaled so that their greedy paths vary (random
Transformers otherwise repeat one token) and their stop tokens are reached.
"""

import os

import keras
import numpy as np
import pytest

from bert4keras.generation import AutoRegressiveDecoder, CachedDecoder
from bert4keras.models import build_transformer_model
from conftest import load_example, tf_op_by_op

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 97
GPT2_EOS = 42
T5_EOS = 8
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position=64)


def prompts(lengths=(5, 9, 3, 7), low=4, seed=0):
    rng = np.random.RandomState(seed)
    return [list(rng.randint(low, VOCAB, size=n)) for n in lengths]


# -- transformers references ------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(our Transformer, torch GPT2LMHeadModel) on the same random weights."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                        eos_token_id=GPT2_EOS, pad_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
            elif "wpe" in name:
                p.mul_(20.0)
            elif "wte" not in name:
                p.mul_(10.0)
    path = tmp_path_factory.mktemp("hf_gpt2")
    model.save_pretrained(path)
    ours = build_transformer_model(str(path), str(path), model="gpt2",
                                   return_keras_model=False)  # softmax head: decoded as logits
    return ours, model


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                      dropout_rate=0.0, feed_forward_proj="relu", decoder_start_token_id=0,
                      eos_token_id=T5_EOS, pad_token_id=0)
    model = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.mul_(20.0)
            elif name != "shared.weight":
                p.mul_(3.0)
    path = tmp_path_factory.mktemp("hf_t5")
    model.save_pretrained(path)
    ours = build_transformer_model(str(path), str(path), model="t5", with_lm="linear",
                                   return_keras_model=False)
    return ours, model


def hf_generate(model, prompt, max_new_tokens, eos, **kwargs):
    """``transformers`` ``generate`` of one prompt; the new tokens (decoder-only)
    or the decoder output with its start token (T5), up to the first eos."""
    import torch

    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         eos_token_id=eos, pad_token_id=0, **kwargs)[0].numpy()
    if not model.config.is_encoder_decoder:
        out = out[len(prompt):]
    stop = np.flatnonzero(out[1:] == eos) if model.config.is_encoder_decoder \
        else np.flatnonzero(out == eos)
    if len(stop):
        out = out[:stop[0] + (2 if model.config.is_encoder_decoder else 1)]
    return out.tolist()


@pytest.mark.parametrize("segments", [1, 4])
def test_gpt2_greedy_matches_transformers(gpt2, segments):
    """With one cache and with caches grown over four segments."""
    ours, model = gpt2
    decoder = CachedDecoder(ours, end_id=GPT2_EOS, maxlen=20, cache_segments=segments)
    batch = prompts()
    results = decoder.generate(batch)
    assert any(r[-1] == GPT2_EOS for r in results)  # the stop rule is exercised
    assert len({tuple(r) for r in results}) == len(batch)
    for prompt, result in zip(batch, results):
        assert result.tolist() == hf_generate(model, prompt, 20, GPT2_EOS, do_sample=False)
    # transformers' own left-padded batch (positions from the attention mask)
    import torch

    width = max(map(len, batch))
    ids, mask = np.zeros((len(batch), width), "int64"), np.zeros((len(batch), width), "int64")
    for row, prompt in enumerate(batch):
        ids[row, width - len(prompt):], mask[row, width - len(prompt):] = prompt, 1
    theirs = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                            max_new_tokens=20, do_sample=False, eos_token_id=GPT2_EOS,
                            pad_token_id=0)[:, width:].numpy()
    for result, row in zip(decoder.generate(ids, mask=mask), theirs):
        assert result.tolist() == row[:len(result)].tolist()


def test_gpt2_repetition_penalty_matches_transformers(gpt2):
    ours, model = gpt2
    decoder = CachedDecoder(ours, end_id=GPT2_EOS, maxlen=16)
    batch = prompts()[:2]
    for prompt, result in zip(batch, decoder.generate(batch, repetition_penalty=1.6)):
        assert result.tolist() == hf_generate(model, prompt, 16, GPT2_EOS, do_sample=False,
                                              repetition_penalty=1.6)


@pytest.mark.parametrize("early_stopping,length_penalty,segments",
                         [(True, 0.0, 1), (False, 1.0, 1), (True, 0.0, 3)])
def test_gpt2_beam_search_matches_transformers(gpt2, early_stopping, length_penalty, segments):
    ours, model = gpt2
    decoder = CachedDecoder(ours, end_id=GPT2_EOS, maxlen=20, cache_segments=segments)
    batch = prompts()
    results, scores = decoder.generate(batch, method="beam", num_beams=4,
                                       early_stopping=early_stopping,
                                       length_penalty=length_penalty, return_scores=True)
    assert any(r[-1] == GPT2_EOS for r in results)
    for prompt, result, score in zip(batch, results, scores):
        assert result.tolist() == hf_generate(
            model, prompt, 20, GPT2_EOS, num_beams=4, early_stopping=early_stopping,
            length_penalty=length_penalty, do_sample=False)
        assert np.isfinite(score) and score < 0


def test_t5_greedy_and_beam_match_transformers(t5):
    """In three cache segments: segments grow the decoder's self-attention
    caches, never the cross-attention's projected context. (One segment, the
    default for short outputs, equals the T5 model's own outputs in
    test_cached_equals_uncached[t5], which test_t5 holds to transformers.)"""
    ours, model = t5
    decoder = CachedDecoder(ours, end_id=T5_EOS, maxlen=16,  # start_id 0 by default
                            cache_segments=3)
    batch = prompts(low=2)
    greedy = decoder.generate(batch)
    beam = decoder.generate(batch, method="beam", num_beams=4, early_stopping=True)
    assert any(r[-1] == T5_EOS for r in greedy + beam)
    for prompt, g, b in zip(batch, greedy, beam):
        assert g[0] == 0 and b[0] == 0  # the start token leads, as in transformers
        assert g.tolist() == hf_generate(model, prompt, 16, T5_EOS, do_sample=False)
        assert b.tolist() == hf_generate(model, prompt, 16, T5_EOS, do_sample=False, num_beams=4,
                                         early_stopping=True, length_penalty=0.0)


# -- cached == uncached -------------------------------------------------------------


def randomize(transformer, seed=0):
    """Weights with varied greedy paths: large position tables, unit-scale
    projections, LayerNorm gains near 1."""
    rng = np.random.RandomState(seed)
    for weight in transformer.model.weights:
        shape, path = tuple(weight.shape), weight.path
        if len(shape) == 1:
            value = (1.0 if "gamma" in path else 0.0) + 0.1 * rng.randn(*shape)
        elif "Position" in path:
            value = 2.0 * rng.randn(*shape)
        elif "Embedding-Token" in path or "Segment" in path:
            value = 0.5 * rng.randn(*shape)
        else:
            value = rng.randn(*shape) / np.sqrt(shape[0])
        weight.assign(value.astype("float32"))
    return transformer


class PlainDecoder(AutoRegressiveDecoder):
    """The original toolkit's pattern: rerun the Keras model on the whole
    sequence each step (``kind``: 'lm', 'unilm' or 't5'). The sequence is
    right-padded to a fixed width (one compiled shape; causal attention keeps
    the padding out of the positions read)."""

    WIDTH = 24

    def __init__(self, model, kind, **kwargs):
        super().__init__(**kwargs)
        self.model, self.kind = model, kind

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        def pad(x):
            return np.pad(x, ((0, 0), (0, self.WIDTH - x.shape[1])))

        if self.kind == "t5":
            x, last = [inputs[0], pad(output_ids)], output_ids.shape[1] - 1
        else:
            ids = np.concatenate([inputs[0], output_ids], 1)
            x, last = pad(ids), ids.shape[1] - 1
            if self.kind == "unilm":
                x = [x, pad(np.concatenate([inputs[1], np.ones_like(output_ids)], 1))]
        return keras.ops.convert_to_numpy(self.model.predict_on_batch(x))[:, last]


def family(key):
    if key == "t5":
        t = build_transformer_model(None, None, model="t5", vocab_size=VOCAB, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    attention_head_size=8, intermediate_size=48,
                                    return_keras_model=False)
        return randomize(t), "t5"
    if key.endswith("_unilm"):
        t = build_transformer_model(None, None, model=key.split("_")[0], application="unilm",
                                    with_mlm=True, return_keras_model=False, **SMALL)
        return randomize(t), "unilm"
    t = build_transformer_model(None, None, model=key, return_keras_model=False, **SMALL)
    return randomize(t), "lm"


FAMILIES = ["gpt", "gpt2", "gpt2_ml", "bert_unilm", "roformer_unilm", "nezha_unilm",
            "albert_unilm", "t5"]


@pytest.mark.parametrize("key", FAMILIES)
def test_cached_equals_uncached(key):
    """A ragged batch with the cache (one cache, and caches grown over three
    segments) == without (``use_cache=False``) == each prompt alone through a
    user ``predict`` on the Keras model. The grown caches and the uncached
    reruns are decoded op by op (:class:`conftest.tf_op_by_op`: three more
    compiled loops per method cost ~10 s of XLA per family, and tracing their
    graphs ~4 s; segments under ``jit_compile`` are
    test_compiled_steps_equal_eager_steps's and test_cache_segments', and
    ``jit_compile=False`` in graph mode is the reference there)."""
    transformer, kind = family(key)
    batch = prompts((6, 3, 8), low=8, seed=1)
    if kind == "unilm":  # [CLS] source [SEP] as a UniLM source
        batch = [[2] + p + [3] for p in batch]
    options = dict(end_id=7, maxlen=10)
    cached = CachedDecoder(transformer, cache_segments=1, **options)
    grown = CachedDecoder(transformer, cache_segments=3, jit_compile=False, **options)
    rerun = CachedDecoder(transformer, use_cache=False, jit_compile=False, **options)
    plain = PlainDecoder(transformer.model, kind, start_id=0 if kind == "t5" else None,
                         **options)
    for method, kwargs in (("greedy", {}), ("beam", dict(num_beams=3))):
        ours = cached.generate(batch, method=method, **kwargs)
        assert len({tuple(r) for r in ours}) > 1, ours
        with tf_op_by_op():
            again = rerun.generate(batch, method=method, **kwargs)
            segmented = grown.generate(batch, method=method, **kwargs)
        for a, c in zip(ours, segmented):
            assert a.tolist() == c.tolist(), (method, a, c)
        for prompt, a, b in zip(batch, ours, again):
            inputs = [prompt] + ([[0] * len(prompt)] if kind == "unilm" else [])
            if method == "beam":
                reference = plain.beam_search(inputs, topk=3)
            else:
                reference = plain.greedy_search(inputs)
            assert a.tolist() == b.tolist() == reference.tolist(), (method, a, b, reference)
    # the beams did trade histories, so reads through `ancestors` were exercised
    opt, seed = cached._generate_options("beam", None, num_beams=3)
    *_, state = cached._iterate(cached._prompts(batch, None), opt, seed, None)
    ancestors = keras.ops.convert_to_numpy(state["ancestors"])
    assert (ancestors != (np.arange(len(ancestors)) % 3)[:, None]).any()


@pytest.mark.parametrize("p_bias", [None, "typical_relative", "rotary", "t5_relative"])
@pytest.mark.parametrize("q_len", [1, 2])
def test_attention_beams_read_ancestor_slots(p_bias, q_len):
    """``call_with_cache`` with ``beams`` (beams side by side, each slot read
    from the beam that wrote it) == the layer's own uncached attention
    (``_attend``, what ``call`` runs) over each row's gathered history; the
    new keys/values land in every beam's slots."""
    from bert4keras import backend as Bk
    from bert4keras.layers import MultiHeadAttention

    ops = keras.ops
    rng = np.random.RandomState(q_len)
    heads, size, hidden, k, groups, length, index = 2, 4, 8, 3, 2, 7, 3
    rows = groups * k
    layer = MultiHeadAttention(heads, size, p_bias=p_bias)
    layer.build([(None, None, hidden)] * 3)
    x = rng.randn(rows, q_len, hidden).astype("float32")
    history = rng.randn(2, rows, length, heads, size).astype("float32")  # keys, values
    keep = rng.rand(rows, 1, q_len, length) > 0.3
    keep[..., index:index + q_len] = np.tril(np.ones((q_len, q_len), bool))
    keep[..., index + q_len:] = False
    bias = np.where(keep, 0.0, -1e12).astype("float32")
    position = {
        None: None,
        "rotary": Bk.sinusoidal_embeddings(np.arange(index, index + q_len)[None], size),
        "typical_relative": rng.randn(q_len, length, size).astype("float32"),
        "t5_relative": rng.randn(q_len, length, heads).astype("float32"),
    }[p_bias]
    inputs = [x, x, x, bias] + ([position] if p_bias else [])
    ancestors = rng.randint(0, k, size=(rows, length)).astype("int32")
    ancestors[:, index:index + q_len] = (np.arange(rows) % k)[:, None]  # own new slots

    def side_by_side(c):  # (rows, len, heads, size) -> (heads * groups, k * len, size)
        return np.transpose(c, (2, 0, 1, 3)).reshape(heads * groups, k * length, size)

    output, (keys, values) = layer.call_with_cache(
        inputs, tuple(side_by_side(c) for c in history), index=index, beams=(ancestors, k))

    # reference: write the new keys/values, gather each row's history, attend
    kw, vw = (ops.convert_to_numpy(c) for c in layer._project_kv(x, x, position))
    written = history.copy()
    written[0][:, index:index + q_len], written[1][:, index:index + q_len] = kw, vw
    np.testing.assert_allclose(ops.convert_to_numpy(keys), side_by_side(written[0]), atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(values), side_by_side(written[1]),
                               atol=1e-6)
    source = (np.arange(rows) // k * k)[:, None] + ancestors
    gathered = written[:, source, np.arange(length)[None]]  # (2, rows, len, heads, size)
    qw = layer._project(layer.q_dense, x, size)
    if p_bias == "rotary":
        qw = Bk.apply_rotary_position_embeddings(position, qw)[0]
    expected = layer._attend(qw, gathered[0], gathered[1], bias, position)
    np.testing.assert_allclose(ops.convert_to_numpy(output), ops.convert_to_numpy(expected),
                               atol=1e-5)
    # no beams: one row per sequence, (heads * batch, len, size)
    plain = layer.call_with_cache(inputs, tuple(np.transpose(c, (2, 0, 1, 3)).reshape(
        heads * rows, length, size) for c in gathered))[0]
    np.testing.assert_allclose(ops.convert_to_numpy(plain), ops.convert_to_numpy(expected),
                               atol=1e-5)
    with pytest.raises(ValueError, match="heads \\* batch"):
        layer.call_with_cache(inputs, tuple(gathered), index=index)


def test_direct_call_skips_only_what_changes_nothing():
    """``direct_call`` (the decoding steps' shortcut past ``Layer.__call__``)
    gives ``layer(x)``'s values for a plain and an int8-quantized Dense, and
    falls back to the full call where the bookkeeping matters: an unbuilt
    layer, a mixed-precision policy (autocast). ``reads_masks`` flags a pass
    with a layer whose call reads a Keras mask."""
    from bert4keras.generation.step import reads_masks
    from bert4keras.layers import LayerNormalization
    from bert4keras.layers.core import direct_call

    x = np.random.RandomState(0).randn(3, 8).astype("float32")
    dense = keras.layers.Dense(5)
    assert not dense.built
    y = direct_call(dense, x)  # unbuilt: the full call builds it
    assert dense.built
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(direct_call(dense, x)),
                                  keras.ops.convert_to_numpy(y))
    dense.quantize("int8")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(direct_call(dense, x)),
                                  keras.ops.convert_to_numpy(dense(x)))
    mixed = keras.layers.Dense(5, dtype="mixed_bfloat16")
    mixed.build((None, 8))
    out = direct_call(mixed, x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"  # autocast happened
    pooling = keras.layers.GlobalAveragePooling1D()  # its call takes the Keras mask
    assert reads_masks([dense, pooling]) and not reads_masks([dense, LayerNormalization()])


def test_feedforward_in_a_direct_step_calls_its_dense_layers_directly(monkeypatch):
    """``FeedForward.call_cached``: in a step that calls layers directly, its
    ``Dense`` sublayers skip ``Layer.__call__`` too (same values as a plain
    call); otherwise the step calls the block as before."""
    from types import SimpleNamespace

    from bert4keras.generation.step import _plain_call
    from bert4keras.layers import FeedForward
    from bert4keras.layers.core import direct_call

    x = np.random.RandomState(1).randn(2, 3, 8).astype("float32")
    ffn = FeedForward(16, activation=["gelu", "linear"])
    expected = keras.ops.convert_to_numpy(ffn(x))
    calls = []
    original = keras.layers.Dense.__call__
    monkeypatch.setattr(keras.layers.Dense, "__call__",
                        lambda self, *a, **k: calls.append(self.name) or original(self, *a, **k))
    direct = SimpleNamespace(direct=True, call=direct_call)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ffn.call_cached(x, direct)),
                                  expected)
    assert calls == []
    plain = SimpleNamespace(direct=False, call=_plain_call)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ffn.call_cached(x, plain)),
                                  expected)
    assert len(calls) == 3  # i0, i1, o through Layer.__call__


# -- sampling and options -----------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_ml():
    transformer, _ = family("gpt2_ml")
    return transformer


def test_topk_one_is_greedy_and_seed_reproduces(gpt2_ml):
    decoder = CachedDecoder(gpt2_ml, end_id=7, maxlen=8)
    batch = prompts((4, 6), seed=3)
    greedy = decoder.generate(batch)
    drawn = decoder.generate(batch, method="sample", n=3, topk=1, seed=5)
    for g, samples in zip(greedy, drawn):
        for s in samples:
            assert s.tolist() == g.tolist()
    a = decoder.generate(batch, method="sample", n=4, seed=11, temperature=2.0)
    b = decoder.generate(batch, method="sample", n=4, seed=11, temperature=2.0)
    c = decoder.generate(batch, method="sample", n=4, seed=12, temperature=2.0)
    flat = [s.tolist() for rows in a for s in rows]
    assert flat == [s.tolist() for rows in b for s in rows]
    assert flat != [s.tolist() for rows in c for s in rows]
    assert len({tuple(s) for s in flat}) > 2  # the draws differ between rows
    # the single-input door (original API) draws the same way as a batch of one
    single = decoder.random_sample([batch[0]], n=4, seed=11, temperature=2.0)
    one = decoder.generate(batch[:1], method="sample", n=4, seed=11, temperature=2.0)[0]
    assert [s.tolist() for s in single] == [s.tolist() for s in one]


def test_topk_topp_stay_in_the_allowed_set(gpt2_ml):
    """First token over 300 draws: only the allowed tokens, and all of them
    that are likely enough to be drawn."""
    decoder = CachedDecoder(gpt2_ml, maxlen=1)
    prompt = prompts((5,), seed=4)[0]
    probs = keras.ops.convert_to_numpy(gpt2_ml.model(np.array([prompt])))[0, -1]  # softmax head
    order = np.argsort(-probs)
    for topk, topp in ((5, None), (None, 0.6), (8, 0.5)):
        allowed = set(order[:topk or VOCAB].tolist())
        if topp:
            p = probs[order[:topk or VOCAB]]
            p = p / p.sum()
            allowed = set(order[:int(np.searchsorted(np.cumsum(p), topp)) + 1].tolist())
        draws = decoder.generate([prompt], method="sample", n=300, topk=topk, topp=topp,
                                 seed=0)[0]
        seen = {int(d[0]) for d in draws}
        assert seen <= allowed, (topk, topp, seen - allowed)
        likely = {t for t in allowed if probs[t] / probs[list(allowed)].sum() > 0.05}
        assert likely <= seen


class FixedLogits(AutoRegressiveDecoder):
    """``predict`` returns fixed random logits per step: the search rules alone."""

    table = np.random.RandomState(0).randn(40, 30).astype("float32") * 2

    @AutoRegressiveDecoder.wraps(default_rtype="logits")
    def predict(self, inputs, output_ids, states):
        return np.repeat(self.table[output_ids.shape[1]][None], len(output_ids), 0)


def test_sampling_rules_over_many_steps():
    decoder = FixedLogits(start_id=None, end_id=None, maxlen=12)
    samples = np.array(decoder.random_sample([[1]], n=64, topk=4, topp=0.7, seed=0))
    for step in range(12):
        logits = FixedLogits.table[step]
        order = np.argsort(-logits)[:4]
        p = np.exp(logits[order] - logits[order].max())
        p /= p.sum()
        allowed = set(order[:int(np.searchsorted(np.cumsum(p), 0.7)) + 1].tolist())
        assert set(samples[:, step].tolist()) <= allowed


def test_stop_tokens_minlen_and_min_ends():
    table = FixedLogits.table.copy()
    table[:, 5] = 50.0  # token 5 is always the most likely
    FixedLogits.table, saved = table, FixedLogits.table
    try:
        assert FixedLogits(None, 5, 10).greedy_search([[1]]).tolist() == [5]
        out = FixedLogits(None, 5, 10, minlen=4).greedy_search([[1]])
        assert len(out) == 4 and out[-1] == 5 and 5 not in out[:-1]
        out = FixedLogits(None, 5, 10).greedy_search([[1]], min_ends=3)
        assert out.tolist() == [5, 5, 5]
        out = FixedLogits(None, [9, 5], 10).beam_search([[1]], topk=2)
        assert out.tolist() == [5]
        assert FixedLogits(None, None, 6).greedy_search([[1]]).tolist() == [5] * 6
        assert FixedLogits(2, 5, 6).greedy_search([[1]]).tolist() == [2, 5]  # start id first
    finally:
        FixedLogits.table = saved


def test_streaming_progress_and_wraps(gpt2_ml, capsys):
    decoder = CachedDecoder(gpt2_ml, end_id=7, maxlen=9)
    batch = prompts((4, 6, 2), seed=6)
    results = decoder.generate(batch)
    streamed = list(decoder.stream(batch))
    assert len(streamed) == max(len(r) for r in results)
    for row, result in enumerate(results):
        tokens = [int(s[row]) for s in streamed]
        assert tokens[:len(result)] == result.tolist()
        assert all(t == -1 for t in tokens[len(result):])
    seen = []
    assert decoder.greedy_search([batch[0]], streamer=seen.append, progress=True).tolist() \
        == results[0].tolist()
    assert [int(s[0]) for s in seen] == results[0].tolist()
    assert "decoding" in capsys.readouterr().err  # the tqdm bar
    # a bar alone: the compiled loop runs 8 tokens per call, the bar follows the tokens
    assert [r.tolist() for r in decoder.generate(batch, progress=True)] == \
        [r.tolist() for r in results]
    assert "%d/9" % max(len(r) for r in results) in capsys.readouterr().err
    with pytest.raises(ValueError, match="stream"):
        decoder.generate(batch, method="beam", streamer=print)

    # the same predict written for probabilities, for logits, and with states
    model = gpt2_ml.model

    class Probas(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            x = np.concatenate([inputs[0], output_ids], 1)
            return keras.ops.convert_to_numpy(model(x))[:, -1]

    class Logits(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="logits", use_states=True)
        def predict(self, inputs, output_ids, states):
            x = np.concatenate([inputs[0], output_ids], 1)
            probs = keras.ops.convert_to_numpy(model(x))[:, -1]
            return np.log(probs), (states or 0) + 1

    for cls in (Probas, Logits):
        assert cls(None, 7, 9).greedy_search([batch[0]]).tolist() == results[0].tolist()
        assert cls(None, 7, 9).beam_search([batch[0]], topk=3).tolist() == \
            decoder.beam_search([batch[0]], topk=3).tolist()


def test_warm_up_compiles_what_generate_runs(gpt2_ml):
    """``warm_up`` compiles every function of a ``generate`` call of the same
    shape (cached: start + decoding loop; uncached: every rerun length)."""
    batch = prompts((4, 6), seed=6)
    for use_cache in (True, False):
        decoder = CachedDecoder(gpt2_ml, maxlen=12, bucket=8, use_cache=use_cache)
        decoder.warm_up(batch)
        compiled = set(decoder._functions)
        assert len(compiled) == (2 if use_cache else 3)  # start + rerun lengths 16 and 20
        decoder.generate(batch)
        assert set(decoder._functions) == compiled
    decoder = CachedDecoder(gpt2_ml, maxlen=12, bucket=8, cache_segments=3)
    decoder.warm_up(batch, method="beam", num_beams=2)
    compiled = set(decoder._functions)
    assert len(compiled) == 4  # start + one decoding loop per segment
    decoder.generate(batch, method="beam", num_beams=2)
    assert set(decoder._functions) == compiled


def test_cache_segments(gpt2_ml):
    """Segments: a batch whose rows all stop before the last segment gives
    what one cache gives, streaming crosses them one token at a time,
    sampling with a seed is reproduced exactly; the default chooses segments
    only for long outputs whose caches are large next to the weights; a bad
    value is refused."""
    batch = prompts((4, 6, 2), seed=3)
    transformer, _ = family("gpt2")
    one = CachedDecoder(transformer, end_id=13, maxlen=40, cache_segments=1)
    four = CachedDecoder(transformer, end_id=13, maxlen=40, cache_segments=4)
    results = one.generate(batch)  # every row stops in the third segment (slots 21-30)
    assert max(len(r) for r in results) <= 30 and all(r[-1] == 13 for r in results)
    for a, b in zip(results, four.generate(batch)):
        assert a.tolist() == b.tolist()
    streamed = np.stack(list(four.stream(batch)), 1)
    for row, result in zip(streamed, results):
        assert row[row >= 0].tolist() == result.tolist()
    sample = dict(method="sample", n=3, topk=4, seed=11)
    for a, b in zip(one.generate(batch, **sample), four.generate(batch, **sample)):
        assert [x.tolist() for x in a] == [x.tolist() for x in b]
    # the default: segments for a long output of a tiny model (caches outweigh weights)
    tiny = build_transformer_model(None, None, model="gpt2", return_keras_model=False,
                                   **dict(SMALL, max_position=256))
    default = CachedDecoder(tiny, maxlen=200)

    def lengths(max_new):
        opt, _ = default._generate_options("greedy", max_new)
        _, static = default._setup(batch, opt, 0)
        return default._cache_lengths(static), static[2]

    found, prompt_len = lengths(200)
    if keras.backend.backend() == "torch":  # eager steps read the written slots only
        assert found == [prompt_len + 200]
    else:
        assert found == [prompt_len + 67, prompt_len + 134, prompt_len + 200]
    assert lengths(63)[0] == [prompt_len + 63]  # few new tokens: one cache
    default._weight_bytes *= 10 ** 6  # weights far larger than the caches: one cache
    assert lengths(200)[0] == [prompt_len + 200]
    with pytest.raises(ValueError, match="cache_segments"):
        CachedDecoder(gpt2_ml, cache_segments=0)


def test_errors():
    encoder = build_transformer_model(None, None, model="bert", return_keras_model=False,
                                      **SMALL)
    with pytest.raises(ValueError, match="application"):
        CachedDecoder(encoder)
    with pytest.raises(TypeError, match="return_keras_model"):
        CachedDecoder(encoder.model)
    lm = build_transformer_model(None, None, model="gpt2", return_keras_model=False, **SMALL)
    with pytest.raises(ValueError, match="max_position"):
        CachedDecoder(lm, maxlen=60).generate([[1] * 10])
    with pytest.raises(TypeError, match="wraps"):
        class Undecorated(AutoRegressiveDecoder):
            def predict(self, inputs, output_ids, states):
                return None
        Undecorated(None, 1, 3).greedy_search([[1]])


# -- examples -------------------------------------------------------------------------



SMALL_BERT_DIR = os.path.join(os.path.dirname(HERE), "checkpoints", "chinese_bert_small")


def test_gpt2_ml_example_smoke(tmp_path):
    example = load_example("basic_language_model_gpt2_ml")
    common = ["--random-init", "--config", os.path.join(SMALL_BERT_DIR, "bert_config.json"),
              "--vocab", os.path.join(SMALL_BERT_DIR, "vocab.txt"), "--layers", "1",
              "--max-new-tokens", "6"]
    results = example.main(common + ["--model", "gpt2_ml", "--n", "2", "--prompt", "今天",
                                     "--results", str(tmp_path / "gpt.json")])
    assert results["family"] == "gpt2_ml" and len(results["texts"][0]) == 2
    assert all(text.startswith("今天") for text in results["texts"][0])
    # a BERT-layout causal LM checkpoint (what `pretraining --model gpt` writes:
    # bert_model.ckpt with the MLM head, bert_config.json, vocab.txt), found by
    # its variable names; beam search
    import json
    import shutil

    lm = build_transformer_model(os.path.join(SMALL_BERT_DIR, "bert_config.json"), None,
                                 application="lm", with_mlm="linear", num_hidden_layers=1,
                                 return_keras_model=False)
    lm.save_weights_as_checkpoint(str(tmp_path / "bert_model.ckpt"))
    with open(os.path.join(SMALL_BERT_DIR, "bert_config.json")) as f:
        config = dict(json.load(f), num_hidden_layers=1)
    with open(tmp_path / "bert_config.json", "w") as f:
        json.dump(config, f)
    shutil.copy(os.path.join(SMALL_BERT_DIR, "vocab.txt"), tmp_path / "vocab.txt")
    results = example.main(["--model-dir", str(tmp_path), "--method", "beam", "--beams", "2",
                            "--max-new-tokens", "6"])
    assert results["family"] == "bert" and results["checkpoint"] == str(tmp_path)
    assert len(results["texts"]) == 3


def test_shipped_small_gpt_is_trained_and_is_the_default():
    """The example's default directory holds the LM that ``pretraining --model
    gpt`` trained (README): it loads with every variable present, predicts the
    next character of People's Daily text far above chance (its training log
    ended at 0.20 accuracy; a mis-mapped or untrained checkpoint is near
    1/13,585), and the example decodes from it with no flags but the length."""
    from bert4keras.datasets import load_peoples_daily_sentences
    from bert4keras.tokenizers import Tokenizer

    example = load_example("basic_language_model_gpt2_ml")
    directory = example.DEFAULT_DIR
    tokenizer = Tokenizer(os.path.join(directory, "vocab.txt"), do_lower_case=True)
    lm = build_transformer_model(os.path.join(directory, "bert_config.json"),
                                 os.path.join(directory, "bert_model.ckpt"),
                                 application="lm", with_mlm="linear")
    sentences = [s for s in load_peoples_daily_sentences() if len(s) >= 20][:64]
    ids = [tokenizer.encode(s, maxlen=64)[0] for s in sentences]
    width = min(len(t) for t in ids)
    ids = np.array([t[:width] for t in ids], dtype="int32")
    logits = np.asarray(lm.predict([ids, np.zeros_like(ids)], verbose=0))
    accuracy = float(np.mean(logits[:, :-1].argmax(-1) == ids[:, 1:]))
    assert accuracy > 0.12, accuracy
    results = example.main(["--method", "greedy", "--max-new-tokens", "8"])
    assert results["family"] == "bert" and results["checkpoint"] == directory
    assert [text[0][:len(prompt)] for prompt, text in zip(example.PROMPTS, results["texts"])] \
        == example.PROMPTS
    assert results["tokens"] > 0


def test_unilm_example_smoke(tmp_path):
    example = load_example("task_seq2seq_unilm")
    words = ["迈向", "充满", "希望", "的", "新", "世纪", "，", "一九九八年", "新年", "讲话"]
    assert example.clauses(words, 8) == [["迈向", "充满", "希望", "的", "新"], ["世纪", "，"],
                                         ["一九九八年", "新年"], ["讲话"]]
    scores = example.seq2seq_scores([["中国", "人"]], [["中", "国人"]])
    assert scores["f1"] == 0.0 and scores["copy_rate"] == 1.0
    scores = example.seq2seq_scores([["中国", "人"]], [["中国", "人"]])
    assert scores["f1"] == scores["exact_match"] == scores["rouge_l"] == 1.0
    results = example.main(["--random-init", "--model-dir", SMALL_BERT_DIR, "--limit", "4",
                            "--epochs", "1", "--eval-limit", "4", "--max-chars", "12",
                            "--results", str(tmp_path / "unilm.json")])
    assert results["clauses"]["test"] == 4
    assert 0.0 <= results["test"]["f1"] <= 1.0 and 0.0 <= results["test"]["rouge_l"] <= 1.0


# -- jit_compile=True on every backend (torch.compile on PyTorch) -------------------
@pytest.mark.parametrize("key", ["gpt2", "roformer_unilm", "t5"])
def test_compiled_steps_equal_eager_steps(key):
    """``jit_compile=True`` (XLA on TensorFlow, ``jax.jit``, ``torch.compile``
    on PyTorch, whose steps then read whole caches in segments) gives the
    tokens of eager steps (``jit_compile=False``: ``tf.function`` graphs
    without XLA on TensorFlow, as users get them): greedy, beam search and
    (not on TensorFlow, whose stateless uniforms use another algorithm under
    XLA than eagerly) seeded sampling of a ragged batch, decoded in two cache
    segments. (On PyTorch the CI reruns GPT-2's sampling only: every method and
    segment is a TorchInductor compile of ~10 s on the 2-core machine, and
    greedy and beam search compiled are
    test_torch_compiled_decoding_packed_weights_and_recompiles'.)"""
    transformer, kind = family(key)
    batch = prompts((6, 3, 8), low=8, seed=1)
    if kind == "unilm":
        batch = [[2] + p + [3] for p in batch]
    options = dict(end_id=7, maxlen=10)
    compiled = CachedDecoder(transformer, jit_compile=True, cache_segments=2, **options)
    eager = CachedDecoder(transformer, jit_compile=False, cache_segments=1, **options)
    methods = [("greedy", {}), ("beam", dict(num_beams=3))]
    if keras.backend.backend() == "torch":
        methods = []
    if keras.backend.backend() != "tensorflow":  # TF's seeded uniforms: Philox eager,
        methods.append(("sample", dict(n=2, topk=5, seed=3)))  # ThreeFry under XLA
    for method, kwargs in methods:
        ours, reference = (d.generate(batch, method=method, **kwargs) for d in (compiled, eager))
        assert len({str(r) for r in reference}) > 1, reference
        for a, b in zip(ours, reference):
            a, b = (np.asarray([np.asarray(x).tolist() for x in r], dtype=object)
                    if method == "sample" else r for r in (a, b))
            assert a.tolist() == b.tolist(), (method, a, b)
    with pytest.raises(ValueError, match="jit_compile"):
        CachedDecoder(transformer, jit_compile="xla")


def _wide_gpt2():
    """A one-layer GPT-2 wide enough (384 x 384 kernels) for the oneDNN path
    of PyTorch's cached steps (``direct.ONEDNN_MIN_WEIGHTS``)."""
    keras.utils.set_random_seed(5)
    transformer = build_transformer_model(
        None, None, model="gpt2", vocab_size=400, hidden_size=384, num_hidden_layers=1,
        num_attention_heads=6, intermediate_size=768, max_position=64, return_keras_model=False)
    return randomize(transformer)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.compile: PyTorch only")
def test_torch_compiled_decoding_packed_weights_and_recompiles():
    """PyTorch, ``jit_compile=True``: with and without ``packed_weights`` the
    compiled steps (oneDNN through ``bert4keras::onednn_linear``, blocked
    kernel copies) give the eager tokens; after :meth:`warm_up` a
    ``generate`` of that shape compiles nothing, also where the caches grow
    between segments (the packed decoder decodes in two: the grown state's
    tensors once matched another compiled version than the later steps', so
    each grown segment compiled again in the first ``generate``); weights
    changed in place between two runs are read by the next one (the eager
    prompt pass refreshes the blocked copies the compiled steps use)."""
    from torch._dynamo.utils import counters

    from bert4keras.layers import direct

    transformer = _wide_gpt2()
    batch = prompts((5, 9), low=8, seed=2)
    batch = [[t % 400 for t in p] for p in batch]
    options = dict(end_id=None, maxlen=12)
    eager = CachedDecoder(transformer, jit_compile=False, **options)
    packed = CachedDecoder(transformer, jit_compile=True, packed_weights=True,
                           cache_segments=2, **options)
    plain = CachedDecoder(transformer, jit_compile=True, **options)
    assert direct.ONEDNN_MIN_WEIGHTS <= 384 * 384
    for method, kwargs in (("greedy", {}), ("beam", dict(num_beams=2))):
        packed.warm_up(batch, method=method, **kwargs)
        graphs = counters["stats"]["unique_graphs"]
        reference = eager.generate(batch, method=method, **kwargs)
        for decoder in (packed, plain):
            ours = decoder.generate(batch, method=method, **kwargs)
            assert [a.tolist() for a in ours] == [b.tolist() for b in reference], method
        # the packed decoder was warmed up: only the plain one compiled here
        assert counters["stats"]["unique_graphs"] - graphs == 1, method
        again = counters["stats"]["unique_graphs"]
        packed.generate(batch, method=method, **kwargs)
        assert counters["stats"]["unique_graphs"] == again
    assert packed._packed, "the blocked copies were not made"
    # new weights, assigned as load_weights or an optimizer would: the next run reads them
    before = packed.generate(batch)
    rng = np.random.RandomState(9)
    for weight in transformer.model.weights:  # the kernels and the (tied) token table
        shape = tuple(weight.shape)
        if len(shape) == 2 and shape[1] == 384 or "Embedding-Token" in weight.path:
            weight.assign(rng.randn(*shape).astype("float32") / np.sqrt(shape[0] / 4))
    after = packed.generate(batch)
    fresh = CachedDecoder(transformer, jit_compile=False, **options).generate(batch)
    assert [a.tolist() for a in after] == [b.tolist() for b in fresh]
    assert [a.tolist() for a in after] != [b.tolist() for b in before]
