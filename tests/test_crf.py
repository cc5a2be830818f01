"""CRF, MEMM and GlobalPointer layers and the Viterbi decoder, checked against
brute-force enumeration and independent NumPy references.

Backend-neutral: run with ``KERAS_BACKEND=jax`` (or torch) as well.
"""

import itertools
import struct

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras.layers import (
    ConditionalRandomField,
    EfficientGlobalPointer,
    GlobalPointer,
    MaximumEntropyMarkovModel,
    global_pointer_crossentropy,
    global_pointer_f1,
)
from bert4keras.snippets import ViterbiDecoder

np.set_printoptions(precision=4, suppress=True)
NEG = np.float32(-1e12)  # what the layers write into masked scores


def np_(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def logsumexp(x, axis=None):
    m = np.max(x, axis=axis, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))).squeeze(axis)


def path_scores(nodes, trans, paths, start=None, end=None):
    """Scores of all ``paths`` (P, n) for one sequence, by direct summation."""
    paths = np.asarray(paths)
    n = paths.shape[1]
    scores = nodes[np.arange(n)[None, :], paths].sum(1)
    if n > 1:
        scores = scores + trans[paths[:, :-1], paths[:, 1:]].sum(1)
    if start is not None:
        scores = scores + start[paths[:, 0]]
    if end is not None:
        scores = scores + end[paths[:, -1]]
    return scores


def all_paths(num_labels, n, labels=None):
    labels = range(num_labels) if labels is None else labels
    return np.array(list(itertools.product(labels, repeat=n)), dtype=int).reshape(-1, n)


# ---------------------------------------------------------------------------
# CRF
# ---------------------------------------------------------------------------

LENGTHS = [5, 3, 1, 4, 2]  # real tokens per row; seq_len 5, right padding


def crf_batch(num_labels=3, seed=0):
    rng = np.random.RandomState(seed)
    emissions = rng.normal(0, 2, (len(LENGTHS), 5, num_labels)).astype("float32")
    token_ids = np.zeros((len(LENGTHS), 5), "int32")
    labels = rng.randint(0, num_labels, (len(LENGTHS), 5)).astype("int32")
    for row, n in enumerate(LENGTHS):
        token_ids[row, :n] = rng.randint(1, 50, n)
        labels[row, n:] = 0
    return emissions, token_ids, labels


def make_crf(num_labels, lr_multiplier=1, seed=0):
    crf = ConditionalRandomField(lr_multiplier=lr_multiplier)
    crf.build((None, None, num_labels))
    trans = np.random.RandomState(seed + 1).normal(0, 1, (num_labels, num_labels))
    crf._trans.assign((trans / lr_multiplier).astype("float32"))
    return crf, trans


@pytest.mark.parametrize("lr_multiplier", [1, 7])
def test_crf_likelihood_equals_brute_force(lr_multiplier):
    k = 3
    emissions, token_ids, labels = crf_batch(k)
    crf, trans = make_crf(k, lr_multiplier)
    np.testing.assert_allclose(np_(crf.trans), trans, rtol=1e-6, atol=1e-6)
    out = crf([ops.convert_to_tensor(emissions), ops.convert_to_tensor(token_ids)])
    out_np = np_(out)
    log_z = np_(crf.log_partition(out))
    score = np_(crf.path_score(ops.one_hot(labels, k), out))
    loss = np_(crf.sparse_loss(labels, out))
    loss_dense = np_(crf.dense_loss(ops.one_hot(labels, k), out))
    for row, n in enumerate(LENGTHS):
        assert np.all(out_np[row, n:] == NEG)
        np.testing.assert_array_equal(out_np[row, :n], emissions[row, :n])
        nodes = emissions[row, :n].astype("float64")
        brute_z = logsumexp(path_scores(nodes, trans, all_paths(k, n)))
        brute_score = path_scores(nodes, trans, labels[row:row + 1, :n])[0]
        np.testing.assert_allclose(log_z[row], brute_z, rtol=1e-5)
        np.testing.assert_allclose(score[row], brute_score, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(loss[row], brute_z - brute_score, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(loss_dense[row], loss[row], rtol=1e-6, atol=1e-6)
        assert loss[row] > 0


def test_crf_mask_argument_and_no_mask():
    k = 4
    emissions, token_ids, labels = crf_batch(k, seed=3)
    crf, trans = make_crf(k, seed=3)
    from_ids = np_(crf([ops.convert_to_tensor(emissions), ops.convert_to_tensor(token_ids)]))
    from_mask = np_(crf(ops.convert_to_tensor(emissions),
                        mask=ops.convert_to_tensor(token_ids > 0)))
    np.testing.assert_array_equal(from_ids, from_mask)
    # without a mask every position is real: the full-length likelihood
    out = crf(ops.convert_to_tensor(emissions))
    log_z = np_(crf.log_partition(out))
    for row in range(len(LENGTHS)):
        nodes = emissions[row].astype("float64")
        np.testing.assert_allclose(log_z[row],
                                   logsumexp(path_scores(nodes, trans, all_paths(k, 5))),
                                   rtol=1e-5)
    # a trailing 1-axis on sparse labels (as Keras may add) is accepted
    np.testing.assert_allclose(np_(crf.sparse_loss(labels[..., None], out)),
                               np_(crf.sparse_loss(labels, out)), rtol=1e-6)


def test_crf_sparse_accuracy_counts_real_tokens_only():
    k = 3
    emissions, token_ids, labels = crf_batch(k, seed=5)
    crf, _ = make_crf(k)
    out = crf([ops.convert_to_tensor(emissions), ops.convert_to_tensor(token_ids)])
    real = token_ids > 0
    expected = (emissions.argmax(-1) == labels)[real].mean()
    np.testing.assert_allclose(float(np_(crf.sparse_accuracy(labels, out))), expected, rtol=1e-6)


def test_crf_loss_trains_towards_gold_paths():
    """A few Adam steps on CRF.sparse_loss raise the gold paths' probability
    (through ``model.fit``, so the loss runs inside each backend's trainer)."""
    k = 3
    emissions, token_ids, labels = crf_batch(k, seed=7)
    x_e = keras.Input((None, k))
    x_t = keras.Input((None,), dtype="int32")
    crf = ConditionalRandomField(lr_multiplier=10)
    model = keras.Model([x_e, x_t], crf([keras.layers.Dense(k)(x_e), x_t]))
    model.compile(keras.optimizers.Adam(0.05), loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
    before = model.evaluate([emissions, token_ids], labels, verbose=0)[0]
    model.fit([emissions, token_ids], labels, epochs=30, verbose=0)
    after = model.evaluate([emissions, token_ids], labels, verbose=0)[0]
    assert after < 0.5 * before, (before, after)


def test_crf_trains_on_batches_of_changing_shape():
    """The second distinct batch shape makes TensorFlow retrace with unknown
    dimensions (``reduce_retracing``); the forward scan must cope."""
    k = 3
    x_e = keras.Input((None, k))
    x_t = keras.Input((None,), dtype="int32")
    crf = ConditionalRandomField()
    model = keras.Model([x_e, x_t], crf([x_e, x_t]))
    model.compile("sgd", loss=crf.sparse_loss)
    rng = np.random.RandomState(0)
    for batch, seq_len in [(4, 6), (3, 2), (5, 1), (2, 9)]:
        emissions = rng.normal(0, 1, (batch, seq_len, k)).astype("float32")
        ids = np.ones((batch, seq_len), "int32")
        loss = model.train_on_batch([emissions, ids], rng.randint(0, k, (batch, seq_len)))
        assert np.isfinite(loss)


def _one_step_update(optimizer, multiplier):
    k = 3
    emissions, token_ids, labels = crf_batch(k, seed=11)
    x_e = keras.Input((None, k))
    x_t = keras.Input((None,), dtype="int32")
    crf = ConditionalRandomField(lr_multiplier=multiplier)
    model = keras.Model([x_e, x_t], crf([x_e, x_t]))
    trans0 = np.random.RandomState(2).normal(0, 1, (k, k))
    crf._trans.assign((trans0 / multiplier).astype("float32"))
    model.compile(optimizer, loss=crf.sparse_loss)
    model.train_on_batch([emissions, token_ids], labels)
    return np_(crf.trans) - trans0


@pytest.mark.parametrize("multiplier", [10.0, 100.0])
def test_lr_multiplier_scales_the_update_of_trans(multiplier):
    # the emissions are the inputs here, so trans is the only trainable weight
    # (steps large enough that float32 rounding of trans itself does not matter)
    base = _one_step_update(keras.optimizers.SGD(0.1), 1.0)
    scaled = _one_step_update(keras.optimizers.SGD(0.1), multiplier)
    assert np.abs(base).max() > 1e-3
    # plain SGD: the variable's gradient is m * g and its step is m * the
    # variable's, so trans moves m**2 times as far
    expected = multiplier ** 2 * base
    np.testing.assert_allclose(scaled, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    # Adam's first step is ~lr * sign(gradient): trans moves m times as far
    base = _one_step_update(keras.optimizers.Adam(1e-3), 1.0)
    scaled = _one_step_update(keras.optimizers.Adam(1e-3), multiplier)
    np.testing.assert_allclose(np.abs(base), 1e-3, rtol=1e-3)
    np.testing.assert_allclose(scaled, multiplier * base, rtol=1e-3)


# ---------------------------------------------------------------------------
# Viterbi
# ---------------------------------------------------------------------------


def brute_best(nodes, trans, start=None, end=None, labels=None):
    paths = all_paths(trans.shape[0], len(nodes), labels)
    scores = path_scores(nodes, trans, paths, start, end)
    return paths[scores.argmax()], scores.max()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_viterbi_equals_brute_force(n):
    rng = np.random.RandomState(n)
    k = 4
    for _ in range(5):
        trans = rng.normal(0, 2, (k, k))
        nodes = rng.normal(0, 2, (n, k))
        path = ViterbiDecoder(trans).decode(nodes)
        best, best_score = brute_best(nodes, trans)
        np.testing.assert_allclose(path_scores(nodes, trans, [path])[0], best_score)
        np.testing.assert_array_equal(path, best)
        # restricted first/last labels: brute force with -inf at the banned ends
        starts, ends = [0, 2], [1, 2]
        ban_start = np.where(np.isin(np.arange(k), starts), 0.0, -np.inf)
        ban_end = np.where(np.isin(np.arange(k), ends), 0.0, -np.inf)
        path = ViterbiDecoder(trans, starts=starts, ends=ends).decode(nodes)
        best, _ = brute_best(nodes, trans, ban_start, ban_end)
        np.testing.assert_array_equal(path, best)
        assert path[0] in starts and path[-1] in ends
        # start/end scores
        start, end = rng.normal(0, 3, k), rng.normal(0, 3, k)
        path = ViterbiDecoder(trans, start_scores=start, end_scores=end).decode(nodes)
        np.testing.assert_array_equal(path, brute_best(nodes, trans, start, end)[0])


def test_viterbi_input_errors():
    decoder = ViterbiDecoder(np.zeros((3, 3)))
    assert decoder.decode(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="nodes must have shape"):
        decoder.decode(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="square"):
        ViterbiDecoder(np.zeros((3, 2)))


def _read_varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


@pytest.fixture(scope="module")
def jieba_crf():
    """(start, end, trans, tags) of jieba's trained LAC CRF (Paddle LoDTensor)."""
    from bert4keras.datasets import fetch

    raw = open(fetch("jieba", "0.42.1", "jieba/lac_small/model_baseline/crfw"), "rb").read()
    with open(fetch("jieba", "0.42.1", "jieba/lac_small/tag.dic"), encoding="utf-8") as f:
        tags = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    assert [int(i) for i, _ in tags] == list(range(57))
    tags = [t for _, t in tags]
    # LoDTensor: u32 version, u64 LoD level count, u32 tensor version, i32 size
    # of a TensorDesc protobuf (field 1 = data type, field 2 = dims), data
    version, lod_levels, tensor_version, desc_size = struct.unpack("<IQIi", raw[:20])
    assert (version, lod_levels, tensor_version, desc_size) == (0, 0, 0, 6)
    desc, pos, dims, dtype = raw[20:26], 0, [], None
    while pos < len(desc):
        key, pos = _read_varint(desc, pos)
        value, pos = _read_varint(desc, pos)
        if key >> 3 == 1:
            dtype = value
        elif key >> 3 == 2:
            dims.append(value)
    assert dtype == 5 and dims == [59, 57]  # FP32, (num_tags + 2, num_tags)
    weights = np.frombuffer(raw[26:], dtype="<f4").reshape(dims).astype("float64")
    assert len(raw) == 26 + weights.size * 4
    return weights[0], weights[1], weights[2:], tags


def test_jieba_crf_layout(jieba_crf):
    """Row 0 scores the first tag, row 1 the last, then trans[from, to]: the
    learned values make IOB sense only in that orientation."""
    start, end, trans, tags = jieba_crf
    inside = [i for i, t in enumerate(tags) if t.endswith("-I")]
    begin = [i for i, t in enumerate(tags) if t.endswith("-B")]
    assert start[inside].max() < -20 < start[begin].min()
    same, other = [], []
    for i, a in enumerate(tags):
        for j in inside:
            kind = tags[j][:-2]
            (same if a in (kind + "-B", kind + "-I") else other).append(trans[i, j])
    assert min(same) > max(other)  # X-I only follows X-B or X-I
    assert np.mean(other) < -30 < 0 < np.mean(same)


def test_viterbi_on_jieba_crf_equals_brute_force(jieba_crf):
    start, end, trans, tags = jieba_crf
    rng = np.random.RandomState(0)
    decoder = ViterbiDecoder(trans, start_scores=start, end_scores=end)
    for n in (1, 2, 3):  # all 57**n paths
        for _ in range(3):
            nodes = rng.normal(0, 5, (n, 57))
            best, score = brute_best(nodes, trans, start, end)
            path = decoder.decode(nodes)
            np.testing.assert_allclose(path_scores(nodes, trans, [path], start, end)[0], score)
            np.testing.assert_array_equal(path, best)
    for n in (4, 5):  # 11 random labels of the real matrix: 11**n paths
        for _ in range(4):
            labels = np.sort(rng.choice(57, 11, replace=False))
            sub = np.ix_(labels, labels)
            nodes = rng.normal(0, 5, (n, 11))
            sub_decoder = ViterbiDecoder(trans[sub], start_scores=start[labels],
                                         end_scores=end[labels])
            best, _ = brute_best(nodes, trans[sub], start[labels], end[labels])
            np.testing.assert_array_equal(sub_decoder.decode(nodes), best)
    # with uninformative emissions the decoded paths are well-formed IOB
    for _ in range(20):
        path = [tags[i] for i in decoder.decode(rng.normal(0, 1, (8, 57)))]
        for prev, cur in zip(["O"] + path, path):
            if cur.endswith("-I"):
                assert prev[:-2] == cur[:-2], path


# ---------------------------------------------------------------------------
# MEMM
# ---------------------------------------------------------------------------


def memm_reference(emissions, labels, lengths, trans):
    """Per sequence: mean over its tokens of the forward and backward
    cross-entropies, logits_t = (e_t + trans[y_{t-1}]) / 2, logits_0 = e_0."""
    def one_way(e, y, t):
        total = 0.0
        for i in range(len(y)):
            logits = e[i] if i == 0 else (e[i] + t[y[i - 1]]) / 2
            total -= logits[y[i]] - logsumexp(logits)
        return total / len(y)

    out = []
    for e, y, n in zip(emissions.astype("float64"), labels, lengths):
        e, y = e[:n], y[:n]
        out.append((one_way(e, y, trans) + one_way(e[::-1], y[::-1], trans.T)) / 2)
    return np.array(out)


@pytest.mark.parametrize("hidden_dim", [None, 2])
def test_memm_loss_matches_numpy(hidden_dim):
    k = 4
    emissions, token_ids, labels = crf_batch(k, seed=13)
    memm = MaximumEntropyMarkovModel(lr_multiplier=3, hidden_dim=hidden_dim)
    out = memm([ops.convert_to_tensor(emissions), ops.convert_to_tensor(token_ids)])
    trans = np_(memm.trans)
    if hidden_dim is None:
        np.testing.assert_allclose(trans, 3 * np_(memm._trans), rtol=1e-6)
    else:
        assert [w.path.split("/")[-1] for w in memm.weights] == ["l_trans", "r_trans"]
        np.testing.assert_allclose(trans, 9 * np_(memm._l_trans) @ np_(memm._r_trans).T,
                                   rtol=1e-5, atol=1e-6)
    expected = memm_reference(emissions, labels, LENGTHS, trans)
    np.testing.assert_allclose(np_(memm.sparse_loss(labels, out)), expected, rtol=1e-5)
    np.testing.assert_allclose(np_(memm.dense_loss(ops.one_hot(labels, k), out)), expected,
                               rtol=1e-5)


def test_memm_labels_on_padding_are_ignored():
    # the named errors for labels at real positions: tests/test_input_validation.py
    memm = MaximumEntropyMarkovModel()
    emissions = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    scores = memm([emissions, np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])])
    labels = np.array([[0, 1, 2, 3, 0], [0, 1, 2, 0, 0]])
    padded = labels.copy()
    padded[1, 3:] = [-1, 7]  # row 1 has 3 real tokens
    expected = memm_reference(emissions, labels, [5, 3], np_(memm.trans))
    np.testing.assert_allclose(np_(memm.sparse_loss(padded, scores)), expected, rtol=1e-5)
    np.testing.assert_allclose(np_(memm.sparse_loss(labels, scores)), expected, rtol=1e-5)


def test_memm_bad_labels_give_nan_when_compiled():
    inputs = keras.Input((None, 4))
    memm = MaximumEntropyMarkovModel()
    model = keras.Model(inputs, memm(inputs))
    model.compile(loss=memm.sparse_loss, jit_compile=True)  # traced: cannot raise
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    good = np.zeros((2, 5), "int32")
    assert np.isfinite(model.evaluate(x, good, verbose=0))
    if keras.backend.backend() == "torch":  # Keras runs torch eagerly: the named error
        with pytest.raises(ValueError, match="label outside"):
            model.evaluate(x, good + 4, verbose=0)
    else:
        assert np.isnan(model.evaluate(x, good + 4, verbose=0))


# ---------------------------------------------------------------------------
# GlobalPointer
# ---------------------------------------------------------------------------


def rope_reference(x):
    """Rotate (x[2i], x[2i+1]) at position p by p * 10000^(-2i/d); x (b, n, h, d)."""
    n, d = x.shape[1], x.shape[-1]
    angle = np.arange(n)[:, None] * 10000.0 ** (-2 * np.arange(d // 2) / d)  # (n, d/2)
    cos, sin = np.cos(angle)[None, :, None], np.sin(angle)[None, :, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return out


def span_keep(token_ids, heads):
    real = token_ids > 0
    n = token_ids.shape[1]
    keep = real[:, None, :, None] & real[:, None, None, :] & np.triu(np.ones((n, n), bool))
    return np.broadcast_to(keep, (len(token_ids), heads, n, n))


def gp_inputs(seed=0):
    rng = np.random.RandomState(seed)
    hidden = rng.normal(0, 1, (3, 6, 8)).astype("float32")
    token_ids = np.array([[5, 6, 7, 8, 9, 4], [5, 6, 7, 0, 0, 0], [3, 4, 0, 0, 0, 0]], "int32")
    return hidden, token_ids


def test_global_pointer_matches_numpy():
    hidden, token_ids = gp_inputs()
    heads, size = 3, 4
    layer = GlobalPointer(heads, size)
    out = np_(layer([ops.convert_to_tensor(hidden), ops.convert_to_tensor(token_ids)]))
    assert out.shape == (3, heads, 6, 6)
    kernel, bias = (np_(w) for w in layer.dense.weights)
    proj = (hidden.astype("float64") @ kernel + bias).reshape(3, 6, heads, 2 * size)
    q, k = rope_reference(proj[..., :size]), rope_reference(proj[..., size:])
    expected = np.einsum("bmhd,bnhd->bhmn", q, k) / np.sqrt(size)
    keep = span_keep(token_ids, heads)
    np.testing.assert_allclose(out[keep], expected[keep], rtol=1e-4, atol=1e-5)
    assert np.all(out[~keep] == NEG)
    # no RoPE, no lower-triangle mask, no padding mask
    layer = GlobalPointer(heads, size, RoPE=False, tril_mask=False)
    out = np_(layer(ops.convert_to_tensor(hidden)))
    kernel, bias = (np_(w) for w in layer.dense.weights)
    proj = (hidden.astype("float64") @ kernel + bias).reshape(3, 6, heads, 2 * size)
    expected = np.einsum("bmhd,bnhd->bhmn", proj[..., :size], proj[..., size:]) / 2
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def egp_reference_0115(hidden, p_kernel, p_bias, q_kernel, q_bias, heads, size):
    """bert4keras 0.11.5's EfficientGlobalPointer, written out in NumPy:
    ``p = x W_p + b_p``; ``q = p[0::2]``, ``k = p[1::2]`` rotated by RoPE;
    ``c = (p W_q + b_q) / 2``; ``s_h(i, j) = q_i.k_j / sqrt(size) + c_i[2h+1]
    + c_j[2h]`` (odd outputs: start bias, even outputs: end bias)."""
    p = hidden.astype("float64") @ p_kernel + p_bias
    q = rope_reference(p[:, :, None, 0::2])[:, :, 0]
    k = rope_reference(p[:, :, None, 1::2])[:, :, 0]
    c = (p @ q_kernel + q_bias) / 2  # (batch, n, 2 * heads)
    batch, n = hidden.shape[:2]
    out = np.empty((batch, heads, n, n))
    for h in range(heads):
        for i in range(n):
            for j in range(n):
                out[:, h, i, j] = (np.sum(q[:, i] * k[:, j], axis=-1) / np.sqrt(size)
                                   + c[:, i, 2 * h + 1] + c[:, j, 2 * h])
    return out


def test_efficient_global_pointer_matches_numpy():
    hidden, token_ids = gp_inputs(1)
    heads, size = 5, 6
    layer = EfficientGlobalPointer(heads, size)
    out = np_(layer(ops.convert_to_tensor(hidden), mask=ops.convert_to_tensor(token_ids > 0)))
    assert out.shape == (3, heads, 6, 6)
    assert [w.path.split("/")[-2:] for w in layer.weights] == [
        ["p_dense", "kernel"], ["p_dense", "bias"], ["q_dense", "kernel"], ["q_dense", "bias"]]
    weights = [np_(w) for w in layer.weights]
    expected = egp_reference_0115(hidden, *weights, heads, size)
    keep = span_keep(token_ids, heads)
    np.testing.assert_allclose(out[keep], expected[keep], rtol=1e-4, atol=1e-5)
    assert np.all(out[~keep] == NEG)


def test_efficient_global_pointer_reads_weights_laid_out_as_0115():
    """Weights in bert4keras 0.11.5's layout (as an old model stores them)
    give 0.11.5's scores: q_dense output 2h+1 is head h's start bias, output
    2h its end bias, both halved."""
    hidden, token_ids = gp_inputs(3)
    heads, size = 3, 4
    rng = np.random.RandomState(7)
    old = [rng.normal(0, 0.5, (8, 2 * size)), rng.normal(0, 0.5, (2 * size,)),
           rng.normal(0, 0.5, (2 * size, 2 * heads)), rng.normal(0, 0.5, (2 * heads,))]
    layer = EfficientGlobalPointer(heads, size, name="efficient_global_pointer")
    layer.build((None, None, 8))
    layer.set_weights([w.astype("float32") for w in old])
    inputs = [ops.convert_to_tensor(hidden), ops.convert_to_tensor(token_ids)]
    out = np_(layer(inputs))
    expected = egp_reference_0115(hidden, *old, heads, size)
    keep = span_keep(token_ids, heads)
    np.testing.assert_allclose(out[keep], expected[keep], rtol=1e-4, atol=1e-5)
    # the layout, one output of q_dense at a time (all other outputs zero)
    layer = EfficientGlobalPointer(heads, size, RoPE=False, tril_mask=False)
    layer.build((None, None, 8))
    zeros = [np.zeros((2 * size, 2 * heads)), np.zeros(2 * heads)]
    layer.set_weights([w.astype("float32") for w in old[:2] + zeros])
    plain = np_(layer(ops.convert_to_tensor(hidden)))
    p = hidden.astype("float64") @ old[0] + old[1]
    for output, head, is_start in [(3, 1, True), (4, 2, False), (0, 0, False), (5, 2, True)]:
        kernel = np.zeros((2 * size, 2 * heads))
        kernel[:, output] = old[2][:, output]
        layer.set_weights([w.astype("float32") for w in old[:2] + [kernel, zeros[1]]])
        shift = np_(layer(ops.convert_to_tensor(hidden))) - plain
        c = p @ old[2][:, output] / 2  # (batch, n), halved
        expected_shift = np.zeros_like(shift)
        # a start bias moves row i of its head, an end bias column j
        expected_shift[:, head] = c[:, :, None] if is_start else c[:, None, :]
        np.testing.assert_allclose(shift, expected_shift, atol=1e-5,
                                   err_msg="q_dense output %d" % output)


def test_global_pointer_loss_and_f1_match_numpy():
    hidden, token_ids = gp_inputs(2)
    heads = 2
    scores = np_(GlobalPointer(heads, 4)([ops.convert_to_tensor(hidden),
                                          ops.convert_to_tensor(token_ids)]))
    y = np.zeros_like(scores)
    y[0, 0, 1, 3] = y[0, 1, 0, 0] = y[0, 1, 2, 5] = y[1, 0, 1, 2] = 1  # row 2 has none
    loss = np_(global_pointer_crossentropy(ops.convert_to_tensor(y),
                                           ops.convert_to_tensor(scores.astype("float32"))))
    expected = []
    for b in range(3):
        per_head = []
        for h in range(heads):
            s, t = scores[b, h].ravel(), y[b, h].ravel().astype(bool)
            neg = np.concatenate([s[~t], [0.0]])  # masked spans at -1e12 vanish
            pos = np.concatenate([-s[t], [0.0]])
            per_head.append(logsumexp(neg) + logsumexp(pos))
        expected.append(np.mean(per_head))
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)
    pred = scores > 0
    f1 = 2 * (y * pred).sum() / (y.sum() + pred.sum())
    np.testing.assert_allclose(float(np_(global_pointer_f1(y, scores.astype("float32")))), f1,
                               rtol=1e-6)
    assert float(np_(global_pointer_f1(y, np.where(y > 0, 5.0, -5.0)))) == pytest.approx(1.0)


def test_global_pointer_errors():
    with pytest.raises(ValueError, match="even head_size"):
        GlobalPointer(2, 5)
    with pytest.raises(ValueError, match="token_ids"):
        ConditionalRandomField()([np.zeros((1, 2, 3))] * 3)


# ---------------------------------------------------------------------------
# Serialization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["crf", "memm", "gp", "egp"])
def test_keras_file_round_trip(head, tmp_path):
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(30, 8)(ids)
    if head == "crf":
        layer = ConditionalRandomField(lr_multiplier=50, name="CRF")
        out = layer([keras.layers.Dense(5)(x), ids])
    elif head == "memm":
        layer = MaximumEntropyMarkovModel(lr_multiplier=5, hidden_dim=3, name="MEMM")
        out = layer([keras.layers.Dense(5)(x), ids])
    elif head == "gp":
        layer = GlobalPointer(3, 4, name="GP")
        out = layer([x, ids])
    else:
        layer = EfficientGlobalPointer(3, 4, RoPE=False, name="EGP")
        out = layer([x, ids])
    model = keras.Model(ids, out)
    if head in ("crf", "memm"):
        model.compile("adam", loss=layer.sparse_loss)
    else:
        model.compile("adam", loss=global_pointer_crossentropy, metrics=[global_pointer_f1])
    data = np.array([[3, 4, 5, 6], [7, 8, 0, 0]], "int32")
    expected = model.predict(data, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(reloaded.predict(data, verbose=0), expected, rtol=1e-6, atol=1e-6)
    again = reloaded.get_layer(layer.name)
    assert type(again) is type(layer) and again.get_config() == layer.get_config()
    if head in ("crf", "memm"):
        np.testing.assert_allclose(np_(again.trans), np_(layer.trans), rtol=1e-6)
