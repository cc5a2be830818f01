"""Adam and AdamW whose update runs as one fused kernel on the torch backend.

Keras' Adam on torch is a chain of ``torch._foreach_*`` calls, each a full
pass over the weights or moments with temporaries in between (what that costs
a BERT-base training step: benchmarks/HISTORY.md, Zen 5 section). torch
ships the whole Adam/AdamW update as one kernel per tensor,
``torch._fused_adam_`` / ``torch._fused_adamw_`` (what
``torch.optim.AdamW(fused=True)`` calls; CPU and CUDA): the moments, the
weight decay and the weight update in one pass. :class:`FusedAdamMixin` sends
the update there and keeps Keras' arithmetic:

- Keras' Adam (Kingma & Ba, https://arxiv.org/abs/1412.6980, as written in
  ``keras.optimizers.Adam``) adds ``epsilon`` to ``sqrt(v)`` *before* the
  bias correction: ``w -= lr * sqrt(1-b2**t) / (1-b1**t) * m / (sqrt(v) + eps)``;
  torch adds it after: ``w -= lr / (1-b1**t) * m / (sqrt(v)/sqrt(1-b2**t) + eps)``.
  Passing ``eps / sqrt(1-b2**t)`` to torch makes the two the same formula.
- Decoupled weight decay (Loshchilov & Hutter,
  https://arxiv.org/abs/1711.05101): Keras multiplies the decayed weights by
  ``1 - weight_decay * lr`` just before the update, with the optimizer's
  current learning rate and its exclusion list; ``_fused_adamw_`` does the
  same multiplication first, inside its pass. Excluded weights go to
  ``_fused_adam_`` without decay.
- bert4keras' ``Adam(bias_correction=False)`` (Google BERT's update with the
  raw moments) rescales the learning rate exactly as its ``update_step`` does.

Results equal Keras' own update to float32 rounding (the moments are updated
with ``lerp`` instead of ``m + (g - m) * (1 - b1)``; tests/test_fused_adam.py
compares them after several steps).

When it applies: the torch backend, not inside ``torch.compile``, the class'
``update_step`` is Keras' Adam one, bert4keras' ``Adam`` one, or the
per-variable weight decay of the ``extend_with_*`` classes on top of either
(``extend_with_weight_decay(Adam)`` as bert4keras 0.11.5 scripts write it);
every weight is float32 (mixed precision keeps them so) and every gradient a
dense tensor of its weight's dtype, shape and device. Anything else
(parameter-wise learning rates, lazy updates, LAMB, bfloat16 or float16
weights -- torch's kernel computes those in float32 and rounds once, Keras
rounds after every operation, so the two would differ) runs Keras' update
unchanged. Gradient accumulation, EMA, clipping and loss
scaling are Keras' and wrap the call as before. After a fused update the
weights' ``.grad`` are released (:data:`RELEASE_GRADIENTS`).
"""

import math

import keras

from bert4keras.optimizers.base import _PACKAGE, _ExtensionBase

__all__ = ["FusedAdamMixin", "AdamW", "fused_plan", "reproduces"]

#: ``update_step`` functions whose arithmetic the fused kernel reproduces,
#: mapped to a flag: does the class rescale the learning rate (bias_correction)?
_ADAM_UPDATES = {keras.optimizers.Adam.update_step: False}

#: Set to False to run Keras' own update everywhere (for comparisons).
ENABLED = True

#: After a fused update, the updated weights' ``.grad`` are set to None (what
#: ``torch.optim``'s ``zero_grad(set_to_none=True)`` does). Keras' torch
#: ``train_step`` clears them itself, but only after the next forward pass, so
#: one step's gradients (a float per weight) stayed alive through it (what
#: releasing them changes: benchmarks/HISTORY.md, Zen 5 section, memory rows).
#: Set to False if a training loop of your own reads ``.grad`` after
#: ``optimizer.apply``.
RELEASE_GRADIENTS = True


def reproduces(update_step, rescales_lr=False):
    """Declare that ``update_step`` (a function) is Keras' Adam update,
    optionally with bert4keras' ``bias_correction`` learning-rate rescaling,
    so the fused kernel may replace it."""
    _ADAM_UPDATES[update_step] = rescales_lr


def _owner(mro, name, start=0):
    for cls in mro[start:]:
        if name in cls.__dict__:
            return cls
    return None


def fused_plan(optimizer):
    """How ``optimizer``'s update maps onto torch's fused Adam, or None.

    Returns:
        ``(decay_in_update, rescales_lr)`` -- whether the weight decay is
        applied inside ``update_step`` (the ``extend_with_*`` classes) rather
        than by Keras' ``_apply_weight_decay``, and whether ``update_step``
        is bert4keras' ``Adam`` (which honours ``bias_correction``); None when
        the class' update is something else (its own ``update_step``).
    """
    mro = type(optimizer).__mro__
    owner = _owner(mro, "update_step")
    decay_in_update = owner is _ExtensionBase
    if decay_in_update:
        owner = _owner(mro, "update_step", mro.index(_ExtensionBase) + 1)
    if owner is None or owner.__dict__["update_step"] not in _ADAM_UPDATES:
        return None
    return decay_in_update, _ADAM_UPDATES[owner.__dict__["update_step"]]


class FusedAdamMixin:
    """Put in front of a Keras Adam class: on torch, one fused kernel per step.

    See the module docstring for the arithmetic and when it applies. On
    TensorFlow and JAX, and whenever the fused kernel does not apply, every
    method defers to the Keras class behind it.
    """

    def _fused_setup(self):
        # torch is imported here only: on TensorFlow and JAX it is never loaded
        if not ENABLED or keras.backend.backend() != "torch":
            return None
        import torch

        if torch.compiler.is_compiling():
            return None
        return fused_plan(self)

    def _apply_weight_decay(self, variables):
        # Keras calls this right before _backend_update_step; with the fused
        # kernel the decay is part of that pass, so it waits for it.
        # (object.__setattr__: Keras' optimizer would track a plain attribute.)
        if self.weight_decay and self._fused_setup() is not None:
            object.__setattr__(self, "_b4k_decay_ids", frozenset(
                id(v) for v in variables if self._use_weight_decay(v)))
            return None
        return super()._apply_weight_decay(variables)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        decay_ids = getattr(self, "_b4k_decay_ids", None)
        object.__setattr__(self, "_b4k_decay_ids", None)
        plan = self._fused_setup()
        if plan is not None and self._fused_applies(grads, trainable_variables):
            import torch

            with torch.no_grad():
                self._fused_update(plan, grads, trainable_variables, learning_rate,
                                   decay_ids)
            if RELEASE_GRADIENTS:
                del grads
                for variable in trainable_variables:
                    variable.value.grad = None
            return None
        if decay_ids:
            super()._apply_weight_decay([v for v in trainable_variables if id(v) in decay_ids])
        return super()._backend_update_step(grads, trainable_variables, learning_rate)

    @staticmethod
    def _fused_applies(grads, variables):
        import torch

        for grad, variable in zip(grads, variables):
            value = variable.value
            if (not isinstance(grad, torch.Tensor) or grad.layout != torch.strided
                    or grad.dtype != value.dtype or grad.device != value.device
                    or grad.shape != value.shape
                    or value.dtype != torch.float32):
                return False
        return True

    def _fused_update(self, plan, grads, variables, learning_rate, decay_ids):
        import torch

        decay_in_update, rescales_lr = plan
        iterations = self.iterations  # a tensor, not the variable, with accumulation
        t = int(getattr(iterations, "value", iterations)) + 1
        lr = float(learning_rate)
        beta_1, beta_2 = float(self.beta_1), float(self.beta_2)
        bias_2 = 1.0 - beta_2 ** t
        # Keras: eps added to sqrt(v); torch: to sqrt(v / (1 - b2**t)).
        eps = float(self.epsilon) / math.sqrt(bias_2)
        step_lr = lr
        if rescales_lr and not getattr(self, "bias_correction", True):
            step_lr = lr * (1.0 - beta_1 ** t) / math.sqrt(bias_2)
        decay = float(self.weight_decay or 0.0)
        if decay_in_update:
            decayed = {id(v) for v in variables if self._use_weight_decay(v)} if decay else ()
        else:
            decayed = decay_ids or ()
        groups = {}
        for grad, variable in zip(grads, variables):
            index = self._get_variable_index(variable)
            key = (variable.value.device, id(variable) in decayed)
            group = groups.setdefault(key, ([], [], [], [], []))
            group[0].append(variable.value)
            group[1].append(grad)
            group[2].append(self._momentums[index].value)
            group[3].append(self._velocities[index].value)
            if self.amsgrad:
                group[4].append(self._velocity_hats[index].value)
        for (device, decays), (weights, grads_, m, v, v_max) in groups.items():
            step = torch.full((), float(t), dtype=torch.float32, device=device)
            kwargs = dict(lr=step_lr, beta1=beta_1, beta2=beta_2, eps=eps,
                          amsgrad=bool(self.amsgrad), maximize=False)
            if decays and step_lr:
                # torch decays by step_lr * weight_decay; Keras by lr * weight_decay
                torch._fused_adamw_(weights, grads_, m, v, v_max, [step] * len(weights),
                                    weight_decay=decay * lr / step_lr, **kwargs)
            else:
                torch._fused_adam_(weights, grads_, m, v, v_max, [step] * len(weights),
                                   weight_decay=0.0, **kwargs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AdamW(FusedAdamMixin, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW``, with the fused update on torch.

    Same arguments, defaults and results as Keras' class (Loshchilov & Hutter,
    https://arxiv.org/abs/1711.05101, as Keras writes it: ``weight_decay``
    default 0.004, ``epsilon`` 1e-7, decay with the current learning rate
    before the Adam update, ``exclude_from_weight_decay`` honoured). On the
    torch backend the update is torch's fused AdamW kernel (module
    docstring); on TensorFlow and JAX it is Keras' class unchanged.

    Raises:
        ValueError: as ``keras.optimizers.AdamW`` (e.g. ``weight_decay=None``).
    """
