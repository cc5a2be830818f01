"""The second half of :mod:`bert4keras.backend_k` (``K``): variables and their
values, random numbers, the learning phase, gradients, pooling/convolution/rnn,
and the Keras 2 graph/session functions that Keras 3 no longer has (these keep
their names and raise ``NotImplementedError`` naming the replacement).

Import it through ``from bert4keras.backend import K``; it is not meant to be
used on its own.
"""

import keras
import numpy as np
from keras import ops

__all__ = [
    "variable", "constant", "zeros", "ones", "eye", "random_uniform", "random_normal",
    "truncated_normal", "random_binomial", "random_uniform_variable",
    "random_normal_variable", "eval", "get_value", "batch_get_value", "set_value",
    "batch_set_value", "update", "update_add", "update_sub", "moving_average_update",
    "get_variable_shape", "learning_phase", "set_learning_phase", "in_train_phase",
    "in_test_phase", "gradients", "function", "placeholder", "get_session", "set_session",
    "clear_session", "get_uid", "manual_variable_initialization", "name_scope",
    "print_tensor", "pool1d", "pool2d", "conv1d", "conv2d", "rnn",
]


def _floatx():
    return keras.config.floatx()


def _concrete(tensor):
    """True when ``tensor`` holds values now (not a graph/jit placeholder)."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if name == "jax":
        import jax

        return not isinstance(tensor, jax.core.Tracer)
    return True


# -- variables and values -----------------------------------------------------------


def variable(value, dtype=None, name=None, constraint=None):
    """A ``keras.Variable`` holding ``value`` (dtype: floatx by default)."""
    return keras.Variable(value, dtype=dtype or _floatx(), name=name, constraint=constraint)


def constant(value, dtype=None, shape=None, name=None):
    """A constant tensor; a scalar ``value`` is filled into ``shape``."""
    value = np.asarray(value, dtype=dtype or _floatx())
    if shape is not None:
        value = np.broadcast_to(value, tuple(shape))
    return ops.convert_to_tensor(value)


def _filled(maker, shape, dtype, name):
    """Keras 2 returned a variable for a static shape outside a graph, else a tensor."""
    tensor = maker(shape, dtype=dtype or _floatx())
    static = all(isinstance(d, (int, np.integer)) for d in (shape if
                                                            isinstance(shape, (list, tuple))
                                                            else (shape,)))
    if static and _concrete(tensor):
        return keras.Variable(tensor, dtype=dtype or _floatx(), name=name)
    return tensor


def zeros(shape, dtype=None, name=None):
    return _filled(ops.zeros, shape, dtype, name)


def ones(shape, dtype=None, name=None):
    return _filled(ops.ones, shape, dtype, name)


def eye(size, dtype=None, name=None):
    return _filled(lambda n, dtype: ops.eye(n, dtype=dtype), size, dtype, name)


def random_uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return keras.random.uniform(shape, minval, maxval, dtype=dtype or _floatx(), seed=seed)


def random_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return keras.random.normal(shape, mean, stddev, dtype=dtype or _floatx(), seed=seed)


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return keras.random.truncated_normal(shape, mean, stddev, dtype=dtype or _floatx(),
                                         seed=seed)


def random_binomial(shape, p=0.0, dtype=None, seed=None):
    """0/1 samples, 1 with probability ``p``."""
    draw = keras.random.uniform(shape, dtype="float32", seed=seed)
    return ops.cast(ops.less(draw, p), dtype or _floatx())


def random_uniform_variable(shape, low, high, dtype=None, name=None, seed=None):
    return variable(random_uniform(shape, low, high, dtype, seed), dtype, name)


def random_normal_variable(shape, mean, scale, dtype=None, name=None, seed=None):
    return variable(random_normal(shape, mean, scale, dtype, seed), dtype, name)


def eval(x):  # noqa: A001  (Keras 2's name)
    """The value of a variable or eager tensor as a NumPy array."""
    return ops.convert_to_numpy(x.value if isinstance(x, keras.Variable) else x)


def get_value(x):
    return eval(x)


def batch_get_value(tensors):
    return [eval(x) for x in tensors]


def set_value(x, value):
    """Assign ``value`` (array-like) to the variable ``x``."""
    x.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(x.dtype)))


def batch_set_value(tuples):
    for x, value in tuples:
        set_value(x, value)


def update(x, new_x):
    x.assign(new_x)
    return x


def update_add(x, increment):
    x.assign_add(increment)
    return x


def update_sub(x, decrement):
    x.assign_sub(decrement)
    return x


def moving_average_update(x, value, momentum):
    x.assign(x * momentum + value * (1 - momentum))
    return x


def get_variable_shape(x):
    return tuple(x.shape)


# -- learning phase -------------------------------------------------------------------


def learning_phase():
    """1 inside a layer call made with ``training=True`` (e.g. in ``fit``), else 0.

    Keras 3 has no global learning phase; this reads the ``training`` flag of
    the layer call in progress.
    """
    try:
        from keras.src.backend.common import global_state

        ctx = global_state.get_global_attribute("current_call_ctx")
    except ImportError:  # pragma: no cover - a future Keras
        ctx = None
    training = getattr(ctx, "training", None) if ctx is not None else None
    return 1 if training else 0


def set_learning_phase(value):
    raise NotImplementedError(
        "K.set_learning_phase does not exist in Keras 3: pass training=True/False to "
        "the model or layer call (model(x, training=False)); fit() trains and "
        "predict()/evaluate() infer by themselves.")


def in_train_phase(x, alt, training=None):
    """``x`` in training, ``alt`` otherwise (callables are called).

    ``training`` defaults to the flag of the layer call in progress (see
    :func:`learning_phase`); a tensor ``training`` selects element-wise.
    """
    if training is None:
        training = learning_phase()
    if isinstance(training, (bool, int, np.integer)):
        chosen = x if training else alt
        return chosen() if callable(chosen) else chosen
    x = x() if callable(x) else x
    alt = alt() if callable(alt) else alt
    return ops.where(ops.cast(training, "bool"), x, alt)


def in_test_phase(x, alt, training=None):
    return in_train_phase(alt, x, training=training)


# -- gradients, functions, sessions ---------------------------------------------------


def gradients(loss, variables):
    """``d loss / d variables`` -- only inside a TensorFlow graph.

    Works on the TensorFlow backend where the code runs traced
    (``tf.function``; e.g. a loss function inside ``fit``), like Keras 2.

    Raises:
        NotImplementedError: eagerly or on JAX/PyTorch; use
            ``tf.GradientTape`` / ``jax.grad`` / ``torch.autograd.grad`` in a
            custom ``train_step``, or ``keras.ops``-level maths instead.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            values = [v.value if isinstance(v, keras.Variable) else v for v in variables]
            return tf.gradients(loss, values)
    raise NotImplementedError(
        "K.gradients needs a TensorFlow graph (it works inside fit() on the TensorFlow "
        "backend, e.g. in a loss function); here (backend %r, eager) use "
        "tf.GradientTape / jax.grad / torch.autograd.grad in a custom train_step"
        % keras.backend.backend())


def function(inputs, outputs, updates=None, name=None, **kwargs):
    raise NotImplementedError(
        "K.function does not exist in Keras 3: build keras.Model(inputs, outputs) and "
        "call model.predict(x) or model(x); for custom training logic override "
        "Model.train_step")


def placeholder(shape=None, ndim=None, dtype=None, sparse=False, name=None):
    raise NotImplementedError(
        "K.placeholder does not exist in Keras 3: use keras.Input(shape=..., dtype=...)")


def get_session(op_input_list=()):
    raise NotImplementedError(
        "K.get_session does not exist in Keras 3 (there is no TF1 session): run ops "
        "eagerly, or use tf.function / model.predict")


def set_session(session):
    raise NotImplementedError(
        "K.set_session does not exist in Keras 3 (there is no TF1 session): configure "
        "TensorFlow with tf.config (e.g. tf.config.threading, "
        "tf.config.experimental.set_memory_growth)")


def clear_session():
    keras.backend.clear_session()


def get_uid(prefix=""):
    return keras.backend.get_uid(prefix)


def manual_variable_initialization(value):
    """No-op: Keras 3 variables are initialised when created."""


def name_scope(name):
    return keras.name_scope(name)


def print_tensor(x, message=""):
    """Print ``x`` when it is computed (eager) and return it."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.print(message, x)
    elif keras.backend.backend() == "jax":
        import jax

        jax.debug.print(message + "{x}", x=x)
    else:
        print(message, x)
    return x


# -- pooling, convolution, rnn ------------------------------------------------------


def pool1d(x, pool_size, strides=1, padding="valid", data_format=None, pool_mode="max"):
    """Pool ``(batch, steps, channels)`` over steps (``pool_mode`` 'max'|'avg')."""
    pool = ops.max_pool if pool_mode == "max" else ops.average_pool
    return pool(x, pool_size, strides, padding.lower(), data_format)


def pool2d(x, pool_size, strides=(1, 1), padding="valid", data_format=None, pool_mode="max"):
    pool = ops.max_pool if pool_mode == "max" else ops.average_pool
    return pool(x, pool_size, strides, padding.lower(), data_format)


def conv1d(x, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    return ops.conv(x, kernel, strides, padding.lower(), data_format, dilation_rate)


def conv2d(x, kernel, strides=(1, 1), padding="valid", data_format=None,
           dilation_rate=(1, 1)):
    return ops.conv(x, kernel, strides, padding.lower(), data_format, dilation_rate)


def rnn(step_function, inputs, initial_states, go_backwards=False, mask=None,
        constants=None, unroll=False, input_length=None):
    """Iterate ``step_function(x_t, states) -> (y_t, new_states)`` over axis 1.

    Returns ``(last_output, outputs, new_states)`` as Keras 2 did (Keras 3's
    backend ``rnn``, the engine of ``keras.layers.RNN``).
    """
    from keras.src import backend as keras_backend

    inputs = ops.convert_to_tensor(inputs)
    initial_states = [ops.convert_to_tensor(s) for s in initial_states]
    return keras_backend.rnn(step_function, inputs, initial_states, go_backwards=go_backwards,
                             mask=mask, constants=constants, unroll=unroll,
                             input_length=input_length)
