"""Optimizers and optimizer extensions that Keras 3 lacks, and bert4keras 0.11.5's names.

Everything here is a Keras 3 optimizer (``keras.optimizers.Optimizer``
subclass written with ``keras.ops``), so it runs on TensorFlow, JAX and torch,
works with ``model.fit`` and is saved with the model.

What is here
------------
- :class:`Tiger` -- sign-of-momentum optimizer with a single slot per weight
  (Su Jianlin, 2023), with the post's non-finite rule (momentum kept, weights
  shrunk by 0.99; ``shrink_ratio=1.0`` skips instead) and both remedies for
  rare-token embedding outliers (``lazy_embeddings=True``,
  ``embedding_optimizer="adam"``).
- :class:`PiecewiseLinear` / :func:`piecewise_linear` -- warm-up and decay
  schedules written as ``{step: value}``.
- ``extend_with_*`` factories that take a Keras optimizer class and return a
  subclass, mirroring the names of the original bert4keras:

  * :func:`extend_with_parameter_wise_lr` (+ :func:`layerwise_lr_decay`),
  * :func:`extend_with_lazy_optimization` (touched-rows-only updates),
  * :func:`extend_with_lookahead` (Zhang et al., 2019),
  * :func:`extend_with_layer_adaptation` (LAMB trust ratio).

- :class:`AdamW` -- ``keras.optimizers.AdamW`` whose update on the torch
  backend is torch's fused AdamW kernel (one pass per weight instead of
  Keras' chain of ``_foreach`` passes); bert4keras' ``Adam`` and the
  ``extend_with_weight_decay(Adam)`` classes get the same (``fused``).
- bert4keras 0.11.5's names (``compat``): ``Adam`` (``bias_correction``),
  ``AdaFactor``, ``Lion``, ``extend_with_weight_decay``,
  ``extend_with_piecewise_linear_lr``, ``extend_with_gradient_accumulation``,
  ``extend_with_exponential_moving_average`` (``apply_ema_weights`` /
  ``reset_old_weights``), the ``_v2`` aliases and ``custom_objects``. The
  four factories above also accept their 0.11.5 argument names
  (``paramwise_lr_schedule``, ``include_in_lazy_optimization``,
  ``steps_per_slow_update`` / ``slow_step_size``). See
  ``bert4keras/optimizers/compat.py`` for what each is built on and where
  Keras 3 semantics differ from 0.11.5.

Modules: ``schedules`` (piecewise linear), ``base`` (shared mixin), ``tiger``,
``wrappers`` (the four modern factories), ``adafactor``, ``fused``, ``compat``; import
everything from ``bert4keras.optimizers``.

  A model compiled with a generated class saves to ``.keras`` and loads in
  a new process after ``import bert4keras`` alone: the class is saved as a
  recipe (base class + extensions) that ``bert4keras>ExtendedOptimizer``
  rebuilds (see ``bert4keras/optimizers/base.py``); a base class of your own
  must be registered with ``keras.saving``. They stack, e.g.
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
  use short names to be portable. ``bert4keras.optimizers.AdamW`` takes the
  same arguments and gives the same updates; on the torch backend it runs
  them as torch's fused kernel (what that changes in a BERT-base training
  step: benchmarks/HISTORY.md, the Zen 5 section's training rows).
- ``keras.optimizers.Lion`` and ``keras.optimizers.Lamb``. Keras' Lamb keeps
  weight decay out of the trust ratio; ``extend_with_layer_adaptation(AdamW)``
  puts it inside, as the LAMB paper does.
- Every optimizer takes ``use_ema=True`` (weight moving average, swap in with
  ``optimizer.finalize_variable_values``), ``gradient_accumulation_steps=k``
  (adds one accumulator per weight; learning rate schedules see micro-steps),
  ``global_clipnorm`` / ``clipnorm`` / ``clipvalue``.
- Mixed precision: ``keras.mixed_precision.LossScaleOptimizer`` already skips
  steps with non-finite gradients; Tiger's own guard is for setups without
  loss scaling (bfloat16, or float16 with Tiger alone: its sign update does
  not care about the gradient's scale) and is harmless under it.
"""

from bert4keras.optimizers.adafactor import AdaFactor, AdaFactorRelativeStep
from bert4keras.optimizers.compat import (
    AdaFactorBase,
    AdaFactorV1,
    AdaFactorV2,
    Adam,
    Lion,
    LionV2,
    custom_objects,
    export_to_custom_objects,
    extend_with_exponential_moving_average,
    extend_with_exponential_moving_average_v2,
    extend_with_gradient_accumulation,
    extend_with_gradient_accumulation_v2,
    extend_with_layer_adaptation_v2,
    extend_with_lazy_optimization_v2,
    extend_with_lookahead_v2,
    extend_with_parameter_wise_lr_v2,
    extend_with_piecewise_linear_lr,
    extend_with_piecewise_linear_lr_v2,
    extend_with_weight_decay,
    extend_with_weight_decay_v2,
)
from bert4keras.optimizers.fused import AdamW
from bert4keras.optimizers.schedules import PiecewiseLinear, piecewise_linear
from bert4keras.optimizers.tiger import Tiger
from bert4keras.optimizers.wrappers import (
    extend_with_layer_adaptation,
    extend_with_lazy_optimization,
    extend_with_lookahead,
    extend_with_parameter_wise_lr,
    layerwise_lr_decay,
)

# Public classes report the package as their module (stable in saved configs and reprs).
for _cls in (Tiger, PiecewiseLinear, Adam, AdamW, Lion, AdaFactor, AdaFactorRelativeStep):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "AdamW",
    "Tiger",
    "PiecewiseLinear",
    "piecewise_linear",
    "extend_with_parameter_wise_lr",
    "layerwise_lr_decay",
    "extend_with_lazy_optimization",
    "extend_with_lookahead",
    "extend_with_layer_adaptation",
    # bert4keras 0.11.5 names
    "Adam",
    "AdaFactor",
    "AdaFactorBase",
    "AdaFactorV1",
    "AdaFactorV2",
    "AdaFactorRelativeStep",
    "Lion",
    "LionV2",
    "export_to_custom_objects",
    "extend_with_weight_decay",
    "extend_with_piecewise_linear_lr",
    "extend_with_gradient_accumulation",
    "extend_with_exponential_moving_average",
    "extend_with_weight_decay_v2",
    "extend_with_layer_adaptation_v2",
    "extend_with_piecewise_linear_lr_v2",
    "extend_with_gradient_accumulation_v2",
    "extend_with_lookahead_v2",
    "extend_with_lazy_optimization_v2",
    "extend_with_exponential_moving_average_v2",
    "extend_with_parameter_wise_lr_v2",
    "custom_objects",
]
