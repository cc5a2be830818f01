"""int8 weight quantization (Keras 3's ``model.quantize``) and bfloat16 inference.

* A quantized ``FeedForward`` equals a NumPy implementation of the int8
  scheme Keras documents for ``Dense`` (per-output-channel abs-max int8
  kernel, per-token abs-max int8 inputs, integer matmul, de-scaling).
* A tiny BERT with a Dense head: every projection (attention q/k/v/o, the
  feed-forward pair, the head) is quantized, the embeddings are skipped with
  the reason, outputs stay close to float32, and the ``.keras`` file reloads
  in a new process with plain ``keras.saving.load_model`` giving the same
  quantized outputs; so do models with the other layers that own ``Dense``
  sublayers (GlobalPointer, GatedAttentionUnit, conditional LayerNorm).
* The shipped small BERT (checkpoints/chinese_bert_small): the masked-LM
  top-1 predictions of the int8 and the bfloat16 model agree with float32's.
"""

import gc
import os

import numpy as np
import pytest
from conftest import model_outputs, reload_in_new_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = os.path.join(ROOT, "checkpoints", "chinese_bert_small")
TINY = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position=32)


@pytest.fixture(autouse=True)
def restore_policy():
    import keras

    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


def numpy_int8_dense(x, kernel, bias, eps=1e-7):
    """Keras' int8 ``Dense`` in NumPy (float64): abs-max scales, weights per
    output channel (axis 0), inputs per token (last axis), range [-127, 127]."""
    w_scale = 127.0 / (np.abs(kernel).max(axis=0, keepdims=True) + eps)
    w_q = np.clip(np.round(kernel * w_scale), -127, 127)
    x_scale = 127.0 / (np.abs(x).max(axis=-1, keepdims=True) + eps)
    x_q = np.clip(np.round(x * x_scale), -127, 127)
    return (x_q @ w_q) / (x_scale * w_scale) + bias


def tiny_classifier(seed=0):
    import keras

    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(seed)
    bert = build_transformer_model(**TINY)
    probs = keras.layers.Dense(3, activation="softmax", name="head")(bert.output[:, 0])
    return keras.Model(bert.inputs, probs)


def tiny_inputs(batch=4, length=16, seed=0):
    ids = np.random.RandomState(seed).randint(1, TINY["vocab_size"], (batch, length))
    ids[:, -3:] = 0  # padding
    return [ids, np.zeros_like(ids)]


def test_quantized_feedforward_matches_numpy_int8():
    import keras

    from bert4keras.layers import FeedForward

    keras.utils.set_random_seed(1)
    layer = FeedForward(24, activation="relu")
    x = np.random.RandomState(1).normal(size=(2, 5, 16)).astype("float32")
    layer(x)
    (k1, b1), (k2, b2) = [(np.asarray(d.kernel, "float64"), np.asarray(d.bias, "float64"))
                          for d in (layer.i0_dense, layer.o_dense)]
    float_out = keras.ops.convert_to_numpy(layer(x))
    layer.i0_dense.quantize("int8")
    layer.o_dense.quantize("int8")
    out = keras.ops.convert_to_numpy(layer(x))
    hidden = np.maximum(numpy_int8_dense(x.astype("float64"), k1, b1), 0)
    expected = numpy_int8_dense(hidden, k2, b2)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out, expected, atol=2e-3 * scale)
    assert np.abs(out - float_out).max() > 1e-5  # really the int8 path


def test_quantized_models_reload_in_a_new_process(tmp_path):
    """The quantized tiny BERT and the quantized layers that own ``Dense``
    sublayers, reloaded together in one new process."""
    cases = [quantized_tiny_bert(), quantized_dense_sublayers()]
    rows = reload_in_new_process(tmp_path, [case[:3] for case in cases])
    for row, (key, _, _, tolerance) in zip(rows, cases):
        assert row["key"] == key and "error" not in row, row
        assert row["diff"] < tolerance, row


def quantized_tiny_bert():
    """``(key, model, inputs, reload tolerance)``: the tiny BERT classifier
    after ``quantize_model``, its report and outputs checked."""
    import keras

    from bert4keras.layers.quantization import SUBLAYER_DTYPES, quantize_model

    model = tiny_classifier()
    inputs = tiny_inputs()
    assert SUBLAYER_DTYPES not in model.get_layer("Transformer-0-FeedForward").get_config()
    reference = model_outputs(model, inputs)[0]
    collect = gc.collect
    from bert4keras import allocator

    trims, trim = [], allocator.trim_heap
    allocator.trim_heap = lambda: trims.append(1) or trim()
    try:
        report = quantize_model(model, "int8")
    finally:
        allocator.trim_heap = trim
    assert gc.collect is collect  # one collection inside, the real one put back
    assert trims == [1]  # the dropped float kernels' memory given back once, at the end
    projections = {"%s/%s" % (block, name)
                   for i in range(TINY["num_hidden_layers"])
                   for block, names in (("Transformer-%d-MultiHeadSelfAttention" % i,
                                         ("q_dense", "k_dense", "v_dense", "o_dense")),
                                        ("Transformer-%d-FeedForward" % i,
                                         ("i0_dense", "o_dense")))
                   for name in names}
    assert set(report["quantized"]) == projections | {"head"}
    assert "no matmul" in report["skipped"]["Embedding-Token"]
    config = model.get_layer("Transformer-0-FeedForward").get_config()
    assert keras.dtype_policies.get(config[SUBLAYER_DTYPES]["o_dense"]).name == \
        "int8_from_float32"
    out = model_outputs(model, inputs)[0]
    assert 1e-6 < np.abs(out - reference).max() < 0.02
    assert (out.argmax(-1) == reference.argmax(-1)).mean() >= 0.75
    return "bert-int8", model, inputs, 1e-5


def quantized_dense_sublayers():
    """``(key, model, inputs, reload tolerance)``: conditional LayerNorm,
    GatedAttentionUnit and GlobalPointer after ``model.quantize("int8")``."""
    import keras

    from bert4keras.layers import (ConditionalLayerNormalization, GatedAttentionUnit,
                                   GlobalPointer)

    keras.utils.set_random_seed(2)
    x = keras.Input((6, 16))
    c = keras.Input((8,))
    h = ConditionalLayerNormalization(hidden_units=12, name="cln")([x, c])
    h = GatedAttentionUnit(units=20, key_size=8, name="gau")(h)
    scores = GlobalPointer(heads=2, head_size=8, name="gp")(h)
    model = keras.Model([x, c], scores)
    # non-zero conditional projections (zero-initialised), so that they matter
    for layer in (model.get_layer("cln").beta_dense, model.get_layer("cln").gamma_dense):
        layer.kernel.assign(np.random.RandomState(3).normal(size=layer.kernel.shape) * 0.1)
    rng = np.random.RandomState(2)
    inputs = [rng.normal(size=(2, 6, 16)).astype("float32"),
              rng.normal(size=(2, 8)).astype("float32")]
    model.quantize("int8")
    quantized = {layer.path for layer in model._flatten_layers()
                 if getattr(layer, "quantization_mode", None)}
    assert {"cln/hidden_dense", "cln/beta_dense", "cln/gamma_dense", "gp/dense"} <= quantized
    assert any(path.startswith("gau/") for path in quantized)
    return "layers-int8", model, inputs, 1e-4


def test_one_collection_skips_only_the_quantizing_threads_collections():
    """Inside ``quantize_model``'s ``_one_collection``, the thread that
    entered it skips ``gc.collect()`` (Keras runs one per dropped kernel);
    another thread's call still frees garbage cycles; one collection at exit,
    and the real ``gc.collect`` is back."""
    import threading
    import weakref

    from bert4keras.layers.quantization import _one_collection

    class Node:
        pass

    def garbage_cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    collect = gc.collect
    gc.disable()  # no automatic collection may free the cycles behind the test's back
    try:
        with _one_collection():
            mine = garbage_cycle()
            assert gc.collect() == 0 and mine() is not None
            theirs = garbage_cycle()
            worker = threading.Thread(target=gc.collect)
            worker.start()
            worker.join()
            assert theirs() is None and mine() is None  # the other thread's collection ran
            mine = garbage_cycle()
        assert mine() is None  # the collection at the end
        assert gc.collect is collect
    finally:
        gc.enable()


def test_with_dtype_policy_bfloat16_tiny():
    from bert4keras.layers.quantization import with_dtype_policy

    model = tiny_classifier()
    inputs = tiny_inputs()
    reference = model_outputs(model, inputs)[0]
    bf16 = with_dtype_policy(model, "bfloat16")
    ffn = bf16.get_layer("Transformer-0-FeedForward")
    assert ffn.o_dense.compute_dtype == "bfloat16"
    assert ffn.o_dense.kernel.dtype == "bfloat16"
    out = model_outputs(bf16, inputs)[0].astype("float32")
    assert np.abs(out - reference).max() < 0.04  # 10 bf16 unit roundoffs of outputs <= 1
    model.quantize("int8")
    with pytest.raises(ValueError, match="quantized"):
        with_dtype_policy(model, "bfloat16")


@pytest.mark.skipif(not os.path.exists(os.path.join(SMALL, "bert_model.ckpt.index")),
                    reason="shipped small BERT missing")
def test_shipped_small_bert_mlm_top1_agrees():
    from bert4keras.layers.quantization import quantize_model, with_dtype_policy
    from bert4keras.models import build_transformer_model
    from bert4keras.tokenizers import Tokenizer

    tokenizer = Tokenizer(os.path.join(SMALL, "vocab.txt"), do_lower_case=True)
    model = build_transformer_model(os.path.join(SMALL, "bert_config.json"),
                                    os.path.join(SMALL, "bert_model.ckpt"), with_mlm=True)
    texts = ["今天天气很好，我们一起去公园散步吧。", "这家餐厅的菜味道不错，服务也很周到。"]
    ids = [tokenizer.encode(t, maxlen=32)[0] for t in texts]
    length = max(map(len, ids))
    token_ids = np.array([i + [0] * (length - len(i)) for i in ids])
    inputs = [token_ids, np.zeros_like(token_ids)]
    real = token_ids > 0
    reference = model_outputs(model, inputs)[0]
    bf16 = model_outputs(with_dtype_policy(model, "bfloat16"), inputs)[0].astype("float32")
    quantize_model(model, "int8")
    int8 = model_outputs(model, inputs)[0]
    for name, out in (("int8", int8), ("bfloat16", bf16)):
        agree = (out.argmax(-1) == reference.argmax(-1))[real].mean()
        assert agree >= 0.9, (name, agree)
        assert np.abs(out - reference).max() < 0.1, name  # probabilities


def test_benchmark_quick_smoke():
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import quantized_inference

    from bert4keras.layers.tf_direct import u8s8_available

    results = quantized_inference.main(["--quick", "--models", "base", "--batches", "1",
                                        "--no-torch", "--tf-int8-xla"])
    assert results["quantized_layers"] == {"base": 12}
    rows = {row["row"]: row for row in results["rows"]}
    assert set(rows) == {"ours fp32", "ours int8", "ours bf16", "ours int8-xla"}
    assert 0 < rows["ours int8"]["max_abs_diff_vs_own_fp32"] < 0.05
    assert abs(rows["ours int8"]["max_abs_diff_vs_own_fp32"]
               - rows["ours int8-xla"]["max_abs_diff_vs_own_fp32"]) < 0.01
    assert set(results["matmul"]) == {"fp32", "int8->int32", "bf16", "int8->int32 XLA"} | (
        {"u8s8->int32 oneDNN"} if u8s8_available() else set())


def test_onednn_verbose_parsing():
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import quantized_inference

    log = "\n".join([
        "onednn_verbose,v1,info,cpu,runtime:threadpool",
        "onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_f32::blocked:ab:f0 "
        "wei_f32::blocked:ab:f0 dst_f32::blocked:ab:f0,,,32x64:64x128,0.05",
        "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,"
        "src:bf16::blocked:ab::f0 wei:bf16::blocked:ab::f0 dst:bf16::blocked:ab::f0,,,"
        "32x64:64x128,0.04",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src_s8::blocked:ab::f0 "
        "dst_s8::blocked:AB16b64a4b::f0,,,64x128,0.01",
        "onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_s8::blocked:ab:f0 "
        "wei_s8::blocked:ab:f0 dst_s32::blocked:ab:f0,,,32x64:64x128,0.02",
        "onednn_verbose,v1,primitive,exec,cpu,inner_product,brgemm:avx512_core_vnni,"
        "forward_inference,src_u8::blocked:ab::f0 wei_s8:p:blocked:AB16b64a4b::f0 "
        "dst_s32::blocked:ab::f0,,,mb32ic64oc128,0.03"])
    tf = quantized_inference.onednn_kernels(log, "tensorflow")
    assert tf == {"fp32": "oneDNN gemm_api", "int8->int32": "oneDNN gemm_api",
                  "bf16": "oneDNN matmul brg_matmul:avx10_1_512_amx",
                  "u8s8->int32 oneDNN": "oneDNN inner_product brgemm:avx512_core_vnni"}
    torch = quantized_inference.onednn_kernels(log, "torch")
    assert "int8->int32" not in torch and torch["torch._int_mm"] == "oneDNN gemm_api"
    assert quantized_inference.onednn_kernels(log.splitlines()[0], "tensorflow") == {}


def test_benchmark_jax_rows_and_probe():
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import quantized_inference

    results = quantized_inference.main(["--quick", "--models", "base", "--batches", "1",
                                        "--no-torch", "--backends", "jax",
                                        "--probe-backends", "jax"])
    assert results["quantized_layers"] == {"base": 12}
    rows = {row["row"]: row for row in results["rows"]}
    assert set(rows) == {"ours-jax fp32", "ours-jax int8", "ours-jax bf16"}
    assert 0 < rows["ours-jax int8"]["max_abs_diff_vs_own_fp32"] < 0.05
    kernels = results["kernels"]["jax"]
    assert set(kernels) == {"fp32", "int8->int32", "bf16"}
    assert all(row["kernel"] and row["gops"] > 0 for row in kernels.values())


@pytest.mark.skipif(not os.path.exists(os.path.join(SMALL, "vocab.txt")),
                    reason="shipped vocab missing")
def test_benchmark_sentiment_accuracy_tiny(tmp_path):
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import quantized_inference
    from bert4keras.datasets import load_sentiment_reviews

    try:
        load_sentiment_reviews()
    except Exception as error:  # noqa: BLE001 - no cached data and no network
        pytest.skip("sentiment reviews unavailable: %s" % error)
    import keras

    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(0)
    bert = build_transformer_model(**dict(TINY, vocab_size=21128, max_position=128))
    probs = keras.layers.Dense(2, activation="softmax", name="head")(bert.output[:, 0])
    path = str(tmp_path / "tiny.keras")
    keras.Model(bert.inputs, probs).save(path)
    results = quantized_inference.main(["--skip-speed", "--model", path, "--limit", "16",
                                        "--maxlen", "32"])
    out = results["sentiment"]["tensorflow"]
    assert out["test_texts"] == 16 and out["quantized_layers"] == 13
    for key in ("fp32", "int8", "bf16"):
        assert 0 <= out["acc_" + key] <= 1
    assert out["int8_reload_max_diff"] is not None and out["int8_reload_max_diff"] < 1e-4


def count_u8s8_products(monkeypatch):
    """Patch ``tf_direct.u8s8_matmul`` to count its calls (traces, in graph mode)."""
    from bert4keras.layers import tf_direct

    calls = []
    real = tf_direct.u8s8_matmul

    def counted(a, b):
        calls.append(tuple(a.shape))
        return real(a, b)

    monkeypatch.setattr(tf_direct, "u8s8_matmul", counted)
    return calls


def test_int8_on_tensorflow_uses_onednn_in_graph_mode_and_matches_keras(monkeypatch):
    """On TensorFlow, where the oneDNN u8 x s8 GEMM is exact here,
    ``quantize_model(..., "int8")`` leaves the model in graph mode and our
    ``Dense`` sends its integer product there: the outputs equal Keras' own
    int8 call (and the NumPy int8 reference), with and without an
    activation, at 2-D and 3-D inputs; under XLA (``jit_compile=True``) and
    under a gradient tape Keras' own call runs, and the gradient is Keras'."""
    import keras

    from bert4keras.layers import Dense, quantization, tf_direct
    from bert4keras.layers.quantization import quantize_model

    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow's oneDNN kernel")
    import tensorflow as tf

    available = tf_direct.u8s8_available()
    small = tiny_classifier()  # kernels of 32 x 48 weights on average: XLA's int8 dot
    assert quantize_model(small, "int8")["jit_compile"] is True
    rng = np.random.RandomState(5)
    x = rng.normal(size=(4, 6, 16)).astype("float32")
    inputs = keras.Input((6, 16))
    model = keras.Model(inputs, Dense(24, name="d")(inputs))
    layer = model.get_layer("d")
    layer.bias.assign(rng.normal(size=24).astype("float32"))
    kernel, bias = (np.asarray(w, "float64") for w in layer.get_weights())
    model.predict(x, verbose=0)  # a predict function traced before quantizing
    calls = count_u8s8_products(monkeypatch)
    monkeypatch.setattr(quantization, "ONEDNN_MIN_MEAN_KERNEL", 0)  # this tiny layer too
    report = quantize_model(model, "int8")
    assert report["jit_compile"] is (not available) and model.jit_compile is (not available)
    got = model.predict(x, verbose=0)
    assert len(calls) == (1 if available else 0)  # one trace of the predict function
    if not available:
        pytest.skip("no exact oneDNN u8 x s8 kernel in this TensorFlow / CPU")
    keras_own = keras.ops.convert_to_numpy(keras.layers.Dense._int8_call(layer, tf.constant(x)))
    np.testing.assert_allclose(got, keras_own, rtol=1e-6, atol=1e-6)
    expected = numpy_int8_dense(x.astype("float64"), kernel, bias)
    np.testing.assert_allclose(got, expected, atol=2e-3 * np.abs(expected).max())

    for activation, shape in (("gelu", (3, 16)), ("relu", (2, 5, 16))):
        dense = Dense(40, activation=activation)
        dense.build(shape)
        dense.quantize("int8")
        values = tf.constant(rng.normal(size=shape).astype("float32") * 3)
        ours = tf.function(lambda t, dense=dense: dense(t))(values)
        keras_own = tf.function(lambda t, dense=dense: keras.layers.Dense._int8_call(dense, t))(
            values)
        assert ours.shape == keras_own.shape == shape[:-1] + (40,)
        np.testing.assert_allclose(ours.numpy(), keras_own.numpy(), rtol=1e-5, atol=1e-5)

    del calls[:]
    xla = tf.function(lambda t: layer(t), jit_compile=True)(tf.constant(x))
    assert calls == []  # XLA's own int8 dot: the oneDNN op has no XLA kernel
    np.testing.assert_allclose(xla.numpy(), got, atol=2e-3 * np.abs(got).max())

    values = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(values)
        loss = tf.reduce_sum(layer(values) ** 2)
    assert calls == []  # a tape may record: Keras' call, with its custom gradient
    grad = tape.gradient(loss, values)
    with tf.GradientTape() as tape:
        tape.watch(values)
        loss = tf.reduce_sum(keras.layers.Dense._int8_call(layer, values) ** 2)
    np.testing.assert_allclose(grad.numpy(), tape.gradient(loss, values).numpy(), rtol=1e-6)


def test_u8s8_exactness_check_refuses_a_saturating_kernel():
    """The check behind ``u8s8_available`` multiplies 255s by +-127s: a
    kernel that sums pairs of u8 x s8 products in int16 with saturation (the
    pre-VNNI instruction) fails it and is never used."""
    from bert4keras.layers import tf_direct

    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow's oneDNN kernel")
    import tensorflow as tf

    def saturating(a, b, bias, min_a, max_a, min_b, max_b, Toutput):
        products = (tf.cast(tf.bitcast(a, tf.uint8), tf.int32)[:, :, None]
                    * tf.cast(tf.bitcast(b, tf.int8), tf.int32)[None])
        pairs = tf.clip_by_value(products[:, 0::2] + products[:, 1::2], -32768, 32767)
        return tf.bitcast(tf.reduce_sum(pairs, 1), tf.qint32), min_a, max_a

    def exact(a, b, bias, min_a, max_a, min_b, max_b, Toutput):
        out = tf.matmul(tf.cast(tf.bitcast(a, tf.uint8), tf.int32),
                        tf.cast(tf.bitcast(b, tf.int8), tf.int32))
        return tf.bitcast(out, tf.qint32), min_a, max_a

    assert not tf_direct.multiplies_exactly(saturating)
    assert tf_direct.multiplies_exactly(exact)


def test_int8_on_tensorflow_runs_under_xla_and_matches_numpy(monkeypatch):
    """Where the oneDNN u8 x s8 GEMM is not exact (made so here),
    ``quantize_model(..., "int8")`` sets ``model.jit_compile`` on TensorFlow
    (XLA's int8 dot), and ``predict`` then compiled by XLA still computes
    Keras' int8 scheme: a one-``Dense`` model equals the NumPy int8
    reference, and the tiny BERT's predictions equal the same model's in
    graph mode (the oneDNN path, where available) up to rounding ties of the
    int8 activations."""
    import keras

    from bert4keras.layers.quantization import quantize_model

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the XLA switch is TensorFlow's")
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    x = np.random.RandomState(5).normal(size=(4, 6, 16)).astype("float32")
    inputs = keras.Input((6, 16))
    model = keras.Model(inputs, keras.layers.Dense(24, name="d")(inputs))
    kernel, bias = (np.asarray(w, "float64") for w in model.get_layer("d").get_weights())
    model.predict(x, verbose=0)  # a graph-mode predict function exists before quantizing
    from bert4keras.layers import tf_direct

    monkeypatch.setattr(tf_direct, "u8s8_available", lambda: False)
    report = quantize_model(model, "int8")
    assert report["jit_compile"] is True and model.jit_compile is True
    got = model.predict(x, verbose=0)
    expected = numpy_int8_dense(x.astype("float64"), kernel, bias)
    np.testing.assert_allclose(got, expected, atol=2e-3 * np.abs(expected).max())

    bert = tiny_classifier()
    quantize_model(bert, "int8")
    monkeypatch.undo()
    inputs = tiny_inputs()
    xla = bert.predict(inputs, verbose=0)
    graph = np.asarray(tf.function(lambda a, b: bert([a, b], training=False))(*inputs))
    assert np.abs(xla - graph).max() < 0.01
    assert (xla.argmax(-1) == graph.argmax(-1)).all()
