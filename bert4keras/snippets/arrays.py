"""NumPy helpers for batches and weights: ``to_array``, ``sequence_padding``,
``truncate_sequences``, ``softmax`` and ``orthogonally_resize``.

Plain NumPy; names, signatures and results follow ``bert4keras.snippets`` of
bert4keras 0.11.5 (Su Jianlin), with the differences noted per docstring.
"""

import numpy as np


def to_array(*args):
    """Turn each argument into a NumPy array (``np.array``).

    The 0.11.5 idiom ``batch_token_ids = to_array(batch_token_ids)`` or
    ``x, y = to_array(x, y)``.

    Args:
        *args: array-likes (lists of equal-length lists, scalars, arrays).

    Returns:
        One ``np.ndarray`` when given one argument, otherwise a list with one
        array per argument (an empty list for no argument).
    """
    arrays = [np.array(a) for a in args]
    return arrays[0] if len(args) == 1 else arrays


def sequence_padding(
    inputs,
    length=None,
    value=0,
    seq_dims=1,
    mode="post",
    truncating="post",
    dtype=None,
):
    """Pad (and truncate) a list of sequences into one numpy array.

    Follows ``sequence_padding`` of the original bert4keras, which in turn
    generalises ``keras.utils.pad_sequences`` to several sequence axes.

    Args:
        inputs: a non-empty list of array-likes. Element ``i`` has shape
            ``[n_i1, ..., n_ik, *feature_shape]`` where ``k = seq_dims``; the
            trailing ``feature_shape`` must be the same for all elements.
        length: target length of the sequence axes. ``None`` uses the maximum
            over ``inputs`` for each axis; an ``int`` is used for every one of
            the ``seq_dims`` axes; a tuple/list gives one length per axis
            (``None`` entries again mean "the maximum").
        value: the padding value.
        seq_dims: how many leading axes of each element are sequence axes
            (``2`` pads e.g. a list of ``[n, n]`` pair matrices to
            ``[batch, L, L]``).
        mode: ``'post'`` pads at the end, ``'pre'`` at the start.
        truncating: ``'post'`` drops the tail of a too-long sequence (what the
            original toolkit always did), ``'pre'`` drops the head.
        dtype: dtype of the result; ``None`` keeps numpy's inference over
            the inputs (``int64`` for Python ints).

    Returns:
        ``np.ndarray`` of shape ``[len(inputs), L_1, ..., L_k, *feature_shape]``.

    Raises:
        ValueError: empty ``inputs``, an unknown ``mode``/``truncating``,
            a ``length`` tuple of the wrong size, or elements with fewer than
            ``seq_dims`` axes / mismatching feature shapes.
    """
    if mode not in ("post", "pre"):
        raise ValueError(f"mode must be 'post' or 'pre', got {mode!r}")
    if truncating not in ("post", "pre"):
        raise ValueError(f"truncating must be 'post' or 'pre', got {truncating!r}")
    if len(inputs) == 0:
        raise ValueError("sequence_padding needs at least one sequence")
    arrays = [np.asarray(x) for x in inputs]
    for x in arrays:
        if x.ndim < seq_dims:
            raise ValueError(
                f"an element of shape {x.shape} has fewer than seq_dims={seq_dims} axes"
            )
    feature_shapes = {x.shape[seq_dims:] for x in arrays if x.size > 0}
    if len(feature_shapes) > 1:
        raise ValueError(f"elements have different feature shapes: {sorted(feature_shapes)}")
    feature_shape = feature_shapes.pop() if feature_shapes else arrays[0].shape[seq_dims:]

    if length is None or isinstance(length, (int, np.integer)):
        length = [length] * seq_dims
    length = list(length)
    if len(length) != seq_dims:
        raise ValueError(f"length has {len(length)} entries but seq_dims={seq_dims}")
    for i in range(seq_dims):
        if length[i] is None:
            length[i] = max(x.shape[i] for x in arrays)

    if dtype is None:
        non_empty = [x for x in arrays if x.size > 0]
        dtype = np.result_type(*non_empty) if non_empty else np.asarray(value).dtype
    out = np.full([len(arrays)] + length + list(feature_shape), value, dtype=dtype)
    for n, x in enumerate(arrays):
        if x.size == 0:
            continue
        src, dst = [], []
        for i in range(seq_dims):
            keep = min(x.shape[i], length[i])
            src.append(slice(0, keep) if truncating == "post" else slice(x.shape[i] - keep, None))
            dst.append(slice(0, keep) if mode == "post" else slice(length[i] - keep, None))
        out[(n, *dst)] = x[tuple(src)]
    return out


def truncate_sequences(maxlen, indices, *sequences):
    """Shorten several sequences in place until their total length <= maxlen.

    Repeatedly removes one element from the currently longest sequence (the
    first one on ties), at position ``indices`` -- e.g. ``-1`` drops the last
    element, ``-2`` drops the one before the last so a trailing ``[SEP]``
    survives.  Follows ``truncate_sequences`` of the original bert4keras, but
    keeps empty sequences so the number of returned sequences always equals
    the number passed in.

    Args:
        maxlen: the maximum total length (``int >= 0``).
        indices: an ``int`` used for every sequence, or one ``int`` per
            sequence.
        *sequences: Python lists (modified in place); other sequence types
            are converted to lists first.

    Returns:
        A list with the (truncated) sequences, in the input order.

    Raises:
        ValueError: ``maxlen < 0`` or ``indices`` of the wrong length.
    """
    if maxlen < 0:
        raise ValueError(f"maxlen must be >= 0, got {maxlen}")
    sequences = [s if isinstance(s, list) else list(s) for s in sequences]
    if isinstance(indices, (list, tuple)):
        if len(indices) != len(sequences):
            raise ValueError(f"{len(indices)} indices for {len(sequences)} sequences")
    else:
        indices = [indices] * len(sequences)
    lengths = [len(s) for s in sequences]
    total = sum(lengths)
    while total > maxlen:
        i = int(np.argmax(lengths))
        sequences[i].pop(indices[i])
        lengths[i] -= 1
        total -= 1
    return sequences


def softmax(x, axis=-1):
    """Numerically stable softmax of a numpy array along ``axis``.

    Args:
        x: array-like of any shape.
        axis: the axis to normalise.

    Returns:
        ``np.ndarray`` of the same shape (float), summing to 1 along ``axis``.
    """
    x = np.asarray(x, dtype=np.result_type(np.asarray(x).dtype, np.float32))
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def orthogonally_resize(a, new_shape, window=2):
    """Resize a weight array to ``new_shape`` by repeating and cutting blocks.

    Each axis whose size changes from ``d1`` to ``d2`` is handled on its own:
    when growing, the axis is cut into blocks of ``window`` consecutive
    entries and every block is repeated ``k = ceil(d2 / d1)`` times in place
    (``[b1, b2] -> [b1, b1, b2, b2]`` for ``k = 2``); then the axis is cut to
    its first ``d2`` entries (which is all a shrinking axis gets).  Finally the
    array is rescaled to the Frobenius norm of ``a``.  This is how bert4keras
    0.11.5 grows a checkpoint's weights to a larger model
    (``autoresize_weights``): ``window=2`` keeps the pairs that rotary
    position encodings rotate together.

    What it preserves: growing only the rows of a matrix ``a`` by a whole
    factor ``k`` duplicates rows, so ``b.T @ b = c * a.T @ a``; orthogonal
    columns stay orthogonal (likewise rows when only the columns grow).
    Keeping a subset of the rows of a matrix with orthonormal rows keeps them
    orthonormal up to the common scale.  The Frobenius norm is always kept.

    Args:
        a: array of any rank.
        new_shape: target shape, same rank as ``a``.
        window: block size on the growing axes.

    Returns:
        ``np.ndarray`` (float) of shape ``new_shape`` with the norm of ``a``.

    Raises:
        ValueError: ``new_shape`` has another rank than ``a``, or a growing
            axis has a size that is not a multiple of ``window``.
    """
    a = np.asarray(a)
    new_shape = tuple(int(n) for n in new_shape)
    if a.ndim != len(new_shape):
        raise ValueError(f"orthogonally_resize: array of shape {a.shape} cannot become "
                         f"{new_shape} (different rank)")
    norm = np.linalg.norm(a)
    b = a
    for axis, (d1, d2) in enumerate(zip(a.shape, new_shape)):
        if d1 == d2:
            continue
        k = -(-d2 // d1)  # ceil
        positions = np.arange(d2)
        if k > 1:
            if d1 % window:
                raise ValueError(f"orthogonally_resize: axis {axis} of shape {a.shape} has "
                                 f"size {d1}, not a multiple of window={window}")
            # position r of the grown axis shows entry (block, offset) of the old one
            positions = positions // (window * k) * window + positions % window
        b = np.take(b, positions, axis=axis)
    new_norm = np.linalg.norm(b)
    return b / new_norm * norm if new_norm > 0 else b.astype(np.result_type(b, float))
