"""AdaFactor with bert4keras 0.11.5's arguments (Shazeer & Stern, 2018).

Why not ``keras.optimizers.Adafactor`` underneath: Keras' version always
factors the last two axes and additionally keeps a full-size ``velocity`` slot
per weight (so it saves no memory, the point of AdaFactor), has no first
moment (``beta1``), no constant ``beta2``, no switch for the parameter-scale
factor nor exclusions from it, no ``min_dim_size_to_factor`` threshold, and
always caps the step at ``1 / sqrt(t)``. The rule below is the paper's (with
mesh-tensorflow's options, as bert4keras 0.11.5 exposed them); where the
options coincide it gives Keras' numbers (``tests/test_compat_optimizers.py``
checks that).
"""

import re

import keras
from keras import ops

from bert4keras.optimizers.base import _PACKAGE, _as_tuple, _dense


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AdaFactorRelativeStep(keras.optimizers.schedules.LearningRateSchedule):
    """AdaFactor's relative step size ``scale * min(1 / sqrt(t), 0.01)``, ``t = step + 1``.

    Used when ``AdaFactor(learning_rate=None)`` (Shazeer & Stern 2018,
    section 8: ``rho_t = min(1e-2, 1 / sqrt(t))``); ``scale`` is 0.05 when the
    parameter-scale factor is off, as in bert4keras 0.11.5.
    """

    def __init__(self, scale=1.0):
        self.scale = float(scale)

    def __call__(self, step):
        t = ops.cast(step, "float32") + 1.0
        return self.scale * ops.minimum(1.0 / ops.sqrt(t), 0.01)

    def get_config(self):
        return {"scale": self.scale}


def _rms(x):
    return ops.sqrt(ops.mean(ops.square(x)))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AdaFactor(keras.optimizers.Optimizer):
    """AdaFactor: factored second moments, relative update clipping.

    Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost" (https://arxiv.org/abs/1804.04235), with the options of
    mesh-tensorflow's ``AdafactorOptimizer`` and the argument names of
    bert4keras 0.11.5. For a weight ``w`` with gradient ``g`` at step
    ``t = iterations + 1``::

        g2   = g**2 + epsilon1
        v    = beta2_t * v + (1 - beta2_t) * g2         (full, or factored:
               vr, vc = row / column means of g2 averaged the same way,
               v = vr * vc / mean(vr))
        u    = g / sqrt(v + epsilon1)
        u    = u / max(1, rms(u) / clipping_threshold)   (if a threshold)
        m    = beta1 * m + (1 - beta1) * u; u = m          (if beta1 > 0)
        u    = u * max(rms(w), epsilon2)                  (parameter scale)
        w   <- w - lr * u

    ``beta2_t = 1 - t ** -0.8`` when ``beta2`` is None, else ``beta2``. A
    weight of rank >= 2 is factored over its two largest axes when the
    smaller of them has at least ``min_dim_size_to_factor`` entries; then it
    keeps two small slots (``vr``, ``vc``) instead of a full ``v``.

    Args:
        learning_rate: float or schedule (default 1e-3), or None for the
            relative step ``min(1 / sqrt(t), 0.01)`` (times 0.05 without the
            parameter scale).
        beta1: first-moment decay in [0, 1); 0 (default) keeps no ``m`` slot.
        beta2: second-moment decay in (0, 1), or None (default) for
            ``1 - t ** -0.8``.
        epsilon1: added to squared gradients (default 1e-30).
        epsilon2: floor of the parameter scale (default 1e-3).
        multiply_by_parameter_scale: scale updates by ``rms(w)`` (default true).
        clipping_threshold: update clipping threshold ``d`` (default 1.0);
            None turns clipping off.
        min_dim_size_to_factor: int (default 128), see above.
        exclude_from_parameter_scale: regexes searched in the variable path;
            matching weights are not scaled by ``rms(w)``.
        **kwargs: Keras optimizer arguments (``global_clipnorm``, ``use_ema``,
            ``gradient_accumulation_steps``, ``name``, ...).

    Raises:
        ValueError: ``beta1`` outside [0, 1), ``beta2`` outside (0, 1),
            ``min_dim_size_to_factor`` < 1.
    """

    def __init__(self, learning_rate=1e-3, beta1=0.0, beta2=None, epsilon1=1e-30,
                 epsilon2=1e-3, multiply_by_parameter_scale=True, clipping_threshold=1.0,
                 min_dim_size_to_factor=128, exclude_from_parameter_scale=None,
                 name="adafactor", **kwargs):
        if learning_rate is None:
            learning_rate = AdaFactorRelativeStep(1.0 if multiply_by_parameter_scale else 0.05)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= beta1 < 1.0:
            raise ValueError("AdaFactor: beta1 must be in [0, 1), got %r" % (beta1,))
        if beta2 is not None and not 0.0 < beta2 < 1.0:
            raise ValueError("AdaFactor: beta2 must be None or in (0, 1), got %r" % (beta2,))
        if int(min_dim_size_to_factor) != min_dim_size_to_factor or min_dim_size_to_factor < 1:
            raise ValueError("AdaFactor: min_dim_size_to_factor must be an integer >= 1, got %r"
                             % (min_dim_size_to_factor,))
        self.beta1 = float(beta1)
        self.beta2 = None if beta2 is None else float(beta2)
        self.epsilon1 = float(epsilon1)
        self.epsilon2 = float(epsilon2)
        self.multiply_by_parameter_scale = bool(multiply_by_parameter_scale)
        self.clipping_threshold = (None if clipping_threshold is None
                                   else float(clipping_threshold))
        self.min_dim_size_to_factor = int(min_dim_size_to_factor)
        self.exclude_from_parameter_scale = list(_as_tuple(exclude_from_parameter_scale))

    def factored_shape(self, shape):
        """How a weight of ``shape`` is factored, or None if it is not.

        Returns:
            ``(shape1, axis1, shape2, axis2)``: ``vr`` has ``shape1`` (the
            largest axis ``axis1`` reduced to 1), ``vc`` has ``shape2`` (the
            second largest axis ``axis2`` reduced to 1); None for rank < 2 or
            when the second largest axis is shorter than
            ``min_dim_size_to_factor``.
        """
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            return None
        order = sorted(range(len(shape)), key=lambda i: (shape[i], i))
        axis1, axis2 = order[-1], order[-2]
        if shape[axis2] < self.min_dim_size_to_factor:
            return None
        shape1, shape2 = list(shape), list(shape)
        shape1[axis1] = 1
        shape2[axis2] = 1
        return tuple(shape1), axis1, tuple(shape2), axis2

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._v, self._vr, self._vc, self._m = [], [], [], []
        for var in var_list:
            factored = self.factored_shape(var.shape)
            if factored is None:
                self._v.append(self.add_variable_from_reference(var, name="v"))
                self._vr.append(None)
                self._vc.append(None)
            else:
                shape1, _, shape2, _ = factored
                prefix = (getattr(var, "path", None) or var.name).replace("/", "_")
                self._v.append(None)
                self._vr.append(self.add_variable(shape=shape1, dtype=var.dtype,
                                                  name=prefix + "_vr"))
                self._vc.append(self.add_variable(shape=shape2, dtype=var.dtype,
                                                  name=prefix + "_vc"))
            self._m.append(self.add_variable_from_reference(var, name="m")
                           if self.beta1 > 0 else None)

    def _do_parameter_scale(self, variable):
        if not self.multiply_by_parameter_scale:
            return False
        path = getattr(variable, "path", None) or variable.name
        return not any(re.search(p, path) for p in self.exclude_from_parameter_scale)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        g = ops.cast(_dense(gradient, variable.shape), dtype)
        lr = ops.cast(learning_rate, dtype)
        if self.beta2 is None:
            t = ops.cast(self.iterations + 1, dtype)
            beta2 = 1.0 - ops.power(t, ops.cast(-0.8, dtype))
        else:
            beta2 = ops.cast(self.beta2, dtype)
        g2 = ops.square(g) + self.epsilon1
        factored = self.factored_shape(variable.shape)
        if factored is None:
            v = beta2 * self._v[index] + (1.0 - beta2) * g2
            self.assign(self._v[index], v)
        else:
            _, axis1, _, axis2 = factored
            vr_var, vc_var = self._vr[index], self._vc[index]
            vr = beta2 * vr_var + (1.0 - beta2) * ops.mean(g2, axis=axis1, keepdims=True)
            vc = beta2 * vc_var + (1.0 - beta2) * ops.mean(g2, axis=axis2, keepdims=True)
            self.assign(vr_var, vr)
            self.assign(vc_var, vc)
            v = vr * vc / ops.mean(vr, axis=axis2, keepdims=True)
        u = g / ops.sqrt(v + self.epsilon1)
        if self.clipping_threshold is not None:
            u = u / ops.maximum(1.0, _rms(u) / self.clipping_threshold)
        if self.beta1 > 0:
            m = self.beta1 * self._m[index] + (1.0 - self.beta1) * u
            self.assign(self._m[index], m)
            u = m
        if self._do_parameter_scale(variable):
            u = u * ops.maximum(_rms(ops.convert_to_tensor(variable)), self.epsilon2)
        self.assign_sub(variable, lr * u)

    def get_config(self):
        config = super().get_config()
        config.update({
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon1": self.epsilon1,
            "epsilon2": self.epsilon2,
            "multiply_by_parameter_scale": self.multiply_by_parameter_scale,
            "clipping_threshold": self.clipping_threshold,
            "min_dim_size_to_factor": self.min_dim_size_to_factor,
            "exclude_from_parameter_scale": list(self.exclude_from_parameter_scale),
        })
        return config
