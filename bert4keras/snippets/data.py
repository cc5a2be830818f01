"""``DataGenerator``: the batch-generator base class of bert4keras scripts.

Subclasses write ``__iter__(random)``; :meth:`DataGenerator.forfit`,
:meth:`DataGenerator.fortest` and :meth:`DataGenerator.to_dataset` feed the
batches to ``keras.Model.fit`` / ``predict``.  NumPy at import; Keras and
TensorFlow only inside the methods that need them.
"""

import numpy as np


class DataGenerator:
    """Base class for Python batch generators fed to ``keras.Model.fit``.

    Subclasses override :meth:`__iter__` to turn the items yielded by
    :meth:`sample` into batches (usually with :func:`sequence_padding`).
    The design, attributes (``data``, ``batch_size``, ``steps``,
    ``buffer_size``) and methods follow ``DataGenerator`` of bert4keras
    0.11.5.  Differences: on the TensorFlow backend :meth:`forfit` returns a
    ``tf.data.Dataset`` (iterate it, or ``iter()`` it before ``next()``)
    instead of a Python generator, so that batches of changing lengths fit;
    :meth:`fortest` yields ``(inputs,)`` 1-tuples instead of ``inputs``;
    an empty ``data`` gives no item instead of an error.

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
        with dtypes taken from the first batch.  A batch ``x, None`` (the
        targets of recipes that train through a ``Loss`` layer) is yielded
        as ``(x,)``, inputs only.  A
        plain Python generator is not enough there: Keras fixes each axis to
        the size it has in the first two batches, so a later batch padded to
        another length (``sequence_padding`` pads to the longest item of
        each batch) stops training with "Generator yielded an element of
        shape ...".  On JAX and PyTorch it is the generator of
        :meth:`epochs` (those backends read batches of any shape).  Pass
        ``shuffle=False`` to ``fit`` (Keras cannot shuffle a dataset and
        warns otherwise): with ``random=True`` the generator shuffles each
        epoch itself.

        Returns:
            ``tf.data.Dataset`` (TensorFlow) or an endless generator.

        Raises:
            ValueError: an epoch produced no batch at all (raised here, when
                the first batch is drawn).
        """
        import keras

        batches = (_drop_none_targets(b) for b in self.epochs(random))
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
                yield _as_arrays(_drop_none_targets(batch))

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
                In this part-by-part form a target part (any part after the
                first) named by a single name, ``'Probas'`` or
                ``('Probas',)``, is yielded bare, not as ``{'Probas': y}``:
                Keras 3 maps a dict of targets onto the outputs of
                multi-output models only, and fails on a single-output
                model ("Expected float32, but got Probas").
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


def build_for_fit(model, data):
    """Create a compiled model's optimizer and metric variables before ``fit``.

    Keras 3 on TensorFlow, outside a ``tf.distribute`` strategy, creates the
    optimizer's slots (Adam's moments, ...) and the compiled metrics'
    counters during the first trace of the training step.  A ``tf.function``
    that creates variables in its first trace is traced a second time
    without them (tensorflow/tensorflow#48851), so the first ``fit`` pays
    for two traces of forward, backward and update.  This builds those
    variables first, from the shapes of ``data`` (what Keras itself does
    under a strategy, and always on JAX and PyTorch): one trace, the same
    trained weights.

    Usage: ``build_for_fit(model, dataset)`` between ``model.compile(...)``
    and ``model.fit(dataset, ...)``.  A no-op on JAX and PyTorch, for a
    model made under a strategy (Keras builds it first there), and for what
    is built already.

    Args:
        model: a compiled ``keras.Model``.
        data: what ``fit`` will read: a ``tf.data.Dataset`` (only its
            ``element_spec`` is read: no batch is drawn), or one batch
            ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)`` of arrays,
            as a dataset would yield it (a bare list ``[a, b]`` reads as
            ``(x, y)``, as in ``fit``).

    Returns:
        ``model``.

    Raises:
        ValueError: ``model`` has not been compiled.
        TypeError: ``data`` is a Python iterator (it would have to be
            consumed): pass its first batch, or a ``tf.data.Dataset``.
    """
    import keras

    if getattr(model, "optimizer", None) is None:
        raise ValueError("build_for_fit: compile the model before building it for fit")
    if keras.backend.backend() != "tensorflow" or getattr(model, "_distribute_strategy", None):
        return model
    batch = getattr(data, "element_spec", None)
    if batch is None:
        if hasattr(data, "__next__"):
            raise TypeError("build_for_fit reads shapes without drawing a batch: give it "
                            "one batch or a tf.data.Dataset, not a %s" % type(data).__name__)
        batch = _as_arrays(_drop_none_targets(_tuple_structure(data)))
    # What Keras's own fit runs first under a strategy (and on JAX/PyTorch).
    model._symbolic_build(data_batch=batch)
    return model


def _is_structural(x):
    """Is ``x`` an array, a dict, or a list/tuple made only of such things?

    ``None`` counts inside a list/tuple that also holds structure, so that
    ``([token_ids, segment_ids], None)`` (the batches of ``Loss``-layer
    recipes) is structure, while a list of ``None`` only is not.
    """
    if hasattr(x, "shape") or isinstance(x, dict):
        return True
    return (isinstance(x, (list, tuple)) and any(e is not None for e in x)
            and all(e is None or _is_structural(e) for e in x))


def _drop_none_targets(batch):
    """``(x, None)`` -> ``(x,)``: trailing ``None`` parts of a batch tuple removed.

    Keras reads a 1-tuple as inputs only, and ``tf.data`` has no ``None``
    element; recipes that train through a ``Loss`` layer yield ``x, None``.
    """
    if isinstance(batch, tuple) and len(batch) > 1 and batch[-1] is None:
        parts = list(batch)
        while len(parts) > 1 and parts[-1] is None:
            parts.pop()
        return tuple(parts)
    return batch


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

    def part(name, value, is_target):
        if name is None:
            return value
        named = {name: value} if isinstance(name, str) else zip_dict(name, value)
        if is_target and len(named) == 1:
            # Keras 3 matches a dict of targets to the outputs of a model with
            # several outputs only; a single-output model (tf.keras 2 read
            # {'Probas': y} there) takes the bare value.
            return next(iter(named.values()))
        return named

    def wrap(element):
        if len(element) != len(names):
            raise ValueError(f"names has {len(names)} parts, the element has {len(element)}")
        return tuple(part(n, v, i > 0) for i, (n, v) in enumerate(zip(names, element)))

    return wrap
