"""Shared machinery of the optimizer extensions (private to ``bert4keras.optimizers``).

Holds the mixin that every ``extend_with_*`` class and :class:`Tiger` put in
front of a Keras optimizer (variable paths, slot registry, decoupled
per-variable weight decay), the gradient helpers they share, and the cache
and registration of generated classes.
"""

import re

import keras
from keras import ops

_PACKAGE = "bert4keras"


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


def _take_old_name(kwargs, old, new, value, default, convert=None):
    """Resolve a bert4keras 0.11.5 argument name against its modern name.

    Pops ``old`` from ``kwargs`` (the constructor's remaining keyword
    arguments). Returns the value to use for ``new``: the old argument's
    (passed through ``convert``) if only it was given, else ``value``.

    Raises:
        TypeError: both names were given, naming both.
    """
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    if value is not default and value != default:
        raise TypeError("got both %r (bert4keras 0.11.5 name) and %r; pass only %r"
                        % (old, new, new))
    return convert(old_value) if convert is not None else old_value


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
    new_cls.__module__ = "bert4keras.optimizers"
    keras.saving.register_keras_serializable(package=_PACKAGE, name=name)(new_cls)
    _CLASS_CACHE[(kind, base, name)] = new_cls
    return new_cls
