"""Writing stored tensors into Keras variables without a second full copy.

When a model loads a checkpoint its variables already exist (at a marker
constant, see :mod:`bert4keras.models.weights`), so the largest transient of
loading is the stored tensor being copied in: ``variable.assign(array)``
holds the NumPy array, the backend's converted copy and the variable's old
value at once (GPT-2 small's 147 MiB embedding three times). Here:

* :func:`assign` writes a whole NumPy array: on PyTorch through a
  ``torch.from_numpy`` view (Keras' ``assign`` copies with ``np.array``
  first), on TensorFlow a block of rows at a time into the variable (a
  variable of a ``tf.distribute`` strategy gets a plain ``assign``);
* :func:`assign_blocks` fills a variable from a reader of stored rows
  (``read(start, stop)``, e.g. a local safetensors file), a block of at most
  :data:`BLOCK_BYTES` at a time, written in place: an XLA-compiled
  ``tf.Variable`` slice assignment (see :func:`block_writer` for why XLA),
  a ``copy_`` into the torch parameter, and on JAX a jitted
  ``lax.dynamic_update_slice`` whose input buffer is donated (XLA updates it
  in place). Loading then never holds more than one block besides the
  model's weights.

It also holds :class:`SafetensorsFile`, the reader of one local
``.safetensors`` file by plain reads (whole tensors or rows of one), which
:class:`bert4keras.checkpoints.SafetensorsReader` uses.
"""

import functools
import json
import os

import numpy as np

__all__ = ["BLOCK_BYTES", "SafetensorsFile", "assign", "assign_blocks", "block_writer",
           "fresh_array", "numpy_dtype"]

#: bytes of one block of rows written at a time (and the size from which a
#: stored tensor is read in blocks instead of whole)
BLOCK_BYTES = 1 << 24


def assign(weight, value, block=None):
    """``weight.assign(value)`` for a NumPy ``value`` of ``weight``'s shape and
    dtype, without a second full copy where the backend allows it (PyTorch: a
    shared view; TensorFlow: blocks of rows of <= ``block`` bytes, default
    :data:`BLOCK_BYTES`, written in place by :func:`block_writer`, since
    ``assign`` converts the whole array first)."""
    import keras

    block = BLOCK_BYTES if block is None else block
    backend = keras.backend.backend()
    if backend == "torch" and value.flags.writeable and value.dtype.kind in "fiub":
        import torch  # (not NumPy's bfloat16 from ml_dtypes, kind "V": torch lacks it)

        return weight.assign(torch.from_numpy(value))
    write = None
    if backend == "tensorflow" and value.ndim and value.nbytes > block:
        write = block_writer(weight)
    if write is None:
        return weight.assign(value)
    step = max(1, block // max(1, value[:1].nbytes))
    for start in range(0, len(value), step):
        write(start, value[start:start + step])


def block_writer(weight, axis=0):
    """``write(start, block)``, which writes the NumPy ``block`` into
    ``weight`` at offset ``start`` along ``axis`` (0, or 1 of a matrix) in
    place, or None where the variable cannot be written in part (a
    TensorFlow variable of a ``tf.distribute`` strategy or wrapped for
    autocasting, an unknown backend).

    On TensorFlow the write is an XLA-compiled slice assignment: TF's own
    (eager or graph) ``ResourceStridedSliceAssign`` switches the variable to
    copy-on-read mode for good, after which every graph-mode read copies the
    whole tensor (a 147 MiB embedding: ~24 ms per read on this machine's
    one-off measurement, benchmarks/HISTORY.md).
    """
    import keras

    backend, target = keras.backend.backend(), getattr(weight, "value", None)
    if axis not in (0, 1) or len(weight.shape) <= axis:
        return None
    if backend == "tensorflow":
        import tensorflow as tf

        if type(target).__name__ != "ResourceVariable" or tf.distribute.has_strategy():
            return None

        def write(start, block):
            _tf_update(axis)(target, tf.convert_to_tensor(block, target.dtype),
                             tf.constant(start, "int32"))
        return write
    if backend == "torch" and target is not None:
        import torch

        def write(start, block):
            stop = start + block.shape[axis]
            with torch.no_grad():
                part = target.data[start:stop] if axis == 0 else target.data[:, start:stop]
                part.copy_(torch.from_numpy(np.ascontiguousarray(block)))
        return write
    if backend == "jax" and target is not None:
        def write(start, block):
            weight.assign(_jax_update(axis)(weight.value, block, start))
        return write
    return None


@functools.lru_cache(maxsize=None)
def _tf_update(axis):
    """``variable[start:start + n] = block`` along ``axis``, compiled by XLA
    (which updates the variable's buffer and leaves its read mode alone)."""
    import tensorflow as tf

    def update(variable, block, start):
        n = block.shape[axis]
        if axis == 0:
            variable[start:start + n].assign(block)
        else:
            variable[:, start:start + n].assign(block)

    compiled = tf.function(update, jit_compile=True, autograph=False)
    compiled._omit_frequent_tracing_warning = True  # one trace per block shape
    return compiled


def _error(message):
    """A :class:`bert4keras.checkpoints.CheckpointError` (imported here:
    that module imports this one)."""
    from bert4keras.checkpoints import CheckpointError

    return CheckpointError(message)


@functools.lru_cache(maxsize=None)
def _jax_update(axis):
    """A jitted ``dynamic_update_slice`` along ``axis`` that donates its first
    argument: XLA writes the block into that buffer instead of a new one."""
    import jax

    def update(array, block, start):
        return jax.lax.dynamic_update_slice_in_dim(array, block.astype(array.dtype), start,
                                                   axis)

    return jax.jit(update, donate_argnums=0)


def assign_blocks(weight, read, rows, axis=0, transpose=False, block=None):
    """Fill ``weight`` from stored rows, a block at a time, in place.

    Args:
        weight: a ``keras.Variable``; along ``axis`` it has ``rows`` entries.
        read: ``read(start, stop)`` -> the stored rows ``[start, stop)`` as a
            NumPy array (the stored tensor's first axis).
        rows: the stored tensor's first dimension.
        axis: the axis of ``weight`` the stored rows run along: 0, or 1 when
            the stored tensor is ``weight``'s transpose (``transpose=True``,
            a matrix: Hugging Face's ``(out, in)`` Linear weights).
        transpose: transpose each block read before writing it.
        block: bytes per block (at least one row); default :data:`BLOCK_BYTES`.

    Returns:
        True when the weight was written; False when the backend cannot write
        it in part (the caller then assigns the whole tensor).
    """
    write = block_writer(weight, axis)
    block = BLOCK_BYTES if block is None else block
    if write is None:
        return False
    dtype = numpy_dtype(weight.dtype)
    row_bytes = max(1, int(np.prod(weight.shape, dtype=np.int64)) // max(1, rows)
                    * dtype.itemsize)
    step = max(1, block // row_bytes)
    for start in range(0, rows, step):
        values = read(start, min(rows, start + step))
        values = values.T if transpose else values
        write(start, values.astype(dtype, copy=False))
        del values
    return True


def numpy_dtype(name):
    """The NumPy dtype of a Keras dtype name (``bfloat16`` from ``ml_dtypes``)."""
    if str(name) == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(str(name))


#: safetensors dtype names -> NumPy dtypes (little-endian, as the format stores them)
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                       "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4",
                       "U64": "<u8", "BOOL": "?", "BF16": "bfloat16"}


def fresh_array(shape, dtype):
    """``np.empty(shape, dtype)``; from 1 MiB up in its own anonymous memory
    map, which is returned to the system the moment the array is freed.

    Through ``malloc`` a few hundred freed arrays of a few MiB each (one per
    stored tensor) raise glibc's dynamic mmap threshold and are then served
    from the heap, where freed blocks are kept by the process: loading a
    model left hundreds of MiB resident that nothing used.
    """
    import mmap

    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < 1 << 20:
        return np.empty(shape, dtype)
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buffer, dtype).reshape(shape)


class SafetensorsFile:
    """One local ``.safetensors`` file, read with plain file reads.

    The layout (huggingface/safetensors): 8 bytes, little-endian, the length
    ``n`` of a JSON header; the header maps each tensor name to ``{"dtype",
    "shape", "data_offsets": [begin, end]}`` (offsets into the bytes after the
    header). :meth:`get_tensor` reads one tensor's bytes into a new array.
    ``safe_open`` memory-maps the file instead: every page a read touches
    then stays mapped, and counted in the process' resident memory, until the
    handle is dropped -- a second copy of every loaded weight while a model
    loads.

    Raises:
        CheckpointError: naming the file when the header is unreadable or a
            tensor lies beyond the end of the file.
    """

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _error("%r is too short to be a safetensors file" % path)
            length = int.from_bytes(head, "little")
            size = os.fstat(f.fileno()).st_size
            if length > size - 8:
                raise _error("%r: safetensors header of %d bytes exceeds the file (%d bytes)"
                             % (path, length, size))
            header = json.loads(f.read(length).decode("utf-8"))
        header.pop("__metadata__", None)
        self._start = 8 + length
        self._entries = header
        for name, entry in header.items():
            if self._start + entry["data_offsets"][1] > size:
                raise _error("%r is truncated: tensor %r ends at byte %d of %d"
                             % (path, name, self._start + entry["data_offsets"][1], size))

    def keys(self):
        return list(self._entries)

    def shape(self, name):
        return tuple(self._entries[name]["shape"])

    def get_tensor(self, name):
        """Tensor ``name`` as a new NumPy array (its own memory, writable).

        Raises:
            CheckpointError: an unknown dtype, or fewer bytes than the header says.
        """
        return self.get_rows(name, None, None)

    def get_rows(self, name, start, stop):
        """Rows ``[start, stop)`` of tensor ``name`` along its first axis (the
        whole tensor when ``start`` is None) as a new array: only those bytes
        are read.

        Raises:
            CheckpointError: as :meth:`get_tensor`.
        """
        entry = self._entries[name]
        code = SAFETENSORS_DTYPES.get(entry["dtype"])
        if code is None:
            raise _error("%r: tensor %r has dtype %s, which is not read (known: %s)"
                         % (self.path, name, entry["dtype"],
                            ", ".join(sorted(SAFETENSORS_DTYPES))))
        dtype, shape = numpy_dtype(code), list(entry["shape"])
        begin, end = entry["data_offsets"]
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != end - begin:
            raise _error("%r: tensor %r has %d bytes for shape %s of %s"
                         % (self.path, name, end - begin, entry["shape"], entry["dtype"]))
        if start is not None:
            row = (end - begin) // shape[0] if shape[0] else 0
            begin, shape = begin + start * row, [stop - start] + shape[1:]
        out = fresh_array(shape, dtype)
        with open(self.path, "rb") as f:
            f.seek(self._start + begin)
            got = f.readinto(out.reshape(-1).view(np.uint8)) if out.nbytes else 0
        if got != out.nbytes:
            raise _error("%r: tensor %r is truncated (%d of %d bytes)"
                         % (self.path, name, got, out.nbytes))
        return out
