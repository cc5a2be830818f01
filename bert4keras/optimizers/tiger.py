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

    - Non-finite guard (blog 9512, "NaN strategy"; ``shrink_ratio`` in
      ``tiger.py``). If any gradient of the step is NaN or infinite, the
      gradient is not used: every momentum stays as it was, and every weight
      is pulled towards its initial centre, ``w <- (w - c) * s + c`` with
      ``c = 1`` for LayerNorm gains (last path element ``gamma``) and 0
      otherwise, ``s = shrink_ratio`` (default 0.99, the post's value): a
      run that went to NaN because weights grew too large backs off instead
      of repeating the step. ``shrink_ratio=1.0`` skips the step outright
      (weights and momentum unchanged). The step counter advances either way.
      Unlike ``tiger.py``, which tests each variable's own gradient for NaN
      only, the whole step is judged at once and infinities count too.
    - ``lazy_embeddings=True``: rows of embedding weights whose gradient row
      is all zero (tokens absent from the batch) are left alone: no momentum
      decay, no update, no weight decay. A remedy of
      https://kexue.fm/archives/9736: with ``sign(m)`` a token seen once keeps
      moving by the full step until it is seen again (its momentum decays but
      keeps its sign), which with weight decay drives its components to the
      fixed point ``sign(m) + lambda * w = 0``, i.e. ``+-1/lambda`` (the
      +-100 outliers observed there for ``lambda = 0.01``). The reference
      ``tiger.py`` does not have this option. A row that gets any gradient
      (e.g. through a tied output softmax) counts as touched.
    - ``embedding_optimizer="adam"``: the other remedy of blog 9736, Adam for
      the embedding matrices (``embedding_patterns``) and Tiger for the rest.
      For those weights ``sign(m)`` is replaced by Adam's direction
      ``m_hat / (sqrt(v_hat) + adam_epsilon)`` (Kingma & Ba 2015, bias
      corrected, betas ``adam_beta_1`` / ``adam_beta_2``), with the same step
      size ``eta`` and decoupled decay as Tiger would use, so ``lr`` and its
      schedule keep one meaning. An unseen row's direction decays towards 0,
      so weight decay pulls it to 0 instead of +-1/lambda. Costs a second
      slot (``velocity``) for those weights only.
    - ``grad_accum_steps=k``: Tiger's own gradient accumulation, which needs
      no extra memory (blog 9512, "gradient accumulation"): within each group
      of ``k`` calls the momentum is decayed by ``beta`` only at the first
      call, every call adds ``(1 - beta) / k * g``, and the weights move
      only at the last call. The learning rate (schedule) sees micro-steps.

    Slots: exactly one (``momentum``) per trainable weight, plus a
    ``velocity`` per embedding weight with ``embedding_optimizer="adam"``.
    Keras' ``gradient_accumulation_steps=k`` also works but adds its own
    ``gradient_accumulator`` per weight; ``grad_accum_steps`` does not.

    Half precision: the update is ``eta * sign(m)``, independent of the
    gradient's scale, and a step with an overflowed (non-finite) gradient is
    caught by the guard above, so Tiger trains under ``mixed_float16`` and
    with ``float16`` weights without loss scaling (blog 9512; tested on a tiny
    BERT in ``tests/test_tiger_fidelity.py``). Two limits remain: gradients
    that underflow to zero in float16 carry no sign, and with float16 weights
    a step smaller than half the float16 spacing at a weight (about
    ``|w| * 2**-11``) is rounded away, so ``lr`` (relative to the RMS) must
    stay well above ``2**-11 ~ 5e-4`` for weights near their RMS to move.

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
        shrink_ratio: float in (0, 1]; 0.99 (default) is the post's shrink
            on a non-finite step, 1.0 skips such steps exactly.
        elementwise_patterns: regexes for half-lr, no-decay weights.
        embedding_patterns: regexes for row-wise RMS (and lazy) weights.
        lazy_embeddings: bool, see above.
        embedding_optimizer: ``"tiger"`` (default) or ``"adam"``, see above.
        adam_beta_1, adam_beta_2, adam_epsilon: Adam's constants for
            ``embedding_optimizer="adam"`` (defaults 0.9, 0.999, 1e-6).
        rms_scaling: bool, scale the learning rate by the weight RMS as in
            the reference (default true); false gives the plain blog formula.
        weight_decay_exclude: extra regexes excluded from weight decay.
        **kwargs: base optimizer arguments (``global_clipnorm``, ``use_ema``,
            ``gradient_accumulation_steps``, ``name``, ...).

    Raises:
        ValueError: ``beta`` outside [0, 1), ``grad_accum_steps`` < 1,
            ``shrink_ratio`` outside (0, 1], an unknown ``embedding_optimizer``
            or Adam betas outside [0, 1), ``grad_accum_steps > 1`` together
            with Keras ``gradient_accumulation_steps``, with
            ``lazy_embeddings`` (a row seen only in an early micro-batch
            would never be applied) or with ``embedding_optimizer="adam"``
            (Adam's second moment needs the whole-batch gradient); use Keras'
            ``gradient_accumulation_steps`` for those.
    """

    def __init__(self, learning_rate=1e-3, beta=0.965, weight_decay=0.01, grad_accum_steps=1,
                 shrink_ratio=0.99, elementwise_patterns=("bias", "beta", "gamma"),
                 embedding_patterns=("embeddings",), lazy_embeddings=False, rms_scaling=True,
                 weight_decay_exclude=None, embedding_optimizer="tiger", adam_beta_1=0.9,
                 adam_beta_2=0.999, adam_epsilon=1e-6, name="tiger", **kwargs):
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
        if embedding_optimizer not in ("tiger", "adam"):
            raise ValueError("embedding_optimizer must be 'tiger' or 'adam', got %r"
                             % (embedding_optimizer,))
        if embedding_optimizer == "adam" and grad_accum_steps > 1:
            raise ValueError("embedding_optimizer='adam' needs whole-batch gradients (Adam's "
                             "second moment); with accumulation use Keras' "
                             "gradient_accumulation_steps instead of grad_accum_steps")
        for key, value in (("adam_beta_1", adam_beta_1), ("adam_beta_2", adam_beta_2)):
            if not 0.0 <= value < 1.0:
                raise ValueError("%s must be in [0, 1), got %r" % (key, value))
        if not adam_epsilon > 0:
            raise ValueError("adam_epsilon must be > 0, got %r" % (adam_epsilon,))
        self.beta = float(beta)
        self.grad_accum_steps = int(grad_accum_steps)
        self.shrink_ratio = float(shrink_ratio)
        self.elementwise_patterns = list(_as_tuple(elementwise_patterns))
        self.embedding_patterns = list(_as_tuple(embedding_patterns))
        self.lazy_embeddings = bool(lazy_embeddings)
        self.rms_scaling = bool(rms_scaling)
        self.embedding_optimizer = embedding_optimizer
        self.adam_beta_1 = float(adam_beta_1)
        self.adam_beta_2 = float(adam_beta_2)
        self.adam_epsilon = float(adam_epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = [self.add_variable_from_reference(v, name="momentum")
                           for v in var_list]
        # Adam's second moment, for the embedding weights only (embedding_optimizer="adam").
        velocities = self._registry().velocities = {}  # untracked: var key -> slot
        for v in var_list:
            if self._adam_variable(v):
                velocities[self._var_key(v)] = self.add_variable_from_reference(
                    v, name="velocity")

    def _adam_variable(self, variable):
        return (self.embedding_optimizer == "adam"
                and not self._matches(self.elementwise_patterns, variable)
                and self._matches(self.embedding_patterns, variable))

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

        velocities = getattr(self._registry(), "velocities", {})
        v_var = velocities.get(self._var_key(variable)) if embedding else None
        if v_var is not None:  # Adam for this embedding matrix
            b_1, b_2 = self.adam_beta_1, self.adam_beta_2
            v = ops.convert_to_tensor(v_var)
            new_m = b_1 * m + (1.0 - b_1) * g
            new_v = b_2 * v + (1.0 - b_2) * ops.square(g)
            t = ops.cast(self._iterations + 1, "float32")
            if self.gradient_accumulation_steps:  # applied steps, not micro-steps
                t = ops.floor(t / self.gradient_accumulation_steps)
            m_hat = new_m / ops.cast(1.0 - ops.power(b_1, t), dtype)  # bias corrections
            v_hat = new_v / ops.cast(1.0 - ops.power(b_2, t), dtype)
            direction = m_hat / (ops.sqrt(v_hat) + ops.cast(self.adam_epsilon, dtype))
        else:
            new_m = b1 * m + b2 * g
            direction = ops.sign(new_m)
        new_w = w - lr * (direction + decay * w)

        if self.lazy_embeddings and embedding:
            touched = _touched_rows(g)
            new_m = ops.where(touched, new_m, m)
            new_w = ops.where(touched, new_w, w)
            if v_var is not None:
                new_v = ops.where(touched, new_v, v)

        finite = self._registry().finite
        if finite is None:  # update_step called on its own
            finite = ops.all(ops.isfinite(g))
        if self.shrink_ratio < 1.0:
            centre = 1.0 if self._variable_path(variable).split("/")[-1] == "gamma" else 0.0
            skipped_w = (w - centre) * ops.cast(self.shrink_ratio, dtype) + centre
        else:
            skipped_w = w
        new_m = ops.where(finite, new_m, m)
        new_w = ops.where(finite, new_w, skipped_w)
        self.assign(m_var, new_m)
        if v_var is not None:
            self.assign(v_var, ops.where(finite, new_v, v))
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
            "embedding_optimizer": self.embedding_optimizer,
            "adam_beta_1": self.adam_beta_1,
            "adam_beta_2": self.adam_beta_2,
            "adam_epsilon": self.adam_epsilon,
        })
        return config
