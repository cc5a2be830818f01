"""Where pretraining runs: ``tf.distribute`` strategies or ``keras.distribution``.

=================  =========  ==================================================
``--strategy``     backend    what it does
=================  =========  ==================================================
``default``        any        one device (Keras' default placement)
``mirrored``       tensorflow ``tf.distribute.MirroredStrategy`` over the local
                              GPUs, or over the logical CPU devices when there
                              is no GPU
``multiworker``    tensorflow ``tf.distribute.MultiWorkerMirroredStrategy``;
                              the cluster comes from ``TF_CONFIG``
``tpu``            tensorflow ``tf.distribute.TPUStrategy`` for
                              ``--tpu-address`` (a name, ``grpc://host:port``,
                              or empty on a TPU VM)
``data_parallel``  jax        ``keras.distribution.DataParallel`` over every
                              device ``keras.distribution.list_devices()``
                              sees
=================  =========  ==================================================

``--batch-size`` is per replica: the global batch is ``batch_size *
replicas``.  The model, the optimizer and ``compile`` must be created inside
:meth:`Placement.scope`.
"""

import contextlib

import keras

STRATEGIES = ("default", "mirrored", "multiworker", "tpu", "data_parallel")
TF_STRATEGIES = ("mirrored", "multiworker", "tpu")


class Placement:
    """The chosen strategy and what the training loop needs to know about it.

    Attributes:
        name: the ``--strategy`` value.
        strategy: the ``tf.distribute.Strategy`` (None on other backends).
        distribution: the ``keras.distribution.Distribution`` (JAX) or None.
        replicas: number of data-parallel replicas (the global batch factor).
        is_chief: whether this process writes checkpoints and logs.
        jit: whether the train step may be XLA-compiled (not for
            ``MirroredStrategy`` over logical CPU devices, where XLA cannot
            reach the variables of the other "devices").
    """

    def __init__(self, name, strategy=None, distribution=None, replicas=1, is_chief=True,
                 jit=True):
        self.name = name
        self.strategy = strategy
        self.distribution = distribution
        self.replicas = int(replicas)
        self.is_chief = bool(is_chief)
        self.jit = bool(jit)

    def scope(self):
        """Context for building and compiling the model."""
        if self.strategy is not None:
            return self.strategy.scope()
        return contextlib.nullcontext()

    def distribute(self, make_dataset, per_replica_batch):
        """The input for ``fit``: ``make_dataset()`` (global batches), split exactly.

        Without a ``tf.distribute`` strategy this is just ``make_dataset()``
        (Keras' JAX ``DataParallel`` shards each global batch over the
        devices, first rows to the first device).  With one, every input
        pipeline (worker) builds the same global batches and keeps its own
        consecutive slice, split into per-replica batches: replica ``r``
        gets rows ``[r * b, (r + 1) * b)`` of every global batch, whatever
        the number of workers.  ``tf.distribute``'s own auto-sharding and
        rebatching are not used: their graph rewrite changes the order in
        which a seeded shuffle emits records, so the data would depend on
        the strategy.  Every worker reads all the records (cheap next to the
        model; keeps resume and reproducibility exact).
        """
        if self.strategy is None:
            return make_dataset()
        import tensorflow as tf

        def input_fn(context):
            pipelines = context.num_input_pipelines
            local = context.num_replicas_in_sync // pipelines
            start = context.input_pipeline_id * local * per_replica_batch
            stop = start + local * per_replica_batch

            def own_rows(*batch):
                return tf.nest.map_structure(lambda t: t[start:stop], batch)

            dataset = make_dataset().map(own_rows).unbatch()
            dataset = dataset.batch(per_replica_batch, drop_remainder=True)
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.OFF)
            return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

        return self.strategy.distribute_datasets_from_function(input_fn)

    def optimizer_class(self, cls):
        """The optimizer class to instantiate in place of ``cls``.

        On TensorFlow: ``cls`` with :class:`DenseGradients` and, under a
        multi-replica strategy, :class:`ClipAfterAllReduce` mixed in (the
        class keeps its name, so variable names do not change).  Elsewhere
        ``cls`` itself.
        """
        if keras.backend.backend() != "tensorflow":
            return cls
        mixins = (DenseGradients,)
        if self.strategy is not None and self.replicas > 1:
            mixins = (ClipAfterAllReduce,) + mixins
        return type(cls.__name__, mixins + (cls,), {"__module__": __name__})

    def close(self):
        """Undo global state set by :func:`setup` (the Keras distribution)."""
        if self.distribution is not None:
            keras.distribution.set_distribution(None)


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    spec = resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in spec


def setup(name="default", tpu_address=None):
    """Create the :class:`Placement` for ``--strategy name``.

    Raises:
        ValueError: the strategy does not exist or does not fit the Keras
            backend (``data_parallel`` is JAX only; ``mirrored``,
            ``multiworker`` and ``tpu`` are TensorFlow only).
    """
    backend = keras.backend.backend()
    if name not in STRATEGIES:
        raise ValueError("unknown strategy %r; choose from %s" % (name, ", ".join(STRATEGIES)))
    if name in TF_STRATEGIES and backend != "tensorflow":
        raise ValueError("--strategy %s needs KERAS_BACKEND=tensorflow (the backend is %s; "
                         "use --strategy data_parallel with jax)" % (name, backend))
    if name == "data_parallel" and backend != "jax":
        raise ValueError("--strategy data_parallel needs KERAS_BACKEND=jax (the backend is %s; "
                         "use --strategy mirrored/multiworker/tpu with tensorflow)" % backend)
    if name == "default":
        return Placement(name)
    if name == "data_parallel":
        import jax

        devices = keras.distribution.list_devices()
        distribution = keras.distribution.DataParallel(devices=devices)
        keras.distribution.set_distribution(distribution)
        return Placement(name, distribution=distribution, replicas=len(devices),
                         is_chief=jax.process_index() == 0)

    import tensorflow as tf

    jit = True
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU")
        if not devices:
            devices = tf.config.list_logical_devices("CPU")
            jit = len(devices) < 2
            if not jit:
                print("MirroredStrategy over %d CPU devices: the train step is not XLA-compiled"
                      % len(devices), flush=True)
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    elif name == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    return Placement(name, strategy=strategy, replicas=strategy.num_replicas_in_sync,
                     is_chief=_is_chief(strategy), jit=jit)


class DenseGradients:
    """Optimizer mixin (TensorFlow): densify ``tf.IndexedSlices`` gradients.

    Gathers (embedding lookups) give ``IndexedSlices`` with one row per
    lookup, so a token seen twice has two rows.  Keras' element-wise ops keep
    them sparse row by row, so e.g. Adam's second moment gets ``g1**2 +
    g2**2`` instead of ``(g1 + g2)**2`` for that token, and an all-reduce of
    ``IndexedSlices`` concatenates the replicas' rows (duplicating every
    index).  Converting to a dense tensor sums duplicate rows first, which is
    the update of the other backends (JAX gradients are dense) and the same
    on any number of replicas.
    """

    def apply(self, grads, trainable_variables=None):
        import tensorflow as tf

        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                 for g in grads]
        return super().apply(grads, trainable_variables)


class ClipAfterAllReduce:
    """Optimizer mixin: ``global_clipnorm`` on the all-reduced gradient.

    In replica context with ``n > 1`` replicas, Keras' own clipping is
    skipped; instead the gradients are summed over the replicas, clipped by
    global norm, divided by ``n`` and handed on -- Keras' TensorFlow
    optimizer then sums the ``n`` identical copies back (exactly, for ``n`` a
    power of two).  This costs one more all-reduce per step; the update is
    then the one-device update at the same global batch.
    """

    def _replicas_to_reduce(self):
        import tensorflow as tf

        if not getattr(self, "global_clipnorm", None) or not tf.distribute.has_strategy():
            return 0
        if tf.distribute.in_cross_replica_context():
            return 0
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return replicas if replicas > 1 else 0

    def _clip_gradients(self, grads):
        if self._replicas_to_reduce():
            return grads  # clipped in _backend_update_step, after the all-reduce
        return super()._clip_gradients(grads)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        replicas = self._replicas_to_reduce()
        if replicas:
            import tensorflow as tf

            context = tf.distribute.get_replica_context()
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))
            clipped, _ = tf.clip_by_global_norm(summed, self.global_clipnorm)
            grads = [tf.math.scalar_mul(1.0 / replicas, g) for g in clipped]
        return super()._backend_update_step(grads, trainable_variables, learning_rate)
