"""Small ``keras.ops`` helpers shared by the layers and models.

Everything here runs on every Keras 3 backend (TensorFlow, JAX, PyTorch). The
one backend-specific piece is :func:`check_max_length`, which on TensorFlow adds
a run-time assertion for sequence lengths that are unknown when the graph is
traced.

bert4keras 0.11.5's public names live here too (the end of the file):
``keras``, ``K`` (the Keras 2 backend API on ``keras.ops``, see
:mod:`bert4keras.backend_k`), ``search_layer``, ``set_gelu``,
``piecewise_linear``, ``attention_normalize``, ``root_mean_square``, ...
"""

import math
import os

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
    Computed by ``keras.ops.gelu(x, approximate=False)``: the same formula on
    TensorFlow and JAX (fused by their compilers), one fused kernel
    (``torch.nn.functional.gelu``) instead of five elementwise passes on torch.
    """
    return ops.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="bert4keras")
def gelu_tanh(x):
    """GELU with the tanh approximation (GPT-2's ``gelu_new``)."""
    return keras.activations.gelu(x, approximate=True)


def _gelu_erf_slope(x):
    """``d gelu_erf / dx = Phi(x) + x phi(x)`` (standard normal cdf and pdf)."""
    return (0.5 * (1.0 + ops.erf(x * math.sqrt(0.5)))
            + x * ops.exp(-0.5 * ops.square(x)) * (1.0 / math.sqrt(2.0 * math.pi)))


def _gelu_tanh_slope(x):
    """``d gelu_tanh / dx`` for ``0.5 x (1 + tanh(c (x + 0.044715 x^3))),
    c = sqrt(2 / pi)``."""
    c = math.sqrt(2.0 / math.pi)
    t = ops.tanh(c * (x + 0.044715 * x * ops.square(x)))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - ops.square(t)) * c * (
        1.0 + 3.0 * 0.044715 * ops.square(x))


_SLOPES = {gelu_erf: _gelu_erf_slope, gelu_tanh: _gelu_tanh_slope}


def training_activation(activation):
    """``activation`` for a training pass: the same forward values, and for
    the GELUs on TensorFlow and JAX only the input kept for the backward pass.

    Differentiating ``0.5 x (1 + erf(x / sqrt(2)))`` op by op keeps three or
    four intermediates of the input's shape (TensorFlow: ``0.5 x``,
    ``erfc(-x / sqrt(2))``, its argument and the output; JAX: the error
    function's value and its derivative); in BERT-base's feed-forward block,
    batch 16 x 128, each is 24 MiB per layer. Here the gradient is
    ``upstream * gelu'(x)``, computed from ``x`` in float32 in the backward
    pass (``keras.ops.custom_gradient``), as torch's fused ``gelu`` does.
    Other activations, and every activation on torch (whose ``gelu`` keeps
    only its input already), are returned unchanged.

    Args:
        activation: a callable (e.g. ``keras.activations.get(name)``).

    Returns:
        A callable ``x -> activation(x)``, any shape and float dtype.
    """
    slope = _SLOPES.get(activation)
    if slope is None or keras.backend.backend() not in ("tensorflow", "jax"):
        return activation

    @ops.custom_gradient
    def forward(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            x32 = ops.cast(x, "float32")
            return ops.cast(ops.cast(upstream, "float32") * slope(x32), x.dtype)

        return activation(x), grad

    return forward


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
        name: e.g. ``'gelu'`` (exact erf GELU, or tanh after
            ``set_gelu('tanh')``), ``'gelu_new'`` (tanh approximation),
            ``'relu'``, ``'swish'``, or any Keras activation name; a callable
            passes through.

    Returns:
        A callable or a Keras activation name.

    Raises:
        ValueError: for an unknown name.
    """
    if callable(name) or name is None:
        return name
    key = str(name).lower()
    if key not in _ACTIVATIONS:
        try:  # a Keras name such as 'sigmoid' or 'softmax'
            return keras.activations.get(key)
        except ValueError:
            pass
        raise ValueError(
            "Unknown activation %r; known: %s" % (name, ", ".join(sorted(_ACTIVATIONS)))
        )
    return _ACTIVATIONS[key]


def sequence_masking(x, mask=None, value=0.0, axis=None, bias=None, return_mask=False):
    """Set the positions of ``x`` where ``mask`` is 0 to ``value`` (0.11.5's signature).

    Args:
        x: tensor, e.g. ``(batch, seq_len, hidden)`` or attention scores
            ``(batch, heads, q_len, k_len)``.
        mask: ``(batch, seq_len)``, 1/True for real tokens, or None.
        value: the fill value; ``'-inf'``/``-inf`` and ``'inf'``/``inf`` mean
            -/+1e12, so that a fully masked row stays finite (0.11.5 filled
            a literal infinity).
        axis: the axis of ``x`` that ``mask`` runs along (default 1), or a
            list of axes: a position is kept only if it is kept along every
            one of them (e.g. ``[2, 3]`` for span scores).
        bias: an extra additive float bias broadcastable to ``x``, or a bool
            tensor that is and-ed with the mask.
        return_mask: also return the mask aligned to ``x``'s rank (bool) or
            None.

    Returns:
        A tensor of the shape of ``x`` (and the aligned mask). In float16 a
        fill value beyond its range becomes +-65504, so that masked rows stay
        finite as in float32.
    """
    full_mask = None
    x = ops.convert_to_tensor(x)
    if isinstance(value, (str, float)) and value in ("-inf", -math.inf):
        value = NEG_INF
    elif isinstance(value, (str, float)) and value in ("inf", math.inf):
        value = -NEG_INF
    if isinstance(value, (int, float)) and keras.backend.standardize_dtype(x.dtype) == "float16":
        value = min(max(float(value), -65504.0), 65504.0)
    bias_is_bool = bias is not None and keras.backend.standardize_dtype(bias.dtype) == "bool"
    if mask is not None:
        axes = [1] if axis is None else list(axis) if isinstance(axis, (list, tuple)) \
            else [axis]
        ndim = len(x.shape)
        mask = ops.cast(mask, "bool")
        for ax in axes:
            aligned = align(mask, [0, ax % ndim], ndim)
            full_mask = aligned if full_mask is None else ops.logical_and(full_mask, aligned)
    if bias is not None:
        if bias_is_bool:
            full_mask = bias if full_mask is None else ops.logical_and(full_mask, bias)
        else:
            x = x + ops.cast(bias, x.dtype)
    if full_mask is not None:
        # where, not x * mask + value * (1 - mask): in float16 value * 0 may be inf * 0 = nan
        x = ops.where(full_mask, x, ops.cast(value, x.dtype))
    return (x, full_mask) if return_mask else x


def align(tensor, axes, ndim=None):
    """Give ``tensor`` new size-1 axes so that its axis ``i`` sits at ``axes[i]``.

    A batch version of ``expand_dims``: e.g. ``align(mask, [0, 3], 4)`` turns
    ``(batch, k_len)`` into ``(batch, 1, 1, k_len)``. Negative entries count
    from the end of the new rank ``ndim`` (default ``max(axes) + 1``).

    Raises:
        ValueError: ``len(axes)`` differs from the rank of ``tensor``.
    """
    if len(axes) != len(tensor.shape):
        raise ValueError("align: %d axes given for a rank-%d tensor" % (len(axes),
                                                                       len(tensor.shape)))
    ndim = ndim or max(axes) + 1
    targets = sorted(a % ndim for a in axes)
    for position in range(ndim):
        if position not in targets:
            tensor = ops.expand_dims(tensor, position)
    return tensor


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
    """Multi-label softmax cross-entropy (Su 2020, https://kexue.fm/archives/7359).

    ``loss = log(1 + sum_i (1 - y_i) e^{s_i}) + log(1 + sum_i y_i e^{-s_i})``:
    with 0/1 labels the first sum runs over the negative classes and the
    second over the positive ones; labels in ``[0, 1]`` weight both sums
    (soft labels, https://kexue.fm/archives/9064). A score of ``-inf`` (or
    <= -1e12) marks a class to be ignored. Predict the classes with score > 0.

    Args:
        y_true: labels in ``[0, 1]``, same shape as ``y_pred``, e.g. ``(batch, classes)``.
        y_pred: raw scores (no sigmoid/softmax), same shape.

    Returns:
        ``(batch, ...)`` loss with the last axis reduced; float32 for
        float16/bfloat16 scores (the +-1e12 terms overflow float16).
    """
    if keras.backend.standardize_dtype(y_pred.dtype) in ("float16", "bfloat16"):
        y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, y_pred.dtype)
    valid = ops.greater(y_pred, NEG_INF)
    # log(0) = -inf is clamped to -1e12: the class drops out of the sum and no inf - inf
    log_neg = ops.maximum(ops.log(1.0 - y_true), NEG_INF)
    log_pos = ops.maximum(ops.log(y_true), NEG_INF)
    y_neg = ops.where(valid, y_pred, NEG_INF) + log_neg
    y_pos = ops.where(valid, -y_pred, NEG_INF) + log_pos
    zeros = ops.zeros_like(y_pred[..., :1])
    y_neg = ops.concatenate([y_neg, zeros], axis=-1)
    y_pos = ops.concatenate([y_pos, zeros], axis=-1)
    return ops.logsumexp(y_neg, axis=-1) + ops.logsumexp(y_pos, axis=-1)


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False):
    """:func:`multilabel_categorical_crossentropy` with the positives given as class ids.

    Args:
        y_true: int ``(..., num_positive)`` ids of the positive classes
            (padded with 0 when ``mask_zero``: class 0 is then a dummy
            that is never scored).
        y_pred: raw scores ``(..., num_classes)``.
        mask_zero: treat id 0 as padding.

    Returns:
        ``(...)`` float32 loss. The negative term is
        ``log(sum_all e^s) + log(1 - sum_pos e^s / sum_all e^s)`` (clipped at
        ``epsilon``), as in Su's sparse version (https://kexue.fm/archives/7359).
    """
    y_pred = ops.cast(y_pred, "float32")
    zeros = ops.zeros_like(y_pred[..., :1])
    y_pred = ops.concatenate([y_pred, zeros], axis=-1)
    if mask_zero:
        infs = zeros - NEG_INF
        y_pred = ops.concatenate([infs, y_pred[..., 1:]], axis=-1)
    y_pos_2 = batch_gather(y_pred, y_true)
    y_pos_1 = ops.concatenate([y_pos_2, zeros], axis=-1)
    if mask_zero:
        y_pred = ops.concatenate([-infs, y_pred[..., 1:]], axis=-1)
        y_pos_2 = batch_gather(y_pred, y_true)
    pos_loss = ops.logsumexp(-y_pos_1, axis=-1)
    all_loss = ops.logsumexp(y_pred, axis=-1)
    aux_loss = ops.logsumexp(y_pos_2, axis=-1) - all_loss
    aux_loss = ops.clip(1.0 - ops.exp(aux_loss), keras.config.epsilon(), 1.0)
    return pos_loss + all_loss + ops.log(aux_loss)


def batch_gather(params, indices):
    """Gather along the first non-batch axis, batch by batch (0.11.5's ``batch_gather``).

    With ``indices`` of rank ``r``, the first ``r - 1`` axes of ``params`` and
    ``indices`` are batch axes: ``out[b..., j, rest...] = params[b...,
    indices[b..., j], rest...]`` (``tf.gather(..., batch_dims=r - 1)``).

    Args:
        params: ``(B..., n, rest...)``.
        indices: ``(B..., m)`` ints (floats are cast).

    Returns:
        ``(B..., m, rest...)``.
    """
    indices = ops.cast(indices, "int32")
    rank = len(indices.shape)
    extra = len(params.shape) - rank
    index = indices
    for _ in range(extra):
        index = ops.expand_dims(index, -1)
    index = ops.broadcast_to(index, tuple(ops.shape(indices)) + tuple(ops.shape(params)[rank:]))
    return ops.take_along_axis(params, index, axis=rank - 1)


def sinusoidal_embeddings(positions, output_dim, base=10000):
    """Interleaved sinusoidal embeddings ``[sin t0, cos t0, sin t1, cos t1, ...]``.

    ``t_i = position * base^(-2i / output_dim)`` (Vaswani et al. 2017, with
    sin/cos interleaved as RoFormer and NEZHA store them; ``base`` 10000).

    Args:
        positions: float tensor of any shape ``(...)``.
        output_dim: an even width ``d``.

    Returns:
        float32 tensor ``(..., d)``.
    """
    if output_dim % 2:
        raise ValueError("sinusoidal embeddings need an even width, got %d" % output_dim)
    inv_freq = float(base) ** (-2.0 * (ops.arange(output_dim // 2, dtype="float32") / output_dim))
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
        *tensors: ``(batch, seq_len, ..., d)`` each, e.g. ``(batch, seq_len,
            heads, d)`` or ``(batch, seq_len, d)``.

    Returns:
        A list of the rotated tensors, same shapes (0.11.5 returned a lone
        tensor unwrapped; here it is always a list).

    Raises:
        ValueError: no tensor given.
    """
    if not tensors:
        raise ValueError("apply_rotary_position_embeddings needs at least one tensor")
    tensors = [ops.convert_to_tensor(x) for x in tensors]
    ndim = len(tensors[0].shape)
    sinusoidal = align(ops.cast(sinusoidal, tensors[0].dtype), [0, 1, -1], ndim)
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


# -- bert4keras 0.11.5 names ------------------------------------------------------------

from bert4keras import backend_k as K  # noqa: E402, F401  (re-exported: backend.K)
from bert4keras.backend_k import dtype as _strict_dtype  # noqa: E402
from bert4keras.backend_k import flatten, reshape, symbolic, where  # noqa: E402,F401
from bert4keras.backend_k_runtime import pool1d  # noqa: E402,F401

#: True when Keras runs on TensorFlow (0.11.5: ``tf.keras`` instead of Keras 2.3).
is_tf_keras = keras.backend.backend() == "tensorflow"
#: ``RECOMPUTE=1`` in the environment: build_transformer_model recomputes its
#: Transformer blocks in the backward pass (:mod:`bert4keras.models.recompute`).
do_recompute = os.environ.get("RECOMPUTE", "0").strip().lower() in ("1", "true", "yes", "on")


def get_available_gpus():
    """Names of the GPUs the current Keras backend sees (empty on CPU)."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    if name == "torch":
        import torch

        return ["cuda:%d" % i for i in range(torch.cuda.device_count())]
    return []


def set_gelu(version):
    """Choose what the activation name ``'gelu'`` means in model configs.

    Args:
        version: ``'erf'`` (exact, the default) or ``'tanh'`` (GPT-2's
            approximation). Applies to models built afterwards.

    Raises:
        ValueError: another version.
    """
    version = str(version).lower()
    if version not in ("erf", "tanh"):
        raise ValueError("set_gelu: version must be 'erf' or 'tanh', got %r" % version)
    _ACTIVATIONS["gelu"] = gelu_erf if version == "erf" else gelu_tanh


def piecewise_linear(t, schedule, from_zero=True):
    """``{1000: 1, 2000: 0.1}``-style piecewise linear function of ``t``
    (:func:`bert4keras.optimizers.piecewise_linear`, float32 tensor)."""
    from bert4keras.optimizers import piecewise_linear as schedule_value

    return schedule_value(t, schedule, from_zero=from_zero)


def search_layer(inputs, name, exclude_from=None):
    """Find the layer called ``name`` upstream of ``inputs`` (or None).

    Args:
        inputs: a layer, a model, or a symbolic tensor of a functional model
            (``model.output``).
        name: the layer name, e.g. ``'Embedding-Token'``.
        exclude_from: layers already visited (internal).

    Raises:
        ValueError: ``inputs`` is a concrete tensor (inside a loss function
            there is no graph to walk: use ``model.get_layer(name)``).
    """
    if exclude_from is None:
        exclude_from = set()
    if isinstance(inputs, keras.layers.Layer):
        layer = inputs
    else:
        history = getattr(inputs, "_keras_history", None)
        if history is None:
            raise ValueError("search_layer needs a layer or a symbolic tensor of a functional "
                             "model (model.output), got %r; look the layer up with "
                             "model.get_layer(%r)" % (type(inputs).__name__, name))
        layer = history[0]
    if layer.name == name:
        return layer
    if id(layer) in exclude_from:
        return None
    exclude_from.add(id(layer))
    if isinstance(layer, keras.Model):
        for sub in layer.layers:
            if sub.name == name:
                return sub
    nodes = getattr(layer, "_inbound_nodes", None) or []
    for tensor in (nodes[0].input_tensors if nodes else []):
        found = search_layer(tensor, name, exclude_from)
        if found is not None:
            return found
    return None


def dtype(x):
    """``K.dtype(x)``, or None when ``x`` has no dtype (a Python number)."""
    try:
        return _strict_dtype(x)
    except AttributeError:
        return None


def divisible_temporal_padding(x, n):
    """Right-pad ``(batch, steps, ...)`` with zeros to a multiple of ``n`` steps."""
    pad = (n - ops.shape(x)[1] % n) % n
    return ops.pad(x, [[0, 0], [0, pad]] + [[0, 0]] * (len(x.shape) - 2))


def root_mean_square(x, axis=None, keepdims=False):
    """``sqrt(mean(x^2))`` over ``axis``."""
    return ops.sqrt(ops.mean(ops.square(x), axis=axis, keepdims=keepdims))


@keras.saving.register_keras_serializable(package="bert4keras")
def swish(x):
    """``x * sigmoid(x)``."""
    return ops.silu(x)


@keras.saving.register_keras_serializable(package="bert4keras")
def leaky_relu(x, alpha=0.2):
    """``max(x, alpha x)``."""
    return ops.leaky_relu(x, negative_slope=alpha)


def attention_normalize(a, mask=None, axis=-1, method="softmax", bias=None):
    """Normalise attention scores ``a`` over ``axis``.

    Methods: ``'softmax'``; ``'squared_relu'``, ``relu(a)^2 / n`` with ``n`` the
    number of unmasked keys (GAU, Hua et al. 2022, arXiv:2202.10447);
    ``'softmax_plus'``, softmax of ``a * log(n) / log(512)`` with ``n >= 16``
    (Su, https://kexue.fm/archives/8823). ``mask`` ``(batch, k_len)`` and
    ``bias`` act as in :func:`sequence_masking` (masked keys get -1e12).

    Returns:
        A tensor of the shape of ``a``.

    Raises:
        ValueError: an unknown method.
    """
    if method not in ("softmax", "squared_relu", "softmax_plus"):
        raise ValueError("attention_normalize: unknown method %r" % (method,))
    a, mask = sequence_masking(a, mask, "-inf", axis, bias, True)
    if method == "softmax":
        return ops.softmax(a, axis=axis)
    if mask is None:
        n = ops.cast(ops.shape(a)[axis], a.dtype)
    else:
        n = ops.sum(ops.cast(ops.broadcast_to(mask, ops.shape(a)), a.dtype), axis=axis,
                    keepdims=True)
    if method == "squared_relu":
        return ops.square(ops.relu(a)) / n
    n = ops.maximum(n, 16.0)  # very short sequences: a smaller scale works better
    return ops.softmax(a * ops.log(n) / math.log(512.0), axis=axis)


@keras.saving.register_keras_serializable(package="bert4keras")
class Sinusoidal(keras.initializers.Initializer):
    """Initializer: a ``(positions, dim)`` table of :func:`sinusoidal_embeddings`."""

    def __call__(self, shape, dtype=None):
        size, dim = shape
        return ops.cast(sinusoidal_embeddings(ops.arange(size, dtype="float32"), dim),
                        dtype or keras.config.floatx())


def recompute_grad(call):
    """0.11.5's recompute decorator for a layer's ``call``: returned unchanged.

    Recomputation is done per Transformer block by ``build_transformer_model``
    when ``RECOMPUTE=1`` (:mod:`bert4keras.models.recompute`); wrap other code
    in ``keras.RematScope`` / ``keras.remat``.
    """
    return call


def graph_mode_decorator(f, *args, **kwargs):
    """Gone with TF1 graph internals.

    Raises:
        NotImplementedError: always; use ``keras.remat`` for recomputation or
            ``tf.custom_gradient`` for a custom gradient.
    """
    raise NotImplementedError("graph_mode_decorator relied on TF1 graph internals; use "
                              "keras.remat (recomputation) or tf.custom_gradient")


custom_objects = {
    "gelu_erf": gelu_erf,
    "gelu_tanh": gelu_tanh,
    "gelu": gelu_erf,
    "root_mean_square": root_mean_square,
    "swish": swish,
    "leaky_relu": leaky_relu,
    "Sinusoidal": Sinusoidal,
    "multilabel_categorical_crossentropy": multilabel_categorical_crossentropy,
}
