"""Pretrain a BERT-family model on TFRecords written by ``pretraining.data_utils``.

Usage (the small Chinese BERT that ships in ``examples/pretrained/``)::

    python -m pretraining.data_utils --model roberta --vocab VOCAB --corpus corpus.txt \\
        --seq-len 128 --out runs/mlm_records
    python -m pretraining.pretraining --model roberta --config bert_config.json \\
        --vocab VOCAB --records runs/mlm_records --seq-len 128 --batch-size 64 \\
        --steps 20000 --out-dir runs/mlm

Objectives: ``roberta`` (masked LM with whole-word masking, Liu et al. 2019 /
Cui et al. 2019; the MLM head runs only at the masked positions, as Google's
``run_pretraining.py`` gathers ``masked_lm_positions``), ``gpt`` (causal LM
through ``application='lm'``) and ``unilm`` (seq2seq LM through
``application='unilm'``); the last two score every labelled position.  The
loss is the mean over the labelled tokens of the whole global batch.

Exact resume.  Every ``--save-every`` optimizer steps the full training state
-- weights, optimizer slots and iteration counter, dropout RNG states, and the
number of batches consumed -- goes to ``--out-dir/checkpoints/ckpt-NNNNNNNN``
(written atomically, the newest 2 kept; see :mod:`pretraining.resume`).
Rerunning the same command after a crash or ``kill -9`` restores the newest
valid checkpoint and skips the batches already consumed (the input order is a
pure function of ``--seed``), so the run ends with the same weights as an
uninterrupted one (bitwise on CPU).  Skipping re-reads the skipped records,
which takes a while on a large step count; nothing is trained twice.  When
``--out-dir/checkpoints`` holds checkpoints but every one is corrupt, the run
stops with :class:`NoValidCheckpointError` instead of restarting at step 0;
``--start-over`` asks for the fresh start.

Divergence.  A non-finite loss stops AdamW/LAMB runs at once with
:class:`~pretraining.resume.NonFiniteStateError` naming the step (non-zero
exit); Tiger and ``mixed_float16`` (with loss scaling) guard such steps
themselves -- loss scaling skips them, Tiger keeps its momentum and shrinks
the weights by 0.99 towards their initial centre (the Tiger post's rule) --
so there each is logged and training goes on until 10 in a row
(:class:`NonFiniteLossGuard`).  No state holding a NaN or inf is ever saved:
the last good checkpoint stays.

Tiger options.  ``--lazy-embeddings`` (embedding rows of tokens absent from a
batch stay put) and ``--embedding-optimizer adam`` (Adam's direction for the
embedding matrices, Tiger for the rest) are the two remedies of
https://kexue.fm/archives/9736 for rarely seen tokens drifting to
``+-1/weight_decay`` under a sign optimizer; see
:class:`bert4keras.optimizers.Tiger`.  With either, ``--grad-accum`` uses
Keras' accumulation (one extra buffer per weight) instead of Tiger's own.
Half precision: ``--mixed-precision mixed_float16 --loss-scale none`` and
``--mixed-precision float16`` (float16 weights, Tiger only, never loss
scaled) train Tiger without loss scaling, relying on its non-finite rule.

Paths.  ``--records``, ``--config``, ``--vocab`` and ``--out-dir`` may be
local paths or ``gs://`` URLs (as a TPU run needs; ``ram://`` in tests): every
file is read and written through :mod:`bert4keras.fileio` (``tf.io.gfile``).
On object stores a training checkpoint is published by a pointer file, since
renaming a directory there is not atomic (see :mod:`pretraining.resume`).

Records.  ``--records`` are checked against their ``manifest.json``: its
``vocab_size`` must not exceed the config's (:class:`RecordsMismatchError`;
XLA would clamp out-of-range ids silently) and every shard must have the
recorded size (:class:`pretraining.data_utils.ShardMismatchError`).

Distribution (``--strategy``, see :mod:`pretraining.distribute`):
``mirrored`` / ``multiworker`` / ``tpu`` on TensorFlow, ``data_parallel`` on
JAX.  ``--batch-size`` is per replica; the global batch is ``batch_size x
replicas`` and every replica count sees the same global batches in the same
order, so a run on N devices follows the one-device run at the same global
batch (up to float summation order; dropout masks differ because they are
drawn per replica).

Several machines (``--strategy multiworker``): start the same command on
every worker, each with its own ``TF_CONFIG`` -- the same ``cluster``
everywhere, ``task.index`` 0, 1, ... (details in :mod:`pretraining.distribute`)::

    # worker i of host1, host2 (i = 0 on host1, 1 on host2)
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                "task": {"type": "worker", "index": i}}' \\
    python -m pretraining.pretraining ... --strategy multiworker --out-dir /shared/mlm

``--records`` must be readable on every worker and ``--out-dir`` must be one
directory shared by all of them.  Only the chief (worker 0, or the
``"chief"`` task) writes there -- checkpoints, ``history.csv``, TensorBoard
logs, the final checkpoint; the other workers write nothing.  Every worker
resumes from the same checkpoint (they check that they agree before
training); after a crash, restart every worker with the same command.
Without GPUs the train step is not XLA-compiled (XLA has no CPU
collectives).

At the end the weights are written as a Google-format TF checkpoint
(``bert_model.ckpt``) beside ``bert_config.json`` and ``vocab.txt``, which
``build_transformer_model`` loads.  Logs: TensorBoard (``--out-dir/logs``)
and ``--out-dir/history.csv`` (one row per ``--log-every`` steps; plot them
with ``python -m pretraining.plot_history OUT_DIR``).
"""

if __name__ == "__main__" and not __package__:
    # run as a file: import this module from the package instead (see _as_script)
    import _as_script

    _as_script.run("pretraining.pretraining")

import argparse
import csv
import io
import json
import os
import sys
import time
import warnings

import keras
import numpy as np
from keras import ops

from bert4keras import fileio
from bert4keras.layers import register
from bert4keras.models import build_transformer_model, load_config
from pretraining import distribute
from pretraining.resume import (
    CheckpointManager,
    CheckpointMismatchError,
    NonFiniteStateError,
    ResumeCheckpoint,
    restore_state,
)


class NoValidCheckpointError(RuntimeError):
    """``--out-dir`` holds checkpoints but none can be resumed (all corrupt)."""


class RecordsMismatchError(ValueError):
    """The TFRecords were written for another vocabulary than the model config's."""

#: Arguments that change the training trajectory; a resumed run warns when they differ.
TRAJECTORY_ARGS = ("model", "config", "init_checkpoint", "records", "seq_len",
                   "global_batch_size", "steps", "warmup_steps", "lr", "weight_decay", "clipnorm",
                   "optimizer", "grad_accum", "max_predictions", "dropout",
                   "seed", "mixed_precision", "lazy_embeddings", "embedding_optimizer",
                   "loss_scale")


@register
class GatherPositions(keras.layers.Layer):
    """``[(batch, seq_len, hidden), (batch, P) int] -> (batch, P, hidden)``."""

    def call(self, inputs):
        x, positions = inputs
        index = ops.expand_dims(ops.cast(positions, "int32"), -1)
        return ops.take_along_axis(x, index, axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1]) + (input_shape[0][-1],)


def recompute_layer_names(num_hidden_layers):
    """Layers recomputed by ``--recompute``: every Transformer block, whole.

    ``build_transformer_model(..., recompute=True)`` wraps block ``i``
    (attention, feed-forward, dropouts, residual adds and norms) in one
    :class:`~bert4keras.models.recompute.RecomputeBlock` called ``Transformer-i``
    that runs under ``keras.remat``; these are their names.
    """
    return ["Transformer-%d" % i for i in range(num_hidden_layers)]


def build_pretraining_model(config_path, objective, max_predictions, init_checkpoint=None,
                            recompute=None, **kwargs):
    """The model trained and the :class:`~bert4keras.models.Transformer` it wraps.

    For ``objective='roberta'`` the training model takes an extra input
    ``Input-MLM-Positions`` ``(batch, max_predictions)`` and outputs MLM logits
    ``(batch, max_predictions, vocab)`` at those positions only. For ``gpt`` /
    ``unilm`` it outputs logits ``(batch, seq_len, vocab)``.  Under a mixed
    precision policy the logits are cast to float32 (``MLM-Logits-Float32``).
    With ``recompute=True`` every Transformer block is recomputed in the
    backward pass (see :func:`recompute_layer_names`); ``None`` follows the
    ``RECOMPUTE`` environment variable (off when unset).
    """
    application = {"roberta": "encoder", "gpt": "lm", "unilm": "unilm"}[objective]
    transformer = build_transformer_model(config_path, init_checkpoint, with_mlm="linear",
                                          application=application, recompute=recompute,
                                          return_keras_model=False, **kwargs)
    mixed = keras.mixed_precision.global_policy().compute_dtype != "float32"
    if objective != "roberta":
        if not mixed:
            return transformer.model, transformer
        x = transformer.model.output
        inputs = transformer.model.inputs
        name = "lm_pretraining"
    else:
        layers = transformer.layers
        last = transformer.block_name(transformer.num_hidden_layers - 1)
        if not transformer.recompute:  # else the block's RecomputeBlock, not its plain copy
            last += "-FeedForward-Norm"
        positions = keras.Input(shape=(max_predictions,), dtype="int32",
                                name="Input-MLM-Positions")
        x = GatherPositions(name="MLM-Gather")([layers[last].output, positions])
        x = layers["MLM-Dense"](x)
        x = layers["MLM-Norm"](x)
        x = layers["Embedding-Token"](x, mode="dense")
        x = layers["MLM-Bias"](x)
        inputs = transformer.model.inputs + [positions]
        name = "mlm_pretraining"
    if mixed:
        x = keras.layers.Activation("linear", dtype="float32", name="MLM-Logits-Float32")(x)
    return keras.Model(inputs, x, name=name), transformer


def gather_masked(dataset, max_predictions):
    """Map ``(x, labels, weights)`` batches to the masked positions only.

    Keeps the ``max_predictions`` positions with the largest weight (all the
    masked ones when at most that many are masked; the data pipeline limits
    masking to about 15 %, so choose ``max_predictions >= 0.15 * seq_len``
    plus a margin).
    """
    import tensorflow as tf

    def pick(x, labels, weights):
        _, positions = tf.math.top_k(weights, k=max_predictions, sorted=True)
        x = dict(x)
        x["Input-MLM-Positions"] = positions
        labels = tf.gather(labels, positions, batch_dims=1)
        weights = tf.gather(weights, positions, batch_dims=1)
        return x, labels, weights

    return dataset.map(pick, num_parallel_calls=tf.data.AUTOTUNE)


def normalize_weights(dataset):
    """Scale each global batch's weights to mean 1: ``w * size(w) / sum(w)``.

    With ``reduction='sum_over_batch_size'`` the loss is then
    ``sum(w * loss) / sum(w)`` over the *global* batch on any number of
    replicas (Keras sums the replicas' gradients of ``loss / replicas``),
    while a per-replica ``mean_with_sample_weight`` would average per-replica
    means.  Every batch also carries the same total weight, which lets
    :class:`TrainingLogger` turn Keras' running means into interval means.
    """
    import tensorflow as tf

    def scale(x, labels, weights):
        size = tf.cast(tf.size(weights), weights.dtype)
        return x, labels, tf.math.divide_no_nan(weights * size, tf.reduce_sum(weights))

    return dataset.map(scale, num_parallel_calls=tf.data.AUTOTUNE)


def rebuilt_per_iterator(make_dataset):
    """``make_dataset()`` built afresh for every iterator taken from the result.

    A seeded ``shuffle(reshuffle_each_iteration=True)`` gives each new
    iterator over the *same* dataset object the next permutation, so the
    order would depend on how many iterators were taken before training
    (``tf.distribute`` and Keras take some).  Inside ``flat_map`` the
    pipeline, with its shuffle seeds, is instantiated anew for each iterator,
    so every iterator yields the same sequence.
    """
    import tensorflow as tf

    build = tf.autograph.experimental.do_not_convert(lambda _: make_dataset())
    return tf.data.Dataset.from_tensors(0).flat_map(build)


@keras.saving.register_keras_serializable(package="bert4keras.pretraining")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to 0.

    Counted in optimizer steps: the schedule is fed the optimizer's batch
    counter divided by ``grad_accum`` (Keras passes the un-divided counter).
    """

    def __init__(self, lr, steps, warmup_steps, grad_accum=1):
        self.lr, self.steps, self.warmup_steps = float(lr), int(steps), int(warmup_steps)
        self.grad_accum = int(grad_accum)
        warmup = max(1, min(self.warmup_steps, self.steps - 1))
        self._cosine = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=max(1, self.steps - warmup),
            warmup_target=self.lr, warmup_steps=warmup, alpha=0.0)

    def __call__(self, step):
        if self.grad_accum > 1:
            step = ops.floor_divide(step, self.grad_accum)
        return self._cosine(step)

    def get_config(self):
        return {"lr": self.lr, "steps": self.steps, "warmup_steps": self.warmup_steps,
                "grad_accum": self.grad_accum}


def learning_rate_schedule(lr, steps, warmup_steps, grad_accum=1):
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to 0."""
    return WarmupCosine(lr, steps, warmup_steps, grad_accum)


def make_optimizer(name, schedule, weight_decay, grad_accum, clipnorm, mixed_precision="none",
                   wrap_class=None, lazy_embeddings=False, embedding_optimizer=None,
                   loss_scale=None):
    """AdamW or LAMB (decoupled weight decay, none on LayerNorm and biases) or Tiger.

    ``weight_decay``, ``clipnorm`` (global norm, 0 = none) and ``grad_accum``
    act on every optimizer (:data:`OPTIMIZER_FLAGS`); ``weight_decay`` is
    the decoupled (Loshchilov & Hutter) decay ``w <- w - lr * wd * w``.

    Tiger (:class:`bert4keras.optimizers.Tiger`) accumulates gradients in its
    momentum (no extra memory); its ``lr`` is relative to each weight's RMS
    (1e-3 to 2e-3 is typical).  ``lazy_embeddings`` and ``embedding_optimizer``
    (``"tiger"`` or ``"adam"``) are Tiger's embedding-outlier remedies; with
    either, ``grad_accum`` uses Keras' ``gradient_accumulation_steps`` (both
    need whole-batch gradients).  For ``mixed_float16`` the optimizer is
    wrapped in ``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling)
    unless ``loss_scale`` is ``"none"``.
    ``wrap_class`` maps the optimizer class before use (see
    :meth:`pretraining.distribute.Placement.optimizer_class`).

    Raises:
        ValueError: an unknown ``name``, or a Tiger-only option with another
            optimizer.
    """
    wrap = wrap_class or (lambda cls: cls)
    kwargs = dict(learning_rate=schedule, global_clipnorm=clipnorm or None)
    if name != "tiger" and (lazy_embeddings or embedding_optimizer is not None):
        raise ValueError("lazy_embeddings / embedding_optimizer are Tiger options, not %r"
                         % (name,))
    if name == "tiger":
        from bert4keras.optimizers import Tiger

        embedding_optimizer = embedding_optimizer or "tiger"
        if grad_accum > 1 and (lazy_embeddings or embedding_optimizer == "adam"):
            kwargs["gradient_accumulation_steps"] = grad_accum
        else:
            kwargs["grad_accum_steps"] = grad_accum
        optimizer = wrap(Tiger)(weight_decay=weight_decay, lazy_embeddings=bool(lazy_embeddings),
                                embedding_optimizer=embedding_optimizer,
                                weight_decay_exclude=["gamma", "beta", "bias"], **kwargs)
    else:
        if grad_accum > 1:
            kwargs["gradient_accumulation_steps"] = grad_accum
        if name == "adamw":
            optimizer = wrap(keras.optimizers.AdamW)(weight_decay=weight_decay, beta_2=0.98,
                                               epsilon=1e-6, **kwargs)
            optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        elif name == "lamb":
            optimizer = wrap(keras.optimizers.Lamb)(weight_decay=weight_decay, **kwargs)
            optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        else:
            raise ValueError("Unknown optimizer %r (adamw, lamb or tiger)" % name)
    if mixed_precision == "mixed_float16" and (loss_scale or "dynamic") == "dynamic":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


#: Flags that act on every ``--optimizer`` (tested pairwise).
OPTIMIZER_FLAGS = ("weight_decay", "clipnorm", "grad_accum")
#: Flags that only act with some options: flag -> (option, values it acts with).
#: Giving one with another value is an error rather than a silent no-op.
CONDITIONAL_FLAGS = {
    "max_predictions": ("model", ("roberta",)),
    "tpu_address": ("strategy", ("tpu",)),
    "tpu_timeout": ("strategy", ("tpu",)),
    "lazy_embeddings": ("optimizer", ("tiger",)),
    "embedding_optimizer": ("optimizer", ("tiger",)),
    "loss_scale": ("mixed_precision", ("mixed_float16",)),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["roberta", "gpt", "unilm"], default="roberta",
                   help="pretraining objective")
    p.add_argument("--config", required=True, help="bert_config.json (or HF config.json)")
    p.add_argument("--vocab", required=True, help="vocab.txt copied beside the checkpoint")
    p.add_argument("--init-checkpoint", default=None, help="start from these weights")
    p.add_argument("--records", required=True,
                   help="TFRecord directory (with manifest.json), file or glob")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64,
                   help="sequences per replica; global batch = this x replicas")
    p.add_argument("--steps", type=int, default=10000, help="optimizer steps")
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=5e-4,
                   help="peak learning rate (Tiger: relative to the weights' RMS, ~1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clipnorm", type=float, default=1.0,
                   help="clip the global gradient norm (0 = no clipping)")
    p.add_argument("--optimizer", choices=["adamw", "lamb", "tiger"], default="adamw")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--max-predictions", type=int, default=None,
                   help="masked positions scored per sequence (default 0.15*seq_len+4)")
    p.add_argument("--save-every", type=int, default=500,
                   help="checkpoint the training state every N optimizer steps")
    p.add_argument("--keep-checkpoints", type=int, default=2,
                   help="how many training-state checkpoints to keep")
    p.add_argument("--log-every", type=int, default=50,
                   help="write TensorBoard scalars and a history.csv row every N steps")
    p.add_argument("--dropout", type=float, default=None, help="override the config's dropout")
    p.add_argument("--mixed-precision", default="none",
                   choices=["none", "mixed_float16", "mixed_bfloat16", "float16"],
                   help="Keras dtype policy; mixed_float16 adds dynamic loss scaling (see "
                        "--loss-scale); float16 keeps the weights in float16 too (Tiger only, "
                        "no loss scaling)")
    p.add_argument("--loss-scale", default=None, choices=["dynamic", "none"],
                   help="--mixed-precision mixed_float16: dynamic loss scaling (default) or "
                        "none (Tiger's non-finite rule alone guards overflowing steps)")
    p.add_argument("--lazy-embeddings", action="store_true", default=None,
                   help="--optimizer tiger: leave embedding rows of tokens absent from the "
                        "batch untouched (no drift of rare tokens to +-1/weight-decay)")
    p.add_argument("--embedding-optimizer", default=None, choices=["tiger", "adam"],
                   help="--optimizer tiger: update rule for the embedding matrices (default "
                        "tiger; adam avoids the drift of rare tokens)")
    p.add_argument("--recompute", action="store_true", default=None,
                   help="recompute every Transformer block in the backward pass (less memory, "
                        "about one more forward pass of time); default: the RECOMPUTE "
                        "environment variable")
    p.add_argument("--no-jit", action="store_true",
                   help="do not XLA-compile the train step (TensorFlow; starts faster on tiny "
                        "runs, usually slower per step)")
    p.add_argument("--strategy", default="default", choices=list(distribute.STRATEGIES),
                   help="default | mirrored | multiworker | tpu (tensorflow) | "
                        "data_parallel (jax); see pretraining/distribute.py")
    p.add_argument("--tpu-address", default=None,
                   help="--strategy tpu: TPU name or grpc://host:port (empty on a TPU VM)")
    p.add_argument("--tpu-timeout", type=float, default=None,
                   help="--strategy tpu: seconds to wait for the TPU to answer before stopping "
                        "with an error (0: wait forever; default 600)")
    p.add_argument("--start-over", action="store_true",
                   help="train from step 0 even though --out-dir/checkpoints holds only "
                        "corrupt checkpoints (without it such a run stops with an error)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    for name, (option, users) in CONDITIONAL_FLAGS.items():
        if getattr(args, name) is not None and getattr(args, option) not in users:
            p.error("--%s has no effect with --%s %s (only with --%s %s)" % (
                name.replace("_", "-"), option.replace("_", "-"), getattr(args, option),
                option.replace("_", "-"), " / ".join(sorted(users))))
    if args.mixed_precision == "float16" and args.optimizer != "tiger":
        p.error("--mixed-precision float16 (float16 weights, no loss scaling) needs "
                "--optimizer tiger, whose sign update ignores the gradient scale; %s's "
                "moments underflow in float16 (use mixed_float16)" % args.optimizer)
    if args.tpu_timeout is None:
        args.tpu_timeout = 600.0
    for name in ("steps", "batch_size", "grad_accum", "save_every", "log_every",
                 "keep_checkpoints", "seq_len"):
        if getattr(args, name) < 1:
            p.error("--%s must be >= 1" % name.replace("_", "-"))
    return args


# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------

HISTORY_FIELDS = ["step", "loss", "accuracy", "learning_rate", "wall_time"]


class TrainingLogger(keras.callbacks.Callback):
    """Every ``log_every`` optimizer steps: TensorBoard scalars and a ``history.csv`` row.

    Logging never stops training: if TensorBoard fails (not installed --
    ``TBNotInstalledError`` from ``tf.summary.scalar`` --, a full disk ...)
    it is switched off with one warning and the CSV goes on.  Rows of
    ``history.csv`` without an integer ``step`` are dropped on resume with a
    warning naming the file and lines (the original is kept as
    ``history.csv.bad``).

    Values are means over the steps since the previous row (recovered from
    Keras' running epoch means, exact because every batch carries the same
    total sample weight, see :func:`normalize_weights`), logged at the global
    optimizer step, so resumed runs continue the same curves.  On start the
    CSV is cut back to ``resume_step`` (rows written after the checkpoint
    that was resumed from are dropped).  TensorBoard event files cannot be cut
    that way: after a resume they may hold a step twice (the later one wins
    in :mod:`pretraining.plot_history`).

    With ``pooled_metrics=True`` (``tf.distribute`` strategies) the values are
    read with ``model.get_metrics_result()`` in cross-replica context, which
    pools the replicas' metric states; the batch ``logs`` Keras hands to
    callbacks there are a mean (TPU: the first) of per-replica results, which
    for weighted metrics is not the global value.
    """

    def __init__(self, out_dir, log_every, batches_per_epoch, total_batches, grad_accum=1,
                 initial_batches=0, initial_epoch=0, write=True, pooled_metrics=False):
        super().__init__()
        self.out_dir = out_dir
        self.log_every = int(log_every)
        self.batches_per_epoch = int(batches_per_epoch)
        self.total_batches = int(total_batches)
        self.grad_accum = int(grad_accum)
        self.initial_batches, self.initial_epoch = int(initial_batches), int(initial_epoch)
        self.resume_step = self.initial_batches // self.grad_accum
        self.write = write
        self.pooled_metrics = pooled_metrics
        self._writer = None
        self._csv = None

    @property
    def csv_path(self):
        return fileio.join(self.out_dir, "history.csv")

    def _open_csv(self):
        rows, bad = [], []
        if fileio.isfile(self.csv_path):
            text = fileio.read_bytes(self.csv_path).decode("utf-8", errors="replace")
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if reader.fieldnames and reader.fieldnames[0] == "step":
                for row in reader:
                    try:
                        step = int(row["step"])
                    except (TypeError, ValueError):
                        bad.append(reader.line_num)
                        continue
                    if step <= self.resume_step:
                        rows.append(row)
            else:  # a Keras CSVLogger file from an older version: keep it aside
                fileio.rename(self.csv_path, fileio.join(self.out_dir, "history_epochs.csv"))
            if bad:  # logging must not block a resume: keep the file aside, drop the rows
                fileio.copy(self.csv_path, self.csv_path + ".bad")
                warnings.warn("%s: dropped %d unreadable row(s) (line %s; no integer 'step'); "
                              "the original is kept as %s.bad" % (
                                  self.csv_path, len(bad), ", ".join(map(str, bad[:5])),
                                  fileio.basename(self.csv_path)), stacklevel=2)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        fileio.write_text(self.csv_path, text.getvalue())
        self._csv = fileio.open(self.csv_path, "a")  # tf.io.gfile: local, gs://, ram://

    def on_train_begin(self, logs=None):
        if not self.write:
            return
        self._open_csv()
        try:
            import tensorflow as tf
        except ImportError:  # CSV only
            return
        try:
            self._writer = tf.summary.create_file_writer(
                fileio.join(self.out_dir, "logs", "train"))
        except Exception as exc:  # noqa: BLE001 -- logging must never stop training
            self._tensorboard_failed(exc)

    def _tensorboard_failed(self, exc):
        """Drop TensorBoard for the rest of the run with one warning; the CSV goes on."""
        self._writer = None
        warnings.warn("TensorBoard logging is off for this run (%s: %s); the values are "
                      "still written to %s" % (type(exc).__name__, exc, self.csv_path),
                      stacklevel=2)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = (self.initial_batches
                             + (epoch - self.initial_epoch) * self.batches_per_epoch)
        self._previous = (0, {})
        self._loss_reset = 0

    def loss_tracker_reset(self, count):
        """Keras' loss mean was restarted after ``count`` batches of this epoch."""
        self._loss_reset = int(count)

    def _logged_step(self, batch):
        """The optimizer step completed by ``batch`` if it gets a row, else None."""
        batches = self._epoch_start + batch + 1
        if batches % self.grad_accum:
            return None
        step = batches // self.grad_accum
        if step % self.log_every and batches < self.total_batches:
            return None
        return step

    def on_train_batch_begin(self, batch, logs=None):
        if self.write and self._logged_step(batch) is not None:  # the rate this step uses
            self._learning_rate = float(ops.convert_to_numpy(
                self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        step = self._logged_step(batch)
        if step is None:
            return
        count, previous = batch + 1, self._previous
        if self.pooled_metrics:  # on every worker: a collective under multi-worker
            logs = self.model.get_metrics_result()
        if not self.write:
            return
        means = {k: float(np.asarray(v)) for k, v in (logs or {}).items()
                 if np.size(np.asarray(v)) == 1}
        values = {}
        for key, mean in means.items():
            # the loss tracker restarts after a skipped non-finite step (NonFiniteLossGuard)
            base = self._loss_reset if key == "loss" else 0
            if previous[0] < base:  # this row's steps include the non-finite one
                values[key] = float("nan")
                continue
            total = (count - base) * mean
            before = ((previous[0] - base) * previous[1].get(key, 0.0)
                      if previous[0] > base else 0.0)
            value = (total - before) / (count - previous[0])
            if abs(value) * (count - previous[0]) < 1e-6 * max(abs(total), abs(before)):
                value = 0.0  # float32 rounding of the running means, not a value
            values[key] = value
        self._previous = (count, means)
        values["learning_rate"] = self._learning_rate
        csv.DictWriter(self._csv, HISTORY_FIELDS, extrasaction="ignore").writerow(
            dict(values, step=step, wall_time=round(time.time(), 3)))
        self._csv.flush()
        if self._writer is not None:
            import tensorflow as tf

            try:  # e.g. TBNotInstalledError from tf.summary.scalar without TensorBoard
                with self._writer.as_default(step=step):
                    for key, value in values.items():
                        tf.summary.scalar(key, value)
            except Exception as exc:  # noqa: BLE001 -- logging must never stop training
                self._tensorboard_failed(exc)

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is not None:
            try:
                self._writer.flush()
            except Exception as exc:  # noqa: BLE001
                self._tensorboard_failed(exc)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception as exc:  # noqa: BLE001
                self._tensorboard_failed(exc)
            self._writer = None
        if self._csv is not None:
            self._csv.close()
            self._csv = None


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss, or log it where the optimizer skips such steps.

    Without a non-finite guard in the optimizer (AdamW, LAMB) a NaN/inf loss
    means the update just applied was non-finite too: training stops at once
    with :class:`~pretraining.resume.NonFiniteStateError` naming the step,
    before any checkpoint of that state is written (the newest good one
    stays).  With a guard (Tiger skips steps with non-finite gradients;
    ``mixed_float16``'s loss scaling skips them too) each such step is
    reported in the log (its ``history.csv`` row holds ``nan``) and training
    goes on, until ``max_consecutive`` (default :attr:`MAX_CONSECUTIVE`)
    batches in a row were non-finite: then the run has diverged and stops
    with the same error.  The weights are also checked before every save
    (:class:`~pretraining.resume.ResumeCheckpoint`).  Keras' batch ``loss`` is
    a running mean, so after a skipped batch the guard restarts it (and tells
    ``logger``, a :class:`TrainingLogger`, so its rows stay exact).
    """

    MAX_CONSECUTIVE = 10

    def __init__(self, guarded, grad_accum=1, initial_batches=0, initial_epoch=0,
                 batches_per_epoch=1, logger=None, max_consecutive=None):
        super().__init__()
        self.guarded, self.grad_accum = bool(guarded), int(grad_accum)
        self.initial_batches, self.initial_epoch = int(initial_batches), int(initial_epoch)
        self.batches_per_epoch = int(batches_per_epoch)
        self.logger = logger
        self.max_consecutive = int(max_consecutive or self.MAX_CONSECUTIVE)
        self.skipped = []  # batches whose update the guard skipped
        self._run = 0  # consecutive non-finite batches

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = (self.initial_batches
                             + (epoch - self.initial_epoch) * self.batches_per_epoch)

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            return
        loss = float(np.asarray(logs["loss"]))
        if np.isfinite(loss):
            self._run = 0
            return
        batches = self._epoch_start + batch + 1
        step = -(-batches // self.grad_accum)
        if not self.guarded:
            self.model.stop_training = True
            raise NonFiniteStateError(
                "training diverged: the loss is %s at step %d (batch %d); the state was not "
                "saved, the newest checkpoint in --out-dir/checkpoints is the last good one. "
                "Lower --lr, raise --warmup-steps or set --clipnorm, then rerun to resume."
                % (loss, step, batches))
        self.skipped.append(batches)
        self._run += 1
        print("warning: non-finite loss (%s) at step %d (batch %d): the optimizer's "
              "non-finite guard skipped this update (loss scaling: nothing changed; Tiger: "
              "momentum kept, weights shrunk towards their centre by its shrink_ratio)"
              % (loss, step, batches), flush=True)
        if self._run >= self.max_consecutive:
            self.model.stop_training = True
            raise NonFiniteStateError(
                "training diverged: the loss was non-finite for %d batches in a row, up to "
                "step %d (batch %d); every update was skipped, nothing after the newest "
                "checkpoint in --out-dir/checkpoints was saved. Lower --lr or raise "
                "--warmup-steps, then rerun to resume." % (self._run, step, batches))
        tracker = getattr(self.model, "_loss_tracker", None)
        if tracker is not None:  # restart Keras' running mean so the next batch is seen alone
            tracker.reset_state()
            if self.logger is not None:
                self.logger.loss_tracker_reset(batch + 1)


def records_manifest(records):
    """The ``manifest.json`` that describes ``--records`` (a directory, or files beside one).

    Returns the manifest ``dict``, or None when there is none.
    """
    from pretraining.data_utils import MANIFEST_NAME

    path = os.fspath(records)
    folder = path if fileio.isdir(path) else fileio.dirname(path)
    manifest_path = fileio.join(folder or ".", MANIFEST_NAME)
    if not fileio.isfile(manifest_path):
        return None
    return dict(json.loads(fileio.read_text(manifest_path)), _path=manifest_path)


def check_records_vocab(records, config_path):
    """Refuse records whose token ids can reach past the config's ``vocab_size``.

    Compiled gathers (XLA) clamp out-of-range ids instead of failing, so a
    mismatch would train silently on garbage.  The records' vocabulary size
    comes from their ``manifest.json`` (written by :mod:`pretraining.data_utils`).

    Raises:
        RecordsMismatchError: the manifest's ``vocab_size`` exceeds the config's.
    """
    manifest = records_manifest(records)
    if manifest is None or manifest.get("vocab_size") is None:
        warnings.warn("%s has no manifest.json with a vocab_size: token ids are not checked "
                      "against the config's vocab_size" % (records,), stacklevel=2)
        return
    vocab_size = int(load_config(config_path)["vocab_size"])
    if int(manifest["vocab_size"]) > vocab_size:
        raise RecordsMismatchError(
            "the records in %s were written with a %d-token vocabulary (%s) but %s has "
            "vocab_size %d: ids %d..%d would be out of range. Rebuild the records with the "
            "model's vocabulary or use a config with vocab_size >= %d." % (
                records, manifest["vocab_size"], manifest["_path"], config_path, vocab_size,
                vocab_size, int(manifest["vocab_size"]) - 1, manifest["vocab_size"]))


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def _load_legacy_backup(model, out_dir, steps_per_epoch):
    """Batches done according to a ``keras.callbacks.BackupAndRestore`` backup, or None.

    Older versions of this script backed up with ``BackupAndRestore``
    (``backup/latest.weights.h5``, weights and optimizer).  Its weights are
    loaded, but it did not record the data position nor the dropout RNG, so
    such a resume is not exact.
    """
    backup = fileio.join(out_dir, "backup")
    weights = fileio.join(backup, "latest.weights.h5")
    meta = fileio.join(backup, "training_metadata.json")
    if not (fileio.isfile(weights) and fileio.isfile(meta)):
        return None
    epoch = int(json.loads(fileio.read_text(meta)).get("epoch", 0))  # epochs completed
    if epoch <= 0:
        return None
    model.load_weights(weights)
    warnings.warn("Resumed from an older BackupAndRestore backup in %s (epoch %d); that "
                  "format has no data position, so this resume is not exact" % (backup, epoch),
                  stacklevel=2)
    return epoch * steps_per_epoch


def _trajectory(args, global_batch_size):
    values = dict(vars(args), global_batch_size=global_batch_size)
    return {k: values.get(k) for k in TRAJECTORY_ARGS}


def main(argv=None, callbacks=()):
    """Run the CLI; ``callbacks`` are extra Keras callbacks for ``fit`` (hooks for tests)."""
    args = parse_args(argv)
    previous_policy = keras.mixed_precision.global_policy()
    placement = None
    try:
        keras.utils.set_random_seed(args.seed)
        placement = distribute.setup(args.strategy, args.tpu_address, args.tpu_timeout)
        if args.mixed_precision != "none":
            keras.mixed_precision.set_global_policy(args.mixed_precision)
        return _train(args, argv, placement, callbacks)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if placement is not None:
            placement.close()


def _train(args, argv, placement, extra_callbacks):
    from pretraining.data_utils import (TrainingDatasetGPT, TrainingDatasetRoBERTa,
                                        TrainingDatasetUniLM)

    keras_accumulation = args.optimizer != "tiger" or bool(
        args.lazy_embeddings or args.embedding_optimizer == "adam")
    if (args.grad_accum > 1 and keras_accumulation and placement.strategy is not None
            and placement.replicas > 1):
        raise ValueError(
            "--grad-accum with --optimizer %s cannot run under --strategy %s: Keras' "
            "gradient_accumulation_steps applies the cross-replica update inside a "
            "conditional, which tf.distribute does not support. Use --optimizer tiger (its "
            "accumulation has no conditional), a larger --batch-size or more replicas."
            % (args.optimizer, args.strategy))
    check_records_vocab(args.records, args.config)
    if placement.is_chief:  # other workers (multiworker) write nothing
        fileio.makedirs(args.out_dir)
    max_predictions = args.max_predictions or int(0.15 * args.seq_len) + 4
    global_batch = args.batch_size * placement.replicas
    batches_per_epoch = min(args.save_every, args.steps) * args.grad_accum
    total_batches = args.steps * args.grad_accum
    kwargs = {}
    if args.dropout is not None:
        kwargs.update(dropout_rate=args.dropout, attention_dropout_rate=args.dropout)

    with placement.scope():
        model, transformer = build_pretraining_model(
            args.config, args.model, max_predictions, args.init_checkpoint,
            recompute=args.recompute, **kwargs)
        schedule = learning_rate_schedule(args.lr, args.steps, args.warmup_steps, args.grad_accum)
        optimizer = make_optimizer(args.optimizer, schedule, args.weight_decay, args.grad_accum,
                                   args.clipnorm, args.mixed_precision,
                                   wrap_class=placement.optimizer_class,
                                   lazy_embeddings=args.lazy_embeddings,
                                   embedding_optimizer=args.embedding_optimizer,
                                   loss_scale=args.loss_scale)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                            reduction="sum_over_batch_size"),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=not args.no_jit and placement.jit,
            auto_scale_loss=False,  # make_optimizer decides (--loss-scale)
        )
        optimizer.build(model.trainable_variables)

    # Resume.
    trajectory = _trajectory(args, global_batch)
    # Multi-worker: settings that change the data, the updates or when the
    # workers meet in collectives must match (paths may differ per machine).
    placement.check_workers_agree("the training settings", json.dumps(dict(
        {k: v for k, v in trajectory.items()
         if k not in ("config", "init_checkpoint", "records")},
        save_every=args.save_every, log_every=args.log_every), sort_keys=True))
    manager = CheckpointManager(fileio.join(args.out_dir, "checkpoints"),
                                keep=args.keep_checkpoints, cleanup=placement.is_chief)
    batches_done, resumed_from = 0, None
    found = manager.latest()
    if found is not None:
        path, meta, arrays = found
        try:
            with placement.scope():
                restore_state(model, arrays, meta.get("variables"))
        except CheckpointMismatchError as exc:
            raise CheckpointMismatchError("%s cannot be resumed into this model: %s"
                                          % (path, exc)) from exc
        batches_done, resumed_from = int(meta["batches"]), path
        changed = {k: (v, trajectory.get(k)) for k, v in meta.get("trajectory", {}).items()
                   if trajectory.get(k) != v}
        if changed:
            warnings.warn("Resuming %s with different settings, so the result will differ from "
                          "an uninterrupted run: %s" % (path, ", ".join(
                              "%s %r -> %r" % (k, a, b) for k, (a, b) in sorted(changed.items()))),
                          stacklevel=2)
        print("Resuming from %s: step %d, %d batches consumed"
              % (path, batches_done // args.grad_accum, batches_done), flush=True)
    elif (manager.rejected or manager.corrupt()) and not args.start_over:
        raise NoValidCheckpointError(
            "%s holds no valid checkpoint to resume from (corrupt: %s); refusing to restart "
            "at step 0. Pass --start-over to train from scratch (the corrupt ones stay as "
            "ckpt-N.corrupt)." % (manager.directory, ", ".join(
                fileio.basename(p) for p in ([p for p, _ in manager.rejected]
                                              or manager.corrupt()))))
    else:
        with placement.scope():
            legacy = _load_legacy_backup(model, args.out_dir, min(args.save_every, args.steps))
        if legacy is not None:
            batches_done = min(legacy, total_batches)
            resumed_from = fileio.join(args.out_dir, "backup")
    # Multi-worker: every worker read --out-dir itself; they must resume alike.
    placement.check_workers_agree(
        "the state to resume from (--out-dir/checkpoints)",
        "%s (sha256 %s), %d batches consumed" % (
            resumed_from or "no checkpoint", meta.get("sha256") if found else None,
            batches_done))

    start = time.time()
    if batches_done < total_batches:
        data_cls = {"roberta": TrainingDatasetRoBERTa, "gpt": TrainingDatasetGPT,
                    "unilm": TrainingDatasetUniLM}[args.model]

        def global_batches():  # in seeded order, minus those consumed
            dataset = data_cls.load_tfrecord(args.records, args.seq_len, global_batch,
                                             shuffle=True, seed=args.seed, repeat=True)
            if args.model == "roberta":
                dataset = gather_masked(dataset, max_predictions)
            return normalize_weights(dataset).skip(batches_done)

        dataset = placement.distribute(lambda: rebuilt_per_iterator(global_batches),
                                       args.batch_size)
        # One epoch = one checkpoint interval; the last may be cut short.
        initial_epoch = batches_done // batches_per_epoch
        epochs = initial_epoch + -(-(total_batches - batches_done) // batches_per_epoch)
        position = dict(initial_batches=batches_done, initial_epoch=initial_epoch)
        logger = TrainingLogger(args.out_dir, args.log_every, batches_per_epoch, total_batches,
                                args.grad_accum, write=placement.is_chief,
                                pooled_metrics=placement.strategy is not None, **position)
        callbacks = [
            ResumeCheckpoint(manager, batches_per_epoch, total_batches, args.grad_accum,
                             meta={"trajectory": trajectory}, save=placement.is_chief,
                             **position),
            logger,
            NonFiniteLossGuard(  # Tiger and loss scaling skip non-finite steps themselves
                args.optimizer == "tiger" or (args.mixed_precision == "mixed_float16"
                                              and args.loss_scale != "none"),
                args.grad_accum, batches_per_epoch=batches_per_epoch, logger=logger,
                **position),
        ] + list(extra_callbacks)
        model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=batches_per_epoch, callbacks=callbacks, verbose=2)
    elapsed = time.time() - start
    if not placement.is_chief:
        return None
    prefix = fileio.join(args.out_dir, "bert_model.ckpt")
    transformer.save_weights_as_checkpoint(prefix, dtype="float32")  # float16 weights too
    config = load_config(args.config)
    config.pop("_path", None)
    fileio.write_text(fileio.join(args.out_dir, "bert_config.json"),
                      json.dumps(config, indent=2, ensure_ascii=False))
    vocab = fileio.join(args.out_dir, "vocab.txt")
    if not (fileio.is_local(vocab) and fileio.is_local(args.vocab)
            and os.path.abspath(args.vocab) == os.path.abspath(vocab)) and args.vocab != vocab:
        fileio.copy(args.vocab, vocab)
    info = {"argv": sys.argv[1:] if argv is None else list(argv),
            "backend": keras.backend.backend(), "strategy": args.strategy,
            "replicas": placement.replicas, "global_batch_size": global_batch,
            "resumed_from": resumed_from, "seconds_this_run": round(elapsed, 1)}
    fileio.write_text(fileio.join(args.out_dir, "train_info.json"), json.dumps(info, indent=2))
    print("Saved %s (+ bert_config.json, vocab.txt)" % prefix)
    return prefix


if __name__ == "__main__":
    main()
