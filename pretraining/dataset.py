"""The base class of the pretraining datasets: tokenise, pack, write and read TFRecords.

Split out of :mod:`pretraining.data_utils` (which re-exports
:class:`TrainingDataset`; the corpus, record and determinism rules are described
there).  The objectives subclass it in :mod:`pretraining.objectives`.
"""

import json
import os
import sys

import numpy as np

from bert4keras import fileio
from bert4keras.snippets import parallel_apply_generator
from pretraining.records import (
    MANIFEST_NAME,
    RECORD_FORMAT,
    _resolve_record_names,
    _shard_names,
)


def _token_id(tokenizer, token):
    """Id of a special token, through ``token_to_id``."""
    token_id = tokenizer.token_to_id(token)
    id_to_token = getattr(tokenizer, "id_to_token", None)
    if token_id is None or (id_to_token is not None and id_to_token(token_id) != token):
        raise ValueError(f"the tokenizer's vocabulary has no {token!r}")
    return int(token_id)


def _vocab_size(tokenizer):
    for name in ("_vocab_size", "vocab_size"):
        size = getattr(tokenizer, name, None)
        if isinstance(size, (int, np.integer)):
            return int(size)
    try:
        return len(tokenizer)
    except TypeError:
        pass
    token_dict = getattr(tokenizer, "_token_dict", None)
    if token_dict is not None:
        return len(token_dict)
    raise ValueError("cannot tell the tokenizer's vocabulary size; pass vocab_size=")


class TrainingDataset:
    """Base class: tokenise documents, pack them, write and read TFRecords.

    Subclasses define ``kind``, ``features`` (the int64 list features of a
    record), :meth:`document_instances` (document -> records) and
    :meth:`model_inputs` (batched records -> ``(x, y, sample_weight)``).

    Args:
        tokenizer: any object with ``tokenize(text) -> list[str]`` (with or
            without ``[CLS]``/``[SEP]`` at the ends; they are stripped),
            ``tokens_to_ids(list[str]) -> list[int]`` and
            ``token_to_id(str) -> int``; the vocabulary size is read from
            ``_vocab_size``, ``vocab_size``, ``len(tokenizer)`` or
            ``_token_dict``, or given as ``vocab_size``.
        seq_len: maximum sequence length in tokens, ``[CLS]``/``[SEP]``
            included.
        vocab_size: overrides the size read from the tokenizer.
        cls_token, sep_token, mask_token, pad_token: special token strings.

    Raises:
        ValueError: ``seq_len`` too small or a special token missing.
    """

    kind = None
    features = ("token_ids",)
    min_seq_len = 3
    supports_dupe_factor = False

    def __init__(
        self,
        tokenizer,
        seq_len=512,
        vocab_size=None,
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        pad_token="[PAD]",
    ):
        if seq_len < self.min_seq_len:
            raise ValueError(f"seq_len must be >= {self.min_seq_len}, got {seq_len}")
        self.tokenizer = tokenizer
        self.seq_len = int(seq_len)
        self.cls_token, self.sep_token = cls_token, sep_token
        self.token_cls_id = _token_id(tokenizer, cls_token)
        self.token_sep_id = _token_id(tokenizer, sep_token)
        self.token_pad_id = _token_id(tokenizer, pad_token)
        try:
            self.token_mask_id = _token_id(tokenizer, mask_token)
        except ValueError:
            self.token_mask_id = None  # only the masked LM needs it
        self.vocab_size = int(vocab_size) if vocab_size else _vocab_size(tokenizer)

    # ------------------------------------------------------------ per document

    def tokenize(self, text):
        """Token ids of ``text`` without ``[CLS]``/``[SEP]`` (``list[int]``)."""
        tokens = self.tokenizer.tokenize(text)
        if tokens and tokens[0] == self.cls_token:
            tokens = tokens[1:]
        if tokens and tokens[-1] == self.sep_token:
            tokens = tokens[:-1]
        return [int(i) for i in self.tokenizer.tokens_to_ids(tokens)]

    def document_instances(self, document, rng):
        """Turn one corpus item into records.

        Args:
            document: one corpus item (see :mod:`pretraining.data_utils`).
            rng: a ``np.random.Generator`` owned by this document.

        Returns:
            ``list[dict[str, list[int]]]``, one dict per sequence, keyed by
            ``features``.
        """
        raise NotImplementedError

    def _process_chunk(self, task):
        """Worker entry: ``(seed, round, [(index, doc), ...]) -> [records per doc]``."""
        seed, dupe_round, items = task
        out = []
        for index, document in items:
            rng = np.random.default_rng([seed, dupe_round, index])
            out.append(self.document_instances(document, rng))
        return out

    def _serialize(self, instance):
        import tensorflow as tf

        feature = {
            name: tf.train.Feature(int64_list=tf.train.Int64List(value=instance[name]))
            for name in self.features
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        return example.SerializeToString(deterministic=True)

    def _count_masked(self, instance):
        return 0

    def _manifest_extra(self):
        return {}

    # ------------------------------------------------------------ writing

    def process(
        self,
        corpus,
        record_name_prefix,
        num_shards=1,
        workers=1,
        seed=0,
        dupe_factor=1,
        max_queue_size=None,
        chunk_size=32,
        progress=True,
    ):
        """Write the corpus as TFRecord shards plus ``manifest.json``.

        Shards are named ``{record_name_prefix}-{i:05d}-of-{n:05d}.tfrecord``;
        the manifest goes to ``manifest.json`` in the prefix's directory (so
        one directory holds one dataset) and records the counts
        (``documents``, ``sequences``, ``tokens`` -- ``[CLS]``/``[SEP]``
        included, padding excluded -- ``masked_tokens``), the settings
        (``kind``, ``seq_len``, ``vocab_size``, ``seed``, ``dupe_factor``,
        ``shards``) and the shard file names with their sequence counts and
        sizes in bytes (checked by :meth:`load_tfrecord`).  Shards are written
        under temporary names and renamed into place once all are complete,
        the old manifest removed first and the new one written last, so an
        interrupted run never leaves a manifest beside shards it does not
        describe.

        Args:
            corpus: iterable of documents (see :mod:`pretraining.data_utils`).  With
                ``dupe_factor > 1`` it is iterated several times, so it must
                be re-iterable (a list, :class:`TextCorpus`), not an iterator.
            record_name_prefix: path prefix of the shards; its directory is
                created.
            num_shards: number of shard files.
            workers: processes that tokenise and mask (``1`` = in-process).
                The output does not depend on it.
            seed: base seed; see "Determinism" in :mod:`pretraining.data_utils`.
            dupe_factor: pass over the corpus this many times, each with
                different masks (masked LM only).
            max_queue_size: chunks in flight (default ``4 * workers``).
            chunk_size: documents sent to a worker at once.
            progress: show a tqdm bar (documents) on stderr.

        Returns:
            The manifest ``dict``.

        Raises:
            ValueError: bad ``num_shards``/``workers``/``dupe_factor``, or
                ``dupe_factor > 1`` with an iterator or a kind without masks.
        """
        if num_shards < 1 or workers < 1 or dupe_factor < 1 or chunk_size < 1:
            raise ValueError("num_shards, workers, dupe_factor and chunk_size must be >= 1")
        if dupe_factor > 1:
            if not self.supports_dupe_factor:
                raise ValueError(f"dupe_factor > 1 would only copy the data for kind={self.kind!r}")
            if iter(corpus) is corpus:
                raise ValueError("dupe_factor > 1 needs a re-iterable corpus, not an iterator")
        import tensorflow as tf
        from tqdm import tqdm

        seed = int(seed)
        out_dir = fileio.dirname(os.fspath(record_name_prefix)) or "."
        fileio.makedirs(out_dir)
        names = _shard_names(os.fspath(record_name_prefix), num_shards)

        def tasks():
            for dupe_round in range(dupe_factor):
                chunk = []
                for index, document in enumerate(corpus):
                    chunk.append((index, document))
                    if len(chunk) == chunk_size:
                        yield seed, dupe_round, chunk
                        chunk = []
                if chunk:
                    yield seed, dupe_round, chunk

        if workers == 1:
            results = map(self._process_chunk, tasks())
        else:
            results = (
                result
                for _, result in parallel_apply_generator(
                    self._process_chunk,
                    tasks(),
                    workers,
                    max_queue_size or 4 * workers,
                    random_seeds=False,
                    unordered=False,
                )
            )

        try:
            total = len(corpus) * dupe_factor
        except TypeError:
            total = None
        counts = {"documents": 0, "sequences": 0, "tokens": 0, "masked_tokens": 0}
        shard_sequences = [0] * num_shards
        # Atomic: shards are written under temporary names and renamed into place
        # only when all are complete; the old manifest goes first, the new one last
        # (on object stores, where rename is a copy, the manifest is the pointer that
        # publishes the shards, and its shard sizes are checked at load).
        temps = [fileio.join(fileio.dirname(n) or ".", f".tmp-{os.getpid()}-"
                             + fileio.basename(n)) for n in names]
        own = {fileio.basename(n) for n in names}
        for stale in fileio.listdir(out_dir):
            if stale.startswith(".tmp-") and stale.split("-", 2)[-1] in own:
                fileio.remove(fileio.join(out_dir, stale))  # left by a killed run
        writers = [tf.io.TFRecordWriter(name) for name in temps]
        done = False
        try:
            with tqdm(total=total, unit="doc", disable=not progress, file=sys.stderr) as bar:
                for chunk in results:
                    for instances in chunk:
                        counts["documents"] += 1
                        for instance in instances:
                            shard = counts["sequences"] % num_shards
                            writers[shard].write(self._serialize(instance))
                            shard_sequences[shard] += 1
                            counts["sequences"] += 1
                            counts["tokens"] += len(instance["token_ids"])
                            counts["masked_tokens"] += self._count_masked(instance)
                    bar.update(len(chunk))
            done = True
        finally:
            for writer in writers:
                writer.close()
            if not done:
                for temp in temps:
                    fileio.remove(temp)
        manifest_path = fileio.join(out_dir, MANIFEST_NAME)
        fileio.remove(manifest_path)  # never an old manifest beside new shards
        for temp, name in zip(temps, names):
            fileio.rename(temp, name, overwrite=True)

        counts["documents"] //= dupe_factor
        manifest = {
            "format": RECORD_FORMAT,
            "kind": self.kind,
            "features": list(self.features),
            **counts,
            "shards": num_shards,
            "seed": seed,
            "seq_len": self.seq_len,
            "vocab_size": self.vocab_size,
            "dupe_factor": dupe_factor,
            "special_ids": {
                "cls": self.token_cls_id,
                "sep": self.token_sep_id,
                "pad": self.token_pad_id,
                "mask": self.token_mask_id,
            },
            **self._manifest_extra(),
            "files": [fileio.basename(n) for n in names],
            "shard_sequences": shard_sequences,
            "shard_bytes": [fileio.getsize(n) for n in names],
        }
        fileio.write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest

    # ------------------------------------------------------------ reading

    @classmethod
    def model_inputs(cls, batch):
        """Map a padded batch of records to ``(x, y, sample_weight)``.

        Args:
            batch: dict of ``int32`` tensors ``[batch, seq_len]`` keyed by
                ``features``; padding positions hold ``-1``.
        """
        raise NotImplementedError

    @classmethod
    def load_tfrecord(
        cls,
        record_names,
        seq_len,
        batch_size,
        shuffle=True,
        seed=None,
        repeat=False,
        drop_remainder=True,
        buffer_size=10000,
    ):
        """Read shards written by :meth:`process` as a batched ``tf.data.Dataset``.

        Call it on the class that wrote the records.  Every element is a
        Keras ``(x, y, sample_weight)`` triple of fixed shape:

        * ``x``: ``{'Input-Token': int32 [batch, seq_len],
          'Input-Segment': int32 [batch, seq_len]}``, padded with ``0``;
        * ``y``: ``int32 [batch, seq_len]`` token labels;
        * ``sample_weight``: ``float32 [batch, seq_len]``, ``1.0`` where the
          label counts, ``0.0`` elsewhere (padding included).

        What ``y`` and the weights mean depends on the kind (see the
        subclass's ``model_inputs``).  For a loss averaged over the labelled
        tokens only, compile with e.g. ``keras.losses.
        SparseCategoricalCrossentropy(reduction='mean_with_sample_weight')``.

        Args:
            record_names: a list of files, one file, a glob pattern, or the
                output directory (its ``manifest.json`` lists the shards).
            seq_len: pad every sequence to this length; longer records are cut.
            batch_size: sequences per batch.
            shuffle: shuffle shard order and records (buffer of
                ``buffer_size``).
            seed: seed for the shuffles; with a seed the order is reproducible.
            repeat: repeat forever (use ``steps_per_epoch`` in ``fit``).
            drop_remainder: drop a last short batch (keeps shapes static).
            buffer_size: record shuffle buffer size.

        Returns:
            ``tf.data.Dataset`` of ``(x, y, sample_weight)``.

        Raises:
            FileNotFoundError: no matching or missing shard files.
            ShardMismatchError: a shard's size (or record count) differs from
                its ``manifest.json`` (names the shard).
        """
        import tensorflow as tf

        files = _resolve_record_names(record_names)
        spec = {name: tf.io.VarLenFeature(tf.int64) for name in cls.features}

        def parse(serialized):
            example = tf.io.parse_single_example(serialized, spec)
            return {
                name: tf.cast(tf.sparse.to_dense(example[name])[:seq_len], tf.int32)
                for name in cls.features
            }

        dataset = tf.data.Dataset.from_tensor_slices(files)
        if shuffle:
            dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()
        dataset = dataset.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(files), 8),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        if shuffle:
            dataset = dataset.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.padded_batch(
            batch_size,
            padded_shapes={name: [seq_len] for name in cls.features},
            padding_values={name: -1 for name in cls.features},
            drop_remainder=drop_remainder,
        )
        dataset = dataset.map(cls.model_inputs, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)
