"""oneDNN's inner product with a backward pass, for training on the PyTorch backend.

A float32 ``Dense`` on torch multiplies through torch's matmul, which on a
CPU is MKL's ``sgemm``. On the AMD machines here MKL runs a narrower code
path than the CPU has: on the Zen 5 VM (full-width AVX-512) the benchmarks'
fp32 matmul peak was 137-208 GFLOP/s for torch against 403-429 for
TensorFlow, whose products are oneDNN's. Without gradients the layers
already call oneDNN's inner product (``torch.ops.mkldnn._linear_pointwise``,
:mod:`bert4keras.layers.direct`); the op has no backward, so a training
step ran MKL. :func:`linear` wraps it in a ``torch.autograd.Function``
whose backward is two more inner products (a BERT-base training step went
from 0.48x to 0.80x of our TensorFlow step with it; benchmarks/HISTORY.md,
Zen 5 section):

* ``dx = dy @ W`` -- ``W`` ``(out, in)`` read as the ``(in, out)`` weight of an
  inner product;
* ``dW = dy^T @ x`` -- ``(out, in)``, the batch rows being the reduced axis
  or as ``(x^T @ dy)^T``, whichever copies less: oneDNN copies its
  transposed source matrix (``rows x out`` or ``rows x in`` floats), and
  autograd copies a gradient not laid out as its parameter (a Keras
  ``(in, out)`` kernel wants ``(x^T @ dy)``'s layout, an ``(out, in)``
  embedding table the other) -- :func:`_transpose_x`;
* ``db`` the column sums of ``dy``.

The values are float32 products in another summation order than MKL's
(tests/test_torch_train.py compares outputs and gradients with torch's
matmul). Higher-order gradients are not supported (the backward is not
differentiable).
"""

import keras

from bert4keras.layers.direct import ONEDNN_MIN_WEIGHTS, _float_kernel, _onednn_op

__all__ = ["linear", "dense_call", "MIN_ROWS", "ENABLED"]

# below this many input rows a training product stays torch's (a few-row
# product is cheap either way, and oneDNN's fixed cost per call dominates)
MIN_ROWS = 64
# False: training products are torch's own matmul (for comparisons)
ENABLED = True

_FUNCTION = []  # [the autograd.Function class], made on first use (torch imported then)


def _function():
    if not _FUNCTION:
        import torch
        from torch.autograd.function import once_differentiable

        class OneDNNLinear(torch.autograd.Function):
            """``x @ w^T + b`` with ``x`` ``(rows, in)``, ``w`` ``(out, in)`` (any
            strides: a transposed view of a Keras kernel is read in place)."""

            @staticmethod
            def forward(ctx, x, w, b):
                ctx.save_for_backward(x, w)
                ctx.has_bias = b is not None
                return _onednn_op()(x, w, b, "none", [], "")

            @staticmethod
            @once_differentiable
            def backward(ctx, dy):
                x, w = ctx.saved_tensors
                op = _onednn_op()
                dx = dw = db = None
                if ctx.needs_input_grad[0]:
                    dx = op(dy, w.t(), None, "none", [], "")  # dy @ w: (rows, in)
                if ctx.needs_input_grad[1]:  # dy^T @ x: (out, in)
                    if _transpose_x(x, dy, w):
                        dw = op(_transposed(x), dy.t(), None, "none", [], "").t()
                    else:
                        dw = op(dy.t(), x.t(), None, "none", [], "")
                if ctx.has_bias and ctx.needs_input_grad[2]:
                    db = dy.sum(0)
                return dx, dw, db

        _FUNCTION.append(OneDNNLinear)
    return _FUNCTION[0]


def _transpose_x(x, dy, w):
    """For ``dW = dy^T @ x`` (``x`` ``(rows, in)``, ``dy`` ``(rows, out)``,
    ``w`` ``(out, in)``): True to compute it as ``(x^T @ dy)^T``. Counts the
    floats copied: the transposed source, plus the gradient when its layout
    differs from ``w``'s (``w`` a transposed view of an ``(in, out)`` kernel:
    the ``(x^T @ dy)^T`` layout; else ``dy^T @ x``'s)."""
    rows, n_in = x.shape
    n_out = dy.shape[1]
    kernel_view = not w.is_contiguous()
    copy_dy = n_out * rows + (n_out * n_in if kernel_view else 0)
    copy_x = n_in * rows + (0 if kernel_view else n_out * n_in)
    return copy_x <= copy_dy


_LAST_TRANSPOSE = []  # [(x, x^T contiguous)]: the last source transposed in a backward


def _transposed(x):
    """``x.t()`` as a contiguous matrix, shared by consecutive backward calls
    on the same ``x`` (the query, key and value projections of an attention
    layer read one input: one copy instead of three). The cache holds ``x``
    itself, so its memory cannot be reused by another tensor while cached;
    a match needs the same storage pointer, shape, strides and version."""
    if _LAST_TRANSPOSE:
        cached, xt = _LAST_TRANSPOSE[0]
        if (cached.data_ptr() == x.data_ptr() and cached.shape == x.shape
                and cached.stride() == x.stride() and cached._version == x._version):
            return xt
    xt = x.t().contiguous()
    _LAST_TRANSPOSE[:] = [(x, xt)]
    return xt


def _applies(x, w):
    import torch

    return (ENABLED and _onednn_op() is not None and torch.is_grad_enabled()
            and x.dtype == torch.float32 and w.dtype == torch.float32
            and x.device.type == "cpu" and w.device.type == "cpu"
            and w.numel() >= ONEDNN_MIN_WEIGHTS and x.numel() >= MIN_ROWS * x.shape[-1])


def linear(x, w, b=None):
    """``x @ w^T + b`` through oneDNN, differentiable, or None where it does
    not apply (gradients disabled -- the inference path has its own --, not
    float32 on the CPU, fewer than :data:`MIN_ROWS` rows, fewer than
    ``ONEDNN_MIN_WEIGHTS`` weights, :data:`ENABLED` off, or a torch build
    without the op).

    Args:
        x: ``(..., in)`` float32 torch tensor.
        w: ``(out, in)`` float32 (a transposed view of a Keras ``(in, out)``
            kernel is read in place; its gradient flows back through the view).
        b: ``(out,)`` or None.

    Returns:
        ``(..., out)`` or None.
    """
    if not _applies(x, w):
        return None
    shape = tuple(x.shape)
    y = _function().apply(x.reshape(-1, shape[-1]), w, b)
    return y.reshape(shape[:-1] + (y.shape[-1],))


def dense_call(layer, inputs):
    """A float ``keras.layers.Dense`` (``kernel`` ``(in, out)``) with gradients
    enabled on torch, through :func:`linear`, then its activation; None where
    that does not apply (LoRA, a quantized layer, not a torch tensor, or any
    refusal of :func:`linear`)."""
    variable = _float_kernel(layer, inputs)
    if variable is None:
        return None
    bias = None if layer.bias is None else layer.bias.value
    y = linear(inputs, variable.value.t(), bias)
    if y is None:
        return None
    return y if layer.activation in (None, keras.activations.linear) else layer.activation(y)
