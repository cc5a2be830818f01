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

Running ``--strategy multiworker`` on a cluster
-----------------------------------------------
Start the *same* command on every machine (same flags, same ``--out-dir``,
same ``--records``); only the ``TF_CONFIG`` environment variable differs, in
its ``task.index``::

    # on host1 (index 0: the chief) and host2 (index 1)
    export TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                       "task": {"type": "worker", "index": 0}}'
    python -m pretraining.pretraining ... --strategy multiworker \\
        --batch-size 32 --out-dir /shared/runs/mlm

* Each worker uses all its GPUs (or its CPU), so replicas = workers x local
  devices and the global batch is ``--batch-size x replicas``.  All workers
  need the same number of devices.  On CPU workers the train step is not
  XLA-compiled (XLA has no CPU collectives).  Every worker
  reads all the records and keeps its own rows of each global batch (see
  :meth:`Placement.distribute`), so ``--records`` must be readable on every
  worker, and the run sees the same global batches as a one-device run.
* The chief -- the ``"chief"`` task if the cluster has one, else worker 0 --
  is the only process that writes: checkpoints (``--out-dir/checkpoints``),
  ``history.csv``, TensorBoard logs and the final ``bert_model.ckpt``.  The
  other workers write nothing, anywhere.
* To resume, every worker reads the newest checkpoint in
  ``--out-dir/checkpoints`` itself, so ``--out-dir`` must be one shared
  directory every worker sees: NFS, a cluster file system, or a ``gs://``
  URL (``scheme://`` paths go through ``tf.io.gfile``; on object stores a
  checkpoint is published by a pointer file, see :mod:`pretraining.resume`).
  ``--records`` may be a ``gs://`` URL too, as TPUs require.  At start the
  workers compare what they found and stop with an error if they disagree
  (for example a non-shared ``--out-dir``).  After a crash, restart every
  worker with the same command.
* If a worker dies, the others fail within about a minute (TensorFlow's
  collective health check) instead of waiting forever; nothing is trained
  twice after the restart.
"""

import contextlib
import hashlib
import json
import os
import re
import sys

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
        task: ``"worker:1"``-style name of this process in the cluster
            (``multiworker``), else ``"local"``.
        jit: whether the train step may be XLA-compiled (not for
            ``MirroredStrategy`` over logical CPU devices, where XLA cannot
            reach the variables of the other "devices", nor for
            ``MultiWorkerMirroredStrategy`` on CPU workers, where XLA has no
            collectives).
    """

    def __init__(self, name, strategy=None, distribution=None, replicas=1, is_chief=True,
                 jit=True, task="local"):
        self.name = name
        self.strategy = strategy
        self.distribution = distribution
        self.replicas = int(replicas)
        self.is_chief = bool(is_chief)
        self.jit = bool(jit)
        self.task = task

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

    def check_workers_agree(self, what, value):
        """Raise on every worker unless all the workers passed the same ``value``.

        Under ``multiworker`` (with more than one worker) the SHA-256 of
        ``value`` (a string) is all-gathered -- one small collective, so every
        worker must call this at the same point -- and compared; elsewhere
        this does nothing.

        Raises:
            RuntimeError: the workers disagree; the message gives ``what``
                and this worker's ``value`` (each worker's log shows its own).
        """
        if self.name != "multiworker" or self.replicas < 2:
            return
        import tensorflow as tf

        digest = hashlib.sha256(value.encode("utf-8")).digest()
        token = tf.constant([[int.from_bytes(digest[i:i + 4], "little", signed=True)
                              for i in (0, 4, 8, 12)]], tf.int32)
        local = self.strategy.experimental_distribute_values_from_function(lambda _: token)
        tokens = self.strategy.gather(local, axis=0).numpy()
        differ = [i for i, row in enumerate(tokens) if list(row) != list(token.numpy()[0])]
        if differ:
            raise RuntimeError(
                "the workers disagree on %s: this worker (task %s) has %r, and replica(s) %s "
                "of %d have something else. Every worker must run the same command and see "
                "the same --out-dir (a shared directory)." % (
                    what, self.task, value, differ, len(tokens)))

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


_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                      '"task": {"type": "worker", "index": 0}}')
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})$")


def read_tf_config(environ=None):
    """The validated ``TF_CONFIG`` of a ``--strategy multiworker`` process.

    ``TF_CONFIG`` is the JSON environment variable that TensorFlow's
    ``TFConfigClusterResolver`` reads: ``{"cluster": {"worker": ["host:port",
    ...], "chief": ["host:port"]}, "task": {"type": "worker", "index": i}}``
    (``chief`` is optional).  It is checked here so that a mistake gives an
    error that names the field, not a hang or a gRPC error later.

    Args:
        environ: mapping to read ``TF_CONFIG`` from (default ``os.environ``).

    Returns:
        ``(cluster, task_type, task_index)``: ``{"worker": [...], ...}``,
        ``"worker"`` or ``"chief"``, and the index in that job.

    Raises:
        ValueError: ``TF_CONFIG`` is unset, not JSON, lacks ``cluster`` or
            ``task``, has a job other than ``chief``/``worker``, an address
            that is not ``host:port``, the same address twice, more than one
            chief, or a task that is not in the cluster.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ValueError(
            "--strategy multiworker needs the TF_CONFIG environment variable on every worker, "
            "e.g. TF_CONFIG='%s' (the same cluster everywhere, task.index 0, 1, ... per "
            "worker); see pretraining/distribute.py" % _TF_CONFIG_EXAMPLE)
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ValueError("TF_CONFIG is not valid JSON (%s): %r" % (exc, raw)) from exc
    if not isinstance(config, dict):
        raise ValueError("TF_CONFIG must be a JSON object like %s, got %r"
                         % (_TF_CONFIG_EXAMPLE, raw))
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError('TF_CONFIG has no "cluster" object (e.g. {"worker": ["host1:2222", '
                         '"host2:2222"]}): %r' % raw)
    if not isinstance(task, dict):
        raise ValueError('TF_CONFIG has no "task" object (e.g. {"type": "worker", '
                         '"index": 0}): %r' % raw)
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise ValueError('TF_CONFIG cluster has job(s) %s; MultiWorkerMirroredStrategy takes '
                         'only "chief" and "worker"' % ", ".join(map(repr, unknown)))
    seen = set()
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ValueError('TF_CONFIG cluster.%s must be a non-empty list of "host:port" '
                             "strings, got %r" % (job, addresses))
        for i, address in enumerate(addresses):
            match = _ADDRESS.match(address) if isinstance(address, str) else None
            if match is None or not 0 < int(match.group(2)) < 65536:
                raise ValueError('TF_CONFIG cluster.%s[%d] must be "host:port", got %r'
                                 % (job, i, address))
            if address in seen:
                raise ValueError("TF_CONFIG cluster lists %r twice" % address)
            seen.add(address)
    if len(cluster.get("chief", [])) > 1:
        raise ValueError("TF_CONFIG cluster.chief must list one address, got %d"
                         % len(cluster["chief"]))
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
        raise ValueError('TF_CONFIG task.type is %r but the cluster has only %s'
                         % (task_type, ", ".join(map(repr, sorted(cluster)))))
    if isinstance(index, bool) or not isinstance(index, int) or not (
            0 <= index < len(cluster[task_type])):
        raise ValueError("TF_CONFIG task.index is %r but cluster.%s has %d address(es) "
                         "(valid: 0..%d)" % (index, task_type, len(cluster[task_type]),
                                              len(cluster[task_type]) - 1))
    return cluster, task_type, index


def _multi_worker_strategy():
    """``tf.distribute.MultiWorkerMirroredStrategy`` whose ``reduce`` takes nests.

    Keras' TensorFlow trainer (3.x) meets two limits of that strategy's
    ``reduce``: it reduces a whole input batch (a dict of ``PerReplica``
    values) in one call to learn its shapes, and it reduces the scalar
    metric results of every step with ``axis=0``.  This subclass reduces
    leaf by leaf (each leaf is still one collective) and reduces scalars
    across replicas only (``axis=None``), which is what ``axis=0`` means
    for a batch of per-replica scalars.
    """
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis=None):
            reduce = super().reduce

            def leaf(v):
                rank = getattr(self.experimental_local_results(v)[0].shape, "rank", None)
                return reduce(reduce_op, v, None if rank == 0 else axis)

            return tf.nest.map_structure(leaf, value)

    return MultiWorkerMirroredStrategy()


def _tpu_strategy(address, timeout):
    """Connect to the TPU at ``address`` and return its ``TPUStrategy``.

    TensorFlow waits without end for a TPU that never answers
    (``initialize_tpu_system``), so a watchdog ends the process with exit
    code 2 and a message naming the address after ``timeout`` seconds
    (``None`` or 0: wait forever). The connection itself stays on the main
    thread (``experimental_connect_to_cluster`` enters a thread-local device
    scope). Errors TensorFlow raises are re-raised as ``RuntimeError`` naming
    the address.
    """
    import threading

    import tensorflow as tf

    shown = repr(address or "")

    def give_up():
        sys.stderr.write("error: no TPU answered at --tpu-address %s within %g s (a TPU name, "
                         "grpc://host:port, or empty on a TPU VM); stopping. Raise "
                         "--tpu-timeout if the TPU is slow to start.\n" % (shown, timeout))
        sys.stderr.flush()
        os._exit(2)

    watchdog = threading.Timer(timeout, give_up) if timeout else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise RuntimeError("could not connect to the TPU at --tpu-address %s: %s"
                           % (shown, exc)) from exc
    finally:
        if watchdog is not None:
            watchdog.cancel()


def setup(name="default", tpu_address=None, tpu_timeout=600):
    """Create the :class:`Placement` for ``--strategy name``.

    ``tpu_timeout``: seconds to wait for the TPU at ``tpu_address`` before the
    process stops with a message naming it (see :func:`_tpu_strategy`).

    Raises:
        ValueError: the strategy does not exist or does not fit the Keras
            backend (``data_parallel`` is JAX only; ``mirrored``,
            ``multiworker`` and ``tpu`` are TensorFlow only), or
            ``TF_CONFIG`` is missing or malformed (``multiworker``, see
            :func:`read_tf_config`).
        RuntimeError: TensorFlow could not connect to the TPU (the address
            is named).
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
        cluster, task_type, task_index = read_tf_config()
        workers = sum(len(addresses) for addresses in cluster.values())
        print("MultiWorkerMirroredStrategy: task %s:%d of %d worker(s); waiting for all of "
              "them to connect" % (task_type, task_index, workers), flush=True)
        strategy = _multi_worker_strategy()
        # XLA has no CPU collectives ("Collectives are not yet implemented for
        # CPU devices when compiling with XLA"); GPU workers keep jit.
        jit = bool(tf.config.list_logical_devices("GPU"))
        if not jit:
            print("MultiWorkerMirroredStrategy on CPU: the train step is not XLA-compiled",
                  flush=True)
    else:
        strategy = _tpu_strategy(tpu_address, tpu_timeout)
    task = "%s:%d" % (task_type, task_index) if name == "multiworker" else "local"
    return Placement(name, strategy=strategy, replicas=strategy.num_replicas_in_sync,
                     is_chief=_is_chief(strategy), jit=jit, task=task)


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
