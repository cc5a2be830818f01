"""Keras 3 weight quantization (``model.quantize``) for layers that hold sublayers.

``keras.Model.quantize("int8")`` quantizes every *leaf* layer that implements
``quantize`` (``Dense``, ``EinsumDense``, ``keras.layers.Embedding``): the
``Dense`` projections inside :class:`~bert4keras.layers.MultiHeadAttention`,
:class:`~bert4keras.layers.FeedForward`, the conditional
:class:`~bert4keras.layers.LayerNormalization`, ``GatedAttentionUnit`` and
``GlobalPointer`` included. Their variables change (an int8 ``kernel`` plus a
float ``kernel_scale``), but the enclosing layer rebuilds its ``Dense``
sublayers from its own config when a ``.keras`` file is loaded, so without help
they come back as float32 layers and loading fails ("expected 2 variables, but
received 3").

:class:`QuantizableSublayers` is the help: a mixin that records the dtype
policy of every quantized ``Dense`` sublayer in the enclosing layer's config
(``sublayer_dtypes``: sublayer name -> serialized
``keras.dtype_policies.DTypePolicy``, e.g. ``int8_from_float32``) and gives
the same policy back to the sublayer of that name when the layer is rebuilt
(when it is assigned as an attribute), so Keras' own ``quantized_build``
creates the int8 variables the file holds. Layers that were never quantized keep their config
unchanged (no ``sublayer_dtypes`` key).

Speed depends on the backend, because Keras' int8 ``Dense`` multiplies int8
inputs by the int8 kernel with ``keras.ops.matmul`` (int32 result) and each
backend sends that op to a different kernel on a CPU (Keras 3.15; measured by
``benchmarks/quantized_inference.py``'s kernel probe): JAX compiles it to
XLA's YNNPACK int8 kernel; TensorFlow does the same under XLA
(``jit_compile=True``; 1.38x its fp32 matmul on the AMD Zen 4 machine, which
has no AMX) but runs it in Eigen, slower than its own fp32, in graph mode;
torch runs it in its generic integer loops (0.08x its fp32 matmul). So
bert4keras' ``Dense`` sends the product of its int8 call elsewhere on those
two: on torch to ``torch._int_mm`` (oneDNN's int8 GEMM;
:func:`bert4keras.layers.direct.int8_dense`), on TensorFlow in graph mode to
TensorFlow's oneDNN u8 x s8 GEMM (:func:`bert4keras.layers.tf_direct.int8_dense`,
2.8-3.1x its fp32 matmul there), both with Keras' arithmetic; and
:func:`quantize_model` sets the TensorFlow model to graph mode where that GEMM
is exact (else to XLA). For a fast CPU model use int8 on torch, TensorFlow or
JAX, or a ``bfloat16`` copy (:func:`with_dtype_policy`) on TensorFlow or
torch, whose bf16 matmuls run oneDNN's AVX512-BF16 / AMX kernels
(TensorFlow: in graph mode, not XLA).

Not quantized (Keras leaves them in float and warns, the model still runs):
:class:`~bert4keras.layers.Embedding` (a gather, and in ``mode='dense'`` the
tied MLM output projection; see its ``quantize``), position embeddings,
normalisation, bias and mask layers (no matmul weights).
"""

import contextlib
import gc
import math
import threading

import keras

from bert4keras import allocator

#: config key of :class:`QuantizableSublayers`
SUBLAYER_DTYPES = "sublayer_dtypes"

#: TensorFlow int8: models whose quantized kernels hold at least this many weights on
#: average run in graph mode with oneDNN's int8 GEMM, smaller ones under XLA. On the AMD
#: Zen 4 machine BERT-base (1.2M on average) ran at 1.6-2.2x its fp32 at batch 1 to 32 in
#: graph mode against 1.2-1.5x under XLA, and the shipped small BERT (74K) at 1.05x / 1.40x
#: at batch 1 / 8 against 1.90x / 1.59x under XLA (1.35x against 1.13x at batch 32), where
#: the fixed costs per call of the oneDNN path (reordering the kernel, two XLA calls around
#: it) outweigh its faster GEMM (benchmarks/HISTORY.md).
ONEDNN_MIN_MEAN_KERNEL = 1 << 19


def is_keras_int8_quantizer(quantizer):
    """Whether ``quantizer`` is Keras' own int8 ``AbsMaxQuantizer`` (range
    [-127, 127], int8 output): the inputs quantizer of an ``int8`` ``Dense``
    whose arithmetic bert4keras' direct int8 paths reproduce
    (:func:`bert4keras.layers.direct.int8_dense` on torch,
    :func:`bert4keras.layers.tf_direct.int8_dense` on TensorFlow)."""
    return (type(quantizer) is keras.quantizers.AbsMaxQuantizer
            and tuple(quantizer.value_range) == (-127, 127) and quantizer.output_dtype == "int8")


class QuantizableSublayers:
    """Mixin (listed before ``keras.layers.Layer``) for a layer that creates
    ``Dense`` sublayers itself, so that it survives ``model.quantize`` and a
    ``.keras`` save / ``keras.saving.load_model`` round trip.

    Constructor keyword ``sublayer_dtypes`` (dict, default None): sublayer
    name -> a dtype policy (name string or ``keras.dtype_policies.serialize``
    dict) given to that sublayer when it is assigned to the layer; written by
    ``get_config`` for the sublayers ``model.quantize`` changed.

    Raises:
        ValueError: a recorded policy that ``keras.dtype_policies.deserialize``
            cannot read (names the layer and sublayer).
    """

    def __init__(self, *args, sublayer_dtypes=None, **kwargs):
        super().__init__(*args, **kwargs)
        policies = {}
        for name, policy in dict(sublayer_dtypes or {}).items():
            try:
                policies[name] = keras.dtype_policies.get(policy)
            except (ValueError, TypeError) as error:
                raise ValueError("%s: sublayer_dtypes[%r] = %r is not a Keras dtype policy (%s)"
                                 % (self.name, name, policy, error)) from error
        self._sublayer_dtypes = policies

    def __setattr__(self, name, value):
        policies = self.__dict__.get("_sublayer_dtypes")
        if policies and isinstance(value, keras.layers.Layer) and value.name in policies:
            # unbuilt: Keras' build makes the quantized variables; built (e.g.
            # GlobalPointer builds its Dense before assigning it): the setter
            # quantizes it now, and loading then overwrites those variables
            value.dtype_policy = policies[value.name]
        super().__setattr__(name, value)

    def _quantized_sublayers(self):
        """name -> serialized policy of the direct sublayers with a quantization mode."""
        found = {}
        for layer in self._flatten_layers(include_self=False, recursive=False):
            if getattr(layer, "quantization_mode", None):
                found[layer.name] = keras.dtype_policies.serialize(layer.dtype_policy)
        return found

    def get_config(self):
        config = super().get_config()
        quantized = self._quantized_sublayers()
        if quantized:
            config[SUBLAYER_DTYPES] = quantized
        return config


@contextlib.contextmanager
def _one_collection():
    """One ``gc.collect()`` at the end instead of one per call inside: Keras'
    ``Layer.__delattr__`` runs a full collection each time a quantizing
    ``Dense`` drops its float kernel (72 for BERT-base, 0.1-0.5 s each in a
    process holding many objects). While the block runs, ``gc.collect`` is a
    no-op for the thread that entered it only: a call from any other thread
    still collects, and the collector's automatic collections are
    untouched. The function is put back on exit unless someone replaced it
    meanwhile (then theirs stays)."""
    collect = gc.collect
    caller = threading.get_ident()

    def collect_elsewhere(generation=2):
        return 0 if threading.get_ident() == caller else collect(generation)

    gc.collect = collect_elsewhere
    try:
        yield
    finally:
        if gc.collect is collect_elsewhere:
            gc.collect = collect
        collect()


def quantize_model(model, mode="int8", **kwargs):
    """``model.quantize(mode, **kwargs)`` and a report of what it changed.

    Keras warns once per leaf layer it cannot quantize; those warnings are
    collected here instead of printed. On the TensorFlow backend an ``int8``
    model is set to run in graph mode (``model.jit_compile = False``) where
    TensorFlow's oneDNN u8 x s8 GEMM multiplies exactly on this CPU (AVX512-
    VNNI or AMX; bert4keras' ``Dense`` then sends its integer product there,
    :func:`bert4keras.layers.tf_direct.int8_dense`) and the quantized kernels
    hold :data:`ONEDNN_MIN_MEAN_KERNEL` weights or more on average (BERT-base
    does, the shipped small BERT does not), else under XLA
    (``model.jit_compile = True``, XLA's own int8 dot):
    ``predict``, ``evaluate`` and ``fit`` follow the setting. A model
    reloaded from ``.keras`` runs in graph mode on a CPU-only machine
    (Keras' ``'auto'``). Afterwards the memory the
    dropped float kernels held is given back to the operating system
    (:func:`bert4keras.allocator.trim_heap`; glibc keeps it otherwise).

    Args:
        model: a built ``keras.Model`` (e.g. ``build_transformer_model`` plus a head).
        mode: a Keras quantization mode (``'int8'``, ``'int4'``, ``'float8'``).
        **kwargs: passed on to ``keras.Model.quantize`` (``config``, ``filters``).

    Returns:
        dict: ``quantized``: paths of the layers now quantized; ``skipped``:
        path -> reason for every leaf layer that holds weights and was left
        in float (e.g. the embeddings); ``jit_compile``: the model's setting
        afterwards.

    Raises:
        ValueError: from Keras, e.g. an unbuilt or already quantized model.
    """
    import warnings

    with warnings.catch_warnings(record=True) as caught, _one_collection():
        warnings.simplefilter("always")
        model.quantize(mode, **kwargs)
    # the float kernels just dropped stay resident in glibc's heap otherwise (with the
    # build's temporaries, on the PyTorch backend)
    allocator.trim_heap()
    messages = [str(w.message) for w in caught]
    quantized, skipped = [], {}
    for layer in model._flatten_layers(include_self=False):
        if list(layer._flatten_layers(include_self=False)):
            continue  # not a leaf: its sublayers are listed themselves
        if getattr(layer, "quantization_mode", None):
            quantized.append(layer.path)
        elif layer.weights:
            own = [m for m in messages if m.startswith(layer.name + " ")]
            skipped[layer.path] = own[0] if own else (
                "%s has no %r quantization in Keras" % (type(layer).__name__, mode))
    if mode == "int8" and quantized and keras.backend.backend() == "tensorflow":
        from bert4keras.layers.tf_direct import u8s8_available

        sizes = [math.prod(layer._kernel.shape)
                 for layer in model._flatten_layers(include_self=False)
                 if getattr(layer, "quantization_mode", None) == "int8"
                 and getattr(layer, "_kernel", None) is not None]
        large = bool(sizes) and sum(sizes) / len(sizes) >= ONEDNN_MIN_MEAN_KERNEL
        model.jit_compile = not (large and u8s8_available())
        for name in ("train_function", "test_function", "predict_function"):
            if getattr(model, name, None) is not None:  # traced before: retrace
                setattr(model, name, None)
    return {"quantized": quantized, "skipped": skipped,
            "jit_compile": getattr(model, "jit_compile", None)}


def with_dtype_policy(model, policy):
    """A copy of a functional ``keras.Model`` computing under another dtype policy.

    Every layer whose config names a float dtype policy gets ``policy``
    (``'bfloat16'``: bfloat16 weights and compute; ``'mixed_bfloat16'``:
    float32 weights, bfloat16 compute; ``'float32'``); input layers and
    integer layers keep theirs. The weights are copied (cast by Keras to the
    new variable dtype). bert4keras layers keep their float32 softmax and
    LayerNorm statistics under any policy.

    Args:
        model: a float (not quantized) functional ``keras.Model``, e.g. loaded
            from a fine-tuned ``.keras`` file.
        policy: a Keras dtype policy name.

    Returns:
        keras.Model: the new model (same inputs, outputs and weights order).

    Raises:
        ValueError: ``model`` has quantized layers (quantize the float copy
            instead), or is not a functional model (no ``layers`` in its config).
    """
    for layer in model._flatten_layers(include_self=False):
        if getattr(layer, "quantization_mode", None):
            raise ValueError("with_dtype_policy: layer %s of %s is quantized (%s); change the "
                             "policy of the float model, then quantize"
                             % (layer.path, model.name, layer.dtype_policy.name))
    config = model.get_config()
    if "layers" not in config:
        raise ValueError("with_dtype_policy: %s is not a functional model (config has no "
                         "'layers')" % model.name)
    target = keras.dtype_policies.get(policy)

    def float_policy(dtype):
        try:
            current = keras.dtype_policies.get(dtype)
        except (ValueError, TypeError):
            return False
        return current.quantization_mode is None and \
            "float" in str(current.variable_dtype)

    for layer in config["layers"]:
        layer_config = layer.get("config", {})
        if layer.get("class_name") == "InputLayer" or "dtype" not in layer_config:
            continue
        if float_policy(layer_config["dtype"]):
            layer_config["dtype"] = keras.dtype_policies.serialize(target)
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy
