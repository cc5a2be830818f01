"""Extractive reading comprehension for LIC2020 (DuReader-robust) with BERT pointers.

Task: the machine reading comprehension track of the 2020 Language and
Intelligence Challenge (LIC2020, Baidu/CCF/CIPS), on the DuReader-robust
dataset (Tang et al., "DuReader_robust: A Chinese Dataset Towards Evaluating
Robustness and Generalization of Machine Reading Comprehension in Real-World
Applications", ACL 2021). Every answer is a span of its passage.

Data: SQuAD-style JSON, as released in ``dureader_robust-data`` (``train.json``
about 15k questions, ``dev.json`` 1,417; ``test.json`` without answers)::

    {"data": [{"title": "", "paragraphs": [
        {"context": "...",
         "qas": [{"id": "...", "question": "...",
                  "answers": [{"text": "...", "answer_start": 45}]}]}]}]}

``answer_start`` is the character offset of ``text`` in ``context``. Files to
be predicted may leave ``answers`` out (or empty). By default the script runs
on a small hand-written sample in ``examples/data/dureader_robust_sample/``
(original passages in the same format, not taken from the official data);
``--train``/``--dev`` take the official files unchanged.

Model: BERT over ``[CLS] question [SEP] passage window [SEP]`` and one
``Dense(2)`` giving a start and an end logit per token (Devlin et al. 2019,
section 4.2; Google's ``run_squad.py``). Passages longer than the window are
cut into overlapping windows of ``--maxlen`` tokens whose starts are
``--doc-stride`` tokens apart. In training, a window that holds the whole
answer points at it and a window that does not points at ``[CLS]``, and the
loss is the softmax cross-entropy of the start and of the end position over
the window, as in ``run_squad.py``. The prediction for a question is the span
``start <= end < start + --max-answer-len`` of passage tokens with the largest
``start_logit + end_logit`` over all of its windows, cut from the original
passage through the character offsets of ``Tokenizer.rematch``.

Scoring: the official LIC2020 DuReader-robust ``evaluate.py`` (shipped with
``dureader_robust-data``; itself an adaptation of the CMRC 2018 script), see
:func:`mrc_scores`: EM and F1 per question, maximum over its gold answers,
averaged over all questions of the file (a question without a prediction
counts 0), reported like the official script as percentages.

    python examples/competition_lic2020_reading_comprehension.py            # sample data
    python examples/competition_lic2020_reading_comprehension.py \\
        --train dureader_robust-data/train.json --dev dureader_robust-data/dev.json
    python examples/competition_lic2020_reading_comprehension.py \\
        --load runs/lic2020_mrc/model.keras --dev '' \\
        --predict dureader_robust-data/test.json --predict-output test.pred.json
"""

import json
import os
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.layers import DropMask
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, build_for_fit
from bert4keras.tokenizers import Tokenizer
from common import (BestEpoch, DataFormatError, adamw, add_model_args, add_run_args, describe_model,
                    pad_batch, resolve_paths, save_and_check, write_json)

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_DIR = os.path.join(HERE, "data", "dureader_robust_sample")


# ---------------------------------------------------------------------------
# The official DuReader-robust metric
# ---------------------------------------------------------------------------

# Characters dropped by the official ``_normalize``. Its list also holds the
# two-character string '……', which never equals a single character, so a
# lone '…' is kept, as in the official script.
_DROPPED = frozenset(":_`，。：？！()“”；’《》·、,「」（）－～『』|")
# CJK blocks that the official ``_tokenize_chinese_chars`` cuts into single
# characters (Google BERT's list, extension E from U+2B820).
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def normalize_answer(text):
    """Lower-case ``text`` and drop the official list of punctuation marks.

    The list (``: _ ` ( ) , |`` and the full-width
    ``，。：？！“”；’《》·、「」（）－～『』``) is that of ``_normalize`` in the
    official DuReader-robust ``evaluate.py``.
    Whitespace and other characters (``.``, ``-``, ``%``, ``'``) are kept.
    """
    return "".join(c for c in text.lower() if c not in _DROPPED)


def _is_cjk(char):
    code = ord(char)
    return any(a <= code <= b for a, b in _CJK)


def segment_answer(text):
    """Split normalised text into the units F1 counts.

    As ``_tokenize_chinese_chars`` of the official script: every CJK character
    and every ``=`` is a unit of its own; each maximal run of other characters
    between them (Latin letters, digits, spaces, other punctuation) is one
    unit, spaces included: ``'gpu 3090显卡' -> ['gpu 3090', '显', '卡']``.
    """
    units, run = [], ""
    for char in text:
        if _is_cjk(char) or char == "=":
            if run:
                units.append(run)
                run = ""
            units.append(char)
        else:
            run += char
    if run:
        units.append(run)
    return units


def longest_common_run(a, b):
    """Length of the longest contiguous run of units shared by ``a`` and ``b``
    (the official ``find_lcs``: a common substring, not a subsequence)."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def answer_f1(prediction, golds):
    """Official F1 of one prediction: the maximum over the gold answers of
    ``2PR/(P+R)`` with ``P = L/len(pred units)``, ``R = L/len(gold units)``,
    ``L`` the longest common run of units (0 when ``L = 0``).

    Raises:
        ValueError: ``golds`` is empty.
    """
    if not golds:
        raise ValueError("answer_f1 needs at least one gold answer")
    pred = segment_answer(normalize_answer(prediction))
    best = 0.0
    for gold in golds:
        units = segment_answer(normalize_answer(gold))
        common = longest_common_run(units, pred)
        if common:
            precision, recall = common / len(pred), common / len(units)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_em(prediction, golds):
    """Official exact match: 1.0 if the normalised prediction equals some
    normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(gold) == pred for gold in golds))


def mrc_scores(golds, predictions):
    """EM and F1 of a prediction dict, as the official ``evaluate.py`` computes them.

    Source: the LIC2020 DuReader-robust evaluation script (``evaluate.py`` in
    ``dureader_robust-data``, "Evaluation script for LIC2020 DuReader_robust"),
    derived from the CMRC 2018 script (ymcui/cmrc2018). Per question, EM and
    F1 are the maxima over its gold answers (:func:`answer_em`,
    :func:`answer_f1`); both are averaged over *all* questions of ``golds``,
    a question missing from ``predictions`` scoring 0 and counting as skipped.
    Note that the official script keeps whitespace and counts a whole
    non-CJK run as one unit (re-implementations that strip spaces or split
    English words give other numbers), and that F1 uses the longest common
    *contiguous* run, not a bag-of-characters overlap. (It also reads only
    ``data[0]`` of the reference file; this function scores every question
    it is given.)

    Args:
        golds: dict question id -> non-empty list of gold answer strings.
        predictions: dict question id -> predicted answer string.

    Returns:
        ``{'em', 'f1'}`` as fractions in [0, 1] (the official script prints
        them times 100), ``'total'`` questions and ``'skip'`` (no prediction).

    Raises:
        ValueError: ``golds`` is empty or a question has no gold answer.
    """
    if not golds:
        raise ValueError("no questions to score")
    em = f1 = 0.0
    skip = 0
    for qid, answers in golds.items():
        if not answers:
            raise ValueError("question %r has no gold answer to score against" % qid)
        if qid not in predictions:
            skip += 1
            continue
        em += answer_em(predictions[qid], answers)
        f1 += answer_f1(predictions[qid], answers)
    total = len(golds)
    return dict(em=em / total, f1=f1 / total, total=total, skip=skip)


def format_scores(scores):
    """The official script's one-line summary, e.g.
    ``{"F1": "80.842", "EM": "69.019", "TOTAL": 1417, "SKIP": 0}``."""
    return json.dumps({"F1": "%.3f" % (100 * scores["f1"]), "EM": "%.3f" % (100 * scores["em"]),
                       "TOTAL": scores["total"], "SKIP": scores["skip"]})


# ---------------------------------------------------------------------------
# Reading the JSON files
# ---------------------------------------------------------------------------


# The examples' one data-format error, under this script's earlier name. The
# message names the file, the position (``data[i].paragraphs[j].qas[k]``)
# and, when known, the question id.
MrcFormatError = DataFormatError


def load_mrc_file(path, require_answers=False):
    """Read a SQuAD / DuReader-robust JSON file and check every field.

    Args:
        path: the JSON file (format in the module docstring).
        require_answers: every question must have at least one answer
            (training and scored files); otherwise ``answers`` may be absent
            or empty (a test file).

    Returns:
        ``(contexts, examples)``: the list of paragraph contexts, and one dict
        per question with ``id`` (str), ``question``, ``passage`` (index into
        ``contexts``), ``answers`` (list of str) and ``spans`` (list of
        ``(start, end)`` character offsets, end exclusive).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: the file is not JSON, or a field is missing or of the
            wrong type, a question id is missing, empty or repeated, or an
            ``answer_start`` does not point at its answer text; the message
            names the file and the question's position and id.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError("reading-comprehension file %r not found" % path) from None
    except json.JSONDecodeError as err:
        raise DataFormatError("%s: not valid JSON (line %d, column %d: %s)"
                             % (path, err.lineno, err.colno, err.msg)) from None
    except UnicodeDecodeError as err:
        raise DataFormatError("%s: not UTF-8 text (%s)" % (path, err)) from None

    def fail(where, message):
        raise DataFormatError("%s: %s: %s" % (path, where, message))

    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        fail("top level", "expected an object with a 'data' list (SQuAD / DuReader-robust format)")
    contexts, examples, seen = [], [], {}
    for i, entry in enumerate(doc["data"]):
        paragraphs = entry.get("paragraphs") if isinstance(entry, dict) else None
        if not isinstance(paragraphs, list):
            fail("data[%d]" % i, "no 'paragraphs' list")
        for j, paragraph in enumerate(paragraphs):
            where = "data[%d].paragraphs[%d]" % (i, j)
            if not isinstance(paragraph, dict):
                fail(where, "a paragraph must be an object")
            context, qas = paragraph.get("context"), paragraph.get("qas")
            if not isinstance(context, str):
                fail(where, "'context' must be a string, got %r" % type(context).__name__)
            if not isinstance(qas, list):
                fail(where, "no 'qas' list")
            passage = len(contexts)
            contexts.append(context)
            for k, qa in enumerate(qas):
                qwhere = "%s.qas[%d]" % (where, k)
                if not isinstance(qa, dict):
                    fail(qwhere, "a question must be an object")
                qid = qa.get("id")
                if isinstance(qid, bool) or not isinstance(qid, (str, int)) or qid == "":
                    fail(qwhere, "question without an 'id' (got %r)" % (qid,))
                qid = str(qid)
                qwhere += " (id %r)" % qid
                if qid in seen:
                    fail(qwhere, "repeated question id, first at %s" % seen[qid])
                seen[qid] = qwhere
                question = qa.get("question")
                if not isinstance(question, str):
                    fail(qwhere, "'question' must be a string")
                answers = qa.get("answers") or []
                if not isinstance(answers, list):
                    fail(qwhere, "'answers' must be a list")
                texts, spans = [], []
                for a, answer in enumerate(answers):
                    awhere = "%s answers[%d]" % (qwhere, a)
                    if not isinstance(answer, dict):
                        fail(awhere, "an answer must be an object with 'text' and 'answer_start'")
                    text, start = answer.get("text"), answer.get("answer_start")
                    if not isinstance(text, str) or not text:
                        fail(awhere, "'text' must be a non-empty string, got %r" % (text,))
                    if isinstance(start, bool) or not isinstance(start, int):
                        fail(awhere, "'answer_start' must be an integer, got %r" % (start,))
                    end = start + len(text)
                    if start < 0 or context[start:end] != text:
                        fail(awhere, "answer_start=%d does not point at the answer text %r: "
                                     "the context there reads %r"
                             % (start, text, context[max(start, 0):max(end, 0)]))
                    texts.append(text)
                    spans.append((start, end))
                if require_answers and not texts:
                    fail(qwhere, "question without answers (a file without answers can only "
                                 "be given to --predict)")
                examples.append(dict(id=qid, question=question, passage=passage,
                                     answers=texts, spans=spans))
    return contexts, examples


# ---------------------------------------------------------------------------
# Tokens, offsets and windows
# ---------------------------------------------------------------------------


class Passage:
    """A context tokenized once, with the characters behind every token.

    Attributes:
        context: the original text.
        token_ids: WordPiece ids without ``[CLS]``/``[SEP]``, length ``n``.
        char_start, char_end: per token, the first character and one past the
            last character of ``context`` it came from (``Tokenizer.rematch``);
            -1 for a token that could not be located (never a span boundary).
    """

    def __init__(self, context, tokenizer):
        tokens = tokenizer.tokenize(context)
        spans = tokenizer.rematch(context, tokens)[1:-1]
        self.context = context
        self.token_ids = tokenizer.tokens_to_ids(tokens[1:-1])
        self.char_start = np.array([s[0] if s else -1 for s in spans], dtype="int64")
        self.char_end = np.array([s[-1] + 1 if s else -1 for s in spans], dtype="int64")

    def __len__(self):
        return len(self.token_ids)

    def token_span(self, start, end):
        """Inclusive token indices ``(first, last)`` covering the characters
        ``[start, end)``, or ``None`` when no located token overlaps them (an
        answer of whitespace or dropped characters only)."""
        hit = np.nonzero((self.char_start >= 0) & (self.char_end > start) &
                         (self.char_start < end))[0]
        return None if len(hit) == 0 else (int(hit[0]), int(hit[-1]))

    def text(self, first, last):
        """The original characters from token ``first`` through token ``last``."""
        return self.context[self.char_start[first]:self.char_end[last]]


def window_starts(n_tokens, size, stride):
    """First token of each window of at most ``size`` passage tokens, the
    starts ``stride`` apart (Google BERT's ``doc_stride``; a stride larger than
    ``size`` is cut to ``size`` so no token is skipped); the last window
    reaches the end of the passage. ``window_starts(10, 4, 3) == [0, 3, 6]``.
    """
    starts, start = [0], 0
    while start + size < n_tokens:
        start += min(stride, size)
        starts.append(start)
    return starts


def question_ids(tokenizer, question, max_question_len):
    """Token ids of the question without ``[CLS]``/``[SEP]``, cut to
    ``max_question_len`` tokens."""
    return tokenizer.encode(question)[0][1:-1][:max_question_len]


def make_windows(q_ids, passage, maxlen, doc_stride, cls_id, sep_id, answer=None):
    """The model inputs of one question over its passage windows.

    Each window is ``[CLS] question [SEP] passage[ws:ws+size] [SEP]`` with
    ``size = maxlen - len(q_ids) - 3``; its passage tokens start at position
    ``offset = len(q_ids) + 2`` (segment id 1 from there on).

    Args:
        q_ids: question token ids (see :func:`question_ids`).
        passage: a :class:`Passage`.
        maxlen: tokens per window including the special tokens.
        doc_stride: distance between window starts, in passage tokens.
        cls_id, sep_id: ids of ``[CLS]`` and ``[SEP]``.
        answer: optional inclusive passage token span ``(first, last)``.

    Returns:
        A list of dicts with ``token_ids``, ``segment_ids``, ``window_start``,
        ``offset``, ``length`` (passage tokens in the window) and the target
        positions ``start``/``end`` in the window: the answer's when the window
        holds all of it, else 0 (``[CLS]``).

    Raises:
        ValueError: ``maxlen`` leaves no room for passage tokens.
    """
    size = maxlen - len(q_ids) - 3
    if size < 1:
        raise ValueError("--maxlen %d leaves no room for the passage after a %d-token question "
                         "(raise --maxlen or lower --max-question-len)" % (maxlen, len(q_ids)))
    offset = len(q_ids) + 2
    windows = []
    for ws in window_starts(len(passage), size, doc_stride):
        piece = passage.token_ids[ws:ws + size]
        start = end = 0
        if answer is not None and ws <= answer[0] and answer[1] < ws + len(piece):
            start, end = answer[0] - ws + offset, answer[1] - ws + offset
        windows.append(dict(token_ids=[cls_id] + q_ids + [sep_id] + piece + [sep_id],
                            segment_ids=[0] * offset + [1] * (len(piece) + 1),
                            window_start=ws, offset=offset, length=len(piece),
                            start=start, end=end))
    return windows


class Featurizer:
    """Tokenizes passages (each once) and builds the windows of questions."""

    def __init__(self, tokenizer, contexts, maxlen, doc_stride, max_question_len):
        self.tokenizer, self.contexts = tokenizer, contexts
        self.maxlen, self.doc_stride, self.max_question_len = maxlen, doc_stride, max_question_len
        self.cls_id, self.sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        self.passages = {}

    def passage(self, index):
        if index not in self.passages:
            self.passages[index] = Passage(self.contexts[index], self.tokenizer)
        return self.passages[index]

    def windows(self, example, answer=None):
        q_ids = question_ids(self.tokenizer, example["question"], self.max_question_len)
        return make_windows(q_ids, self.passage(example["passage"]), self.maxlen,
                            self.doc_stride, self.cls_id, self.sep_id, answer)

    def training_windows(self, examples):
        """All windows of the questions, with the targets of every usable gold
        answer. Returns ``(windows, stats)``.

        The windows of a question depend on its passage and question only, so
        each window carries ``question`` (its question's index) and
        ``targets``: one ``(start, end)`` pair per gold answer that covers a
        token (in the order of the file); ``start``/``end`` hold the first
        answer's. :class:`WindowGenerator` picks one answer per question at
        random each training epoch, as the original baseline did. ``stats``
        counts the questions whose answers all cover no token (dropped),
        the answers dropped among the rest, and the questions whose first
        usable answer's tokens spell more than it (an answer ending inside a
        WordPiece word)."""
        windows, dropped, inexact, other_dropped, kept = [], 0, 0, 0, 0
        for example in examples:
            passage = self.passage(example["passage"])
            spans = [(passage.token_span(*span), text)
                     for span, text in zip(example["spans"], example["answers"])]
            usable = [(span, text) for span, text in spans if span is not None]
            if not usable:
                dropped += 1
                continue
            other_dropped += len(spans) - len(usable)
            inexact += passage.text(*usable[0][0]) != usable[0][1]
            alternatives = [self.windows(example, span) for span, _ in usable]
            for k, window in enumerate(alternatives[0]):
                window["question"] = kept
                window["targets"] = [(a[k]["start"], a[k]["end"]) for a in alternatives]
                windows.append(window)
            kept += 1
        return windows, dict(questions=len(examples), windows=len(windows),
                             dropped_answers=dropped, other_answers_dropped=other_dropped,
                             inexact_answers=inexact)


# ---------------------------------------------------------------------------
# Model, decoding, evaluation
# ---------------------------------------------------------------------------


def build_mrc_model(config, checkpoint):
    """BERT + ``Dense(2)``: inputs ``token_ids, segment_ids`` (batch, seq_len),
    output start/end logits (batch, seq_len, 2)."""
    bert = build_transformer_model(config, checkpoint)
    logits = keras.layers.Dense(2, kernel_initializer=keras.initializers.TruncatedNormal(
        stddev=0.02), name="MRC-Pointer")(bert.output)
    # one loss per window (pointer_loss): the padding mask must not weight it
    logits = DropMask(name="MRC-Pointer-Unmasked")(logits)
    return keras.Model(bert.inputs, logits, name="bert_mrc")


def pointer_loss(y_true, y_pred):
    """Mean softmax cross-entropy of the start and the end position.

    Args:
        y_true: int positions (batch, 2): start, end.
        y_pred: logits (batch, seq_len, 2).

    Returns:
        (batch,) losses.
    """
    logits = keras.ops.transpose(y_pred, (0, 2, 1))
    losses = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    return keras.ops.mean(losses, axis=-1)


class WindowGenerator(DataGenerator):
    """Yields ``((token_ids, segment_ids), positions)``: (batch, maxlen)
    int32 inputs and (batch, 2) int32 start/end targets.

    Windows with ``targets`` (from :meth:`Featurizer.training_windows`): on a
    shuffled pass (each training epoch) one gold answer is drawn per question,
    the same for all its windows, with ``seed``'s generator; an ordered pass
    uses each window's ``start``/``end`` (the first answer)."""

    def __init__(self, windows, batch_size, maxlen, seed=0):
        super().__init__(windows, batch_size=batch_size)
        self.maxlen = maxlen
        self.rng = np.random.default_rng(seed)

    def draw_answers(self):
        """``{question: answer index}``, one random draw per question with
        more than one usable answer."""
        counts = {w["question"]: len(w["targets"]) for w in self.data
                  if len(w.get("targets", ())) > 1}
        return {q: int(self.rng.integers(n)) for q, n in sorted(counts.items())}

    def __iter__(self, random=False):
        batch = []
        drawn = self.draw_answers() if random else {}
        for is_end, window in self.sample(random):
            batch.append(window)
            if len(batch) == self.batch_size or is_end:
                x = (pad_batch([w["token_ids"] for w in batch], length=self.maxlen),
                     pad_batch([w["segment_ids"] for w in batch], length=self.maxlen))
                y = np.array([w["targets"][drawn[w["question"]]] if w.get("question") in drawn
                              else (w["start"], w["end"]) for w in batch], dtype="int32")
                yield x, y
                batch = []


def best_span(start_logits, end_logits, valid, max_answer_len):
    """The best span of one window.

    Args:
        start_logits, end_logits: (n,) logits of the window's passage tokens.
        valid: (n,) bool, tokens that may start or end a span.
        max_answer_len: the longest span, in tokens.

    Returns:
        ``(score, first, last)`` maximising ``start_logits[first] +
        end_logits[last]`` over ``first <= last < first + max_answer_len``
        with both tokens valid, or ``None`` if there is no such span.
    """
    n = len(start_logits)
    first, last = np.indices((n, n))
    allowed = (last >= first) & (last - first < max_answer_len) & valid[:, None] & valid[None, :]
    if not allowed.any():
        return None
    scores = np.where(allowed, start_logits[:, None] + end_logits[None, :], -np.inf)
    best = int(np.argmax(scores))
    return float(scores.flat[best]), best // n, best % n


def predict_answers(model, featurizer, examples, batch_size, max_answer_len):
    """``{id: answer}``: the best span over all windows of each question
    (``''`` for an empty passage)."""
    windows = [(i, w) for i, example in enumerate(examples) for w in featurizer.windows(example)]
    best = [None] * len(examples)
    for b in range(0, len(windows), batch_size):
        batch = windows[b:b + batch_size]
        x = (pad_batch([w["token_ids"] for _, w in batch], length=featurizer.maxlen),
             pad_batch([w["segment_ids"] for _, w in batch], length=featurizer.maxlen))
        logits = keras.ops.convert_to_numpy(model.predict_on_batch(x))
        for (i, w), row in zip(batch, logits):
            passage = featurizer.passage(examples[i]["passage"])
            ws, offset, n = w["window_start"], w["offset"], w["length"]
            found = best_span(row[offset:offset + n, 0], row[offset:offset + n, 1],
                              passage.char_start[ws:ws + n] >= 0, max_answer_len)
            if found is not None and (best[i] is None or found[0] > best[i][0]):
                best[i] = (found[0], ws + found[1], ws + found[2])
    answers = {}
    for example, found in zip(examples, best):
        passage = featurizer.passage(example["passage"])
        answers[example["id"]] = "" if found is None else passage.text(found[1], found[2])
    return answers


def evaluate(model, featurizer, examples, batch_size, max_answer_len):
    """``(scores, predictions)`` on questions with gold answers."""
    predictions = predict_answers(model, featurizer, examples, batch_size, max_answer_len)
    scores = mrc_scores({e["id"]: e["answers"] for e in examples}, predictions)
    return scores, predictions


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.json"),
                   help="training file (default: the shipped sample)")
    p.add_argument("--dev", default=os.path.join(SAMPLE_DIR, "dev.json"),
                   help="scored file with answers (default: the shipped sample; '' to skip)")
    p.add_argument("--predict", default=None,
                   help="file to answer (answers may be absent); writes {id: answer} JSON")
    p.add_argument("--predict-output", default=None,
                   help="where --predict writes (default runs/lic2020_mrc/<name>.pred.json)")
    p.add_argument("--dev-predictions", default=None,
                   help="also write the dev predictions {id: answer} here")
    p.add_argument("--load", default=None,
                   help="a fine-tuned .keras model from an earlier run: no training")
    p.add_argument("--maxlen", type=int, default=256,
                   help="tokens per window incl. [CLS] question [SEP] ... [SEP]")
    p.add_argument("--doc-stride", type=int, default=128,
                   help="passage tokens between the starts of consecutive windows")
    p.add_argument("--max-question-len", type=int, default=64, help="question tokens kept")
    p.add_argument("--max-answer-len", type=int, default=30, help="longest answer, in tokens")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5, help="peak AdamW learning rate")
    add_run_args(p, limit="questions of each file", limit_default=0,
                 output="runs/lic2020_mrc/model.keras")
    args = p.parse_args(argv)
    for name in ("maxlen", "doc_stride", "max_question_len", "max_answer_len", "batch_size"):
        if getattr(args, name) < 1:
            p.error("--%s must be >= 1" % name.replace("_", "-"))
    if args.epochs < 0 or args.limit < 0:
        p.error("--epochs and --limit must be >= 0")
    if not args.load and not args.train:
        p.error("give --train (or --load a fine-tuned model)")
    return args


def check_maxlen(config_path, maxlen):
    """Raise ValueError if ``maxlen`` exceeds the model's position table."""
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    limit = config.get("max_position_embeddings", config.get("max_position"))
    if limit is not None and maxlen > limit:
        raise ValueError("--maxlen %d exceeds max_position_embeddings=%d of %s"
                         % (maxlen, limit, config_path))


def load_limited(path, require_answers, limit):
    contexts, examples = load_mrc_file(path, require_answers)
    return contexts, examples[:limit] if limit else examples


def main(argv=None):
    """Train (or ``--load``), score on ``--dev``, answer ``--predict``; returns
    the results dict (``dev`` scores as fractions, counts, timings, paths)."""
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    check_maxlen(config, args.maxlen)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)

    def featurizer(contexts):
        return Featurizer(tokenizer, contexts, args.maxlen, args.doc_stride,
                          args.max_question_len)

    dev = None
    if args.dev:
        dev_contexts, dev_examples = load_limited(args.dev, True, args.limit)
        dev = (featurizer(dev_contexts), dev_examples)
    results = dict(maxlen=args.maxlen, doc_stride=args.doc_stride,
                   max_answer_len=args.max_answer_len, batch_size=args.batch_size,
                   epochs=args.epochs, lr=args.lr, limit=args.limit, seed=args.seed,
                   config=config, checkpoint=checkpoint, load=args.load, train=None,
                   dev=None, dev_history=[], train_seconds=None, reload_diff=None,
                   output=None, predict_output=None, predicted=None)

    if args.load:
        model = keras.saving.load_model(args.load, compile=False)
        print("loaded %s" % args.load)
    else:
        train_contexts, train_examples = load_limited(args.train, True, args.limit)
        windows, stats = featurizer(train_contexts).training_windows(train_examples)
        if not windows:
            raise ValueError("%s: no training window (all answers dropped)" % args.train)
        results["train"] = stats
        print("train: %(questions)d questions, %(windows)d windows, %(dropped_answers)d answers "
              "dropped, %(inexact_answers)d inside a word" % stats)
        print("model: %s" % describe_model(config, checkpoint))
        model = build_mrc_model(config, checkpoint)
        generator = WindowGenerator(windows, args.batch_size, args.maxlen, seed=args.seed)
        model.compile(optimizer=adamw(args.lr, len(generator) * args.epochs), loss=pointer_loss)
        callbacks = []
        if dev is not None:
            evaluator = BestEpoch(
                lambda model: evaluate(model, dev[0], dev[1], args.batch_size,
                                       args.max_answer_len),
                key=lambda scores: scores["f1"],
                report=lambda scores, best: "dev %s (best F1 %.3f)" % (format_scores(scores),
                                                                       100 * best))
            callbacks.append(evaluator)
        start = time.time()
        if args.epochs:
            batches = generator.forfit()
            build_for_fit(model, batches)  # one trace of the training step on TensorFlow
            model.fit(batches, steps_per_epoch=len(generator), epochs=args.epochs,
                      shuffle=False, **common.fit_progress(args, callbacks))
        results["train_seconds"] = round(time.time() - start, 1)
        if dev is not None and evaluator.best_weights is not None:
            model.set_weights(evaluator.best_weights)
            results["dev_history"] = evaluator.history
            results["dev"] = evaluator.best_scores
            dev_predictions = evaluator.best_output

    if dev is not None and results["dev"] is None:
        results["dev"], dev_predictions = evaluate(model, dev[0], dev[1], args.batch_size,
                                                   args.max_answer_len)
    if dev is not None:
        print("dev: %s" % format_scores(results["dev"]))
        if args.dev_predictions:
            write_json(args.dev_predictions, dev_predictions)

    if args.predict:
        contexts, examples = load_limited(args.predict, False, args.limit)
        output = args.predict_output or os.path.join(
            "runs", "lic2020_mrc", os.path.splitext(os.path.basename(args.predict))[0]
            + ".pred.json")
        answers = predict_answers(model, featurizer(contexts), examples, args.batch_size,
                                  args.max_answer_len)
        write_json(output, answers)
        results["predict_output"], results["predicted"] = output, len(answers)
        print("wrote %d answers to %s" % (len(answers), output))

    if args.output and not args.load:
        results["reload_diff"] = save_and_check(model, args.output, next(iter(generator))[0])
        results["output"] = args.output
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
