"""CCKS 2019 Chinese short-text entity linking: a three-stage BERT baseline.

Task (CCKS 2019 evaluation task 2, organised by Baidu,
https://biendata.com/competition/ccks_2019_el/): find every entity mention in
a short Chinese text and link it to its entry of a knowledge base, or label
it ``NIL`` when the knowledge base has no such entry.

Files (one JSON object per line, the official names and fields):

* ``train.json`` and ``develop.json``: ``{"text_id": "1", "text": "...",
  "mention_data": [{"kb_id": "311223", "mention": "...", "offset": "0"}]}``;
  ``offset`` is the character index of the mention as a string; ``kb_id`` is
  a ``subject_id`` of the knowledge base or ``"NIL"``. The official
  ``develop.json`` (and ``eval722.json``) carry no ``mention_data``: such an
  unlabelled file is not scored; its predictions are written in the same
  format (``--predictions``), ready to submit.
* ``kb_data``: ``{"subject_id": "10001", "subject": "...", "alias": [...],
  "type": [...], "data": [{"predicate": "...", "object": "..."}, ...]}``
  (``alias``, ``type`` and ``data`` may be absent).

Pipeline (every statistic below is counted on the training split only,
never on the held-out or the scored texts):

0. annotator statistics (:class:`MentionStats`), after the author's CCKS 2019
   system, which modelled how the annotators behave: for each mention string
   ``s`` (stripped, lower-cased), the labelled mentions per ``kb_id``, giving
   the prior P(kb_id | s), and its link probability, the share of training
   texts containing ``s`` that label it as a mention (an occurrence inside a
   longer labelled mention, ``苹果`` in ``苹果公司``, is not counted);
1. mention detection: BERT over the characters of the text, one token per
   character, and two sigmoid pointers per token (mention starts here / ends
   here); each start is paired with the nearest end at or after it. The
   frequency filter then drops a detected string that occurs in at least
   ``--min-occurrences`` (5) training texts with a link probability below
   ``--min-link-prob`` (0.15; 0 disables), i.e. a string the annotators
   usually leave unmarked (the author's rule, (unlabelled + 1) / (labelled +
   1) >= 5, is close: never labelled in 4 texts, once in 10);
2. candidate generation: an alias index (lower-cased subject and aliases of
   every entity, plus the mention -> ``kb_id`` pairs labelled at least
   ``--min-alias-count`` (2) times in training; rarer pairs are dropped as
   noise, as the author did) gives the entities a mention string may name,
   most often linked in training first (``--max-candidates`` keeps those);
3. candidate ranking: BERT over ``[CLS] text with the mention between 【 】
   [SEP] entity description [SEP]`` (the description is the subject, its
   types and its ``predicate：object`` pairs, the long ``摘要`` last, cut to
   fit); the [CLS] vector, concatenated with three statistics of the pair
   (prior P(kb_id | mention), whether the string was ever labelled, its link
   probability; 0 when unknown; ``--no-mention-stats`` leaves them out),
   gives a sigmoid score; the best candidate wins. The training pairs see the
   statistics with their own text left out (leave-one-out), as a new text
   will. When the training data has NIL mentions, a mention with no candidate
   or whose best score is below ``--threshold`` is ``NIL``; otherwise such a
   mention without candidates is dropped.

Scoring (:func:`link_scores`): micro precision / recall / F1 over mentions;
a predicted ``(offset, mention, kb_id)`` counts only if a gold mention of the
same text has the same offset, the same mention string and the same
``kb_id``. Also reported: mention detection alone (offset and string), and
linking of the gold mentions (the ranker alone).

    python examples/competition_entity_linking.py                 # shipped sample
    python examples/competition_entity_linking.py --epochs 20 --lr 2e-4 --batch-size 16 \
        --valid-fraction 0        # sample: 3 held-out texts are too few to pick an epoch
    python examples/competition_entity_linking.py --data-dir /path/to/ccks2019_el \\
        --model-dir /path/to/chinese_L-12_H-768_A-12 --epochs 2 --batch-size 32
"""

import collections
import os
import random
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.layers import TokenSlice
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, build_for_fit
from bert4keras.tokenizers import Tokenizer

from common import (HERE, DataFormatError, adamw, add_model_args, add_run_args, describe_model,
                    pad_batch, resolve_paths, save_and_check, write_json, write_json_lines)

SAMPLE_DIR = os.path.join(HERE, "data", "ccks2019_el_sample")
NIL = "NIL"
MARKERS = ("【", "】")  # put around the mention in the ranker's input
BUCKET = 32  # pad batches to a multiple of this: few distinct shapes to compile
POINTER_THRESHOLD = 0.5
MAX_MENTION_CHARS = 32
DESCRIPTION_CHARS = 512  # a description is cut to this many characters when loaded
ABSTRACT = "摘要"  # the long free-text predicate of the CCKS knowledge base; put last
N_FEATURES = 3  # MentionStats.features: prior, ever labelled, link probability


# ---------------------------------------------------------------------------
# Reading the files
# ---------------------------------------------------------------------------


def is_nil(kb_id):
    """``True`` for ``"NIL"`` (CCKS 2019) and ``"NIL_<Type>"`` (CCKS 2020)."""
    return kb_id == NIL or kb_id.startswith(NIL + "_")


def read_json_lines(path):
    """``(line_no, object)`` for every non-blank line of ``path`` (1-based);
    errors say ``path:line:``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: a line is not JSON or not a JSON object.
    """
    return common.read_json_lines(path, "data", location="{path}:{line}",
                                  not_json="not valid JSON")


def _field(obj, name, types, path, line_no, where="", optional=False):
    if name not in obj:
        if optional:
            return None
        raise DataFormatError.at(path, line_no, "missing field %r%s" % (name, where))
    value = obj[name]
    if not isinstance(value, types):
        raise DataFormatError.at(path, line_no, "field %r%s should be %s, got %r"
                                 % (name, where, " or ".join(t.__name__ for t in types), value))
    return value


def describe_entity(subject, types, pairs, max_chars=DESCRIPTION_CHARS):
    """The ranker's text for one entity: ``subject；类型：a、b；p1：o1；...``.

    The ``摘要`` (abstract) pairs go last so that the short attributes survive
    truncation to ``max_chars`` characters.
    """
    parts = [subject]
    if types:
        parts.append("类型：" + "、".join(types))
    ordered = [p for p in pairs if p[0] != ABSTRACT] + [p for p in pairs if p[0] == ABSTRACT]
    parts.extend("%s：%s" % (p, o) for p, o in ordered)
    return "；".join(parts)[:max_chars]


def load_kb(path):
    """Read ``kb_data``: ``{subject_id: {'subject', 'aliases', 'description'}}``.

    ``aliases`` holds the subject and the ``alias`` list (duplicates removed);
    ``description`` is :func:`describe_entity` of the entity. Ids are strings
    (an int id is converted).

    Raises:
        DataFormatError: a line is not JSON, lacks ``subject_id`` or
            ``subject``, has an ``alias``/``type``/``data`` of the wrong type,
            a ``data`` item without ``predicate``/``object``, or repeats a
            ``subject_id``.
    """
    kb = {}
    for line_no, obj in read_json_lines(path):
        subject_id = str(_field(obj, "subject_id", (str, int), path, line_no))
        subject = _field(obj, "subject", (str,), path, line_no)
        aliases = _field(obj, "alias", (list,), path, line_no, optional=True) or []
        types = _field(obj, "type", (list, str), path, line_no, optional=True) or []
        data = _field(obj, "data", (list,), path, line_no, optional=True) or []
        if isinstance(types, str):
            types = [types]
        for i, alias in enumerate(aliases):
            if not isinstance(alias, str):
                raise DataFormatError.at(path, line_no, "alias[%d] should be a string, got %r"
                                         % (i, alias))
        pairs = []
        for i, item in enumerate(data):
            where = " in data[%d]" % i
            if not isinstance(item, dict):
                raise DataFormatError.at(path, line_no, "data[%d] should be an object" % i)
            pairs.append((_field(item, "predicate", (str,), path, line_no, where),
                          str(_field(item, "object", (str, int, float), path, line_no, where))))
        if subject_id in kb:
            raise DataFormatError.at(path, line_no, "subject_id %r appears twice" % subject_id)
        kb[subject_id] = dict(subject=subject, aliases=list(dict.fromkeys([subject] + aliases)),
                              description=describe_entity(subject, [str(t) for t in types],
                                                          pairs))
    if not kb:
        raise ValueError("knowledge base %r is empty" % path)
    return kb


def load_texts(path, kb):
    """Read ``train.json`` / ``develop.json`` / ``eval722.json``.

    Returns:
        A list of ``{'text_id', 'text', 'mentions'}``; ``mentions`` is a list of
        ``(offset, mention, kb_id)`` (offset an int), or ``None`` for every
        record when the file has no ``mention_data`` (an unlabelled test file).

    Raises:
        DataFormatError: bad JSON, a missing or mistyped ``text_id``/``text``/
            ``mention_data``/``kb_id``/``mention``/``offset``, an offset that
            is not a non-negative integer or where the text does not spell the
            mention, a ``kb_id`` that is neither NIL nor in the knowledge base,
            or ``mention_data`` present on some lines and absent on others.
    """
    records, labelled = [], None
    for line_no, obj in read_json_lines(path):
        text_id = str(_field(obj, "text_id", (str, int), path, line_no))
        text = _field(obj, "text", (str,), path, line_no)
        has_mentions = "mention_data" in obj
        if labelled is None:
            labelled = has_mentions
        elif has_mentions != labelled:
            raise DataFormatError.at(path, line_no, "mention_data is %s here but %s on the first "
                                     "line: a file is either labelled or not"
                                     % (("present", "absent") if has_mentions else
                                        ("absent", "present")))
        mentions = None
        if has_mentions:
            mentions = []
            for i, m in enumerate(_field(obj, "mention_data", (list,), path, line_no)):
                where = " in mention_data[%d]" % i
                if not isinstance(m, dict):
                    raise DataFormatError.at(path, line_no,
                                             "mention_data[%d] should be an object" % i)
                kb_id = str(_field(m, "kb_id", (str, int), path, line_no, where))
                mention = _field(m, "mention", (str,), path, line_no, where)
                offset = _field(m, "offset", (str, int), path, line_no, where)
                if isinstance(offset, str):
                    if not offset.isdigit():
                        raise DataFormatError.at(path, line_no, "offset %r%s is not a non-negative "
                                                 "integer" % (offset, where))
                    offset = int(offset)
                if not mention or offset < 0 or text[offset:offset + len(mention)] != mention:
                    raise DataFormatError.at(
                        path, line_no, "offset %d%s does not match mention %r: the text has %r "
                        "there" % (offset, where, mention, text[offset:offset + len(mention)]))
                if not is_nil(kb_id) and kb_id not in kb:
                    raise DataFormatError.at(path, line_no, "kb_id %r%s (mention %r) is not a "
                                             "subject_id of the knowledge base" % (kb_id, where,
                                                                                   mention))
                mentions.append((offset, mention, kb_id))
        records.append(dict(text_id=text_id, text=text, mentions=mentions))
    return records


def normalize_alias(name):
    """Key of the alias index: stripped and lower-cased."""
    return name.strip().lower()


def lower_chars(text):
    """``text`` lower-cased character by character, same length (a character
    whose lower case is longer, such as ``İ``, is kept), so offsets still hold."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def link_counts(records):
    """``Counter`` of ``(key, kb_id)`` over the labelled mentions of ``records``
    (key: :func:`normalize_alias` of the mention string; NIL ids included)."""
    counts = collections.Counter()
    for record in records:
        for _, mention, kb_id in record["mentions"] or ():
            counts[normalize_alias(mention), kb_id] += 1
    return counts


class AliasIndex:
    """Candidate generation: mention string -> ``subject_id`` list.

    Built from the subject and aliases of every entity of ``kb`` and, when
    given, the non-NIL gold mentions of training records: a mention string the
    annotators linked to an entity at least ``min_count`` times becomes one of
    its aliases (pairs seen less often are dropped as noise, as the author's
    CCKS 2019 system dropped links seen once; the KB's own names always stay).
    Keys are :func:`normalize_alias`. The ids of a key are ordered by how often
    the training split links the key to them (most often first), ties in the
    order added (KB order, then training order), so that ``limit`` keeps the
    entities the annotators use.
    """

    def __init__(self, kb, records=(), min_count=1):
        self.index = {}
        for subject_id, entity in kb.items():
            for alias in entity["aliases"]:
                self.add(alias, subject_id)
        counts = link_counts(records)
        for (key, kb_id), n in counts.items():
            if not is_nil(kb_id) and n >= min_count:
                self.add(key, kb_id)
        for key, ids in self.index.items():
            ids.sort(key=lambda i: -counts.get((key, i), 0))  # stable: ties keep their order

    def add(self, name, subject_id):
        ids = self.index.setdefault(normalize_alias(name), [])
        if subject_id not in ids:
            ids.append(subject_id)

    def candidates(self, mention, limit=None):
        """The ``subject_id`` s ``mention`` may name (at most ``limit``)."""
        ids = self.index.get(normalize_alias(mention), [])
        return list(ids[:limit] if limit else ids)


class MentionStats:
    """How the annotators of the training split treat each mention string.

    For a string ``s`` (keys by :func:`normalize_alias`, texts lower-cased):

    * ``links[s]``: ``Counter`` {kb_id: labelled mentions spelled ``s`` linked
      to it} (NIL is a label too); the prior P(kb_id | s) is
      ``links[s][kb_id] / sum(links[s].values())``;
    * ``labelled[s]``: training texts with at least one labelled mention
      spelled ``s``; ``unlabelled[s]``: the other training texts in which ``s``
      occurs at a position not inside a labelled mention (``苹果`` within a
      labelled ``苹果公司`` belongs to that mention and is not counted); the
      link probability of ``s`` is ``labelled / (labelled + unlabelled)``.

    Occurrences are counted for ``names`` (e.g. the alias-index keys) and every
    labelled mention string, those of 1 to ``max_chars`` characters. Counting
    enumerates every substring of every training text up to that length, about
    ``len(text) * max_chars`` set look-ups per text.

    ``exclude`` (one of the training records) removes that text's own
    contribution: the ranker's training pairs see the statistics as a new text
    will (leave-one-out), not ones that already contain their own answer.
    """

    def __init__(self, records, names=(), max_chars=MAX_MENTION_CHARS):
        self.links = {}
        for (key, kb_id), n in link_counts(records).items():
            self.links.setdefault(key, collections.Counter())[kb_id] = n
        keys = {normalize_alias(n) for n in names} | set(self.links)
        self.keys = {k for k in keys if 0 < len(k) <= max_chars}
        lengths = sorted({len(k) for k in self.keys})
        self.labelled, self.unlabelled = collections.Counter(), collections.Counter()
        for record in records:
            text, spans, labelled = self._parts(record)
            found = set()
            for i in range(len(text)):
                for n in lengths:
                    if i + n > len(text):
                        break
                    s = text[i:i + n]
                    if s in self.keys and s not in labelled and not _inside(i, n, spans):
                        found.add(s)
            self.labelled.update(labelled)
            self.unlabelled.update(found)

    @staticmethod
    def _parts(record):
        mentions = record["mentions"] or ()
        return (lower_chars(record["text"]), [(o, o + len(m)) for o, m, _ in mentions],
                {normalize_alias(m) for _, m, _ in mentions})

    def counts(self, mention, exclude=None):
        """``(links, labelled, unlabelled)`` of ``mention``: a ``Counter``
        {kb_id: n} and two numbers of texts, without ``exclude``'s share."""
        key = normalize_alias(mention)
        links = collections.Counter(self.links.get(key, {}))
        labelled, unlabelled = self.labelled[key], self.unlabelled[key]
        if exclude is not None:
            text, spans, own = self._parts(exclude)
            for _, m, kb_id in exclude["mentions"] or ():
                if normalize_alias(m) == key:
                    links[kb_id] -= 1
            links = +links  # drops the counts that reached 0
            if key in own:
                labelled = max(labelled - 1, 0)
            elif key in self.keys and _occurs_outside(text, key, spans):
                unlabelled = max(unlabelled - 1, 0)
        return links, labelled, unlabelled

    def prior(self, mention, kb_id, exclude=None):
        """P(kb_id | mention) in training; ``None`` for a string never labelled."""
        links = self.counts(mention, exclude)[0]
        total = sum(links.values())
        return links[kb_id] / total if total else None

    def link_probability(self, mention, exclude=None):
        """Share of the training texts containing ``mention`` that label it;
        ``None`` when no training text contains it."""
        _, labelled, unlabelled = self.counts(mention, exclude)
        return labelled / (labelled + unlabelled) if labelled + unlabelled else None

    def features(self, mention, kb_id, exclude=None):
        """The ranker's statistics input, ``(N_FEATURES,)`` float32:
        ``[prior P(kb_id | mention), 1 if the string was ever labelled else 0,
        link probability]`` (an unknown value is 0)."""
        links, labelled, unlabelled = self.counts(mention, exclude)
        total = sum(links.values())
        return np.array([links[kb_id] / total if total else 0.0, float(total > 0),
                         labelled / (labelled + unlabelled) if labelled + unlabelled else 0.0],
                        "float32")

    def rarely_linked(self, min_link_prob, min_occurrences):
        """The frequency filter: the strings that occur in at least
        ``min_occurrences`` training texts (labelled + unlabelled) and whose
        link probability is below ``min_link_prob`` (a set of keys; empty when
        ``min_link_prob <= 0``)."""
        if min_link_prob <= 0:
            return set()
        return {k for k in set(self.labelled) | set(self.unlabelled)
                if self.labelled[k] + self.unlabelled[k] >= max(min_occurrences, 1)
                and self.labelled[k] / (self.labelled[k] + self.unlabelled[k]) < min_link_prob}


def _inside(start, length, spans):
    return any(a <= start and start + length <= b for a, b in spans)


def _occurs_outside(text, key, spans):
    i = text.find(key)
    while i >= 0:
        if not _inside(i, len(key), spans):
            return True
        i = text.find(key, i + 1)
    return False


# ---------------------------------------------------------------------------
# The scorer
# ---------------------------------------------------------------------------


def _prf(gold, predicted):
    if len(gold) != len(predicted):
        raise ValueError("gold has %d texts but predicted has %d" % (len(gold), len(predicted)))
    n_gold = n_pred = n_correct = 0
    for g, p in zip(gold, predicted):
        g, p = set(g), set(p)
        n_gold += len(g)
        n_pred += len(p)
        n_correct += len(g & p)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(precision=precision, recall=recall, f1=f1, gold=n_gold, predicted=n_pred,
                correct=n_correct)


def link_scores(gold, predicted, nil="match"):
    """Mention-level micro precision, recall and F1 of entity linking.

    A prediction is correct when the same text has a gold mention with the
    same offset, the same mention string and the same ``kb_id``: precision is
    correct / predicted, recall correct / gold, F1 their harmonic mean (0 when
    both are 0). Each text's tuples are a set (a repeated prediction counts
    once). The task page (biendata ccks_2019_el) asks for every mention with
    its offset and ``kb_id`` (NIL when the KB lacks it), scored by F1; the
    organisers' evaluation script of the follow-up CCKS 2020 task (same
    data family, "Micro-F1") keys each mention by ``text_id``, text, mention
    and offset and then compares ``kb_id``, as here. That 2020 script skips
    predicted non-numeric (NIL) ids entirely while gold NILs still count in
    recall; ``nil='match'`` instead credits a correct NIL. The 2019 script
    itself was not found.

    Args:
        gold: list (one entry per text) of iterables of ``(offset, mention,
            kb_id)``.
        predicted: the same, aligned with ``gold``.
        nil: ``'match'`` (default): ``NIL`` is a label like any other, a
            predicted NIL at a gold NIL mention is correct; ``'drop'``: NIL
            mentions are removed from both sides first (in-KB linking only,
            as the original el-2019 baseline evaluated).

    Returns:
        ``{'precision', 'recall', 'f1', 'gold', 'predicted', 'correct'}``.

    Raises:
        ValueError: ``gold`` and ``predicted`` differ in length, ``nil`` is
            unknown, or an entry is not a 3-tuple.
    """
    if nil not in ("match", "drop"):
        raise ValueError("nil must be 'match' or 'drop', got %r" % (nil,))

    def clean(items):
        out = set()
        for item in items:
            if len(item) != 3:
                raise ValueError("expected (offset, mention, kb_id), got %r" % (item,))
            offset, mention, kb_id = item
            if nil == "drop" and is_nil(kb_id):
                continue
            out.add((int(offset), mention, kb_id))
        return out

    return _prf([clean(g) for g in gold], [clean(p) for p in predicted])


def mention_scores(gold, predicted):
    """Precision/recall/F1 of mention detection alone: ``(offset, mention)``
    pairs, ``kb_id`` ignored (same inputs as :func:`link_scores`)."""
    return _prf([{(int(o), m) for o, m, _ in g} for g in gold],
                [{(int(o), m) for o, m, _ in p} for p in predicted])


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


class CharEncoder(common.CharEncoder):
    """One token id per character (so that token ``i + 1`` is character ``i``;
    see :class:`common.CharEncoder`), plus the ranker's input pairs with the
    mention marked."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.markers = [tokenizer.token_to_id(m) for m in MARKERS]

    def chars(self, text):
        return [self.char_id(c) for c in text]

    def pair(self, text, offset, mention, description, maxlen):
        """Ranker input ``(token_ids, segment_ids)``, at most ``maxlen`` long.

        ``[CLS] left 【 mention 】 right [SEP] description [SEP]``; the text
        is cut to a window around the mention of about ``maxlen // 2``
        characters, the description takes the rest.
        """
        budget = max(maxlen // 2 - 5, len(mention))
        spare = max(budget - len(mention), 0)
        left = text[max(0, offset - spare // 2):offset]
        right = text[offset + len(mention):][:spare - len(left)]
        first = ([self.cls] + self.chars(left) + [self.markers[0]] + self.chars(mention)
                 + [self.markers[1]] + self.chars(right) + [self.sep])[:maxlen - 2]
        second = self.tokenizer.encode(description)[0][1:-1][:max(maxlen - len(first) - 1, 0)]
        second = second + [self.sep]
        return first + second, [0] * len(first) + [1] * len(second)


def predict_rows(model, inputs, batch_size):
    """``model.predict_on_batch`` on a batch padded with zero rows up to
    ``batch_size`` (so the last, short batch reuses the traced graph); the
    padding rows are cut off the numpy result."""
    n = len(inputs[0])
    if n < batch_size:
        inputs = tuple(np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
                       for x in inputs)
    return keras.ops.convert_to_numpy(model.predict_on_batch(inputs))[:n]


def windows(text, size):
    """Start offsets of consecutive ``size``-character windows (CCKS texts are
    short, so nearly always just ``[0]``)."""
    return list(range(0, max(len(text), 1), size))


# ---------------------------------------------------------------------------
# Stage 1: mention detection (start / end pointers)
# ---------------------------------------------------------------------------


def mention_pieces(records, maxlen):
    """``(text_piece, [(start, end_inclusive), ...])`` windows of at most
    ``maxlen - 2`` characters; mentions cut by a window edge are dropped."""
    size, pieces = maxlen - 2, []
    for record in records:
        text, spans = record["text"], [(o, o + len(m) - 1) for o, m, _ in record["mentions"]]
        for s in windows(text, size):
            inside = [(a - s, b - s) for a, b in spans if a >= s and b < s + size]
            pieces.append((text[s:s + size], inside))
    return pieces


class MentionGenerator(DataGenerator):
    """Yields ``((token_ids, segment_ids), pointers, mask)``: pointers
    (batch, seq_len, 2) with 1 at the token where a mention starts (channel 0)
    and ends (channel 1); mask (batch, seq_len) weights the real tokens."""

    def __init__(self, pieces, encoder, batch_size, maxlen):
        super().__init__(pieces, batch_size=batch_size)
        self.encoder, self.maxlen = encoder, maxlen

    def __iter__(self, random=False):
        batch = []
        for is_end, (text, spans) in self.sample(random):
            batch.append((self.encoder(text), spans))
            if len(batch) == self.batch_size or is_end:
                ids = pad_batch([b[0] for b in batch], BUCKET, maxlen=self.maxlen)
                y = np.zeros(ids.shape + (2,), "float32")
                for row, (_, spans_) in enumerate(batch):
                    for start, end in spans_:  # +1: [CLS] comes first
                        y[row, start + 1, 0] = y[row, end + 1, 1] = 1
                yield (ids, np.zeros_like(ids)), y, (ids > 0).astype("float32")
                batch = []


def build_mention_model(config, checkpoint):
    """BERT -> Dense(2, sigmoid): start / end probability per token,
    ``(batch, seq_len) x 2 -> (batch, seq_len, 2)``."""
    bert = build_transformer_model(config, checkpoint)
    output = keras.layers.Dense(2, activation="sigmoid", name="Mention-Pointers")(bert.output)
    return keras.Model(bert.inputs, output, name="mention_pointers")


def decode_pointers(probs, length, threshold=POINTER_THRESHOLD, max_chars=MAX_MENTION_CHARS):
    """Character spans ``(start, end_inclusive)`` from pointer probabilities.

    Args:
        probs: ``(seq_len, 2)`` start/end probabilities of one sequence whose
            token ``i + 1`` is character ``i``.
        length: number of characters.

    Every start above ``threshold`` is paired with the nearest end above it at
    or after the start, at most ``max_chars`` characters on.
    """
    starts = np.nonzero(probs[1:length + 1, 0] > threshold)[0]
    ends = np.nonzero(probs[1:length + 1, 1] > threshold)[0]
    spans = []
    for s in starts:
        after = ends[(ends >= s) & (ends < s + max_chars)]
        if len(after):
            spans.append((int(s), int(after[0])))
    return spans


def detect_mentions(model, encoder, texts, batch_size, maxlen):
    """Predicted ``(offset, mention)`` list per text."""
    size = maxlen - 2
    pieces = [(i, s, t[s:s + size]) for i, t in enumerate(texts) for s in windows(t, size)]
    found = [[] for _ in texts]
    for b in range(0, len(pieces), batch_size):
        batch = pieces[b:b + batch_size]
        ids = pad_batch([encoder(p) for _, _, p in batch], BUCKET, maxlen=maxlen)
        probs = predict_rows(model, (ids, np.zeros_like(ids)), batch_size)
        for (i, shift, piece), p in zip(batch, probs):
            for start, end in decode_pointers(p, len(piece)):
                found[i].append((start + shift, texts[i][start + shift:end + shift + 1]))
    return found


# ---------------------------------------------------------------------------
# Stages 2 and 3: candidates and their ranking
# ---------------------------------------------------------------------------


def ranking_pairs(records, index, negatives, max_candidates, rng, stats=None):
    """Training pairs ``(text, offset, mention, subject_id, label, features)``.

    For every gold mention: the gold entity (label 1, unless NIL) and up to
    ``negatives`` other candidates of its string drawn at random (label 0);
    a NIL mention contributes negatives only. ``features`` is
    :meth:`MentionStats.features` with the pair's own text left out
    (``None`` without ``stats``).
    """
    pairs = []
    for record in records:
        text = record["text"]
        for offset, mention, kb_id in record["mentions"]:
            others = [c for c in index.candidates(mention, max_candidates) if c != kb_id]
            chosen = [] if is_nil(kb_id) else [(kb_id, 1)]
            chosen += [(c, 0) for c in rng.sample(others, min(negatives, len(others)))]
            for c, label in chosen:
                features = None if stats is None else stats.features(mention, c, exclude=record)
                pairs.append((text, offset, mention, c, label, features))
    return pairs


class PairGenerator(DataGenerator):
    """Yields ``((token_ids, segment_ids), labels)``: (batch, seq_len) ints and
    (batch, 1) floats, from :func:`ranking_pairs`; when the pairs carry
    features, the inputs are ``(token_ids, segment_ids, features)`` with
    features (batch, N_FEATURES) floats."""

    def __init__(self, pairs, encoder, kb, batch_size, maxlen):
        super().__init__(pairs, batch_size=batch_size)
        self.encoder, self.kb, self.maxlen = encoder, kb, maxlen

    def __iter__(self, random=False):
        ids, segs, labels, features = [], [], [], []
        for is_end, (text, offset, mention, subject_id, label, f) in self.sample(random):
            i, s = self.encoder.pair(text, offset, mention, self.kb[subject_id]["description"],
                                     self.maxlen)
            ids.append(i)
            segs.append(s)
            labels.append([label])
            features.append(f)
            if len(ids) == self.batch_size or is_end:
                inputs = (pad_batch(ids, length=self.maxlen), pad_batch(segs, length=self.maxlen))
                if features[0] is not None:
                    inputs += (np.array(features, "float32"),)
                yield inputs, np.array(labels, "float32")
                ids, segs, labels, features = [], [], [], []


def build_ranker(config, checkpoint, dropout=0.1, n_features=0):
    """BERT -> [CLS] vector -> dropout -> Dense(1, sigmoid): the probability
    that the marked mention names the described entity, ``(batch, 1)``.

    With ``n_features`` > 0 the model takes a third input, ``(batch,
    n_features)`` floats (the training-set statistics of
    :meth:`MentionStats.features`), concatenated to the [CLS] vector after the
    dropout, so the score is a learnt mix of text match and annotator habit.
    """
    bert = build_transformer_model(config, checkpoint)
    inputs = list(bert.inputs)
    x = TokenSlice(index=0, name="CLS-Token")(bert.output)
    x = keras.layers.Dropout(dropout, name="Ranker-Dropout")(x)
    if n_features:
        inputs.append(keras.Input((n_features,), name="Mention-Statistics"))
        x = keras.layers.Concatenate(name="CLS-And-Statistics")([x, inputs[-1]])
    x = keras.layers.Dense(1, activation="sigmoid", name="Link-Score")(x)
    return keras.Model(inputs, x, name="candidate_ranker")


class Linker:
    """The whole pipeline: detect mentions, look candidates up, rank them.

    Args:
        mention_model, ranker: the two Keras models.
        encoder: :class:`CharEncoder`.
        kb: :func:`load_kb` output; index: :class:`AliasIndex`.
        maxlen, batch_size: input length and rows per ``predict_on_batch``.
        max_candidates: candidates ranked per mention.
        predict_nil: label unlinkable mentions ``NIL`` (else drop them).
        threshold: best ranker score below which a mention is NIL.
        stats: :class:`MentionStats` of the training split, required when the
            ranker takes the statistics input.
        drop: keys (:func:`normalize_alias`) of strings the frequency filter
            removes from the detected mentions (:meth:`MentionStats.rarely_linked`).

    Raises:
        ValueError: the ranker takes statistics but ``stats`` is ``None``.
    """

    def __init__(self, mention_model, ranker, encoder, kb, index, maxlen, batch_size,
                 max_candidates, predict_nil, threshold, stats=None, drop=()):
        self.mention_model, self.ranker, self.encoder = mention_model, ranker, encoder
        self.kb, self.index, self.maxlen, self.batch_size = kb, index, maxlen, batch_size
        self.max_candidates, self.predict_nil, self.threshold = (max_candidates, predict_nil,
                                                                 threshold)
        self.use_features = len(ranker.inputs) > 2
        if self.use_features and stats is None:
            raise ValueError("ranker %r has %d inputs, so it takes mention statistics (the "
                             "last input), but stats is None" % (ranker.name, len(ranker.inputs)))
        self.stats, self.drop, self.filtered = stats, set(drop), 0

    def score(self, queries):
        """Ranker probability of each ``(text, offset, mention, subject_id)``."""
        scores = []
        for b in range(0, len(queries), self.batch_size):
            batch = queries[b:b + self.batch_size]
            pairs = [self.encoder.pair(t, o, m, self.kb[c]["description"], self.maxlen)
                     for t, o, m, c in batch]
            inputs = (pad_batch([p[0] for p in pairs], length=self.maxlen),
                      pad_batch([p[1] for p in pairs], length=self.maxlen))
            if self.use_features:
                inputs += (np.array([self.stats.features(m, c) for _, _, m, c in batch]),)
            scores.extend(predict_rows(self.ranker, inputs, self.batch_size)[:, 0].tolist())
        return scores

    def link_mentions(self, texts, mentions):
        """Resolve given ``(offset, mention)`` lists: a set of ``(offset,
        mention, kb_id)`` per text."""
        queries, owners = [], []
        results = [set() for _ in texts]
        for i, (text, found) in enumerate(zip(texts, mentions)):
            for offset, mention in found:
                candidates = self.index.candidates(mention, self.max_candidates)
                if not candidates and self.predict_nil:
                    results[i].add((offset, mention, NIL))
                for c in candidates:
                    queries.append((text, offset, mention, c))
                    owners.append((i, offset, mention))
        best = {}
        for owner, query, score in zip(owners, queries, self.score(queries)):
            if owner not in best or score > best[owner][1]:
                best[owner] = (query[3], score)
        for (i, offset, mention), (subject_id, score) in best.items():
            if self.predict_nil and score < self.threshold:
                subject_id = NIL
            results[i].add((offset, mention, subject_id))
        return results

    def __call__(self, texts):
        """Link raw texts: a set of ``(offset, mention, kb_id)`` per text.

        Detected mentions whose string is in ``drop`` are removed first; their
        number is left in ``self.filtered``."""
        found = detect_mentions(self.mention_model, self.encoder, texts, self.batch_size,
                                self.maxlen)
        kept = [[(o, m) for o, m in spans if normalize_alias(m) not in self.drop]
                for spans in found]
        self.filtered = sum(len(a) - len(b) for a, b in zip(found, kept))
        return self.link_mentions(texts, kept)


def evaluate(linker, records):
    """Scores of the pipeline on labelled records, and its predictions."""
    texts = [r["text"] for r in records]
    gold = [set(r["mentions"]) for r in records]
    predicted = linker(texts)
    given = linker.link_mentions(texts, [[(o, m) for o, m, _ in r["mentions"]] for r in records])
    in_kb = [(m, k) for r in records for _, m, k in r["mentions"] if not is_nil(k)]
    found = sum(k in linker.index.candidates(m, linker.max_candidates) for m, k in in_kb)
    scores = dict(linking=link_scores(gold, predicted),
                  linking_in_kb=link_scores(gold, predicted, nil="drop"),
                  mentions=mention_scores(gold, predicted),
                  gold_mention_linking=link_scores(gold, given),
                  candidate_recall=found / len(in_kb) if in_kb else 0.0,
                  filtered_mentions=linker.filtered)
    return scores, predicted


def format_scores(scores):
    return " ".join("%s P=%.4f R=%.4f F1=%.4f" % (k, s["precision"], s["recall"], s["f1"])
                    for k, s in scores.items() if isinstance(s, dict))


def write_predictions(path, records, predicted):
    """Write predictions in the official format (offsets as strings, mentions
    in text order)."""
    write_json_lines(path, ({"text_id": record["text_id"], "text": record["text"],
                             "mention_data": [{"kb_id": k, "mention": m, "offset": str(o)}
                                              for o, m, k in sorted(found)]}
                            for record, found in zip(records, predicted)))


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--data-dir", default=SAMPLE_DIR,
                   help="directory with train.json, develop.json and kb_data (the official "
                        "ccks2019_el directory; default: the shipped sample)")
    p.add_argument("--train", default=None, help="training file (default DATA_DIR/train.json)")
    p.add_argument("--dev", default=None,
                   help="file scored (if labelled) and predicted (default DATA_DIR/develop.json)")
    p.add_argument("--kb", default=None, help="knowledge base (default DATA_DIR/kb_data)")
    p.add_argument("--valid-fraction", type=float, default=0.1,
                   help="part of the training file held out to pick the best epoch "
                        "(default %(default)s)")
    p.add_argument("--epochs", type=int, default=3, help="default %(default)s")
    p.add_argument("--batch-size", type=int, default=32, help="default %(default)s")
    p.add_argument("--maxlen", type=int, default=128,
                   help="tokens per input of both models, [CLS]/[SEP] included "
                        "(default %(default)s)")
    p.add_argument("--lr", type=float, default=5e-5,
                   help="peak AdamW learning rate, linear decay (default %(default)s)")
    p.add_argument("--negatives", type=int, default=3,
                   help="wrong candidates drawn per gold mention for the ranker, each epoch "
                        "(default %(default)s)")
    p.add_argument("--max-candidates", type=int, default=16,
                   help="candidates ranked per mention, the first ones of the alias index "
                        "(default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="a mention whose best candidate scores below this is NIL (only when "
                        "the training data has NIL mentions; default %(default)s)")
    p.add_argument("--min-link-prob", type=float, default=0.15,
                   help="frequency filter: a detected mention string is dropped when at least "
                        "--min-occurrences training texts contain it and fewer than this share "
                        "of them label it as a mention (0 disables; default %(default)s)")
    p.add_argument("--min-occurrences", type=int, default=5,
                   help="training texts a string must occur in before the filter judges it "
                        "(default %(default)s)")
    p.add_argument("--min-alias-count", type=int, default=2,
                   help="a mention -> entity pair of the training split becomes an alias only "
                        "when labelled at least this many times (the KB's names always count; "
                        "1 keeps every pair; default %(default)s)")
    p.add_argument("--no-mention-stats", action="store_true",
                   help="rank without the training-set statistics input (prior P(entity | "
                        "mention), ever labelled, link probability)")
    add_run_args(p, limit="texts per split", output="runs/entity_linking",
                 saved="mention.keras and ranker.keras (a directory)")
    p.add_argument("--predictions", default=None,
                   help="where the dev-file predictions go, official format (default "
                        "OUTPUT/develop_pred.json or runs/entity_linking/develop_pred.json; "
                        "'' to skip)")
    args = p.parse_args(argv)
    args.train = args.train or os.path.join(args.data_dir, "train.json")
    args.dev = args.dev or os.path.join(args.data_dir, "develop.json")
    args.kb = args.kb or os.path.join(args.data_dir, "kb_data")
    if not 0 <= args.valid_fraction < 1:
        p.error("--valid-fraction must be in [0, 1)")
    if args.epochs < 1 or args.batch_size < 1 or args.maxlen < 16:
        p.error("--epochs and --batch-size must be >= 1 and --maxlen >= 16")
    if not 0 <= args.min_link_prob <= 1 or args.min_occurrences < 1 or args.min_alias_count < 1:
        p.error("--min-link-prob must be in [0, 1], --min-occurrences and --min-alias-count >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    rng = random.Random(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    encoder = CharEncoder(Tokenizer(vocab, do_lower_case=not args.cased))

    kb = load_kb(args.kb)
    records = load_texts(args.train, kb)
    if not records or records[0]["mentions"] is None:
        raise ValueError("training file %r is empty or has no mention_data" % args.train)
    dev = load_texts(args.dev, kb)
    shuffled = list(records)
    random.Random(args.seed).shuffle(shuffled)
    n_valid = int(round(len(shuffled) * args.valid_fraction))
    data = {"train": shuffled[n_valid:], "valid": shuffled[:n_valid], "dev": dev}
    if args.limit:
        data = {k: v[:args.limit] for k, v in data.items()}
    dev_labelled = bool(data["dev"]) and data["dev"][0]["mentions"] is not None
    predict_nil = any(is_nil(k) for r in data["train"] for _, _, k in r["mentions"])
    # every statistic comes from the training split only (not valid, not dev)
    index = AliasIndex(kb, data["train"], min_count=args.min_alias_count)
    stats = MentionStats(data["train"], index.index)
    drop = stats.rarely_linked(args.min_link_prob, args.min_occurrences)
    print("knowledge base: %d entities, %d alias keys; texts: train %d, valid %d, dev %d (%s)"
          % (len(kb), len(index.index), len(data["train"]), len(data["valid"]), len(data["dev"]),
             "labelled" if dev_labelled else "unlabelled"))
    print("model: %s; NIL mentions in training data: %s; frequency filter drops %d strings%s"
          % (describe_model(config, checkpoint), predict_nil, len(drop),
             (" (e.g. %s)" % "、".join(sorted(drop)[:10])) if drop else ""))

    mention_model = build_mention_model(config, checkpoint)
    use_stats = not args.no_mention_stats
    ranker = build_ranker(config, checkpoint, n_features=N_FEATURES if use_stats else 0)
    ranker_stats = stats if use_stats else None
    pieces = mention_pieces(data["train"], args.maxlen)
    mention_gen = MentionGenerator(pieces, encoder, args.batch_size, args.maxlen)
    n_pairs = len(ranking_pairs(data["train"], index, args.negatives, args.max_candidates,
                                random.Random(0)))
    if not pieces or not n_pairs:
        raise ValueError("no training data left (check --limit and the training file)")
    ranker_steps = -(-n_pairs // args.batch_size)
    mention_model.compile(optimizer=adamw(args.lr, len(mention_gen) * args.epochs),
                          loss="binary_crossentropy")
    ranker.compile(optimizer=adamw(args.lr, ranker_steps * args.epochs),
                   loss="binary_crossentropy", metrics=["binary_accuracy"])
    linker = Linker(mention_model, ranker, encoder, kb, index, args.maxlen, args.batch_size,
                    args.max_candidates, predict_nil, args.threshold, stats=stats, drop=drop)

    history, best, best_epoch, best_weights = [], None, None, None
    start = time.time()
    for epoch in range(args.epochs):
        # build_for_fit: one trace of each training step on TensorFlow (no-op after epoch 1)
        mention_batches = mention_gen.forfit()
        build_for_fit(mention_model, mention_batches)
        mention_model.fit(mention_batches, steps_per_epoch=len(mention_gen),
                          epochs=epoch + 1, initial_epoch=epoch, shuffle=False,
                          **common.fit_progress(args))
        pairs = ranking_pairs(data["train"], index, args.negatives, args.max_candidates, rng,
                              ranker_stats)
        pair_gen = PairGenerator(pairs, encoder, kb, args.batch_size, args.maxlen)
        pair_batches = pair_gen.forfit()
        build_for_fit(ranker, pair_batches)
        ranker.fit(pair_batches, steps_per_epoch=len(pair_gen), epochs=epoch + 1,
                   initial_epoch=epoch, shuffle=False, **common.fit_progress(args))
        if data["valid"]:
            scores, _ = evaluate(linker, data["valid"])
            # linking F1 decides; ties (e.g. all 0 early on) go to the better
            # detector, then the better ranker, then the later epoch
            key = tuple(scores[k]["f1"] for k in ("linking", "mentions", "gold_mention_linking"))
            print("epoch %d: valid %s, candidate recall %.4f"
                  % (epoch + 1, format_scores(scores), scores["candidate_recall"]), flush=True)
        else:
            scores, key = None, (float(epoch),)  # nothing held out: keep the last epoch
        history.append(scores)
        if best is None or key >= best:
            best, best_epoch = key, epoch + 1
            best_weights = (mention_model.get_weights(), ranker.get_weights())
    train_seconds = time.time() - start
    mention_model.set_weights(best_weights[0])
    ranker.set_weights(best_weights[1])

    start = time.time()
    dev_scores = None
    if dev_labelled:
        dev_scores, predicted = evaluate(linker, data["dev"])
        print("dev: %s, candidate recall %.4f"
              % (format_scores(dev_scores), dev_scores["candidate_recall"]))
    else:
        predicted = linker([r["text"] for r in data["dev"]])
    dev_seconds = time.time() - start

    output = args.output
    predictions = args.predictions
    if predictions is None:
        predictions = os.path.join(output or "runs/entity_linking", "develop_pred.json")
    if predictions:
        write_predictions(predictions, data["dev"], predicted)
        print("predictions for %s written to %s" % (args.dev, predictions))
    reload_diff = None
    if output:
        os.makedirs(output, exist_ok=True)
        reload_diff = max(
            save_and_check(model, os.path.join(output, name + ".keras"), next(iter(gen))[0],
                           verbose=False)
            for name, model, gen in (("mention", mention_model, mention_gen),
                                     ("ranker", ranker, PairGenerator(
                                         pairs, encoder, kb, args.batch_size, args.maxlen))))
        print("saved %s/{mention,ranker}.keras; reloaded, max |diff| = %.2e"
              % (output, reload_diff))

    results = dict(dev=dev_scores, valid=history, best_epoch=best_epoch,
                   best_valid_f1=best[0] if data["valid"] else None,
                   predict_nil=predict_nil, train_seconds=round(train_seconds, 1),
                   dev_seconds=round(dev_seconds, 1), checkpoint=checkpoint, config=config,
                   epochs=args.epochs, lr=args.lr, maxlen=args.maxlen,
                   batch_size=args.batch_size, negatives=args.negatives,
                   max_candidates=args.max_candidates, threshold=args.threshold,
                   mention_stats=not args.no_mention_stats, min_link_prob=args.min_link_prob,
                   min_occurrences=args.min_occurrences, min_alias_count=args.min_alias_count,
                   filtered_strings=len(drop),
                   limit=args.limit, seed=args.seed, predictions=predictions or None,
                   texts={k: len(v) for k, v in data.items()}, entities=len(kb),
                   reload_diff=reload_diff)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
