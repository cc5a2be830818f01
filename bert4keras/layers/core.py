"""Core layers: embeddings, bias, slicing, normalization, feed-forward.

All layers use ``keras.ops`` only, keep the original bert4keras names and
weight orders (which the checkpoint name maps in :mod:`bert4keras.models` rely
on), have ``get_config`` and are registered for serialization, so a ``.keras``
file of a fine-tuned model loads back with plain ``keras.saving.load_model``.

Shapes use ``batch``, ``seq_len``, ``hidden``.

Keras masks (bert4keras 0.11.5's behaviour): ``Embedding(mask_zero=True)``
puts a ``(batch, seq_len)`` bool mask on its output and the sequence layers
here pass it on unchanged (``LayerNormalization``, ``FeedForward``,
``BiasAdd``; ``SequenceMasking`` keeps the mask of its first input,
``MaskedAdd`` ANDs its inputs' masks as tf.keras 2 did); layers
whose output is not a sequence of the same positions (``TokenSlice``,
``CausalMask``, ``ContextMask``) give no mask.
"""


import keras
from keras import ops

from bert4keras import backend as B
from bert4keras.layers.direct import (  # noqa: F401 (direct_call, _reshape: also imported from here)
    _layer_call,
    _reshape,
    _torch_dense,
    calls_directly,
    dense_activation,
    direct_call,
    int8_dense,
    onednn_dense,
    onednn_linear,
    onednn_table_product,
    register_torch_call,
)
from bert4keras.layers import torch_train
from bert4keras.layers.quantization import QuantizableSublayers
from bert4keras.layers.tf_direct import int8_dense as tf_int8_dense

register = keras.saving.register_keras_serializable(package="bert4keras")


def fresh_initializer(initializer):
    """An initializer for one more weight: a new instance when it is unseeded.

    A Keras 3 random initializer without a seed draws its seed once, when it
    is created, so one instance used for several weights of the same shape
    fills them all with the same values (e.g. identical query, key and value
    kernels). Every sublayer therefore gets its own copy; copies draw their
    seeds from Keras' global RNG (reproducible under
    ``keras.utils.set_random_seed``). Seeded or non-random initializers are
    returned as they are.
    """
    initializer = keras.initializers.get(initializer)
    if isinstance(initializer, keras.initializers.Initializer):
        config = initializer.get_config()
        if "seed" in config and config["seed"] is None:
            return initializer.__class__.from_config(config)
    return initializer


@register
class Dense(keras.layers.Dense):
    """``keras.layers.Dense`` as bert4keras' models use it: the same
    arguments, weights (``kernel`` ``(in, out)``, ``bias`` ``(out,)``),
    outputs and saved variables (the class keeps the name ``Dense``, so
    ``.weights.h5`` paths are those of ``keras.layers.Dense``).

    The one difference is speed on the PyTorch backend: called without
    gradients (``model.predict``, ``torch.no_grad``, ``torch.inference_mode``)
    on float32 CPU tensors (any number of rows), with a kernel of at least
    ``2**17`` weights, it multiplies through oneDNN's inner product
    (:func:`~bert4keras.layers.direct.onednn_dense`) instead of torch's
    matmul, which runs MKL and was slower on the AMD Zen 4 machine for 2-8-row
    and encoder-sized products, and on the Zen 5 machine for one row too
    (:data:`~bert4keras.layers.direct.ONEDNN_DENSE_ROWS`; benchmarks/HISTORY.md:
    "PyTorch backend"). With gradients (training), float32 CPU tensors of at least
    64 rows go through the same op wrapped with a backward
    (:func:`~bert4keras.layers.torch_train.dense_call`; what it changes in a
    training step: benchmarks/HISTORY.md, Zen 5 section). With LoRA, a
    quantized or non-float32 layer, and on TensorFlow or JAX, ``call`` is
    Keras' own. Quantized ``'int8'``
    (``model.quantize``), the integer product of its call likewise runs
    through ``torch._int_mm`` on the PyTorch backend (:meth:`_int8_call`).

    Shapes: ``(..., in)`` -> ``(..., units)``.
    """

    def call(self, inputs, training=None):
        if keras.backend.backend() == "torch":
            outputs = onednn_dense(self, inputs)
            if outputs is None:  # with gradients: oneDNN with a backward (training)
                outputs = torch_train.dense_call(self, inputs)
            if outputs is not None:
                return outputs
        return super().call(inputs, training=training)

    def _int8_call(self, inputs, training=None):
        """Keras' ``int8`` call; on the PyTorch backend's float32 CPU inputs
        that need no gradient its integer product runs through ``torch._int_mm``
        (:func:`~bert4keras.layers.direct.int8_dense`: the same arithmetic,
        where Keras' int8 ``ops.matmul`` runs torch's generic integer loops)."""
        backend = keras.backend.backend()
        outputs = None
        if backend == "torch":
            outputs = int8_dense(self, inputs)
        elif backend == "tensorflow":
            outputs = tf_int8_dense(self, inputs)
        if outputs is not None:
            return outputs
        return super()._int8_call(inputs, training=training)

    def quantize(self, mode=None, type_check=True, config=None):
        """Keras' own ``Dense`` quantization (``model.quantize("int8")``, ...):
        ``keras.layers.Dense.quantize`` refuses subclasses unless told not to
        check, and this one changes only the speed of the float ``call``."""
        return super().quantize(mode, type_check=False, config=config)


register_torch_call(Dense, _torch_dense)


# rows from which a cached PyTorch step multiplies by a contiguous E^T (Embedding.call_cached)
TRANSPOSED_TABLE_ROWS = 4


@register
class Embedding(keras.layers.Layer):
    """Token embedding whose table can also serve as a tied output projection.

    ``mode='embedding'``: ``(batch, seq_len)`` ids -> ``(batch, seq_len, output_dim)``.
    ``mode='dense'``: ``(batch, seq_len, output_dim)`` -> ``(batch, seq_len,
    input_dim)`` logits ``x @ E^T`` (the MLM head of BERT shares the table).

    ``mask_zero=True`` (as ``keras.layers.Embedding`` and bert4keras 0.11.5):
    the ids give their output a Keras mask, 0 (the [PAD] id) masked, except
    the first position, which is never masked (0.11.5's rule, so that T5's
    decoder start token 0 stays visible). In ``'dense'`` mode the input's
    mask passes through.

    Weights: ``embeddings`` ``(input_dim, output_dim)``.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform",
                 mask_zero=False, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs, mode="embedding"):
        table = ops.cast(self.embeddings, self.compute_dtype)
        if mode == "embedding":
            return ops.take(table, ops.cast(inputs, "int32"), axis=0)
        if mode == "dense":
            if keras.backend.backend() == "torch":  # oneDNN, as the Dense above
                logits = onednn_linear(inputs, table)
                if logits is None:
                    logits = torch_train.linear(inputs, table)
                if logits is not None:
                    return logits
            return ops.matmul(inputs, ops.transpose(table))
        raise ValueError("Embedding mode must be 'embedding' or 'dense', got %r" % mode)

    def call_cached(self, inputs, step, mode="embedding"):
        """The layer in a cached decoding step (``step``: a
        :class:`~bert4keras.generation.DecodingStep`): as :meth:`call`, except
        the tied output projection (``mode='dense'``) of a direct step on
        PyTorch. That multiplies by the table through oneDNN
        (:func:`~bert4keras.layers.direct.onednn_table_product`, which reads ``E``
        ``(input_dim, output_dim)`` as it is stored, or its blocked copy inside
        ``packed_weights``); where that does not
        apply, from :data:`TRANSPOSED_TABLE_ROWS` rows on, by a contiguous
        copy of ``E^T`` ``(output_dim, input_dim)`` made once per decoding run
        (``step.constant``; ``input_dim * output_dim`` floats while the run
        lasts, 147 MiB for GPT-2): torch's matmul is slower with the
        transposed table as a strided view (benchmarks/HISTORY.md: "PyTorch
        backend decoding")."""
        if mode == "dense" and getattr(step, "direct", False) and calls_directly(self):
            rows = 1
            for n in inputs.shape[:-1]:
                rows *= int(n)
            if keras.backend.backend() == "torch":
                import torch

                logits = onednn_table_product(inputs, self.embeddings)
                if logits is not None:
                    return logits
                if rows >= TRANSPOSED_TABLE_ROWS:
                    table = step.constant((id(self), "E^T"),
                                          lambda: self.embeddings.value.detach().t().contiguous())
                    return torch.matmul(inputs, table)
        return step.call(self, inputs, mode=mode)

    def quantize(self, mode=None, type_check=True, config=None):
        """Not quantized: ``model.quantize`` leaves the table in float (a warning).

        Raises:
            NotImplementedError: always; ``keras.Model.quantize`` turns it into
                a warning and goes on with the other layers.
        """
        raise NotImplementedError(
            "%s (bert4keras Embedding) is left in %s by quantize(%r): a lookup has no matmul "
            "to speed up, and in mode='dense' the same table is the tied MLM output "
            "projection" % (self.name, self.dtype_policy.variable_dtype, mode))

    def compute_mask(self, inputs, mask=None):
        """Ids ``(batch, seq_len)``: bool ``(batch, seq_len)`` with
        ``mask_zero`` (first position always True), else None; hidden states
        (``'dense'`` mode): ``mask`` unchanged."""
        if len(inputs.shape) != 2:
            return mask
        if not self.mask_zero:
            return None
        keep = ops.not_equal(inputs, 0)
        return ops.concatenate([ops.ones_like(keep[:, :1]), keep[:, 1:]], axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
            mask_zero=self.mask_zero,
        )
        return config


@register
class MaskedAdd(keras.layers.Add):
    """``keras.layers.Add`` with the mask rule of tf.keras 2 (bert4keras 0.11.5's).

    Inputs: tensors of one shape, e.g. ``(batch, seq_len, hidden)``. Output:
    their sum; its Keras mask is the AND of the inputs' masks, an input
    without a mask counting as all True. (Keras 3's ``Add`` drops the mask
    when any input has none, so token embeddings with ``mask_zero`` plus
    segment embeddings without would lose it; the families sum their
    embeddings with this layer, ``Embedding-Token-Segment``.)
    """

    def compute_mask(self, inputs, mask=None):
        if not isinstance(mask, (list, tuple)):
            return mask
        masks = [m for m in mask if m is not None]
        if not masks:
            return None
        output = ops.cast(masks[0], "bool")
        for m in masks[1:]:
            output = ops.logical_and(output, ops.cast(m, "bool"))
        return output


@register
class DropMask(keras.layers.Layer):
    """Identity that removes the Keras mask: ``x -> x`` (any shape), no mask.

    The models' sequence outputs carry the padding mask (as in bert4keras
    0.11.5), and Keras 3 applies an output's mask to a compiled loss: under
    ``sum_over_batch_size`` it reweights the valid positions by
    ``total / valid`` (``keras.losses.loss.apply_mask``). Put this layer last
    when the loss already weights positions itself (sample weights that zero
    the padding, per-example pointer losses), so they are not weighted twice.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        # a new tensor: Keras keeps a mask attached to the very input object
        return ops.copy(inputs)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class BiasAdd(keras.layers.Layer):
    """Adds a trainable bias over the last axis (BERT's ``MLM-Bias``)."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")
        self.built = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # a Keras mask on the input passes through

    def call(self, inputs):
        return inputs + ops.cast(self.bias, inputs.dtype)


@register
class TokenSlice(keras.layers.Layer):
    """``(batch, seq_len, hidden) -> (batch, hidden)``: the vector at ``index``.

    BERT's ``Pooler`` takes the [CLS] vector (index 0).
    """

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, inputs):
        return inputs[:, self.index]

    def compute_mask(self, inputs, mask=None):
        """No mask: the output is one vector per sequence (as 0.11.5's ``Pooler``)."""
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update(index=self.index)
        return config


@register
class LayerNormalization(QuantizableSublayers, keras.layers.Layer):
    """Layer normalization (Ba et al. 2016), optionally conditional or RMS.

    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta`` over the last axis,
    computed in float32. With ``conditional=True`` the inputs are ``[x, c]``
    and ``gamma``/``beta`` are shifted by zero-initialised projections of
    ``c`` (the conditional LayerNorm of bert4keras, used for relation
    extraction). Input/output ``(batch, seq_len, hidden)``.

    With ``zero_mean=False, center=False`` it is T5's RMS norm (Zhang &
    Sennrich 2019): ``y = x / sqrt(mean(x^2) + epsilon) * gamma``, no mean
    subtraction and no ``beta`` (``zero_mean`` is the original toolkit's
    keyword).

    bert4keras 0.11.5 keywords: ``offset`` (= ``center``), ``unit_variance``
    (False: no division by the deviation), and for ``conditional=True``
    ``hidden_units``/``hidden_activation``/``hidden_initializer``: the
    condition first goes through ``Dense(hidden_units, hidden_activation,
    use_bias=False)`` (``build_transformer_model``'s
    ``layer_norm_cond_hidden_size``/``_act``). ``epsilon`` defaults to
    ``keras.config.epsilon()`` (1e-7) as there; the model families pass
    their own (1e-12 for BERT).

    Weights: ``gamma`` then ``beta`` (then ``hidden_dense``, ``beta_dense``,
    ``gamma_dense``).
    """

    def __init__(self, center=True, scale=True, epsilon=None, conditional=False,
                 zero_mean=True, unit_variance=True, hidden_units=None,
                 hidden_activation="linear", hidden_initializer="glorot_uniform",
                 offset=None, **kwargs):
        super().__init__(**kwargs)
        self.center = bool(center if offset is None else offset)
        self.scale = scale
        self.epsilon = float(keras.config.epsilon() if epsilon is None else epsilon)
        self.conditional = conditional
        self.zero_mean = bool(zero_mean)
        self.unit_variance = bool(unit_variance)
        self.hidden_units = None if hidden_units is None else int(hidden_units)
        self.hidden_activation = keras.activations.get(B.get_activation(hidden_activation))
        self.hidden_initializer = keras.initializers.get(hidden_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        shape = input_shape[0] if self.conditional else input_shape
        dim = shape[-1]
        # dtype fix: autocast=False keeps gamma/beta float32 under a mixed policy (the
        # normalisation runs in float32; autocasting would round them to float16 first)
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones",
                                         autocast=False)
        if self.center:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros",
                                        autocast=False)
        if self.conditional:
            cond_shape = input_shape[1]
            if self.hidden_units is not None:
                self.hidden_dense = Dense(
                    self.hidden_units, activation=self.hidden_activation, use_bias=False,
                    kernel_initializer=fresh_initializer(self.hidden_initializer),
                    name="hidden_dense")
                self.hidden_dense.build(cond_shape)
                cond_shape = tuple(cond_shape[:-1]) + (self.hidden_units,)
            if self.center:
                self.beta_dense = Dense(dim, use_bias=False, kernel_initializer="zeros",
                                        name="beta_dense")
                self.beta_dense.build(cond_shape)
            if self.scale:
                self.gamma_dense = Dense(
                    dim, use_bias=False, kernel_initializer="zeros", name="gamma_dense")
                self.gamma_dense.build(cond_shape)
        self.built = True

    def call(self, inputs):
        if not self.conditional and self.zero_mean and self.unit_variance:
            # the plain LayerNorm: keras.ops' kernel (torch: one fused
            # F.layer_norm instead of ~8 eager passes; TF/JAX: the same
            # float32 moments, fused by XLA), output in the input's dtype
            return ops.layer_normalization(
                inputs, self.gamma if self.scale else None,
                self.beta if self.center else None, axis=-1, epsilon=self.epsilon)
        if self.conditional:
            x, cond = inputs
            if self.hidden_units is not None:
                cond = self.hidden_dense(cond)
            cond = ops.cast(cond, "float32")
            for _ in range(len(x.shape) - len(cond.shape)):
                cond = ops.expand_dims(cond, 1)
        else:
            x = inputs
        dtype = x.dtype
        x = ops.cast(x, "float32")
        if self.zero_mean:
            x = x - ops.mean(x, axis=-1, keepdims=True)
        if self.unit_variance:
            var = ops.mean(ops.square(x), axis=-1, keepdims=True)
            x = x * ops.rsqrt(var + self.epsilon)
        if self.scale:
            gamma = ops.cast(self.gamma, "float32")
            if self.conditional:
                gamma = gamma + ops.cast(self.gamma_dense(cond), "float32")
            x = x * gamma
        if self.center:
            beta = ops.cast(self.beta, "float32")
            if self.conditional:
                beta = beta + ops.cast(self.beta_dense(cond), "float32")
            x = x + beta
        return ops.cast(x, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def compute_mask(self, inputs, mask=None):
        """The Keras mask of ``x`` (of ``inputs[0]`` when conditional)."""
        return _first_mask(mask)

    def get_config(self):
        config = super().get_config()
        config.update(center=self.center, scale=self.scale, epsilon=self.epsilon,
                      conditional=self.conditional, zero_mean=self.zero_mean,
                      unit_variance=self.unit_variance, hidden_units=self.hidden_units,
                      hidden_activation=keras.activations.serialize(self.hidden_activation),
                      hidden_initializer=keras.initializers.serialize(
                          self.hidden_initializer))
        return config


def _torch_layer_norm(layer, inputs):
    """The plain float32 LayerNorm as ``F.layer_norm`` (what
    ``ops.layer_normalization`` runs on torch), for :func:`direct_call`; None
    for other forms or dtypes (Keras computes half precision in float32)."""
    import torch

    if layer.conditional or not (layer.zero_mean and layer.unit_variance) \
            or not isinstance(inputs, torch.Tensor) or inputs.dtype != torch.float32:
        return None
    gamma = layer.gamma.value if layer.scale else None
    beta = layer.beta.value if layer.center else None
    if any(w is not None and w.dtype != torch.float32 for w in (gamma, beta)):
        return None
    return torch.nn.functional.layer_norm(inputs, (inputs.shape[-1],), gamma, beta,
                                          layer.epsilon)


register_torch_call(LayerNormalization, _torch_layer_norm)


@register
class ConditionalLayerNormalization(LayerNormalization):
    """:class:`LayerNormalization` with ``conditional=True``: inputs ``[x, c]``,
    ``x`` ``(batch, seq_len, hidden)`` and condition ``c`` ``(batch, cond_dim)``."""

    def __init__(self, conditional=True, **kwargs):
        if not conditional:
            raise ValueError("ConditionalLayerNormalization is conditional; use "
                             "LayerNormalization for an unconditional one")
        super().__init__(conditional=True, **kwargs)


@register
class FeedForward(QuantizableSublayers, keras.layers.Layer):
    """Position-wise feed-forward block: ``Dense(units, act) -> Dense(hidden)``.

    ``activation`` may also be a list (the original toolkit's gated form):
    one input projection per activation, multiplied together before the
    output projection. ``['gelu_new', 'linear']`` is T5.1.1's gated GELU,
    ``o(gelu(x W_i0) * (x W_i1))`` (Shazeer 2020, "GLU Variants").

    The activations are applied here, after the (linear) ``Dense`` layers; in
    a training call (``training=True``) through
    :func:`bert4keras.backend.training_activation`: the same values, and a
    GELU keeps only its input for the backward pass on TensorFlow and JAX.

    Input/output ``(batch, seq_len, hidden)``. Weights: ``i0_dense`` kernel and
    bias, (``i1_dense``, ... for a list of activations), then ``o_dense``
    kernel and bias (no biases with ``use_bias=False``).
    """

    def __init__(self, units, activation="relu", use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = list(activation) if isinstance(activation, (list, tuple)) \
            else activation
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        activations = self.activation if isinstance(self.activation, list) else [self.activation]
        if not activations:
            raise ValueError("FeedForward needs at least one activation")
        self._num_inputs = len(activations)
        self.supports_masking = True  # a Keras mask on the input passes through
        # the activations run in call (not inside the Dense layers): same ops, and in
        # training the GELUs keep only their input for the backward pass
        self._activations = [keras.activations.get(B.get_activation(act)) for act in activations]
        for index in range(len(activations)):
            dense = Dense(self.units, use_bias=use_bias, name="i%d_dense" % index,
                          kernel_initializer=fresh_initializer(self.kernel_initializer),
                          dtype=self.dtype_policy)
            setattr(self, "i%d_dense" % index, dense)  # tracked (and weighted) in this order
        self.o_dense = None

    def _input_denses(self):
        return [getattr(self, "i%d_dense" % index) for index in range(self._num_inputs)]

    def build(self, input_shape):
        for dense in self._input_denses():
            dense.build(input_shape)
        self.o_dense = Dense(input_shape[-1], use_bias=self.use_bias, name="o_dense",
                             kernel_initializer=fresh_initializer(self.kernel_initializer),
                             dtype=self.dtype_policy)
        self.o_dense.build(tuple(input_shape[:-1]) + (self.units,))
        self.built = True

    def call(self, inputs, training=None):
        return self._forward(inputs, training, _layer_call, ops.reshape)

    def call_cached(self, inputs, step, **arguments):
        """One pass of cached decoding (the
        :class:`~bert4keras.generation.step.DecodingStep` hook): the same
        values as a call; when the step calls layers directly
        (``step.direct``), the ``Dense`` sublayers are called directly too
        (:func:`direct_call`, ~7% of a batch-1 GPT-2 step on PyTorch)."""
        if (getattr(step, "direct", False) and calls_directly(self)
                and set(arguments) <= {"training"}):
            return self._forward(inputs, arguments.get("training"), direct_call, _reshape)
        return step.call(self, inputs, **arguments)

    def _forward(self, inputs, training, call, reshape):
        # one row per position: on TensorFlow a 2-D Dense is MatMul + BiasAdd (+ GELU) that
        # oneDNN runs as one kernel; a 3-D one goes through Tensordot, leaving the bias and the
        # activation as separate element-wise passes (~3x the time in bfloat16). Same math.
        # Training: B.training_activation (the GELUs keep only their input for the gradient:
        # 48 MiB less per BERT-base layer at batch 16 x 128 on TensorFlow), same values.
        shape = ops.shape(inputs)
        rows = reshape(inputs, (-1, shape[-1]))
        acts = self._activations
        if training:
            acts = [B.training_activation(act) for act in acts]
        x = None
        for dense, act in zip(self._input_denses(), acts):
            y = None
            if not training and keras.backend.backend() == "torch" and calls_directly(dense):
                # inference on torch: the activation inside oneDNN's product (float32) or
                # in place on the int8 product's output (direct.dense_activation)
                y = dense_activation(dense, rows, act)
            if y is None:
                y = act(call(dense, rows))
            x = y if x is None else x * y
        return reshape(call(self.o_dense, x), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()

        def serialize(act):
            return keras.activations.serialize(act) if callable(act) else act

        activation = self.activation
        activation = [serialize(a) for a in activation] if isinstance(activation, list) \
            else serialize(activation)
        config.update(units=self.units, activation=activation, use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@register
class CausalMask(keras.layers.Layer):
    """The causal attention bias of a language model, with no padding term.

    Input: any tensor whose axis 1 is the sequence (token ids ``(batch,
    seq_len)`` or states ``(batch, seq_len, hidden)``). Output: float32 ``(1,
    1, seq_len, seq_len)``, 0 where key ``j <= i`` and -1e12 elsewhere.

    Unlike ``AttentionMask(mode='lm')`` no token id is treated as padding:
    GPT-2's id 0 is a real token (``!``) and T5's decoder starts with id 0.
    Batches are right-padded, so real positions never see the padding anyway.
    """

    def call(self, inputs):
        return B.visibility_to_bias(B.causal_visibility(ops.shape(inputs)[1]))

    def call_cached(self, inputs, step):
        """A cached decoding step: the step's causal bias over its cache,
        ``(batch, 1, q_len, cache_len)`` (see
        :meth:`bert4keras.generation.DecodingStep.attention_bias`)."""
        return step.attention_bias()

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((1, 1, inputs.shape[1], inputs.shape[1]), dtype="float32")

    def compute_mask(self, inputs, mask=None):
        return None  # a bias, not a sequence


@register
class SequenceMasking(keras.layers.Layer):
    """Zero the vectors of padding positions: ``[x, token_ids] -> x`` with
    ``x[b, t] = 0`` where ``token_ids[b, t] == 0``.

    T5's encoder output goes through it (``Encoder-Output-Masked``), so a
    decoder fed that output can find the padding again (:class:`ContextMask`).
    """

    def call(self, inputs):
        x, token_ids = inputs
        return B.sequence_masking(x, ops.not_equal(token_ids, 0))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def compute_mask(self, inputs, mask=None):
        """The Keras mask of ``x`` (T5's encoder output keeps the padding mask)."""
        return _first_mask(mask)


@register
class ContextMask(keras.layers.Layer):
    """Attention bias hiding the all-zero vectors of a context sequence.

    Input: ``(batch, k_len, hidden)`` (an encoder output whose padding was
    zeroed by :class:`SequenceMasking`). Output: float32 ``(batch, 1, 1,
    k_len)``, -1e12 at keys whose vector is exactly zero, else 0 -- the
    ``Masked-Context`` of the original toolkit's T5 decoder.
    """

    def call(self, inputs):
        keep = ops.cast(ops.any(ops.not_equal(inputs, 0), axis=-1), "float32")
        return B.visibility_to_bias(keep[:, None, None, :])

    def call_cached(self, inputs, step):
        """A cached decoding step: the bias is computed from the context once
        (the first pass) and kept with the step's caches, so later passes
        need no context."""
        bias = step.cache(lambda: self(inputs))
        step.keep(bias, lambda x, copies: ops.repeat(x, copies, axis=0))
        return bias

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], 1, 1, inputs.shape[1]), dtype="float32")

    def compute_mask(self, inputs, mask=None):
        return None  # a bias, not a sequence


def _first_mask(mask):
    """The mask of the first input when a layer takes a list (``[x, ...]``)."""
    return mask[0] if isinstance(mask, (list, tuple)) else mask
