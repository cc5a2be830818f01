"""What changes on the cached decoding path while ``torch.compile`` traces it.

``CachedDecoder(jit_compile=True)`` on PyTorch compiles each cached step with
``torch.compile`` (:func:`bert4keras.generation.compiled.compile_torch_loop`).
The eager path's shortcuts (:mod:`bert4keras.layers.direct`) then keep their
shapes static and call oneDNN through an op TorchInductor leaves alone.
"""

import keras

__all__ = ["torch_compiling", "traced_onednn_op"]


def torch_compiling():
    """True while ``torch.compile`` (Dynamo) traces the calling code (a
    :class:`~bert4keras.generation.CachedDecoder` step with
    ``jit_compile=True`` on PyTorch); False on other backends and in eager
    torch. The cached path then keeps its shapes static (no reads of tensor
    values into Python ints) and calls oneDNN through a registered op."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return bool(torch.compiler.is_compiling())


_TRACED_OP = []  # [function calling bert4keras::onednn_linear], registered on first use


def traced_onednn_op():
    """oneDNN's linear op as a custom torch op (``bert4keras::onednn_linear``)
    that ``torch.compile`` keeps as one opaque call: its compiler would
    otherwise lower ``torch.ops.mkldnn._linear_pointwise`` itself, which
    expects a weight it blocked itself and fails on the transposed view of a
    Keras kernel. Same arguments and result as the op it calls."""
    if not _TRACED_OP:
        from typing import Optional

        import torch

        @torch.library.custom_op("bert4keras::onednn_linear", mutates_args=())
        def onednn_linear_op(inputs: torch.Tensor, weight: torch.Tensor,
                             bias: Optional[torch.Tensor], attr: str,
                             algorithm: str) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, attr, [],
                                                      algorithm)

        @onednn_linear_op.register_fake
        def _(inputs, weight, bias, attr, algorithm):
            return inputs.new_empty(tuple(inputs.shape[:-1]) + (weight.shape[0],))

        def call(inputs, weight, bias, attr, scalars, algorithm):
            if scalars:
                raise ValueError("post-op scalars are not passed to the traced oneDNN op")
            return onednn_linear_op(inputs, weight, bias, attr, algorithm)

        _TRACED_OP.append(call)
    return _TRACED_OP[0]
