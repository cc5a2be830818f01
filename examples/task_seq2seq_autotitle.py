"""Title generation with UniLM on BERT: write the title of a paper from its abstract.

Task: the CSL title task of CLGE (Chinese Language Generation Evaluation;
CSL, the Chinese Scientific Literature abstracts, Li et al., COLING 2022):
the source is an abstract, the target its title. The same script trains on
news (THUCNews: each ``.txt`` file holds a title line, then the article).

Data, read unchanged from the official files (the format is chosen by the
path):

* ``*.tsv`` (any other file name): one pair per line, ``title<TAB>content``
  (CLGE's CSL files as the original bert4keras recipe read them); a line
  of three fields ``prefix<TAB>abstract<TAB>title`` (the ``to title``
  files of the CSL benchmark, ``benchmark/ts/``) is read too;
* ``*.json`` / ``*.jsonl``: JSON lines with ``title`` and ``abst``
  (``csl_title_public/csl_title_{train,dev,test}.json``);
* a directory: THUCNews (``CATEGORY/ID.txt``, first line the title, the
  rest the content); as it has no splits, ``--thucnews DIR`` splits its
  files 90/5/5 with ``--seed``.

By default the script runs on ``examples/data/csl_sample/`` (36 pairs of
abstracts and titles in the CSL style, train 24 / dev 6 / test 6, written by
us for this recipe, not taken from CSL): **sample only**, the scores on it
only show that the pipeline runs.

Model: UniLM (``application='unilm'``): ``[CLS] abstract [SEP]`` (segment 0,
cut to ``--max-source`` tokens) then ``title [SEP]`` (segment 1, at most
``--max-target`` tokens); the loss is the cross-entropy of the next title
token, averaged over the title tokens. Titles are decoded by beam search
with the key/value cache (:class:`seq2seq_kit.Seq2seqDecoder`, ``--beams``).

Scores, as the original recipe reports them: ROUGE-1, ROUGE-2, ROUGE-L (F1)
and BLEU-4 of the generated title against the reference, on characters,
averaged over the titles (:func:`seq2seq_kit.generation_scores`). The best
epoch by validation BLEU is kept.

    python examples/task_seq2seq_autotitle.py                  # sample only
    python examples/task_seq2seq_autotitle.py --model-dir chinese_L-12_H-768_A-12 \\
        --train csl_title_public/csl_title_train.json --dev csl_title_public/csl_title_dev.json \\
        --test csl_title_public/csl_title_test.json --epochs 10 --lr 2e-5
    python examples/task_seq2seq_autotitle.py --thucnews THUCNews --epochs 3
"""

import glob
import os
import random
import time

import common  # first: it loads TensorFlow without the C++ start-up log

from common import DataFormatError, write_json
from seq2seq_kit import (Seq2seqDecoder, add_seq2seq_args, build_for_training, encode_source,
                         encode_target, fit_best, format_generation_scores, generation_scores,
                         run_record, setup)

SAMPLE_DIR = os.path.join(common.HERE, "data", "csl_sample")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def read_tsv(path):
    """``(content, title)`` pairs of a tab-separated file: ``title<TAB>content``
    per line, or ``prefix<TAB>abstract<TAB>title``.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: a line with another number of fields or an empty
            title or content (file and line named).
    """
    if not os.path.exists(path):
        raise FileNotFoundError("title data file %r not found" % path)
    pairs = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) == 2:
                title, content = fields
            elif len(fields) == 3:
                _, content, title = fields
            else:
                raise DataFormatError.at(path, number, "expected 'title<TAB>content' (or "
                                         "'prefix<TAB>abstract<TAB>title'), got %d fields"
                                         % len(fields))
            if not title.strip() or not content.strip():
                raise DataFormatError.at(path, number, "empty title or content")
            pairs.append((content.strip(), title.strip()))
    return pairs


def read_json_pairs(path):
    """``(abst, title)`` pairs of CLGE's CSL JSON lines (``title``, ``abst``).

    Raises:
        FileNotFoundError, DataFormatError: see :func:`common.read_json_lines`;
            or a line without a string ``title`` / ``abst``.
    """
    pairs = []
    for number, obj in common.read_json_lines(path, "title data", "{path}:{line}"):
        where = "%s:%d" % (path, number)
        title = common.require(obj, "title", str, where)
        abst = common.require(obj, "abst", str, where)
        pairs.append((abst.strip(), title.strip()))
    return pairs


def read_thucnews(directory):
    """``(content, title)`` pairs of a THUCNews directory (``*/*.txt``, or
    ``*.txt`` directly inside): the first non-empty line is the title, the
    rest the content; files without content are skipped. Sorted by path.

    Raises:
        FileNotFoundError: the directory holds no ``.txt`` file.
    """
    files = sorted(glob.glob(os.path.join(directory, "*", "*.txt")) +
                   glob.glob(os.path.join(directory, "*.txt")))
    if not files:
        raise FileNotFoundError("no THUCNews .txt files under %r" % directory)
    pairs = []
    for path in files:
        with open(path, encoding="utf-8-sig") as f:
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
        if len(lines) > 1:
            pairs.append(("\n".join(lines[1:]), lines[0]))
    return pairs


def read_pairs(path):
    """The ``(source text, title)`` pairs of a file or THUCNews directory
    (format chosen by the path, see the module docstring)."""
    if os.path.isdir(path):
        return read_thucnews(path)
    if path.endswith((".json", ".jsonl")):
        return read_json_pairs(path)
    return read_tsv(path)


def load_splits(args):
    """``{'train', 'dev', 'test'}`` lists of pairs, each cut to ``--limit``."""
    if args.thucnews:
        pairs = read_thucnews(args.thucnews)
        random.Random(args.seed).shuffle(pairs)
        n_train, n_dev = len(pairs) * 9 // 10, len(pairs) // 20
        splits = dict(train=pairs[:n_train], dev=pairs[n_train:n_train + n_dev],
                      test=pairs[n_train + n_dev:])
    else:
        splits = {k: read_pairs(getattr(args, k)) if getattr(args, k) else []
                  for k in ("train", "dev", "test")}
    if args.limit:
        splits = {k: v[:args.limit] for k, v in splits.items()}
    return splits


# ---------------------------------------------------------------------------
# Generation and scores
# ---------------------------------------------------------------------------


def generate_titles(decoder, tokenizer, texts, args):
    """The generated title of every text (beam search of width ``--beams``)."""
    sources = [encode_source(tokenizer, text, maxlen=args.max_source) for text in texts]
    outputs = decoder.generate(sources, batch_size=args.batch_size, beams=args.beams)
    return [tokenizer.decode(ids) for ids in outputs]


def evaluate(decoder, tokenizer, pairs, args):
    """``(scores, titles)`` of the pairs (:func:`seq2seq_kit.generation_scores`)."""
    titles = generate_titles(decoder, tokenizer, [text for text, _ in pairs], args)
    return generation_scores([title for _, title in pairs], titles), titles


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.tsv"),
                   help="training pairs (.tsv, .json lines or a THUCNews directory)")
    p.add_argument("--dev", default=os.path.join(SAMPLE_DIR, "dev.tsv"),
                   help="validation pairs (the best epoch by BLEU is kept)")
    p.add_argument("--test", default=os.path.join(SAMPLE_DIR, "test.tsv"),
                   help="test pairs ('' for none)")
    p.add_argument("--thucnews", default=None,
                   help="a THUCNews directory, split 90/5/5 with --seed (replaces the three)")
    add_seq2seq_args(p, epochs=10, lr=1e-4, batch_size=8, beams=4, max_source=256,
                     max_target=32, limit="pairs per split")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tokenizer, config, checkpoint = setup(args)
    splits = load_splits(args)
    if not splits["train"] or not splits["dev"]:
        raise SystemExit("training and validation pairs are needed (--train, --dev)")
    print("pairs: train %d, dev %d, test %d" % tuple(len(splits[k])
                                                      for k in ("train", "dev", "test")))
    pairs = [(encode_source(tokenizer, text, maxlen=args.max_source),
              encode_target(tokenizer, title, args.max_target))
             for text, title in splits["train"]]
    transformer, train = build_for_training(args, config, checkpoint, pairs)
    decoder = Seq2seqDecoder(transformer, tokenizer.token_to_id("[SEP]"), args.max_target,
                             jit_compile=False if args.eager else "auto")
    dev = splits["dev"][:args.eval_limit or None]
    evaluator, train_seconds = fit_best(
        args, transformer.model, train, lambda: evaluate(decoder, tokenizer, dev, args)[0],
        key=lambda s: s["bleu"],
        report=lambda s, best: "dev %s (best BLEU %.2f)" % (format_generation_scores(s),
                                                           100 * best))
    results = run_record(args, evaluator, train_seconds, config, checkpoint,
                         pairs={k: len(v) for k, v in splits.items()})
    if splits["test"]:
        start = time.time()
        test, titles = evaluate(decoder, tokenizer, splits["test"], args)
        results.update(test=test, test_seconds=round(time.time() - start, 1))
        for (text, title), generated in list(zip(splits["test"], titles))[:args.show]:
            print("  text: %s...\n  title: %s\n  generated: %s" % (text[:40], title, generated))
        print("test (%d titles): %s" % (test["count"], format_generation_scores(test)))
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
