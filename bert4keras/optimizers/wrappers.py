"""``extend_with_*`` factories for what Keras lacks: parameter-wise / layer-wise
learning rates, lazy (touched-rows-only) updates, Lookahead and the LAMB trust
ratio. Each takes an optimizer class and returns a cached, registered subclass
(see ``bert4keras.optimizers``)."""

import re

from keras import ops

from bert4keras.optimizers.base import (
    _CLASS_CACHE,
    _as_tuple,
    _take_old_name,
    _bases,
    _dense,
    _factory,
    _finish,
    _snapshot,
    _touched_rows,
)


# ---------------------------------------------------------------------------
# Parameter-wise / layer-wise learning rates
# ---------------------------------------------------------------------------

@_factory("ParameterWiseLR")
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
    bert4keras 0.11.5's ``paramwise_lr_schedule={substring: float}`` is also
    accepted (its keys are matched as plain substrings of the path).

    Args:
        BaseOptimizer: a ``keras.optimizers.Optimizer`` subclass (Keras' own,
            :class:`Tiger`, or one returned by another ``extend_with_*``).
        name: class name used for serialization; default
            ``BaseOptimizer.__name__ + "ParameterWiseLR"``. A saved model
            loads after ``import bert4keras`` alone (the class is rebuilt
            from a recipe; see ``bert4keras/optimizers/base.py``).

    Returns:
        The new class (cached: the same arguments return the same class).

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class, or is a
            ``LossScaleOptimizer``.
        TypeError (when instantiating): a 0.11.5 argument name given together
            with its modern name.
        ValueError (when instantiating): a multiplier is negative or not a
            number.
    """
    key = ("ParameterWiseLR", BaseOptimizer, name or BaseOptimizer.__name__ + "ParameterWiseLR")
    if key in _CLASS_CACHE:
        return _CLASS_CACHE[key]

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, multipliers=None, **kwargs):
            multipliers = _take_old_name(kwargs, "paramwise_lr_schedule", "multipliers",
                                         multipliers, None, _substring_patterns)
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


def _substring_patterns(schedule):
    """0.11.5's ``{substring: multiplier}`` as ``{regex: multiplier}``."""
    return {re.escape(str(key)): value for key, value in dict(schedule).items()}


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

@_factory("Lazy")
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
        The new class (cached), taking ``lazy_variables`` (list of regexes;
        0.11.5 name ``include_in_lazy_optimization``, whose default there
        was the empty list) and ``weight_decay_exclude`` besides the base
        arguments.

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class.
        TypeError (when instantiating): a 0.11.5 argument name given together
            with its modern name.
    """
    key = ("Lazy", BaseOptimizer, name or BaseOptimizer.__name__ + "Lazy")
    if key in _CLASS_CACHE:
        return _CLASS_CACHE[key]

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, lazy_variables=("embeddings",), **kwargs):
            lazy_variables = _take_old_name(kwargs, "include_in_lazy_optimization",
                                            "lazy_variables", lazy_variables, ("embeddings",))
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

@_factory("Lookahead")
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
        default 5) and ``lookahead_alpha`` (float in (0, 1], default 0.5);
        0.11.5 names ``steps_per_slow_update`` and ``slow_step_size``. (In
        0.11.5 the slow weights started at zero, so its first sync shrank
        the weights; here they start at the initial weights, as in the
        paper.)

    Raises:
        TypeError: ``BaseOptimizer`` is not an optimizer class.
        TypeError (when instantiating): a 0.11.5 argument name given together
            with its modern name.
        ValueError (when instantiating): bad ``lookahead_steps`` or
            ``lookahead_alpha``.
    """
    key = ("Lookahead", BaseOptimizer, name or BaseOptimizer.__name__ + "Lookahead")
    if key in _CLASS_CACHE:
        return _CLASS_CACHE[key]

    class NewOptimizer(*_bases(BaseOptimizer)):
        def __init__(self, *args, lookahead_steps=5, lookahead_alpha=0.5, **kwargs):
            lookahead_steps = _take_old_name(kwargs, "steps_per_slow_update", "lookahead_steps",
                                             lookahead_steps, 5)
            lookahead_alpha = _take_old_name(kwargs, "slow_step_size", "lookahead_alpha",
                                             lookahead_alpha, 0.5)
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

@_factory("LayerAdaptation")
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
        (list of regexes; the same name as in 0.11.5, whose default there
        was the empty list) and ``weight_decay_exclude``.

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
