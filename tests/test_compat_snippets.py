"""bert4keras 0.11.5's ``bert4keras.snippets`` surface (issue 14): every public
name importable from the same module, with 0.11.5's signatures and results,
checked against brute force, NumPy or Unicode's own tables."""

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

import bert4keras.snippets as snippets
from bert4keras.snippets import (
    ViterbiDecoder,
    WebServing,
    convert_to_str,
    convert_to_unicode,
    delete_arguments,
    insert_arguments,
    is_one_of,
    is_py2,
    is_string,
    longest_common_subsequence,
    longest_common_substring,
    lowercase_and_normalize,
    open,
    orthogonally_resize,
    parallel_apply,
    sequence_padding,
    strQ2B,
    string_matching,
    to_array,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# names defined by bert4keras 0.11.5's snippets.py (functions, classes, flags)
NAMES_0_11_5 = [
    "to_array", "is_string", "strQ2B", "string_matching", "convert_to_unicode",
    "convert_to_str", "lowercase_and_normalize", "open", "parallel_apply_generator",
    "parallel_apply", "sequence_padding", "truncate_sequences", "text_segmentate",
    "is_one_of", "DataGenerator", "ViterbiDecoder", "softmax", "AutoRegressiveDecoder",
    "insert_arguments", "delete_arguments", "longest_common_substring",
    "longest_common_subsequence", "orthogonally_resize", "WebServing", "is_py2",
]

LINES = [
    "今天天气很好，我们去公园散步吧。\n",
    "第二行：ＡＢＣ１２３\n",
    "\n",
    "短\n",
    "这是一个比较长的句子，用来检验按行定位时的字节偏移是否正确。\n",
    "最后一行没有换行符",
]


def test_every_0_11_5_name_is_importable():
    for name in NAMES_0_11_5:
        exec("from bert4keras.snippets import %s" % name, {})
    from bert4keras.generation import AutoRegressiveDecoder
    from bert4keras.snippets import uniout  # 0.11.5's Python 2 hook: None on Python 3

    assert uniout is None
    assert snippets.AutoRegressiveDecoder is AutoRegressiveDecoder
    assert is_py2 is False
    assert set(NAMES_0_11_5) - {"is_py2"} <= set(snippets.__all__) | {"is_py2"}
    with pytest.raises(AttributeError):
        snippets.no_such_name  # noqa: B018


# ---------------------------------------------------------------- open


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("".join(LINES).encode("utf-8"))
    return str(path)


def byte_offsets(lines):
    """Where each line starts in the UTF-8 file, computed from the text alone."""
    return [int(n) for n in np.cumsum([0] + [len(line.encode("utf-8")) for line in lines[:-1]])]


def test_open_indexable_seeks_lines(corpus):
    with open(corpus, encoding="utf-8", indexable=True) as f:
        assert len(f) == len(LINES)
        assert f.offsets == byte_offsets(LINES)
        for i in [4, 0, 5, 2, 1, 3]:  # any order
            assert f[i] == LINES[i]
        assert f[-1] == LINES[-1] and f[-2] == LINES[-2]
        assert f[1:4] == LINES[1:4]
        with pytest.raises(IndexError, match="6 lines"):
            f[6]
        f.seek(0)
        assert list(f) == LINES  # still an ordinary file
    assert f.closed


def test_open_index_cache_is_written_and_trusted(corpus, tmp_path):
    cache = tmp_path / "corpus.index.json"
    with open(corpus, encoding="utf-8", indexable=str(cache)) as f:
        assert f[3] == LINES[3]
    with builtins_open(cache) as fh:
        assert json.load(fh) == byte_offsets(LINES)  # 0.11.5's format: a JSON list
    # an existing index is read, not rebuilt (here: only lines 0 and 4 indexed)
    with builtins_open(cache, "w") as fh:
        json.dump([byte_offsets(LINES)[0], byte_offsets(LINES)[4]], fh)
    with open(corpus, encoding="utf-8", indexable=cache) as f:  # a pathlib path works too
        assert len(f) == 2 and f[1] == LINES[4]


def builtins_open(*args):
    import builtins

    return builtins.open(*args, encoding="utf-8")


def test_open_file_api(corpus, tmp_path):
    with open(corpus, encoding="utf-8") as f:
        assert f.next() == LINES[0] and next(f) == LINES[1]
        with pytest.raises(TypeError, match="indexable"):
            len(f)
        with pytest.raises(TypeError, match="indexable"):
            f[0]
    with open(corpus, encoding="utf-8") as f:
        assert f.readline() == LINES[0]
        assert f.readlines() == LINES[1:]
        f.seek(0)
        assert f.read() == "".join(LINES)
    # binary mode with an encoding decodes (0.11.5 could not open 'rb' on Python 3)
    with open(corpus, "rb", encoding="utf-8", indexable=True) as f:
        assert f[4] == LINES[4] and list(f) == LINES[5:]
    out = str(tmp_path / "out.txt")
    with open(out, "w", encoding="utf-8") as f:
        f.write("中文\n")
        f.write("字节\n".encode("utf-8"))
    with open(out, encoding="utf-8", indexable=True) as f:
        assert [f[1], f[0]] == ["字节\n", "中文\n"]


# ---------------------------------------------------------------- small helpers


def test_to_array():
    a = to_array([[1, 2], [3, 4]])
    assert isinstance(a, np.ndarray) and a.shape == (2, 2)
    x, y = to_array([[1, 2, 3]], [0.5])
    np.testing.assert_array_equal(x, np.array([[1, 2, 3]]))
    assert y.dtype == np.float64 and y.shape == (1,)
    assert to_array() == []


def test_strQ2B_matches_unicode_compatibility_mapping():
    full = "".join(map(chr, range(0xFF01, 0xFF5F))) + "\u3000"
    # NFKC maps each full-width form (and the ideographic space) to ASCII
    assert strQ2B(full) == unicodedata.normalize("NFKC", full)
    assert strQ2B("ＡＢＣ　１２３！，中文。") == "ABC 123!,中文。"
    assert strQ2B("ｶﾀｶﾅ｡") == "ｶﾀｶﾅ｡"  # half-width katakana are not full-width forms


def test_string_and_encoding_helpers():
    assert is_string("文本") and not is_string(b"bytes") and not is_string(1)
    assert convert_to_unicode("中文".encode("utf-8")) == "中文"
    assert convert_to_unicode(b"\xff\xe4\xb8\xad") == "中"  # bad bytes dropped
    assert convert_to_str("中文".encode("utf-8")) == "中文" and convert_to_str("x") == "x"
    assert string_matching("我爱北京天安门", ["上海", "北.天"])
    assert not string_matching("我爱北京天安门", ["上海", "广州"])
    assert lowercase_and_normalize("Héllo WÖRLD Ça") == "hello world ca"
    tensor_like = [np.zeros(2), np.zeros(2)]
    assert is_one_of(tensor_like[1], tensor_like) and not is_one_of(np.zeros(2), tensor_like)


def test_insert_and_delete_arguments():
    class Base:
        def __init__(self, units, **kwargs):
            self.units, self.kwargs = units, kwargs

    class WithExtra(Base):
        @insert_arguments(scale=2.0, name_suffix="x")
        @delete_arguments("dropout")
        def __init__(self, units, **kwargs):
            super().__init__(units, **kwargs)

    layer = WithExtra(3, scale=5.0, other=1)
    assert (layer.units, layer.scale, layer.name_suffix) == (3, 5.0, "x")
    assert layer.kwargs == {"other": 1}
    with pytest.raises(TypeError, match="WithExtra got an unexpected keyword argument 'dropout'"):
        WithExtra(3, dropout=0.1)


# ---------------------------------------------------------------- LCS


def brute_substring(source, target):
    """Longest common run; ties go to the smallest end in source, then in target."""
    best = (0, (0, 0, 0, 0))
    for i1 in range(len(source) + 1):
        for j1 in range(len(target) + 1):
            n = 0
            while n < min(i1, j1) and source[i1 - n - 1] == target[j1 - n - 1]:
                n += 1
            if n > best[0]:
                best = (n, (i1 - n, i1, j1 - n, j1))
    return best


def brute_subsequence_length(source, target):
    for n in range(min(len(source), len(target)), 0, -1):
        for idx in itertools.combinations(range(len(source)), n):
            it = iter(target)
            if all(any(source[i] == t for t in it) for i in idx):
                return n
    return 0


def test_lcs_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(150):
        source = "".join(rng.choice(list("abc"), size=rng.integers(0, 8)))
        target = "".join(rng.choice(list("abc"), size=rng.integers(0, 8)))
        length, span = longest_common_substring(source, target)
        assert (length, span) == brute_substring(source, target)
        assert source[span[0]:span[1]] == target[span[2]:span[3]]
        length, mapping = longest_common_subsequence(source, target)
        assert length == brute_subsequence_length(source, target) == len(mapping)
        assert all(source[i] == target[j] for i, j in mapping)
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(mapping, mapping[1:]))


def test_lcs_choice_among_equals_and_token_lists():
    # worked by hand through 0.11.5's table walk: it steps back in source on ties
    assert longest_common_subsequence("ab", "ba") == (1, [(0, 1)])
    assert longest_common_subsequence(["我", "爱", "北京"], ["北京", "我", "爱"]) == (
        2, [(0, 1), (1, 2)])
    assert longest_common_substring("xabyab", "abab") == (2, (1, 3, 0, 2))
    assert longest_common_substring("abc", "xyz") == (0, (0, 0, 0, 0))
    assert longest_common_subsequence("", "abc") == (0, [])


# ---------------------------------------------------------------- orthogonally_resize


def grown_rows(a, k, window):
    """Each block of ``window`` rows repeated ``k`` times, built row by row."""
    rows = []
    for start in range(0, len(a), window):
        for _ in range(k):
            rows.extend(a[start:start + window])
    return np.array(rows)


def test_orthogonally_resize_keeps_orthogonality_and_norm():
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 6)))
    norm = np.linalg.norm(q)

    tall = orthogonally_resize(q, (12, 6))  # rows doubled: columns stay orthogonal
    np.testing.assert_allclose(tall, grown_rows(q, 2, 2) / np.sqrt(2), atol=1e-12)
    np.testing.assert_allclose(tall.T @ tall, np.eye(6), atol=1e-12)

    wide = orthogonally_resize(q, (6, 18))  # columns tripled: rows stay orthogonal
    np.testing.assert_allclose(wide, grown_rows(q.T, 3, 2).T / np.sqrt(3), atol=1e-12)
    np.testing.assert_allclose(wide @ wide.T, np.eye(6), atol=1e-12)

    cut = orthogonally_resize(q, (4, 6))  # a subset of orthonormal rows
    gram = cut @ cut.T
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(4), atol=1e-12)
    np.testing.assert_allclose(cut, q[:4] * norm / np.linalg.norm(q[:4]), atol=1e-12)

    odd = orthogonally_resize(q, (10, 6), window=2)  # k = 2, then cut to 10 rows
    np.testing.assert_allclose(odd * np.linalg.norm(grown_rows(q, 2, 2)[:10]) / norm,
                               grown_rows(q, 2, 2)[:10], atol=1e-12)
    for b in (tall, wide, cut, odd):
        np.testing.assert_allclose(np.linalg.norm(b), norm)
    np.testing.assert_allclose(orthogonally_resize(q, q.shape), q, atol=1e-15)

    with pytest.raises(ValueError, match="window=2"):
        orthogonally_resize(np.eye(5), (10, 5))
    with pytest.raises(ValueError, match="rank"):
        orthogonally_resize(np.eye(4), (8,))


# ---------------------------------------------------------------- sequence_padding, Viterbi


def test_sequence_padding_0_11_5_arguments():
    seqs = [[1, 2, 3, 4], [5], [6, 7]]
    expected = np.full((3, 3), -1)
    for row, s in zip(expected, seqs):
        s = s[:3]
        row[3 - len(s):] = s
    out = sequence_padding(seqs, length=3, value=-1, seq_dims=1, mode="pre")
    np.testing.assert_array_equal(out, expected)
    mats = [np.ones((2, 2)), np.ones((1, 1))]
    out = sequence_padding(mats, 3, 0, 2, "post")  # positional, as 0.11.5's signature
    assert out.shape == (2, 3, 3) and out.sum() == 5 and out[1, 0, 0] == 1


def test_viterbi_decoder_against_brute_force():
    rng = np.random.default_rng(2)
    trans = rng.normal(size=(3, 3))
    decoder = ViterbiDecoder(trans, starts=[0, 1], ends=[2])
    assert decoder.non_starts == [2] and decoder.non_ends == [0, 1]

    def best(nodes, trans):
        paths = [p for p in itertools.product(range(3), repeat=len(nodes))
                 if p[0] in (0, 1) and p[-1] == 2]
        score = [sum(nodes[t, y] for t, y in enumerate(p)) +
                 sum(trans[a, b] for a, b in zip(p, p[1:])) for p in paths]
        return list(paths[int(np.argmax(score))])

    for n in (2, 3, 5):
        nodes = rng.normal(size=(n, 3))
        kept = nodes.copy()
        assert list(decoder.decode(nodes)) == best(nodes, trans)
        np.testing.assert_array_equal(nodes, kept)
    # scripts refresh the transitions during training: NER.trans = K.eval(CRF.trans)
    decoder.trans = (trans * -3).astype("float32")
    nodes = rng.normal(size=(4, 3))
    assert list(decoder.decode(nodes)) == best(nodes, trans * -3)


def _pid_and_draw(_):
    time.sleep(0.02)  # let both workers take tasks
    return os.getpid(), int(np.random.randint(1 << 30))


def test_parallel_apply_random_seeds_lists_of_any_length():
    def first_draws(seeds):
        out = parallel_apply(_pid_and_draw, range(8), 2, 8, None, False, seeds, False)
        firsts = {}
        for pid, value in out:  # in input order, so the first per pid is its first draw
            firsts.setdefault(pid, value)
        return set(firsts.values())

    def seeded(seed):
        return int(np.random.RandomState(seed).randint(1 << 30))

    assert first_draws([7, 8, 9]) <= {seeded(7), seeded(8)}  # extra seeds unused
    assert seeded(123) in first_draws([123])  # the other worker keeps its state


# ---------------------------------------------------------------- WebServing


def fetch(url, data=None):
    body = urllib.parse.urlencode(data).encode("utf-8") if data is not None else None
    with urllib.request.urlopen(url, data=body, timeout=10) as response:
        assert response.headers.get_content_type() == "application/json"
        return json.loads(response.read().decode("utf-8"))


def test_web_serving_over_localhost():
    def add(a, b=10):
        return {"sum": a + b}

    def reverse(text):
        return np.array([len(text)]), text[::-1]  # NumPy values reach the client as JSON

    def fail(x):
        raise RuntimeError("no good: %s" % x)

    web = WebServing(host="127.0.0.1", port=0)  # 0: the system picks a free port
    web.route("/add", add, {"a": (int, True), "b": (int, False)})
    web.route("/reverse", reverse, {"text": (None, True)}, method="POST")
    web.route("/fail", fail, {"x": (None, True)})
    web.start(block=False)
    base = "http://127.0.0.1:%d" % web.port
    try:
        assert web.port > 0
        assert fetch(base + "/add?a=2&b=3") == {"code": 0, "desc": "succeeded", "data": {"sum": 5}}
        assert fetch(base + "/add?a=2")["data"] == {"sum": 12}
        missing = fetch(base + "/add?b=3")
        assert missing["code"] == 1 and '"a"' in missing["desc"]
        assert fetch(base + "/add?a=two")["code"] == 1
        assert fetch(base + "/reverse", {"text": "你好世界"})["data"] == [[4], "界世好你"]
        failed = fetch(base + "/fail?x=" + urllib.parse.quote("中"))
        assert failed["code"] == 2 and failed["desc"] == "no good: 中"
        with pytest.raises(urllib.error.HTTPError) as error:  # GET on a POST route
            fetch(base + "/reverse?text=x")
        assert error.value.code == 405
    finally:
        web.stop()
    with pytest.raises(urllib.error.URLError):
        fetch(base + "/add?a=1")


# ---------------------------------------------------------------- an old-style script

OLD_STYLE_SCRIPT = '''
#! -*- coding: utf-8 -*-
# a sentence classifier's data side, written the bert4keras 0.11.5 way
import sys, json
import numpy as np
from bert4keras.snippets import open, to_array, sequence_padding, DataGenerator
from bert4keras.snippets import truncate_sequences, text_segmentate, strQ2B
from bert4keras.snippets import ViterbiDecoder, parallel_apply, is_string
from bert4keras.snippets import longest_common_subsequence, AutoRegressiveDecoder
from bert4keras.snippets import uniout

maxlen = 6
batch_size = 2


def load_data(filename):
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            text, label = l.strip().split('\\t')
            D.append((strQ2B(text), int(label)))
    return D


data = load_data(sys.argv[1])
chars = sorted(set(''.join([d[0] for d in data])))
vocab = dict((c, i + 1) for i, c in enumerate(chars))


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_labels = [], []
        for is_end, (text, label) in self.sample(random):
            token_ids = [vocab[c] for c in text]
            truncate_sequences(maxlen, -1, token_ids)
            batch_token_ids.append(token_ids)
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_labels = sequence_padding(batch_labels)
                yield batch_token_ids, batch_labels
                batch_token_ids, batch_labels = [], []


train_generator = data_generator(data, batch_size)
shapes = [list(x.shape) for x, y in train_generator]
for x, y in train_generator.forfit():
    first = np.asarray(x).shape[0]
    break

with open(sys.argv[1], encoding='utf-8', indexable=True) as f:
    middle = f[len(f) // 2]

pieces = text_segmentate(data[0][0], 4, u',。')
lengths = parallel_apply(len, [d[0] for d in data], 2, 4, dummy=True, unordered=False)
trans = to_array([[0., -1.], [-1., 0.]])
tags = ViterbiDecoder(trans, starts=[0]).decode(to_array([[1., 0.], [0., 1.], [0., 2.]]))
print(json.dumps({
    'n': len(data), 'steps': len(train_generator), 'shapes': shapes, 'first': first,
    'middle': middle, 'pieces': pieces, 'lengths': lengths, 'tags': tags.tolist(),
    'lcs': longest_common_subsequence(data[0][0], data[1][0])[0],
    'ok': is_string(middle) and uniout is None and hasattr(AutoRegressiveDecoder, 'wraps'),
}, ensure_ascii=False))
'''


def test_old_style_script_runs(tmp_path):
    rows = [("今天天气很好，适合去公园。", 1), ("天气不好", 0), ("ＯＫ　好的", 1)]
    data_file = tmp_path / "train.tsv"
    data_file.write_text("".join("%s\t%d\n" % row for row in rows), encoding="utf-8")
    script = tmp_path / "old_script.py"
    script.write_text(textwrap.dedent(OLD_STYLE_SCRIPT), encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, str(script), str(data_file)], capture_output=True,
                         text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    texts = [strQ2B(text) for text, _ in rows]
    assert result["ok"] is True
    assert (result["n"], result["steps"]) == (3, 2)
    assert result["shapes"] == [[2, 6], [1, 5]]  # truncated to maxlen=6, padded per batch
    assert result["first"] == 2  # rows of the first batch, in any shuffled order
    assert result["middle"] == "%s\t%d\n" % rows[1]
    assert "".join(result["pieces"]) == texts[0]
    assert all(0 < len(p) <= 4 for p in result["pieces"])
    assert result["lengths"] == [len(t) for t in texts]
    assert result["tags"] == [0, 1, 1]  # 0-0-0 scores 1, 0-1-1 scores 1+1+2-1 = 3
    assert result["lcs"] == brute_subsequence_length(texts[0], texts[1])


# ---------------------------------------------------------------- forfit / to_dataset, 0.11.5 recipes


class LossRecipeGenerator(snippets.DataGenerator):
    """Batches as the ``Loss``-layer recipes yield them: ``[inputs...], None``.

    ``with_labels`` adds a third input of another shape (``(batch, 1)``)."""

    with_labels = False

    def __iter__(self, random=False):
        for start in range(0, len(self.data), self.batch_size):
            lengths = self.data[start:start + self.batch_size]
            tokens = sequence_padding([[1 + i % 7 for i in range(n)] for n in lengths])
            inputs = [tokens, (tokens > 3).astype("int32")]
            if self.with_labels:
                inputs.append(np.array([[n % 2] for n in lengths]))
            yield inputs, None


def train_loss_recipe(with_labels):
    """Train a model whose only loss is added by a ``Loss`` layer on
    ``gen.forfit()``; returns (first batch's structure, the epoch's losses)."""
    import keras

    from bert4keras.backend import K
    from bert4keras.layers import Loss

    class MaskedScore(Loss):
        def compute_loss(self, inputs, mask=None):
            y_mask, score = inputs[1], inputs[-1]
            loss = K.square(score[..., 0] - 1.0)
            if len(inputs) == 4:  # labels (batch, 1) of another shape
                loss = loss + K.mean(inputs[2])
            return K.sum(loss * y_mask) / (K.sum(y_mask) + 1.0)

    keras.utils.set_random_seed(0)
    inputs = [keras.Input((None,), dtype="int32", name="Input-Token"),
              keras.Input((None,), dtype="int32", name="Input-Segment")]
    if with_labels:
        inputs.append(keras.Input((1,), dtype="int32", name="Input-Label"))
    score = keras.layers.Dense(1)(keras.layers.Embedding(8, 4)(inputs[0]))
    output = MaskedScore(len(inputs))(inputs + [score])
    model = keras.Model(inputs, output)
    model.compile(optimizer="adam")
    gen = LossRecipeGenerator([5, 5, 3, 3, 6, 6, 2, 2], batch_size=2)
    gen.with_labels = with_labels
    batches = gen.forfit(random=False)
    if hasattr(batches, "element_spec"):
        first = batches.element_spec
    else:
        first = next(batches)
        batches = (b for b in itertools.chain([first], batches))  # Keras wants a generator
    history = model.fit(batches, steps_per_epoch=len(gen), epochs=1, verbose=0, shuffle=False)
    return first, history.history["loss"]


def _check_loss_recipe(first, losses, n_inputs):
    # a 1-tuple (inputs only), the inputs a tuple: Keras sees n named inputs
    assert isinstance(first, tuple) and len(first) == 1, first
    assert isinstance(first[0], tuple) and len(first[0]) == n_inputs, first
    assert np.all(np.isfinite(losses)), losses


@pytest.mark.parametrize("with_labels", [False, True])
def test_forfit_inputs_and_none_target_train_a_loss_layer(with_labels):
    """On TensorFlow a dataset; on JAX (tests/test_backends.py's JAX process
    runs this test) a Python generator."""
    import keras

    first, losses = train_loss_recipe(with_labels)
    if keras.backend.backend() != "tensorflow":
        assert not hasattr(first, "element_spec")
    _check_loss_recipe(first, losses, 3 if with_labels else 2)


class SingleExampleGenerator(snippets.DataGenerator):
    def __iter__(self, random=False):
        for _is_end, n in self.sample(random):
            tokens = [1 + i % 7 for i in range(n)]
            yield [tokens, [0] * n], [[n % 3]]  # one example; float32 in the dataset


def test_to_dataset_names_a_single_output_target_as_0_11_5_recipes_do():
    """task_iflytek_multigpu: ``names=[('Input-Token', 'Input-Segment'),
    ('Probas',)]`` with float32 types and ``padded_batch``; the one-output
    model trains (Keras 3 takes the single target bare, not as a dict)."""
    import keras

    gen = SingleExampleGenerator([4, 2, 5, 3, 6, 1], batch_size=2)
    dataset = gen.to_dataset(
        types=[("float32", "float32"), ("float32",)],
        shapes=[([None], [None]), ([1],)],
        names=[("Input-Token", "Input-Segment"), ("Probas",)],
        padded_batch=True, random=False,
    )
    x, y = next(iter(dataset))
    assert set(x) == {"Input-Token", "Input-Segment"}
    np.testing.assert_array_equal(x["Input-Token"].numpy(), [[1, 2, 3, 4], [1, 2, 0, 0]])
    np.testing.assert_array_equal(y.numpy(), [[1.0], [2.0]])
    assert y.dtype.name == "float32"
    tokens = keras.Input((None,), name="Input-Token")
    segments = keras.Input((None,), name="Input-Segment")
    h = keras.layers.Embedding(8, 4)(tokens) + keras.layers.Embedding(2, 4)(segments)
    probas = keras.layers.Dense(3, activation="softmax", name="Probas")(
        keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model([tokens, segments], probas)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(dataset, steps_per_epoch=len(gen), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    # a two-name target stays a dict (multi-output models map it by name)
    two = gen.to_dataset(types=[("float32", "float32"), ("float32", "float32")],
                         shapes=[([None], [None]), ([1], [1])],
                         names=[("Input-Token", "Input-Segment"), ("A", "B")],
                         padded_batch=True, random=False)
    assert two.element_spec is not None  # the signature builds
    assert set(two.element_spec[1]) == {"A", "B"}
