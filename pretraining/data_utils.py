"""Corpus -> TFRecord shards for pretraining, and the loader back to ``tf.data``.

Three kinds of training data, one class each:

=================================  =================================================
:class:`TrainingDatasetRoBERTa`     masked LM with whole-word masking (RoBERTa /
                                    Chinese-BERT-wwm recipe)
:class:`TrainingDatasetGPT`         left-to-right LM on packed token streams
:class:`TrainingDatasetUniLM`       sequence-to-sequence LM on (source, target)
                                    pairs (UniLM recipe)
=================================  =================================================

Corpus.  An iterable of documents; a document is a list of sentences
(``str``), or one ``str`` that is split into lines.  On disk
(:class:`TextCorpus`, the CLI): UTF-8 text, one sentence per line, a blank
line between documents.  :class:`TrainingDatasetUniLM` with ``pairs=True``
takes ``(source, target)`` tuples instead (on disk: ``source<TAB>target``).

Packing.  The consecutive sentences of a document are packed greedily into
sequences ``[CLS] s_1 s_2 ... s_k [SEP]`` of at most ``seq_len`` tokens; a
sentence longer than ``seq_len - 2`` tokens is cut into consecutive pieces
(at word boundaries for the masked LM) that are packed like sentences.
Sequences never cross a document boundary (RoBERTa's DOC-SENTENCES).

Records (one ``tf.train.Example`` per sequence, int64 lists, unpadded):

* masked LM: ``token_ids`` -- the original ids ``[CLS] ... [SEP]``;
  ``mask_ids`` -- ``0`` where the token was not chosen for prediction, else
  ``1 +`` the id the model sees there (``[MASK]``, a random token or the
  original token).  This is the encoding of the original bert4keras.
* LM: ``token_ids``.
* UniLM: ``token_ids`` = ``[CLS] source [SEP] target [SEP]`` and
  ``segment_ids`` = ``0`` over ``[CLS] source [SEP]``, ``1`` over
  ``target [SEP]``.

Determinism.  Every document gets its own random generator seeded with
``(seed, dupe_round, document_index)``, and records are written in corpus
order (shard ``i % num_shards`` for the i-th sequence), so the shard bytes
depend only on the corpus, the tokenizer and the arguments -- not on
``workers``.

Recipes followed: Devlin et al. 2019 (BERT: 15 % of tokens, 80/10/10) and
Google's ``create_pretraining_data.py`` (per-sequence prediction budget,
whole-word masking); Liu et al. 2019 (RoBERTa: full-length packed sequences
without NSP, re-masking with ``dupe_factor``); Cui et al. 2019 (Chinese
whole-word masking from a word segmenter); Dong et al. 2019 (UniLM).  The
class layout follows ``pretraining/data_utils.py`` of the original bert4keras.
"""

if __name__ == "__main__" and not __package__:
    # run as a file: import this module from the package instead (see _as_script)
    import _as_script

    _as_script.run("pretraining.data_utils")

import argparse
import json
import os
import sys

import numpy as np

from bert4keras import fileio
from bert4keras.snippets import parallel_apply_generator, truncate_sequences

__all__ = [
    "TrainingDataset",
    "TrainingDatasetRoBERTa",
    "TrainingDatasetGPT",
    "TrainingDatasetUniLM",
    "TextCorpus",
    "ShardMismatchError",
    "verify_shards",
    "main",
]

MANIFEST_NAME = "manifest.json"
RECORD_FORMAT = "bert4keras-pretraining-v1"


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


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


def _pack(units, budget):
    """Greedily group consecutive ``units`` (token lists) into ``<= budget`` tokens.

    Every unit must already be ``<= budget`` long.  Returns a list of groups
    (lists of units); order is kept.
    """
    groups, group, size = [], [], 0
    for unit in units:
        if group and size + len(unit) > budget:
            groups.append(group)
            group, size = [], 0
        group.append(unit)
        size += len(unit)
    if group:
        groups.append(group)
    return groups


def _cut(tokens, budget):
    """Cut a token list into consecutive pieces of at most ``budget`` tokens."""
    return [tokens[i : i + budget] for i in range(0, len(tokens), budget)]


def _flatten(lists):
    return [x for sub in lists for x in sub]


def _document_sentences(document):
    if isinstance(document, str):
        document = document.splitlines()
    return [s for s in (line.strip() for line in document) if s]


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


# ---------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------


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
            document: one corpus item (see the module docstring).
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
            corpus: iterable of documents (see the module docstring).  With
                ``dupe_factor > 1`` it is iterated several times, so it must
                be re-iterable (a list, :class:`TextCorpus`), not an iterator.
            record_name_prefix: path prefix of the shards; its directory is
                created.
            num_shards: number of shard files.
            workers: processes that tokenise and mask (``1`` = in-process).
                The output does not depend on it.
            seed: base seed; see "Determinism" in the module docstring.
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


def _shift_left(tensor, fill):
    """``[b, L] -> [b, L]`` with ``out[:, t] = tensor[:, t + 1]`` and ``fill`` at the end."""
    import tensorflow as tf

    return tf.concat([tensor[:, 1:], tf.fill([tf.shape(tensor)[0], 1], fill)], axis=1)


# ---------------------------------------------------------------------------
# Masked LM
# ---------------------------------------------------------------------------


class TrainingDatasetRoBERTa(TrainingDataset):
    """Masked-LM data with whole-word masking (RoBERTa / BERT-wwm recipe).

    Each sentence is tokenised and its tokens grouped into whole words with
    ``word_segment`` (default ``jieba.lcut``), see :meth:`sentence_words`.
    For every packed sequence of ``n`` tokens (without
    ``[CLS]``/``[SEP]``) the budget is ``max(1, round(n * mask_rate))``
    tokens: words are visited in random order and taken whole while they
    fit the budget (a word that would overflow it is skipped), as in
    Google's ``create_pretraining_data.py``.  Each chosen token then becomes
    ``[MASK]`` with probability 0.8, a random token with 0.1 (uniform over
    the vocabulary minus ``[PAD]``/``[CLS]``/``[SEP]``/``[MASK]``), and stays
    itself with 0.1.

    Args:
        tokenizer, seq_len, vocab_size: see :class:`TrainingDataset`.
        word_segment: ``text -> list[str]`` whose pieces concatenate to the
            text; default ``jieba.lcut``.
        mask_rate: fraction of tokens chosen for prediction.
        **special_tokens: ``cls_token`` etc., see :class:`TrainingDataset`.

    Raises:
        ValueError: the vocabulary has no ``[MASK]`` or ``mask_rate`` is not
            in ``(0, 1)``.
    """

    kind = "roberta"
    features = ("token_ids", "mask_ids")
    supports_dupe_factor = True

    def __init__(self, tokenizer, seq_len=512, word_segment=None, mask_rate=0.15,
                 vocab_size=None, **special_tokens):
        super().__init__(tokenizer, seq_len, vocab_size, **special_tokens)
        if self.token_mask_id is None:
            raise ValueError("masked LM needs a mask token in the vocabulary")
        self.token_mask_id = int(self.token_mask_id)
        if not 0 < mask_rate < 1:
            raise ValueError(f"mask_rate must be in (0, 1), got {mask_rate}")
        self.mask_rate = float(mask_rate)
        if word_segment is None:
            import jieba

            jieba.initialize()  # load the dictionary once, before workers fork
            word_segment = jieba.lcut
        self.word_segment = word_segment
        special = {self.token_pad_id, self.token_cls_id, self.token_sep_id, self.token_mask_id}
        self._random_ids = np.array([i for i in range(self.vocab_size) if i not in special])

    def sentence_words(self, text):
        """Token ids of ``text`` grouped into whole words: ``list[list[int]]``.

        If the tokenizer has ``rematch(text, tokens)`` (token -> character
        indices), the whole sentence is tokenised once -- so the ids are
        exactly what the tokenizer gives at fine-tuning time -- and tokens are
        grouped: a token joins the previous group when it is a ``##``
        continuation or shares a segmenter word with the previous token (so
        ``１ ##９ ##９ ##８`` stays one unit even where jieba cuts it into four
        words).  Otherwise every segmenter word is tokenised on its own, as
        the original bert4keras did.

        Raises:
            ValueError: the ``word_segment`` pieces do not concatenate to
                ``text`` (rematch path).
        """
        if not hasattr(self.tokenizer, "rematch"):
            words = (self.tokenize(word) for word in self.word_segment(text))
            return [w for w in words if w]
        tokens = self.tokenizer.tokenize(text)
        spans = self.tokenizer.rematch(text, tokens)
        pieces = self.word_segment(text)
        if sum(len(p) for p in pieces) != len(text):
            raise ValueError("word_segment pieces must concatenate to the text")
        char_word = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])
        ids = self.tokenizer.tokens_to_ids(tokens)
        groups, previous = [], None
        for token, token_id, span in zip(tokens, ids, spans):
            if token in (self.cls_token, self.sep_token) and not span:
                continue
            words = {int(char_word[c]) for c in span}
            continues = token.startswith("##") and len(token) > 2
            if groups and (continues or (words and previous and words & previous)):
                groups[-1].append(int(token_id))
            else:
                groups.append([int(token_id)])
            previous = words
        return groups

    def mask_words(self, words, rng):
        """Mask one sequence given as words; return its record.

        Args:
            words: ``list[list[int]]``, the token ids of each word, in order.
            rng: ``np.random.Generator``.

        Returns:
            ``{'token_ids': [CLS] + tokens + [SEP], 'mask_ids': ...}`` (see the
            module docstring for ``mask_ids``), both ``list[int]``.
        """
        n = sum(len(w) for w in words)
        budget = max(1, int(round(n * self.mask_rate)))
        chosen, taken = np.zeros(len(words), dtype=bool), 0
        for i in rng.permutation(len(words)):
            if taken >= budget:
                break
            if taken + len(words[i]) <= budget:
                chosen[i] = True
                taken += len(words[i])
        draws = rng.random(taken)
        random_ids = self._random_ids[rng.integers(len(self._random_ids), size=taken)]
        token_ids, mask_ids, k = [self.token_cls_id], [0], 0
        for word, is_chosen in zip(words, chosen):
            token_ids.extend(word)
            if not is_chosen:
                mask_ids.extend([0] * len(word))
                continue
            for token in word:
                if draws[k] < 0.8:
                    shown = self.token_mask_id
                elif draws[k] < 0.9:
                    shown = token
                else:
                    shown = int(random_ids[k])
                mask_ids.append(shown + 1)
                k += 1
        token_ids.append(self.token_sep_id)
        mask_ids.append(0)
        return {"token_ids": token_ids, "mask_ids": mask_ids}

    def document_instances(self, document, rng):
        budget = self.seq_len - 2
        units = []  # sentences (or pieces of long ones) as word lists
        for sentence in _document_sentences(document):
            piece, size = [], 0
            for word in self.sentence_words(sentence):
                word = word[:budget]
                if piece and size + len(word) > budget:
                    units.append(piece)
                    piece, size = [], 0
                piece.append(word)
                size += len(word)
            if piece:
                units.append(piece)
        groups, group, size = [], [], 0
        for unit in units:
            n = sum(len(w) for w in unit)
            if group and size + n > budget:
                groups.append(group)
                group, size = [], 0
            group.extend(unit)
            size += n
        if group:
            groups.append(group)
        return [self.mask_words(words, rng) for words in groups]

    def _count_masked(self, instance):
        return sum(1 for m in instance["mask_ids"] if m)

    def _manifest_extra(self):
        return {"mask_rate": self.mask_rate}

    @classmethod
    def model_inputs(cls, batch):
        """Masked-LM triple from padded records.

        * ``x['Input-Token']``: ids with the masks applied
          (``mask_ids - 1`` where ``mask_ids > 0``, else ``token_ids``);
        * ``x['Input-Segment']``: zeros;
        * ``y`` (``mlm_labels``): the original ``token_ids``;
        * ``sample_weight`` (``mlm_weights``): ``1.0`` where ``mask_ids > 0``.
        """
        import tensorflow as tf

        token_ids, mask_ids = batch["token_ids"], batch["mask_ids"]
        valid = token_ids >= 0
        token_ids = tf.where(valid, token_ids, 0)
        is_masked = mask_ids > 0
        inputs = tf.where(is_masked, mask_ids - 1, token_ids)
        x = {"Input-Token": inputs, "Input-Segment": tf.zeros_like(inputs)}
        return x, token_ids, tf.cast(is_masked, tf.float32)


# ---------------------------------------------------------------------------
# Left-to-right LM
# ---------------------------------------------------------------------------


class TrainingDatasetGPT(TrainingDataset):
    """Left-to-right LM data: packed ``[CLS] s_1 ... s_k [SEP]`` token streams.

    Args: see :class:`TrainingDataset`.
    """

    kind = "gpt"
    features = ("token_ids",)

    def document_instances(self, document, rng):
        budget = self.seq_len - 2
        units = []
        for sentence in _document_sentences(document):
            units.extend(_cut(self.tokenize(sentence), budget))
        units = [u for u in units if u]
        return [
            {"token_ids": [self.token_cls_id] + _flatten(group) + [self.token_sep_id]}
            for group in _pack(units, budget)
        ]

    @classmethod
    def model_inputs(cls, batch):
        """Next-token triple from padded records.

        * ``x['Input-Token']``: ``token_ids`` (``[CLS] ... [SEP]``, 0-padded);
        * ``x['Input-Segment']``: zeros;
        * ``y``: the next token, ``y[:, t] = token_ids[:, t + 1]`` (0 at the end);
        * ``sample_weight``: ``1.0`` where ``t + 1`` is inside the sequence
          (the final ``[SEP]`` is predicted; ``[CLS]`` is not).
        """
        import tensorflow as tf

        token_ids = batch["token_ids"]
        valid = token_ids >= 0
        token_ids = tf.where(valid, token_ids, 0)
        x = {"Input-Token": token_ids, "Input-Segment": tf.zeros_like(token_ids)}
        labels = _shift_left(token_ids, 0)
        weights = tf.cast(_shift_left(valid, False), tf.float32)
        return x, labels, weights


# ---------------------------------------------------------------------------
# Sequence-to-sequence LM
# ---------------------------------------------------------------------------


class TrainingDatasetUniLM(TrainingDataset):
    """UniLM data: ``[CLS] source [SEP] target [SEP]`` with segment ids 0 / 1.

    With ``pairs=True`` every corpus item is a ``(source, target)`` pair of
    strings; a pair longer than ``seq_len`` is shortened with
    :func:`~bert4keras.snippets.truncate_sequences` (the longer side loses
    tokens from its end).  With ``pairs=False`` (the default) items are
    documents: their sentences are packed into chunks of at most
    ``seq_len - 3`` tokens, and each chunk becomes one pair, split at the
    sentence boundary closest to half of its tokens (a one-sentence chunk is
    split at its middle token); a chunk of a single token is dropped.

    Args:
        tokenizer, seq_len, vocab_size, **special_tokens: see
            :class:`TrainingDataset`.
        pairs: read corpus items as ``(source, target)`` pairs.
    """

    kind = "unilm"
    features = ("token_ids", "segment_ids")
    min_seq_len = 5

    def __init__(self, tokenizer, seq_len=512, pairs=False, vocab_size=None, **special_tokens):
        super().__init__(tokenizer, seq_len, vocab_size, **special_tokens)
        self.pairs = bool(pairs)

    def _instance(self, source, target):
        cls_id, sep_id = self.token_cls_id, self.token_sep_id
        token_ids = [cls_id] + source + [sep_id] + target + [sep_id]
        segment_ids = [0] * (len(source) + 2) + [1] * (len(target) + 1)
        return {"token_ids": token_ids, "segment_ids": segment_ids}

    def document_instances(self, document, rng):
        budget = self.seq_len - 3
        if self.pairs:
            source, target = document
            source, target = truncate_sequences(budget, -1, self.tokenize(source),
                                                self.tokenize(target))
            return [self._instance(source, target)]
        units = []
        for sentence in _document_sentences(document):
            units.extend(_cut(self.tokenize(sentence), budget))
        instances = []
        for group in _pack([u for u in units if u], budget):
            if len(group) == 1:
                tokens = group[0]
                if len(tokens) < 2:
                    continue
                half = len(tokens) // 2
                instances.append(self._instance(tokens[:half], tokens[half:]))
                continue
            sizes = np.cumsum([len(u) for u in group])
            split = int(np.argmin(np.abs(sizes[:-1] - sizes[-1] / 2))) + 1
            instances.append(self._instance(_flatten(group[:split]), _flatten(group[split:])))
        return instances

    def _manifest_extra(self):
        return {"pairs": self.pairs}

    @classmethod
    def model_inputs(cls, batch):
        """Seq2seq triple from padded records.

        * ``x['Input-Token']``: ``token_ids`` (0-padded);
        * ``x['Input-Segment']``: ``segment_ids`` (0-padded);
        * ``y``: the next token, ``y[:, t] = token_ids[:, t + 1]``;
        * ``sample_weight``: ``segment_ids[:, t + 1]`` as float -- only target
          tokens (and the final ``[SEP]``) are predicted.
        """
        import tensorflow as tf

        token_ids, segment_ids = batch["token_ids"], batch["segment_ids"]
        valid = token_ids >= 0
        token_ids = tf.where(valid, token_ids, 0)
        segment_ids = tf.where(valid, segment_ids, 0)
        x = {"Input-Token": token_ids, "Input-Segment": segment_ids}
        labels = _shift_left(token_ids, 0)
        weights = tf.cast(_shift_left(segment_ids, 0), tf.float32)
        return x, labels, weights


# ---------------------------------------------------------------------------
# Corpus files and the command line
# ---------------------------------------------------------------------------


class TextCorpus:
    """Re-iterable corpus over UTF-8 text files.

    Documents mode (default): one sentence per line, blank lines separate
    documents; yields ``list[str]`` per document.  Pairs mode: one
    ``source<TAB>target`` per non-blank line; yields ``(source, target)``.

    Args:
        paths: file paths (a single path is accepted too).
        pairs: read tab-separated pairs.

    Raises:
        FileNotFoundError: a path does not exist (checked up front).
        ValueError: while iterating, a pairs-mode line without a tab.
    """

    def __init__(self, paths, pairs=False):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [os.fspath(p) for p in paths]
        missing = [p for p in self.paths if not fileio.isfile(p)]
        if missing:
            raise FileNotFoundError(f"corpus files not found: {missing}")
        self.pairs = pairs

    def __iter__(self):
        for path in self.paths:
            with fileio.open(path, "r") as f:
                if self.pairs:
                    for n, line in enumerate(f, 1):
                        line = line.rstrip("\r\n")
                        if not line.strip():
                            continue
                        if "\t" not in line:
                            raise ValueError(f"{path}:{n}: expected 'source<TAB>target'")
                        source, target = line.split("\t", 1)
                        yield source, target
                    continue
                document = []
                for line in f:
                    line = line.strip()
                    if line:
                        document.append(line)
                    elif document:
                        yield document
                        document = []
                if document:
                    yield document


DATASETS = {
    "roberta": TrainingDatasetRoBERTa,
    "gpt": TrainingDatasetGPT,
    "unilm": TrainingDatasetUniLM,
}


def main(argv=None):
    """Command line: write pretraining TFRecords from text files.

    Example::

        python -m pretraining.data_utils --model roberta --vocab vocab.txt \\
            --corpus a.txt b.txt --seq-len 128 --out data/ --workers 2 --seed 0

    Uses :class:`bert4keras.tokenizers.Tokenizer` and prints the manifest.
    Returns the manifest ``dict``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m pretraining.data_utils",
        description="Turn text files (one sentence per line, blank line between "
        "documents) into TFRecord shards for pretraining.",
    )
    parser.add_argument("--model", choices=sorted(DATASETS), required=True)
    parser.add_argument("--vocab", required=True, help="WordPiece vocab.txt")
    parser.add_argument("--corpus", nargs="+", required=True, help="UTF-8 text files")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-shards", type=int, default=1)
    parser.add_argument("--dupe-factor", type=int, default=1,
                        help="re-mask the corpus N times (roberta)")
    parser.add_argument("--mask-rate", type=float, default=0.15, help="roberta only")
    parser.add_argument("--pairs", action="store_true", help="unilm: lines are source<TAB>target")
    parser.add_argument("--cased", action="store_true", help="do not lowercase")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.pairs and args.model != "unilm":
        parser.error("--pairs only applies to --model unilm")

    from bert4keras.tokenizers import Tokenizer

    tokenizer = Tokenizer(args.vocab, do_lower_case=not args.cased)
    if args.model == "roberta":
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        dataset = TrainingDatasetRoBERTa(tokenizer, args.seq_len, mask_rate=args.mask_rate)
    elif args.model == "unilm":
        dataset = TrainingDatasetUniLM(tokenizer, args.seq_len, pairs=args.pairs)
    else:
        dataset = TrainingDatasetGPT(tokenizer, args.seq_len)
    corpus = TextCorpus(args.corpus, pairs=args.pairs)
    manifest = dataset.process(
        corpus,
        fileio.join(args.out, args.model),
        num_shards=args.num_shards,
        workers=args.workers,
        seed=args.seed,
        dupe_factor=args.dupe_factor,
        progress=not args.quiet,
    )
    summary = {k: v for k, v in manifest.items() if k not in ("files", "shard_sequences")}
    print(json.dumps(summary, indent=2, sort_keys=True))
    return manifest


if __name__ == "__main__":
    main()
