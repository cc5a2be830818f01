"""Crash-safe training checkpoints for exact resume.

A checkpoint is a directory ``ckpt-NNNNNNNN`` (the optimizer step, 8 digits)
holding

* ``state.npz``: every model variable (trainable weights, non-trainable
  weights and the dropout seed-generator states) followed by every optimizer
  variable (iteration counter, moments, loss-scale state, gradient
  accumulators), in the models' own deterministic order;
* ``meta.json``: format tag, step, batches consumed, epoch, the shape and
  dtype of every stored variable, the SHA-256 of ``state.npz`` and free-form
  extras (the command-line arguments, the last logs).

Writing is atomic: both files are written into a hidden temporary directory,
flushed and ``fsync``-ed, the directory is renamed to its final name and the
parent directory is ``fsync``-ed.  A process killed at any moment therefore
leaves either a complete checkpoint or a hidden temporary directory, which is
never read and is deleted on the next start.  On load, checkpoints are tried
newest first; one whose ``meta.json`` is missing or unreadable, or whose
``state.npz`` does not match its recorded hash, shapes or dtypes, is skipped
with a warning.  Only the newest ``keep`` (default 2) are kept.

Nothing here is specific to pretraining: :class:`CheckpointManager` stores
arrays, :func:`capture_state` / :func:`restore_state` map a compiled Keras
model to arrays and back, and :class:`ResumeCheckpoint` is the Keras callback
that saves at the end of every epoch (one epoch = ``--save-every`` steps).

Several processes (``--strategy multiworker``): every worker reads the same
directory, which must therefore be shared; only the chief writes.  The
other workers pass ``cleanup=False`` to :class:`CheckpointManager` (no
directory created, no temporaries removed, corrupt checkpoints skipped but
not moved) and ``save=False`` to :class:`ResumeCheckpoint`; the variables
being mirrored, the chief's copy is the state of all of them.
``pretraining.pretraining`` then checks with one collective that all the
workers found the same checkpoint before any training.
"""

import hashlib
import json
import os
import re
import shutil
import time
import warnings

import keras
import numpy as np

FORMAT = "bert4keras-train-state-v1"
STATE_FILE = "state.npz"
META_FILE = "meta.json"
_NAME = re.compile(r"^ckpt-(\d{8,})$")
_TEMP_PREFIXES = (".tmp-", ".trash-")


class CheckpointMismatchError(ValueError):
    """A valid checkpoint that belongs to a different model or optimizer."""


class NonFiniteStateError(RuntimeError):
    """The training state holds NaN or infinite values (a diverged run); it is not saved."""


def first_non_finite(arrays, specs=None):
    """``(name, count)`` of the first float array with NaN/inf values, else None.

    ``arrays`` and ``specs`` as returned by :func:`capture_state`.
    """
    for index in range(len(arrays)):
        value = arrays["v%05d" % index]
        if value.dtype.kind == "f" or value.dtype.name == "bfloat16":
            finite = np.isfinite(value.astype(np.float32, copy=False))
            if not finite.all():
                name = specs[index][0] if specs else "v%05d" % index
                return name, int(finite.size - finite.sum())
    return None


# ---------------------------------------------------------------------------
# Model <-> arrays
# ---------------------------------------------------------------------------


def state_variables(model):
    """The variables that define a training state, in a fixed order.

    ``model.variables`` (weights and dropout seed states) followed by
    ``model.optimizer.variables``.  The optimizer must be built
    (``optimizer.build(model.trainable_variables)``).
    """
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        seen = {id(v) for v in variables}
        variables += [v for v in optimizer.variables if id(v) not in seen]
    return variables


def _spec(variable, value):
    return [getattr(variable, "path", None) or variable.name, list(value.shape), str(value.dtype)]


def capture_state(model):
    """``(arrays, specs)``: ``{"v00000": ndarray, ...}`` and ``[[path, shape, dtype], ...]``."""
    arrays, specs = {}, []
    for index, variable in enumerate(state_variables(model)):
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        arrays["v%05d" % index] = value
        specs.append(_spec(variable, value))
    return arrays, specs


def restore_state(model, arrays, specs=None):
    """Assign ``arrays`` (from :func:`capture_state`) back to ``model``.

    Raises:
        CheckpointMismatchError: a different number of variables, or a
            shape/dtype that differs (both names and both shapes are given).
    """
    variables = state_variables(model)
    if len(arrays) != len(variables):
        raise CheckpointMismatchError(
            "the checkpoint holds %d variables but the model and optimizer have %d (was it "
            "written with another config, --optimizer, --mixed-precision or --grad-accum?)"
            % (len(arrays), len(variables)))
    pending = []
    for index, variable in enumerate(variables):
        value = arrays["v%05d" % index]
        want_shape = tuple(variable.shape)
        want_dtype = np.dtype(keras.backend.standardize_dtype(variable.dtype))
        if tuple(value.shape) != want_shape or value.dtype != want_dtype:
            stored = specs[index][0] if specs else "v%05d" % index
            raise CheckpointMismatchError(
                "checkpoint variable %d (%s) has shape %s %s but %s has shape %s %s"
                % (index, stored, tuple(value.shape), value.dtype,
                   getattr(variable, "path", variable.name), want_shape, want_dtype))
        pending.append((variable, value))
    for variable, value in pending:
        variable.assign(value)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CheckpointManager:
    """Atomic, validated checkpoints in ``directory``; see the module docstring.

    Args:
        directory: where ``ckpt-*`` directories live (created).
        keep: how many of the newest checkpoints to keep (>= 1).
        cleanup: delete leftover temporary directories now, and move invalid
            checkpoints aside (``ckpt-N.corrupt``, which is never read nor
            pruned) when :meth:`latest` meets them.  Pass False on processes
            that must not write (non-chief workers).
    """

    def __init__(self, directory, keep=2, cleanup=True):
        if keep < 1:
            raise ValueError("keep must be >= 1, got %r" % (keep,))
        self.directory = os.fspath(directory)
        self.keep = int(keep)
        self.writable = bool(cleanup)
        self.rejected = []  # [(path, reason)] of invalid checkpoints met by latest()
        if cleanup:
            os.makedirs(self.directory, exist_ok=True)
            self.remove_temporaries()

    def remove_temporaries(self):
        """Delete hidden temporary directories left by an interrupted save."""
        if not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if name.startswith(_TEMP_PREFIXES):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def corrupt(self):
        """Paths of checkpoints moved aside as ``ckpt-N.corrupt`` (by this or an earlier run)."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(os.path.join(self.directory, name) for name in os.listdir(self.directory)
                      if name.endswith(".corrupt") and _NAME.match(name[:-len(".corrupt")]))

    def checkpoints(self):
        """``[(step, path), ...]`` of final-named directories, oldest first (not validated)."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            match = _NAME.match(name)
            path = os.path.join(self.directory, name)
            if match and os.path.isdir(path):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, step, arrays, meta):
        """Write ``arrays`` and ``meta`` as ``ckpt-{step}`` atomically; prune; return the path."""
        os.makedirs(self.directory, exist_ok=True)
        final = os.path.join(self.directory, "ckpt-%08d" % step)
        temp = os.path.join(self.directory, ".tmp-ckpt-%08d-%d" % (step, os.getpid()))
        shutil.rmtree(temp, ignore_errors=True)
        os.makedirs(temp)
        state_path = os.path.join(temp, STATE_FILE)
        with open(state_path, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        meta = dict(meta, format=FORMAT, step=int(step), sha256=_sha256(state_path),
                    saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        with open(os.path.join(temp, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(temp)
        trash = None
        if os.path.exists(final):  # same step saved again: swap it out
            trash = os.path.join(self.directory, ".trash-ckpt-%08d-%d" % (step, os.getpid()))
            os.rename(final, trash)
        os.rename(temp, final)
        _fsync_dir(self.directory)
        if trash:
            shutil.rmtree(trash, ignore_errors=True)
        self.prune()
        return final

    def prune(self):
        """Delete all but the newest ``keep`` checkpoints (renamed away first)."""
        for step, path in self.checkpoints()[:-self.keep]:
            trash = os.path.join(self.directory, ".trash-" + os.path.basename(path))
            try:
                os.rename(path, trash)
            except OSError:
                continue
            shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def read(path):
        """``(meta, arrays)`` of one checkpoint directory.

        Raises:
            ValueError: the checkpoint is incomplete or corrupt (the reason
                is in the message).
        """
        meta_path, state_path = os.path.join(path, META_FILE), os.path.join(path, STATE_FILE)
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError("unreadable %s: %s" % (META_FILE, exc)) from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("%s is not a %s file" % (META_FILE, FORMAT))
        if not os.path.exists(state_path):
            raise ValueError("%s is missing" % STATE_FILE)
        if _sha256(state_path) != meta.get("sha256"):
            raise ValueError("%s does not match the SHA-256 in %s" % (STATE_FILE, META_FILE))
        try:
            with np.load(state_path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except Exception as exc:  # zipfile/numpy raise many kinds
            raise ValueError("unreadable %s: %s" % (STATE_FILE, exc)) from exc
        specs = meta.get("variables") or []
        if len(specs) != len(arrays):
            raise ValueError("%s lists %d variables, %s holds %d"
                             % (META_FILE, len(specs), STATE_FILE, len(arrays)))
        for index, (_, shape, dtype) in enumerate(specs):
            value = arrays.get("v%05d" % index)
            if value is None or list(value.shape) != list(shape) or str(value.dtype) != dtype:
                raise ValueError("variable %d does not match %s" % (index, META_FILE))
        return meta, arrays

    def latest(self):
        """``(path, meta, arrays)`` of the newest valid checkpoint, or None.

        Invalid ones are skipped with a warning naming the reason and, on a
        writer, renamed to ``ckpt-N.corrupt`` so that pruning never counts
        them among the ``keep`` newest.
        """
        for step, path in reversed(self.checkpoints()):
            try:
                meta, arrays = self.read(path)
            except ValueError as exc:
                aside = ""
                if self.writable:
                    try:
                        os.rename(path, path + ".corrupt")
                        aside = " (moved to %s.corrupt)" % os.path.basename(path)
                    except OSError:
                        pass
                warnings.warn("Ignoring checkpoint %s: %s%s" % (path, exc, aside), stacklevel=2)
                self.rejected.append((path, str(exc)))
                continue
            return path, meta, arrays
        return None


# ---------------------------------------------------------------------------
# Keras callback
# ---------------------------------------------------------------------------


class ResumeCheckpoint(keras.callbacks.Callback):
    """Save the training state at every epoch end; stop after ``total_batches``.

    One Keras epoch is ``batches_per_epoch`` batches (``--save-every`` steps
    times ``--grad-accum``), so checkpoints fall on epoch ends, where the
    metrics are reset anyway.  ``on_train_batch_end`` stops training once
    ``total_batches`` batches have been consumed (the last epoch may be
    short); ``on_epoch_end`` then saves that final state too.  A state with
    any NaN or infinite value is never saved: ``on_epoch_end`` raises
    :class:`NonFiniteStateError` naming the step and the variable, and the
    previous checkpoints stay as they are.

    Args:
        manager: :class:`CheckpointManager`.
        batches_per_epoch: the ``steps_per_epoch`` given to ``fit``.
        total_batches: batches of the whole run.
        grad_accum: batches per optimizer step.
        meta: extra JSON-able fields for ``meta.json``.
        save: False on workers that must not write (non-chief).
        initial_batches, initial_epoch: batches consumed before this ``fit``
            and its ``initial_epoch``.
    """

    def __init__(self, manager, batches_per_epoch, total_batches, grad_accum=1, meta=None,
                 save=True, initial_batches=0, initial_epoch=0):
        super().__init__()
        self.manager = manager
        self.batches_per_epoch = int(batches_per_epoch)
        self.total_batches = int(total_batches)
        self.grad_accum = int(grad_accum)
        self.meta = dict(meta or {})
        self.write = save
        self.initial_batches, self.initial_epoch = int(initial_batches), int(initial_epoch)
        self.batches = self.initial_batches
        self.last_saved = None

    def _newest(self):
        found = self.manager.checkpoints()
        return found[-1][1] if found else "none yet"

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = (self.initial_batches
                             + (epoch - self.initial_epoch) * self.batches_per_epoch)
        self.batches = self._epoch_start

    def on_train_batch_end(self, batch, logs=None):
        self.batches = self._epoch_start + batch + 1
        if self.batches >= self.total_batches:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        arrays, specs = capture_state(self.model)  # every worker checks, so all stop alike
        bad = first_non_finite(arrays, specs)
        if bad is not None:  # never replace a good checkpoint with a diverged state
            self.model.stop_training = True
            raise NonFiniteStateError(
                "training diverged: at step %d (batch %d) %s holds %d NaN/inf value(s); this "
                "state was not saved, the last good checkpoint is kept (%s). Lower --lr, "
                "raise --warmup-steps or set --clipnorm, then rerun to resume from it."
                % (self.batches // self.grad_accum, self.batches, bad[0], bad[1],
                   self.last_saved or self._newest()))
        if not self.write:
            return
        logs = {k: float(np.asarray(v)) for k, v in (logs or {}).items()
                if np.size(np.asarray(v)) == 1}
        meta = dict(self.meta, batches=self.batches, epoch=epoch + 1, logs=logs, variables=specs)
        step = self.batches // self.grad_accum
        self.last_saved = self.manager.save(step, arrays, meta)
