"""TensorFlow kernels called directly where Keras' generic op is slow on a CPU.

The TensorFlow counterpart of :mod:`bert4keras.layers.direct` (which does this
for PyTorch). One path so far: the integer product of an ``int8``-quantized
``Dense`` (:func:`int8_dense`). Keras multiplies the int8 inputs by the int8
kernel with ``keras.ops.matmul``; in TensorFlow's graph mode (what Keras'
``predict`` runs on a CPU-only machine) that is Eigen's integer contraction,
at 0.38x TensorFlow's own float32 matmul speed, and under XLA it is 1.38x
the float32 matmul on a CPU without AMX. TensorFlow also ships oneDNN's u8 x
s8 -> s32 GEMM (``QuantizedMatMulWithBias``, AVX512-VNNI / AMX), which ran
at 2.81-3.08x its float32 matmul (``benchmarks/quantized_inference.py``'s kernel
probe, 4096 x 768 x 3072, AMD Zen 4 machine, benchmarks/HISTORY.md). :func:`int8_dense`
computes Keras' int8 ``Dense`` call with that GEMM, exactly (same integer
product, same float arithmetic after it).

Also :func:`in_xla_trace`, which tells a layer whether TensorFlow is tracing
it for XLA (where only XLA-compilable ops may appear).
"""

import keras
import numpy as np

from bert4keras.layers.quantization import is_keras_int8_quantizer

__all__ = ["in_xla_trace", "int8_dense", "multiplies_exactly", "u8s8_available",
           "u8s8_matmul"]

#: the largest reduction length whose u8 x s8 sums fit in int32 (255 * 127 * k < 2**31)
MAX_DEPTH = 65536


def in_xla_trace():
    """True while TensorFlow traces a ``jit_compile=True`` function (Keras'
    train step on TensorFlow with ``jit_compile=True``): ``tf.function``
    traces it inside an ``XLAControlFlowContext``. Private TensorFlow API, so
    any failure means False."""
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
    except Exception:  # noqa: BLE001 -- a moved private API must not break a layer
        return False


_OP = []  # [QuantizedMatMulWithBias or None], checked once


def _raw_product(op, a, b):
    """``op(a, b)`` as an int32 tensor: uint8 ``(m, k)`` x int8 ``(k, n)``, a
    zero bias given as qint32 (added to the accumulator as it is; with a
    float bias TensorFlow's kernel passes over the weights to rescale it on
    every call) and ranges that ask for no shift compensation (``min_a =
    0``)."""
    import tensorflow as tf

    one = tf.constant(1.0)
    out = op(a=tf.bitcast(a, tf.quint8), b=tf.bitcast(b, tf.qint8),
             bias=tf.zeros(tf.shape(b)[-1:], tf.qint32), min_a=tf.constant(0.0), max_a=one,
             min_b=-one, max_b=one, Toutput=tf.qint32)[0]
    return tf.bitcast(out, tf.int32)


def multiplies_exactly(op):
    """Whether ``op`` (``QuantizedMatMulWithBias``'s signature) computes exact
    u8 x s8 -> s32 products here, run eagerly: it multiplies 255s by +-127s
    over 64 terms, which a kernel that sums pairs of products in int16 with
    saturation (the pre-VNNI ``vpmaddubsw`` instruction) gets wrong. Any
    error (no kernel registered for this device, ...) means False."""
    import tensorflow as tf

    a = np.full((2, 64), 255, np.uint8)
    b = np.full((64, 4), 127, np.int8)
    b[:, 1::2] = -127
    b[::3, 2] = -127
    try:
        with tf.init_scope():  # eager, even when first asked while tracing
            got = _raw_product(op, tf.constant(a), tf.constant(b)).numpy()
    except Exception:  # noqa: BLE001 -- no kernel registered, another device, ...
        return False
    return bool(np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64)))


def _u8s8_op():
    """TensorFlow's ``QuantizedMatMulWithBias`` (oneDNN's u8 x s8 GEMM) if
    this build has a CPU kernel for it that :func:`multiplies_exactly`, else
    None (checked once)."""
    if not _OP:
        import tensorflow as tf

        op = getattr(tf.raw_ops, "QuantizedMatMulWithBias", None)
        _OP.append(op if op is not None and multiplies_exactly(op) else None)
    return _OP[0]


def u8s8_available():
    """True when :func:`u8s8_matmul` runs here (TensorFlow's oneDNN u8 x s8
    GEMM exists and multiplied exactly in the check of :func:`_u8s8_op`)."""
    return _u8s8_op() is not None


def u8s8_matmul(a, b):
    """Exact ``a @ b`` of uint8 ``(m, k)`` and int8 ``(k, n)`` TensorFlow
    tensors as int32 ``(m, n)``, through oneDNN's integer GEMM; None where
    this TensorFlow has no exact kernel for it (see :func:`_u8s8_op`) or
    ``k`` > :data:`MAX_DEPTH`."""
    op = _u8s8_op()
    if op is None or a.shape[-1] is None or a.shape[-1] > MAX_DEPTH:
        return None
    return _raw_product(op, a, b)


def _could_record():
    """Whether a gradient tape may record the ops traced now (then Keras' own
    call, with its custom gradient, runs instead). Private TensorFlow API:
    any failure means it may."""
    try:
        from tensorflow.python.eager import record

        return bool(record.could_possibly_record())
    except Exception:  # noqa: BLE001
        return True


_XLA = {}  # name / activation -> its tf.function(jit_compile=True)


def _compiled(key, make):
    if key not in _XLA:
        import tensorflow as tf

        _XLA[key] = tf.function(make(), jit_compile=True, autograph=False, reduce_retracing=True)
    return _XLA[key]


def _quantize_rows(epsilon):
    """``x`` float32 ``(..., k)`` -> ``(uint8 (rows + 1, k), scale (..., 1))``:
    ``q + 128`` for ``q`` Keras' ``AbsMaxQuantizer`` int8 (``round(x * 127 /
    (max|x| + epsilon))``, half to even) of every row, then a row of ones
    (whose product with the kernel is the kernel's column sums), in one fused
    XLA kernel: ``max|x|`` as ``max(max x, -min x)``, no clip (``|x| * 127 /
    (max|x| + eps)`` rounds to at most 127)."""
    import tensorflow as tf

    def quantize(x):
        peak = tf.maximum(tf.reduce_max(x, -1, keepdims=True), -tf.reduce_min(x, -1, keepdims=True))
        scale = tf.constant(127.0) / (peak + epsilon)
        shifted = tf.cast(tf.round(x * scale) + 128.0, tf.uint8)
        rows = tf.reshape(shifted, tf.concat([[-1], tf.shape(x)[-1:]], 0))
        return tf.concat([rows, tf.ones_like(rows[:1])], 0), scale

    return quantize


def _epilogue(activation):
    """``(acc int32 (rows + 1, n), kernel_scale (n,), row scale (..., 1), bias
    (n,) or None)`` -> ``activation((acc[:-1] - 128 * acc[-1]) / (kernel_scale
    * row_scale) + bias)`` ``(..., n)``: the exact correction of the uint8
    shift (``acc[-1]``: the kernel's column sums, the ones row's product),
    then Keras' de-scaling, in one XLA kernel."""
    import tensorflow as tf

    def finish(acc, kernel_scale, row_scale, bias):
        x = tf.cast(acc[:-1] - 128 * acc[-1:], tf.float32)
        x = tf.reshape(x, tf.concat([tf.shape(row_scale)[:-1], tf.shape(acc)[-1:]], 0))
        x = x / (kernel_scale * row_scale)
        if bias is not None:
            x = x + bias
        return x if activation is None else activation(x)

    return finish


def int8_dense(layer, inputs):
    """The ``int8`` call of a quantized ``keras.layers.Dense`` (Keras'
    ``Dense._int8_call``) for inference on TensorFlow, with its integer
    product through oneDNN's u8 x s8 GEMM; None where that does not apply:
    another backend, a trace for XLA (the op has no XLA kernel; XLA's own
    int8 dot runs there), a gradient tape that may record (Keras' call has
    the custom gradient), a compute dtype other than float32, LoRA, an
    inputs quantizer other than Keras' int8 ``AbsMaxQuantizer``, an input
    depth over :data:`MAX_DEPTH`, or no exact kernel (:func:`u8s8_matmul`).

    The arithmetic is Keras': the inputs are quantized per row as the layer's
    ``inputs_quantizer`` does, to int8 ``q`` in [-127, 127]; ``q + 128`` is
    a uint8 (the GEMM's left operand is unsigned), so the GEMM gives ``(q +
    128) @ W``, and ``128 *`` the kernel's column sums (the product of one
    more row, of ones, in the same GEMM) is subtracted: the exact int32 ``q @
    W`` of Keras' ``ops.matmul``. Then, as Keras, the
    float32 cast divided by ``kernel_scale * inputs_scale``, bias and
    activation. The quantization before the GEMM and everything after it
    run as two small XLA-compiled functions (one pass each over the data
    instead of one TensorFlow op per step); the outputs equal Keras' (tests/
    test_quantization.py).

    Args:
        layer: a built ``keras.layers.Dense`` (or subclass) quantized ``'int8'``.
        inputs: ``(..., in)`` float32 TensorFlow tensor.

    Returns:
        ``(..., units)`` float32, or None.
    """
    quantizer = getattr(layer, "inputs_quantizer", None)
    if (keras.backend.backend() != "tensorflow" or layer.compute_dtype != "float32"
            or layer.lora_enabled or not is_keras_int8_quantizer(quantizer)
            or inputs.shape[-1] is None or inputs.shape[-1] > MAX_DEPTH
            or in_xla_trace() or _could_record() or _u8s8_op() is None):
        return None
    import tensorflow as tf

    if inputs.dtype != tf.float32:
        return None
    epsilon = float(quantizer.epsilon)
    shifted, row_scale = _compiled(("quantize", epsilon), lambda: _quantize_rows(epsilon))(inputs)
    kernel = tf.convert_to_tensor(layer._kernel)
    acc = u8s8_matmul(shifted, kernel)
    finish = _compiled(("finish", layer.activation), lambda: _epilogue(layer.activation))
    bias = None if layer.bias is None else tf.convert_to_tensor(layer.bias)
    x = finish(acc, tf.convert_to_tensor(layer.kernel_scale), row_scale, bias)
    x.set_shape(inputs.shape[:-1].concatenate(kernel.shape[-1:]))
    return x
