"""Training inputs of ``pretraining.pretraining``: records checks and ``tf.data`` steps.

Split out of :mod:`pretraining.pretraining` (which re-exports every name here):
the ``manifest.json`` of ``--records`` and its vocabulary check
(:func:`check_records_vocab`), and the pipeline steps applied to the batches of
:meth:`pretraining.data_utils.TrainingDataset.load_tfrecord` before ``fit``
(:func:`gather_masked`, :func:`normalize_weights`, :func:`rebuilt_per_iterator`),
and :func:`training_batches`, which chains them as the training loop does.
"""

import json
import os
import warnings

from bert4keras import fileio
from bert4keras.models import load_config


class RecordsMismatchError(ValueError):
    """The TFRecords were written for another vocabulary than the model config's."""


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


def training_batches(data_cls, records, seq_len, global_batch, seed, max_predictions=None,
                     skip=0):
    """The seeded, endless global batches ``pretraining.pretraining`` trains on.

    ``data_cls.load_tfrecord(records, seq_len, global_batch, shuffle=True,
    seed=seed, repeat=True)``, then for the masked LM (``max_predictions``
    given) :func:`gather_masked`, then :func:`normalize_weights`, minus the
    first ``skip`` batches (those a resumed run consumed), built afresh for
    every iterator (:func:`rebuilt_per_iterator`), so every iterator yields
    the same sequence.

    Args:
        data_cls: the :class:`~pretraining.dataset.TrainingDataset` subclass
            that wrote ``records``.
        records: a records directory (with ``manifest.json``), file or glob.
        seq_len: sequence length in tokens.
        global_batch: sequences per batch (all replicas together).
        seed: seed of the shuffles.
        max_predictions: masked positions kept per sequence (masked LM), or
            None to keep every position (``gpt`` / ``unilm``).
        skip: batches to skip at the start.

    Returns:
        ``tf.data.Dataset`` of ``(x, labels, weights)``: ``x`` as
        :meth:`~pretraining.dataset.TrainingDataset.load_tfrecord` gives, plus
        ``Input-MLM-Positions`` ``int32 [global_batch, max_predictions]`` for
        the masked LM; ``labels`` and ``weights`` ``[global_batch, max_predictions]``
        (masked LM) or ``[global_batch, seq_len]``.

    Raises:
        FileNotFoundError, ShardMismatchError: as ``load_tfrecord`` (when an
            iterator is first taken).
    """

    def global_batches():
        dataset = data_cls.load_tfrecord(records, seq_len, global_batch, shuffle=True,
                                         seed=seed, repeat=True)
        if max_predictions is not None:
            dataset = gather_masked(dataset, max_predictions)
        return normalize_weights(dataset).skip(skip)

    return rebuilt_per_iterator(global_batches)


def records_manifest(records):
    """The ``manifest.json`` that describes ``--records`` (a directory, or files beside one).

    Returns the manifest ``dict``, or None when there is none.
    """
    from pretraining.records import MANIFEST_NAME

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
