"""LIC2020 relation extraction (DuIE 2.0): BERT pointers with a conditional LayerNorm.

Task and data: the relation extraction track of the 2020 Language and Intelligence
Challenge (LIC2020, Baidu), on DuIE 2.0. Each line of a data file is one JSON
object ``{"text": ..., "spo_list": [spo, ...]}`` with, per SPO::

    {"subject": "周亦然", "subject_type": "娱乐人物", "predicate": "饰演",
     "object": {"@value": "赵四", "inWork": "长河谣"},
     "object_type": {"@value": "人物", "inWork": "影视作品"}}

``object`` always has the slot ``@value``; the five "complex" predicates of
DuIE 2.0 add optional slots (``inWork``, ``onDate``, ``period``, ``inArea``).
The schema file has one JSON object per line, ``{"subject_type": ...,
"predicate": ..., "object_type": {"@value": ..., ...}}``. A sample in exactly
this format ships in ``examples/data/duie_sample/`` (hand-written sentences, a
few dozen lines; see ``examples/README.md`` for the real data).

Model (the "half pointer, half tagging" design of the original bert4keras
``task_relation_extraction.py`` / ``lic2020_baselines/ie.py``, written anew):

* BERT -> ``Dense(2, sigmoid)``: for every token, the probability that a
  subject starts / ends there, ``(batch, seq_len, 2)``;
* the hidden vectors at one subject's start and end token, concatenated
  (``(batch, 2 * hidden)``), condition a ``LayerNormalization(conditional=True)``
  that replaces the last LayerNorm of the encoder; ``Dense(2 * R, sigmoid)``
  on top gives, per token and per relation, the probability that an object of
  that relation (for that subject) starts / ends there, ``(batch, seq_len, R, 2)``.

Training feeds one gold subject per sentence (drawn at random each epoch) to
the object head. Decoding: every start above ``--threshold`` is paired with
the nearest end at or after it (subjects, then objects per relation).

Complex objects: every (predicate, slot) pair is a relation of its own, e.g.
``饰演/@value`` and ``饰演/inWork`` (R = 55 on the 48 DuIE 2.0 predicates).
Decoded pieces are reassembled per (subject, predicate): each ``@value``
object gives one SPO, and each other slot takes, among the values found for
it, the one whose position in the text is nearest to that ``@value``. Slot
values found without any ``@value`` are dropped. This is simple and honest,
not clever: a sentence with two roles in two works for the same actor is
paired by proximity only.

Spans: subjects and objects are located in the text by string search (first
occurrence; DuIE 2.0 gives no offsets), mapped to tokens through
``Tokenizer.rematch``, and decoded token spans are mapped back to the exact
characters of the text the same way. Texts are cut to ``--maxlen`` tokens;
SPOs beyond the cut are not learned (the script counts them).

Scoring: :func:`duie_scores` follows the official DuIE 2.0 evaluation
(``re_official_evaluation.py`` of the LIC2020 baseline, as published in
PaddleNLP ``examples/information_extraction/DuIE/``).

    python examples/competition_lic2020_relation_extraction.py            # shipped sample
    python examples/competition_lic2020_relation_extraction.py \\
        --train train_data.json --dev dev_data.json --schema duie_schema.json \\
        --model-dir chinese_roberta_wwm_ext_L-12_H-768_A-12 --test test1_data.json \\
        --test-output duie_pred.json
"""

import os
import re
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np
from keras import ops

from bert4keras.layers import DropMask, LayerNormalization
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, build_for_fit
from bert4keras.tokenizers import Tokenizer
from common import (BestEpoch, DataFormatError, adamw, add_model_args, add_run_args, describe_model,
                    pad_batch, read_json_lines, read_texts, require, resolve_paths, save_and_check,
                    write_json, write_json_lines)

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_DIR = os.path.join(HERE, "data", "duie_sample")
VALUE = "@value"
PRIOR_BIAS = float(np.log(0.01 / 0.99))  # initial pointer bias: 1 % probability
BUCKET = 16  # batches are padded to a multiple of this: few distinct shapes to trace


# ---------------------------------------------------------------------------
# Reading the official files
# ---------------------------------------------------------------------------


def load_schema(path):
    """Read a DuIE 2.0 schema file.

    Args:
        path: one JSON object per line, ``{"subject_type": str, "predicate":
            str, "object_type": {"@value": str, slot: str, ...}}``.

    Returns:
        ``(schema, relations)``: ``schema`` maps predicate -> ``{"subject_type":
        str, "object_type": {slot: type}}`` (a predicate listed twice gets the
        union of its slots); ``relations`` lists the ``(predicate, slot)``
        pairs the model points at, in file order, ``@value`` first.

    Raises:
        DataFormatError: a line lacks a field, has a field of the wrong type
            or an ``object_type`` without ``@value`` (file and line named).
    """
    schema = {}
    for number, obj in read_json_lines(path, "DuIE"):
        where = "%s, line %d" % (path, number)
        predicate = require(obj, "predicate", str, where)
        subject_type = require(obj, "subject_type", str, where)
        object_type = require(obj, "object_type", dict, where)
        if VALUE not in object_type:
            raise DataFormatError("%s: object_type of %r has no %r slot"
                                  % (where, predicate, VALUE))
        entry = schema.setdefault(predicate, {"subject_type": subject_type, "object_type": {}})
        for slot, kind in object_type.items():
            entry["object_type"].setdefault(slot, kind)
    if not schema:
        raise DataFormatError("%s: no schema line" % path)
    relations = []
    for predicate, entry in schema.items():
        slots = sorted(entry["object_type"], key=lambda s: (s != VALUE, s))
        relations.extend((predicate, slot) for slot in slots)
    return schema, relations


def load_duie(path, schema=None, limit=None):
    """Read a DuIE 2.0 data file (train or dev) into a list of records.

    Args:
        path: one JSON object per line with ``text`` (str) and ``spo_list``
            (list of ``{"subject": str, "predicate": str, "object": {"@value":
            str, ...}}``; ``subject_type``/``object_type`` are read if present
            and otherwise not needed).
        schema: from :func:`load_schema`; if given, predicates and object slots
            must be in it.
        limit: read only the first ``limit`` records.

    Returns:
        ``[{"text": str, "spo_list": [spo, ...]}, ...]`` with the SPOs as in
        the file.

    Raises:
        DataFormatError: a missing or mistyped field, an object without
            ``@value``, a predicate or slot absent from the schema; the
            message names the file, the line and the field.
    """
    records = []
    for number, obj in read_json_lines(path, "DuIE"):
        if limit is not None and len(records) >= limit:
            break
        where = "%s, line %d" % (path, number)
        text = require(obj, "text", str, where)
        spo_list = require(obj, "spo_list", list, where)
        for k, spo in enumerate(spo_list):
            at = "%s, spo_list[%d]" % (where, k)
            if not isinstance(spo, dict):
                raise DataFormatError("%s: expected an object, got %s" % (at, type(spo).__name__))
            require(spo, "subject", str, at)
            predicate = require(spo, "predicate", str, at)
            obj_value = require(spo, "object", dict, at)
            require(obj_value, VALUE, str, at + ".object")
            for slot, value in obj_value.items():
                if not isinstance(value, str):
                    raise DataFormatError("%s: object slot %r must be str, got %s"
                                          % (at, slot, type(value).__name__))
            if schema is not None:
                if predicate not in schema:
                    raise DataFormatError("%s: predicate %r is not in the schema" % (at, predicate))
                unknown = set(obj_value) - set(schema[predicate]["object_type"])
                if unknown:
                    raise DataFormatError("%s: object slots %s are not in the schema of %r"
                                          % (at, sorted(unknown), predicate))
        records.append({"text": text, "spo_list": spo_list})
    return records


# ---------------------------------------------------------------------------
# The official metric
# ---------------------------------------------------------------------------


def normalize_name(name):
    """Lower-case, then drop one pair of enclosing book-title marks ``《》``
    (``del_bookname`` of the official evaluation)."""
    name = name.lower()
    if name.startswith("《") and name.endswith("》"):
        name = name[1:-1]
    return name


def load_alias_dict(path):
    """Alias file of the official evaluation: one line per name, tab-separated,
    the name first, then its aliases; everything lower-cased.

    Returns:
        ``{name: set of aliases}`` (``{}`` for ``path`` None or '').
    """
    aliases = {}
    if not path:
        return aliases
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.strip().split("\t")
            if words and words[0]:
                aliases[words[0].lower()] = {w.lower() for w in words[1:]}
    return aliases


def _normalized_spos(spo_list):
    return [(normalize_name(spo["subject"]), spo["predicate"],
             tuple(sorted((k, normalize_name(v)) for k, v in spo["object"].items())))
            for spo in spo_list]


def _names(name, aliases):
    return aliases.get(name, set()) | {name}


def _same_object(a, b, aliases):
    a, b = dict(a), dict(b)
    if set(a) != set(b):
        return False
    return all(b[k] in _names(a[k], aliases) and a[k] in _names(b[k], aliases) for k in a)


def _spo_in(target, spos, aliases):
    if target in spos:
        return True
    subject, predicate, obj = target
    subjects = _names(subject, aliases)
    return any(p == predicate and s in subjects and _same_object(o, obj, aliases)
               for s, p, o in spos)


def _deduplicate(spos, aliases):
    kept = []
    for spo in spos:
        if not _spo_in(spo, kept, aliases):
            kept.append(spo)
    return kept


def duie_scores(gold_records, predicted_records, aliases=None):
    """SPO-level precision, recall and F1 as the official DuIE 2.0 evaluation.

    Follows ``re_official_evaluation.py`` (LIC2020 DuIE 2.0 baseline, also in
    PaddleNLP ``examples/information_extraction/DuIE/``):

    * sentences are matched by their ``text`` (a text present twice in the
      gold file counts once, with its last annotation; predicted texts absent
      from the gold file are ignored, missing ones count as empty);
    * an SPO is ``(subject, predicate, object dict)``; subject and every
      object value are lower-cased and stripped of enclosing ``《》``;
      ``subject_type``/``object_type`` are not compared;
    * an SPO is looked up in a list: it matches an entry with the same
      predicate whose subject is the SPO's own subject or one of *its*
      aliases (one-way, as in the official script: for precision the
      predicted subject's aliases count, for recall the gold subject's), and
      whose object dict has the same slots with values that are equal or
      aliases of each other in both directions; a complex SPO with a missing
      or extra slot is wrong as a whole;
    * duplicates (SPOs that match one another) are counted once, per sentence
      and on both sides;
    * precision = predictions found among the gold SPOs / predictions,
      recall = gold SPOs found among the (raw) predictions / gold SPOs, F1
      their harmonic mean (0 when undefined). The official script rounds to
      4 decimals; this function does not.

    Args:
        gold_records: ``[{"text": str, "spo_list": [...]}, ...]``.
        predicted_records: the same structure for the predictions.
        aliases: optional ``{name: set of aliases}`` (:func:`load_alias_dict`).

    Returns:
        ``{"precision", "recall", "f1", "gold", "predicted", "correct",
        "gold_found"}``.
    """
    aliases = aliases or {}
    gold = {r["text"]: _normalized_spos(r["spo_list"]) for r in gold_records}
    predicted = {r["text"]: _normalized_spos(r["spo_list"]) for r in predicted_records}
    n_gold = n_pred = correct = gold_found = 0
    for text, gold_spos in gold.items():
        gold_spos = _deduplicate(gold_spos, aliases)
        raw = predicted.get(text, [])
        pred_spos = _deduplicate(raw, aliases)
        n_gold += len(gold_spos)
        n_pred += len(pred_spos)
        correct += sum(_spo_in(spo, gold_spos, aliases) for spo in pred_spos)
        gold_found += sum(_spo_in(spo, raw, aliases) for spo in gold_spos)
    precision = correct / n_pred if n_pred else 0.0
    recall = gold_found / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(precision=precision, recall=recall, f1=f1, gold=n_gold, predicted=n_pred,
                correct=correct, gold_found=gold_found)


# ---------------------------------------------------------------------------
# Text <-> tokens
# ---------------------------------------------------------------------------


class Encoded:
    """One text cut to ``maxlen`` tokens, with its character offsets.

    Attributes:
        token_ids: ``[CLS] ... [SEP]`` ids.
        mapping: per token, the indices of the characters it came from
            (``Tokenizer.rematch``; empty for ``[CLS]``/``[SEP]``).
        char_to_token: per character, its token index or -1 (dropped
            whitespace, or cut off by ``maxlen``).
    """

    def __init__(self, tokenizer, text, maxlen):
        self.text = text
        tokens = tokenizer.tokenize(text, maxlen=maxlen)
        self.token_ids = tokenizer.tokens_to_ids(tokens)
        self.mapping = tokenizer.rematch(text, tokens)
        self.char_to_token = np.full(len(text), -1, dtype="int64")
        for index, chars in enumerate(self.mapping):
            for c in chars:
                if self.char_to_token[c] < 0:
                    self.char_to_token[c] = index
        covered = [c for chars in self.mapping for c in chars]
        self.last_char = max(covered) if covered else -1

    def token_span(self, start, end):
        """Inclusive token span of the characters ``[start, end)``, or None if
        they are (partly) cut off or map to no token."""
        if end - 1 > self.last_char or start >= end:
            return None
        tokens = self.char_to_token[start:end]
        tokens = tokens[tokens >= 0]
        if len(tokens) == 0:
            return None
        return int(tokens.min()), int(tokens.max())

    def char_span(self, first_token, last_token):
        """``(start, end)`` characters covered by the tokens, or None."""
        chars = [c for t in range(first_token, last_token + 1) for c in self.mapping[t]]
        if not chars:
            return None
        return min(chars), max(chars) + 1


def find_mention(text, mention):
    """First character offset of ``mention`` in ``text`` (exact, then ignoring
    case), or -1."""
    start = text.find(mention)
    if start < 0 and len(text.lower()) == len(text):
        start = text.lower().find(mention.lower())
    return start


def build_examples(records, tokenizer, relations, maxlen):
    """Token-level training examples and counts of what could not be used.

    Returns:
        ``(examples, counts)``: each example is ``(token_ids, {subject span:
        [(relation id, object span), ...]})`` with inclusive token spans;
        sentences none of whose SPOs could be placed are left out.
        ``counts`` has ``sentences``, ``spos``, ``spos_placed`` (every slot
        found within ``maxlen``) and ``sentences_used``.
    """
    relation_id = {r: i for i, r in enumerate(relations)}
    examples, counts = [], dict(sentences=len(records), spos=0, spos_placed=0, sentences_used=0)
    for record in records:
        enc = Encoded(tokenizer, record["text"], maxlen)
        spans = {}
        for spo in record["spo_list"]:
            counts["spos"] += 1
            s_start = find_mention(enc.text, spo["subject"])
            subject = (enc.token_span(s_start, s_start + len(spo["subject"]))
                       if s_start >= 0 else None)
            pieces = []
            for slot, value in spo["object"].items():
                o_start = find_mention(enc.text, value)
                span = enc.token_span(o_start, o_start + len(value)) if o_start >= 0 else None
                pieces.append((relation_id.get((spo["predicate"], slot)), span))
            if subject is None or any(r is None or s is None for r, s in pieces):
                continue
            counts["spos_placed"] += 1
            spans.setdefault(subject, set()).update(pieces)
        if spans:
            counts["sentences_used"] += 1
            examples.append((enc.token_ids, {s: sorted(o) for s, o in spans.items()}))
    return examples, counts


class RelationGenerator(DataGenerator):
    """Batches ``((token_ids, segment_ids, subject_ids), (subject_labels,
    object_labels))``.

    Shapes: token/segment ids ``(batch, seq_len)``; subject ids ``(batch, 2)``
    (start, end token of one gold subject, drawn at random); subject labels
    ``(batch, seq_len, 2)``; object labels ``(batch, seq_len, R, 2)``. Labels
    are 0/1 on real tokens and -1 on padding (read as a mask by the losses).
    """

    def __init__(self, examples, num_relations, batch_size):
        super().__init__(examples, batch_size=batch_size)
        self.num_relations = num_relations

    def __iter__(self, random=False):
        batch = []
        for is_end, example in self.sample(random):
            batch.append(example)
            if len(batch) == self.batch_size or is_end:
                yield self._arrays(batch, random)
                batch = []

    def _arrays(self, batch, random):
        ids = pad_batch([token_ids for token_ids, _ in batch], BUCKET)
        length = ids.shape[1]
        subject_labels = np.full((len(batch), length, 2), -1.0, dtype="float32")
        object_labels = np.full((len(batch), length, self.num_relations, 2), -1.0, dtype="float32")
        subject_ids = np.zeros((len(batch), 2), dtype="int32")
        for row, (token_ids, spans) in enumerate(batch):
            n = len(token_ids)
            subject_labels[row, :n] = 0
            object_labels[row, :n] = 0
            for start, end in spans:
                subject_labels[row, start, 0] = subject_labels[row, end, 1] = 1
            subjects = sorted(spans)
            chosen = subjects[np.random.randint(len(subjects))] if random else subjects[0]
            subject_ids[row] = chosen
            for relation, (start, end) in spans[chosen]:
                object_labels[row, start, relation, 0] = 1
                object_labels[row, end, relation, 1] = 1
        return (ids, np.zeros_like(ids), subject_ids), (subject_labels, object_labels)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="lic2020_relation_extraction")
class SpanVector(keras.layers.Layer):
    """Hidden vectors at a span's start and end token, concatenated.

    Inputs: ``[hidden (batch, seq_len, hidden), span (batch, 2) int]``.
    Output: ``(batch, 2 * hidden)``. No weights.
    """

    def call(self, inputs):
        hidden, span = inputs
        positions = ops.arange(ops.shape(hidden)[1], dtype="int32")
        picks = ops.cast(ops.equal(positions[None, None, :], ops.cast(span, "int32")[:, :, None]),
                         hidden.dtype)
        vectors = ops.einsum("bkl,blh->bkh", picks, hidden)
        return ops.reshape(vectors, (-1, 2 * hidden.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2 * input_shape[0][-1])


def _last_block_before_norm(bert):
    """The last encoder block's output before its final LayerNorm, if the
    model ends with ``Transformer-N-FeedForward-Norm`` (BERT-style post-LN);
    otherwise the encoder output."""
    last = bert.layers[-1]
    match = re.fullmatch(r"Transformer-(\d+)-FeedForward-Norm", last.name)
    if match:
        try:
            return bert.get_layer("Transformer-%s-FeedForward-Add" % match.group(1)).output
        except (ValueError, AttributeError):  # a shared (ALBERT-style) layer has several outputs
            pass
    return bert.output


def build_models(config, checkpoint, num_relations):
    """``(train_model, subject_model, object_model)`` sharing one BERT.

    * ``subject_model``: ``[token_ids, segment_ids]`` -> ``(batch, seq_len, 2)``
      subject start/end probabilities;
    * ``object_model``: ``[token_ids, segment_ids, subject_ids (batch, 2)]`` ->
      ``(batch, seq_len, num_relations, 2)`` object start/end probabilities;
    * ``train_model``: the same three inputs -> both outputs.

    The pointer biases start at ``log(0.01 / 0.99)`` (a 1 % prior, as Lin et
    al. 2017 initialise rare-class outputs) rather than 0, so an untrained
    head does not point everywhere; the original toolkit instead squared /
    raised the probabilities to the 4th power.
    """
    bert = build_transformer_model(config, checkpoint)
    hidden = bert.output
    prior = keras.initializers.Constant(PRIOR_BIAS)
    subject_preds = keras.layers.Dense(2, activation="sigmoid", bias_initializer=prior,
                                       name="Subject-Pointer")(hidden)
    subject_ids = keras.Input(shape=(2,), dtype="int32", name="Subject-Ids")
    subject = SpanVector(name="Subject-Vector")([hidden, subject_ids])
    conditioned = LayerNormalization(conditional=True, name="Object-Conditional-Norm")(
        [_last_block_before_norm(bert), subject])
    objects = keras.layers.Dense(num_relations * 2, activation="sigmoid", bias_initializer=prior,
                                 name="Object-Pointer")(conditioned)
    object_preds = keras.layers.Reshape((-1, num_relations, 2),
                                        name="Object-Pointer-Split")(objects)
    # the losses average over real tokens themselves (labels -1 mark padding)
    # and return one value per sentence: no Keras padding mask on the outputs
    subject_preds = DropMask(name="Subject-Pointer-Unmasked")(subject_preds)
    object_preds = DropMask(name="Object-Pointer-Unmasked")(object_preds)
    inputs = list(bert.inputs) + [subject_ids]
    train_model = keras.Model(inputs, [subject_preds, object_preds], name="duie_pointer")
    subject_model = keras.Model(bert.inputs, subject_preds, name="duie_subjects")
    object_model = keras.Model(inputs, object_preds, name="duie_objects")
    return train_model, subject_model, object_model


def _masked_token_mean(per_token, mask):
    return ops.sum(per_token * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


def subject_loss(y_true, y_pred):
    """Binary cross-entropy of the subject pointers, averaged over the real
    tokens of each sentence (labels -1 mark padding). ``(batch,)``."""
    mask = ops.cast(y_true[..., 0] >= 0, y_pred.dtype)
    loss = ops.binary_crossentropy(ops.maximum(y_true, 0.0), y_pred)
    return _masked_token_mean(ops.mean(loss, axis=-1), mask)


def object_loss(y_true, y_pred):
    """Binary cross-entropy of the object pointers: mean over start/end,
    summed over relations, averaged over real tokens. ``(batch,)``."""
    mask = ops.cast(y_true[..., 0, 0] >= 0, y_pred.dtype)
    loss = ops.binary_crossentropy(ops.maximum(y_true, 0.0), y_pred)
    return _masked_token_mean(ops.sum(ops.mean(loss, axis=-1), axis=-1), mask)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def pointer_spans(starts, ends, threshold, first, last):
    """Spans from start/end probabilities: each start above ``threshold`` in
    ``[first, last]`` pairs with the nearest end above it at or after it."""
    start_at = [i for i in np.nonzero(starts > threshold)[0] if first <= i <= last]
    end_at = [i for i in np.nonzero(ends > threshold)[0] if first <= i <= last]
    spans = []
    for i in start_at:
        later = [j for j in end_at if j >= i]
        if later:
            spans.append((int(i), int(later[0])))
    return spans


def assemble_spos(pieces, schema):
    """Official SPO dicts from decoded ``(subject, predicate, slot, value,
    value_start)`` pieces (see the module docstring for the pairing rule)."""
    grouped = {}
    for subject, predicate, slot, value, start in pieces:
        group = grouped.setdefault((subject, predicate), {})
        group.setdefault(slot, [])
        if value not in [v for v, _ in group[slot]]:
            group[slot].append((value, start))
    spos = []
    for (subject, predicate), slots in grouped.items():
        for value, start in slots.get(VALUE, []):
            obj = {VALUE: value}
            for slot, candidates in slots.items():
                if slot != VALUE:
                    obj[slot] = min(candidates, key=lambda c: abs(c[1] - start))[0]
            types = schema[predicate]
            spos.append({"subject": subject, "subject_type": types["subject_type"],
                         "predicate": predicate, "object": obj,
                         "object_type": {k: types["object_type"][k] for k in obj}})
    return spos


def decode_objects(enc, subject_span, scores, relations, threshold):
    """Pieces ``(subject, predicate, slot, value, value_start)`` of one subject.

    Args:
        enc: the :class:`Encoded` text.
        subject_span: inclusive token span of the subject.
        scores: object probabilities ``(seq_len, R, 2)`` for that subject.
        relations: the ``(predicate, slot)`` list of :func:`load_schema`.
        threshold: probability above which a start/end counts.
    """
    s_chars = enc.char_span(*subject_span)
    if s_chars is None:
        return []
    subject = enc.text[s_chars[0]:s_chars[1]]
    last = len(enc.token_ids) - 2
    pieces = []
    for r in np.nonzero((scores[:, :, 0] > threshold).any(axis=0))[0]:
        predicate, slot = relations[r]
        for start, end in pointer_spans(scores[:, r, 0], scores[:, r, 1], threshold, 1, last):
            o_chars = enc.char_span(start, end)
            if o_chars is not None:
                pieces.append((subject, predicate, slot, enc.text[o_chars[0]:o_chars[1]],
                               o_chars[0]))
    return pieces


def extract_spos(models, tokenizer, texts, schema, relations, maxlen, batch_size, threshold=0.5):
    """Predicted SPO lists (official format) for a list of texts."""
    _, subject_model, object_model = models
    results = []
    for b in range(0, len(texts), batch_size):
        encs = [Encoded(tokenizer, text, maxlen) for text in texts[b:b + batch_size]]
        ids = pad_batch([e.token_ids for e in encs], BUCKET)
        probs = keras.ops.convert_to_numpy(
            subject_model.predict_on_batch([ids, np.zeros_like(ids)]))
        queries = [(row, span) for row, enc in enumerate(encs)
                   for span in pointer_spans(probs[row, :, 0], probs[row, :, 1], threshold,
                                             1, len(enc.token_ids) - 2)]
        pieces = [[] for _ in encs]
        for q in range(0, len(queries), batch_size):
            chunk = queries[q:q + batch_size]
            rows = np.array([row for row, _ in chunk])
            spans = np.array([span for _, span in chunk], dtype="int32")
            out = keras.ops.convert_to_numpy(object_model.predict_on_batch(
                [ids[rows], np.zeros_like(ids[rows]), spans]))
            for (row, span), scores in zip(chunk, out):
                pieces[row].extend(decode_objects(encs[row], span, scores, relations, threshold))
        results.extend(assemble_spos(p, schema) for p in pieces)
    return results


def evaluate(models, tokenizer, records, schema, relations, maxlen, batch_size, threshold):
    texts = [r["text"] for r in records]
    predicted = extract_spos(models, tokenizer, texts, schema, relations, maxlen, batch_size,
                             threshold)
    predictions = [{"text": t, "spo_list": p} for t, p in zip(texts, predicted)]
    return duie_scores(records, predictions), predictions


def report(scores, best):
    """The epoch line of :class:`common.BestEpoch`."""
    return "dev P=%.4f R=%.4f F1=%.4f (best F1 %.4f)" % (scores["precision"], scores["recall"],
                                                       scores["f1"], best)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_duie_args(p):
    """The DuIE 2.0 file flags (train/dev/schema/alias/test and the outputs).

    Shared with ``task_relation_extraction_gplinker.py``; the defaults are
    the shipped sample under ``examples/data/duie_sample/``.
    """
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.json"),
                   help="DuIE 2.0 training file (default: the shipped sample)")
    p.add_argument("--dev", default=os.path.join(SAMPLE_DIR, "dev.json"),
                   help="DuIE 2.0 dev file, scored with the official metric")
    p.add_argument("--schema", default=os.path.join(SAMPLE_DIR, "schema.json"),
                   help="DuIE 2.0 schema file")
    p.add_argument("--alias", default="", help="optional alias file of the official evaluation")
    p.add_argument("--test", default=None, help="optional test file (lines with 'text') to predict")
    p.add_argument("--test-output", default=None,
                   help="write the test predictions here (official format, one JSON per line)")
    p.add_argument("--dev-output", default=None, help="write the dev predictions here")


def load_task(args):
    """Seed, resolve the model flags, read the schema, ``--train`` and ``--dev``.

    Prints the counts and the model.

    Args:
        args: parsed flags of :func:`common.add_model_args`, :func:`add_duie_args`
            and ``seed``, ``maxlen``, ``limit``.

    Returns:
        ``(config, checkpoint, tokenizer, schema, relations, examples, counts,
        dev_records)``: see :func:`common.resolve_paths`, :func:`load_schema`,
        :func:`build_examples` and :func:`load_duie`.

    Raises:
        FileNotFoundError: no config or vocabulary (:func:`common.resolve_paths`).
        DataFormatError: a malformed line in one of the files.
        ValueError: no training sentence has an SPO that can be placed.
    """
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    schema, relations = load_schema(args.schema)
    train_records = load_duie(args.train, schema, args.limit)
    dev_records = load_duie(args.dev, schema, args.limit)
    examples, counts = build_examples(train_records, tokenizer, relations, args.maxlen)
    if not examples:
        raise ValueError("no SPO of %s could be placed in its text within --maxlen %d"
                         % (args.train, args.maxlen))
    print("schema: %d predicates, %d (predicate, slot) relations" % (len(schema), len(relations)))
    print("train: %(sentences)d sentences, %(spos)d SPOs, %(spos_placed)d placed within maxlen, "
          "%(sentences_used)d sentences used" % counts)
    print("dev: %d sentences; model: %s" % (len(dev_records), describe_model(config, checkpoint)))
    return config, checkpoint, tokenizer, schema, relations, examples, counts, dev_records


def finish_dev_and_test(args, dev_records, dev_scores, dev_predictions, predict, test_output):
    """Rescore dev with ``--alias``, print it, write ``--dev-output`` and ``--test`` predictions.

    Args:
        args: parsed flags of :func:`add_duie_args` plus ``limit``.
        dev_records, dev_scores, dev_predictions: the best epoch's dev
            evaluation (:func:`duie_scores` and its predicted records).
        predict: ``texts -> SPO lists`` (official format), for ``--test``.
        test_output: where the test predictions go without ``--test-output``.

    Returns:
        the dev scores (with the alias dictionary when ``--alias`` is given).

    Raises:
        DataFormatError: a malformed line in ``--alias`` or ``--test``.
    """
    if args.alias:
        dev_scores = duie_scores(dev_records, dev_predictions, load_alias_dict(args.alias))
    print("dev (best epoch): P=%.4f R=%.4f F1=%.4f (%d gold, %d predicted, %d correct)"
          % (dev_scores["precision"], dev_scores["recall"], dev_scores["f1"], dev_scores["gold"],
             dev_scores["predicted"], dev_scores["correct"]))
    if args.dev_output:
        write_json_lines(args.dev_output, dev_predictions)
    if args.test:
        test_records = read_texts(args.test, "DuIE", args.limit)
        spo_lists = predict([r["text"] for r in test_records])
        output = args.test_output or test_output
        write_json_lines(output, [dict(r, spo_list=s) for r, s in zip(test_records, spo_lists)])
        print("wrote %d test predictions to %s" % (len(test_records), output))
    return dev_scores


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    add_duie_args(p)
    p.add_argument("--maxlen", type=int, default=256, help="tokens per text incl. [CLS]/[SEP]")
    # defaults suit the shipped small BERT on the shipped sample; the original
    # baseline used a base-size BERT with batch 16, lr 2e-5, 20 epochs
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-4, help="peak AdamW learning rate")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="pointer probability above which a start/end counts")
    add_run_args(p, limit="lines of each file", output="runs/lic2020_re/model.keras",
                 saved="the trained model (.keras)")
    return p.parse_args(argv)


def main(argv=None):
    """Train on ``--train``, score ``--dev`` after every epoch, return the scores.

    Returns:
        dict with ``dev`` (best-epoch scores of :func:`duie_scores`),
        ``history`` (per epoch), data counts, timings and the settings.

    Raises:
        DataFormatError: a malformed line in one of the files.
        ValueError: no training sentence has an SPO that can be placed.
    """
    args = parse_args(argv)
    config, checkpoint, tokenizer, schema, relations, examples, counts, dev_records = \
        load_task(args)

    models = build_models(config, checkpoint, len(relations))
    train_model = models[0]
    train = RelationGenerator(examples, len(relations), args.batch_size)
    train_model.compile(optimizer=adamw(args.lr, len(train) * args.epochs),
                        loss=[subject_loss, object_loss])
    evaluator = BestEpoch(
        lambda _: evaluate(models, tokenizer, dev_records, schema, relations, args.maxlen,
                           args.batch_size, args.threshold),
        key=lambda scores: scores["f1"], report=report)
    dataset = train.to_dataset(
        types=(("int32", "int32", "int32"), ("float32", "float32")),
        shapes=(((None, None), (None, None), (None, 2)),
                ((None, None, 2), (None, None, len(relations), 2))))
    start = time.time()
    build_for_fit(train_model, dataset)  # one trace of the training step on TensorFlow
    train_model.fit(dataset, steps_per_epoch=len(train), epochs=args.epochs,
                    shuffle=False, **common.fit_progress(args, [evaluator]))
    seconds = time.time() - start
    train_model.set_weights(evaluator.best_weights)
    dev_scores, dev_predictions = evaluate(models, tokenizer, dev_records, schema, relations,
                                           args.maxlen, args.batch_size, args.threshold)
    dev_scores = finish_dev_and_test(
        args, dev_records, dev_scores, dev_predictions,
        lambda texts: extract_spos(models, tokenizer, texts, schema, relations, args.maxlen,
                                   args.batch_size, args.threshold),
        "runs/lic2020_re/test_predictions.json")

    reload_diff = None
    if args.output:
        reload_diff = save_and_check(train_model, args.output, next(iter(train))[0])
    results = dict(dev=dev_scores, history=evaluator.history, best_dev_f1=evaluator.best,
                   data=dict(counts, dev_sentences=len(dev_records), relations=len(relations)),
                   train_seconds=round(seconds, 1), checkpoint=checkpoint, config=config,
                   epochs=args.epochs, lr=args.lr, maxlen=args.maxlen, batch_size=args.batch_size,
                   threshold=args.threshold, limit=args.limit, seed=args.seed,
                   reload_diff=reload_diff)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
