"""Shared machinery of the optimizer extensions (private to ``bert4keras.optimizers``).

Holds the mixin that every ``extend_with_*`` class and :class:`Tiger` put in
front of a Keras optimizer (variable paths, slot registry, decoupled
per-variable weight decay), the gradient helpers they share, and the cache
and serialization of generated classes.

How a generated class is saved and loaded
-----------------------------------------
A class made at run time by a factory (``extend_with_weight_decay(Adam)``,
``extend_with_lookahead(extend_with_parameter_wise_lr(AdamW))``, ...) does not
exist in a new process until the factory runs again. So every generated class
is saved under the one registered name ``bert4keras>ExtendedOptimizer`` (the
:class:`ExtendedOptimizer` dispatcher, registered by ``import bert4keras``),
and its config carries a *recipe* under the key ``"extended_optimizer"``::

    {"base": "AdamW", "base_module": "keras.src.optimizers.adamw",
     "extensions": [{"extension": "ParameterWiseLR",
                     "class_name": "AdamWParameterWiseLR"}]}

``base`` is the registered name (``keras.saving.get_registered_name``) of
the innermost class that no factory made, ``extensions`` the factories
applied to it, innermost first, each with the class name it was given.
``ExtendedOptimizer.from_config`` runs the same factories again (which
return the cached class if it exists) and builds the instance from the rest
of the config. Each generated class is also put into the custom objects as
``bert4keras>{class name}``, its registered name before the recipe existed,
so files saved then load once the factory has been called again.
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
        recipe = type(self).__dict__.get("_extended_recipe")
        if recipe is not None:  # a class made by a factory (not a subclass of one)
            config[_RECIPE_KEY] = _recipe_config(recipe)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # The recipe names the class; it is not a constructor argument.
        config = {key: value for key, value in config.items() if key != _RECIPE_KEY}
        return super().from_config(config, custom_objects=custom_objects)


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

# Serialization of generated classes (see the module docstring).
_DISPATCHER_NAME = "ExtendedOptimizer"
_RECIPE_KEY = "extended_optimizer"
_FACTORIES = {}  # extension kind -> factory function


def _factory(kind):
    """Decorator: record ``function`` as the factory of extension ``kind``.

    The dispatcher calls it by this kind when it rebuilds a saved class.
    """
    def register(function):
        _FACTORIES[kind] = function
        return function
    return register


def _is_generated(cls):
    return isinstance(cls, type) and "_extended_recipe" in cls.__dict__


def _finish(kind, base, new_cls, name):
    """Name, cache and register for (de)serialization a generated class.

    ``new_cls`` is saved under the dispatcher's registered name with its
    recipe (base class + extensions so far); its own name also goes into the
    custom objects as ``bert4keras>{name}`` (the name files saved by earlier
    versions refer to), unless that name belongs to a class no factory made.
    """
    name = name or base.__name__ + kind
    new_cls.__name__ = new_cls.__qualname__ = name
    new_cls.__module__ = "bert4keras.optimizers"
    root, steps = base.__dict__.get("_extended_recipe", (base, ()))
    new_cls._extended_recipe = (root, steps + ((kind, name),))
    objects = keras.saving.get_custom_objects()
    # register_keras_serializable is the public way to set the name a class is
    # saved under; it also points that name at the class: point it back.
    keras.saving.register_keras_serializable(package=_PACKAGE, name=_DISPATCHER_NAME)(new_cls)
    objects["%s>%s" % (_PACKAGE, _DISPATCHER_NAME)] = ExtendedOptimizer
    legacy = "%s>%s" % (_PACKAGE, name)
    if legacy not in objects or _is_generated(objects[legacy]):
        objects[legacy] = new_cls
    _CLASS_CACHE[(kind, base, name)] = new_cls
    return new_cls


def _recipe_config(recipe):
    root, steps = recipe
    return {
        "base": keras.saving.get_registered_name(root),
        "base_module": root.__module__,
        "extensions": [{"extension": kind, "class_name": name} for kind, name in steps],
    }


def _resolve_base(name, module):
    """The base optimizer class a recipe names (Keras' own, or registered)."""
    found = None
    if ">" not in name and str(module).split(".")[0] == "keras":
        found = getattr(keras.optimizers, name, None)
    if found is None:
        # registered classes, and load_model(..., custom_objects=...) during loading
        found = keras.saving.get_registered_object(name)
    if not (isinstance(found, type) and issubclass(found, keras.optimizers.Optimizer)):
        raise TypeError(
            "cannot rebuild a saved bert4keras optimizer: its base optimizer class %r "
            "(module %r) is not known in this process. Import the module that defines it, "
            "with the class decorated by @keras.saving.register_keras_serializable(), or pass "
            "custom_objects={%r: TheClass} to keras.saving.load_model" % (name, module, name))
    return found


def optimizer_class_from_recipe(recipe):
    """Rebuild a generated optimizer class from its saved recipe.

    Args:
        recipe: dict ``{"base": registered name, "base_module": str,
            "extensions": [{"extension": kind, "class_name": str}, ...]}``, as
            stored under ``"extended_optimizer"`` in the config of an
            optimizer whose class an ``extend_with_*`` factory made.

    Returns:
        The class, made by running the factories again in order (the
        factories' cache returns the existing class in the process that made
        it).

    Raises:
        ValueError: the recipe is missing or malformed, or names an
            extension this version does not have.
        TypeError: the base class is not known (see :func:`_resolve_base`).
    """
    import bert4keras.optimizers  # noqa: F401  (defines the factories)

    if (not isinstance(recipe, dict) or not isinstance(recipe.get("base"), str)
            or not isinstance(recipe.get("extensions"), (list, tuple))
            or not recipe["extensions"]):
        raise ValueError("a config saved under 'bert4keras>%s' needs a recipe under %r "
                         "({'base': ..., 'extensions': [...]}); got %r"
                         % (_DISPATCHER_NAME, _RECIPE_KEY, recipe))
    cls = _resolve_base(recipe["base"], recipe.get("base_module"))
    for step in recipe["extensions"]:
        kind = step.get("extension") if isinstance(step, dict) else None
        if kind not in _FACTORIES:
            raise ValueError("saved optimizer recipe names an unknown extension %r (known: %s)"
                             % (kind, ", ".join(sorted(_FACTORIES))))
        cls = _FACTORIES[kind](cls, name=step.get("class_name"))
    return cls


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ExtendedOptimizer:
    """Loader of optimizers whose class an ``extend_with_*`` factory made.

    Not an optimizer: every generated class is saved under this class's
    registered name (``bert4keras>ExtendedOptimizer``) with a recipe in its
    config, and :meth:`from_config` rebuilds the class from the recipe
    (:func:`optimizer_class_from_recipe`), then the instance from the rest of
    the config. ``import bert4keras`` registers it, so such a ``.keras``
    file loads in a new process without calling the factories first.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("ExtendedOptimizer only loads saved optimizers; make optimizer classes "
                        "with the extend_with_* factories of bert4keras.optimizers")

    def get_config(self):  # required for registration; never called on an instance
        raise NotImplementedError

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Optimizer instance from a generated class's config (recipe included).

        Raises:
            ValueError, TypeError: see :func:`optimizer_class_from_recipe`.
        """
        config = dict(config)
        optimizer_class = optimizer_class_from_recipe(config.get(_RECIPE_KEY))
        return optimizer_class.from_config(config, custom_objects=custom_objects)
