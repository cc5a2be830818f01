"""Small ``keras.ops`` helpers shared by the layers and models.

Everything here runs on every Keras 3 backend (TensorFlow, JAX, PyTorch). The
one backend-specific piece is :func:`check_max_length`, which on TensorFlow adds
a run-time assertion for sequence lengths that are unknown when the graph is
traced.
"""

import math

import keras
from keras import ops

#: Additive attention bias for positions that must not be attended to. Added
#: to float32 scores it makes ``exp`` underflow to exactly 0, like the large
#: negative constants of Google BERT (-10000) and Hugging Face (dtype min).
NEG_INF = -1e12


@keras.saving.register_keras_serializable(package="bert4keras")
def gelu_erf(x):
    """Exact GELU, ``0.5 x (1 + erf(x / sqrt(2)))`` (Hendrycks & Gimpel 2016).

    This is the ``gelu`` of Google's BERT and of Hugging Face ``transformers``.
    """
    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))


@keras.saving.register_keras_serializable(package="bert4keras")
def gelu_tanh(x):
    """GELU with the tanh approximation (GPT-2's ``gelu_new``)."""
    return keras.activations.gelu(x, approximate=True)


_ACTIVATIONS = {
    "gelu": gelu_erf,
    "gelu_erf": gelu_erf,
    "gelu_python": gelu_erf,
    "gelu_new": gelu_tanh,
    "gelu_tanh": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": "relu",
    "swish": "silu",
    "silu": "silu",
    "tanh": "tanh",
    "linear": "linear",
}


def get_activation(name):
    """Map an activation name from a Google or Hugging Face config to Keras.

    Args:
        name: e.g. ``'gelu'`` (exact erf GELU), ``'gelu_new'`` (tanh
            approximation), ``'relu'``, ``'swish'``; a callable passes through.

    Returns:
        A callable or a Keras activation name.

    Raises:
        ValueError: for an unknown name.
    """
    if callable(name) or name is None:
        return name
    key = str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(
            "Unknown activation %r; known: %s" % (name, ", ".join(sorted(_ACTIVATIONS)))
        )
    return _ACTIVATIONS[key]


def sequence_masking(x, mask, value=0.0, axis=1):
    """Set the positions of ``x`` where ``mask`` is 0 to ``value``.

    Args:
        x: tensor, e.g. ``(batch, seq_len, hidden)``.
        mask: ``(batch, seq_len)``, 1/True for real tokens, or None (no-op).
        value: the fill value; ``'-inf'`` / ``'inf'`` mean -/+1e12.
        axis: the axis of ``x`` that ``mask`` runs along.

    Returns:
        A tensor of the shape of ``x``. In float16 a fill value beyond its
        range (``'-inf'``) becomes the largest finite float16 (65504), so
        that masked rows stay finite as in float32.
    """
    if mask is None:
        return x
    if value == "-inf":
        value = NEG_INF
    elif value == "inf":
        value = -NEG_INF
    if isinstance(value, (int, float)) and keras.backend.standardize_dtype(x.dtype) == "float16":
        value = min(max(float(value), -65504.0), 65504.0)
    axis = axis % len(x.shape)
    mask = ops.cast(mask, "bool")
    for _ in range(axis - 1):
        mask = ops.expand_dims(mask, 1)
    for _ in range(len(x.shape) - axis - 1):
        mask = ops.expand_dims(mask, -1)
    # where, not x * mask + value * (1 - mask): in float16 value * 0 may be inf * 0 = nan
    return ops.where(mask, x, ops.cast(value, x.dtype))


def padding_visibility(token_ids):
    """``(batch, 1, 1, seq_len)`` float32: 1 for keys that are not [PAD] (id 0)."""
    keep = ops.cast(ops.not_equal(token_ids, 0), "float32")
    return keep[:, None, None, :]


def causal_visibility(seq_len):
    """``(1, 1, seq_len, seq_len)`` float32: query i sees keys j <= i (GPT)."""
    idx = ops.arange(seq_len)
    keep = ops.cast(idx[None, :] <= idx[:, None], "float32")
    return keep[None, None]


def unilm_visibility(segment_ids):
    """``(batch, 1, seq_len, seq_len)`` float32 UniLM seq2seq visibility.

    Source tokens (segment 0) see the whole source; target tokens (segment 1)
    see the source and the target up to themselves (Dong et al. 2019, UniLM).
    Key j is visible to query i iff ``cumsum(s)[j] <= cumsum(s)[i]``.
    """
    idx = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
    keep = ops.cast(idx[:, None, :] <= idx[:, :, None], "float32")
    return keep[:, None]


def visibility_to_bias(keep):
    """Turn a 0/1 visibility tensor into an additive float32 attention bias."""
    return (1.0 - keep) * NEG_INF


def check_max_length(seq_len, max_length, what="input"):
    """Raise a clear error when a sequence is longer than a position table.

    Args:
        seq_len: a Python int or, when traced without a static shape, a
            scalar tensor.
        max_length: the number of rows of the position table.
        what: the layer name, quoted in the message.

    Raises:
        ValueError: statically, when ``seq_len`` is a known int.
        tf.errors.InvalidArgumentError: at run time, on the TensorFlow backend
            when the length was not known while tracing.
    """
    message = (
        "%s: sequence length exceeds max_position=%d; truncate the input "
        "(e.g. Tokenizer.encode(..., maxlen=%d)) or build the model with a "
        "larger max_position" % (what, max_length, max_length)
    )
    if isinstance(seq_len, int):
        if seq_len > max_length:
            raise ValueError("%s (got length %d)" % (message, seq_len))
        return None
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.debugging.assert_less_equal(
            tf.cast(seq_len, "int32"), tf.constant(max_length, "int32"), message=message
        )
    return None


def multilabel_categorical_crossentropy(y_true, y_pred):
    """Multi-label softmax cross-entropy (Su 2020, "softmax + CE for multi-label").

    ``loss = log(1 + sum_{neg} e^{s}) + log(1 + sum_{pos} e^{-s})``.

    Args:
        y_true: 0/1 labels, same shape as ``y_pred``, e.g. ``(batch, classes)``.
        y_pred: raw scores (no sigmoid/softmax), same shape.

    Returns:
        ``(batch, ...)`` loss with the last axis reduced; float32 for
        float16/bfloat16 scores (the +-1e12 terms overflow float16).
    """
    if keras.backend.standardize_dtype(y_pred.dtype) in ("float16", "bfloat16"):
        y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, y_pred.dtype)
    y_pred = (1 - 2 * y_true) * y_pred
    y_neg = y_pred - y_true * (-NEG_INF)
    y_pos = y_pred - (1 - y_true) * (-NEG_INF)
    zeros = ops.zeros_like(y_pred[..., :1])
    y_neg = ops.concatenate([y_neg, zeros], axis=-1)
    y_pos = ops.concatenate([y_pos, zeros], axis=-1)
    return ops.logsumexp(y_neg, axis=-1) + ops.logsumexp(y_pos, axis=-1)


def sinusoidal_embeddings(positions, output_dim):
    """Interleaved sinusoidal embeddings ``[sin t0, cos t0, sin t1, cos t1, ...]``.

    ``t_i = position * 10000^(-2i / output_dim)`` (Vaswani et al. 2017, with
    sin/cos interleaved as RoFormer and NEZHA store them).

    Args:
        positions: float tensor of any shape ``(...)``.
        output_dim: an even width ``d``.

    Returns:
        float32 tensor ``(..., d)``.
    """
    if output_dim % 2:
        raise ValueError("sinusoidal embeddings need an even width, got %d" % output_dim)
    inv_freq = 10000.0 ** (-2.0 * (ops.arange(output_dim // 2, dtype="float32") / output_dim))
    angles = ops.cast(positions, "float32")[..., None] * inv_freq
    table = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
    return ops.reshape(table, tuple(ops.shape(angles)[:-1]) + (output_dim,))


def apply_rotary_position_embeddings(sinusoidal, *tensors):
    """Rotate pairs ``(x[2i], x[2i+1])`` by the angles of ``sinusoidal`` (RoPE).

    RoFormer (Su et al. 2021, https://kexue.fm/archives/8265): with
    ``sinusoidal = [sin t0, cos t0, sin t1, cos t1, ...]`` (see
    :func:`sinusoidal_embeddings`), each pair becomes
    ``(x0 cos t - x1 sin t, x1 cos t + x0 sin t)``.

    Args:
        sinusoidal: ``(batch|1, seq_len, d)``.
        *tensors: ``(batch, seq_len, heads, d)`` each.

    Returns:
        A list of the rotated tensors, same shapes.
    """
    sinusoidal = ops.cast(sinusoidal, tensors[0].dtype)[:, :, None, :]
    cos = ops.repeat(sinusoidal[..., 1::2], 2, axis=-1)
    sin = ops.repeat(sinusoidal[..., 0::2], 2, axis=-1)
    outputs = []
    for x in tensors:
        rotated = ops.reshape(ops.stack([-x[..., 1::2], x[..., 0::2]], axis=-1), ops.shape(x))
        outputs.append(x * cos + rotated * sin)
    return outputs


def t5_relative_position_buckets(q_len, k_len, num_buckets=32, max_distance=128,
                                 bidirectional=True):
    """T5's bucket of each (query, key) distance (Raffel et al. 2020).

    ``d = key - query``. Bidirectional: half the buckets for ``d > 0``; the
    other direction is folded (unidirectional: ``d > 0`` shares bucket 0).
    Of the remaining ``n`` buckets, distances below ``n // 2`` get one
    bucket each and larger ones are spaced logarithmically up to
    ``max_distance`` (everything farther shares the last bucket) -- the
    ``_relative_position_bucket`` of mesh-tensorflow / T5, computed in float32
    like the reference.

    Returns:
        int32 ``(q_len, k_len)`` bucket ids in ``[0, num_buckets)``.
    """
    distance = ops.arange(k_len)[None, :] - ops.arange(q_len)[:, None]
    buckets = ops.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + ops.cast(distance > 0, "int32") * num_buckets
        n = ops.abs(distance)
    else:
        n = ops.maximum(-distance, 0)
    max_exact = num_buckets // 2
    log_ratio = ops.log(ops.cast(ops.maximum(n, 1), "float32") / max_exact)
    log_ratio = log_ratio / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = max_exact + ops.cast(log_ratio, "int32")
    large = ops.minimum(large, num_buckets - 1)
    return ops.cast(buckets + ops.where(n < max_exact, n, large), "int32")
