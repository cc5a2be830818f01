"""Checkpoint readers and writers.

Two on-disk formats are read:

* a TensorFlow checkpoint as Google released BERT (``bert_model.ckpt.index`` +
  ``.data-*``; a directory holding a ``checkpoint`` state file, or the prefix),
  read with ``tf.train.load_checkpoint``;
* a Hugging Face directory: ``model.safetensors``, or shards listed in
  ``model.safetensors.index.json``, read with ``safetensors``.

Both readers answer ``names()``, ``shape(name)`` and ``get(name)`` (a NumPy
array). :func:`write_tf_checkpoint` writes Google-format TF checkpoints,
:func:`write_hf_directory` Hugging Face directories (the mirror of the reader).

Paths go through :mod:`bert4keras.fileio` (``tf.io.gfile`` for every
``scheme://`` path): local paths, ``gs://`` and ``ram://`` all work.  A
safetensors file away from the local disk is read whole into memory
(``safetensors.numpy.load`` on its bytes); a local one is read one tensor at
a time into a fresh array (:class:`bert4keras.loading.SafetensorsFile`), and a
tensor over :data:`bert4keras.loading.BLOCK_BYTES` a block of rows at a time,
written into its variable in place: loading holds at most one small stored
tensor or one block besides the model's weights.  Every failed read of a stored
tensor -- a truncated ``.data`` file, a damaged safetensors file -- raises
:class:`CheckpointError` naming the file and the variable.

Weight *names* are not decided here: each model family carries its name map
as data (see :mod:`bert4keras.models`); :func:`resolve` looks a mapped name up
in a reader, trying the usual spelling variants of the format.
"""

import json
import os
import re
import warnings

import numpy as np

from bert4keras import fileio, loading

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
        try:  # not tf.train.load_checkpoint: on ram:// every prefix looks like a directory
            self._reader = tf.compat.v1.train.NewCheckpointReader(self.path)
        except Exception as exc:  # tf raises several error types here
            raise CheckpointError("Cannot read TF checkpoint %r: %s" % (self.path, exc)) from exc
        self._shapes = self._reader.get_variable_to_shape_map()

    @staticmethod
    def _find_prefix(path, tf):
        if fileio.isdir(path):
            latest = tf.train.latest_checkpoint(path)
            if latest and fileio.exists(latest + ".index"):
                return latest
            indexes = fileio.glob(fileio.join(path, "*.index"))
            if len(indexes) == 1:
                return indexes[0][: -len(".index")]
            raise CheckpointError(
                "No TF checkpoint in directory %r (no 'checkpoint' file and %d '*.index' files)"
                % (path, len(indexes))
            )
        if path.endswith(".index") or ".data-" in path:
            path = path.split(".data-")[0]
            path = path[: -len(".index")] if path.endswith(".index") else path
        if not fileio.exists(path + ".index"):
            raise CheckpointError("TF checkpoint not found: %r (no %r)" % (path, path + ".index"))
        return path

    def names(self):
        return sorted(self._shapes)

    def shape(self, name):
        return tuple(self._shapes[name])

    def get(self, name):
        """The stored tensor ``name`` as a NumPy array.

        Raises:
            CheckpointError: naming the checkpoint and ``name`` when the data
                cannot be read (e.g. a truncated ``.data`` file).
        """
        try:
            return np.asarray(self._reader.get_tensor(name))
        except Exception as exc:  # IndexError, DataLossError, ... from TensorFlow
            raise CheckpointError(
                "Cannot read variable %r of TF checkpoint %r (%s: %s); the .data file may be "
                "truncated or damaged" % (name, self.path, type(exc).__name__, exc)) from exc


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
        self.path = path
        files = self._find_files(path)
        self._where = {}  # stored name -> (file, safe_open handle or {name: array})
        for f in files:
            try:
                handle = self._open(f)
            except Exception as exc:
                raise CheckpointError("Cannot read safetensors file %r: %s" % (f, exc)) from exc
            for key in handle.keys():
                self._where[key] = (f, handle)

    @staticmethod
    def _open(f):
        """A local file is read tensor by tensor (:class:`bert4keras.loading.SafetensorsFile`);
        elsewhere (gs://, ram://) its bytes are parsed whole."""
        if fileio.is_local(f):
            return loading.SafetensorsFile(f)
        from safetensors.numpy import load

        return load(fileio.read_bytes(f))

    @staticmethod
    def _find_files(path):
        if fileio.isfile(path):
            return [path]
        index = fileio.join(path, SAFETENSORS_INDEX)
        if fileio.exists(index):
            try:
                weight_map = json.loads(fileio.read_text(index)).get("weight_map", {})
            except ValueError as exc:
                raise CheckpointError("Cannot parse %s: %s" % (index, exc)) from exc
            files = sorted({fileio.join(path, v) for v in weight_map.values()})
            missing = [f for f in files if not fileio.exists(f)]
            if missing:
                raise CheckpointError("%s names missing shard(s): %s" % (index, ", ".join(missing)))
            return files
        single = fileio.join(path, "model.safetensors")
        if fileio.exists(single):
            return [single]
        files = fileio.glob(fileio.join(path, "*.safetensors"))
        if files:
            return files
        raise CheckpointError(
            "No model.safetensors, %s or *.safetensors in %r (PyTorch .bin files are not "
            "read: convert them with safetensors first)" % (SAFETENSORS_INDEX, path)
        )

    def names(self):
        return sorted(self._where)

    def shape(self, name):
        handle = self._where[name][1]
        if isinstance(handle, dict):
            return tuple(handle[name].shape)
        return handle.shape(name)

    def row_reader(self, name):
        """``read(start, stop)`` -> rows ``[start, stop)`` of tensor ``name``
        (its first axis) as a new array, for a tensor in a local file; None
        for one parsed whole from another file system."""
        f, handle = self._where[name]
        if isinstance(handle, dict):
            return None

        def read(start, stop):
            try:
                return handle.get_rows(name, start, stop)
            except CheckpointError:
                raise
            except Exception as exc:  # OSError and the like, named as get() names them
                raise CheckpointError("Cannot read rows %d:%d of variable %r of safetensors "
                                      "file %r (%s: %s)" % (start, stop, name, f,
                                                            type(exc).__name__, exc)) from exc
        return read

    def get(self, name):
        """The stored tensor ``name`` as a NumPy array.

        Raises:
            CheckpointError: naming the file and ``name`` when it cannot be read.
        """
        f, handle = self._where[name]
        try:
            return np.asarray(handle[name] if isinstance(handle, dict)
                              else handle.get_tensor(name))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError("Cannot read variable %r of safetensors file %r (%s: %s)"
                                  % (name, f, type(exc).__name__, exc)) from exc


def is_hf_directory(path):
    """True if ``path`` is a safetensors file or a directory of them."""
    if fileio.isfile(path):
        return path.endswith(".safetensors")
    return fileio.isdir(path) and (
        fileio.exists(fileio.join(path, SAFETENSORS_INDEX))
        or bool(fileio.glob(fileio.join(path, "*.safetensors")))
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
    if fileio.isdir(path):
        has_tf = fileio.exists(fileio.join(path, "checkpoint")) or fileio.glob(
            fileio.join(path, "*.index"))
        if not has_tf:
            bins = [f for f in fileio.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".h5"))]
            raise CheckpointError(
                "No checkpoint in directory %r: neither a TF checkpoint ('checkpoint' file or "
                "*.index) nor *.safetensors%s" % (path, (
                    "; found %s, which is not read: convert it to safetensors first"
                    % ", ".join(sorted(bins))) if bins else ""))
        return TFCheckpointReader(path)
    if fileio.exists(path + ".index") or path.endswith(".index"):
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
    The files are written under a temporary prefix and moved, the ``.index``
    last (it marks completeness), so an interrupted write never leaves a
    readable half-checkpoint. ``prefix`` may be local, ``gs://`` or
    ``ram://`` (``tf.io.gfile``); where rename is not atomic (object stores)
    the old ``.index`` is deleted before the new ``.data`` arrives, so an
    interrupted overwrite leaves no index rather than a mismatched one.

    Args:
        prefix: path prefix, e.g. ``'out/bert_model.ckpt'``.
        tensors: mapping of variable name to NumPy array.
    """
    import tensorflow as tf

    prefix = os.fspath(prefix)
    directory = fileio.dirname(os.path.abspath(prefix) if fileio.is_local(prefix) else prefix)
    fileio.makedirs(directory)
    names = sorted(tensors)
    tmp = "%s.tmp-write-%s" % (prefix, fileio.unique_suffix())
    tf.raw_ops.SaveV2(
        prefix=tmp,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(np.asarray(tensors[n])) for n in names],
    )
    if not fileio.atomic_rename(prefix):
        fileio.remove(prefix + ".index")
    for suffix in (".data-00000-of-00001", ".index"):  # index last: it marks completeness
        fileio.rename(tmp + suffix, prefix + suffix, overwrite=True)
    base = fileio.basename(prefix)
    fileio.write_text(fileio.join(directory, "checkpoint"),
                      'model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n'
                      % (base, base))


# -- the checkpoint-name language -------------------------------------------------
#
# A model family names the stored tensor of each Keras weight in a small
# language: ``name`` (the stored tensor itself), ``name:T`` (stored transposed
# relative to the Keras weight), ``a|b`` (alternative spellings, the first
# present one is read; the first is written), and ``name[k/n]`` (chunk ``k`` of
# ``n`` equal parts of the stored tensor's last axis, e.g. GPT-2's fused
# ``c_attn`` holding query, key and value side by side).

#: checkpoint formats, in the column order of the families' name maps.
FORMATS = ("google", "hf")


def parse_spec(spec):
    """``'a[0/3]|b:T'`` -> ``([('a', (0, 3)), ('b', None)], True)``.

    Returns:
        ``(alternatives, transposed)``: each alternative is ``(stored name,
        chunk)`` with ``chunk`` ``(k, n)`` or None.
    """
    transposed = spec.endswith(":T")
    if transposed:
        spec = spec[:-2]
    return [_split_chunk(name) for name in spec.split("|")], transposed


def _split_chunk(name):
    """``'w[1/3]'`` -> ``('w', (1, 3))``; a name without the suffix -> ``(name, None)``."""
    if name.endswith("]") and "[" in name:
        base, _, spec = name[:-1].rpartition("[")
        index, _, parts = spec.partition("/")
        return base, (int(index), int(parts))
    return name, None


# -- family signatures ---------------------------------------------------------------

#: ``(signature, hf_prefixes)`` of every family that declares one, in
#: declaration order (see :func:`register_family`).
_FAMILIES = []


def register_family(signature, prefixes=()):
    """Record a family's ``signature`` so :func:`checkpoint_families` knows it.

    Args:
        signature: ``{"family": model key, "present": [(google name, hf name),
            ...], "absent": [...]}``: names that every checkpoint of the family
            has / never has (either column may be None).
        prefixes: model prefixes its Hugging Face files may or may not carry.
    """
    _FAMILIES.append((signature, tuple(prefixes)))


def matches_signature(reader, signature, prefixes=()):
    """True if ``reader`` has every ``present`` and no ``absent`` name of
    ``signature`` (None for no signature)."""
    if not signature:
        return None
    column = FORMATS.index(reader.format)

    def has(pair):
        names = pair[column]
        return names is not None and any(
            resolve(reader, _split_chunk(n)[0], prefixes) for n in names.split("|"))

    return (all(has(p) for p in signature.get("present", ()))
            and not any(has(p) for p in signature.get("absent", ())))


def checkpoint_families(reader):
    """``model=`` keys of the registered families whose signature ``reader`` matches."""
    found = []
    for signature, prefixes in _FAMILIES:
        if matches_signature(reader, signature, prefixes) and signature["family"] not in found:
            found.append(signature["family"])
    return found


def describe_checkpoint(reader, signature=None):
    """A sentence fragment for errors: a few stored names and the families
    the checkpoint looks like, relative to the model's ``signature``."""
    sample = ", ".join(reader.names()[:3])
    text = "; first few: %s" % sample if sample else ""
    if not _FAMILIES:
        return text
    found = checkpoint_families(reader)
    if found:
        text += ". Its variables look like model=%s" % " or ".join(repr(f) for f in found)
    else:
        text += ". It matches none of the known families (%s)" % ", ".join(
            sorted({s["family"] for s, _ in _FAMILIES}))
    if signature:
        family = signature["family"]
        if found and family in found:
            text += ("; that is this model's family, so the checkpoint lacks an optional part "
                     "(a head such as with_pool/with_nsp/with_mlm that it was not trained with?)")
        else:
            text += "; this model is model=%r" % family
    return text


# -- loading and collecting ------------------------------------------------------------


def load(reader, mapping, prefixes=(), keep_tokens=None, vocab_axes=None, signature=None):
    """Assign stored tensors to Keras weights.

    Args:
        reader: a checkpoint reader (:func:`open_checkpoint`).
        mapping: ``{layer name: [(weight, spec), ...]}``: each Keras weight
            (a ``keras.Variable``) with its stored name in the name language
            above.
        prefixes: model prefixes Hugging Face names may or may not carry.
        keep_tokens: original token ids to keep (a simplified vocabulary) or
            None; applied to the layers named in ``vocab_axes``.
        vocab_axes: ``{layer name: vocabulary axis of the stored tensor, after
            transposition}`` for the layers sliced by ``keep_tokens``.
        signature: the model family's signature: named in the error when a
            variable is missing, and a warning is given when the loaded
            checkpoint looks like another family.

    Warns:
        UserWarning: once, listing the checkpoint variables left unused that
            repeat the pattern of loaded ones up to their numbers (e.g.
            ``bert/encoder/layer_5/...`` when only layers 0-3 were loaded:
            a config with fewer layers than the checkpoint). Heads the model
            does not build and optimizer slots are not reported.

    Raises:
        CheckpointError: naming the checkpoint and the first variable that is
            missing, or both names and both shapes on a shape mismatch, or a
            ``keep_tokens`` id beyond the stored vocabulary.
    """
    vocab_axes = vocab_axes or {}
    used = set()
    for layer_name, pairs in mapping.items():
        for weight, spec in pairs:
            alternatives, transposed = parse_spec(spec)
            stored, chunk = _first_present(reader, alternatives, prefixes)
            if stored is None:
                raise CheckpointError(
                    "Variable %r (for layer %s) is missing from checkpoint %r, which has %d "
                    "variables%s" % (spec.replace(":T", ""), layer_name, reader.path,
                                     len(reader.names()), describe_checkpoint(reader, signature)))
            used.add(stored)
            if _load_in_blocks(reader, stored, weight, chunk, transposed,
                               keep_tokens is not None and layer_name in vocab_axes):
                continue
            value = reader.get(stored)
            if chunk is not None:
                value = np.split(value, chunk[1], axis=-1)[chunk[0]]
            if transposed:
                value = value.T
            if keep_tokens is not None and layer_name in vocab_axes:
                axis = vocab_axes[layer_name]
                if value.shape[axis] <= keep_tokens.max():
                    raise CheckpointError(
                        "keep_tokens refers to id %d but %r in %r has only %d rows"
                        % (keep_tokens.max(), stored, reader.path, value.shape[axis]))
                value = np.take(value, keep_tokens, axis=axis)
            if tuple(value.shape) != tuple(weight.shape):
                raise CheckpointError(
                    "Shape mismatch: checkpoint variable %r in %r has shape %s%s but model "
                    "weight %s of layer %s has shape %s (check the config against the "
                    "checkpoint)" % (stored, reader.path, tuple(reader.shape(stored)),
                                     (" (chunk %d of %d)" % chunk if chunk else "")
                                     + (" (transposed)" if transposed else ""), weight.path,
                                     layer_name, tuple(weight.shape)))
            loading.assign(weight, value.astype(loading.numpy_dtype(weight.dtype), copy=False))
            del value  # one stored tensor at a time
    _warn_unused(reader, used)
    if matches_signature(reader, signature, prefixes) is False:
        found = checkpoint_families(reader)
        if found:
            warnings.warn("Loaded %r into model=%r, but the checkpoint looks like model=%s"
                          % (reader.path, signature["family"],
                             " or ".join(repr(f) for f in found)), stacklevel=3)


def _load_in_blocks(reader, stored, weight, chunk, transposed, sliced):
    """Write ``stored`` into ``weight`` a block of rows at a time, straight
    from the file (:func:`bert4keras.loading.assign_blocks`), when the reader
    can read rows (a local safetensors file), the tensor is over
    :data:`~bert4keras.loading.BLOCK_BYTES` and is neither split, sliced by
    ``keep_tokens`` nor a transposed tensor of rank other than 2; True if
    it did (a shape mismatch raises as :func:`load` does)."""
    read = getattr(reader, "row_reader", lambda name: None)(stored)
    shape = tuple(reader.shape(stored))
    if (read is None or chunk is not None or sliced or not shape
            or (transposed and len(shape) != 2)
            or np.prod(shape, dtype=np.int64) * loading.numpy_dtype(weight.dtype).itemsize
            <= loading.BLOCK_BYTES):
        return False
    if (shape[::-1] if transposed else shape) != tuple(weight.shape):
        return False  # load() reads it whole and names both shapes
    return loading.assign_blocks(weight, read, shape[0], axis=1 if transposed else 0,
                                 transpose=transposed)


def _warn_unused(reader, used):
    """One warning listing the stored names not in ``used`` that equal a used
    name once every run of digits is ignored (extra layers/blocks)."""
    def pattern(name):
        return re.sub(r"\d+", "#", name)

    loaded = {pattern(name) for name in used}
    unused = sorted(n for n in reader.names() if n not in used and pattern(n) in loaded)
    if unused:
        warnings.warn(
            "Checkpoint %r has %d variable(s) like the loaded ones that the model left unused "
            "(does the config have fewer layers than the checkpoint?): %s"
            % (reader.path, len(unused), ", ".join(unused)), UserWarning, stacklevel=4)


def _first_present(reader, alternatives, prefixes):
    """``(stored name, chunk)`` of the first alternative ``reader`` has, or ``(None, None)``."""
    for name, chunk in alternatives:
        stored = resolve(reader, name, prefixes)
        if stored is not None:
            return stored, chunk
    return None, None


def collect(mapping):
    """``{stored name: np.ndarray}`` of ``mapping``'s weights, as :func:`load`
    would read them back (first spelling of each name; chunks concatenated).

    Args:
        mapping: ``{layer name: [(weight, spec), ...]}`` as for :func:`load`.
    """
    import keras

    tensors, chunks = {}, {}
    for pairs in mapping.values():
        for weight, spec in pairs:
            (name, chunk), transposed = parse_spec(spec)[0][0], spec.endswith(":T")
            value = np.asarray(keras.ops.convert_to_numpy(weight))
            value = value.T if transposed else value
            if chunk is None:
                tensors[name] = value
            else:
                chunks.setdefault(name, {})[chunk[0]] = value
    for name, parts in chunks.items():
        tensors[name] = np.concatenate([parts[k] for k in sorted(parts)], axis=-1)
    return tensors


# -- writing a Hugging Face directory --------------------------------------------------


def write_hf_directory(directory, tensors, config):
    """Write ``{name: array}`` and ``config`` as a Hugging Face model directory.

    The layout is that of ``transformers``' ``save_pretrained``:
    ``directory/model.safetensors`` (one file in the safetensors format,
    huggingface/safetensors, with the ``{"format": "pt"}`` metadata that
    ``from_pretrained`` checks) and ``directory/config.json``. Each file is
    written under a temporary name and renamed, ``config.json`` last, so an
    interrupted write never leaves a directory that looks complete; where
    rename is not atomic (``gs://``, ``ram://``: :mod:`bert4keras.fileio`)
    each file goes straight to its name, an old ``config.json`` being
    deleted first. :class:`SafetensorsReader` reads the directory back.

    Args:
        directory: the output directory (created if missing).
        tensors: ``{name: array}``; each is written C-contiguous in its dtype.
        config: a JSON-serialisable ``dict`` (``model_type``, ``architectures``
            and the model's sizes).

    Raises:
        CheckpointError: ``directory`` is an existing file, or a config value
            is not JSON-serialisable (the key is named).
    """
    from safetensors.numpy import save

    directory = os.fspath(directory)
    if fileio.isfile(directory):
        raise CheckpointError("Cannot write a Hugging Face directory at %r: it is a file"
                              % directory)
    for key, value in config.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise CheckpointError("config.json value of %r is not JSON-serialisable: %r"
                                  % (key, value)) from exc
    fileio.makedirs(directory)
    path = fileio.join(directory, "config.json")
    if not fileio.atomic_rename(directory):
        fileio.remove(path)
    fileio.write_bytes(fileio.join(directory, "model.safetensors"), save(
        {name: np.ascontiguousarray(value) for name, value in tensors.items()},
        metadata={"format": "pt"}))
    fileio.write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
