"""Reading comprehension as generation: UniLM on BERT writes the answer.

Task: answer a question from a passage (DuReader-robust, as
``competition_lic2020_reading_comprehension.py``, which extracts spans with
pointers); here the model *generates* the answer token by token, and by
default (``--mode extractive``) the generated answer is constrained to be a
piece of the passage, as the original bert4keras recipe did for its
WebQA/SogouQA version.

Data: DuReader-robust JSON (SQuAD style), read by
``competition_lic2020_reading_comprehension.load_mrc_file``; by default the
hand-written sample in ``examples/data/dureader_robust_sample/`` (34
training, 14 dev questions; sample only); ``--train``/``--dev`` take the
official ``train.json`` / ``dev.json`` unchanged.

Model: UniLM (``application='unilm'``): ``[CLS] passage piece [SEP] question
[SEP]`` (segment 0) then ``answer [SEP]`` (segment 1); loss on the answer
tokens. Passages are cut into pieces of at most ``--max-passage`` characters
at sentence ends (:func:`seq2seq_kit.split_passage`). Training uses the piece
that holds the first gold answer and, with ``--negatives``, one piece
without an answer whose target is ``[SEP]`` alone ("no answer here").

Decoding one question reads all pieces of its passage at once (an
:class:`bert4keras.generation.AutoRegressiveDecoder` whose ``predict`` runs
the model over every piece, beam search of width ``--beams``):

* pieces whose most likely first token is ``[SEP]`` have no answer and are
  dropped (unless all are: then the answer is empty);
* ``extractive``: in each remaining piece, only the tokens that continue the
  answer so far as a contiguous run of that piece's tokens (or ``[SEP]``)
  keep their probability; pieces that do not contain the answer so far stop
  voting;
* the next-token probabilities of the voting pieces are averaged.

``--mode free`` drops the substring constraint (the same voting). Each step
reruns the model over the whole sequence (no key/value cache: the cached
decoder has no hook for a per-step constraint).

Scores: EM and F1 of the official DuReader-robust ``evaluate.py``
(``competition_lic2020_reading_comprehension.mrc_scores``), and the share of
answers that are substrings of their passage. The original recipe (BERT base
on SogouQA + WebQA) reported about 0.77 on its own metric (mean of accuracy
0.726 and F1 0.814) after 8 epochs; that is not this data.

    python examples/task_reading_comprehension_by_seq2seq.py      # sample only
    python examples/task_reading_comprehension_by_seq2seq.py --model-dir BERT_DIR \\
        --train dureader_robust-data/train.json --dev dureader_robust-data/dev.json \\
        --epochs 8 --lr 2e-5 --batch-size 32
"""

import os
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.generation import AutoRegressiveDecoder
from common import pad_batch, write_json
from competition_lic2020_reading_comprehension import SAMPLE_DIR, load_mrc_file, mrc_scores
from seq2seq_kit import (add_seq2seq_args, build_for_training, encode_source, encode_target,
                         fit_best, run_record, setup, split_passage)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def questions_of(path, limit=None):
    """``[(question, passage, gold answers)]`` of a DuReader-robust file
    (answers required)."""
    contexts, examples = load_mrc_file(path, require_answers=True)
    examples = examples[:limit or None]
    return [(e["question"], contexts[e["passage"]], e["answers"]) for e in examples]


def training_pairs(tokenizer, questions, args):
    """``(source ids, target ids)`` for training: the first passage piece
    holding the first gold answer, plus ``--negatives`` pieces without any
    gold answer (target ``[SEP]`` alone). Returns the pairs and the number of
    questions whose answer no piece holds (left out)."""
    pairs, missed = [], 0
    for question, passage, answers in questions:
        pieces = split_passage(passage, args.max_passage)
        holding = [p for p in pieces if answers[0] in p]
        if not holding:
            missed += 1
            continue
        pairs.append((encode_source(tokenizer, holding[0], question, maxlen=args.max_source),
                      encode_target(tokenizer, answers[0], args.max_target)))
        empty = [p for p in pieces if not any(a in p for a in answers)]
        for piece in empty[:args.negatives]:
            pairs.append((encode_source(tokenizer, piece, question, maxlen=args.max_source),
                          encode_target(tokenizer, "", args.max_target)))
    return pairs, missed


# ---------------------------------------------------------------------------
# Decoding over the pieces of a passage
# ---------------------------------------------------------------------------


def continuations(passage_ids, prefix):
    """The tokens that follow ``prefix`` somewhere in ``passage_ids`` (a set;
    every token when ``prefix`` is empty), or ``None`` when ``prefix`` is not
    a contiguous run of ``passage_ids``."""
    n = len(prefix)
    if n == 0:
        return set(passage_ids)
    found, following = False, set()
    for i in range(len(passage_ids) - n + 1):
        if passage_ids[i:i + n] == prefix:
            found = True
            if i + n < len(passage_ids):
                following.add(passage_ids[i + n])
    return following if found else None


class PieceVotingDecoder(AutoRegressiveDecoder):
    """Generates one answer from all pieces of a passage (see the module
    docstring for the rules).

    Args:
        model: the UniLM Keras model (inputs token and segment ids, output
            logits ``(batch, length, vocab)``).
        end_id: ``[SEP]``.
        maxlen: most answer tokens ([SEP] counted).
        extractive: keep only continuations inside a piece.

    ``answer(sources, beams)`` takes the source ids of every piece
    (``[CLS] piece [SEP] question [SEP]``) and returns the answer's ids.
    """

    def __init__(self, model, end_id, maxlen, extractive=True):
        super().__init__(start_id=None, end_id=end_id, maxlen=maxlen)
        self.model, self.extractive = model, extractive

    @AutoRegressiveDecoder.wraps(default_rtype="probas", use_states=True)
    def predict(self, inputs, output_ids, states):
        # inputs: one array (rows, piece length) per piece, every row alike
        active = states if states is not None else list(range(len(inputs)))
        rows, outputs = output_ids.shape[0], [list(map(int, o)) for o in output_ids]
        tokens, segments, ends = [], [], []
        for p in active:
            source = list(map(int, inputs[p][0]))
            for out in outputs:
                tokens.append(source + out)
                segments.append([0] * len(source) + [1] * len(out))
                ends.append(len(tokens[-1]) - 1)
        # a direct call: no predict function traced for every new batch shape
        logits = self.model([pad_batch(tokens), pad_batch(segments)], training=False)
        logits = keras.ops.convert_to_numpy(logits)[np.arange(len(ends)), ends]
        logits = logits.astype("float64")
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs = (probs / probs.sum(-1, keepdims=True)).reshape(len(active), rows, -1)
        if states is None:  # first step: pieces that would answer nothing stop here
            answering = [i for i in range(len(active)) if probs[i, 0].argmax() != self.end_id]
            if not answering:
                only_end = np.zeros_like(probs[0])
                only_end[:, self.end_id] = 1.0
                return only_end, [active[0]]
            probs, active = probs[answering], [active[i] for i in answering]
        combined = np.zeros(probs.shape[1:])
        for r, out in enumerate(outputs):
            votes = 0
            for i, p in enumerate(active):
                row = probs[i, r]
                if self.extractive:
                    sep = list(map(int, inputs[p][0])).index(self.end_id)
                    allowed = continuations(list(map(int, inputs[p][0][1:sep])), out)
                    if allowed is None:
                        continue  # this piece does not hold the answer so far
                    mask = np.zeros_like(row)
                    mask[list(allowed | {self.end_id})] = 1.0
                    row = row * mask
                combined[r] += row
                votes += 1
            if votes:
                combined[r] /= votes
            else:
                combined[r, self.end_id] = 1.0
        return combined, active

    def answer(self, sources, beams=1):
        """The answer ids (without [SEP]) from the pieces' source ids."""
        ids = self.beam_search([np.asarray(s, "int32") for s in sources], topk=beams)
        ids = [int(i) for i in ids]
        return ids[:ids.index(self.end_id)] if self.end_id in ids else ids


def predict_answers(decoder, tokenizer, questions, args):
    """The generated answer text of every question."""
    answers = []
    for question, passage, _ in questions:
        sources = [encode_source(tokenizer, piece, question, maxlen=args.max_source)
                   for piece in split_passage(passage, args.max_passage)]
        answers.append(tokenizer.decode(decoder.answer(sources, args.beams)))
    return answers


def evaluate(decoder, tokenizer, questions, args):
    """``(scores, answers)``: official EM/F1 and the share of answers found
    verbatim in their passage (spaces ignored)."""
    answers = predict_answers(decoder, tokenizer, questions, args)
    golds = {str(i): gold for i, (_, _, gold) in enumerate(questions)}
    scores = mrc_scores(golds, {str(i): a for i, a in enumerate(answers)})
    inside = sum(a.replace(" ", "") in p.replace(" ", "").lower()  # decode lower-cases
                 for a, (_, p, _) in zip(answers, questions))
    scores["in_passage"] = inside / max(len(questions), 1)
    return scores, answers


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.json"))
    p.add_argument("--dev", default=os.path.join(SAMPLE_DIR, "dev.json"))
    p.add_argument("--mode", choices=("extractive", "free"), default="extractive",
                   help="extractive: answers are pieces of the passage")
    p.add_argument("--max-passage", type=int, default=128,
                   help="characters per passage piece")
    p.add_argument("--negatives", type=int, default=1,
                   help="pieces without an answer trained to give [SEP] per question")
    add_seq2seq_args(p, epochs=10, lr=1e-4, batch_size=8, beams=2, max_source=192,
                     max_target=32, limit="questions per file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tokenizer, config, checkpoint = setup(args)
    train_questions = questions_of(args.train, args.limit)
    dev_questions = questions_of(args.dev, args.limit)
    pairs, missed = training_pairs(tokenizer, train_questions, args)
    print("questions: train %d (%d training sequences, %d left out), dev %d"
          % (len(train_questions), len(pairs), missed, len(dev_questions)))
    transformer, train = build_for_training(args, config, checkpoint, pairs)
    decoder = PieceVotingDecoder(transformer.model, tokenizer.token_to_id("[SEP]"),
                                 args.max_target, extractive=args.mode == "extractive")
    valid = dev_questions[:args.eval_limit or None]
    evaluator, train_seconds = fit_best(
        args, transformer.model, train, lambda: evaluate(decoder, tokenizer, valid, args)[0],
        key=lambda s: s["f1"],
        report=lambda s, best: "dev EM=%.4f F1=%.4f in passage=%.3f (best F1 %.4f)"
        % (s["em"], s["f1"], s["in_passage"], best))
    start = time.time()
    dev, answers = evaluate(decoder, tokenizer, dev_questions, args)
    for (question, _, gold), answer in list(zip(dev_questions, answers))[:args.show]:
        print("  question: %s\n  gold: %s\n  generated: %s" % (question, " / ".join(gold),
                                                               answer))
    print("dev (%d questions, best epoch %s): EM=%.4f F1=%.4f in passage=%.3f"
          % (dev["total"], evaluator.best_epoch, dev["em"], dev["f1"], dev["in_passage"]))
    results = run_record(args, evaluator, train_seconds, config, checkpoint, dev=dev,
                         dev_seconds=round(time.time() - start, 1), mode=args.mode,
                         training_sequences=len(pairs), left_out=missed)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
