"""``keras.ops`` for a cached attention pass, called on torch directly.

On eager PyTorch a cached decoding step's ``keras.ops`` calls cost more in
Keras' argument conversion and dtype promotion than in their kernels;
:func:`cached_ops` gives the same functions on torch tensors without it
(:mod:`bert4keras.layers.direct` uses it for the rest of the cached path).
"""

import keras
from keras import ops

__all__ = ["cached_ops"]


_TORCH_OPS = []  # the one _TorchOps, made on first use (torch imported only then)


def cached_ops(x):
    """The ops namespace for a cached path over tensors like ``x``: ``keras.ops``,
    or the same functions called on torch directly (:class:`_TorchOps`) when
    ``x`` is a torch tensor (eager PyTorch)."""
    if keras.backend.backend() == "torch":
        import torch

        if isinstance(x, torch.Tensor):
            if not _TORCH_OPS:
                _TORCH_OPS.append(_TorchOps())
            return _TORCH_OPS[0]
    return ops


class _TorchOps:
    """The ``keras.ops`` functions a cached attention pass uses, called on
    torch directly: the same results for the arguments that path passes
    (tensors of matching dtypes, dtype names as strings), without Keras'
    per-call conversion and dtype promotion (~5-20 us each in eager torch).
    Any other attribute is ``keras.ops``' own."""

    def __init__(self):
        import torch

        self.torch = torch
        self._dtypes = {"float32": torch.float32, "float16": torch.float16,
                        "bfloat16": torch.bfloat16, "int32": torch.int32,
                        "int64": torch.int64, "bool": torch.bool}

    def __getattr__(self, name):
        return getattr(ops, name)

    def _dtype(self, name):
        name = name if isinstance(name, str) else keras.backend.standardize_dtype(name)
        return self._dtypes[name]

    def _tensor(self, x):  # the path's public entry points also take NumPy arrays
        return x if isinstance(x, self.torch.Tensor) else ops.convert_to_tensor(x)

    def cast(self, x, dtype):
        return self._tensor(x).to(self._dtype(dtype))

    def transpose(self, x, axes):
        return self._tensor(x).permute(tuple(axes))

    def reshape(self, x, shape):
        return self.torch.reshape(self._tensor(x), tuple(int(n) for n in shape))

    def einsum(self, equation, *operands):
        return self.torch.einsum(equation, *map(self._tensor, operands))

    def softmax(self, x, axis=-1):
        return self.torch.softmax(self._tensor(x), dim=axis)

    def maximum(self, x, y):
        if isinstance(y, (int, float)):
            return self.torch.clamp_min(self._tensor(x), y)
        return self.torch.maximum(self._tensor(x), self._tensor(y))

    def one_hot(self, x, num_classes, dtype="float32"):
        return self.torch.nn.functional.one_hot(self._tensor(x).long(), num_classes).to(
            self._dtype(dtype))

    def cache_scores(self, keys, queries, beams, length):
        """Scores of ``queries`` ``(b, m, d)`` against the first ``length``
        slots of each of the ``beams`` caches side by side in ``keys`` ``(b,
        beams * cache_len, d)``: ``(b, beams, length, m)``. The slots are a
        strided view of the cache (no copy): an eager step reads only what
        has been written."""
        b, slots, d = keys.shape
        keys = keys.view(b, beams, slots // beams, d)[:, :, :length]
        if beams > 1:  # matmul broadcast over the beams was slower (benchmarks/HISTORY.md)
            return self.torch.einsum("bjld,bmd->bjlm", keys, queries)
        return self.torch.matmul(keys, queries.transpose(1, 2)[:, None])

    def cache_attention(self, queries, keys, values, length, bias, scale):
        """Softmax attention of ``queries`` ``(heads, batch, q_len, key_size)``
        over the first ``length`` slots of the one-beam cache ``keys`` /
        ``values`` ``(heads * batch, cache_len, size)``, as one
        ``scaled_dot_product_attention`` (torch's fused CPU kernel) instead of
        a scores product, scaling, bias, softmax and values product:
        ``softmax(q k^T * scale + bias) v`` ``(heads, batch, q_len,
        head_size)``, ``bias`` float32 broadcastable to ``(heads, batch,
        q_len, length)`` or None. The slots are strided views (no copy)."""
        heads, batch = queries.shape[:2]
        keys = keys.view(heads, batch, keys.shape[1], keys.shape[2])[:, :, :length]
        values = values.view(heads, batch, values.shape[1], values.shape[2])[:, :, :length]
        return self.torch.nn.functional.scaled_dot_product_attention(
            queries, keys, values, attn_mask=bias, scale=scale)

    def cache_values(self, weights, values, beams):
        """``weights`` ``(b, m, beams, length)`` over the first ``length``
        slots of each of the ``beams`` caches in ``values`` ``(b, beams *
        cache_len, d)``: the weighted sum ``(b, m, d)``, read as
        :meth:`cache_scores` reads the keys."""
        b, slots, d = values.shape
        length = weights.shape[-1]
        values = values.view(b, beams, slots // beams, d)[:, :, :length]
        return self.torch.matmul(weights.permute(0, 2, 1, 3), values).sum(1)
