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

Modules.  This file holds the command line and the training loop; the parts
live beside it and are re-exported here: :mod:`pretraining.model` (the
pretraining model and its MLM head), :mod:`pretraining.inputs` (records checks
and ``tf.data`` steps), :mod:`pretraining.optimization` (optimizers and the
schedule), :mod:`pretraining.callbacks` (logging and the non-finite guard),
:mod:`pretraining.resume` (training-state checkpoints) and
:mod:`pretraining.distribute` (strategies).
"""

if __name__ == "__main__" and not __package__:
    # run as a file: import this module from the package instead (see _as_script)
    import _as_script

    _as_script.run("pretraining.pretraining")

import argparse
import json
import os
import sys
import time
import warnings

import keras

from bert4keras import fileio
from bert4keras.models import load_config
from pretraining import distribute
from pretraining.callbacks import HISTORY_FIELDS, NonFiniteLossGuard, TrainingLogger
from pretraining.inputs import (
    RecordsMismatchError,
    check_records_vocab,
    gather_masked,
    normalize_weights,
    rebuilt_per_iterator,
    records_manifest,
    training_batches,
)
from pretraining.model import (
    GatherPositions,
    build_pretraining_model,
    compile_pretraining_model,
    recompute_layer_names,
)
from pretraining.optimization import (
    OPTIMIZER_FLAGS,
    WarmupCosine,
    learning_rate_schedule,
    make_optimizer,
)
from pretraining.resume import (
    CheckpointManager,
    CheckpointMismatchError,
    NonFiniteStateError,
    ResumeCheckpoint,
    restore_state,
)

__all__ = [
    # defined here: the command line and the training loop
    "NoValidCheckpointError", "TRAJECTORY_ARGS", "CONDITIONAL_FLAGS", "parse_args", "main",
    # re-exported from the modules they were split into
    "GatherPositions", "recompute_layer_names", "build_pretraining_model",  # pretraining.model
    "compile_pretraining_model",
    "RecordsMismatchError", "records_manifest", "check_records_vocab",  # pretraining.inputs
    "gather_masked", "normalize_weights", "rebuilt_per_iterator", "training_batches",
    "WarmupCosine", "learning_rate_schedule", "make_optimizer",  # pretraining.optimization
    "OPTIMIZER_FLAGS",
    "HISTORY_FIELDS", "TrainingLogger", "NonFiniteLossGuard",  # pretraining.callbacks
    "NonFiniteStateError",  # pretraining.resume
]


class NoValidCheckpointError(RuntimeError):
    """``--out-dir`` holds checkpoints but none can be resumed (all corrupt)."""


#: Arguments that change the training trajectory; a resumed run warns when they differ.
TRAJECTORY_ARGS = ("model", "config", "init_checkpoint", "records", "seq_len",
                   "global_batch_size", "steps", "warmup_steps", "lr", "weight_decay", "clipnorm",
                   "optimizer", "grad_accum", "max_predictions", "dropout",
                   "seed", "mixed_precision", "lazy_embeddings", "embedding_optimizer",
                   "loss_scale")

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
        compile_pretraining_model(model, optimizer, jit_compile=not args.no_jit and placement.jit)
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

        dataset = placement.distribute(  # in seeded order, minus the batches consumed
            lambda: training_batches(data_cls, args.records, args.seq_len, global_batch,
                                     args.seed, max_predictions if args.model == "roberta"
                                     else None, skip=batches_done),
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
