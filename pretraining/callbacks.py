"""Keras callbacks of ``pretraining.pretraining``: logging and the non-finite guard.

Split out of :mod:`pretraining.pretraining` (which re-exports every name here).
:class:`TrainingLogger` writes ``history.csv`` and TensorBoard scalars;
:class:`NonFiniteLossGuard` stops a diverging run (or logs the steps an
optimizer's own guard skipped).
"""

import csv
import io
import time
import warnings

import keras
import numpy as np
from keras import ops

from bert4keras import fileio
from pretraining.resume import NonFiniteStateError

#: Columns of ``history.csv``.
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
