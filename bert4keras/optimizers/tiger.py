"""Tiger, the sign-of-momentum optimizer with one slot per weight (Su Jianlin, 2023)."""

import keras
from keras import ops

from bert4keras.optimizers.base import (
    _PACKAGE,
    _ExtensionBase,
    _all_finite,
    _as_tuple,
    _dense,
    _touched_rows,
)


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
