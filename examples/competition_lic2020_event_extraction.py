"""LIC2020 event extraction (DuEE 1.0): BERT + CRF over BIO tags of (event type, role) pairs.

Task and data: the event extraction track of the 2020 Language and
Intelligence Challenge (LIC2020, Baidu), on DuEE 1.0. Each line of a data file
is one JSON object::

    {"id": "...", "text": "...", "event_list": [
        {"event_type": "竞赛行为-胜负", "trigger": "击败", "trigger_start_index": 19,
         "class": "竞赛行为",
         "arguments": [{"argument_start_index": 7, "role": "胜者",
                        "argument": "青岛海鸥队", "alias": []}, ...]}, ...]}

and the event schema file has one JSON object per line, ``{"event_type": ...,
"role_list": [{"role": ...}, ...], "class": ...}`` (65 event types in DuEE
1.0). A sample in exactly this format ships in ``examples/data/duee_sample/``
(hand-written sentences; see ``examples/README.md`` for the real data).

Model (the design of the original ``lic2020_baselines/ee.py``, written anew):
one label per token, ``O`` or ``B``/``I`` of one (event type, role) pair
(``1 + 2 * pairs`` labels), BERT ->
``Dense`` emissions -> ``ConditionalRandomField``, Viterbi decoding with
``ViterbiDecoder`` (``[CLS]``/``[SEP]`` pinned to ``O``). Decoded arguments
are grouped into one event per event type (the metric below does not look at
triggers or at how arguments are split into events; triggers are not
predicted). Texts longer than ``--maxlen`` tokens are cut into consecutive
windows for training and prediction alike.

Arguments are placed with ``argument_start_index`` (or, if that does not
point at the argument, its first occurrence) and mapped to tokens through
``Tokenizer.rematch``; decoded token spans are mapped back to the exact
characters of the text the same way. One BIO sequence cannot hold two
arguments on the same tokens (the same phrase as the winner of one event and
the champion of another, or nested arguments): the first one in the file is
kept and the others are counted as ``overlapping`` (the scorer still expects
them, so they cost recall).

Scoring: :func:`duee_scores` implements the official LIC2020 / DuEE 1.0
argument-level metric (definition and source in its docstring).

    python examples/competition_lic2020_event_extraction.py                 # shipped sample
    python examples/competition_lic2020_event_extraction.py \\
        --train train.json --dev dev.json --schema event_schema.json \\
        --model-dir chinese_L-12_H-768_A-12 --test test1.json --test-output duee_pred.json
"""

import os
import time
from collections import Counter

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.layers import ConditionalRandomField
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, ViterbiDecoder, build_for_fit
from bert4keras.tokenizers import Tokenizer
from common import (BestEpoch, DataFormatError, adamw, add_model_args, add_run_args, describe_model,
                    pad_batch, read_json_lines, read_texts, require, resolve_paths, save_and_check,
                    write_json, write_json_lines)

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_DIR = os.path.join(HERE, "data", "duee_sample")
BUCKET = 16  # batches are padded to a multiple of this: few distinct shapes to trace
EXACT_ASSIGNMENT_LIMIT = 12  # larger groups of same-role arguments are paired greedily


# ---------------------------------------------------------------------------
# Reading the official files
# ---------------------------------------------------------------------------


def load_event_schema(path):
    """Read a DuEE 1.0 event schema file.

    Args:
        path: one JSON object per line, ``{"event_type": str, "role_list":
            [{"role": str}, ...]}`` (``class``/``id`` are not needed).

    Returns:
        ``{event_type: [role, ...]}`` in file order.

    Raises:
        DataFormatError: a missing or mistyped field (file and line named).
    """
    schema = {}
    for number, obj in read_json_lines(path, "DuEE"):
        where = "%s, line %d" % (path, number)
        event_type = require(obj, "event_type", str, where)
        roles = schema.setdefault(event_type, [])
        for k, item in enumerate(require(obj, "role_list", list, where)):
            if not isinstance(item, dict):
                raise DataFormatError("%s: role_list[%d] must be an object" % (where, k))
            role = require(item, "role", str, "%s, role_list[%d]" % (where, k))
            if role not in roles:
                roles.append(role)
    if not schema:
        raise DataFormatError("%s: no schema line" % path)
    return schema


def load_duee(path, schema=None, limit=None):
    """Read a DuEE 1.0 data file (train or dev) into a list of records.

    Args:
        path: one JSON object per line with ``text`` (str) and ``event_list``
            (list of ``{"event_type": str, "arguments": [{"role": str,
            "argument": str, ...}]}``); ``id``, ``trigger``,
            ``trigger_start_index``, ``class``, ``argument_start_index``
            (int) and ``alias`` (list of str) are read when present.
        schema: from :func:`load_event_schema`; if given, event types and
            roles must be in it.
        limit: read only the first ``limit`` records.

    Returns:
        ``[{"id": str or None, "text": str, "event_list": [...]}, ...]``.

    Raises:
        DataFormatError: a missing or mistyped field, an event type or role
            absent from the schema; the message names file, line and field.
    """
    records = []
    for number, obj in read_json_lines(path, "DuEE"):
        if limit is not None and len(records) >= limit:
            break
        where = "%s, line %d" % (path, number)
        text = require(obj, "text", str, where)
        event_list = require(obj, "event_list", list, where)
        for e, event in enumerate(event_list):
            at = "%s, event_list[%d]" % (where, e)
            if not isinstance(event, dict):
                raise DataFormatError("%s: expected an object, got %s" % (at, type(event).__name__))
            event_type = require(event, "event_type", str, at)
            if schema is not None and event_type not in schema:
                raise DataFormatError("%s: event type %r is not in the schema" % (at, event_type))
            for a, argument in enumerate(require(event, "arguments", list, at)):
                arg_at = "%s.arguments[%d]" % (at, a)
                if not isinstance(argument, dict):
                    raise DataFormatError("%s: expected an object" % arg_at)
                role = require(argument, "role", str, arg_at)
                require(argument, "argument", str, arg_at)
                if "argument_start_index" in argument:
                    require(argument, "argument_start_index", int, arg_at)
                if "alias" in argument:
                    alias = require(argument, "alias", list, arg_at)
                    if not all(isinstance(x, str) for x in alias):
                        raise DataFormatError("%s: field 'alias' must be a list of str" % arg_at)
                if schema is not None and role not in schema[event_type]:
                    raise DataFormatError("%s: role %r is not in the schema of %r"
                                          % (arg_at, role, event_type))
        records.append({"id": obj.get("id"), "text": text, "event_list": event_list})
    return records


# ---------------------------------------------------------------------------
# The official metric
# ---------------------------------------------------------------------------


def char_f1(predicted, gold):
    """Character-level match F1 of two strings, ignoring case.

    ``common`` = characters the two share, counted with multiplicity
    (multiset intersection); P = common / len(predicted), R = common /
    len(gold), F1 = 2PR / (P + R); 0 if nothing is shared.
    """
    predicted, gold = predicted.lower(), gold.lower()
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    p, r = common / len(predicted), common / len(gold)
    return 2 * p * r / (p + r)


def _best_pairing(scores):
    """Largest total of a one-to-one pairing of the rows and columns of
    ``scores`` (exact by dynamic programming over the smaller side, greedy
    beyond ``EXACT_ASSIGNMENT_LIMIT``)."""
    if not scores or not scores[0]:
        return 0.0
    if len(scores[0]) > len(scores):
        scores = [list(col) for col in zip(*scores)]
    n_cols = len(scores[0])
    if n_cols > EXACT_ASSIGNMENT_LIMIT:
        pairs = sorted(((v, i, j) for i, row in enumerate(scores) for j, v in enumerate(row)),
                       reverse=True)
        used_rows, used_cols, total = set(), set(), 0.0
        for v, i, j in pairs:
            if i not in used_rows and j not in used_cols:
                used_rows.add(i), used_cols.add(j)
                total += v
        return total
    best = {0: 0.0}
    for row in scores:
        new = dict(best)
        for mask, value in best.items():
            for j, v in enumerate(row):
                if v > 0 and not mask & (1 << j):
                    key = mask | (1 << j)
                    if value + v > new.get(key, -1.0):
                        new[key] = value + v
        best = new
    return max(best.values())


def _arguments(record, with_alias):
    """``{(event_type, role): {argument(lower): [forms]}}`` of one record."""
    groups = {}
    for event in record.get("event_list", []):
        for argument in event.get("arguments", []):
            text = argument["argument"]
            forms = [text] + (list(argument.get("alias") or []) if with_alias else [])
            group = groups.setdefault((event["event_type"], argument["role"]), {})
            group.setdefault(text.lower(), forms)
    return groups


def _key(record):
    return record.get("id") or record["text"]


def duee_scores(gold_records, predicted_records):
    """Argument-level P/R/F1 of the LIC2020 event extraction track (DuEE 1.0).

    The official definition (LIC2020 task page; restated in PaddleNLP
    ``examples/information_extraction/DuEE/README.md``, "评测方法"):
    predicted arguments are matched against annotated ones and scored by
    character-level match F1, case-insensitive; an annotated argument with
    several forms (``alias``) counts with the best of their F1s:

    * score of a predicted argument = [event type right] x [role right] x
      char-level F1, with char-level P = shared characters / predicted
      length and R = shared characters / annotated length (:func:`char_f1`);
    * P = sum of scores / number of predicted arguments, R = sum of scores /
      number of annotated arguments, F1 = 2PR / (P + R).

    The official script itself is not public; where the text leaves a choice
    open, this implementation decides as follows (so it may differ slightly
    from the leaderboard):

    * sentences are matched by ``id`` (by ``text`` where a record has no id);
      predictions for unknown sentences are ignored, missing ones are empty;
    * within a sentence an argument is ``(event type, role, text)``; the same
      triple listed twice (e.g. in two events of one type) counts once, on
      both sides, so how arguments are split into events does not matter;
    * predicted and annotated arguments of the same (event type, role) are
      paired one-to-one so that the total score is largest (each annotated
      argument can reward one prediction only; this keeps R <= 1 when several
      fragments overlap one annotation);
    * "shared characters" is the multiset intersection of the characters (the
      original bert4keras baseline approximated it with the longest common
      substring).

    Args:
        gold_records: ``[{"id", "text", "event_list": [{"event_type",
            "arguments": [{"role", "argument", "alias"?}]}]}]``.
        predicted_records: the same structure (``alias`` ignored).

    Returns:
        ``{"precision", "recall", "f1", "gold", "predicted", "score"}``
        (``score`` = the sum of the matched F1s).
    """
    predicted = {_key(r): r for r in predicted_records}
    total = n_gold = n_pred = 0.0
    for record in gold_records:
        gold_groups = _arguments(record, with_alias=True)
        pred_groups = _arguments(predicted.get(_key(record), {}), with_alias=False)
        n_gold += sum(len(g) for g in gold_groups.values())
        n_pred += sum(len(g) for g in pred_groups.values())
        for key, preds in pred_groups.items():
            golds = gold_groups.get(key)
            if golds:
                matrix = [[max(char_f1(forms[0], form) for form in gold_forms)
                           for gold_forms in golds.values()] for forms in preds.values()]
                total += _best_pairing(matrix)
    precision = total / n_pred if n_pred else 0.0
    recall = total / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(precision=precision, recall=recall, f1=f1, gold=int(n_gold),
                predicted=int(n_pred), score=total)


# ---------------------------------------------------------------------------
# Labels, windows, tokens
# ---------------------------------------------------------------------------


class Labels:
    """Label ids: 0 = ``O``; ``2k+1`` / ``2k+2`` = ``B`` / ``I`` of pair ``k``."""

    def __init__(self, schema):
        self.pairs = [(t, r) for t, roles in schema.items() for r in roles]
        self.index = {p: k for k, p in enumerate(self.pairs)}
        self.size = 1 + 2 * len(self.pairs)

    def spans(self, labels):
        """``(pair, first, last)`` spans of a label sequence, read strictly:
        ``B-k I-k*``; an ``I`` that does not continue its own pair is ``O``."""
        spans, current = [], None
        for i, label in enumerate(labels):
            label = int(label)
            if label > 0 and label % 2 == 1:
                current = [(label - 1) // 2, i, i]
                spans.append(current)
            elif label > 0 and current is not None and (label - 2) // 2 == current[0] \
                    and current[2] == i - 1:
                current[2] = i
            else:
                current = None
        return [(self.pairs[k], a, b) for k, a, b in spans]


class Windows:
    """A text's tokens (without ``[CLS]``/``[SEP]``), their character offsets,
    and its cut into windows of ``maxlen - 2`` tokens."""

    def __init__(self, tokenizer, text, maxlen):
        self.text = text
        tokens = tokenizer.tokenize(text)[1:-1]
        self.ids = tokenizer.tokens_to_ids(tokens)
        self.mapping = tokenizer.rematch(text, tokens)
        self.cls, self.sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        self.char_to_token = np.full(len(text), -1, dtype="int64")
        for index, chars in enumerate(self.mapping):
            for c in chars:
                if self.char_to_token[c] < 0:
                    self.char_to_token[c] = index
        size = maxlen - 2
        self.starts = list(range(0, max(len(self.ids), 1), size))
        self.size = size

    def window_ids(self, start):
        return [self.cls] + self.ids[start:start + self.size] + [self.sep]

    def token_span(self, start, end):
        """Inclusive token span of the characters ``[start, end)``, or None."""
        tokens = self.char_to_token[max(start, 0):end]
        tokens = tokens[tokens >= 0]
        return (int(tokens.min()), int(tokens.max())) if len(tokens) else None

    def text_of(self, first, last):
        chars = [c for t in range(first, last + 1) for c in self.mapping[t]]
        return self.text[min(chars):max(chars) + 1] if chars else ""


def argument_char_span(text, argument):
    """``(start, end)`` of an annotated argument: ``argument_start_index`` if
    it points at the argument, else its first occurrence; None if absent."""
    value, start = argument["argument"], argument.get("argument_start_index")
    if not (isinstance(start, int) and text[start:start + len(value)] == value):
        start = text.find(value)
    return (start, start + len(value)) if start >= 0 and value else None


def build_examples(records, tokenizer, labels, maxlen):
    """``(token_ids, label_ids)`` per window and counts of lost arguments.

    Returns:
        ``(examples, counts)``; ``counts`` has ``sentences``, ``windows``,
        ``arguments``, ``placed``, ``not_found`` (text absent), ``overlapping``
        (tokens already labelled by an earlier argument) and ``cut`` (across
        a window boundary).
    """
    examples = []
    counts = dict(sentences=len(records), windows=0, arguments=0, placed=0, not_found=0,
                  overlapping=0, cut=0)
    for record in records:
        win = Windows(tokenizer, record["text"], maxlen)
        spans = []
        for event in record["event_list"]:
            for argument in event["arguments"]:
                counts["arguments"] += 1
                chars = argument_char_span(record["text"], argument)
                span = win.token_span(*chars) if chars else None
                if span is None:
                    counts["not_found"] += 1
                else:
                    spans.append((labels.index[(event["event_type"], argument["role"])], span))
        tags = {start: [0] * len(win.window_ids(start)) for start in win.starts}
        for pair, (first, last) in spans:
            start = first - first % win.size
            if last >= start + win.size:
                counts["cut"] += 1
                continue
            row = tags[start]
            a, b = first - start + 1, last - start + 1  # +1: [CLS]
            if any(row[a:b + 1]):
                counts["overlapping"] += 1
                continue
            row[a] = 2 * pair + 1
            row[a + 1:b + 1] = [2 * pair + 2] * (b - a)
            counts["placed"] += 1
        for start in win.starts:
            examples.append((win.window_ids(start), tags[start]))
        counts["windows"] += len(win.starts)
    return examples, counts


class EventGenerator(DataGenerator):
    """Batches ``((token_ids, segment_ids), label_ids)``, all ``(batch, seq_len)``
    int32 (label 0 on ``[CLS]``, ``[SEP]`` and padding)."""

    def __iter__(self, random=False):
        ids, tags = [], []
        for is_end, (token_ids, labels) in self.sample(random):
            ids.append(token_ids)
            tags.append(labels)
            if len(ids) == self.batch_size or is_end:
                token_ids = pad_batch(ids, BUCKET)
                yield (token_ids, np.zeros_like(token_ids)), pad_batch(tags, BUCKET)
                ids, tags = [], []


# ---------------------------------------------------------------------------
# Model, decoding, evaluation
# ---------------------------------------------------------------------------


def build_model(config, checkpoint, num_labels, crf_lr_multiplier):
    """BERT -> ``Dense(num_labels)`` emissions -> ``ConditionalRandomField``.

    Returns:
        ``(model, crf)``; the model maps ``[token_ids, segment_ids]`` (each
        ``(batch, seq_len)``) to masked emissions ``(batch, seq_len, num_labels)``.
    """
    bert = build_transformer_model(config, checkpoint)
    emissions = keras.layers.Dense(num_labels, name="CRF-Emissions")(bert.output)
    crf = ConditionalRandomField(lr_multiplier=crf_lr_multiplier, name="CRF")
    output = crf([emissions, bert.inputs[0]])
    return keras.Model(bert.inputs, output, name="duee_bert_crf"), crf


def extract_events(model, crf, tokenizer, labels, texts, maxlen, batch_size):
    """Predicted ``event_list`` (official format) for each text."""
    decoder = ViterbiDecoder(keras.ops.convert_to_numpy(crf.trans), starts=[0], ends=[0])
    wins = [Windows(tokenizer, text, maxlen) for text in texts]
    pieces = [(i, start) for i, win in enumerate(wins) for start in win.starts]
    found = [[] for _ in texts]
    for b in range(0, len(pieces), batch_size):
        batch = pieces[b:b + batch_size]
        ids = pad_batch([wins[i].window_ids(start) for i, start in batch], BUCKET)
        scores = keras.ops.convert_to_numpy(model.predict_on_batch([ids, np.zeros_like(ids)]))
        for (i, start), score in zip(batch, scores):
            n = len(wins[i].window_ids(start))
            path = decoder.decode(score[:n])[1:-1]
            for (event_type, role), first, last in labels.spans(path):
                argument = wins[i].text_of(start + first, start + last)
                if argument and (event_type, role, argument) not in found[i]:
                    found[i].append((event_type, role, argument))
    results = []
    for arguments in found:
        events = {}
        for event_type, role, argument in arguments:
            events.setdefault(event_type, []).append({"role": role, "argument": argument})
        results.append([{"event_type": t, "arguments": a} for t, a in events.items()])
    return results


def evaluate(model, crf, tokenizer, labels, records, maxlen, batch_size):
    texts = [r["text"] for r in records]
    event_lists = extract_events(model, crf, tokenizer, labels, texts, maxlen, batch_size)
    predictions = [{"id": r["id"], "text": r["text"], "event_list": e}
                   for r, e in zip(records, event_lists)]
    return duee_scores(records, predictions), predictions


def report(scores, best):
    """The epoch line of :class:`common.BestEpoch`."""
    return "dev P=%.4f R=%.4f F1=%.4f (best F1 %.4f)" % (scores["precision"], scores["recall"],
                                                       scores["f1"], best)


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.json"),
                   help="DuEE 1.0 training file (default: the shipped sample)")
    p.add_argument("--dev", default=os.path.join(SAMPLE_DIR, "dev.json"),
                   help="DuEE 1.0 dev file, scored with the official metric")
    p.add_argument("--schema", default=os.path.join(SAMPLE_DIR, "event_schema.json"),
                   help="DuEE 1.0 event schema file")
    p.add_argument("--test", default=None, help="optional test file (lines with 'text') to predict")
    p.add_argument("--test-output", default=None,
                   help="write the test predictions here (official format, one JSON per line)")
    p.add_argument("--dev-output", default=None, help="write the dev predictions here")
    p.add_argument("--maxlen", type=int, default=128, help="tokens per window incl. [CLS]/[SEP]")
    # defaults suit the shipped small BERT on the shipped sample; the original
    # baseline used a base-size BERT with batch 32, lr 1e-5, CRF multiplier
    # 1000, 20 epochs
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-4, help="peak AdamW learning rate")
    p.add_argument("--crf-lr-multiplier", type=float, default=100.0,
                   help="learning-rate multiplier of the CRF transitions")
    add_run_args(p, limit="lines of each file", output="runs/lic2020_ee/model.keras",
                 saved="the trained model (.keras)")
    return p.parse_args(argv)


def main(argv=None):
    """Train on ``--train``, score ``--dev`` after every epoch, return the scores.

    Returns:
        dict with ``dev`` (best-epoch scores of :func:`duee_scores`),
        ``history`` (per epoch), data counts, timings and the settings.

    Raises:
        DataFormatError: a malformed line in one of the files.
    """
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    schema = load_event_schema(args.schema)
    labels = Labels(schema)
    train_records = load_duee(args.train, schema, args.limit)
    dev_records = load_duee(args.dev, schema, args.limit)
    examples, counts = build_examples(train_records, tokenizer, labels, args.maxlen)
    print("schema: %d event types, %d (event type, role) pairs, %d labels"
          % (len(schema), len(labels.pairs), labels.size))
    print("train: %(sentences)d sentences in %(windows)d windows, %(arguments)d arguments, "
          "%(placed)d tagged (%(overlapping)d overlapping, %(not_found)d not found, "
          "%(cut)d across windows)" % counts)
    print("dev: %d sentences; model: %s" % (len(dev_records), describe_model(config, checkpoint)))

    model, crf = build_model(config, checkpoint, labels.size, args.crf_lr_multiplier)
    train = EventGenerator(examples, batch_size=args.batch_size)
    optimizer = adamw(args.lr, len(train) * args.epochs, ("gamma", "beta", "bias", "trans"))
    model.compile(optimizer=optimizer, loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
    evaluator = BestEpoch(
        lambda model: evaluate(model, crf, tokenizer, labels, dev_records, args.maxlen,
                               args.batch_size),
        key=lambda scores: scores["f1"], report=report)
    dataset = train.to_dataset(types=(("int32", "int32"), "int32"),
                               shapes=(((None, None), (None, None)), (None, None)))
    start = time.time()
    build_for_fit(model, dataset)  # one trace of the training step on TensorFlow
    model.fit(dataset, steps_per_epoch=len(train), epochs=args.epochs, shuffle=False,
              **common.fit_progress(args, [evaluator]))
    seconds = time.time() - start
    model.set_weights(evaluator.best_weights)
    dev_scores, dev_predictions = evaluate(model, crf, tokenizer, labels, dev_records,
                                           args.maxlen, args.batch_size)
    print("dev (best epoch): P=%.4f R=%.4f F1=%.4f (%d gold, %d predicted arguments)"
          % (dev_scores["precision"], dev_scores["recall"], dev_scores["f1"], dev_scores["gold"],
             dev_scores["predicted"]))
    if args.dev_output:
        write_json_lines(args.dev_output, dev_predictions)
    if args.test:
        test_records = read_texts(args.test, "DuEE", args.limit)
        event_lists = extract_events(model, crf, tokenizer, labels,
                                     [r["text"] for r in test_records], args.maxlen,
                                     args.batch_size)
        output = args.test_output or "runs/lic2020_ee/test_predictions.json"
        write_json_lines(output, [dict(r, event_list=e) for r, e in zip(test_records, event_lists)])
        print("wrote %d test predictions to %s" % (len(test_records), output))

    reload_diff = None
    if args.output:
        reload_diff = save_and_check(model, args.output, next(iter(train))[0])
    results = dict(dev=dev_scores, history=evaluator.history, best_dev_f1=evaluator.best,
                   data=dict(counts, dev_sentences=len(dev_records), labels=labels.size),
                   train_seconds=round(seconds, 1), checkpoint=checkpoint, config=config,
                   epochs=args.epochs, lr=args.lr, crf_lr_multiplier=args.crf_lr_multiplier,
                   maxlen=args.maxlen, batch_size=args.batch_size, limit=args.limit,
                   seed=args.seed, reload_diff=reload_diff)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
