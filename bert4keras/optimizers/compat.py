"""bert4keras 0.11.5's optimizer names, as thin layers over Keras 3 and this package.

Old scripts keep working unchanged::

    from bert4keras.optimizers import Adam, extend_with_exponential_moving_average
    AdamEMA = extend_with_exponential_moving_average(Adam, name='AdamEMA')
    optimizer = AdamEMA(learning_rate=1e-5, ema_momentum=0.999)
    ...
    optimizer.apply_ema_weights()   # evaluate / save with the averaged weights
    optimizer.reset_old_weights()   # back to the trained weights, bit for bit

What each name is built on:

============================================  =========================================
0.11.5 name                                   here
============================================  =========================================
``Adam`` (``bias_correction``, eps 1e-6)      ``keras.optimizers.Adam``
``Lion`` / ``LionV2``                         ``keras.optimizers.Lion`` (0.11.5 defaults)
``AdaFactor``, ``AdaFactorV1/V2/Base``        :class:`~bert4keras.optimizers.adafactor.AdaFactor`
``extend_with_weight_decay``                  Keras ``weight_decay`` + exclusions, applied
                                              per variable (``_ExtensionBase``)
``extend_with_piecewise_linear_lr``           :func:`piecewise_linear` on the step counter
``extend_with_gradient_accumulation``         Keras ``gradient_accumulation_steps``
                                              (Tiger: its own ``grad_accum_steps``)
``extend_with_exponential_moving_average``    Keras ``use_ema`` (its averages)
``extend_with_layer_adaptation``,             the modern factories of the same name, which
``extend_with_lookahead``,                    also accept the 0.11.5 argument names
``extend_with_lazy_optimization``,
``extend_with_parameter_wise_lr``
``extend_with_*_v2``                          the same functions (one optimizer API in Keras 3)
============================================  =========================================

Differences from 0.11.5 that a user can observe (Keras 3 semantics win where
the two cannot both hold):

- ``Adam``: epsilon is added to ``sqrt(v)`` before bias correction (Keras'
  "epsilon hat" form), 0.11.5 added it after; the two agree once
  ``sqrt(v_hat) >> epsilon``. Sparse (embedding) gradients are made dense
  first, as 0.11.5 did.
- Gradient accumulation: the update is applied on the k-th micro-batch with
  the mean gradient (0.11.5 applied it one call later), and Adam's bias
  correction counts real updates (0.11.5 counted micro-batches). A schedule
  (``lr_schedule``) still counts micro-batches, as in 0.11.5.
- EMA: Keras starts the average at the weights after the first update instead
  of at zero followed by bias correction, so the two averages differ in the
  first ~``1 / (1 - ema_momentum)`` steps; with accumulation Keras averages
  after every micro-batch.
- Lookahead: slow weights start at the initial weights (the paper), not at
  zero; the first sync is after ``steps_per_slow_update`` updates.
- ``extend_with_layer_adaptation`` excludes ``bias|beta|gamma`` by default
  and ``extend_with_lazy_optimization`` makes ``embeddings`` lazy by default
  (0.11.5: empty lists); pass the lists explicitly to choose.
- Variable patterns are searched in the Keras 3 variable path
  (``Transformer-0-FeedForward/kernel``) instead of the TF 1 name.
- Generated classes are saved as a recipe under the registered name
  ``bert4keras>ExtendedOptimizer`` and load in a new process after
  ``import bert4keras`` (0.11.5 put them into the global custom objects,
  so the script had to build them again before loading).
"""

import keras
import numpy as np
from keras import ops

from bert4keras.optimizers.adafactor import AdaFactor
from bert4keras.optimizers.base import (
    _CLASS_CACHE,
    _PACKAGE,
    _as_tuple,
    _bases,
    _dense,
    _factory,
    _finish,
)
from bert4keras.optimizers.fused import FusedAdamMixin, reproduces
from bert4keras.optimizers.schedules import _interpolate, _schedule_points
from bert4keras.optimizers.tiger import Tiger
from bert4keras.optimizers.wrappers import (
    extend_with_layer_adaptation,
    extend_with_lazy_optimization,
    extend_with_lookahead,
    extend_with_parameter_wise_lr,
)

__all__ = [
    "Adam",
    "Lion",
    "LionV2",
    "AdaFactor",
    "AdaFactorBase",
    "AdaFactorV1",
    "AdaFactorV2",
    "export_to_custom_objects",
    "extend_with_weight_decay",
    "extend_with_weight_decay_v2",
    "extend_with_layer_adaptation_v2",
    "extend_with_piecewise_linear_lr",
    "extend_with_piecewise_linear_lr_v2",
    "extend_with_gradient_accumulation",
    "extend_with_gradient_accumulation_v2",
    "extend_with_lookahead_v2",
    "extend_with_lazy_optimization_v2",
    "extend_with_exponential_moving_average",
    "extend_with_exponential_moving_average_v2",
    "extend_with_parameter_wise_lr_v2",
    "custom_objects",
]


# ---------------------------------------------------------------------------
# Base optimizers
# ---------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package=_PACKAGE)
class Adam(FusedAdamMixin, keras.optimizers.Adam):
    """Adam with bert4keras 0.11.5's signature, on ``keras.optimizers.Adam``.

    Kingma & Ba, "Adam: A Method for Stochastic Optimization"
    (https://arxiv.org/abs/1412.6980). Differs from Keras' class in the
    default ``epsilon`` (1e-6, as in 0.11.5 and Google's BERT) and in
    ``bias_correction``: with ``False`` the update is
    ``lr * m / (sqrt(v) + epsilon)`` with the raw moments, as in BERT's
    ``AdamWeightDecayOptimizer`` (implemented by rescaling the learning rate
    Keras' Adam receives by ``(1 - beta_1**t) / sqrt(1 - beta_2**t)``).
    Sparse gradients are summed into a dense tensor first. On the torch
    backend the update is torch's fused Adam kernel
    (``bert4keras/optimizers/fused.py``), same arithmetic.

    Args:
        learning_rate: float or schedule (default 1e-3).
        beta_1, beta_2: moment decays (0.9, 0.999).
        epsilon: default 1e-6; None means ``keras.config.epsilon()``.
        bias_correction: bool, default True.
        **kwargs: Keras optimizer arguments (``weight_decay``, ``use_ema``,
            ``gradient_accumulation_steps``, ``global_clipnorm``, ``name``...).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 bias_correction=True, **kwargs):
        if epsilon is None:
            epsilon = keras.config.epsilon()
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, **kwargs)
        self.bias_correction = bool(bias_correction)

    def update_step(self, gradient, variable, learning_rate):
        gradient = _dense(gradient, variable.shape)
        if not self.bias_correction:
            dtype = variable.dtype
            t = ops.cast(self.iterations + 1, dtype)
            beta_1_power = ops.power(ops.cast(self.beta_1, dtype), t)
            beta_2_power = ops.power(ops.cast(self.beta_2, dtype), t)
            learning_rate = (ops.cast(learning_rate, dtype) * (1.0 - beta_1_power)
                             / ops.sqrt(1.0 - beta_2_power))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["bias_correction"] = self.bias_correction
        return config


reproduces(Adam.update_step, rescales_lr=True)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Lion(keras.optimizers.Lion):
    """``keras.optimizers.Lion`` with bert4keras 0.11.5's defaults.

    Chen et al., "Symbolic Discovery of Optimization Algorithms"
    (https://arxiv.org/abs/2302.06675); same update rule as Keras', defaults
    ``learning_rate=3e-4, beta_1=0.95, beta_2=0.98``.
    """

    def __init__(self, learning_rate=3e-4, beta_1=0.95, beta_2=0.98, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, **kwargs)


LionV2 = Lion
AdaFactorBase = AdaFactor
AdaFactorV1 = AdaFactor
AdaFactorV2 = AdaFactor


def export_to_custom_objects(base_extend_with):
    """Decorator of 0.11.5: ``f(BaseOptimizer)`` -> ``f(BaseOptimizer, name=None)``.

    The returned factory names the class ``name`` (when given) and puts it
    into ``keras.saving.get_custom_objects()`` under that name, so
    ``keras.saving.load_model`` finds it. For user-written extensions; the
    factories of this package need none of it (their classes are saved as a
    recipe that ``import bert4keras`` knows how to rebuild).

    Args:
        base_extend_with: function taking an optimizer class, returning a class.

    Returns:
        The wrapped factory.
    """
    def new_extend_with(BaseOptimizer, name=None):
        NewOptimizer = base_extend_with(BaseOptimizer)
        if isinstance(name, str):
            NewOptimizer.__name__ = NewOptimizer.__qualname__ = name
        keras.saving.get_custom_objects()[NewOptimizer.__name__] = NewOptimizer
        return NewOptimizer

    new_extend_with.__name__ = getattr(base_extend_with, "__name__", "new_extend_with")
    new_extend_with.__doc__ = base_extend_with.__doc__
    return new_extend_with


def _cached(kind, BaseOptimizer, name):
    return _CLASS_CACHE.get((kind, BaseOptimizer, name or BaseOptimizer.__name__ + kind))


# ---------------------------------------------------------------------------
# Weight decay
# ---------------------------------------------------------------------------

@_factory("WeightDecay")
def extend_with_weight_decay(BaseOptimizer, name=None):
    """Subclass of ``BaseOptimizer`` with decoupled weight decay (0.11.5 API).

    Loshchilov & Hutter, "Decoupled Weight Decay Regularization"
    (https://arxiv.org/abs/1711.05101): each update also subtracts
    ``lr * weight_decay_rate * w`` (``w`` before the update, ``lr`` the
    variable's learning rate, schedules and multipliers included). Built on
    Keras' ``weight_decay`` and exclusion list, applied per variable inside
    the update so that :func:`extend_with_layer_adaptation` (LAMB) and
    parameter-wise rates see it, as in 0.11.5.

    Usage::

        AdamW = extend_with_weight_decay(Adam, 'AdamW')
        opt = AdamW(learning_rate=1e-4, weight_decay_rate=0.01,
                    exclude_from_weight_decay=['Norm', 'bias'])

    Args:
        BaseOptimizer: a ``keras.optimizers.Optimizer`` subclass.
        name: class name for serialization; default
            ``BaseOptimizer.__name__ + "WeightDecay"``.

    Returns:
        The new class (cached), taking ``weight_decay_rate`` (default 0.01;
        the same as Keras' ``weight_decay``, pass one of them) and
        ``exclude_from_weight_decay`` (regexes searched in the variable path;
        merged with ``weight_decay_exclude``).

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class; both
            ``weight_decay_rate`` and ``weight_decay`` given.
    """
    cls = _cached("WeightDecay", BaseOptimizer, name)
    if cls is not None:
        return cls

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, weight_decay_rate=None, exclude_from_weight_decay=None,
                     **kwargs):
            if weight_decay_rate is not None and kwargs.get("weight_decay") is not None:
                raise TypeError("got both weight_decay_rate (bert4keras 0.11.5 name) and "
                                "weight_decay; pass only weight_decay")
            if kwargs.get("weight_decay") is None:
                kwargs["weight_decay"] = 0.01 if weight_decay_rate is None else weight_decay_rate
            if exclude_from_weight_decay is not None:
                kwargs["weight_decay_exclude"] = (
                    list(_as_tuple(kwargs.get("weight_decay_exclude")))
                    + list(_as_tuple(exclude_from_weight_decay)))
            super().__init__(*args, **kwargs)

        @property
        def weight_decay_rate(self):
            """The decay rate (0.11.5 name of Keras' ``weight_decay``)."""
            return self.weight_decay

    return _finish("WeightDecay", BaseOptimizer, NewOptimizer, name)


# ---------------------------------------------------------------------------
# Piecewise-linear learning rate
# ---------------------------------------------------------------------------

@_factory("PiecewiseLinearLR")
def extend_with_piecewise_linear_lr(BaseOptimizer, name=None):
    """Subclass of ``BaseOptimizer`` whose learning rate follows ``lr_schedule``.

    The learning rate becomes ``learning_rate * piecewise_linear(step,
    lr_schedule)`` (0.11.5 semantics): ``lr_schedule={1000: 1, 2000: 0.1}``
    warms up linearly from 0 to the full rate over 1000 steps, decays
    linearly to 10 % at step 2000 and stays there. ``step`` is the counter
    Keras gives learning-rate schedules (micro-batches under gradient
    accumulation, as in 0.11.5). ``optimizer.learning_rate`` returns the
    scheduled value; the base rate (float, variable or schedule) is kept
    and can still be set.

    Args:
        BaseOptimizer: a ``keras.optimizers.Optimizer`` subclass.
        name: class name for serialization; default
            ``BaseOptimizer.__name__ + "PiecewiseLinearLR"``.

    Returns:
        The new class (cached), taking ``lr_schedule`` (``{step: multiplier}``,
        default ``{0: 1}``).

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class.
        ValueError (when instantiating): a bad schedule (see
            :func:`piecewise_linear`).
    """
    cls = _cached("PiecewiseLinearLR", BaseOptimizer, name)
    if cls is not None:
        return cls

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            if lr_schedule is None:
                lr_schedule = {0: 1.0}
            self._lr_points = _schedule_points(lr_schedule, from_zero=True)
            items = lr_schedule.items() if isinstance(lr_schedule, dict) else lr_schedule
            self.lr_schedule = {int(float(step)): value for step, value in items}

        def _get_current_learning_rate(self):
            base = super()._get_current_learning_rate()
            points = getattr(self, "_lr_points", None)
            if points is None:  # asked for during the base class's __init__
                return base
            return ops.multiply(base, _interpolate(self._iterations, points))

        def get_config(self):
            config = super().get_config()
            config["lr_schedule"] = [[step, value] for step, value in self._lr_points]
            return config

    return _finish("PiecewiseLinearLR", BaseOptimizer, NewOptimizer, name)


# ---------------------------------------------------------------------------
# Gradient accumulation
# ---------------------------------------------------------------------------

@_factory("GradientAccumulation")
def extend_with_gradient_accumulation(BaseOptimizer, name=None):
    """Subclass of ``BaseOptimizer`` that updates every ``grad_accum_steps`` batches.

    The gradients of ``grad_accum_steps`` consecutive calls are averaged and
    applied once, so ``k`` micro-batches of ``n`` examples give the update of
    one batch of ``k * n`` (for a loss that is a mean over examples). Built
    on Keras' ``gradient_accumulation_steps`` (one accumulator per weight);
    for :class:`Tiger` it uses Tiger's own memory-free ``grad_accum_steps``.

    Args:
        BaseOptimizer: a ``keras.optimizers.Optimizer`` subclass.
        name: class name for serialization; default
            ``BaseOptimizer.__name__ + "GradientAccumulation"``.

    Returns:
        The new class (cached), taking ``grad_accum_steps`` (int >= 1,
        default 2; 1 means no accumulation).

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class; both
            ``grad_accum_steps`` and Keras' ``gradient_accumulation_steps``
            given.
        ValueError (when instantiating): ``grad_accum_steps`` < 1.
    """
    cls = _cached("GradientAccumulation", BaseOptimizer, name)
    if cls is not None:
        return cls
    own = issubclass(BaseOptimizer, Tiger)

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, **kwargs):
            if own:
                kwargs.setdefault("grad_accum_steps", 2)
                super().__init__(*args, **kwargs)
                return
            steps = kwargs.pop("grad_accum_steps", None)
            if steps is not None and kwargs.get("gradient_accumulation_steps"):
                raise TypeError("got both grad_accum_steps (bert4keras 0.11.5 name) and "
                                "gradient_accumulation_steps; pass only one")
            if steps is None:
                steps = kwargs.get("gradient_accumulation_steps") or 2
            if int(steps) != steps or steps < 1:
                raise ValueError("grad_accum_steps must be an integer >= 1, got %r" % (steps,))
            kwargs["gradient_accumulation_steps"] = int(steps) if steps > 1 else None
            super().__init__(*args, **kwargs)
            self.grad_accum_steps = int(steps)

        def get_config(self):
            config = super().get_config()
            if not own:
                config.pop("gradient_accumulation_steps", None)
                config["grad_accum_steps"] = self.grad_accum_steps
            return config

    return _finish("GradientAccumulation", BaseOptimizer, NewOptimizer, name)


# ---------------------------------------------------------------------------
# Exponential moving average of the weights
# ---------------------------------------------------------------------------

@_factory("EMA")
def extend_with_exponential_moving_average(BaseOptimizer, name=None):
    """Subclass of ``BaseOptimizer`` keeping a moving average of the weights (0.11.5 API).

    Built on Keras' ``use_ema=True``: after every update the optimizer sets
    ``average <- m * average + (1 - m) * w`` (``m = ema_momentum``; the
    first update copies ``w``). As in 0.11.5 the model keeps training on its
    own weights and ``fit`` leaves them in place (``finalize_variable_values``
    does nothing here); the averaged weights are swapped in on request:

    - ``apply_ema_weights()`` copies the current weights to ``old_weights``
      (NumPy copies) and loads copies of Keras' averages into the model;
      before the first update it loads nothing.
    - ``reset_old_weights()`` restores ``old_weights`` exactly.

    Typical use, in a callback's ``on_epoch_end``: apply, evaluate / save,
    reset. On JAX call them outside the train step (``on_epoch_end``, or
    after ``fit``), where Keras has synced the training state to the model.

    Args:
        BaseOptimizer: a ``keras.optimizers.Optimizer`` subclass.
        name: class name for serialization; default
            ``BaseOptimizer.__name__ + "EMA"``.

    Returns:
        The new class (cached), taking ``ema_momentum`` (default 0.999, as
        in 0.11.5); also ``ema_overwrite_frequency`` from Keras.

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class.
        ValueError (when instantiating): ``use_ema=False``.
        RuntimeError: ``apply_ema_weights`` before the optimizer is built,
            ``reset_old_weights`` before ``apply_ema_weights``.
    """
    cls = _cached("EMA", BaseOptimizer, name)
    if cls is not None:
        return cls

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, ema_momentum=0.999, **kwargs):
            if not kwargs.pop("use_ema", True):
                raise ValueError("an extend_with_exponential_moving_average class always "
                                 "uses EMA; got use_ema=False")
            super().__init__(*args, use_ema=True, ema_momentum=ema_momentum, **kwargs)
            self.old_weights = None

        @property
        def model_weights(self):
            """The model variables the optimizer was built on."""
            return list(getattr(self, "_trainable_variables", []))

        @property
        def ema_weights(self):
            """The moving averages, one per model variable (Keras' ``average`` slots)."""
            return list(getattr(self, "_model_variables_moving_average", []))

        def finalize_variable_values(self, var_list):
            """Leaves the weights alone (0.11.5: averages only on ``apply_ema_weights``)."""
            return

        def apply_ema_weights(self, bias_correction=True):
            """Back up the model weights, then load the moving averages into the model.

            ``bias_correction`` is accepted for 0.11.5 compatibility and has
            no effect: Keras' average starts at the first update's weights,
            so it has no zero-start bias to correct.
            """
            if not self.built:
                raise RuntimeError("%s.apply_ema_weights(): the optimizer is not built yet "
                                   "(train, e.g. model.fit, first)" % type(self).__name__)
            self.old_weights = [np.array(ops.convert_to_numpy(v), copy=True)
                                for v in self.model_weights]
            if int(ops.convert_to_numpy(self.iterations)) == 0:
                return  # no update yet, so no average
            # Keras' finalize_variable_values does ``var.assign(average)``, which on
            # JAX makes both hold one buffer (then donated twice by the next train
            # step); assign a copy of each average instead.
            for variable, average in zip(self.model_weights, self.ema_weights):
                if average is not None:
                    variable.assign(ops.copy(ops.convert_to_tensor(average)))

        def reset_old_weights(self):
            """Restore the weights saved by the last ``apply_ema_weights``."""
            if self.old_weights is None:
                raise RuntimeError("%s.reset_old_weights(): call apply_ema_weights() first"
                                   % type(self).__name__)
            for variable, value in zip(self.model_weights, self.old_weights):
                variable.assign(value)

    return _finish("EMA", BaseOptimizer, NewOptimizer, name)


# One optimizer API in Keras 3: the tf.keras ("_v2") variants are the same functions.
extend_with_weight_decay_v2 = extend_with_weight_decay
extend_with_layer_adaptation_v2 = extend_with_layer_adaptation
extend_with_piecewise_linear_lr_v2 = extend_with_piecewise_linear_lr
extend_with_gradient_accumulation_v2 = extend_with_gradient_accumulation
extend_with_lookahead_v2 = extend_with_lookahead
extend_with_lazy_optimization_v2 = extend_with_lazy_optimization
extend_with_exponential_moving_average_v2 = extend_with_exponential_moving_average
extend_with_parameter_wise_lr_v2 = extend_with_parameter_wise_lr

#: 0.11.5's ``custom_objects`` for ``load_model(..., custom_objects=...)``.
custom_objects = {"Adam": Adam, "AdaFactor": AdaFactor}
