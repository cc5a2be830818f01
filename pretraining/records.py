"""The TFRecord files of ``pretraining.data_utils``: names, manifest and shard checks.

Split out of :mod:`pretraining.data_utils` (which re-exports the public names).
A dataset directory holds shards ``{prefix}-{i:05d}-of-{n:05d}.tfrecord`` and a
``manifest.json`` (:data:`MANIFEST_NAME`, format :data:`RECORD_FORMAT`) that
records each shard's size; :func:`verify_shards` compares the files with it.
"""

import json
import os

import numpy as np

from bert4keras import fileio

MANIFEST_NAME = "manifest.json"
RECORD_FORMAT = "bert4keras-pretraining-v1"


def _shard_names(prefix, num_shards):
    return [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


class ShardMismatchError(ValueError):
    """A TFRecord shard does not match what its ``manifest.json`` recorded (truncated?)."""


def _count_records(path):
    import tensorflow as tf

    return int(tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1))


def verify_shards(manifest_path, files=None):
    """Check shards against ``manifest.json``: size in bytes, else record count.

    ``shard_bytes`` (written since this check exists) is compared with each
    file's size, which costs nothing; manifests without it have their
    ``shard_sequences`` compared with a count of the records (a full read).

    Args:
        manifest_path: the ``manifest.json`` written by :meth:`TrainingDataset.process`.
        files: the shard paths to check (default: all the manifest lists);
            files the manifest does not list are not checked.

    Raises:
        ShardMismatchError: names the shard, what the manifest says and what
            the file holds.
    """
    manifest = json.loads(fileio.read_text(manifest_path))
    folder = fileio.dirname(manifest_path)
    listed = {fileio.join(folder, n): i for i, n in enumerate(manifest.get("files", []))}
    sizes, counts = manifest.get("shard_bytes"), manifest.get("shard_sequences")
    for path in files if files is not None else list(listed):
        index = listed.get(fileio.join(folder, fileio.basename(path)))
        if index is None or not fileio.isfile(path):
            continue
        if sizes is not None:
            size = fileio.getsize(path)
            if size != sizes[index]:
                raise ShardMismatchError(
                    f"TFRecord shard {path} has {size} bytes but {manifest_path} records "
                    f"{sizes[index]} ({counts[index] if counts else '?'} sequences): the shard "
                    "is truncated or was rewritten; rebuild the records with "
                    "pretraining.data_utils")
        elif counts is not None:
            found = _count_records(path)
            if found != counts[index]:
                raise ShardMismatchError(
                    f"TFRecord shard {path} holds {found} records but {manifest_path} "
                    f"records {counts[index]}: the shard is truncated or was rewritten; "
                    "rebuild the records with pretraining.data_utils")


def _resolve_record_names(record_names):
    """Files for ``load_tfrecord``: a list, a file, a glob or a directory.

    Shards listed in a ``manifest.json`` beside them are checked against it
    (:func:`verify_shards`).
    """
    if isinstance(record_names, (str, os.PathLike)):
        name = os.fspath(record_names)
        if fileio.isdir(name):
            manifest_path = fileio.join(name, MANIFEST_NAME)
            if not fileio.isfile(manifest_path):
                raise FileNotFoundError(f"{name} is a directory without {MANIFEST_NAME}")
            files = [fileio.join(name, n)
                     for n in json.loads(fileio.read_text(manifest_path))["files"]]
        elif fileio.has_magic(name):
            files = fileio.glob(name)
        else:
            files = [name]
    else:
        files = [os.fspath(n) for n in record_names]
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {record_names!r}")
    missing = [f for f in files if not fileio.isfile(f)]
    if missing:
        raise FileNotFoundError(f"TFRecord files not found: {missing[:5]}")
    for folder in sorted({fileio.dirname(f) for f in files}):
        manifest_path = fileio.join(folder, MANIFEST_NAME)
        if fileio.isfile(manifest_path):
            verify_shards(manifest_path, [f for f in files if fileio.dirname(f) == folder])
    return files
