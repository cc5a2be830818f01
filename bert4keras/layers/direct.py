"""Layer calls and ops on the cached decoding path, without Keras' dispatch.

A cached decoding step (:class:`bert4keras.generation.DecodingStep`) runs the
model's own layers on real tensors. Under XLA (TensorFlow, JAX) the Python
around each op is traced once and costs nothing per token; on PyTorch every
step runs eagerly, and Keras' bookkeeping -- ``Layer.__call__`` (dtype
conversion, masks, scopes) and each ``keras.ops`` function (argument
conversion, dtype promotion) -- costs as much as the matmuls of a small
step. Here:

* :func:`direct_call` runs a layer's ``call`` without ``Layer.__call__``
  where that changes nothing, and a plain ``Dense`` / LayerNorm as one torch
  kernel (``torch.addmm`` or oneDNN's inner product, ``F.layer_norm``);
* :func:`onednn_linear` is ``x @ W^T + b`` through oneDNN where torch has it
  and nothing needs gradients: on a CPU whose MKL matmul runs a slow path
  (AMD Zen 4) it read the weights of a few-row product 1.8-2.6x faster
  (``benchmarks/torch_linear.py``);
* :func:`cached_ops` is the namespace of ops a cached path uses: ``keras.ops``
  itself, or on torch tensors the same functions called on torch directly
  (the subset :class:`~bert4keras.layers.MultiHeadAttention`'s cached path
  needs, with ``keras.ops``' semantics for the arguments it passes).

The values are the same either way (tests/test_generation.py compares them).
"""

import contextlib
import contextvars

import keras

from bert4keras.layers.quantization import is_keras_int8_quantizer
from bert4keras.layers.torch_compile import torch_compiling, traced_onednn_op
from bert4keras.layers.torch_ops import cached_ops

__all__ = ["direct_call", "calls_directly", "cached_ops", "register_torch_call",
           "onednn_linear", "onednn_dense", "packed_weights", "int8_dense",
           "dense_activation", "fused_dense", "onednn_table_product", "torch_attention",
           "torch_compiling", "traced_onednn_op"]

# A Dense kernel ``(in, out)`` goes through oneDNN (:func:`onednn_linear`, as
# its transposed view) from this many rows on. One row included: on the AMD
# Zen 5 machine oneDNN read a one-row product's kernels 1.43x as fast as
# ``torch.addmm`` (benchmarks/torch_linear.py), on Zen 4 0.95x
# (benchmarks/HISTORY.md: "PyTorch backend decoding"); 2 restores the Zen 4 choice.
ONEDNN_DENSE_ROWS = 1
# ... and of at least this many weights: below, oneDNN's fixed cost per call
# is more than it saves (a 64 x 64 kernel ran slower than with torch.addmm).
ONEDNN_MIN_WEIGHTS = 1 << 17
# False: the cached path never calls oneDNN directly (what torch's own matmul
# picks runs instead); for comparisons, set before decoding.
USE_ONEDNN = True

# The input rows oneDNN is told to expect when it blocks a kernel for
# packed_weights (the blocked copy serves any number of rows).
PACK_ROWS = 8
# the store of packed_weights in effect (None: kernels are read as stored)
_PACKED = contextvars.ContextVar("bert4keras_packed_weights", default=None)
# the same store where torch.compile traces (Dynamo cannot read a ContextVar):
# set by packed_weights for the duration of its block
_TRACED_STORE = [None]


def _packed_store():
    """The :func:`packed_weights` store in effect (None outside one)."""
    return _TRACED_STORE[0] if torch_compiling() else _PACKED.get()


# type -> fn(layer, *args, **kwargs) -> output or None (None: not applicable)
_TORCH_CALLS = {}


def register_torch_call(layer_type, fn):
    """Let :func:`direct_call` run ``fn(layer, *args, **kwargs)`` for layers
    of exactly ``layer_type`` on torch tensors; ``fn`` returns None when it
    does not apply (the layer's ``call`` runs then)."""
    _TORCH_CALLS[layer_type] = fn


def direct_call(layer, *args, **kwargs):
    """``layer(*args, **kwargs)`` on real tensors without Keras'
    ``Layer.__call__`` bookkeeping, where that bookkeeping changes nothing.

    ``Layer.__call__`` converts the inputs to the compute dtype, resolves
    ``training`` and masks, opens name and autocast scopes and attaches the
    output's Keras mask: in eager PyTorch (a cached decoding step) that costs
    more than the matmul of a batch-1 ``Dense``. For a built layer whose
    compute and variable dtypes agree (nothing to autocast), whose ``call``
    takes no ``mask``, with no activity regularizer, no rematerialization and
    no ``keras.distribution`` set, ``layer.call`` (``quantized_call`` for a
    quantized layer) is run directly: the same outputs, but no Keras mask on
    them (callers make sure no later layer reads one). On torch tensors a
    plain ``keras.layers.Dense`` (float, no LoRA) is ``torch.addmm`` /
    ``torch.matmul`` plus its activation, and a registered layer type runs its
    :func:`register_torch_call` function. Any other layer is called as usual.
    """
    if calls_directly(layer):
        if getattr(layer, "quantization_mode", None) is not None:
            return layer.quantized_call(*args, **kwargs)
        fast = _TORCH_CALLS.get(type(layer))
        if fast is not None and keras.backend.backend() == "torch":
            y = fast(layer, *args, **kwargs)
            if y is not None:
                return y
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


def calls_directly(layer):
    """Whether :func:`direct_call` runs ``layer.call`` itself (see there)."""
    return bool(layer.built and layer.compute_dtype == layer.variable_dtype
                and not getattr(layer, "_call_has_mask_arg", True)
                and layer.activity_regularizer is None
                and getattr(layer, "_remat_mode", None) is None
                and keras.distribution.distribution() is None)


def _layer_call(layer, *args, **kwargs):
    """``layer(*args, **kwargs)``: the full Keras call, where :func:`direct_call` is not wanted."""
    return layer(*args, **kwargs)


def _reshape(x, shape):
    """``ops.reshape(x, shape)`` on the cached path. On torch (eager) a torch
    tensor is reshaped by torch itself: ``ops.reshape`` flattens the shape
    tuple through torch's pytree to look for symbolic tensors, which took
    about a fifth of a batch-1 GPT-2 decoding step (~16 reshapes per layer)."""
    return cached_ops(x).reshape(x, shape)


def _float_kernel(layer, inputs):
    """The kernel variable of a float ``Dense`` ``layer`` that torch tensor
    ``inputs`` can be multiplied by directly, or None: no kernel, LoRA (Keras
    adds the low-rank product in ``call``), a quantized layer, or inputs that
    are not a torch tensor (the check every direct ``Dense`` path here and in
    :mod:`bert4keras.layers.torch_train` starts with)."""
    import torch

    variable = getattr(layer, "_kernel", None)
    if (variable is None or layer.lora_enabled or not isinstance(inputs, torch.Tensor)
            or getattr(layer, "quantization_mode", None) is not None):
        return None
    return variable


def onednn_dense(layer, inputs, activation=None):
    """``layer(inputs)`` of a float ``keras.layers.Dense`` through oneDNN
    (:func:`onednn_linear`; the kernel ``(in, out)`` read as its transposed
    view, in place, or inside :func:`packed_weights` as a oneDNN-blocked copy),
    then the layer's activation -- inside the same oneDNN call (a post-op) for
    ReLU and the erf / tanh GELUs (:func:`_activations`), which spares a pass
    over the output and its allocation; None where that does not apply: fewer than
    :data:`ONEDNN_DENSE_ROWS` rows (outside :func:`packed_weights`), LoRA,
    inputs that are not a torch tensor, or any refusal of
    :func:`onednn_linear` (gradients enabled, not float32 on the CPU, a small
    kernel, ...).

    Args:
        layer: a built ``keras.layers.Dense`` (or subclass), not quantized.
        inputs: ``(..., in)`` torch tensor.
        activation: applied instead of the layer's own (which is then
            ignored); None: the layer's.

    Returns:
        ``(..., units)`` or None.
    """
    activation = layer.activation if activation is None else activation
    variable = _float_kernel(layer, inputs)
    if variable is None:
        return None
    store = _packed_store()
    if store is None and inputs.numel() < ONEDNN_DENSE_ROWS * max(1, inputs.shape[-1]):
        return None
    kernel = variable.value
    weight = kernel.t()
    op = _applicable_op(inputs, weight)
    if op is None:
        return None
    if store is not None:
        weight = _packed(store, variable, kernel)
    fused = _known_activation(activation)
    bias = None if layer.bias is None else layer.bias.value
    if fused is not None:
        return op(inputs, weight, bias, fused[0], [], fused[1])
    return activation(op(inputs, weight, bias, "none", [], ""))


def _known_activation(activation):
    """``(oneDNN post-op, algorithm, in-place torch function or None)`` for
    an activation of :func:`_activations`' table, else None."""
    try:
        return _activations().get(activation)
    except TypeError:  # an unhashable callable
        return None


# activation function -> (oneDNN post-op, its algorithm, in-place torch function):
# the activations a Dense of ours computes inside oneDNN's inner product
# (onednn_dense) or in place on its own output (int8_dense)
_ACTIVATIONS = {}


def _activations():
    """The table of :data:`_ACTIVATIONS`, filled on first use: no activation,
    Keras' ``linear`` and ``relu`` (default arguments), Keras' ``gelu``
    (``approximate=False`` by default) and bert4keras' ``gelu_erf`` /
    ``gelu_tanh`` -- each the same torch function on torch that oneDNN's
    post-op or the in-place torch op computes (``F.gelu`` with
    ``approximate='none'`` / ``'tanh'``, ``relu``)."""
    if not _ACTIVATIONS:
        import torch

        from bert4keras.backend import gelu_erf, gelu_tanh

        gelu_ = torch._C._nn.gelu_
        _ACTIVATIONS.update({
            None: ("none", "", None),
            keras.activations.linear: ("none", "", None),
            keras.activations.relu: ("relu", "", torch.relu_),
            keras.activations.gelu: ("gelu", "none", gelu_),
            gelu_erf: ("gelu", "none", gelu_),
            gelu_tanh: ("gelu", "tanh", lambda x: gelu_(x, approximate="tanh")),
        })
    return _ACTIVATIONS


@contextlib.contextmanager
def packed_weights(store):
    """Within this block (in this thread or task), :func:`onednn_dense`
    multiplies by a oneDNN-blocked copy of each kernel kept in ``store`` (a
    dict; None: no packing), made on the kernel's first use and made again
    when the kernel was changed in place since (its torch version counter:
    an optimizer step, ``assign``, ``load_weights``). oneDNN's inner product
    reads a blocked kernel faster than the transposed view of Keras' ``(in,
    out)`` layout (``benchmarks/torch_linear.py``, variant ``onednn
    packed``), at the price of a second copy of every kernel that is used,
    kept as long as ``store`` is. ``CachedDecoder(packed_weights=True)``
    keeps one per decoder."""
    token, traced = _PACKED.set(store), _TRACED_STORE[0]
    _TRACED_STORE[0] = store
    try:
        yield
    finally:
        _PACKED.reset(token)
        _TRACED_STORE[0] = traced


def _packed(store, variable, kernel, transposed=True):
    """The blocked ``(out, in)`` copy of ``kernel`` ``(in, out)`` (``transposed``
    False: ``kernel`` is ``(out, in)`` already, e.g. an embedding table), the
    value of the Keras ``variable``, kept in ``store`` under the variable (so a
    value Keras replaced by a new tensor replaces its copy instead of leaving it)."""
    import torch

    entry = store.get(id(variable))
    if torch_compiling():  # the copy the run's eager prompt pass made, as it is
        return (kernel.t() if transposed else kernel) if entry is None else entry[2]
    if entry is None or entry[0] is not kernel or entry[1] != kernel._version:
        with torch.no_grad():
            weight = kernel.detach().t() if transposed else kernel.detach()
            blocked = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS)
        entry = store[id(variable)] = (kernel, kernel._version, blocked)
    return entry[2]


def fused_dense(layers, inputs):
    """``[layer(inputs) for layer in layers]`` as one oneDNN product, the
    kernels side by side in one blocked ``(sum of units, in)`` copy kept in
    the :func:`packed_weights` store (with their biases joined): one read of
    the input and one kernel call instead of one per layer, which is what the
    query, key and value projections of a cached self-attention step cost
    (the 36 768 x 768 kernels of a GPT-2 step read at 41-47 GB/s joined vs
    33-38 apart at 1-8 rows; ``benchmarks/torch_linear.py``, workload
    ``qkv``; ``benchmarks/results/torch_linear_qkv_zen5.json``). The copy is
    made again when any kernel or bias was changed in place since (torch
    version counters) or replaced.

    Args:
        layers: built float ``keras.layers.Dense`` layers with the same input
            width and no activation (q/k/v projections).
        inputs: ``(..., in)`` float32 torch tensor.

    Returns:
        One ``(..., units)`` view per layer (column slices of the joined
        output), or None where this does not apply: outside
        :func:`packed_weights`, LoRA, a quantized layer, an activation, or
        any refusal of :func:`onednn_linear` (gradients enabled, not float32
        on the CPU, ...); callers then call the layers one by one.
    """
    store = _packed_store()
    if store is None or keras.backend.backend() != "torch":
        return None
    import torch

    kernels, biases = [], []
    for layer in layers:
        variable = _float_kernel(layer, inputs)
        if variable is None or layer.activation not in (None, keras.activations.linear):
            return None
        kernels.append(variable.value)
        biases.append(None if layer.bias is None else layer.bias.value)
    units = [int(k.shape[1]) for k in kernels]
    if _applicable_op(inputs, kernels[0].t()) is None or len({k.shape[0] for k in kernels}) > 1:
        return None
    key = ("fused",) + tuple(id(layer) for layer in layers)
    made = tuple(kernels + biases)
    entry = store.get(key)
    if torch_compiling():  # the copy the run's eager prompt pass made, as it is
        if entry is None:
            return None
    else:
        versions = tuple(-1 if t is None else t._version for t in made)
        if (entry is None or len(entry[0]) != len(made)
                or any(a is not b for a, b in zip(entry[0], made)) or entry[1] != versions):
            with torch.no_grad():
                joined = torch.cat([k.detach().t() for k in kernels], dim=0)
                blocked = torch.ops.mkldnn._reorder_linear_weight(joined, PACK_ROWS)
                bias = None
                if any(b is not None for b in biases):
                    bias = torch.cat([kernels[i].new_zeros(n) if b is None else b.detach()
                                      for i, (b, n) in enumerate(zip(biases, units))])
            entry = store[key] = (made, versions, blocked, bias)
    lead = tuple(inputs.shape[:-1])
    y = _onednn_op()(inputs.reshape(-1, inputs.shape[-1]), entry[2], entry[3], "none", [], "")
    return [part.reshape(lead + (n,)) for part, n in zip(torch.split(y, units, dim=-1), units)]


def _torch_dense(layer, inputs, training=None):
    """``keras.layers.Dense.call`` as one torch kernel: :func:`onednn_dense`
    where it applies, else ``inputs @ kernel + bias`` (``torch.addmm`` for
    2-D inputs), then the activation. None when it does not apply (LoRA,
    another input type or dtype)."""
    import torch

    y = onednn_dense(layer, inputs)
    if y is not None:
        return y
    variable = _float_kernel(layer, inputs)
    if variable is None:
        return None
    kernel = variable.value
    if inputs.dtype != kernel.dtype:
        return None
    bias = None if layer.bias is None else layer.bias.value
    if bias is not None and inputs.dim() == 2:
        y = torch.addmm(bias, inputs, kernel)
    else:
        y = torch.matmul(inputs, kernel)
        if bias is not None:
            y = y + bias
    return y if layer.activation is None else layer.activation(y)


register_torch_call(keras.layers.Dense, _torch_dense)


def _torch_add(layer, inputs):
    """``keras.layers.Add`` (a residual sum) as ``torch.add`` over its inputs,
    in Keras' order; None unless they are torch tensors of one dtype."""
    import torch

    if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
        return None
    total = inputs[0]
    if not all(isinstance(x, torch.Tensor) and x.dtype == total.dtype for x in inputs):
        return None
    for x in inputs[1:]:
        total = torch.add(total, x)
    return total


register_torch_call(keras.layers.Add, _torch_add)

_ONEDNN_OP = []  # [op or None], looked up on first use


def _onednn_op():
    """torch's oneDNN linear op, or None in a build without it (looked up
    once); where ``torch.compile`` traces, the same op registered as
    ``bert4keras::onednn_linear`` (:func:`traced_onednn_op`)."""
    if torch_compiling():
        return traced_onednn_op()
    if not _ONEDNN_OP:
        import torch

        op = None
        if torch.backends.mkldnn.is_available():
            try:
                op = torch.ops.mkldnn._linear_pointwise
            except (AttributeError, RuntimeError):
                op = None
        _ONEDNN_OP.append(op)
    return _ONEDNN_OP[0]


def onednn_linear(inputs, weight, bias=None):
    """``inputs @ weight^T + bias`` on torch tensors through oneDNN's
    inner-product primitive (``torch.ops.mkldnn._linear_pointwise``, the op
    torch's own compiler emits for a CPU linear), or None where it does not
    apply: not float32, not on the CPU (oneDNN here is torch's CPU library;
    a GPU keeps torch's own matmul), fewer than :data:`ONEDNN_MIN_WEIGHTS` weights,
    gradients enabled (the op has no backward; a cached decoding run is
    under ``torch.inference_mode``), :data:`USE_ONEDNN` false, or a torch
    build without it. Callers fall back to torch's matmul.

    Args:
        inputs: ``(..., in)`` float32 torch tensor.
        weight: ``(out, in)`` float32; a transposed view of a Keras kernel
            ``(in, out)`` is read in place (no copy).
        bias: ``(out,)`` or None.

    Returns:
        ``(..., out)``, equal to torch's matmul up to float32 summation order
        (tests/test_direct.py: within 5e-6 on its test shapes).

    Why: torch's float32 CPU matmul is MKL's, which on an AMD Zen 4 read a
    2-8-row product's weights at 7.9-11.2 GB/s where oneDNN read them at
    17.5-20.4 (``benchmarks/torch_linear.py``; benchmarks/HISTORY.md has the
    run and the decoding figures).
    """
    op = _applicable_op(inputs, weight)
    return None if op is None else op(inputs, weight, bias, "none", [], "")


def onednn_table_product(inputs, variable):
    """``inputs @ E^T`` for the Keras ``variable`` holding a table ``E`` ``(out,
    in)`` (a tied output projection: ``(..., in)`` -> ``(..., out)`` logits)
    through oneDNN, reading ``E`` as stored, or inside :func:`packed_weights`
    a blocked copy of it (GPT-2's 50257 x 768 table read at 41-45 GB/s blocked
    vs 26-36 as stored at 1-8 rows; ``benchmarks/torch_linear.py``, workload
    ``head``, same results file); None where :func:`onednn_linear` does not apply."""
    table = variable.value
    op = _applicable_op(inputs, table)
    if op is None:
        return None
    store = _packed_store()
    weight = table if store is None else _packed(store, variable, table, transposed=False)
    return op(inputs, weight, None, "none", [], "")


def _applicable_op(inputs, weight):
    """oneDNN's linear op where :func:`onednn_linear` applies to these tensors, else None."""
    import torch

    if (not USE_ONEDNN or torch.is_grad_enabled() or inputs.dtype != torch.float32
            or weight.dtype != torch.float32 or weight.numel() < ONEDNN_MIN_WEIGHTS
            or inputs.device.type != "cpu" or weight.device.type != "cpu"):
        return None
    return _onednn_op()


_INT_MM = []  # [torch._int_mm or None], looked up on first use


def _int_mm():
    """``torch._int_mm`` (int8 x int8 -> int32 through oneDNN's integer GEMM
    on a CPU), or None in a torch build without a working one (checked once)."""
    if not _INT_MM:
        import torch

        op = getattr(torch, "_int_mm", None)
        if op is not None:
            try:
                ones = torch.ones((2, 8), dtype=torch.int8)
                if int(op(ones, ones.t())[0, 0]) != 8:
                    op = None
            except (RuntimeError, NotImplementedError):
                op = None
        _INT_MM.append(op)
    return _INT_MM[0]


def int8_dense(layer, inputs, activation=None):
    """The ``int8`` call of a quantized ``keras.layers.Dense`` (Keras'
    ``Dense._int8_call``) with its integer product through ``torch._int_mm``,
    or None where that does not apply: not the PyTorch backend's CPU tensors,
    inputs that need a gradient (Keras' call has the custom gradient), a
    compute dtype other than float32, LoRA, or no ``torch._int_mm``.

    The arithmetic is Keras': the inputs are quantized per row by the layer's
    own ``inputs_quantizer`` (``int8``, scale ``127 / max|x|``), multiplied by
    the ``int8`` kernel ``(in, out)`` with int32 accumulation (exact, as
    Keras' ``ops.matmul`` of two int8 tensors), and the product is divided by
    the row scale and the kernel's per-column ``kernel_scale``; only the two
    divisions are done one after the other instead of by their product (the
    outputs agree to float32 rounding, tests/test_direct.py). Why: on torch,
    ``keras.ops.matmul`` of int8 tensors runs torch's generic integer loops
    (10 GOP/s on the AMD Zen 4 machine) where ``torch._int_mm`` runs oneDNN's
    VNNI GEMM (507 GOP/s; ``benchmarks/quantized_inference.py``'s kernel
    probe; Keras' int8 product ran at 0.06-0.08x the fp32 product there).
    The int32 product is turned into float32 in its own memory and ReLU / the
    GELUs are applied in place on it (no second ``(rows, out)`` buffer to
    allocate and fault in).

    Args:
        layer: a built ``keras.layers.Dense`` (or subclass) quantized ``'int8'``.
        inputs: ``(..., in)`` torch tensor.
        activation: applied instead of the layer's own; None: the layer's.

    Returns:
        ``(..., units)`` float32, or None.
    """
    import torch

    if (not isinstance(inputs, torch.Tensor) or inputs.dtype != torch.float32
            or inputs.device.type != "cpu" or layer.compute_dtype != "float32"
            or layer.lora_enabled or getattr(layer, "inputs_quantizer", None) is None
            or (torch.is_grad_enabled() and inputs.requires_grad)):
        return None
    kernel = layer._kernel.value
    op = _int_mm()
    if op is None or kernel.dtype != torch.int8 or kernel.device.type != "cpu":
        return None
    quantized, row_scale = _quantize_rows(layer.inputs_quantizer, inputs)
    units = kernel.shape[-1]
    product = op(quantized.reshape(-1, quantized.shape[-1]), kernel)
    outputs = product.view(torch.float32)
    outputs.copy_(product)  # int32 -> float32 in place: same element size and index
    outputs = outputs.reshape(*inputs.shape[:-1], units)
    outputs.div_(row_scale).div_(layer.kernel_scale.value)
    if layer.bias is not None:
        outputs.add_(layer.bias.value)
    activation = layer.activation if activation is None else activation
    known = _known_activation(activation)
    if known is None or (known[2] is not None and outputs.requires_grad):
        return activation(outputs)
    return outputs if known[2] is None else known[2](outputs)  # in place: our own tensor


def dense_activation(layer, inputs, activation):
    """``activation(layer(inputs))`` for a ``Dense`` without an activation of
    its own, with the activation inside oneDNN's inner product (float32,
    :func:`onednn_dense`) or in place on the output (int8,
    :func:`int8_dense`), for the activations those compute (ReLU, the erf
    and tanh GELUs); None where that does not apply (the caller applies
    ``activation`` itself). Used by :class:`~bert4keras.layers.FeedForward`,
    which keeps its activations out of its ``Dense`` layers for training.

    Args:
        layer: a built ``keras.layers.Dense`` with the linear activation.
        inputs: ``(..., in)`` torch tensor.
        activation: the activation function.

    Returns:
        ``(..., units)`` or None.
    """
    if (layer.activation not in (None, keras.activations.linear)
            or _known_activation(activation) is None):
        return None
    mode = getattr(layer, "quantization_mode", None)
    if mode is None:
        return onednn_dense(layer, inputs, activation)
    if mode == "int8":
        return int8_dense(layer, inputs, activation)
    return None


# elements of the float32 block _quantize_rows scales and rounds at a time
# (4 MiB: a buffer glibc reuses instead of mapping and faulting in a new one)
QUANTIZE_BLOCK = 1 << 20


def _quantize_rows(quantizer, x):
    """``quantizer(x, axis=-1)`` for Keras' ``AbsMaxQuantizer`` to int8 in
    [-127, 127] on a float32 torch tensor, with fewer and smaller passes:
    ``max|x|`` per row as ``max(max x, -min x)`` (no ``|x|`` tensor), the
    scaling and rounding in blocks of :data:`QUANTIZE_BLOCK` elements
    through one reused buffer, and no clip (``|x| * 127 / (max|x| + eps)``
    rounds to at most 127). The same values as Keras' (the scale is ``127 /
    (max + eps)`` divided as Keras divides; rounding half to even, as
    ``torch.round``; tests/test_direct.py compares them bit for bit) with
    fewer passes that each write a new tensor (every new 48 MiB tensor first
    has its pages faulted in). Any other quantizer is called as it is.

    Returns:
        ``(int8 (..., in), float32 scale (..., 1))``.
    """
    import torch

    if not is_keras_int8_quantizer(quantizer):
        return quantizer(x, axis=-1)
    peak = torch.maximum(x.amax(-1, keepdim=True), x.amin(-1, keepdim=True).neg_())
    scale = torch.div(x.new_tensor(127.0), peak.add_(quantizer.epsilon))
    if x.numel() <= QUANTIZE_BLOCK:
        return torch.mul(x, scale).round_().to(torch.int8), scale
    width = x.shape[-1]
    rows, row_scale = x.reshape(-1, width), scale.reshape(-1, 1)
    quantized = torch.empty(rows.shape, dtype=torch.int8)
    step = max(1, QUANTIZE_BLOCK // width)
    buffer = torch.empty((min(step, rows.shape[0]), width), dtype=x.dtype)
    for start in range(0, rows.shape[0], step):
        stop = min(rows.shape[0], start + step)
        block = buffer[:stop - start]
        torch.mul(rows[start:stop], row_scale[start:stop], out=block).round_()
        quantized[start:stop].copy_(block)
    return quantized.reshape(x.shape), scale


# -- the ops of a cached path ---------------------------------------------------------
def torch_attention(q, k, v, bias, scale):
    """``softmax(q k^T * scale + bias) v`` for ``(batch, len, heads, size)``
    torch tensors by ``scaled_dot_product_attention`` on their head-major
    views as they are (``keras.ops.dot_product_attention`` copies q, k and v
    to contiguous first; torch's CPU flash kernel reads the strided views and
    then writes its output so that the transpose back is contiguous too: four
    copies fewer per layer, same kernel, same values). ``bias`` float32
    broadcastable to ``(batch, heads, q_len, k_len)`` or None. Returns
    ``(batch, q_len, heads, size)``, or None when the inputs are not torch
    tensors (only called on the torch backend)."""
    import torch

    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        return None
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias, scale=scale)
    return out.transpose(1, 2)
