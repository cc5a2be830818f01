"""Checkpoint readers and writers.

Two on-disk formats are read:

* a TensorFlow checkpoint as Google released BERT (``bert_model.ckpt.index`` +
  ``.data-*``; a directory holding a ``checkpoint`` state file, or the prefix),
  read with ``tf.train.load_checkpoint``;
* a Hugging Face directory: ``model.safetensors``, or shards listed in
  ``model.safetensors.index.json``, read with ``safetensors``.

Both readers answer ``names()``, ``shape(name)`` and ``get(name)`` (a NumPy
array). :func:`write_tf_checkpoint` writes Google-format TF checkpoints.

Weight *names* are not decided here: each model family carries its name map
as data (see :mod:`bert4keras.models`); :func:`resolve` looks a mapped name up
in a reader, trying the usual spelling variants of the format.
"""

import glob
import json
import os

import numpy as np

SAFETENSORS_INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


class TFCheckpointReader:
    """Reads variables of a TensorFlow (Google-format) checkpoint.

    Args:
        path: the checkpoint prefix (``.../bert_model.ckpt``) or a directory
            with a ``checkpoint`` state file or a single ``*.index`` file.

    Raises:
        CheckpointError: when no checkpoint is found or it cannot be read.
    """

    format = "google"

    def __init__(self, path):
        import tensorflow as tf

        self.path = self._find_prefix(path, tf)
        try:
            self._reader = tf.train.load_checkpoint(self.path)
        except Exception as exc:  # tf raises several error types here
            raise CheckpointError("Cannot read TF checkpoint %r: %s" % (self.path, exc)) from exc
        self._shapes = self._reader.get_variable_to_shape_map()

    @staticmethod
    def _find_prefix(path, tf):
        if os.path.isdir(path):
            latest = tf.train.latest_checkpoint(path)
            if latest:
                return latest
            indexes = glob.glob(os.path.join(path, "*.index"))
            if len(indexes) == 1:
                return indexes[0][: -len(".index")]
            raise CheckpointError(
                "No TF checkpoint in directory %r (no 'checkpoint' file and %d '*.index' files)"
                % (path, len(indexes))
            )
        if path.endswith(".index") or ".data-" in path:
            path = path.split(".data-")[0]
            path = path[: -len(".index")] if path.endswith(".index") else path
        if not os.path.exists(path + ".index"):
            raise CheckpointError("TF checkpoint not found: %r (no %r)" % (path, path + ".index"))
        return path

    def names(self):
        return sorted(self._shapes)

    def shape(self, name):
        return tuple(self._shapes[name])

    def get(self, name):
        return np.asarray(self._reader.get_tensor(name))


class SafetensorsReader:
    """Reads tensors of a Hugging Face directory of ``*.safetensors`` files.

    Args:
        path: a directory holding ``model.safetensors`` or a sharded
            ``model.safetensors.index.json``, or one ``.safetensors`` file.

    Raises:
        CheckpointError: when no safetensors file is found, the index names a
            missing shard, or a file cannot be parsed.
    """

    format = "hf"

    def __init__(self, path):
        from safetensors import safe_open

        self.path = path
        files = self._find_files(path)
        self._where = {}
        self._handles = []
        for f in files:
            try:
                handle = safe_open(f, framework="numpy")
            except Exception as exc:
                raise CheckpointError("Cannot read safetensors file %r: %s" % (f, exc)) from exc
            self._handles.append(handle)
            for key in handle.keys():
                self._where[key] = handle

    @staticmethod
    def _find_files(path):
        if os.path.isfile(path):
            return [path]
        index = os.path.join(path, SAFETENSORS_INDEX)
        if os.path.exists(index):
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f).get("weight_map", {})
            files = sorted({os.path.join(path, v) for v in weight_map.values()})
            missing = [f for f in files if not os.path.exists(f)]
            if missing:
                raise CheckpointError("%s names missing shard(s): %s" % (index, ", ".join(missing)))
            return files
        single = os.path.join(path, "model.safetensors")
        if os.path.exists(single):
            return [single]
        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if files:
            return files
        raise CheckpointError(
            "No model.safetensors, %s or *.safetensors in %r (PyTorch .bin files are not "
            "read: convert them with safetensors first)" % (SAFETENSORS_INDEX, path)
        )

    def names(self):
        return sorted(self._where)

    def shape(self, name):
        return tuple(self._where[name].get_slice(name).get_shape())

    def get(self, name):
        return np.asarray(self._where[name].get_tensor(name))


def is_hf_directory(path):
    """True if ``path`` is a safetensors file or a directory of them."""
    if os.path.isfile(path):
        return path.endswith(".safetensors")
    return os.path.isdir(path) and (
        os.path.exists(os.path.join(path, SAFETENSORS_INDEX))
        or bool(glob.glob(os.path.join(path, "*.safetensors")))
    )


def open_checkpoint(path):
    """Return a reader for a Google TF checkpoint or a Hugging Face directory.

    Raises:
        CheckpointError: naming ``path`` when nothing readable is there.
    """
    if path is None:
        raise CheckpointError("checkpoint_path is None")
    path = os.fspath(path)
    if is_hf_directory(path):
        return SafetensorsReader(path)
    if os.path.isdir(path):
        has_tf = os.path.exists(os.path.join(path, "checkpoint")) or glob.glob(
            os.path.join(path, "*.index"))
        if not has_tf:
            bins = [f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".h5"))]
            raise CheckpointError(
                "No checkpoint in directory %r: neither a TF checkpoint ('checkpoint' file or "
                "*.index) nor *.safetensors%s" % (path, (
                    "; found %s, which is not read: convert it to safetensors first"
                    % ", ".join(sorted(bins))) if bins else ""))
        return TFCheckpointReader(path)
    if os.path.exists(path + ".index") or path.endswith(".index"):
        return TFCheckpointReader(path)
    raise CheckpointError(
        "Checkpoint not found: %r is neither a TF checkpoint prefix (no %r) nor a directory "
        "with *.safetensors" % (path, path + ".index")
    )


def _variants(name, prefixes):
    """Spellings under which a mapped name may be stored."""
    out = [name]
    for prefix in prefixes:
        if name.startswith(prefix):
            out.append(name[len(prefix):])
        else:
            out.append(prefix + name)
    more = []
    for n in out:  # old HF files: LayerNorm.gamma/beta
        if n.endswith("LayerNorm.weight"):
            more.append(n[: -len("weight")] + "gamma")
        elif n.endswith("LayerNorm.bias"):
            more.append(n[: -len("bias")] + "beta")
    return out + more


def resolve(reader, name, prefixes=()):
    """Find ``name`` in ``reader``, with or without a model prefix.

    Args:
        reader: a checkpoint reader.
        name: the mapped name (e.g. ``'bert.encoder.layer.0.output.dense.weight'``).
        prefixes: model prefixes that may be present or absent (``'bert.'``).

    Returns:
        The stored name, or None when absent.
    """
    names = reader._names_set if hasattr(reader, "_names_set") else None
    if names is None:
        names = reader._names_set = set(reader.names())
    for candidate in _variants(name, prefixes):
        if candidate in names:
            return candidate
    return None


def write_tf_checkpoint(prefix, tensors):
    """Write ``{name: array}`` as a TF checkpoint readable by Google's code.

    Writes ``prefix.index`` and ``prefix.data-00000-of-00001`` (TF's V2 format,
    via the ``SaveV2`` op, so variable names are exactly the given ones) and a
    ``checkpoint`` state file in the same directory pointing at ``prefix``.
    The files are written under a temporary prefix and renamed, so an
    interrupted write never leaves a readable half-checkpoint.

    Args:
        prefix: path prefix, e.g. ``'out/bert_model.ckpt'``.
        tensors: mapping of variable name to NumPy array.
    """
    import tensorflow as tf

    prefix = os.fspath(prefix)
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    names = sorted(tensors)
    tmp = prefix + ".tmp-write"
    tf.raw_ops.SaveV2(
        prefix=tmp,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(np.asarray(tensors[n])) for n in names],
    )
    for suffix in (".data-00000-of-00001", ".index"):  # index last: it marks completeness
        os.replace(tmp + suffix, prefix + suffix)
    state = os.path.join(directory, "checkpoint")
    base = os.path.basename(prefix)
    with open(state + ".tmp", "w", encoding="utf-8") as f:
        f.write('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' % (base, base))
    os.replace(state + ".tmp", state)
