"""Small data helpers: padding, truncation, text splitting, batch generators
and a process-pool map.

Everything here is plain numpy / Python.  TensorFlow is imported only inside
:meth:`DataGenerator.to_dataset`, the one place where a ``tf.data`` pipeline
is the point.

The functions follow the helpers of the original bert4keras
(``bert4keras/snippets.py`` by Su Jianlin); differences are noted in each
docstring.
"""

import collections
import multiprocessing
import queue

import numpy as np

__all__ = [
    "sequence_padding",
    "truncate_sequences",
    "text_segmentate",
    "DataGenerator",
    "parallel_apply_generator",
    "parallel_apply",
    "softmax",
    "ViterbiDecoder",
]


# ---------------------------------------------------------------------------
# Padding and truncation
# ---------------------------------------------------------------------------


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


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Split ``text`` into pieces no longer than ``maxlen`` characters.

    The text is split on ``seps[0]`` first; neighbouring pieces are merged
    greedily while they fit in ``maxlen``; a piece that is still too long is
    split recursively on ``seps[1:]``; a piece with no separator left is cut
    into ``maxlen``-character chunks.  Separators stay attached to the end of
    the piece they close, so with ``strips=None``
    ``''.join(text_segmentate(text, ...)) == text``.

    Follows ``text_segmentate`` of the original bert4keras, with two
    differences: whitespace is only stripped when asked (``strips``), and the
    ``maxlen`` bound is always met (the original could return longer pieces
    when it ran out of separators).

    Args:
        text: the string to split.
        maxlen: maximum piece length in characters (``int >= 1``).
        seps: separators in order of preference; a string is read as a
            sequence of one-character separators (``'\\n。！？'``), a list may
            hold longer ones.
        strips: if given, characters stripped from both ends of every piece
            (``str.strip(strips)``); pieces that become empty are dropped.

    Returns:
        ``list[str]``, every element with ``len <= maxlen``.

    Raises:
        ValueError: ``maxlen < 1``.
    """
    if maxlen < 1:
        raise ValueError(f"maxlen must be >= 1, got {maxlen}")
    pieces = _segmentate(text, maxlen, list(seps))
    if strips is not None:
        pieces = [p.strip(strips) for p in pieces]
    return [p for p in pieces if p]


def _segmentate(text, maxlen, seps):
    if len(text) <= maxlen:
        return [text]
    if not seps:
        return [text[i : i + maxlen] for i in range(0, len(text), maxlen)]
    sep, rest = seps[0], seps[1:]
    parts = text.split(sep)
    # Re-attach the separator to the piece it ends.
    parts = [p + sep for p in parts[:-1]] + [parts[-1]]
    out, current = [], ""
    for part in parts:
        if len(current) + len(part) <= maxlen:
            current += part
            continue
        if current:
            out.append(current)
        if len(part) <= maxlen:
            current = part
        else:
            out.extend(_segmentate(part, maxlen, rest))
            current = ""
    if current:
        out.append(current)
    return out


# ---------------------------------------------------------------------------
# Batch generator
# ---------------------------------------------------------------------------


class DataGenerator:
    """Base class for Python batch generators fed to ``keras.Model.fit``.

    Subclasses override :meth:`__iter__` to turn the items yielded by
    :meth:`sample` into batches (usually with :func:`sequence_padding`).
    The design follows ``DataGenerator`` of the original bert4keras.

    Example::

        class Gen(DataGenerator):
            def __iter__(self, random=False):
                batch_x, batch_y = [], []
                for is_end, (text, label) in self.sample(random):
                    batch_x.append(tokenizer.encode(text)[0])
                    batch_y.append([label])
                    if len(batch_x) == self.batch_size or is_end:
                        yield sequence_padding(batch_x), np.array(batch_y)
                        batch_x, batch_y = [], []

        gen = Gen(train_data, batch_size=32)
        model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=3)

    Args:
        data: a sequence (with ``len`` and indexing) or any iterable.  Plain
            iterables are iterated once per epoch, so they must be
            re-iterable (a list, or an object whose ``__iter__`` restarts).
        batch_size: number of items per batch.
        buffer_size: size of the shuffle buffer used for iterables without
            ``len``; default ``1000 * batch_size``.

    Raises:
        ValueError: ``batch_size < 1``.
    """

    def __init__(self, data, batch_size=32, buffer_size=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        if hasattr(data, "__len__"):
            self.steps = -(-len(data) // batch_size)
        else:
            self.steps = None
        self.buffer_size = buffer_size or batch_size * 1000

    def __len__(self):
        """Steps (batches) per epoch: ``ceil(len(data) / batch_size)``.

        Raises:
            TypeError: ``data`` has no length.
        """
        if self.steps is None:
            raise TypeError("DataGenerator over an iterable without len() has no length")
        return self.steps

    def sample(self, random=False):
        """Yield ``(is_end, item)`` pairs over one epoch of ``data``.

        ``is_end`` is ``True`` only for the last item, so ``__iter__`` can
        flush the final short batch.  With ``random=True`` a sized ``data``
        is visited in a ``np.random.permutation`` order; an unsized one goes
        through a shuffle buffer of ``buffer_size`` items.  Uses the global
        ``np.random`` state (seed it for reproducibility).
        """
        if not random:
            items = iter(self.data)
        elif self.steps is not None:
            items = (self.data[i] for i in np.random.permutation(len(self.data)))
        else:
            items = self._buffer_shuffle()
        try:
            current = next(items)
        except StopIteration:
            return
        for nxt in items:
            yield False, current
            current = nxt
        yield True, current

    def _buffer_shuffle(self):
        buffer = []
        for item in self.data:
            if len(buffer) < self.buffer_size:
                buffer.append(item)
                continue
            i = np.random.randint(len(buffer))
            buffer[i], item = item, buffer[i]
            yield item
        while buffer:
            i = np.random.randint(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()

    def __iter__(self, random=False):
        """Yield the batches of one epoch.  Subclasses must override this."""
        raise NotImplementedError("subclass DataGenerator and override __iter__")

    def epochs(self, random=True):
        """Endless Python generator of batches, epoch after epoch.

        Lists of arrays in a batch (``[token_ids, segment_ids]``) are turned
        into tuples, because Keras 3 reads only tuples and dicts as structure.

        Raises:
            ValueError: an epoch produced no batch at all (would loop forever).
        """
        while True:
            produced = False
            for batch in self.__iter__(random):
                produced = True
                yield _tuple_structure(batch)
            if not produced:
                raise ValueError("DataGenerator.__iter__ produced no batch in an epoch")

    def forfit(self, random=True):
        """Endless batches for ``fit(gen.forfit(), steps_per_epoch=len(gen))``.

        On the TensorFlow backend this is a ``tf.data.Dataset`` whose axes are
        of unknown size except those of size 1 in the first batch (labels of
        shape ``(batch, 1)`` keep their static 1, which Keras losses check),
        with dtypes taken from the first batch.  A
        plain Python generator is not enough there: Keras fixes each axis to
        the size it has in the first two batches, so a later batch padded to
        another length (``sequence_padding`` pads to the longest item of
        each batch) stops training with "Generator yielded an element of
        shape ...".  On JAX and PyTorch it is the generator of
        :meth:`epochs` (those backends read batches of any shape).  Keras'
        warning that ``shuffle=True`` is ignored for a dataset is expected:
        with ``random=True`` the generator shuffles each epoch itself.

        Returns:
            ``tf.data.Dataset`` (TensorFlow) or an endless generator.

        Raises:
            ValueError: an epoch produced no batch at all (raised here, when
                the first batch is drawn).
        """
        import keras

        batches = self.epochs(random)
        first = next(batches)
        if keras.backend.backend() != "tensorflow":
            return _resume(first, batches)  # Keras wants a real generator
        import tensorflow as tf

        first = _as_arrays(first)
        signature = _map_leaves(
            lambda a: tf.TensorSpec(
                [None] + [1 if n == 1 else None for n in a.shape[1:]],
                tf.string if a.dtype.kind in "US" else a.dtype,
            ),
            first,
        )
        pending = [_resume(first, batches)]

        def generator():
            # The first iterator resumes the peeked one; a re-iteration of
            # the dataset starts a fresh endless pass.
            source = pending.pop() if pending else self.epochs(random)
            for batch in source:
                yield _as_arrays(batch)

        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def fortest(self, random=False):
        """Endless inputs only (``batch[0]``), for ``predict(..., steps=len(gen))``.

        Each element is the 1-tuple ``(inputs,)`` so that Keras does not read
        a two-input model's ``(token_ids, segment_ids)`` as ``(x, y)``.
        Same types per backend as :meth:`forfit`.
        """
        batches = self.forfit(random)
        if hasattr(batches, "map"):
            return batches.map(lambda *parts: (parts[0],))
        return ((batch[0],) for batch in batches)

    def to_dataset(
        self, types, shapes, names=None, padded_batch=False, padding_values=None, random=True
    ):
        """Wrap :meth:`epochs` in an endless ``tf.data.Dataset`` of given types and shapes.

        Use it as ``model.fit(gen.to_dataset(...), steps_per_epoch=len(gen))``.
        Follows ``to_dataset`` of the original bert4keras, written with
        ``output_signature`` for current TensorFlow.

        Args:
            types: dtypes with the structure of one yielded element, e.g.
                ``(('int32', 'int32'), 'int32')`` for
                ``([token_ids, segment_ids], labels)``.
            shapes: shapes with the same structure.  With
                ``padded_batch=False`` the generator yields whole batches and
                the shapes include the batch axis (``(None, None)``); with
                ``padded_batch=True`` it yields single examples, the shapes
                exclude the batch axis (``(None,)``) and are the
                ``padded_shapes`` of ``Dataset.padded_batch``.
            names: optional names that turn tuples into dicts (keras maps dict
                keys to the model's input/output names).  A string wraps the
                whole element as ``{name: element}``; a sequence of strings
                zips with the element's parts; a sequence whose entries are
                ``None`` / a string / a sequence of strings applies those rules
                part by part, e.g. ``(('Input-Token', 'Input-Segment'), None)``
                turns ``([tokens, segments], labels)`` into
                ``({'Input-Token': tokens, 'Input-Segment': segments}, labels)``.
            padded_batch: if ``True``, :meth:`__iter__` yields single examples
                and the dataset pads them into batches of ``batch_size``.
            padding_values: passed to ``Dataset.padded_batch`` (default 0).
            random: shuffle each epoch (passed to :meth:`epochs`).

        Returns:
            ``tf.data.Dataset``, endless; elements are batches.

        Raises:
            ValueError: ``names`` does not match the structure of ``types``.
        """
        import tensorflow as tf

        wrap = _names_wrapper(names)
        types, shapes = wrap(types), wrap(shapes)
        signature = _tensor_specs(tf, types, shapes)

        def generator():
            for element in self.epochs(random):
                yield _conform(types, wrap(element))

        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        if padded_batch:
            padded_shapes = tf.nest.map_structure(lambda spec: spec.shape, signature)
            dataset = dataset.padded_batch(
                self.batch_size, padded_shapes=padded_shapes, padding_values=padding_values
            )
        return dataset.prefetch(tf.data.AUTOTUNE)


def _is_structural(x):
    """Is ``x`` an array, a dict, or a list/tuple made only of such things?"""
    if hasattr(x, "shape") or isinstance(x, dict):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(map(_is_structural, x))


def _tuple_structure(x):
    """Turn structural lists (lists of arrays) into tuples; data lists stay."""
    if isinstance(x, dict):
        return {k: _tuple_structure(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and _is_structural(x):
        return tuple(_tuple_structure(e) for e in x)
    return x


def _resume(first, rest):
    """Generator that yields ``first`` and then the rest of ``rest``."""
    yield first
    yield from rest


def _map_leaves(fn, x):
    """Apply ``fn`` to every leaf of a structure of tuples and dicts."""
    if isinstance(x, dict):
        return {k: _map_leaves(fn, v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_map_leaves(fn, e) for e in x)
    return fn(x)


def _as_arrays(batch):
    """Every leaf of a batch (lists of labels included) as a NumPy array."""
    return _map_leaves(np.asarray, batch)


def _tensor_specs(tf, types, shapes):
    """``tf.TensorSpec`` structure; ``types`` decides where the leaves are."""
    if isinstance(types, dict):
        return {k: _tensor_specs(tf, types[k], shapes[k]) for k in types}
    if isinstance(types, (list, tuple)):
        if len(types) != len(shapes):
            raise ValueError(f"types {types} and shapes {shapes} differ in structure")
        return tuple(_tensor_specs(tf, t, s) for t, s in zip(types, shapes))
    return tf.TensorSpec(shape=shapes, dtype=types)


def _conform(types, element):
    """Give ``element`` the exact container types of ``types`` (lists -> tuples)."""
    if isinstance(types, dict):
        return {k: _conform(types[k], element[k]) for k in types}
    if isinstance(types, (list, tuple)):
        return tuple(_conform(t, e) for t, e in zip(types, element))
    return element


def _is_names(x):
    return isinstance(x, (list, tuple)) and all(isinstance(n, str) for n in x)


def _names_wrapper(names):
    """Build ``wrap(element)`` that applies the ``names`` rules of ``to_dataset``."""

    def zip_dict(keys, values):
        if len(keys) != len(values):
            raise ValueError(f"names {tuple(keys)} do not match {len(values)} values")
        return dict(zip(keys, values))

    if names is None:
        return lambda element: element
    if isinstance(names, str):
        return lambda element: {names: element}
    if _is_names(names):
        return lambda element: zip_dict(names, element)

    def part(name, value):
        if name is None:
            return value
        if isinstance(name, str):
            return {name: value}
        return zip_dict(name, value)

    def wrap(element):
        if len(element) != len(names):
            raise ValueError(f"names has {len(names)} parts, the element has {len(element)}")
        return tuple(part(n, v) for n, v in zip(names, element))

    return wrap


# ---------------------------------------------------------------------------
# Parallel map
# ---------------------------------------------------------------------------

_WORKER_FUNC = None


def _worker_init(func, seed_queue):
    """Pool initializer: remember ``func`` and (re)seed numpy's global RNG."""
    global _WORKER_FUNC
    _WORKER_FUNC = func
    if seed_queue is not None:
        try:
            seed = seed_queue.get(timeout=10)
        except queue.Empty:
            seed = None
        np.random.seed(seed)


def _worker_call(item):
    return _WORKER_FUNC(item)


def parallel_apply_generator(
    func,
    iterable,
    workers,
    max_queue_size,
    dummy=False,
    random_seeds=True,
    unordered=True,
):
    """Apply ``func`` to ``iterable`` in a pool; yield ``(index, result)`` pairs.

    At most ``max_queue_size`` items are in flight (submitted but not yet
    yielded), so a huge or endless ``iterable`` is consumed lazily.  Follows
    ``parallel_apply_generator`` of the original bert4keras; unlike it, order
    is kept here when ``unordered=False`` without collecting everything first.

    ``func`` reaches the workers through the pool initializer, so with the
    ``fork`` start method (Linux default) closures and lambdas work; with
    ``spawn``/``forkserver`` ``func`` must be picklable.  Items and results are
    always pickled.

    Args:
        func: ``func(item) -> result``.
        iterable: the items.
        workers: number of worker processes (threads when ``dummy``).
        max_queue_size: bound on the items in flight (``>= 1``).
        dummy: use threads (``multiprocessing.dummy``) instead of processes.
        random_seeds: ``True`` reseeds each worker process's ``np.random``
            from fresh entropy (forked workers would otherwise share one
            state); a list gives one seed per worker; ``False``/``None`` leaves
            the state alone.  Ignored when ``dummy``.
        unordered: if ``False`` results come in input order; if ``True`` in
            completion order.

    Yields:
        ``(index, result)`` with ``index`` the position of the item.

    Raises:
        ValueError: ``workers < 1``, ``max_queue_size < 1`` or a
            ``random_seeds`` list whose length is not ``workers``.
        Exception: whatever ``func`` raised, re-raised in the caller.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_queue_size < 1:
        raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
    if dummy:
        from multiprocessing.dummy import Pool

        pool = Pool(workers, _worker_init, (func, None))
    else:
        seed_queue = None
        if random_seeds is True:
            random_seeds = [None] * workers
        if random_seeds:
            if len(random_seeds) != workers:
                raise ValueError(f"{len(random_seeds)} random_seeds for {workers} workers")
            seed_queue = multiprocessing.Queue()
            for seed in random_seeds:
                seed_queue.put(seed)
        pool = multiprocessing.Pool(workers, _worker_init, (func, seed_queue))

    done = queue.Queue()  # filled by the pool's result-handler thread
    arrived = collections.deque()  # unordered mode: results ready to yield
    pending = {}  # ordered mode: results waiting for their turn
    next_index = 0  # ordered mode: the index to yield next

    def store(block):
        """Move one finished task from ``done`` to arrived/pending."""
        try:
            index, ok, value = done.get(block=block)
        except queue.Empty:
            return False
        if not ok:
            raise value
        if unordered:
            arrived.append((index, value))
        else:
            pending[index] = value
        return True

    def ready():
        nonlocal next_index
        out = []
        if unordered:
            while arrived:
                out.append(arrived.popleft())
        else:
            while next_index in pending:
                out.append((next_index, pending.pop(next_index)))
                next_index += 1
        return out

    def submit(index, item):
        pool.apply_async(
            _worker_call,
            (item,),
            callback=lambda result: done.put((index, True, result)),
            error_callback=lambda error: done.put((index, False, error)),
        )

    in_flight = 0  # submitted but not yet yielded
    try:
        for index, item in enumerate(iterable):
            submit(index, item)
            in_flight += 1
            while store(block=False):
                pass
            while True:
                for result in ready():
                    in_flight -= 1
                    yield result
                if in_flight < max_queue_size:
                    break
                store(block=True)
        while in_flight:
            store(block=True)
            for result in ready():
                in_flight -= 1
                yield result
    finally:
        pool.terminate()
        pool.join()


def parallel_apply(
    func,
    iterable,
    workers,
    max_queue_size,
    callback=None,
    dummy=False,
    random_seeds=True,
    unordered=True,
):
    """Map ``func`` over ``iterable`` with a process (or thread) pool.

    Same arguments as :func:`parallel_apply_generator` (which documents
    ``func`` picklability, seeding and errors).  Follows ``parallel_apply``
    of the original bert4keras.

    Args:
        callback: if given, ``callback(result)`` is called for every result
            (in completion order, or input order when ``unordered=False``)
            and nothing is collected.
        unordered: ``False`` returns the results in input order.

    Returns:
        ``list`` of results, or ``None`` when ``callback`` is given.
    """
    generator = parallel_apply_generator(
        func, iterable, workers, max_queue_size, dummy, random_seeds, unordered
    )
    if callback is None:
        return [result for _, result in generator]
    for _, result in generator:
        callback(result)
    return None


# ---------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


class ViterbiDecoder:
    """Best label path of a linear-chain CRF (Viterbi 1967), in numpy.

    The score of a path ``y`` is ``sum_t nodes[t, y_t] + sum_{t>0}
    trans[y_{t-1}, y_t]`` (plus ``start_scores[y_0]`` and
    ``end_scores[y_last]`` when given); :meth:`decode` returns the path with
    the highest score.

    Args:
        trans: ``(num_labels, num_labels)`` transition scores, ``trans[i, j]``
            for label ``i`` followed by ``j`` (e.g. ``ConditionalRandomField.trans``
            as numpy: ``keras.ops.convert_to_numpy(crf.trans)``).
        starts: labels allowed at the first position (None: all).
        ends: labels allowed at the last position (None: all).
        start_scores: optional ``(num_labels,)`` added at the first position
            (CRFs trained with explicit start weights, e.g. Paddle's).
        end_scores: optional ``(num_labels,)`` added at the last position.

    Example (BERT + CRF with ``[CLS]``/``[SEP]`` tagged 0)::

        decoder = ViterbiDecoder(keras.ops.convert_to_numpy(crf.trans), starts=[0], ends=[0])
        labels = decoder.decode(model.predict(x)[0][:length])
    """

    def __init__(self, trans, starts=None, ends=None, start_scores=None, end_scores=None):
        self.trans = np.asarray(trans, dtype="float64")
        if self.trans.ndim != 2 or self.trans.shape[0] != self.trans.shape[1]:
            raise ValueError(f"trans must be square (num_labels, num_labels), got {self.trans.shape}")
        self.num_labels = self.trans.shape[0]
        self.first = self._edge_scores(starts, start_scores, "start")
        self.last = self._edge_scores(ends, end_scores, "end")

    def _edge_scores(self, allowed, scores, what):
        edge = np.zeros(self.num_labels)
        if scores is not None:
            scores = np.asarray(scores, dtype="float64")
            if scores.shape != (self.num_labels,):
                raise ValueError(f"{what}_scores must have shape ({self.num_labels},), "
                                 f"got {scores.shape}")
            edge = edge + scores
        if allowed is not None:
            banned = np.ones(self.num_labels, dtype=bool)
            banned[list(allowed)] = False
            edge[banned] = -np.inf
        return edge

    def decode(self, nodes):
        """The best path for the emission scores ``nodes``.

        Args:
            nodes: ``(seq_len, num_labels)`` scores of one sequence (without
                padding).

        Returns:
            ``np.ndarray`` of ``seq_len`` int label ids (empty for an empty
            sequence).
        """
        nodes = np.asarray(nodes, dtype="float64")
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError(f"nodes must have shape (seq_len, {self.num_labels}), "
                             f"got {nodes.shape}")
        seq_len = len(nodes)
        if seq_len == 0:
            return np.zeros(0, dtype=int)
        score = nodes[0] + self.first
        if seq_len == 1:
            score = score + self.last
        backpointers = np.zeros((seq_len, self.num_labels), dtype=int)
        for t in range(1, seq_len):
            candidates = score[:, None] + self.trans  # previous label x current label
            backpointers[t] = candidates.argmax(axis=0)
            score = candidates.max(axis=0) + nodes[t]
            if t == seq_len - 1:
                score = score + self.last
        path = np.zeros(seq_len, dtype=int)
        path[-1] = int(score.argmax())
        for t in range(seq_len - 1, 0, -1):
            path[t - 1] = backpointers[t, path[t]]
        return path


def __getattr__(name):
    # the original toolkit's `from bert4keras.snippets import AutoRegressiveDecoder`
    # (it lives in bert4keras.generation, which imports keras)
    if name == "AutoRegressiveDecoder":
        from bert4keras.generation import AutoRegressiveDecoder

        return AutoRegressiveDecoder
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
