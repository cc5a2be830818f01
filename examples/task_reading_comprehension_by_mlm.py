"""Reading comprehension as masked language modelling: BERT fills a row of
``[MASK]`` slots with the answer.

Task: extractive question answering on DuReader-robust (LIC2020, SQuAD-style
JSON; see ``competition_lic2020_reading_comprehension.py`` for the format).
By default the script runs on the small hand-written sample in
``examples/data/dureader_robust_sample/`` (not official data); the official
``train.json`` / ``dev.json`` are read unchanged with ``--train`` / ``--dev``.
Reading and scoring are that script's (``load_mrc_file``; ``mrc_scores``: the
official EM and F1).

Model (the original bert4keras MLM recipe, Su 2019): the input is
``[CLS] [MASK] x A [SEP] question [SEP] passage [SEP]`` (all segment 0,
``A = --max-a-len`` slots, the passage cut to ``--max-p-len`` tokens) and the
MLM head predicts, at slot ``i``, the ``i``-th token of ``answer [SEP]``
(slots after it: padding, not scored). There are no span pointers: the
answer is written by the language-model head. The vocabulary is trimmed as
0.11.5 did (``load_vocab(simplified=True)`` + ``keep_tokens``).

Decoding is greedy over the slots, constrained to the passage: slot ``i``
may only hold a token that continues the answer so far somewhere in the
passage, or ``[SEP]`` (end); the answer is then a run of passage tokens, cut
from the original text through ``Tokenizer.rematch`` offsets. Training takes
one gold answer per question at random each epoch; an answer outside the
cut passage or longer than ``A - 1`` tokens is not used (counted).

The default model is the small Chinese BERT shipped in
``checkpoints/chinese_bert_small/`` (``--model-dir`` for a real one); on the
sample the scores only show that the pipeline runs.

    python examples/task_reading_comprehension_by_mlm.py             # sample data
    python examples/task_reading_comprehension_by_mlm.py --model-dir chinese_L-12_H-768_A-12 \\
        --train dureader_robust-data/train.json --dev dureader_robust-data/dev.json \\
        --epochs 10 --batch-size 32 --lr 1e-5
"""

import os

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.layers import DropMask
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator
from bert4keras.tokenizers import Tokenizer, load_vocab
from common import (adamw, add_model_args, add_run_args, describe_model, pad_batch,
                    resolve_paths, write_json)
from competition_lic2020_reading_comprehension import (SAMPLE_DIR, Passage, format_scores,
                                                       load_mrc_file, mrc_scores, question_ids)
from seq2seq_kit import fit_best

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class MaskedQuestions:
    """Inputs and targets of the MLM formulation.

    Args:
        tokenizer: the WordPiece tokenizer.
        contexts: the passages of a file (``load_mrc_file``).
        slots: ``A``, the number of ``[MASK]`` slots (longest answer + 1).
        max_p_len, max_q_len: passage and question tokens kept.
    """

    def __init__(self, tokenizer, contexts, slots, max_p_len, max_q_len):
        self.tokenizer, self.contexts = tokenizer, contexts
        self.slots, self.max_p_len, self.max_q_len = slots, max_p_len, max_q_len
        self.cls, self.sep, self.mask = (tokenizer.token_to_id(t) for t in SPECIALS[2:])
        self._passages = {}

    def passage(self, index):
        """The :class:`Passage` of context ``index`` (tokenized once)."""
        if index not in self._passages:
            self._passages[index] = Passage(self.contexts[index], self.tokenizer)
        return self._passages[index]

    def passage_ids(self, example):
        return self.passage(example["passage"]).token_ids[:self.max_p_len]

    def inputs(self, example):
        """``[CLS] [MASK] x A [SEP] question [SEP] passage [SEP]`` ids."""
        q_ids = question_ids(self.tokenizer, example["question"], self.max_q_len)
        return ([self.cls] + [self.mask] * self.slots + [self.sep] + q_ids + [self.sep]
                + self.passage_ids(example) + [self.sep])

    def targets(self, example):
        """The slot targets ``answer tokens + [SEP]`` of every gold answer
        that lies inside the kept passage and fits the slots."""
        passage, out = self.passage(example["passage"]), []
        for span in example["spans"]:
            found = passage.token_span(*span)
            if found and found[1] < self.max_p_len and found[1] - found[0] + 2 <= self.slots:
                out.append(passage.token_ids[found[0]:found[1] + 1] + [self.sep])
        return out

    def answer(self, example, slot_logits):
        """The answer text decoded from ``(A, vocab)`` slot logits, greedily,
        each slot restricted to the tokens that continue the answer so far
        somewhere in the passage, or ``[SEP]``."""
        ids = self.passage_ids(example)
        starts, length = np.arange(len(ids)), 0
        for row in slot_logits:
            live = starts[starts + length < len(ids)]
            allowed = np.unique(np.asarray(ids, "int64")[live + length]) if len(live) else []
            allowed = np.append(allowed, self.sep).astype("int64")
            token = int(allowed[np.argmax(row[allowed])])
            if token == self.sep:
                break
            starts = live[np.asarray(ids)[live + length] == token]
            length += 1
        if not length:
            return ""
        first = int(starts[0])
        return self.passage(example["passage"]).text(first, first + length - 1)


class SlotGenerator(DataGenerator):
    """``(token_ids, segment_ids), slot targets (A,), weights (A,)`` batches;
    one gold answer per question drawn at random each pass."""

    def __init__(self, items, batch_size, slots, seed=None):
        super().__init__(items, batch_size=batch_size)
        self.slots, self.rng = slots, np.random.RandomState(seed)

    def __iter__(self, random=False):
        batch, labels = [], []
        for is_end, (ids, targets) in self.sample(random):
            batch.append(ids)
            labels.append(targets[self.rng.randint(len(targets))])
            if len(batch) == self.batch_size or is_end:
                tokens = pad_batch(batch)
                y = pad_batch(labels, length=self.slots)
                yield (tokens, np.zeros_like(tokens)), y, (y > 0).astype("float32")
                batch, labels = [], []


def build_model(config, checkpoint, keep_tokens, slots):
    """BERT with its MLM head (logits), keeping the outputs of the slots 1..A."""
    bert = build_transformer_model(config, checkpoint, with_mlm="linear",
                                   keep_tokens=keep_tokens)
    # the weights of the batches zero the padding: the padding mask must not
    # reweight the loss a second time
    logits = DropMask(name="MLM-Slots")(bert.outputs[0][:, 1:slots + 1])
    return keras.Model(bert.inputs, logits, name="mlm_reader")


def predict_answers(model, questions, examples, batch_size):
    """``{id: answer}`` of the examples."""
    answers = {}
    for b in range(0, len(examples), batch_size):
        batch = examples[b:b + batch_size]
        tokens = pad_batch([questions.inputs(e) for e in batch])
        logits = keras.ops.convert_to_numpy(
            model.predict_on_batch((tokens, np.zeros_like(tokens))))
        for example, rows in zip(batch, logits):
            answers[example["id"]] = questions.answer(example, rows)
    return answers


def evaluate(model, questions, examples, batch_size):
    predictions = predict_answers(model, questions, examples, batch_size)
    return mrc_scores({e["id"]: e["answers"] for e in examples}, predictions), predictions


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.json"))
    p.add_argument("--dev", default=os.path.join(SAMPLE_DIR, "dev.json"))
    p.add_argument("--max-p-len", type=int, default=256, help="passage tokens kept")
    p.add_argument("--max-q-len", type=int, default=64, help="question tokens kept")
    p.add_argument("--max-a-len", type=int, default=32,
                   help="[MASK] slots: the longest answer in tokens, plus its [SEP]")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-4, help="peak AdamW learning rate")
    add_run_args(p, limit="questions of each file", output=False)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    token_dict, keep_tokens = load_vocab(vocab, simplified=True, startswith=SPECIALS)
    tokenizer = Tokenizer(token_dict, do_lower_case=not args.cased)

    def load(path):
        contexts, examples = load_mrc_file(path, require_answers=True)
        return MaskedQuestions(tokenizer, contexts, args.max_a_len, args.max_p_len,
                               args.max_q_len), examples[:args.limit or None]

    train_q, train_examples = load(args.train)
    dev_q, dev_examples = load(args.dev)
    items = [(train_q.inputs(e), train_q.targets(e)) for e in train_examples]
    unused = sum(not targets for _, targets in items)
    items = [item for item in items if item[1]]
    print("train: %d questions (%d without a usable answer), dev: %d; vocabulary %d of %d"
          % (len(items), unused, len(dev_examples), len(keep_tokens), len(load_vocab(vocab))))
    if not items:
        raise ValueError("%s: no question with an answer inside --max-p-len tokens" % args.train)

    model = build_model(config, checkpoint, keep_tokens, args.max_a_len)
    print("model: %s" % describe_model(config, checkpoint))
    train = SlotGenerator(items, args.batch_size, args.max_a_len, seed=args.seed)
    model.compile(optimizer=adamw(args.lr, len(train) * args.epochs),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    evaluator, train_seconds = fit_best(
        args, model, train, lambda: evaluate(model, dev_q, dev_examples, args.batch_size)[0],
        key=lambda s: s["f1"],
        report=lambda s, best: "dev %s (best F1 %.3f)" % (format_scores(s), 100 * best))
    dev, predictions = evaluate(model, dev_q, dev_examples, args.batch_size)  # best weights
    print("dev (best epoch %d): %s; training %.0f s" % (evaluator.best_epoch,
                                                         format_scores(dev), train_seconds))
    results = dict(dev=dev, dev_history=evaluator.history, best_epoch=evaluator.best_epoch,
                   loss=[float(v) for v in model.history.history["loss"]],
                   predictions=predictions,
                   train_questions=len(items), unused_questions=unused,
                   vocabulary=len(keep_tokens), train_seconds=round(train_seconds, 1),
                   config=config, checkpoint=checkpoint, epochs=args.epochs, lr=args.lr,
                   max_a_len=args.max_a_len, seed=args.seed, limit=args.limit)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
