"""Optimizer and learning-rate schedule of ``pretraining.pretraining``.

Split out of :mod:`pretraining.pretraining` (which re-exports every name here).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="bert4keras.pretraining")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to 0.

    Counted in optimizer steps: the schedule is fed the optimizer's batch
    counter divided by ``grad_accum`` (Keras passes the un-divided counter).
    """

    def __init__(self, lr, steps, warmup_steps, grad_accum=1):
        self.lr, self.steps, self.warmup_steps = float(lr), int(steps), int(warmup_steps)
        self.grad_accum = int(grad_accum)
        warmup = max(1, min(self.warmup_steps, self.steps - 1))
        self._cosine = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=max(1, self.steps - warmup),
            warmup_target=self.lr, warmup_steps=warmup, alpha=0.0)

    def __call__(self, step):
        if self.grad_accum > 1:
            step = ops.floor_divide(step, self.grad_accum)
        return self._cosine(step)

    def get_config(self):
        return {"lr": self.lr, "steps": self.steps, "warmup_steps": self.warmup_steps,
                "grad_accum": self.grad_accum}


def learning_rate_schedule(lr, steps, warmup_steps, grad_accum=1):
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to 0."""
    return WarmupCosine(lr, steps, warmup_steps, grad_accum)


def make_optimizer(name, schedule, weight_decay, grad_accum, clipnorm, mixed_precision="none",
                   wrap_class=None, lazy_embeddings=False, embedding_optimizer=None,
                   loss_scale=None):
    """AdamW or LAMB (decoupled weight decay, none on LayerNorm and biases) or Tiger.

    ``weight_decay``, ``clipnorm`` (global norm, 0 = none) and ``grad_accum``
    act on every optimizer (:data:`OPTIMIZER_FLAGS`); ``weight_decay`` is
    the decoupled (Loshchilov & Hutter) decay ``w <- w - lr * wd * w``.

    Tiger (:class:`bert4keras.optimizers.Tiger`) accumulates gradients in its
    momentum (no extra memory); its ``lr`` is relative to each weight's RMS
    (1e-3 to 2e-3 is typical).  ``lazy_embeddings`` and ``embedding_optimizer``
    (``"tiger"`` or ``"adam"``) are Tiger's embedding-outlier remedies; with
    either, ``grad_accum`` uses Keras' ``gradient_accumulation_steps`` (both
    need whole-batch gradients).  For ``mixed_float16`` the optimizer is
    wrapped in ``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling)
    unless ``loss_scale`` is ``"none"``.
    ``wrap_class`` maps the optimizer class before use (see
    :meth:`pretraining.distribute.Placement.optimizer_class`).

    Raises:
        ValueError: an unknown ``name``, or a Tiger-only option with another
            optimizer.
    """
    wrap = wrap_class or (lambda cls: cls)
    kwargs = dict(learning_rate=schedule, global_clipnorm=clipnorm or None)
    if name != "tiger" and (lazy_embeddings or embedding_optimizer is not None):
        raise ValueError("lazy_embeddings / embedding_optimizer are Tiger options, not %r"
                         % (name,))
    if name == "tiger":
        from bert4keras.optimizers import Tiger

        embedding_optimizer = embedding_optimizer or "tiger"
        if grad_accum > 1 and (lazy_embeddings or embedding_optimizer == "adam"):
            kwargs["gradient_accumulation_steps"] = grad_accum
        else:
            kwargs["grad_accum_steps"] = grad_accum
        optimizer = wrap(Tiger)(weight_decay=weight_decay, lazy_embeddings=bool(lazy_embeddings),
                                embedding_optimizer=embedding_optimizer,
                                weight_decay_exclude=["gamma", "beta", "bias"], **kwargs)
    else:
        if grad_accum > 1:
            kwargs["gradient_accumulation_steps"] = grad_accum
        if name == "adamw":
            optimizer = wrap(keras.optimizers.AdamW)(weight_decay=weight_decay, beta_2=0.98,
                                               epsilon=1e-6, **kwargs)
            optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        elif name == "lamb":
            optimizer = wrap(keras.optimizers.Lamb)(weight_decay=weight_decay, **kwargs)
            optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        else:
            raise ValueError("Unknown optimizer %r (adamw, lamb or tiger)" % name)
    if mixed_precision == "mixed_float16" and (loss_scale or "dynamic") == "dynamic":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


#: Flags that act on every ``--optimizer`` (tested pairwise).
OPTIMIZER_FLAGS = ("weight_decay", "clipnorm", "grad_accum")
