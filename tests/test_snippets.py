"""Tests for bert4keras.snippets."""

import multiprocessing
import os
import re
import signal
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert4keras.snippets import (
    DataGenerator,
    parallel_apply,
    parallel_apply_generator,
    sequence_padding,
    softmax,
    text_segmentate,
    truncate_sequences,
)
from bert4keras.snippets.parallel import WorkerDiedError

# ---------------------------------------------------------------- padding


def test_padding_post_and_pre():
    x = [[1, 2, 3], [4], []]
    np.testing.assert_array_equal(
        sequence_padding(x), [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    )
    np.testing.assert_array_equal(
        sequence_padding(x, mode="pre", value=9), [[1, 2, 3], [9, 9, 4], [9, 9, 9]]
    )
    assert sequence_padding(x).dtype == np.int64


def test_padding_truncation():
    x = [[1, 2, 3, 4], [5, 6]]
    np.testing.assert_array_equal(sequence_padding(x, length=3), [[1, 2, 3], [5, 6, 0]])
    np.testing.assert_array_equal(
        sequence_padding(x, length=3, mode="pre"), [[1, 2, 3], [0, 5, 6]]
    )
    np.testing.assert_array_equal(
        sequence_padding(x, length=3, truncating="pre"), [[2, 3, 4], [5, 6, 0]]
    )
    out = sequence_padding(x, length=3, dtype="int32")
    assert out.dtype == np.int32


def test_padding_feature_dims_and_seq_dims_2():
    # seq_dims=1 with a trailing feature axis
    x = [np.ones((2, 4)), np.ones((3, 4))]
    out = sequence_padding(x)
    assert out.shape == (2, 3, 4)
    assert out[0, 2].sum() == 0 and out[1].sum() == 12

    # seq_dims=2: pad square matrices of different sizes
    m = [np.arange(4).reshape(2, 2) + 1, np.arange(9).reshape(3, 3) + 1]
    out = sequence_padding(m, seq_dims=2)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0], [[1, 2, 0], [3, 4, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out[1], m[1])
    out = sequence_padding(m, length=(2, 4), seq_dims=2, mode="pre")
    assert out.shape == (2, 2, 4)
    np.testing.assert_array_equal(out[0], [[0, 0, 1, 2], [0, 0, 3, 4]])
    np.testing.assert_array_equal(out[1], [[0, 1, 2, 3], [0, 4, 5, 6]])


def test_padding_errors():
    with pytest.raises(ValueError):
        sequence_padding([[1]], mode="middle")
    with pytest.raises(ValueError):
        sequence_padding([])
    with pytest.raises(ValueError):
        sequence_padding([[1]], length=(1, 2))
    with pytest.raises(ValueError):
        sequence_padding([np.ones((2, 3)), np.ones((2, 4))])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 9), max_size=8), min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(0, 10)),
    st.sampled_from(["post", "pre"]),
)
def test_padding_property(seqs, length, mode):
    out = sequence_padding(seqs, length=length, mode=mode)
    target = max(len(s) for s in seqs) if length is None else length
    assert out.shape == (len(seqs), target)
    for row, s in zip(out, seqs):
        kept = s[:target]
        nonzero = [v for v in row if v != 0]
        assert nonzero == kept
        if mode == "post":
            assert list(row[: len(kept)]) == kept
        else:
            assert list(row[target - len(kept) :]) == kept


# ---------------------------------------------------------------- truncation


def test_truncate_sequences_keeps_last_token():
    a = ["[CLS]", "a1", "a2", "a3", "a4", "[SEP]"]
    b = ["b1", "b2", "[SEP]"]
    out = truncate_sequences(6, -2, a, b)
    assert out[0] is a  # lists are shortened in place
    assert a == ["[CLS]", "a1", "[SEP]"]  # the longest loses tokens first
    assert b == ["b1", "b2", "[SEP]"]
    assert sum(map(len, out)) == 6


def test_truncate_sequences_per_sequence_indices_and_empty():
    a, b, c = list(range(5)), [], list(range(3))
    out = truncate_sequences(4, [-1, -1, 0], a, b, c)
    assert len(out) == 3  # empty sequences are kept
    assert sum(map(len, out)) == 4
    assert out[0] == [0, 1] and out[1] == [] and out[2] == [1, 2]
    with pytest.raises(ValueError):
        truncate_sequences(-1, -1, [1])
    with pytest.raises(ValueError):
        truncate_sequences(1, [-1], [1], [2])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 10), min_size=1, max_size=4), st.integers(0, 30))
def test_truncate_sequences_property(lengths, maxlen):
    seqs = [list(range(n)) for n in lengths]
    out = truncate_sequences(maxlen, -1, *seqs)
    assert sum(map(len, out)) == min(maxlen, sum(lengths))
    for s in out:  # popping from the end keeps a prefix
        assert s == list(range(len(s)))
    cut = [len(s) for s, n in zip(out, lengths) if len(s) < n]
    if cut:  # only the longest get trimmed, so trimmed ones end up level
        assert max(map(len, out)) - min(cut) <= 1


# ---------------------------------------------------------------- text_segmentate

TEXT = (
    "今天天气很好，我们去公园散步吧。公园里的花都开了，红的、黄的、白的，非常漂亮！"
    "小明说：“我想去划船。”妈妈同意了。\n"
    "第二段没有太多的标点符号只是一长串的文字用来测试最后的硬切分是否能正确工作\n"
    "第三段。短。"
)


@pytest.mark.parametrize("maxlen", [1, 5, 12, 20, 40, 1000])
def test_text_segmentate_rejoins(maxlen):
    pieces = text_segmentate(TEXT, maxlen, seps="\n。！，、")
    assert all(0 < len(p) <= maxlen for p in pieces)
    assert "".join(pieces) == TEXT


def test_text_segmentate_prefers_first_separator_and_strips():
    pieces = text_segmentate("ab。cd\nef。gh", 5, seps="\n。")
    assert pieces == ["ab。", "cd\n", "ef。gh"]
    pieces = text_segmentate(" ab。 cd。 ", 4, seps="。", strips=" 。")
    assert pieces == ["ab", "cd"]
    with pytest.raises(ValueError):
        text_segmentate("abc", 0)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab，。\n", max_size=60), st.integers(1, 15))
def test_text_segmentate_property(text, maxlen):
    pieces = text_segmentate(text, maxlen, seps="\n。，")
    assert all(0 < len(p) <= maxlen for p in pieces)
    assert "".join(pieces) == text


# ---------------------------------------------------------------- DataGenerator


class PairGenerator(DataGenerator):
    """Batches of (token_ids, segment_ids), label with variable lengths."""

    def __iter__(self, random=False):
        tokens, segments, labels = [], [], []
        for is_end, (ids, label) in self.sample(random):
            tokens.append(ids)
            segments.append([0] * len(ids))
            labels.append([label])
            if len(tokens) == self.batch_size or is_end:
                yield [sequence_padding(tokens), sequence_padding(segments)], np.array(labels)
                tokens, segments, labels = [], [], []


class ExampleGenerator(DataGenerator):
    """Single examples, for ``to_dataset(padded_batch=True)``."""

    def __iter__(self, random=False):
        for _, (ids, label) in self.sample(random):
            yield [ids, [0] * len(ids)], [label]


def make_data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return [(list(rng.integers(1, 20, size=rng.integers(2, 9))), int(rng.integers(2))) for _ in range(n)]


def test_datagenerator_len_and_sample():
    data = make_data(10)
    gen = PairGenerator(data, batch_size=4)
    assert len(gen) == 3
    items = list(gen.sample())
    assert [end for end, _ in items] == [False] * 9 + [True]
    assert [d for _, d in items] == data
    np.random.seed(1)
    shuffled = [d for _, d in gen.sample(random=True)]
    assert sorted(map(str, shuffled)) == sorted(map(str, data)) and shuffled != data
    batches = list(gen)
    assert [b[1].shape[0] for b in batches] == [4, 4, 2]


def test_datagenerator_unsized_buffer_shuffle():
    data = make_data(25)
    gen = PairGenerator(IterOnly(data), batch_size=4, buffer_size=5)
    with pytest.raises(TypeError):
        len(gen)
    np.random.seed(0)
    items = [d for _, d in gen.sample(random=True)]
    assert sorted(map(str, items)) == sorted(map(str, data)) and items != data
    assert [d for _, d in gen.sample()] == data  # re-iterable, in order


class IterOnly:
    def __init__(self, data):
        self.data = data

    def __iter__(self):
        return iter(self.data)


def test_forfit_is_endless_and_rejects_empty():
    gen = PairGenerator(make_data(5), batch_size=2)
    it = gen.epochs()
    assert len([next(it) for _ in range(7)]) == 7  # more than one epoch (3 steps)
    batches = gen.forfit()
    assert len([b for _, b in zip(range(7), batches)]) == 7
    with pytest.raises(ValueError):
        next(PairGenerator([], batch_size=2).epochs())
    with pytest.raises(ValueError):
        PairGenerator([], batch_size=2).forfit()


def tiny_classifier(optimizer="adam", metrics=None):
    """Token + segment embeddings, mean-pooled, a softmax over 2 labels; compiled."""
    import keras

    tokens = keras.Input(shape=(None,), dtype="int32", name="Input-Token")
    segments = keras.Input(shape=(None,), dtype="int32", name="Input-Segment")
    x = keras.layers.Embedding(20, 8)(tokens) + keras.layers.Embedding(2, 8)(segments)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="label")(x)
    model = keras.Model([tokens, segments], out)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=metrics)
    return model


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_classifier()


def test_forfit_feeds_keras_fit(tiny_model):
    gen = PairGenerator(make_data(12), batch_size=4)
    history = tiny_model.fit(gen.forfit(), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


class LengthGenerator(DataGenerator):
    """Batches padded to the longest item, first two batches of equal length."""

    def __iter__(self, random=False):
        for start in range(0, len(self.data), self.batch_size):
            items = self.data[start:start + self.batch_size]
            tokens = sequence_padding([list(range(1, n + 1)) for n in items])
            yield [tokens, np.zeros_like(tokens)], np.array([[n % 2] for n in items])


def test_forfit_batches_of_new_lengths_after_the_first_two(tiny_model):
    """Keras fixes a generator's shapes from its first two batches; forfit must not."""
    gen = LengthGenerator([5, 5, 5, 5, 9, 9, 3, 3], batch_size=2)  # lengths 5, 5, 9, 3
    history = tiny_model.fit(gen.forfit(random=False), steps_per_epoch=len(gen), epochs=2,
                             verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    predictions = tiny_model.predict(gen.fortest(), steps=len(gen), verbose=0)
    assert predictions.shape == (8, 2)


def fresh_model(seed=0):
    """:func:`tiny_classifier` with AdamW and a metric, weights from ``seed``,
    and a list that grows by one per trace of its training step."""
    import keras

    keras.utils.set_random_seed(seed)
    model = tiny_classifier(keras.optimizers.AdamW(0.05), metrics=["accuracy"])
    traces = []
    step = model.train_step

    def counting_step(*args):  # once per trace on TensorFlow ((state, data) on JAX)
        traces.append(1)
        return step(*args)

    model.train_step = counting_step
    return model, traces


@pytest.mark.parametrize("given", ["dataset", "batch"])
def test_build_for_fit_traces_the_training_step_once_same_weights(given):
    """Without it Keras creates the Adam slots and the accuracy counters in the
    first trace and TensorFlow traces the step again; with it, one trace, and
    fit ends on the same weights."""
    import keras

    from bert4keras.snippets import build_for_fit

    gen = LengthGenerator([5, 5, 5, 5, 9, 9, 3, 3], batch_size=2)
    results = []
    for prebuild in (False, True):
        model, traces = fresh_model()
        data = gen.forfit(random=False)
        if prebuild:  # the batch from a pass of its own (on JAX forfit is a generator)
            first = next(iter(gen.forfit(random=False)))
            assert build_for_fit(model, data if given == "dataset" else first) is model
        model.fit(data, steps_per_epoch=len(gen), epochs=2, verbose=0, shuffle=False)
        results.append((len(traces), [w.numpy() for w in model.weights]))
    if keras.backend.backend() == "tensorflow":
        assert (results[0][0], results[1][0]) == (2, 1)
    for ours, keras_own in zip(results[1][1], results[0][1]):
        np.testing.assert_array_equal(ours, keras_own)


def test_build_for_fit_refuses_an_uncompiled_model_and_an_iterator(tiny_model):
    import keras

    from bert4keras.snippets import build_for_fit

    with pytest.raises(ValueError, match="compile the model"):
        build_for_fit(keras.Sequential([keras.layers.Dense(1)]), (np.zeros((1, 2)),))
    if keras.backend.backend() == "tensorflow":
        with pytest.raises(TypeError, match="not a generator"):
            build_for_fit(tiny_model, (b for b in [((np.zeros((1, 2)),), np.zeros(1))]))


def test_to_dataset_batched_with_names(tiny_model):
    gen = PairGenerator(make_data(12), batch_size=4)
    dataset = gen.to_dataset(
        types=(("int32", "int32"), "int32"),
        shapes=(([None, None], [None, None]), [None, 1]),
        names=(("Input-Token", "Input-Segment"), None),
    )
    x, y = next(iter(dataset))
    assert set(x) == {"Input-Token", "Input-Segment"}
    assert x["Input-Token"].shape[0] == 4 and y.shape == (4, 1)
    history = tiny_model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def test_to_dataset_padded_batch(tiny_model):
    data = make_data(12)
    gen = ExampleGenerator(data, batch_size=4)
    dataset = gen.to_dataset(
        types=(("int32", "int32"), "int32"),
        shapes=(([None], [None]), [1]),
        names=(("Input-Token", "Input-Segment"), None),
        padded_batch=True,
        random=False,
    )
    x, y = next(iter(dataset))
    expected = sequence_padding([ids for ids, _ in data[:4]])
    np.testing.assert_array_equal(x["Input-Token"].numpy(), expected)
    assert x["Input-Segment"].shape == expected.shape
    np.testing.assert_array_equal(y.numpy()[:, 0], [label for _, label in data[:4]])
    history = tiny_model.fit(dataset, steps_per_epoch=len(gen) - 1, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


class LabelGenerator(DataGenerator):
    def __iter__(self, random=False):
        labels = []
        for is_end, (_, label) in self.sample(random):
            labels.append([label])
            if len(labels) == self.batch_size or is_end:
                yield np.array(labels)
                labels = []


def test_to_dataset_without_names_and_single_name():
    gen = PairGenerator(make_data(4), batch_size=2)
    types, shapes = (("int32", "int32"), "int32"), (([None, None], [None, None]), [None, 1])
    x, y = next(iter(gen.to_dataset(types, shapes)))
    assert isinstance(x, tuple) and len(x) == 2 and y.shape == (2, 1)
    element = next(iter(LabelGenerator(make_data(4), 2).to_dataset("int32", [None, 1], names="label")))
    assert set(element) == {"label"} and element["label"].shape == (2, 1)


# ---------------------------------------------------------------- parallel_apply


def _slow_square(x):
    time.sleep(np.random.random() * 0.005)
    return x * x


def test_parallel_apply_ordered():
    out = parallel_apply(_slow_square, range(60), workers=2, max_queue_size=4, unordered=False)
    assert out == [i * i for i in range(60)]


def test_parallel_apply_unordered_and_callback():
    out = parallel_apply(lambda x: x + 1, range(40), workers=2, max_queue_size=3)
    assert sorted(out) == list(range(1, 41))
    seen = []
    assert parallel_apply(_slow_square, range(30), 2, 5, callback=seen.append, unordered=False) is None
    assert seen == [i * i for i in range(30)]


def test_parallel_apply_dummy_and_generator_indices():
    pairs = list(parallel_apply_generator(_slow_square, iter(range(25)), 3, 2, dummy=True, unordered=False))
    assert pairs == [(i, i * i) for i in range(25)]


def test_parallel_apply_seeds_differ_between_workers():
    def draw(_):
        time.sleep(0.02)
        return os.getpid(), np.random.randint(1 << 30)

    out = parallel_apply(draw, range(8), workers=2, max_queue_size=8)
    by_pid = {}
    for pid, value in out:
        by_pid.setdefault(pid, []).append(value)
    firsts = [values[0] for values in by_pid.values()]
    assert len(set(firsts)) == len(firsts)


def test_parallel_apply_propagates_errors():
    def boom(x):
        if x == 3:
            raise RuntimeError("bad item")
        return x

    with pytest.raises(RuntimeError, match="bad item"):
        parallel_apply(boom, range(10), workers=2, max_queue_size=2)
    with pytest.raises(ValueError):
        parallel_apply(boom, range(3), workers=0, max_queue_size=2)


# ---------------------------------------------------------------- softmax


def test_softmax():
    x = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 1000.0]])
    p = softmax(x)
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p[1], 1 / 3)
    np.testing.assert_allclose(softmax(x, axis=0).sum(0), 1.0)


def _die_on_five(x):
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    time.sleep(0.01)
    return x


@pytest.mark.parametrize("unordered", [True, False])
def test_parallel_apply_dead_worker_raises_naming_it(unordered):
    """A worker killed mid-item must raise (not hang) and name the worker,
    its pid, the signal and the item.  The alarm bounds the wait: the old
    ``multiprocessing.Pool`` code waited forever for the lost item."""

    def on_alarm(signum, frame):
        raise TimeoutError("parallel_apply still waiting 60 s after a worker died")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    try:
        with pytest.raises(WorkerDiedError) as caught:
            parallel_apply(_die_on_five, range(20), workers=2, max_queue_size=4,
                           unordered=unordered)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    message = str(caught.value)
    assert "SIGKILL" in message and "item 5" in message and "pid " in message
    assert re.search(r"worker \d of 2", message)
    # the pool is usable again afterwards and leaves no worker behind
    again = parallel_apply(_slow_square, range(6), 2, 2, unordered=False)
    assert again == [i * i for i in range(6)]
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("parallel_apply")]
