"""Bad input gets a named error, never silent garbage (issue 16).

* ids outside ``[0, vocab_size)`` / ``[0, segment_vocab_size)`` and inputs
  longer than ``max_position`` are refused on the host by the model that
  ``build_transformer_model`` returns (``predict``, ``__call__``,
  ``predict_on_batch``, ``fit`` on arrays, generators and ``tf.data``
  batches, with and without XLA) and by the cached
  decoder's prompt preparation; on JAX a refused input does not poison the
  compiled function (the next good call works);
* CRF and MEMM labels outside ``[0, num_labels)`` at real positions, GlobalPointer gold
  spans on masked positions and length-0 batches raise (eager) or give NaN
  (compiled), never a finite loss;
* contradictory or nan decoding settings raise.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from bert4keras.generation import AutoRegressiveDecoder, CachedDecoder
from bert4keras.layers import ConditionalRandomField, GlobalPointer, MaximumEntropyMarkovModel
from bert4keras.layers.global_pointer import global_pointer_crossentropy
from bert4keras.models import build_transformer_model
from bert4keras.models.validation import InputRangeError

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position=8)


@pytest.fixture(scope="module")
def bert():
    return build_transformer_model(**TINY)


def good_inputs(length=6):
    ids = np.arange(1, length + 1, dtype="int32")[None] % TINY["vocab_size"]
    return [ids, np.zeros_like(ids)]


@pytest.mark.parametrize("bad", [50, -1])
def test_token_id_outside_vocabulary_is_named(bert, bad):
    ids, seg = good_inputs()
    ids[0, 3] = bad
    with pytest.raises(InputRangeError, match=r"Input-Token: id %d at \(0, 3\) is outside "
                                              r"\[0, 50\) \(vocab_size=50\)" % bad):
        bert.predict([ids, seg], verbose=0)
    for call in (bert, bert.predict_on_batch):
        with pytest.raises(InputRangeError, match="Input-Token"):
            call([ids, seg])
    with pytest.raises(InputRangeError, match="Input-Token"):  # dict inputs too
        bert({"Input-Token": ids, "Input-Segment": seg})


def test_segment_id_minus_one_is_named(bert):
    ids, seg = good_inputs()
    seg[0, 2] = -1
    with pytest.raises(InputRangeError, match=r"Input-Segment: id -1 at \(0, 2\) is outside "
                                              r"\[0, 2\) \(segment_vocab_size=2\)"):
        bert.predict([ids, seg], verbose=0)


def test_too_long_input_is_named(bert):
    with pytest.raises(InputRangeError, match="Input-Token: sequence length 9 exceeds "
                                              "max_position=8"):
        bert.predict(good_inputs(9), verbose=0)
    assert bert.predict(good_inputs(8), verbose=0).shape == (1, 8, 16)


def test_fit_checks_arrays_and_every_generator_batch():
    model = build_transformer_model(**TINY)
    model.compile(optimizer="sgd", loss="mse")
    ids, seg = good_inputs()
    y = np.zeros((1, 6, 16), "float32")
    bad = ids.copy()
    bad[0, 0] = 77
    with pytest.raises(InputRangeError, match="id 77"):
        model.fit([bad, seg], y, epochs=1, verbose=0)
    with pytest.raises(InputRangeError, match="id 77"):
        model.fit([ids, seg], y, validation_data=([bad, seg], y), epochs=1, verbose=0)

    def batches():
        yield [ids, seg], y
        yield [bad, seg], y  # the second batch is wrong

    with pytest.raises(InputRangeError, match="id 77"):
        model.fit(batches(), steps_per_epoch=2, epochs=1, verbose=0)
    model.fit([ids, seg], y, epochs=1, verbose=0)  # good data still trains


def test_keras_file_reloads_in_a_new_process_with_its_checks(bert, tmp_path):
    path = str(tmp_path / "tiny.keras")
    bert.save(path)
    script = textwrap.dedent("""
        import sys
        import numpy as np, keras
        import bert4keras
        from bert4keras.models.validation import InputRangeError, ValidatedModel
        model = keras.saving.load_model(sys.argv[1])
        assert isinstance(model, ValidatedModel), type(model)
        ids = np.array([[1, 2, 3]], "int32")
        model.predict([ids, np.zeros_like(ids)], verbose=0)
        try:
            model.predict([ids * 20, np.zeros_like(ids)], verbose=0)
        except InputRangeError as e:
            print("refused:", e)
    """)
    out = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True,
                         timeout=300, cwd=HERE)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused: Input-Token: id 60" in out.stdout


JAX_SCRIPT = """
import numpy as np
from bert4keras.models import build_transformer_model
from bert4keras.models.validation import InputRangeError
model = build_transformer_model(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32, max_position=8)
def x(n, top=1):
    ids = np.full((1, n), top, "int32")
    return [ids, np.zeros_like(ids)]
for bad in (x(9), x(4, top=50)):
    for call in (lambda v: model.predict(v, verbose=0), model, model.predict_on_batch):
        try:
            call(bad)
            raise SystemExit("accepted a bad input")
        except InputRangeError as e:
            print("refused:", str(e).split(":")[0])
        assert np.asarray(call(x(8))).shape == (1, 8, 16)  # not poisoned
print("ok")
"""


def test_jax_rejected_input_does_not_poison_the_model(jax_scripts):
    out = jax_scripts["inputs"]
    assert out.count("refused: Input-Token") == 6 and out.endswith("ok\n"), out[-3000:]


def tf_batches(token_ids, segment_ids, labels, as_dict=False, batch_size=2):
    """A ``tf.data.Dataset`` of ``(x, y)`` batches (``x`` a list or a dict)."""
    import tensorflow as tf

    x = ({"Input-Token": token_ids, "Input-Segment": segment_ids} if as_dict
         else (token_ids, segment_ids))
    return tf.data.Dataset.from_tensor_slices((x, labels)).batch(batch_size)


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fit_checks_every_tf_data_batch(jit_compile):
    # XLA clamps out-of-range gathers, so the check runs in the tf.data
    # pipeline (host), outside the compiled step: jit_compile cannot hide it
    model = build_transformer_model(**TINY)
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    ids = np.tile(np.arange(1, 7, dtype="int32"), (4, 1))
    seg, y = np.zeros_like(ids), np.zeros((4, 6, 16), "float32")
    bad = ids.copy()
    bad[3, 2] = 50  # in the second batch, row 1
    message = (r"Input-Token: id 50 at \(1, 2\) of a tf.data batch is outside \[0, 50\) "
               r"\(vocab_size=50\)")
    for as_dict in (False, True):
        with pytest.raises(InputRangeError, match=message):
            model.fit(tf_batches(bad, seg, y, as_dict), epochs=1, verbose=0)
    with pytest.raises(InputRangeError, match=r"Input-Token: id -1 at \(0, 0\)"):
        model.fit(tf_batches(ids - 2, seg, y), epochs=1, verbose=0)
    seg_bad = seg.copy()
    seg_bad[1, 4] = 2
    with pytest.raises(InputRangeError, match=r"Input-Segment: id 2 at \(1, 4\) .*"
                                              r"\(segment_vocab_size=2\)"):
        model.evaluate(tf_batches(ids, seg_bad, y), verbose=0)
    with pytest.raises(InputRangeError, match=message):
        model.fit(tf_batches(ids, seg, y), validation_data=tf_batches(bad, seg, y), epochs=1,
                  verbose=0)
    with pytest.raises(InputRangeError, match=message):
        model.predict(tf_batches(bad, seg, y).map(lambda x, _: (x,)), verbose=0)
    model.fit(tf_batches(ids, seg, y), epochs=1, verbose=0)  # good data still trains


def test_tf_data_batch_longer_than_max_position_is_named(bert):
    import tensorflow as tf

    def batches():  # lengths unknown until run time
        yield (np.ones((2, 9), "int32"), np.zeros((2, 9), "int32")),

    spec = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.int32)),
    dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
    with pytest.raises(InputRangeError, match="Input-Token: sequence length 9 of a tf.data "
                                              "batch exceeds max_position=8"):
        bert.predict(dataset, verbose=0)


JAX_DATA_SCRIPT = """
import numpy as np
import tensorflow as tf
from bert4keras.models import build_transformer_model
from bert4keras.models.validation import InputRangeError
model = build_transformer_model(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32, max_position=8)
model.compile(optimizer="sgd", loss="mse")
ids = np.tile(np.arange(1, 7, dtype="int32"), (4, 1))
seg, y = np.zeros_like(ids), np.zeros((4, 6, 16), "float32")
bad = ids.copy()
bad[3, 2] = 50
def data(i):
    return tf.data.Dataset.from_tensor_slices(((i, seg), y)).batch(2)
def gen(first):  # the bad batch first or second
    yield ((bad if first else ids), seg), y
    yield (bad, seg), y
calls = [lambda: model.fit(data(bad), epochs=1, verbose=0),  # fails at batch 2
         lambda: model.fit(data(bad[::-1]), epochs=1, verbose=0),  # at batch 1
         lambda: model.evaluate(data(bad), verbose=0),
         lambda: model.predict(data(bad).map(lambda x, _: (x,)), verbose=0),
         lambda: model.fit(gen(True), steps_per_epoch=2, epochs=1, verbose=0),
         lambda: model.fit(gen(False), steps_per_epoch=2, epochs=1, verbose=0)]
for call in calls:
    try:
        call()
        raise SystemExit("accepted a bad batch")
    except InputRangeError as e:
        print("refused:", str(e).split(":")[0])
    model.fit(data(ids), epochs=1, verbose=0)  # not poisoned
    assert model.predict(data(ids).map(lambda x, _: (x,)), verbose=0).shape == (4, 6, 16)
print("ok")
"""


#: Both JAX scripts in one fresh ``KERAS_BACKEND=jax`` process (one start-up of
#: JAX and TensorFlow), each in its own namespace; a script that fails or exits
#: is reported in its own section and the next one still runs.
JAX_DRIVER = """
import sys, traceback
for name, code in SCRIPTS:
    print("=== " + name, flush=True)
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
    except BaseException:
        print("FAILED", traceback.format_exc(), flush=True)
"""


@pytest.fixture(scope="module")
def jax_scripts():
    """``{name: stdout}`` of :data:`JAX_SCRIPT` ('inputs') and
    :data:`JAX_DATA_SCRIPT` ('data'), run by :data:`JAX_DRIVER`."""
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax")
    scripts = [("inputs", JAX_SCRIPT), ("data", JAX_DATA_SCRIPT)]
    code = "SCRIPTS = %r\n%s" % (scripts, JAX_DRIVER)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=env, cwd=HERE)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    sections = out.stdout.split("=== ")[1:]
    return {section.split("\n", 1)[0]: section.split("\n", 1)[1] for section in sections}


def test_jax_refused_tf_data_or_generator_batch_does_not_poison_the_model(jax_scripts):
    # Keras/JAX empties the variables while it loops over batches and skips
    # putting them back when the data raises (predict/evaluate also leave the
    # last batch's state detached)
    out = jax_scripts["data"]
    assert out.count("refused: Input-Token") == 6 and out.endswith("ok\n"), out[-3000:]


# -- decoders -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt():
    return build_transformer_model(None, None, model="gpt2", return_keras_model=False,
                                   vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32, max_position=32)


@pytest.mark.parametrize("bad", [40, -1])
def test_cached_decoder_refuses_prompt_ids_outside_the_vocabulary(gpt, bad):
    decoder = CachedDecoder(gpt, end_id=3, maxlen=4)
    with pytest.raises(InputRangeError, match=r"prompt 1: id %d .*\[0, 40\)" % bad):
        decoder.generate([[5, 6], [7, bad, 8]])
    assert len(decoder.generate([[5, 6], [7, 9, 8]])) == 2


class Uncached(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype="logits")
    def predict(self, inputs, output_ids, states):
        return np.zeros((len(output_ids), 10), "float32")


def test_generation_settings_that_cannot_be_right_raise(gpt):
    with pytest.raises(ValueError, match="minlen=5 exceeds maxlen=3"):
        Uncached(start_id=None, end_id=1, maxlen=3, minlen=5)
    with pytest.raises(ValueError, match="minlen=5 exceeds maxlen=3"):
        CachedDecoder(gpt, end_id=3, maxlen=3, minlen=5)
    decoder = Uncached(start_id=None, end_id=1, maxlen=3)
    cached = CachedDecoder(gpt, end_id=3, maxlen=3)
    prompt = [np.array([2, 4])]
    for bad, match in [(dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
                       (dict(repetition_penalty=float("nan")), "repetition_penalty"),
                       (dict(temperature=float("nan")), "temperature"),
                       (dict(temperature=float("inf")), "temperature")]:
        with pytest.raises(ValueError, match=match):
            cached.generate([[2, 4]], **bad)
        with pytest.raises(ValueError, match=match):
            if "temperature" in bad:
                decoder.random_sample(prompt, 1, **bad)
            else:
                decoder.greedy_search(prompt, **bad)
    with pytest.raises(ValueError, match="minlen=3 exceeds max_new_tokens"):
        Uncached(start_id=None, end_id=1, maxlen=5, minlen=3).greedy_search(
            prompt, max_new_tokens=2)


# -- CRF and GlobalPointer ----------------------------------------------------------


def crf_and_scores(head=ConditionalRandomField):
    crf = head()
    emissions = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    token_ids = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return crf, crf([emissions, token_ids])


@pytest.mark.parametrize("head", [ConditionalRandomField, MaximumEntropyMarkovModel])
@pytest.mark.parametrize("bad", [4, 9, -1])
def test_crf_label_outside_num_labels_raises(bad, head):
    crf, scores = crf_and_scores(head)
    labels = np.array([[0, 1, 2, 3, 0], [0, 1, 2, 0, 0]])
    labels[0, 2] = bad
    with pytest.raises(ValueError, match=r"label outside \[0, num_labels=4\).*\(0, 2\) "
                                         r"\(value %d\)" % bad):
        crf.sparse_loss(labels, scores)
    with pytest.raises(ValueError, match="not a distribution"):
        crf.dense_loss((labels[..., None] == np.arange(4)).astype("float32"), scores)


@pytest.mark.parametrize("head", [ConditionalRandomField, MaximumEntropyMarkovModel])
def test_crf_labels_on_padding_are_ignored(head):
    """Documented meaning: a padded position's label (e.g. -1) is not read."""
    crf, scores = crf_and_scores(head)
    labels = np.array([[0, 1, 2, 3, 0], [0, 1, 2, 0, 0]])
    padded = labels.copy()
    padded[1, 3:] = -1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(crf.sparse_loss(padded, scores)),
                               keras.ops.convert_to_numpy(crf.sparse_loss(labels, scores)))


def assert_loud(evaluate):
    """NaN from a traced step; the named error where Keras runs eagerly (torch)."""
    if keras.backend.backend() == "torch":
        with pytest.raises(ValueError, match="label outside|gold span"):
            evaluate()
    else:
        assert np.isnan(evaluate())


def test_crf_and_global_pointer_bad_labels_give_nan_when_compiled():
    inputs = keras.Input((None, 4))
    crf = ConditionalRandomField()
    model = keras.Model(inputs, crf(inputs))
    # a traced tf.function / jax.jit step (TF's XLA has no scan over a dynamic length)
    model.compile(loss=crf.sparse_loss, jit_compile=keras.backend.backend() != "tensorflow")
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    good = np.zeros((2, 5), "int32")
    assert np.isfinite(model.evaluate(x, good, verbose=0))
    assert_loud(lambda: model.evaluate(x, good + 4, verbose=0))

    hidden, ids = keras.Input((None, 8)), keras.Input((None,), dtype="int32")
    model = keras.Model([hidden, ids], GlobalPointer(2, 4)([hidden, ids]))
    model.compile(loss=global_pointer_crossentropy, jit_compile=True)
    h = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    token_ids = np.array([[1, 1, 1, 0, 0]] * 2)
    y = np.zeros((2, 2, 5, 5), "float32")
    y[:, 0, 0, 1] = 1
    assert np.isfinite(model.evaluate([h, token_ids], y, verbose=0))
    y[0, 1, 3, 4] = 1  # a gold span on padding
    assert_loud(lambda: model.evaluate([h, token_ids], y, verbose=0))


def test_global_pointer_gold_span_on_padding_raises():
    gp = GlobalPointer(2, 4)
    h = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    scores = gp([h, np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])])
    y = np.zeros((2, 2, 5, 5), "float32")
    y[1, 0, 3, 4] = 1  # real in row 1
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(global_pointer_crossentropy(y, scores))))
    y[0, 1, 2, 3] = 1  # end on padding in row 0
    with pytest.raises(ValueError, match=r"gold span on a masked position.*\(0, 1, 2, 3\)"):
        global_pointer_crossentropy(y, scores)
    y[0, 1, 2, 3], y[1, 0, 3, 1] = 0, 1  # end before start (tril_mask)
    with pytest.raises(ValueError, match=r"\(1, 0, 3, 1\)"):
        global_pointer_crossentropy(y, scores)


def test_length_zero_batches_raise_named_errors():
    crf = ConditionalRandomField()
    with pytest.raises(ValueError, match="empty sequences"):
        crf.sparse_loss(np.zeros((2, 0)), crf(np.zeros((2, 0, 4), "float32")))
    memm = MaximumEntropyMarkovModel()
    with pytest.raises(ValueError, match="empty sequences"):
        memm.sparse_loss(np.zeros((2, 0)), memm(np.zeros((2, 0, 4), "float32")))
    gp = GlobalPointer(2, 4)
    with pytest.raises(ValueError, match="empty sequences"):
        global_pointer_crossentropy(np.zeros((2, 2, 0, 0)), gp(np.zeros((2, 0, 8), "float32")))
