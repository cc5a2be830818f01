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

Writing is atomic: on a local disk both files are written into a hidden
temporary directory, flushed and ``fsync``-ed, the directory is renamed to its
final name and the parent directory is ``fsync``-ed.  A process killed at any
moment therefore leaves either a complete checkpoint or a hidden temporary
directory, which is never read and is deleted on the next start.  On
``gs://`` (and ``ram://``), where renaming a directory is a copy and a delete,
the files go into a directory of a unique name and a pointer file
``ckpt-NNNNNNNN``, written last in one piece, publishes it (see
:class:`CheckpointManager`); ``scheme://`` paths go through ``tf.io.gfile``
(:mod:`bert4keras.fileio`).  On load, checkpoints are tried newest first;
one whose ``meta.json`` is missing or unreadable, or whose ``state.npz``
does not match its recorded hash, shapes or dtypes, is skipped with a
warning.  Only the newest ``keep`` (default 2) are kept.

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
import time
import warnings

import keras
import numpy as np

from bert4keras import fileio

FORMAT = "bert4keras-train-state-v1"
POINTER_FORMAT = "bert4keras-train-state-pointer-v1"
STATE_FILE = "state.npz"
META_FILE = "meta.json"
_NAME = re.compile(r"^ckpt-(\d{8,})$")
_DATA_NAME = re.compile(r"^ckpt-(\d{8,})\.\d+-[0-9a-f]{8}$")
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
    """Flush a local directory entry to disk (nothing on other file systems)."""
    fileio.fsync(path)


def _sha256(path):
    return fileio.sha256(path)


class _HashingWriter(fileio.StreamWriter):
    """:class:`bert4keras.fileio.StreamWriter` that also hashes what it writes."""

    def __init__(self, handle):
        super().__init__(handle)
        self.digest = hashlib.sha256()

    def write(self, data):
        self.digest.update(data)
        return super().write(data)


def _pointer_text(step, data_name, sha256):
    return json.dumps({"format": POINTER_FORMAT, "step": int(step), "directory": data_name,
                       "sha256": sha256}) + "\n"


class CheckpointManager:
    """Atomic, validated checkpoints in ``directory``; see the module docstring.

    ``directory`` may be local, ``gs://`` or ``ram://`` (``tf.io.gfile``).
    Where rename is atomic (a local disk) a checkpoint is written into a
    hidden temporary directory that is renamed to ``ckpt-NNNNNNNN``.  Elsewhere
    (object stores, ``ram://``) renaming a directory is a copy and a delete,
    so a checkpoint is written into a directory of its own unique name,
    ``ckpt-NNNNNNNN.<pid>-<random>``, and then published by the pointer file
    ``ckpt-NNNNNNNN`` (a small JSON object naming that directory and the
    SHA-256 of its ``state.npz``), written last in one piece.  A directory no
    pointer names is an interrupted save: never read, deleted by the next
    writer.  Either way ``directory/ckpt-NNNNNNNN`` is the path of the
    checkpoint (:meth:`checkpoints`, :meth:`read`, ``pretraining.export``).

    Args:
        directory: where ``ckpt-*`` entries live (created).
        keep: how many of the newest checkpoints to keep (>= 1).
        cleanup: delete leftover temporary directories now, and move invalid
            checkpoints aside (``ckpt-N.corrupt``, which is never read nor
            pruned) when :meth:`latest` meets them.  Pass False on processes
            that must not write (non-chief workers).
        atomic_rename: force the local (True) or the pointer (False) layout;
            default: :func:`bert4keras.fileio.atomic_rename` of ``directory``.
    """

    def __init__(self, directory, keep=2, cleanup=True, atomic_rename=None):
        if keep < 1:
            raise ValueError("keep must be >= 1, got %r" % (keep,))
        self.directory = os.fspath(directory)
        self.keep = int(keep)
        self.writable = bool(cleanup)
        self.atomic = (fileio.atomic_rename(self.directory) if atomic_rename is None
                       else bool(atomic_rename))
        self.rejected = []  # [(path, reason)] of invalid checkpoints met by latest()
        if cleanup:
            fileio.makedirs(self.directory)
            self.remove_temporaries()

    def _path(self, name):
        return fileio.join(self.directory, name)

    def remove_temporaries(self):
        """Delete what an interrupted save left: hidden temporaries, unpublished directories."""
        names = fileio.listdir(self.directory)
        referenced, unreadable = set(), set()
        for name in names:
            base = name[:-len(".corrupt")] if name.endswith(".corrupt") else name
            if _NAME.match(base) and fileio.isfile(self._path(name)):
                try:
                    referenced.add(self._pointer(self._path(name))["directory"])
                except ValueError:
                    unreadable.add(base)
        for name in names:
            data = _DATA_NAME.match(name)
            if name.startswith(_TEMP_PREFIXES) or (
                    data and name not in referenced
                    and "ckpt-" + data.group(1) not in unreadable):
                fileio.rmtree(self._path(name))

    def corrupt(self):
        """Paths of checkpoints moved aside as ``ckpt-N.corrupt`` (by this or an earlier run)."""
        return [self._path(name) for name in fileio.listdir(self.directory)
                if name.endswith(".corrupt") and _NAME.match(name[:-len(".corrupt")])]

    def checkpoints(self):
        """``[(step, path), ...]`` of published checkpoints, oldest first (not validated).

        ``path`` is ``directory/ckpt-NNNNNNNN``: a directory, or a pointer file.
        """
        found = []
        for name in fileio.listdir(self.directory):
            match = _NAME.match(name)
            if match:
                found.append((int(match.group(1)), self._path(name)))
        return sorted(found)

    @staticmethod
    def _pointer(path):
        """The JSON object of pointer file ``path``; ValueError when unreadable."""
        try:
            pointer = json.loads(fileio.read_text(path))
        except Exception as exc:  # noqa: BLE001 -- OSError, ValueError, tf errors
            raise ValueError("unreadable pointer file: %s" % exc) from exc
        if (not isinstance(pointer, dict) or pointer.get("format") != POINTER_FORMAT
                or not _DATA_NAME.match(str(pointer.get("directory")))):
            raise ValueError("%s is not a %s file" % (fileio.basename(path), POINTER_FORMAT))
        return pointer

    def _write_files(self, folder, arrays, meta):
        """``state.npz`` then ``meta.json`` into ``folder``; returns the final meta."""
        with fileio.open(fileio.join(folder, STATE_FILE), "wb") as f:
            writer = _HashingWriter(f)
            np.savez(writer, **arrays)
            f.flush()
        fileio.fsync(fileio.join(folder, STATE_FILE))
        meta = dict(meta, format=FORMAT, sha256=writer.digest.hexdigest(),
                    saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        with fileio.open(fileio.join(folder, META_FILE), "w") as f:
            f.write(json.dumps(meta, indent=1))
            f.flush()
        fileio.fsync(fileio.join(folder, META_FILE))
        return meta

    def save(self, step, arrays, meta):
        """Write ``arrays`` and ``meta`` as ``ckpt-{step}`` atomically; prune; return the path."""
        fileio.makedirs(self.directory)
        final = self._path("ckpt-%08d" % step)
        meta = dict(meta, step=int(step))
        if not self.atomic:
            return self._save_with_pointer(step, final, arrays, meta)
        temp = self._path(".tmp-ckpt-%08d-%d" % (step, os.getpid()))
        fileio.rmtree(temp)
        fileio.makedirs(temp)
        self._write_files(temp, arrays, meta)
        _fsync_dir(temp)
        trash = None
        if fileio.exists(final):  # same step saved again: swap it out
            trash = self._path(".trash-ckpt-%08d-%d" % (step, os.getpid()))
            fileio.rename(final, trash, overwrite=False)
        fileio.rename(temp, final, overwrite=False)
        _fsync_dir(self.directory)
        if trash:
            fileio.rmtree(trash)
        self.prune()
        return final

    def _save_with_pointer(self, step, final, arrays, meta):
        data_name = "ckpt-%08d.%s" % (step, fileio.unique_suffix())
        folder = self._path(data_name)
        fileio.makedirs(folder)
        meta = self._write_files(folder, arrays, meta)
        old = None
        if fileio.isfile(final):  # same step saved again: its old data goes after the switch
            try:
                old = self._pointer(final)["directory"]
            except ValueError:
                old = None
        fileio.write_text(final, _pointer_text(step, data_name, meta["sha256"]))
        if old and old != data_name:
            fileio.rmtree(self._path(old))
        self.prune()
        return final

    def _remove(self, path):
        """Delete checkpoint ``path``: the pointer first, then the data it names."""
        if fileio.isdir(path):
            trash = self._path(".trash-" + fileio.basename(path))
            if self.atomic:
                fileio.rename(path, trash, overwrite=True)
                path = trash
            fileio.rmtree(path)
            return
        try:
            data = self._pointer(path)["directory"]
        except ValueError:
            data = None
        fileio.remove(path)
        if data:
            fileio.rmtree(self._path(data))

    def prune(self):
        """Delete all but the newest ``keep`` checkpoints."""
        for _, path in self.checkpoints()[:-self.keep]:
            try:
                self._remove(path)
            except Exception:  # noqa: BLE001 -- pruning must not stop training
                continue

    @staticmethod
    def read(path):
        """``(meta, arrays)`` of one checkpoint: its directory or its pointer file.

        Raises:
            ValueError: the checkpoint is incomplete or corrupt (the reason
                is in the message).
        """
        path = os.fspath(path)
        expected_sha = None
        if fileio.isfile(path):  # a pointer file (object stores, ram://)
            pointer = CheckpointManager._pointer(path)
            expected_sha = pointer.get("sha256")
            path = fileio.join(fileio.dirname(path), pointer["directory"])
        meta_path, state_path = fileio.join(path, META_FILE), fileio.join(path, STATE_FILE)
        try:
            meta = json.loads(fileio.read_text(meta_path))
        except Exception as exc:  # noqa: BLE001 -- OSError, ValueError, tf NotFoundError
            raise ValueError("unreadable %s: %s" % (META_FILE, exc)) from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("%s is not a %s file" % (META_FILE, FORMAT))
        if expected_sha is not None and meta.get("sha256") != expected_sha:
            raise ValueError("%s does not match its pointer file" % META_FILE)
        if not fileio.isfile(state_path):
            raise ValueError("%s is missing" % STATE_FILE)
        if _sha256(state_path) != meta.get("sha256"):
            raise ValueError("%s does not match the SHA-256 in %s" % (STATE_FILE, META_FILE))
        try:
            with fileio.open(state_path, "rb") as f, np.load(f, allow_pickle=False) as npz:
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
        writer, renamed to ``ckpt-N.corrupt`` (a pointer file is renamed, its
        data stays) so that pruning never counts them among the ``keep`` newest.
        """
        for _, path in reversed(self.checkpoints()):
            try:
                meta, arrays = self.read(path)
            except ValueError as exc:
                aside = ""
                if self.writable:
                    try:
                        fileio.rename(path, path + ".corrupt", overwrite=False)
                        aside = " (moved to %s.corrupt)" % fileio.basename(path)
                    except Exception:  # noqa: BLE001 -- OSError, tf errors
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
