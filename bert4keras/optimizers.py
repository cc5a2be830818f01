"""Optimizers and optimizer extensions that Keras 3 lacks.

Everything here is a Keras 3 optimizer (``keras.optimizers.Optimizer``
subclass written with ``keras.ops``), so it runs on TensorFlow, JAX and torch,
works with ``model.fit`` and is saved with the model.

What is here
------------
- :class:`Tiger` -- sign-of-momentum optimizer with a single slot per weight
  (Su Jianlin, 2023).
- :class:`PiecewiseLinear` / :func:`piecewise_linear` -- warm-up and decay
  schedules written as ``{step: value}``.
- ``extend_with_*`` factories that take a Keras optimizer class and return a
  subclass, mirroring the names of the original bert4keras:

  * :func:`extend_with_parameter_wise_lr` (+ :func:`layerwise_lr_decay`),
  * :func:`extend_with_lazy_optimization` (touched-rows-only updates),
  * :func:`extend_with_lookahead` (Zhang et al., 2019),
  * :func:`extend_with_layer_adaptation` (LAMB trust ratio).

  The generated classes are registered for Keras serialization under
  ``bert4keras>{name}``; call the same factory again before
  ``keras.saving.load_model`` in a new process. They stack, e.g.
  ``extend_with_lookahead(extend_with_parameter_wise_lr(keras.optimizers.AdamW))``.
  Put :func:`extend_with_layer_adaptation` innermost when combining it with
  parameter-wise learning rates (it sees the learning rate it is given).

Variable names
--------------
Patterns in this module are regular expressions searched (``re.search``) in
the variable's Keras 3 ``path``, e.g.
``Transformer-0-MultiHeadSelfAttention/q_dense/kernel``,
``Embedding-Token/embeddings``, ``Transformer-0-FeedForward-Norm/gamma``.
A plain substring such as ``"Norm"`` or ``"bias"`` is a valid pattern.

Weight decay in the classes built here
--------------------------------------
Keras applies ``weight_decay`` to every variable with the *global* learning
rate before the update. The classes returned by the ``extend_with_*``
factories (and :class:`Tiger`) instead apply decoupled decay inside each
variable's update, with that variable's own learning rate: a parameter-wise
multiplier scales the decay too, lazy rows are not decayed, and the LAMB trust
ratio sees the decay as part of the update (as in the LAMB paper). They accept
``weight_decay_exclude=[patterns]`` (matched against the path); Keras'
``optimizer.exclude_from_weight_decay(var_names=...)`` also works and is
matched against the path as well.

What Keras already has (use it, it is not rewritten here)
--------------------------------------------------------
- AdamW for BERT fine-tuning, decay off for LayerNorm and biases::

      opt = keras.optimizers.AdamW(learning_rate=2e-5, weight_decay=0.01,
                                   global_clipnorm=1.0)
      opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])

  Keras matches ``var_names`` against ``variable.name``: the short name
  (``gamma``, ``bias``) on JAX and torch, the full path on TensorFlow, so
  use short names to be portable.
- ``keras.optimizers.Lion`` and ``keras.optimizers.Lamb``. Keras' Lamb keeps
  weight decay out of the trust ratio; ``extend_with_layer_adaptation(AdamW)``
  puts it inside, as the LAMB paper does.
- Every optimizer takes ``use_ema=True`` (weight moving average, swap in with
  ``optimizer.finalize_variable_values``), ``gradient_accumulation_steps=k``
  (adds one accumulator per weight; learning rate schedules see micro-steps),
  ``global_clipnorm`` / ``clipnorm`` / ``clipvalue``.
- Mixed precision: ``keras.mixed_precision.LossScaleOptimizer`` already skips
  steps with non-finite gradients; Tiger's own guard is for setups without
  loss scaling (e.g. bfloat16) and is harmless under it.
"""

import re

import keras
from keras import ops

__all__ = [
    "Tiger",
    "PiecewiseLinear",
    "piecewise_linear",
    "extend_with_parameter_wise_lr",
    "layerwise_lr_decay",
    "extend_with_lazy_optimization",
    "extend_with_lookahead",
    "extend_with_layer_adaptation",
]

_PACKAGE = "bert4keras"


# ---------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------

def _schedule_points(schedule, from_zero):
    """Sorted ``[(step, value)]`` from a dict or pairs; validates them."""
    items = schedule.items() if isinstance(schedule, dict) else schedule
    try:
        points = sorted((float(step), float(value)) for step, value in items)
    except (TypeError, ValueError) as exc:
        raise ValueError("schedule must map steps to numbers, got %r" % (schedule,)) from exc
    if not points:
        raise ValueError("schedule is empty; give at least one {step: value}")
    steps = [s for s, _ in points]
    if len(set(steps)) != len(steps):
        raise ValueError("schedule has a repeated step: %r" % (steps,))
    if steps[0] < 0:
        raise ValueError("schedule steps must be >= 0, got %r" % steps[0])
    if from_zero and steps[0] != 0:
        points.insert(0, (0.0, 0.0))
    return points


def piecewise_linear(step, schedule, from_zero=True):
    """Piecewise linear function of the step, as a ``keras.ops`` float32 tensor.

    Follows ``piecewise_linear`` of the original bert4keras / Tiger code: the
    value moves linearly between the given points, stays at the first value
    before the first point and at the last value after the last point.

    Args:
        step: scalar step (int or float tensor), e.g. ``optimizer.iterations``.
        schedule: ``{step: value}`` dict (or ``[(step, value), ...]``), e.g.
            ``{1000: 1.0, 10000: 0.1}``. Keys may be strings (JSON).
        from_zero: if true and no point is at step 0, a point ``(0, 0.0)`` is
            added, so the schedule starts with a linear warm-up from 0.

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: empty schedule, repeated or negative step, non-numbers.
    """
    points = _schedule_points(schedule, from_zero)
    return _interpolate(step, points)


def _interpolate(step, points):
    t = ops.cast(step, "float32")
    value = ops.cast(points[0][1], "float32") + ops.zeros_like(t)
    for (t0, v0), (t1, v1) in zip(points[:-1], points[1:]):
        segment = v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        value = ops.where(ops.greater_equal(t, t0), segment, value)
    t_last, v_last = points[-1]
    return ops.where(ops.greater_equal(t, t_last), ops.cast(v_last, "float32"), value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate ``scale * piecewise_linear(step, schedule)``.

    Two ways to read it, both supported:

    - the learning rate itself: ``PiecewiseLinear({1000: 2e-5, 10000: 0})``
      warms up from 0 to 2e-5 over 1000 steps, then decays to 0 at 10000;
    - a multiplier of a base learning rate (the original bert4keras /
      Tiger ``lr_schedule`` convention):
      ``PiecewiseLinear({1000: 1, 10000: 0.1}, scale=2e-5)``.

    ``step`` is the optimizer's step counter as Keras passes it to schedules:
    with ``gradient_accumulation_steps=k`` (Keras) or ``Tiger(grad_accum_steps=k)``
    it counts micro-batches, so a warm-up of N updates is written as ``N * k``.

    Args:
        schedule: ``{step: value}`` dict or ``[(step, value), ...]``.
        scale: float multiplying every value (default 1.0).
        from_zero: add a point ``(0, 0.0)`` if no point is at step 0 (default
            true, as in bert4keras).

    Raises:
        ValueError: see :func:`piecewise_linear`.

    Serializable: ``get_config`` stores the points as a list of pairs, so the
    schedule survives JSON (``.keras`` files) unchanged.
    """

    def __init__(self, schedule, scale=1.0, from_zero=True):
        self.points = _schedule_points(schedule, from_zero)
        self.scale = float(scale)
        self.from_zero = bool(from_zero)

    def __call__(self, step):
        return self.scale * _interpolate(step, self.points)

    def get_config(self):
        return {
            "schedule": [[s, v] for s, v in self.points],
            "scale": self.scale,
            "from_zero": self.from_zero,
        }


# ---------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------

# Optimizer variables that are not per-step state of the update rule (they
# must not be rolled back by lazy updates).
_NOT_SLOTS = ("gradient_accumulator", "average", "lookahead_slow")


class _Registry:
    """Plain (untracked) holder for per-variable bookkeeping."""

    def __init__(self):
        self.paths = {}   # var key -> Keras path
        self.slots = {}   # var key -> [optimizer variables shaped like it]
        self.finite = None  # this step's "all gradients finite" flag (Tiger)
        self.multipliers = {}  # var key -> learning-rate multiplier


def _as_tuple(patterns):
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        return (patterns,)
    return tuple(patterns)


def _is_sparse(gradient):
    return type(gradient).__name__ == "IndexedSlices"


def _dense(gradient, shape):
    """Dense tensor from a gradient (TensorFlow gives IndexedSlices for gathers)."""
    if _is_sparse(gradient):
        indices = ops.expand_dims(gradient.indices, -1)
        return ops.scatter(indices, gradient.values, tuple(shape))
    return ops.convert_to_tensor(gradient)


def _all_finite(grads):
    flags = [ops.all(ops.isfinite(g.values if _is_sparse(g) else g))
             for g in grads if g is not None]
    if not flags:
        return ops.convert_to_tensor(True)
    return ops.all(ops.stack(flags))


def _touched_rows(gradient):
    """Bool mask, True where a row (all axes but the last) has a nonzero gradient."""
    return ops.any(ops.not_equal(gradient, 0), axis=-1, keepdims=True)


def _snapshot(variable):
    # ops.copy: torch assigns in place, so a bare read would alias the variable.
    return ops.copy(ops.convert_to_tensor(variable))


class _ExtensionBase:
    """Mixin placed in front of a Keras optimizer class by the factories.

    Adds: variable paths, a slot registry (optimizer variables created from a
    model variable), ``weight_decay_exclude`` patterns, and moves decoupled
    weight decay into ``update_step`` so it uses the per-variable learning
    rate that the extensions pass down.
    """

    def __init__(self, *args, weight_decay_exclude=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._b4k = _Registry()
        self.weight_decay_exclude = list(_as_tuple(weight_decay_exclude))
        if self.weight_decay_exclude:
            self.exclude_from_weight_decay(var_names=self.weight_decay_exclude)

    def _registry(self):
        if not hasattr(self, "_b4k"):
            self._b4k = _Registry()
        return self._b4k

    def build(self, var_list):
        registry = self._registry()
        for variable in var_list:
            path = getattr(variable, "path", None) or variable.name
            registry.paths[self._var_key(variable)] = path
        super().build(var_list)

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        slot = super().add_variable_from_reference(reference_variable, name=name,
                                                   initializer=initializer)
        if (name or "var") not in _NOT_SLOTS:
            self._registry().slots.setdefault(self._var_key(reference_variable), []).append(slot)
        return slot

    def _variable_path(self, variable):
        path = self._registry().paths.get(self._var_key(variable))
        if path is None:  # not built through build(): fall back to the name
            path = getattr(variable, "path", None) or variable.name
        return re.sub(r":\d+$", "", path)

    def _matches(self, patterns, variable):
        path = self._variable_path(variable)
        return any(re.search(p, path) for p in patterns)

    def _use_weight_decay(self, variable):
        if self._var_key(variable) in getattr(self, "_exclude_from_weight_decay", ()):
            return False
        pattern = getattr(self, "_exclude_from_weight_decay_pattern", None)
        if pattern is not None and re.search(pattern, self._variable_path(variable)):
            return False
        return True

    def _apply_weight_decay(self, variables):
        # Applied per variable in update_step instead (see module docstring).
        return

    def update_step(self, gradient, variable, learning_rate):
        if self.weight_decay and self._use_weight_decay(variable):
            lr = ops.cast(learning_rate, variable.dtype)
            wd = ops.cast(self.weight_decay, variable.dtype)
            self.assign_sub(variable, ops.multiply(variable, wd * lr))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["weight_decay_exclude"] = list(self.weight_decay_exclude)
        return config


def _check_optimizer_class(cls):
    if not (isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer)):
        raise TypeError("expected a keras.optimizers.Optimizer subclass (e.g. "
                        "keras.optimizers.AdamW), got %r" % (cls,))
    if issubclass(cls, keras.optimizers.LossScaleOptimizer):
        raise TypeError("extend the inner optimizer class, then wrap the instance in "
                        "LossScaleOptimizer")


def _bases(cls):
    _check_optimizer_class(cls)
    return (cls,) if issubclass(cls, _ExtensionBase) else (_ExtensionBase, cls)


_CLASS_CACHE = {}


def _finish(kind, base, new_cls, name):
    """Name, register for deserialization and cache a generated class."""
    name = name or base.__name__ + kind
    new_cls.__name__ = new_cls.__qualname__ = name
    new_cls.__module__ = __name__
    keras.saving.register_keras_serializable(package=_PACKAGE, name=name)(new_cls)
    _CLASS_CACHE[(kind, base, name)] = new_cls
    return new_cls


# ---------------------------------------------------------------------------
# Tiger
# ---------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package=_PACKAGE)
class Tiger(_ExtensionBase, keras.optimizers.Optimizer):
    """Tiger: a tight-fisted optimizer (Su Jianlin, 2023).

    Sources followed: ``tiger.py`` in https://github.com/bojone/tiger (TF 1.15
    reference code), the blog posts https://kexue.fm/archives/9512 (update
    rule, hyper-parameters, NaN strategy, accumulation) and
    https://kexue.fm/archives/9736 (embedding outliers under sign optimizers).

    Update for a weight ``w`` with gradient ``g`` (one slot ``m`` per weight)::

        m <- beta * m + (1 - beta) * g
        w <- w - eta * (sign(m) + lambda * w)

    with the per-parameter learning rate ``eta`` of the reference code:

    - "element-wise" weights (path matches ``elementwise_patterns``, default
      ``bias|beta|gamma``): ``eta = 0.5 * lr`` and no weight decay;
    - embeddings (path matches ``embedding_patterns``, default
      ``embeddings``): ``eta = lr * RMS(row)``, the root mean square of each
      row (each token's vector), taken over the last axis;
    - all other weights: ``eta = lr * RMS(w)`` over the whole tensor, so
      ``lr`` is a *relative* step size (the blog suggests a peak of 1e-3 to
      2e-3; the reference example uses 1.76e-3). A weight that is exactly
      zero (zero-initialised kernel) therefore never moves: initialise such
      kernels randomly, or pass ``rms_scaling=False``.

    Options beyond the basic rule:

    - Non-finite guard. If any gradient of the step is NaN or infinite, the
      whole step is skipped: no momentum and no weight changes (the step
      counter still advances). The reference code instead keeps the momentum
      and shrinks each weight towards its initial centre,
      ``w <- (w - c) * s + c`` with ``c = 1`` for ``gamma`` and 0 otherwise,
      ``s = 0.99``, and checks each variable's own gradient for NaN only;
      pass ``shrink_ratio=0.99`` to get that shrink (applied here to every
      weight of a skipped step).
    - ``lazy_embeddings=True``: rows of embedding weights whose gradient row
      is all zero (tokens absent from the batch) are left alone: no momentum
      decay, no update, no weight decay. This is the first remedy of
      https://kexue.fm/archives/9736: with ``sign(m)`` a token seen once keeps
      moving by the full step until it is seen again, which with weight decay
      drives its components to ``+-1/lambda`` (the +-100 outliers observed
      there). The reference ``tiger.py`` does not have this option.
    - ``grad_accum_steps=k``: Tiger's own gradient accumulation, which needs
      no extra memory (blog 9512, "gradient accumulation"): within each group
      of ``k`` calls the momentum is decayed by ``beta`` only at the first
      call, every call adds ``(1 - beta) / k * g``, and the weights move
      only at the last call. The learning rate (schedule) sees micro-steps.

    Slots: exactly one (``momentum``) per trainable weight. Keras'
    ``gradient_accumulation_steps=k`` also works but adds its own
    ``gradient_accumulator`` per weight; ``grad_accum_steps`` does not.

    Args:
        learning_rate: float or schedule, the global relative learning rate
            (default 1e-3, as in ``tiger.py``). Use :class:`PiecewiseLinear`
            for the reference ``lr_schedule``.
        beta: momentum decay, shared by both Lion betas. Default 0.965 (the
            reference code default and the blog's choice for NLP, the mean of
            Lion's NLP betas 0.95/0.98); the blog suggests 0.945 for vision.
        weight_decay: decoupled decay rate (default 0.01); not applied to
            element-wise weights nor to paths matching ``weight_decay_exclude``.
        grad_accum_steps: int >= 1, Tiger's memory-free accumulation.
        shrink_ratio: float in (0, 1]; 1.0 (default) skips non-finite steps
            exactly, 0.99 reproduces the reference shrink.
        elementwise_patterns: regexes for half-lr, no-decay weights.
        embedding_patterns: regexes for row-wise RMS (and lazy) weights.
        lazy_embeddings: bool, see above.
        rms_scaling: bool, scale the learning rate by the weight RMS as in
            the reference (default true); false gives the plain blog formula.
        weight_decay_exclude: extra regexes excluded from weight decay.
        **kwargs: base optimizer arguments (``global_clipnorm``, ``use_ema``,
            ``gradient_accumulation_steps``, ``name``, ...).

    Raises:
        ValueError: ``beta`` outside [0, 1), ``grad_accum_steps`` < 1,
            ``shrink_ratio`` outside (0, 1], ``grad_accum_steps > 1`` together
            with Keras ``gradient_accumulation_steps`` or with
            ``lazy_embeddings`` (a row seen only in an early micro-batch
            would never be applied; use Keras accumulation for that).
    """

    def __init__(self, learning_rate=1e-3, beta=0.965, weight_decay=0.01, grad_accum_steps=1,
                 shrink_ratio=1.0, elementwise_patterns=("bias", "beta", "gamma"),
                 embedding_patterns=("embeddings",), lazy_embeddings=False, rms_scaling=True,
                 weight_decay_exclude=None, name="tiger", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay,
                         weight_decay_exclude=weight_decay_exclude, name=name, **kwargs)
        if not 0.0 <= beta < 1.0:
            raise ValueError("beta must be in [0, 1), got %r" % (beta,))
        if int(grad_accum_steps) != grad_accum_steps or grad_accum_steps < 1:
            raise ValueError("grad_accum_steps must be an integer >= 1, got %r"
                             % (grad_accum_steps,))
        if not 0.0 < shrink_ratio <= 1.0:
            raise ValueError("shrink_ratio must be in (0, 1], got %r" % (shrink_ratio,))
        if grad_accum_steps > 1 and self.gradient_accumulation_steps:
            raise ValueError("use either Tiger's grad_accum_steps or Keras' "
                             "gradient_accumulation_steps, not both")
        if grad_accum_steps > 1 and lazy_embeddings:
            raise ValueError("lazy_embeddings needs whole-batch gradients; with accumulation "
                             "use Keras' gradient_accumulation_steps instead of grad_accum_steps")
        self.beta = float(beta)
        self.grad_accum_steps = int(grad_accum_steps)
        self.shrink_ratio = float(shrink_ratio)
        self.elementwise_patterns = list(_as_tuple(elementwise_patterns))
        self.embedding_patterns = list(_as_tuple(embedding_patterns))
        self.lazy_embeddings = bool(lazy_embeddings)
        self.rms_scaling = bool(rms_scaling)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = [self.add_variable_from_reference(v, name="momentum")
                           for v in var_list]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # One flag for the whole step, read by every update_step call.
        registry = self._registry()
        registry.finite = _all_finite(grads)
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            registry.finite = None

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        g = ops.cast(_dense(gradient, variable.shape), dtype)
        w = ops.convert_to_tensor(variable)
        m_var = self._momentums[self._get_variable_index(variable)]
        m = ops.convert_to_tensor(m_var)

        lr = ops.cast(learning_rate, dtype)
        beta = ops.cast(self.beta, dtype)
        b1 = beta
        k = self.grad_accum_steps
        if k > 1:
            first = ops.equal(ops.mod(self._iterations, k), 0)
            last = ops.equal(ops.mod(self._iterations + 1, k), 0)
            b1 = ops.where(first, beta, ops.ones_like(beta))
            lr = ops.where(last, lr, ops.zeros_like(lr))
        b2 = (1.0 - self.beta) / k

        elementwise = self._matches(self.elementwise_patterns, variable)
        embedding = not elementwise and self._matches(self.embedding_patterns, variable)
        if elementwise:
            lr = lr * 0.5
        elif self.rms_scaling:
            if embedding:
                lr = lr * ops.sqrt(ops.mean(ops.square(w), axis=-1, keepdims=True))
            else:
                lr = lr * ops.sqrt(ops.mean(ops.square(w)))
        decay = 0.0
        if self.weight_decay and not elementwise and self._use_weight_decay(variable):
            decay = self.weight_decay

        new_m = b1 * m + b2 * g
        new_w = w - lr * (ops.sign(new_m) + decay * w)

        if self.lazy_embeddings and embedding:
            touched = _touched_rows(g)
            new_m = ops.where(touched, new_m, m)
            new_w = ops.where(touched, new_w, w)

        finite = self._registry().finite
        if finite is None:  # update_step called on its own
            finite = ops.all(ops.isfinite(g))
        if self.shrink_ratio < 1.0:
            centre = 1.0 if self._variable_path(variable).split("/")[-1] == "gamma" else 0.0
            skipped_w = (w - centre) * self.shrink_ratio + centre
        else:
            skipped_w = w
        new_m = ops.where(finite, new_m, m)
        new_w = ops.where(finite, new_w, skipped_w)
        self.assign(m_var, new_m)
        self.assign(variable, new_w)

    def get_config(self):
        config = super().get_config()
        config.update({
            "beta": self.beta,
            "grad_accum_steps": self.grad_accum_steps,
            "shrink_ratio": self.shrink_ratio,
            "elementwise_patterns": list(self.elementwise_patterns),
            "embedding_patterns": list(self.embedding_patterns),
            "lazy_embeddings": self.lazy_embeddings,
            "rms_scaling": self.rms_scaling,
        })
        return config


# ---------------------------------------------------------------------------
# Parameter-wise / layer-wise learning rates
# ---------------------------------------------------------------------------

def extend_with_parameter_wise_lr(BaseOptimizer, name=None):
    """Subclass of ``BaseOptimizer`` with per-variable learning-rate multipliers.

    Mirrors ``extend_with_parameter_wise_lr`` of the original bert4keras:
    every pattern of ``multipliers`` found in a variable's path multiplies its
    learning rate (several matches multiply together; no match means 1). The
    multiplied rate is what the update rule sees, so decoupled weight decay
    is scaled too (as in ELECTRA's ``AdamWeightDecayOptimizer``, where decay
    is part of the update multiplied by the layer's learning rate).

    Usage::

        AdamWLR = extend_with_parameter_wise_lr(keras.optimizers.AdamW)
        opt = AdamWLR(learning_rate=5e-5, weight_decay=0.01,
                      multipliers=layerwise_lr_decay(12, 0.8),
                      weight_decay_exclude=["Norm", "bias"])

    The new class takes ``multipliers`` (dict ``{regex: float}``) and
    ``weight_decay_exclude`` (list of regexes) besides the base arguments.

    Args:
        BaseOptimizer: a ``keras.optimizers.Optimizer`` subclass (Keras' own,
            :class:`Tiger`, or one returned by another ``extend_with_*``).
        name: class name used for serialization; default
            ``BaseOptimizer.__name__ + "ParameterWiseLR"``. Call the factory
            again (same arguments) before loading a saved model.

    Returns:
        The new class (cached: the same arguments return the same class).

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class, or is a
            ``LossScaleOptimizer``.
        ValueError (when instantiating): a multiplier is negative or not a
            number.
    """
    key = ("ParameterWiseLR", BaseOptimizer, name or BaseOptimizer.__name__ + "ParameterWiseLR")
    if key in _CLASS_CACHE:
        return _CLASS_CACHE[key]

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, multipliers=None, **kwargs):
            super().__init__(*args, **kwargs)
            checked = {}
            for pattern, value in dict(multipliers or {}).items():
                try:
                    value = float(value)
                except (TypeError, ValueError) as exc:
                    raise ValueError("multiplier for %r is not a number: %r"
                                     % (pattern, value)) from exc
                if value < 0:
                    raise ValueError("multiplier for %r is negative: %r" % (pattern, value))
                re.compile(pattern)
                checked[str(pattern)] = value
            self._multipliers = checked

        @property
        def multipliers(self):
            return dict(self._multipliers)

        def lr_multiplier(self, variable):
            """Product of the multipliers whose pattern is found in the path."""
            cache = self._registry().multipliers
            key = self._var_key(variable)
            if key not in cache:
                path = self._variable_path(variable)
                value = 1.0
                for pattern, multiplier in self._multipliers.items():
                    if re.search(pattern, path):
                        value *= multiplier
                cache[key] = value
            return cache[key]

        def update_step(self, gradient, variable, learning_rate):
            multiplier = self.lr_multiplier(variable)
            if multiplier != 1.0:
                learning_rate = ops.multiply(learning_rate, multiplier)
            super().update_step(gradient, variable, learning_rate)

        def get_config(self):
            config = super().get_config()
            config["multipliers"] = self.multipliers
            return config

    return _finish("ParameterWiseLR", BaseOptimizer, NewOptimizer, name)


def layerwise_lr_decay(num_layers, decay, embedding_pattern="Embedding-",
                       layer_pattern="Transformer-%d-"):
    """Multipliers for ELECTRA-style layer-wise learning-rate decay.

    Follows ``_get_layer_lrs`` of google-research/electra
    (``model/optimization.py``): with ``n = num_layers``, embeddings get
    ``decay ** (n + 2)``, Transformer layer ``i`` (0-based) gets
    ``decay ** (n + 1 - i)``, and everything else (pooler, MLM / task heads)
    keeps the full rate. Note the ELECTRA exponents skip ``decay ** 1``: the
    top layer gets ``decay ** 2``.

    Args:
        num_layers: number of Transformer layers (int >= 0).
        decay: float in (0, 1], e.g. 0.8.
        embedding_pattern: regex for embedding variables (bert4keras names
            ``Embedding-Token``, ``Embedding-Norm``, ...).
        layer_pattern: ``%d`` template of a layer's regex
            (``Transformer-%d-`` matches ``Transformer-3-FeedForward/...``
            but not ``Transformer-13-...``).

    Returns:
        dict ``{regex: multiplier}`` for ``multipliers=`` of
        :func:`extend_with_parameter_wise_lr`.

    Raises:
        ValueError: ``num_layers`` negative or ``decay`` outside (0, 1].
    """
    if int(num_layers) != num_layers or num_layers < 0:
        raise ValueError("num_layers must be a non-negative integer, got %r" % (num_layers,))
    if not 0.0 < decay <= 1.0:
        raise ValueError("decay must be in (0, 1], got %r" % (decay,))
    multipliers = {embedding_pattern: float(decay) ** (num_layers + 2)}
    for i in range(num_layers):
        multipliers[layer_pattern % i] = float(decay) ** (num_layers + 1 - i)
    return multipliers


# ---------------------------------------------------------------------------
# Lazy (touched-rows-only) updates
# ---------------------------------------------------------------------------

def extend_with_lazy_optimization(BaseOptimizer, name=None):
    """Subclass of ``BaseOptimizer`` that updates only touched rows of some weights.

    For variables whose path matches ``lazy_variables`` (default
    ``["embeddings"]``), rows whose gradient row is entirely zero keep their
    weight *and* their optimizer slots (momentum, velocity, ...) unchanged,
    and are not weight-decayed: the behaviour of TensorFlow's LazyAdam /
    ``tf.compat.v1`` sparse Adam, here for any Keras optimizer. A row is the
    slice along all axes but the last (a token's vector for an embedding).
    Bias correction still uses the global step.

    Follows the lazy optimizer of the original bert4keras
    (https://kexue.fm/archives/6869), extended to roll back the slots too.
    Slots are the optimizer variables the base class creates with
    ``add_variable_from_reference`` (Keras' accumulators and EMA copies are
    not rolled back). Each lazy update keeps one copy of the weight and its
    slots while it runs.

    On TensorFlow, sparse (``IndexedSlices``) gradients of lazy variables are
    made dense first, so a row repeated within a batch has its slices summed
    before the update rule sees it; this gives the same result as a dense
    gradient. (Keras' own sparse path squares each repeated slice on its own
    in Adam's second moment, so plain ``keras.optimizers.Adam`` differs from
    its dense result when ids repeat.)

    Usage::

        LazyAdam = extend_with_lazy_optimization(keras.optimizers.Adam)
        opt = LazyAdam(learning_rate=1e-3, lazy_variables=["Embedding-Token"])

    For :class:`Tiger` prefer its ``lazy_embeddings=True`` (no copies).

    Args:
        BaseOptimizer: a ``keras.optimizers.Optimizer`` subclass.
        name: class name used for serialization; default
            ``BaseOptimizer.__name__ + "Lazy"``.

    Returns:
        The new class (cached), taking ``lazy_variables`` (list of regexes)
        and ``weight_decay_exclude`` besides the base arguments.

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class.
    """
    key = ("Lazy", BaseOptimizer, name or BaseOptimizer.__name__ + "Lazy")
    if key in _CLASS_CACHE:
        return _CLASS_CACHE[key]

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, lazy_variables=("embeddings",), **kwargs):
            super().__init__(*args, **kwargs)
            self.lazy_variables = list(_as_tuple(lazy_variables))

        def update_step(self, gradient, variable, learning_rate):
            if not self._matches(self.lazy_variables, variable):
                return super().update_step(gradient, variable, learning_rate)
            gradient = _dense(gradient, variable.shape)
            touched = _touched_rows(gradient)
            state = [variable] + self._registry().slots.get(self._var_key(variable), [])
            before = [_snapshot(x) for x in state]
            super().update_step(gradient, variable, learning_rate)
            for x, old in zip(state, before):
                self.assign(x, ops.where(touched, ops.convert_to_tensor(x), old))

        def get_config(self):
            config = super().get_config()
            config["lazy_variables"] = list(self.lazy_variables)
            return config

    return _finish("Lazy", BaseOptimizer, NewOptimizer, name)


# ---------------------------------------------------------------------------
# Lookahead
# ---------------------------------------------------------------------------

def extend_with_lookahead(BaseOptimizer, name=None):
    """Subclass of ``BaseOptimizer`` wrapped in Lookahead (Zhang et al., 2019).

    "Lookahead Optimizer: k steps forward, 1 step back"
    (https://arxiv.org/abs/1907.08610), Algorithm 1: the base optimizer
    updates the fast weights ``w``; every ``lookahead_steps`` updates the slow
    weights move ``phi <- phi + alpha * (w - phi)`` and the fast weights are
    reset to them, ``w <- phi``. The slow weights start as the weights before
    the first update (so loading weights after ``compile`` is fine). One
    extra variable (``lookahead_slow``) per weight.

    Steps are counted as in Keras' ``optimizer.iterations``: with Keras
    ``gradient_accumulation_steps`` they are real updates.

    Usage::

        AdamLA = extend_with_lookahead(keras.optimizers.Adam)
        opt = AdamLA(learning_rate=1e-3, lookahead_steps=5, lookahead_alpha=0.5)

    Args:
        BaseOptimizer: a ``keras.optimizers.Optimizer`` subclass.
        name: class name used for serialization; default
            ``BaseOptimizer.__name__ + "Lookahead"``.

    Returns:
        The new class (cached), taking ``lookahead_steps`` (int >= 1,
        default 5) and ``lookahead_alpha`` (float in (0, 1], default 0.5).

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class.
        ValueError (when instantiating): bad ``lookahead_steps`` or
            ``lookahead_alpha``.
    """
    key = ("Lookahead", BaseOptimizer, name or BaseOptimizer.__name__ + "Lookahead")
    if key in _CLASS_CACHE:
        return _CLASS_CACHE[key]

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, lookahead_steps=5, lookahead_alpha=0.5, **kwargs):
            super().__init__(*args, **kwargs)
            if int(lookahead_steps) != lookahead_steps or lookahead_steps < 1:
                raise ValueError("lookahead_steps must be an integer >= 1, got %r"
                                 % (lookahead_steps,))
            if not 0.0 < lookahead_alpha <= 1.0:
                raise ValueError("lookahead_alpha must be in (0, 1], got %r"
                                 % (lookahead_alpha,))
            self.lookahead_steps = int(lookahead_steps)
            self.lookahead_alpha = float(lookahead_alpha)

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._slow_weights = [self.add_variable_from_reference(v, name="lookahead_slow")
                                  for v in var_list]

        def update_step(self, gradient, variable, learning_rate):
            slow = self._slow_weights[self._get_variable_index(variable)]
            before = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            done = self.iterations  # updates finished before this one
            slow_value = ops.where(ops.equal(done, 0), before, ops.convert_to_tensor(slow))
            fast = ops.convert_to_tensor(variable)
            alpha = ops.cast(self.lookahead_alpha, variable.dtype)
            synced = slow_value + alpha * (fast - slow_value)
            sync = ops.equal(ops.mod(done + 1, self.lookahead_steps), 0)
            self.assign(slow, ops.where(sync, synced, slow_value))
            self.assign(variable, ops.where(sync, synced, fast))

        def get_config(self):
            config = super().get_config()
            config.update({"lookahead_steps": self.lookahead_steps,
                           "lookahead_alpha": self.lookahead_alpha})
            return config

    return _finish("Lookahead", BaseOptimizer, NewOptimizer, name)


# ---------------------------------------------------------------------------
# Layer adaptation (LAMB trust ratio)
# ---------------------------------------------------------------------------

def extend_with_layer_adaptation(BaseOptimizer, name=None):
    """Subclass of ``BaseOptimizer`` with the LAMB layer-wise trust ratio.

    You et al., "Large Batch Optimization for Deep Learning: Training BERT in
    76 minutes" (https://arxiv.org/abs/1904.00962): each weight tensor's
    update ``lr * u`` (here whatever the base rule does, weight decay
    included) is rescaled to ``lr * ||w|| / ||u|| * u``, so the step length is
    ``lr * ||w||`` whatever the gradient scale. If ``||w||`` or ``||u||`` is
    zero the plain update is kept. Same rule as
    ``extend_with_layer_adaptation`` of the original bert4keras;
    ``extend_with_layer_adaptation(keras.optimizers.AdamW)`` is LAMB with
    decay inside the ratio, ``extend_with_layer_adaptation(Tiger)`` gives
    Tiger a LAMB-style step.

    Variables whose path matches ``exclude_from_layer_adaptation`` (default
    ``["bias", "beta", "gamma"]``: biases and LayerNorm) keep the plain update.
    The ratio uses the learning rate this class receives, so when combining
    with :func:`extend_with_parameter_wise_lr`, extend with layer adaptation
    first (innermost).

    Args:
        BaseOptimizer: a ``keras.optimizers.Optimizer`` subclass.
        name: class name used for serialization; default
            ``BaseOptimizer.__name__ + "LayerAdaptation"``.

    Returns:
        The new class (cached), taking ``exclude_from_layer_adaptation``
        (list of regexes) and ``weight_decay_exclude``.

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class.
    """
    key = ("LayerAdaptation", BaseOptimizer,
           name or BaseOptimizer.__name__ + "LayerAdaptation")
    if key in _CLASS_CACHE:
        return _CLASS_CACHE[key]

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, exclude_from_layer_adaptation=("bias", "beta", "gamma"),
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.exclude_from_layer_adaptation = list(_as_tuple(exclude_from_layer_adaptation))

        def update_step(self, gradient, variable, learning_rate):
            if self._matches(self.exclude_from_layer_adaptation, variable):
                return super().update_step(gradient, variable, learning_rate)
            before = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            delta = before - ops.convert_to_tensor(variable)
            lr = ops.cast(learning_rate, variable.dtype)
            w_norm = ops.sqrt(ops.sum(ops.square(before)))
            d_norm = ops.sqrt(ops.sum(ops.square(delta)))
            usable = ops.logical_and(ops.greater(w_norm, 0), ops.greater(d_norm, 0))
            ratio = ops.where(usable, lr * w_norm / ops.where(usable, d_norm, 1.0), 1.0)
            self.assign(variable, before - ops.cast(ratio, variable.dtype) * delta)

        def get_config(self):
            config = super().get_config()
            config["exclude_from_layer_adaptation"] = list(self.exclude_from_layer_adaptation)
            return config

    return _finish("LayerAdaptation", BaseOptimizer, NewOptimizer, name)
