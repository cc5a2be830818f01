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

Packing.  By default (``packing='document'``) the consecutive sentences of
a document are packed greedily into sequences ``[CLS] s_1 s_2 ... s_k [SEP]``
of at most ``seq_len`` tokens; a sentence longer than ``seq_len - 2`` tokens
is cut into consecutive pieces (at word boundaries for the masked LM) that
are packed like sentences.  Sequences never cross a document boundary
(RoBERTa's DOC-SENTENCES).  With ``packing='full'`` (masked LM and LM;
RoBERTa's FULL-SENTENCES) every sequence is filled to ``seq_len`` tokens from
the stream of ``chunk_size`` consecutive documents with ``[SEP]`` between
documents, cut between words (masked LM) or tokens (LM); see
:mod:`pretraining.objectives`.  The manifest records the choice as
``packing``.

Records (one ``tf.train.Example`` per sequence, int64 lists, unpadded):

* masked LM: ``token_ids`` -- the original ids ``[CLS] ... [SEP]``;
  ``mask_ids`` -- ``0`` where the token was not chosen for prediction, else
  ``1 +`` the id the model sees there (``[MASK]``, a random token or the
  original token).  This is the encoding of the original bert4keras.
* LM: ``token_ids``.
* UniLM: ``token_ids`` = ``[CLS] source [SEP] target [SEP]`` and
  ``segment_ids`` = ``0`` over ``[CLS] source [SEP]``, ``1`` over
  ``target [SEP]``.

Determinism.  Every document (with ``packing='full'``: every chunk of
``chunk_size`` documents) gets its own random generator seeded with
``(seed, dupe_round, document_index)`` (of the chunk's first document), and
records are written in corpus order (shard ``i % num_shards`` for the i-th
sequence), so the shard bytes depend only on the corpus, the tokenizer and
the arguments -- not on ``workers``.

Recipes followed: Devlin et al. 2019 (BERT: 15 % of tokens, 80/10/10) and
Google's ``create_pretraining_data.py`` (per-sequence prediction budget,
whole-word masking); Liu et al. 2019 (RoBERTa: full-length packed sequences
without NSP, re-masking with ``dupe_factor``); Cui et al. 2019 (Chinese
whole-word masking from a word segmenter); Dong et al. 2019 (UniLM).  The
class layout follows ``pretraining/data_utils.py`` of the original bert4keras.

Modules.  This file holds :class:`TextCorpus` and the command line; the rest
lives beside it and is re-exported here: :mod:`pretraining.records` (shard
names, ``manifest.json``, :func:`verify_shards`), :mod:`pretraining.dataset`
(the base class :class:`TrainingDataset`: writing and reading records) and
:mod:`pretraining.objectives` (the three kinds of data).
"""

if __name__ == "__main__" and not __package__:
    # run as a file: import this module from the package instead (see _as_script)
    import _as_script

    _as_script.run("pretraining.data_utils")

import argparse
import json
import os

from bert4keras import fileio
from pretraining.dataset import TrainingDataset
from pretraining.objectives import (
    TrainingDatasetGPT,
    TrainingDatasetRoBERTa,
    TrainingDatasetUniLM,
)
from pretraining.records import MANIFEST_NAME, RECORD_FORMAT  # noqa: F401 -- re-exported
from pretraining.records import ShardMismatchError, verify_shards

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
    parser.add_argument("--packing", choices=["document", "full"], default="document",
                        help="roberta, gpt: 'document' packs sentences of one document "
                        "(RoBERTa DOC-SENTENCES); 'full' fills every sequence from consecutive "
                        "documents with [SEP] between them (FULL-SENTENCES)")
    parser.add_argument("--pairs", action="store_true", help="unilm: lines are source<TAB>target")
    parser.add_argument("--cased", action="store_true", help="do not lowercase")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.pairs and args.model != "unilm":
        parser.error("--pairs only applies to --model unilm")
    if args.packing != "document" and args.model == "unilm":
        parser.error("--packing only applies to --model roberta and gpt")

    from bert4keras.tokenizers import Tokenizer

    tokenizer = Tokenizer(args.vocab, do_lower_case=not args.cased)
    if args.model == "roberta":
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        dataset = TrainingDatasetRoBERTa(tokenizer, args.seq_len, mask_rate=args.mask_rate,
                                         packing=args.packing)
    elif args.model == "unilm":
        dataset = TrainingDatasetUniLM(tokenizer, args.seq_len, pairs=args.pairs)
    else:
        dataset = TrainingDatasetGPT(tokenizer, args.seq_len, packing=args.packing)
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
