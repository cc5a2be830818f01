"""The cached path's shortcuts past Keras' dispatch (bert4keras.layers.direct,
``Embedding.call_cached``) give the values of the plain Keras calls.

On TensorFlow (the suite's backend) the shortcuts reduce to ``layer.call`` and
``keras.ops``; the torch kernels they call on PyTorch are checked by rerunning
this file in tests/test_backends.py's ``KERAS_BACKEND=torch`` process (with the
cached-vs-uncached decoding tests of tests/test_generation.py).
"""


import contextlib

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras.generation.step import DecodingStep
from bert4keras.layers import Embedding, LayerNormalization
from bert4keras.layers import direct
from bert4keras.layers.direct import _torch_dense, cached_ops, direct_call, onednn_linear

TORCH = keras.backend.backend() == "torch"
# oneDNN sums in another order than torch's matmul: for these 8-long dot
# products of terms up to ~1 in size, float32 rounding can differ by
# ~8 * 2**-24 * sum |x_i w_i| ~ 1.5e-6 (a run-to-run choice of kernel once
# gave 1.02e-6 against an older atol of 1e-6).
ONEDNN_ATOL = 5e-6


def numpy(x):
    return ops.convert_to_numpy(x)


def tensor(*shape, seed=0, dtype="float32"):
    return ops.convert_to_tensor(np.random.RandomState(seed).randn(*shape).astype(dtype))


def decoding_mode():
    """What a cached decoding run on torch runs under (``torch.inference_mode``:
    no gradients, so :func:`onednn_linear` applies); nothing elsewhere."""
    if TORCH:
        import torch

        return torch.inference_mode()
    return contextlib.nullcontext()


def count_onednn_calls(monkeypatch, min_weights=1):
    """A list that grows by one per oneDNN call of the cached path (torch);
    kernels of ``min_weights`` weights qualify (the tests' layers are small)."""
    calls = []
    monkeypatch.setattr(direct, "ONEDNN_MIN_WEIGHTS", min_weights)
    if TORCH:
        op = direct._onednn_op()
        if op is not None:
            # records each call's post-op ('none', 'gelu', 'relu')
            monkeypatch.setattr(direct, "_ONEDNN_OP", [lambda *a: calls.append(a[3]) or op(*a)])
    return calls


def onednn_available():
    return TORCH and direct._onednn_op() is not None


@pytest.mark.parametrize("shape, bias, activation", [((5, 8), True, None),
                                                     ((2, 3, 8), True, "gelu"),
                                                     ((5, 8), False, "relu")])
def test_direct_dense_equals_the_layer(shape, bias, activation, monkeypatch):
    dense = keras.layers.Dense(6, use_bias=bias, activation=activation)
    x = tensor(*shape)
    expected = numpy(dense(x))
    if TORCH:  # the torch kernel runs, not Dense.call
        monkeypatch.setattr(keras.layers.Dense, "call", lambda *a, **k: 1 / 0)
    np.testing.assert_allclose(numpy(direct_call(dense, x)), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape, bias, min_weights", [((1, 8), True, 1), ((2, 8), True, 1),
                                                      ((3, 1, 8), False, 1),
                                                      ((2, 5, 8), True, 1),
                                                      ((2, 5, 8), True, 49)])
def test_direct_dense_in_a_decoding_run_equals_the_layer(shape, bias, min_weights,
                                                         monkeypatch):
    """Without gradients (a decoding run), on torch a Dense over
    ``ONEDNN_DENSE_ROWS`` or more rows and at least ``ONEDNN_MIN_WEIGHTS``
    weights is one oneDNN call reading the kernel's transposed view in place;
    a smaller kernel (here 8 x 6 = 48), or fewer rows where that constant is
    raised, stays ``torch.addmm``."""
    dense = keras.layers.Dense(6, use_bias=bias, activation="gelu")
    x = tensor(*shape)
    expected = numpy(dense(x))
    calls = count_onednn_calls(monkeypatch, min_weights)
    with decoding_mode():
        got = numpy(direct_call(dense, x))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=ONEDNN_ATOL)
    rows = int(np.prod(shape[:-1]))
    assert len(calls) == (1 if onednn_available() and rows >= direct.ONEDNN_DENSE_ROWS
                          and min_weights <= 48 else 0)


def test_direct_dense_below_the_row_threshold_stays_addmm(monkeypatch):
    """With ``ONEDNN_DENSE_ROWS`` raised to 2 (the choice on the Zen 4
    machine) a one-row call is torch's own product, a two-row call oneDNN's;
    both equal the layer."""
    monkeypatch.setattr(direct, "ONEDNN_DENSE_ROWS", 2)
    dense = keras.layers.Dense(6, activation="gelu")
    for shape, onednn in (((1, 8), 0), ((2, 8), 1)):
        x = tensor(*shape)
        expected = numpy(dense(x))
        calls = count_onednn_calls(monkeypatch, 1)
        with decoding_mode():
            got = numpy(direct_call(dense, x))
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=ONEDNN_ATOL)
        assert len(calls) == (onednn if onednn_available() else 0)


def test_onednn_linear_applies_only_without_gradients_in_float32(monkeypatch):
    if not TORCH:
        pytest.skip("a torch kernel (run in tests/test_backends.py's torch process)")
    import torch

    x, weight, bias = tensor(4, 2, 8), tensor(8, 6, seed=1), tensor(6, seed=2)
    expected = numpy(ops.matmul(x, weight) + bias)
    assert onednn_linear(x, weight.t(), bias) is None  # 48 weights: below the default
    monkeypatch.setattr(direct, "ONEDNN_MIN_WEIGHTS", 48)
    assert onednn_linear(x, weight.t(), bias) is None  # gradients on: no backward for it
    with torch.inference_mode():
        y = onednn_linear(x, weight.t(), bias)
        if y is None:
            pytest.skip("this torch build has no oneDNN linear")
        np.testing.assert_allclose(numpy(y), expected, rtol=1e-6, atol=ONEDNN_ATOL)
        np.testing.assert_allclose(numpy(onednn_linear(x, weight.t().contiguous())),
                                   expected - numpy(bias), rtol=1e-6, atol=ONEDNN_ATOL)
        assert onednn_linear(x.double(), weight.t().double()) is None
        meta = torch.empty(4, 2, 8, device="meta")  # another device (a GPU's): torch's own matmul
        assert onednn_linear(meta, weight.t().to("meta")) is None
        monkeypatch.setattr(direct, "USE_ONEDNN", False)
        assert onednn_linear(x, weight.t(), bias) is None


def test_direct_dense_leaves_lora_to_the_layer():
    dense = keras.layers.Dense(6)
    dense.build((None, 8))
    dense.enable_lora(2)
    dense.lora_kernel_b.assign(np.ones((2, 6), "float32"))  # a LoRA term that changes outputs
    x = tensor(4, 8)
    assert _torch_dense(dense, x) is None  # not the fast path: Dense.call adds the LoRA term
    np.testing.assert_allclose(numpy(direct_call(dense, x)), numpy(dense(x)), atol=1e-6)


@pytest.mark.parametrize("center, scale, dtype", [(True, True, "float32"),
                                                  (False, True, "float32"),
                                                  (True, False, "float32"),
                                                  (True, True, "bfloat16")])
def test_direct_layer_norm_equals_the_layer(center, scale, dtype):
    """(bfloat16: Keras normalizes in float32, so the torch kernel is not used.)"""
    norm = LayerNormalization(center=center, scale=scale, epsilon=1e-5, dtype=dtype)
    x = ops.cast(tensor(2, 3, 8), dtype)
    norm.build(x.shape)
    if scale:
        norm.gamma.assign(np.linspace(0.5, 1.5, 8).astype("float32"))
    if center:
        norm.beta.assign(np.linspace(-1, 1, 8).astype("float32"))
    np.testing.assert_allclose(numpy(ops.cast(direct_call(norm, x), "float32")),
                               numpy(ops.cast(norm(x), "float32")), rtol=1e-5, atol=1e-6)


def test_cached_ops_match_keras_ops():
    """Each function of the cached attention path, as ``keras.ops`` computes it."""
    q = tensor(3, 4, 5)
    k = tensor(3, 6, 5, seed=1)
    fops = cached_ops(q)
    assert (fops is not ops) == TORCH
    ids = ops.convert_to_tensor(np.array([[0, 2], [1, 1]], "int32"))
    pairs = [
        (fops.einsum("bnd,bmd->bnm", q, k), ops.einsum("bnd,bmd->bnm", q, k)),
        (fops.transpose(q, (2, 0, 1)), ops.transpose(q, (2, 0, 1))),
        (fops.reshape(q, (12, -1)), ops.reshape(q, (12, -1))),
        (fops.softmax(q, axis=-1), ops.softmax(q, axis=-1)),
        (fops.maximum(q, -0.5), ops.maximum(q, -0.5)),
        (fops.maximum(q, k[:, :4]), ops.maximum(q, k[:, :4])),
        (fops.cast(q, "int32"), ops.cast(q, "int32")),
        (fops.cast(q, q.dtype), q),
        (fops.one_hot(ids, 3), ops.one_hot(ids, 3)),
    ]
    for got, want in pairs:
        assert keras.backend.standardize_dtype(got.dtype) == \
            keras.backend.standardize_dtype(want.dtype)
        np.testing.assert_allclose(numpy(got), numpy(want), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(numpy(fops.cast(3, "int32")), 3)  # a Python scalar


@pytest.mark.parametrize("rows", [1, 4, 8])
@pytest.mark.parametrize("decoding", [False, True])
def test_tied_output_projection_in_a_cached_step(rows, decoding, monkeypatch):
    """``Embedding.call_cached`` in ``'dense'`` mode gives ``call``'s logits.
    On torch in a decoding run (no gradients) it is one oneDNN call on the
    table as stored; otherwise from ``TRANSPOSED_TABLE_ROWS`` rows it
    multiplies by one contiguous copy of ``E^T`` kept in the step's constants
    for the run."""
    from bert4keras.layers.core import TRANSPOSED_TABLE_ROWS

    table = Embedding(50, 8)
    table.build()
    x = tensor(rows, 1, 8)
    expected = numpy(table(x, mode="dense"))
    calls = count_onednn_calls(monkeypatch)
    store = {}
    with decoding_mode() if decoding else contextlib.nullcontext():
        for _ in range(2):  # two passes of one run share the copy
            step = DecodingStep(0, ops.zeros((rows, 1), "int32"), ops.ones((rows, 4), "bool"),
                                4, direct=True, constants=store)
            np.testing.assert_allclose(numpy(table.call_cached(x, step, mode="dense")),
                                       expected, rtol=1e-6, atol=ONEDNN_ATOL)
    onednn = decoding and onednn_available()
    assert len(calls) == (2 if onednn else 0)
    assert len(store) == (1 if TORCH and not onednn and rows >= TRANSPOSED_TABLE_ROWS else 0)
    ids = ops.convert_to_tensor(np.array([[3], [7]], "int32"))
    np.testing.assert_array_equal(numpy(table.call_cached(ids, step)), numpy(table(ids)))


def test_decoder_drops_its_constants_after_a_run(monkeypatch):
    """(Without oneDNN: with it the torch run keeps no transposed table.)"""
    from bert4keras.generation import CachedDecoder
    from bert4keras.models import build_transformer_model

    gpt = build_transformer_model(None, model="gpt2", vocab_size=40, hidden_size=16,
                                  num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=24, max_position=32, with_lm="linear",
                                  return_keras_model=False)
    decoder = CachedDecoder(gpt, end_id=None, maxlen=3, bucket=4)
    monkeypatch.setattr(direct, "USE_ONEDNN", False)
    beams = decoder.generate([[1, 2, 3], [4, 5]], method="beam", num_beams=2)
    assert len(beams) == 2 and decoder._constants == {}
    stream = decoder.stream([[1, 2, 3]] * 4, max_new_tokens=3)
    next(stream)
    if TORCH:  # 4 rows: the transposed table lives while the run does
        assert len(decoder._constants) == 1
    list(stream)
    assert decoder._constants == {}


@pytest.mark.parametrize("beams", [1, 3])
def test_prefix_reads_equal_the_whole_cache(beams):
    """``cache_scores`` / ``cache_values`` (eager torch: only the first
    ``length`` slots of each beam's cache are read) == the products over the
    whole cache (``keras.ops.einsum``), restricted to those slots."""
    if not TORCH:
        pytest.skip("the prefix reads are the torch namespace's "
                    "(run in tests/test_backends.py's torch process)")
    b, cache_len, length, d, m = 4, 9, 5, 6, 2 * beams
    keys = tensor(b, beams * cache_len, d)
    values = tensor(b, beams * cache_len, d, seed=1)
    queries = tensor(b, m, d, seed=2)
    weights = tensor(b, m, beams, length, seed=3)
    fops = cached_ops(keys)
    whole = numpy(ops.einsum("bnd,bmd->bnm", keys, queries)).reshape(b, beams, cache_len, m)
    np.testing.assert_allclose(numpy(fops.cache_scores(keys, queries, beams, length)),
                               whole[:, :, :length], rtol=1e-5, atol=1e-5)
    padded = np.zeros((b, m, beams, cache_len), "float32")
    padded[..., :length] = numpy(weights)
    expected = numpy(ops.einsum("bmn,bnd->bmd", padded.reshape(b, m, -1), values))
    np.testing.assert_allclose(numpy(fops.cache_values(weights, values, beams)), expected,
                               rtol=1e-5, atol=1e-5)


def test_two_stage_beam_candidates_equal_one_top_k():
    """Beam search's candidates (each beam's best, then the best of those) ==
    one top-k over every (beam, token) pair, ties included (index order on
    TensorFlow / JAX; on torch the tied pairs' order is torch's)."""
    from bert4keras.generation.search import _top_candidates

    rng = np.random.RandomState(4)
    total = rng.randint(0, 6, (3, 4, 50)).astype("float32")  # many ties
    total[1, 2:] = -1e9  # dead beams
    for c in (8, 60):  # two stages, and one (c > vocab)
        beam, token, top = (numpy(t) for t in _top_candidates(ops.convert_to_tensor(total), c))
        flat = total.reshape(3, -1)
        order = np.argsort(-flat, axis=1, kind="stable")[:, :c]  # ties: lower index first
        np.testing.assert_array_equal(top, np.take_along_axis(flat, order, axis=1))
        np.testing.assert_array_equal(np.take_along_axis(flat, beam * 50 + token, axis=1), top)
        if not TORCH:
            np.testing.assert_array_equal(beam * 50 + token, order)


def no_gradients():
    """What ``model.predict`` runs under on torch (``torch.no_grad``); nothing elsewhere."""
    if TORCH:
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


@pytest.mark.parametrize("shape, activation, contiguous", [((2, 5, 8), "gelu", True),
                                                           ((5, 8), None, True),
                                                           ((2, 5, 8), "tanh", False),
                                                           ((1, 8), None, True)])
def test_our_dense_equals_keras_dense(shape, activation, contiguous, monkeypatch):
    """``bert4keras.layers.Dense`` == ``keras.layers.Dense`` with the same
    weights, with and without gradients. On torch without gradients a call of
    ``ONEDNN_DENSE_ROWS`` or more rows is one oneDNN call (also on a
    non-contiguous input); fewer rows, or with gradients, is Keras' own call."""
    from bert4keras.layers import Dense

    ours, plain = Dense(6, activation=activation), keras.layers.Dense(6, activation=activation)
    ours.build(shape)
    plain.build(shape)
    plain.set_weights(ours.get_weights())
    x = tensor(*shape)
    if not contiguous:  # a transposed view, as an attention output can be
        x = ops.transpose(tensor(*reversed(shape[1:]), shape[0]), (2, 1, 0))
    expected = numpy(plain(x))
    calls = count_onednn_calls(monkeypatch)
    np.testing.assert_allclose(numpy(ours(x)), expected, rtol=1e-6, atol=ONEDNN_ATOL)
    assert calls == []  # gradients enabled: no oneDNN (it has no backward)
    with no_gradients():
        np.testing.assert_allclose(numpy(ours(x)), expected, rtol=1e-6, atol=ONEDNN_ATOL)
    rows = int(np.prod(shape[:-1]))
    assert len(calls) == (1 if onednn_available() and rows >= direct.ONEDNN_DENSE_ROWS else 0)


def test_our_dense_saves_as_keras_dense(tmp_path):
    """Our ``Dense`` keeps Keras' class name, so a ``.weights.h5`` written by a
    model of ``keras.layers.Dense`` loads into ours and back; a ``.keras`` file
    reloads with our class."""
    from bert4keras.layers import Dense

    def model(layer):
        inputs = keras.Input((8,))
        return keras.Model(inputs, layer(3)(layer(5, activation="relu")(inputs)))

    plain, ours = model(keras.layers.Dense), model(Dense)
    plain.save_weights(tmp_path / "plain.weights.h5")
    ours.load_weights(tmp_path / "plain.weights.h5")
    x = np.random.RandomState(0).randn(4, 8).astype("float32")
    np.testing.assert_allclose(numpy(ours(x)), numpy(plain(x)), rtol=1e-6, atol=1e-6)
    ours.save(tmp_path / "ours.keras")
    again = keras.saving.load_model(tmp_path / "ours.keras")
    assert [type(layer) for layer in again.layers[1:]] == [Dense, Dense]
    np.testing.assert_allclose(numpy(again(x)), numpy(plain(x)), rtol=1e-6, atol=1e-6)


def test_tied_output_projection_without_gradients(monkeypatch):
    """``Embedding(mode='dense')`` (the MLM head's tied projection) without
    gradients is one oneDNN call on the table as stored, on torch."""
    table = Embedding(50, 8)
    table.build()
    x = tensor(2, 3, 8)
    expected = numpy(ops.matmul(x, ops.transpose(table.embeddings)))
    calls = count_onednn_calls(monkeypatch)
    with no_gradients():
        np.testing.assert_allclose(numpy(table(x, mode="dense")), expected, rtol=1e-6,
                                   atol=ONEDNN_ATOL)
    assert len(calls) == (1 if onednn_available() else 0)


def test_model_predict_runs_the_projections_through_onednn(monkeypatch):
    """A BERT with pooler and MLM head: ``model.predict`` (no gradients on
    torch) gives the outputs of the model called with gradients, and on torch
    every projection -- the attention and feed-forward ``Dense`` layers of
    each block, the pooler, the MLM dense and the tied output projection --
    is one oneDNN call."""
    from bert4keras.layers import Dense
    from bert4keras.models import build_transformer_model

    bert = build_transformer_model(None, model="bert", vocab_size=40, hidden_size=16,
                                   num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=24, max_position=32, with_pool=True,
                                   with_mlm=True)
    x = [np.random.RandomState(0).randint(1, 40, (3, 7)), np.zeros((3, 7), "int32")]
    expected = [numpy(y) for y in bert(x)]
    calls = count_onednn_calls(monkeypatch)
    got = bert.predict(x, verbose=0)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    denses = [layer for layer in bert._flatten_layers() if type(layer) is Dense]
    assert len(denses) == 2 * (4 + 2) + 2  # q, k, v, o and two FFN per block; pooler; MLM
    assert len(calls) == (len(denses) + 1 if onednn_available() else 0)


@pytest.mark.parametrize("rows", [1, 4])
def test_packed_weights_follow_the_kernel(rows, monkeypatch):
    """Inside ``packed_weights(store)`` a Dense on torch without gradients
    multiplies by a oneDNN-blocked copy of its kernel kept in ``store`` (at
    one row too), equal to the Keras layer; changing the kernel in place
    (``assign``) makes the copy again, so it never serves stale weights."""
    dense = keras.layers.Dense(6, activation="gelu")
    x = tensor(rows, 8)
    dense.build(x.shape)
    calls = count_onednn_calls(monkeypatch)
    store = {}
    for seed in (0, 1):  # the second round: new weights, assigned in place
        dense.kernel.assign(np.random.RandomState(seed).randn(8, 6).astype("float32"))
        expected = numpy(dense(x))
        with decoding_mode(), direct.packed_weights(store):
            got = numpy(direct_call(dense, x))
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=ONEDNN_ATOL)
            np.testing.assert_allclose(numpy(direct_call(dense, x)), got, atol=0)
        if onednn_available():
            (kernel, version, _), = store.values()
            assert kernel is dense.kernel.value and version == kernel._version
    assert len(calls) == (4 if onednn_available() else 0)
    assert store == {} or onednn_available()
    if onednn_available():  # a value Keras replaced by a new tensor: its copy is replaced
        import torch

        dense._kernel._value = torch.nn.Parameter(torch.ones(8, 6))
        with decoding_mode(), direct.packed_weights(store):
            np.testing.assert_allclose(numpy(direct_call(dense, x)), numpy(dense(x)),
                                       rtol=1e-6, atol=ONEDNN_ATOL)
        (kernel, _, _), = store.values()
        assert kernel is dense._kernel.value


def test_decoder_with_packed_weights_decodes_the_same(monkeypatch):
    """``CachedDecoder(packed_weights=True)``: the same tokens as the default
    decoder, before and after the weights change between two runs; on torch
    the blocked kernels are kept between runs, elsewhere nothing is packed."""
    from bert4keras.generation import CachedDecoder
    from bert4keras.models import build_transformer_model

    monkeypatch.setattr(direct, "ONEDNN_MIN_WEIGHTS", 1)
    gpt = build_transformer_model(None, model="gpt2", vocab_size=40, hidden_size=16,
                                  num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=24, max_position=32, with_lm="linear",
                                  return_keras_model=False)
    plain = CachedDecoder(gpt, end_id=None, maxlen=5, bucket=4)
    packed = CachedDecoder(gpt, end_id=None, maxlen=5, bucket=4, packed_weights=True)
    prompts = [[1, 2, 3], [4, 5]]
    for round_ in range(2):
        if round_:  # training between two runs: every weight changes in place
            for v in gpt.model.trainable_variables:
                v.assign(v.numpy() * 1.5 + 0.01)
        for method in ("greedy", "beam"):
            want = [numpy(t).tolist() for t in plain.generate(prompts, method=method)]
            got = [numpy(t).tolist() for t in packed.generate(prompts, method=method)]
            assert got == want
    # per block: q, k and v joined in one copy (fused_dense), o and the two FFN kernels;
    # and the tied output projection's table
    assert len(packed._packed) == (2 * 4 + 1 if onednn_available() else 0)


def test_direct_add_equals_keras_add():
    """A residual ``keras.layers.Add`` through ``direct_call`` (``torch.add`` on
    torch) equals the Keras call, broadcasting included, for two and three inputs."""
    add = keras.layers.Add()
    for inputs in ([tensor(2, 3, 4), tensor(2, 3, 4, seed=1)],
                   [tensor(2, 3, 4), tensor(1, 3, 4, seed=1), tensor(2, 3, 4, seed=2)]):
        expected = numpy(add(inputs))
        with decoding_mode():
            np.testing.assert_array_equal(numpy(direct_call(add, inputs)), expected)


@pytest.mark.parametrize("rows", [1, 4])
def test_table_product_follows_the_table(rows, monkeypatch):
    """``onednn_table_product`` (a tied output projection): ``x @ E^T`` read
    from the table as stored, or inside ``packed_weights`` from a blocked copy
    kept in the store and made again after an in-place change of ``E``."""
    table = keras.Variable(np.random.RandomState(0).randn(10, 8).astype("float32"))
    x = tensor(rows, 8)
    calls = count_onednn_calls(monkeypatch)
    store = {}
    for seed in (1, 2):
        expected = numpy(x) @ numpy(table).T
        with decoding_mode():
            plain = direct.onednn_table_product(x, table)
            with direct.packed_weights(store):
                packed = direct.onednn_table_product(x, table)
        if not onednn_available():
            assert plain is None and packed is None
            return
        for got in (plain, packed):
            np.testing.assert_allclose(numpy(got), expected, rtol=1e-5, atol=ONEDNN_ATOL)
        (value, version, _), = store.values()
        assert value is table.value and version == value._version
        table.assign(np.random.RandomState(seed).randn(10, 8).astype("float32"))
    assert len(calls) == 4


@pytest.mark.parametrize("rows", [1, 3])
def test_fused_dense_equals_the_layers(rows, monkeypatch):
    """``fused_dense`` inside ``packed_weights``: one oneDNN product whose column
    slices equal each Dense (one without a bias among them); an in-place change
    of any kernel or bias makes the joined copy again; outside
    ``packed_weights`` (or where oneDNN does not apply) it declines (None)."""
    layers = [keras.layers.Dense(6), keras.layers.Dense(6, use_bias=False),
              keras.layers.Dense(4)]
    x = tensor(rows, 8)
    for layer in layers:
        layer.build(x.shape)
    calls = count_onednn_calls(monkeypatch)
    assert direct.fused_dense(layers, x) is None  # no store
    store = {}
    for change in ("kernel", "bias"):
        expected = [numpy(layer(x)) for layer in layers]
        with decoding_mode(), direct.packed_weights(store):
            got = direct.fused_dense(layers, x)
        if not onednn_available():
            assert got is None and store == {}
            return
        for g, e in zip(got, expected):
            np.testing.assert_allclose(numpy(g), e, rtol=1e-6, atol=ONEDNN_ATOL)
        variable = getattr(layers[2], change)
        variable.assign(variable.numpy() * 2.0 + 0.5)  # in place: the next round re-joins
    assert len(calls) == 2 and len(store) == 1
    with decoding_mode(), direct.packed_weights(store):  # the last change is seen too
        got = direct.fused_dense(layers, x)
    np.testing.assert_allclose(numpy(got[2]), numpy(layers[2](x)), rtol=1e-6, atol=ONEDNN_ATOL)
    layers[0].activation = keras.activations.relu
    with decoding_mode(), direct.packed_weights(store):
        assert direct.fused_dense(layers, x) is None


def count_int_mm_calls(monkeypatch):
    """A list that grows by one per ``torch._int_mm`` call of a quantized
    ``Dense`` (torch); stays empty elsewhere."""
    calls = []
    if TORCH and direct._int_mm() is not None:
        op = direct._int_mm()
        monkeypatch.setattr(direct, "_INT_MM", [lambda *a: calls.append(1) or op(*a)])
    return calls


def int_mm_available():
    return TORCH and direct._int_mm() is not None


@pytest.mark.parametrize("shape, bias, activation", [((2, 5, 8), True, "gelu"),
                                                     ((5, 8), False, None),
                                                     ((1, 8), True, "tanh")])
def test_int8_dense_equals_keras_int8_call(shape, bias, activation, monkeypatch):
    """A Dense quantized ``'int8'`` (``layer.quantize``): our ``_int8_call``
    gives Keras' ``Dense._int8_call`` outputs on the same layer; on torch its
    integer product is one ``torch._int_mm`` per call, with or without
    gradients enabled, unless the inputs need a gradient (then Keras' call
    and its custom gradient run, and the gradient flows)."""
    from bert4keras.layers import Dense

    layer = Dense(6, use_bias=bias, activation=activation)
    layer.build(shape)
    if bias:
        layer.bias.assign(np.linspace(-1, 1, 6).astype("float32"))
    layer.quantize("int8")
    x = tensor(*shape) * 3.0
    expected = numpy(keras.layers.Dense._int8_call(layer, x))
    assert np.abs(expected).max() > 0.1
    calls = count_int_mm_calls(monkeypatch)
    # atol: torch's in-place GELU and Keras' formula differ by ~1e-6 in the far negative
    # tail (1 + erf near 0 in float32), seen once in ~10 runs of random weights
    np.testing.assert_allclose(numpy(layer(x)), expected, rtol=1e-6, atol=ONEDNN_ATOL)
    with no_gradients():
        np.testing.assert_allclose(numpy(layer(x)), expected, rtol=1e-6, atol=ONEDNN_ATOL)
    assert len(calls) == (2 if int_mm_available() else 0)
    if TORCH:
        import torch

        x = x.clone().requires_grad_(True)
        y = layer(x)
        # the same GELU tail as above (a 1.01e-6 difference seen once, 2026-12-07)
        np.testing.assert_allclose(numpy(y.detach()), expected, rtol=1e-6, atol=ONEDNN_ATOL)
        y.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert len(calls) == (2 if int_mm_available() else 0)
        with torch.inference_mode():  # the decoding path calls quantized_call directly
            np.testing.assert_allclose(numpy(direct_call(layer, x.detach())), expected,
                                       rtol=1e-6, atol=1e-6)
        assert len(calls) == (3 if int_mm_available() else 0)


def test_int8_model_predict_runs_the_products_through_int_mm(monkeypatch):
    """A BERT quantized with ``quantize_model(model, 'int8')``: ``predict``
    gives the outputs of Keras' own int8 calls (``torch._int_mm`` turned
    off), and on torch every quantized ``Dense`` is one ``torch._int_mm``."""
    from bert4keras.layers.quantization import quantize_model
    from bert4keras.models import build_transformer_model

    bert = build_transformer_model(None, model="bert", vocab_size=40, hidden_size=16,
                                   num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=24, max_position=32, with_pool=True)
    report = quantize_model(bert, "int8")
    x = [np.random.RandomState(0).randint(1, 40, (3, 7)), np.zeros((3, 7), "int32")]
    monkeypatch.setattr(direct, "_INT_MM", [None])
    expected = [numpy(y) for y in bert(x)]
    monkeypatch.setattr(direct, "_INT_MM", [])
    calls = count_int_mm_calls(monkeypatch)
    got = bert.predict(x, verbose=0)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    assert len(report["quantized"]) == 2 * 6 + 1  # q, k, v, o, two FFN per block; pooler
    assert len(calls) == (len(report["quantized"]) if int_mm_available() else 0)


@pytest.mark.parametrize("shape, block", [((6, 8), 1 << 20), ((5, 3, 8), 16), ((7, 8), 3)])
def test_int8_input_quantization_equals_keras_bit_for_bit(shape, block, monkeypatch):
    """The quantized inputs and row scales of a quantized Dense's torch path
    (``direct._quantize_rows``, in blocks of ``QUANTIZE_BLOCK`` elements) are
    those of Keras' ``AbsMaxQuantizer``, bit for bit, on rows with a zero row,
    a row whose maximum is negative and values 1e4 apart; elsewhere the
    path does not apply (``int8_dense`` returns None)."""
    from bert4keras.layers import Dense

    layer = Dense(4)
    layer.build(shape)
    layer.quantize("int8")
    values = np.random.RandomState(0).randn(*shape).astype("float32")
    values[0] = 0.0
    values[1] = -np.abs(values[1]) * 1e4
    x = ops.convert_to_tensor(values)
    if not TORCH:
        assert direct.int8_dense(layer, x) is None
        return
    monkeypatch.setattr(direct, "QUANTIZE_BLOCK", block)
    want, want_scale = layer.inputs_quantizer(x, axis=-1)
    got, got_scale = direct._quantize_rows(layer.inputs_quantizer, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(numpy(got), numpy(want))
    np.testing.assert_array_equal(numpy(got_scale), numpy(want_scale))


@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "relu", "swish", ["gelu", "linear"]])
@pytest.mark.parametrize("int8", [False, True])
def test_feedforward_inference_with_fused_activations(activation, int8, monkeypatch):
    """A ``FeedForward`` (activations outside its ``Dense`` layers) called for
    inference gives the outputs of the plain path (oneDNN and ``_int_mm``
    off; gradients enabled), float32 and int8. On torch without gradients
    its products are oneDNN calls with the GELU / ReLU as their post-op, or
    int8 products with the activation applied in place; other activations
    (swish) are applied after the product."""
    from bert4keras.layers import FeedForward

    keras.utils.set_random_seed(3)
    layer = FeedForward(12, activation=activation)
    x = tensor(2, 5, 8)
    layer(x)
    if int8:
        for dense in layer._input_denses() + [layer.o_dense]:
            dense.quantize("int8")
    monkeypatch.setattr(direct, "USE_ONEDNN", False)
    monkeypatch.setattr(direct, "_INT_MM", [None])
    expected = numpy(layer(x))
    monkeypatch.setattr(direct, "USE_ONEDNN", True)
    monkeypatch.setattr(direct, "_INT_MM", [])
    onednn, int_mm = count_onednn_calls(monkeypatch), count_int_mm_calls(monkeypatch)
    with no_gradients():
        got = numpy(layer(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=ONEDNN_ATOL)
    products = len(layer._input_denses()) + 1
    if int8:
        assert len(int_mm) == (products if int_mm_available() else 0) and onednn == []
    else:
        assert len(onednn) == (products if onednn_available() else 0) and int_mm == []
        if onednn_available():  # the input products' post-ops, then o_dense's
            fused = {"gelu": "gelu", "gelu_new": "gelu", "relu": "relu"}
            names = activation if isinstance(activation, list) else [activation]
            assert onednn == [fused.get(n, "none") if n != "linear" else "none"
                              for n in names] + ["none"]
