"""Question-answer generation with UniLM on BERT: write (question, answer) pairs
about a passage, e.g. to build reading-comprehension training data.

Task: given a passage, propose an answer (a piece of the passage worth
asking about) and a question whose answer it is. As the original
bert4keras recipe: the answer is *sampled* (top-k sampling, so one passage
gives varied pairs), then the question is decoded by beam search.

Data: DuReader-robust JSON (SQuAD style) read by
``competition_lic2020_reading_comprehension.load_mrc_file``: each (passage,
question, first gold answer) is a training triple, the passage cut to the
piece of at most ``--max-passage`` characters that holds the answer
(:func:`seq2seq_kit.split_passage`). By default the hand-written sample in
``examples/data/dureader_robust_sample/`` (sample only); ``--train`` /
``--dev`` take the official files unchanged (the original recipe used
WebQA and SogouQA).

Model: one UniLM (``application='unilm'``) learns both steps, each a plain
seq2seq pair:

* answer: ``[CLS] passage [SEP]`` -> ``answer [SEP]``;
* question: ``[CLS] passage [SEP] answer [SEP]`` -> ``question [SEP]``.

(The original trained one sequence ``passage | answer question`` with the
answer on the target side; splitting it in two lets both steps decode as an
ordinary source with the key/value cache:
:class:`seq2seq_kit.Seq2seqDecoder`.) Loss: cross-entropy of the target
tokens.

Scores on the dev passages (there is no official metric):

* question generation from the gold answer: ROUGE-1/2/L and BLEU against the
  gold question (:func:`seq2seq_kit.generation_scores`; the best epoch by
  BLEU is kept);
* sampled answers: the share found verbatim in their passage, and their
  DuReader-robust F1 against the passage's gold answers
  (``competition_lic2020_reading_comprehension.answer_f1``);

``--pairs-output FILE`` writes the generated pairs as JSON lines
(``passage``, ``answer``, ``question``).

    python examples/task_question_answer_generation_by_seq2seq.py     # sample only
    python examples/task_question_answer_generation_by_seq2seq.py --model-dir BERT_DIR \\
        --train dureader_robust-data/train.json --dev dureader_robust-data/dev.json \\
        --epochs 20 --lr 2e-5 --batch-size 32 --pairs-output qa_pairs.json
"""

import os
import time

import common  # first: it loads TensorFlow without the C++ start-up log

from common import write_json, write_json_lines
from competition_lic2020_reading_comprehension import SAMPLE_DIR, answer_f1, load_mrc_file
from seq2seq_kit import (Seq2seqDecoder, add_seq2seq_args, build_for_training, encode_source,
                         encode_target, fit_best, format_generation_scores, generation_scores,
                         run_record, setup, split_passage)


def load_triples(path, max_passage, limit=None):
    """``[(passage piece, question, answer)]`` of a DuReader-robust file: the
    first gold answer of each question and the first piece of its passage
    (at most ``max_passage`` characters) holding it; questions whose answer
    no piece holds are left out (counted in the second value).

    Raises:
        FileNotFoundError, DataFormatError: see ``load_mrc_file``.
    """
    contexts, examples = load_mrc_file(path, require_answers=True)
    triples, missed = [], 0
    for example in examples[:limit or None]:
        answer = example["answers"][0]
        pieces = [p for p in split_passage(contexts[example["passage"]], max_passage)
                  if answer in p]
        if pieces:
            triples.append((pieces[0], example["question"], answer))
        else:
            missed += 1
    return triples, missed


def training_pairs(tokenizer, triples, args):
    """The two seq2seq pairs of every triple (answer step, question step)."""
    pairs = []
    for passage, question, answer in triples:
        pairs.append((encode_source(tokenizer, passage, maxlen=args.max_source),
                      encode_target(tokenizer, answer, args.max_answer)))
        pairs.append((encode_source(tokenizer, passage, answer, maxlen=args.max_source),
                      encode_target(tokenizer, question, args.max_target)))
    return pairs


class QAGenerator:
    """Answers by top-k sampling, then questions by beam search, both with
    the key/value cache.

    Args:
        transformer: the UniLM :class:`~bert4keras.models.Transformer`.
        tokenizer: its tokenizer.
        args: ``max_source``, ``max_answer``, ``max_target`` (question),
            ``batch_size``, ``beams``, ``topk``, ``eager``.
    """

    def __init__(self, transformer, tokenizer, args):
        end = tokenizer.token_to_id("[SEP]")
        self.tokenizer, self.args = tokenizer, args
        jit = False if args.eager else "auto"
        self.answers = Seq2seqDecoder(transformer, end, args.max_answer, jit_compile=jit)
        self.questions = Seq2seqDecoder(transformer, end, args.max_target, jit_compile=jit)

    def questions_for(self, passages, answers):
        """The question generated for each (passage, answer)."""
        a = self.args
        sources = [encode_source(self.tokenizer, p, ans, maxlen=a.max_source)
                   for p, ans in zip(passages, answers)]
        outputs = self.questions.generate(sources, batch_size=a.batch_size, beams=a.beams)
        return [self.tokenizer.decode(ids) for ids in outputs]

    def sample_answers(self, passages, seed):
        """One sampled answer per passage (top-``topk``)."""
        a = self.args
        sources = [encode_source(self.tokenizer, p, maxlen=a.max_source) for p in passages]
        outputs = self.answers.generate(sources, batch_size=a.batch_size, method="sample",
                                        n=1, topk=a.topk, seed=seed)
        return [self.tokenizer.decode(rows[0]) for rows in outputs]

    def pairs(self, passages, seed):
        """``[(answer, question)]``: a sampled answer and its question per passage."""
        answers = self.sample_answers(passages, seed)
        return list(zip(answers, self.questions_for(passages, answers)))


def evaluate(generator, triples, seed):
    """Scores of question generation (from the gold answers) and of the
    sampled answers (see the module docstring), and the generated pairs."""
    passages = [p for p, _, _ in triples]
    questions = generator.questions_for(passages, [a for _, _, a in triples])
    scores = generation_scores([q for _, q, _ in triples], questions)
    pairs = generator.pairs(passages, seed)
    golds = {}
    for passage, _, answer in triples:  # every gold answer of the piece counts
        golds.setdefault(passage, []).append(answer)
    inside = f1 = 0.0
    for passage, (answer, _) in zip(passages, pairs):
        inside += bool(answer) and answer.replace(" ", "") in passage.replace(" ", "").lower()
        f1 += answer_f1(answer, golds[passage])
    count = max(len(triples), 1)
    scores.update(answer_in_passage=inside / count, answer_f1=f1 / count)
    return scores, pairs


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.json"))
    p.add_argument("--dev", default=os.path.join(SAMPLE_DIR, "dev.json"))
    p.add_argument("--max-passage", type=int, default=128, help="characters per passage piece")
    p.add_argument("--max-answer", type=int, default=16,
                   help="most tokens of an answer, [SEP] included")
    p.add_argument("--topk", type=int, default=5, help="answers are sampled from the k best")
    p.add_argument("--pairs-output", default=None,
                   help="write the generated (passage, answer, question) as JSON lines")
    add_seq2seq_args(p, epochs=10, lr=1e-4, batch_size=8, beams=4, max_source=192,
                     max_target=32, limit="questions per file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tokenizer, config, checkpoint = setup(args)
    train_triples, train_missed = load_triples(args.train, args.max_passage, args.limit)
    dev_triples, dev_missed = load_triples(args.dev, args.max_passage, args.limit)
    print("questions: train %d, dev %d (left out: %d, %d)"
          % (len(train_triples), len(dev_triples), train_missed, dev_missed))
    transformer, train = build_for_training(args, config, checkpoint,
                                            training_pairs(tokenizer, train_triples, args))
    generator = QAGenerator(transformer, tokenizer, args)
    valid = dev_triples[:args.eval_limit or None]
    evaluator, train_seconds = fit_best(
        args, transformer.model, train, lambda: evaluate(generator, valid, args.seed)[0],
        key=lambda s: s["bleu"],
        report=lambda s, best: "dev questions %s; answers in passage=%.3f F1=%.4f "
        "(best BLEU %.2f)" % (format_generation_scores(s), s["answer_in_passage"],
                              s["answer_f1"], 100 * best))
    start = time.time()
    dev, pairs = evaluate(generator, dev_triples, args.seed)
    for (passage, question, answer), (gen_answer, gen_question) in \
            list(zip(dev_triples, pairs))[:args.show]:
        print("  passage: %s...\n  gold: %s -> %s\n  generated: %s -> %s"
              % (passage[:40], answer, question, gen_answer, gen_question))
    print("dev (%d passages): questions %s; answers in passage=%.3f F1=%.4f"
          % (dev["count"], format_generation_scores(dev), dev["answer_in_passage"],
             dev["answer_f1"]))
    if args.pairs_output:
        write_json_lines(args.pairs_output, [dict(passage=p, answer=a, question=q)
                                             for (p, _, _), (a, q) in zip(dev_triples, pairs)])
    results = run_record(args, evaluator, train_seconds, config, checkpoint, dev=dev,
                         dev_seconds=round(time.time() - start, 1), topk=args.topk,
                         questions=dict(train=len(train_triples), dev=len(dev_triples)))
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
