"""``K``: the Keras 2 backend API (``keras.backend``) on Keras 3 ``keras.ops``.

bert4keras 0.11.5 scripts write ``from bert4keras.backend import keras, K`` and
then ``K.sum(x, 1, keepdims=True)``, ``K.batch_dot(a, b, axes)``,
``K.switch(c, x, y)``, ``K.sparse_categorical_crossentropy(y, p)`` ... with the
semantics of Keras 2.3 / ``tf.keras`` 2.x (``keras.backend`` of the Keras 2
reference docs). Keras 3 dropped that module; this one gives the same names,
argument orders, defaults and results, computed with ``keras.ops`` so that
they run on the TensorFlow, JAX and PyTorch backends. It is exposed as
:data:`bert4keras.backend.K`.

Like 0.11.5, ``K.reshape``, ``K.flatten`` and ``K.where`` are bert4keras's
extended versions (see their docstrings); ``K.logsumexp`` and ``K.symbolic``
exist too.

What Keras 3 cannot do keeps its name and raises ``NotImplementedError``
saying what to use instead: ``K.function``, ``K.placeholder``,
``K.get_session``/``K.set_session``, ``K.set_learning_phase``, and
``K.gradients`` outside a TensorFlow graph (it works inside ``fit``'s traced
step on the TensorFlow backend, e.g. in a loss function). ``K.learning_phase``
and ``K.in_train_phase`` read the ``training`` flag of the layer call being
run (Keras 3 has no global learning phase).

Shapes: ``K.shape(x)`` is ``keras.ops.shape(x)``, a tuple whose unknown
entries are scalar tensors (Keras 2 gave one 1-D tensor); indexing, slicing
and arithmetic on it work the same. ``K.int_shape`` is the static shape with
``None`` for unknown sizes.
"""

import builtins
import math

import keras
import numpy as np
from keras import ops

# variables, random numbers, the learning phase, gradients, pooling/convolution/rnn and
# the graph/session functions that Keras 3 no longer has live in the second half
from bert4keras.backend_k_runtime import *  # noqa: F401,F403

# -- configuration --------------------------------------------------------------------


def floatx():
    """The default float type, e.g. ``'float32'`` (``keras.config.floatx``)."""
    return keras.config.floatx()


def set_floatx(value):
    keras.config.set_floatx(value)


def epsilon():
    """The fuzz factor, 1e-7 by default (``keras.config.epsilon``)."""
    return keras.config.epsilon()


def set_epsilon(value):
    keras.config.set_epsilon(value)


def image_data_format():
    return keras.config.image_data_format()


def set_image_data_format(data_format):
    keras.config.set_image_data_format(data_format)


def backend():
    """The name of the Keras 3 backend: ``'tensorflow'``, ``'jax'`` or ``'torch'``."""
    return keras.backend.backend()


# -- shapes and types ---------------------------------------------------------------


def is_tensor(x):
    return keras.backend.is_tensor(x) or keras.backend.is_keras_tensor(x)


def is_keras_tensor(x):
    return keras.backend.is_keras_tensor(x)


def is_sparse(x):
    return False


def shape(x):
    """The shape of ``x``: a tuple of ints, with scalar tensors for sizes
    unknown while tracing (``keras.ops.shape``)."""
    return ops.shape(x)


def int_shape(x):
    """The static shape as a tuple of ints and ``None`` (e.g. ``(None, 128, 768)``)."""
    if isinstance(x, (int, float)):
        return ()
    return tuple(None if d is None else int(d) for d in x.shape)


def ndim(x):
    return len(x.shape)


def dtype(x):
    """The dtype name of a tensor or variable, e.g. ``'float32'``.

    Raises:
        AttributeError: for a Python number (it has no dtype), as in Keras 2.
    """
    return keras.backend.standardize_dtype(x.dtype)


def cast(x, dtype):
    return ops.cast(x, dtype)


def count_params(x):
    return int(np.prod(int_shape(x)))


def _prod(values):
    """Product of a shape slice; stays a Python int when every entry is one."""
    values = list(values)
    if builtins.all(isinstance(v, (int, np.integer)) for v in values):
        return int(math.prod(values))
    out = 1
    for v in values:
        out = out * v
    return out


def reshape(tensor, *args):
    """Reshape; bert4keras's extended form ``reshape(x, shape1, axis1, shape2, axis2, ...)``.

    With one argument it is ``keras.ops.reshape(x, shape)``. With pairs,
    dimension ``axis_i`` of ``x`` is split into ``shape_i`` (a list that may
    hold one ``-1``): e.g. ``reshape(x, (heads, -1), -1)`` turns ``(b, n,
    h*d)`` into ``(b, n, h, d)``. Unknown sizes are read at run time.
    """
    if len(args) == 1:
        return ops.reshape(tensor, args[0])
    if len(args) % 2:
        raise ValueError("reshape(x, shape1, axis1, ...): got an odd number (%d) of "
                         "shape/axis arguments" % len(args))
    dynamic = ops.shape(tensor)
    dims = [[d if d is not None else dynamic[i]] for i, d in enumerate(int_shape(tensor))]
    for new, axis in zip(args[::2], args[1::2]):
        new = list(new)
        if new.count(-1) > 1:
            raise ValueError("reshape: at most one -1 in %r" % (new,))
        if -1 in new:
            known = _prod([s for s in new if s != -1])
            new[new.index(-1)] = dims[axis][0] // known
        dims[axis] = new
    return ops.reshape(tensor, [d for group in dims for d in group])


def flatten(tensor, start=None, end=None):
    """Merge dimensions ``start`` to ``end`` (exclusive) of ``x`` into one.

    ``flatten(x)`` flattens everything to 1-D (Keras 2's ``K.flatten``);
    ``flatten(x, 2)`` turns ``(b, n, h, d)`` into ``(b, n, h*d)``.
    """
    start, end = start or 0, end or ndim(tensor)
    dynamic = ops.shape(tensor)
    dims = [d if d is not None else dynamic[i] for i, d in enumerate(int_shape(tensor))]
    group = dims[start:end]
    merged = -1 if builtins.any(d is None for d in group) else _prod(group)  # symbolic input
    return ops.reshape(tensor, dims[:start] + [merged] + dims[end:])


def batch_flatten(x):
    """``(batch, ...) -> (batch, prod(...))``."""
    return flatten(x, 1)


def expand_dims(x, axis=-1):
    return ops.expand_dims(x, axis)


def squeeze(x, axis):
    return ops.squeeze(x, axis)


def permute_dimensions(x, pattern):
    return ops.transpose(x, tuple(pattern))


def transpose(x):
    """Reverse all axes (Keras 2: a 2-D matrix is transposed)."""
    return ops.transpose(x)


def tile(x, n):
    if isinstance(n, int):
        n = [n]
    return ops.tile(x, n)


def repeat_elements(x, rep, axis):
    return ops.repeat(x, rep, axis=axis)


def repeat(x, n):
    """``(batch, dim) -> (batch, n, dim)``."""
    return ops.repeat(ops.expand_dims(x, 1), n, axis=1)


def arange(start, stop=None, step=1, dtype="int32"):
    if stop is None and start < 0:
        start = 0
    return ops.arange(start, stop, step, dtype=dtype)


def concatenate(tensors, axis=-1):
    return ops.concatenate(list(tensors), axis=axis)


def stack(x, axis=0):
    return ops.stack(list(x), axis=axis)


def unstack(x, num=None, axis=0):
    return ops.unstack(x, num=num, axis=axis)


def one_hot(indices, num_classes):
    """``(...)`` int ids -> ``(..., num_classes)`` float32 one-hot."""
    return ops.one_hot(ops.cast(indices, "int32"), num_classes, dtype="float32")


def reverse(x, axes):
    if isinstance(axes, int):
        axes = [axes]
    for axis in axes:
        x = ops.flip(x, axis=axis)
    return x


def slice(x, start, size):  # noqa: A001  (Keras 2's name)
    return ops.slice(x, start, size)


def gather(reference, indices):
    """Rows ``reference[indices]`` along axis 0."""
    return ops.take(reference, ops.cast(indices, "int32"), axis=0)


def temporal_padding(x, padding=(1, 1)):
    """Pad the time axis of ``(batch, steps, features)`` with zeros."""
    return ops.pad(x, [[0, 0], list(padding), [0, 0]])


def spatial_2d_padding(x, padding=((1, 1), (1, 1)), data_format=None):
    if (data_format or image_data_format()) == "channels_first":
        return ops.pad(x, [[0, 0], [0, 0], list(padding[0]), list(padding[1])])
    return ops.pad(x, [[0, 0], list(padding[0]), list(padding[1]), [0, 0]])


def zeros_like(x, dtype=None, name=None):
    return ops.zeros_like(x, dtype=dtype)


def ones_like(x, dtype=None, name=None):
    return ops.ones_like(x, dtype=dtype)


def identity(x, name=None):
    return ops.copy(x)


# -- reductions and element-wise math ----------------------------------------------


def _floats(x):
    """Keras 2 reduced booleans as floats."""
    if keras.backend.standardize_dtype(getattr(x, "dtype", "float32")) == "bool":
        return ops.cast(x, floatx())
    return x


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return ops.sum(_floats(x), axis=axis, keepdims=keepdims)


def prod(x, axis=None, keepdims=False):
    if isinstance(x, (list, tuple)) and axis is None and not keepdims:
        return _prod(x)
    return ops.prod(_floats(x), axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return ops.mean(_floats(x), axis=axis, keepdims=keepdims)


def std(x, axis=None, keepdims=False):
    return ops.std(_floats(x), axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False):
    return ops.var(_floats(x), axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return ops.max(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return ops.min(x, axis=axis, keepdims=keepdims)


def any(x, axis=None, keepdims=False):  # noqa: A001
    return ops.any(ops.cast(x, "bool"), axis=axis, keepdims=keepdims)


def all(x, axis=None, keepdims=False):  # noqa: A001
    return ops.all(ops.cast(x, "bool"), axis=axis, keepdims=keepdims)


def argmax(x, axis=-1):
    return ops.argmax(x, axis=axis)


def argmin(x, axis=-1):
    return ops.argmin(x, axis=axis)


def logsumexp(x, axis=None, keepdims=False):
    return ops.logsumexp(x, axis=axis, keepdims=keepdims)


def cumsum(x, axis=0):
    """Cumulative sum along ``axis`` (Keras 2 default: axis 0)."""
    return ops.cumsum(x, axis=axis)


def cumprod(x, axis=0):
    return ops.cumprod(x, axis=axis)


def square(x):
    return ops.square(x)


def abs(x):  # noqa: A001
    return ops.abs(x)


def sqrt(x):
    """``sqrt(max(x, 0))``: Keras 2 clipped negatives to zero."""
    x = ops.convert_to_tensor(x)
    return ops.sqrt(ops.maximum(x, ops.zeros_like(x)))


def exp(x):
    return ops.exp(x)


def log(x):
    return ops.log(x)


def round(x):  # noqa: A001
    return ops.round(x)


def sign(x):
    return ops.sign(x)


def pow(x, a):  # noqa: A001
    return ops.power(x, a)


def sin(x):
    return ops.sin(x)


def cos(x):
    return ops.cos(x)


def clip(x, min_value, max_value):
    """Clip to ``[min_value, max_value]``; ``max_value=None`` means +inf and a
    ``max_value`` below ``min_value`` is raised to it (Keras 2)."""
    if max_value is None:
        max_value = np.inf
    if isinstance(max_value, (int, float)) and isinstance(min_value, (int, float)) \
            and max_value < min_value:
        max_value = min_value
    return ops.clip(x, min_value, max_value)


def maximum(x, y):
    return ops.maximum(x, y)


def minimum(x, y):
    return ops.minimum(x, y)


def equal(x, y):
    return ops.equal(x, y)


def not_equal(x, y):
    return ops.not_equal(x, y)


def greater(x, y):
    return ops.greater(x, y)


def greater_equal(x, y):
    return ops.greater_equal(x, y)


def less(x, y):
    return ops.less(x, y)


def less_equal(x, y):
    return ops.less_equal(x, y)


def _dtype_or_none(x):
    try:
        return dtype(x)
    except AttributeError:
        return None


def where(cond, x, y):
    """``cond ? x : y`` with broadcasting; a Python number takes the other
    argument's dtype (floatx when both are numbers). bert4keras's ``K.where``."""
    dx, dy = _dtype_or_none(x), _dtype_or_none(y)
    if dx is None and dy is None:
        dx = dy = floatx()
    x = ops.convert_to_tensor(x, dtype=dx or dy)
    y = ops.convert_to_tensor(y, dtype=dy or dx)
    return ops.where(ops.cast(cond, "bool"), x, y)


def switch(condition, then_expression, else_expression):
    """Element-wise (or scalar) choice; callables are called first.

    A condition of lower rank than the expressions gets trailing axes and is
    broadcast, as in Keras 2.
    """
    if callable(then_expression):
        then_expression = then_expression()
    if callable(else_expression):
        else_expression = else_expression()
    condition = ops.cast(condition, "bool")
    expr_ndim = ndim(ops.convert_to_tensor(then_expression))
    for _ in range(expr_ndim - ndim(condition)):
        condition = ops.expand_dims(condition, -1)
    return where(condition, then_expression, else_expression)


# -- linear algebra -------------------------------------------------------------------


def dot(x, y):
    """Keras 2 ``dot``: contracts the last axis of ``x`` with the second to
    last of ``y`` (the last when ``y`` is 1-D): shapes ``x[:-1] + y[:-2] + y[-1:]``."""
    y_axis = 0 if ndim(y) == 1 else ndim(y) - 2
    if ndim(x) <= 2 and ndim(y) <= 2:
        return ops.matmul(x, y)
    return ops.tensordot(x, y, axes=[[ndim(x) - 1], [y_axis]])


def batch_dot(x, y, axes=None):
    """Batch-wise dot product (Keras 2 semantics).

    ``x`` ``(batch, ...)`` and ``y`` ``(batch, ...)``; ``axes`` (an int or a
    pair) names the axis of each that is summed over; default: the last of
    ``x`` with the second to last of ``y`` (the last when ``y`` is 2-D). The
    result has the remaining axes of ``x`` then those of ``y``; a 1-D result
    becomes ``(batch, 1)``.

    Raises:
        ValueError: an axis is the batch axis 0, or out of range.
    """
    x_ndim, y_ndim = ndim(x), ndim(y)
    if axes is None:
        axes = [x_ndim - 1, y_ndim - 1 if y_ndim == 2 else y_ndim - 2]
    elif isinstance(axes, int):
        axes = [axes, axes]
    axes = [axes[0] % x_ndim, axes[1] % y_ndim]
    if 0 in axes:
        raise ValueError("batch_dot: cannot sum over the batch axis 0 (axes=%s)" % (axes,))
    letters = "bcdefghijklmnopqrstuvwxyz"
    x_sub = ["a"] + [letters[i] for i in range(x_ndim - 1)]
    y_sub = ["a"] + [letters[x_ndim - 1 + i] for i in range(y_ndim - 1)]
    y_sub[axes[1]] = x_sub[axes[0]]
    out = ["a"] + [s for i, s in enumerate(x_sub[1:], 1) if i != axes[0]] + \
        [s for i, s in enumerate(y_sub[1:], 1) if i != axes[1]]
    result = ops.einsum("%s,%s->%s" % ("".join(x_sub), "".join(y_sub), "".join(out)), x, y)
    if len(out) == 1:
        result = ops.expand_dims(result, 1)
    return result


def l2_normalize(x, axis=None):
    """``x / sqrt(max(sum(x^2, axis), 1e-12))`` (``tf.nn.l2_normalize``)."""
    x = ops.convert_to_tensor(x)
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, 1e-12))


def bias_add(x, bias, data_format=None):
    if (data_format or "channels_last") == "channels_first" and ndim(x) > 2:
        return x + ops.reshape(bias, (1, -1) + (1,) * (ndim(x) - 2))
    return x + bias


# -- activations and losses -----------------------------------------------------------


def relu(x, alpha=0.0, max_value=None, threshold=0.0):
    return keras.activations.relu(x, negative_slope=alpha, max_value=max_value,
                                  threshold=threshold)


def elu(x, alpha=1.0):
    return ops.elu(x, alpha=alpha)


def softmax(x, axis=-1):
    return ops.softmax(x, axis=axis)


def softplus(x):
    return ops.softplus(x)


def softsign(x):
    return ops.softsign(x)


def sigmoid(x):
    return ops.sigmoid(x)


def hard_sigmoid(x):
    """Keras 2's piecewise-linear sigmoid ``clip(0.2 x + 0.5, 0, 1)``."""
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def tanh(x):
    return ops.tanh(x)


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """``-sum(target * log(output))`` over ``axis``; probabilities are
    renormalised and clipped to ``[epsilon, 1 - epsilon]`` (Keras 2)."""
    return ops.categorical_crossentropy(target, output, from_logits=from_logits, axis=axis)


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Cross-entropy of integer ``target`` ``(...)`` against ``output``
    ``(..., classes)``; a trailing axis of size 1 on ``target`` is dropped."""
    target = ops.cast(target, "int32")
    if ndim(target) == ndim(output) and int_shape(target)[-1] == 1:
        target = ops.squeeze(target, -1)
    return ops.sparse_categorical_crossentropy(target, output, from_logits=from_logits,
                                               axis=axis)


def binary_crossentropy(target, output, from_logits=False):
    """Element-wise binary cross-entropy (``output`` clipped to ``[epsilon, 1 -
    epsilon]`` unless ``from_logits``)."""
    return ops.binary_crossentropy(ops.cast(target, output.dtype), output,
                                   from_logits=from_logits)


def in_top_k(predictions, targets, k):
    return ops.in_top_k(ops.cast(targets, "int32"), predictions, k)


def stop_gradient(variables):
    if isinstance(variables, (list, tuple)):
        return [ops.stop_gradient(ops.convert_to_tensor(v)) for v in variables]
    return ops.stop_gradient(ops.convert_to_tensor(variables))


def dropout(x, level, noise_shape=None, seed=None):
    return keras.random.dropout(x, level, noise_shape=noise_shape, seed=seed)


def map_fn(fn, elems, name=None, dtype=None):
    return ops.map(fn, elems)


def symbolic(f):
    """Identity decorator (0.11.5 added it for old Keras versions)."""
    return f


def __getattr__(name):
    """A Keras 2 backend name that is not here: say where to look instead."""
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        "bert4keras.backend.K has no %r (a Keras 2 backend function with no Keras 3 "
        "counterpart here); use keras.ops.%s or another keras.ops function" % (name, name))
