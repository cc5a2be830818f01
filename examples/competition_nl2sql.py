"""A BERT baseline for the Chinese NL2SQL challenge (Zhuiyi Technology / Tianchi, 2019).

Task: given a question and one table, predict the SQL query that answers it.
Data format (the official ``train.json`` / ``val.json`` and their
``*.tables.json``; ZhuiyiTechnology/TableQA, arXiv:2006.06434):

* questions, one JSON object per line::

      {"table_id": "...", "question": "...",
       "sql": {"sel": [col, ...], "agg": [agg, ...], "cond_conn_op": conn,
               "conds": [[col, op, "value"], ...]}}

  with ``agg`` in ``AGG_OPS = ["", "AVG", "MAX", "MIN", "COUNT", "SUM"]``,
  ``op`` in ``COND_OPS = [">", "<", "==", "!="]`` and ``cond_conn_op`` in
  ``CONN_OPS = ["", "and", "or"]`` (the official ``agg_sql_dict``,
  ``op_sql_dict`` and ``conn_sql_dict``); columns are 0-based;
* tables, one JSON object per line: ``{"id", "name"?, "title"?, "header":
  [...], "types": ["text" | "real", ...], "rows": [[...], ...]}``.

The default data is a small hand-written sample shipped in
``examples/data/nl2sql_sample/`` (6 invented tables, 36 training and 15
validation questions); pass the official files with ``--train``,
``--train-tables``, ``--valid``, ``--valid-tables``.

Model (the design of the bert4keras NL2SQL baseline, written anew here): the
input is ``[CLS] question [SEP] [CLS] header_1 [SEP] [CLS] header_2 [SEP] ...``
(segment 0 for the question, 1 for the headers); the ``[CLS]`` in front of a
header is that column's marker. On top of BERT:

* the first ``[CLS]`` -> softmax over the 3 connectors;
* each column marker -> softmax over the 6 aggregations + "not selected";
* each question token -> softmax over the 4 condition operators + "no
  condition": a run of tokens with the same operator is a condition value;
* each question token -> a pointer over the columns (scaled dot product of
  projections of the token and the column markers): the column of the
  condition whose value covers that token.

The four cross-entropies (masked to real columns, question tokens and value
tokens) are summed. Decoding turns runs into ``(column, op, value)`` with the
value cut from the question text through ``Tokenizer.rematch`` offsets, then
applies the fix-ups described in :func:`decode_sql`.

Scores (see :func:`logic_form_accuracy` and :func:`execution_accuracy`): the
competition's logic-form accuracy (the whole SQL right, columns in any order)
and execution accuracy (the predicted and the gold query give the same result
on the table, run here in an in-memory SQLite database); the leaderboard
ranked by their mean.

    python examples/competition_nl2sql.py                    # shipped sample, shipped BERT
    python examples/competition_nl2sql.py --train DATA/train/train.json \\
        --train-tables DATA/train/train.tables.json --valid DATA/val/val.json \\
        --valid-tables DATA/val/val.tables.json --epochs 5 --batch-size 16
"""

import difflib
import math
import os
import re
import sqlite3
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.layers import TokenSlice
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, sequence_padding, build_for_fit
from bert4keras.tokenizers import Tokenizer
from common import (BestEpoch, DataFormatError, adamw, add_model_args, add_run_args, describe_model,
                    read_json_lines, resolve_paths, save_and_check, write_json, write_json_lines)

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_DIR = os.path.join(HERE, "data", "nl2sql_sample")

AGG_OPS = ["", "AVG", "MAX", "MIN", "COUNT", "SUM"]
COND_OPS = [">", "<", "==", "!="]
CONN_OPS = ["", "and", "or"]
NOT_SELECTED = len(AGG_OPS)  # extra class of the aggregation head
NO_COND = len(COND_OPS)  # extra class of the operator head
COLUMN_TYPES = ("text", "real")
MAX_HEADER_TOKENS = 16  # header names are cut to this many tokens
BUCKET = 32  # token axis padded to a multiple of this
COLUMN_BUCKET = 8  # column axis padded to a multiple of this
NUMBER = re.compile(r"[-+]?\d*\.\d+|[-+]?\d+")


# ---------------------------------------------------------------------------
# Reading and checking the official files
# ---------------------------------------------------------------------------


# The examples' one data-format error, under this script's earlier name; its
# messages start with ``path:line:``.
NL2SQLDataError = DataFormatError


def _read_json_lines(path):
    """``(line_number, object)`` for the non-blank lines of ``path``."""
    return read_json_lines(path, "NL2SQL", location="{path}:{line}", not_json="not a JSON object")


def load_tables(path):
    """Tables of an official ``*.tables.json`` file, keyed by ``id``.

    Returns:
        ``{id: table}``, each table the JSON object of its line.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: (naming file and line) a line is not JSON, lacks
            ``id``/``header``/``types``/``rows``, has a type other than
            ``text``/``real``, as many types as headers, a row of the wrong
            length, or repeats an ``id``.
    """
    tables = {}
    for number, table in _read_json_lines(path):
        where = "%s:%d" % (path, number)
        for key in ("id", "header", "types", "rows"):
            if key not in table:
                raise DataFormatError("%s: table has no %r field" % (where, key))
        header, types, rows = table["header"], table["types"], table["rows"]
        if not isinstance(header, list) or not header:
            raise DataFormatError("%s: 'header' must be a non-empty list" % where)
        if not isinstance(types, list) or len(types) != len(header):
            raise DataFormatError("%s: %d types for %d headers" % (
                where, len(types) if isinstance(types, list) else -1, len(header)))
        for i, kind in enumerate(types):
            if kind not in COLUMN_TYPES:
                raise DataFormatError("%s: column %d has type %r (expected 'text' or 'real')"
                                      % (where, i, kind))
        if not isinstance(rows, list):
            raise DataFormatError("%s: 'rows' must be a list" % where)
        for r, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(header):
                raise DataFormatError("%s: row %d has %s cells, the table has %d columns" % (
                    where, r, len(row) if isinstance(row, list) else "no list of", len(header)))
        if table["id"] in tables:
            raise DataFormatError("%s: table id %r appears twice" % (where, table["id"]))
        tables[table["id"]] = table
    return tables


def check_sql(sql, num_columns):
    """Check one SQL dict against a table of ``num_columns`` columns.

    Returns:
        ``None`` if well formed, else a message naming the bad field.
    """
    if not isinstance(sql, dict):
        return "'sql' must be an object"
    for key in ("sel", "agg", "cond_conn_op", "conds"):
        if key not in sql:
            return "'sql' has no %r field" % key
    sel, agg, conds = sql["sel"], sql["agg"], sql["conds"]
    if not isinstance(sel, list) or not isinstance(agg, list) or len(sel) != len(agg):
        return "'sel' and 'agg' must be lists of the same length, got %r and %r" % (sel, agg)
    for col in sel:
        if not isinstance(col, int) or not 0 <= col < num_columns:
            return "sel column %r out of range (table has %d columns)" % (col, num_columns)
    for code in agg:
        if not isinstance(code, int) or not 0 <= code < len(AGG_OPS):
            return "agg code %r not in 0..%d" % (code, len(AGG_OPS) - 1)
    conn = sql["cond_conn_op"]
    if not isinstance(conn, int) or not 0 <= conn < len(CONN_OPS):
        return "cond_conn_op %r not in 0..%d" % (conn, len(CONN_OPS) - 1)
    if not isinstance(conds, list):
        return "'conds' must be a list"
    for cond in conds:
        if not isinstance(cond, list) or len(cond) != 3:
            return "condition %r is not [column, op, value]" % (cond,)
        col, op, value = cond
        if not isinstance(col, int) or not 0 <= col < num_columns:
            return "condition column %r out of range (table has %d columns)" % (col, num_columns)
        if not isinstance(op, int) or not 0 <= op < len(COND_OPS):
            return "condition op code %r not in 0..%d" % (op, len(COND_OPS) - 1)
        if isinstance(value, (list, dict)) or value is None:
            return "condition value %r is not a string or number" % (value,)
    return None


def load_questions(path, tables, require_sql=True):
    """Questions of an official ``train.json`` / ``val.json`` (or ``test.json``).

    Args:
        path: the questions file, one JSON object per line.
        tables: ``{id: table}`` from :func:`load_tables`.
        require_sql: demand a ``sql`` field (``False`` for the unlabelled
            test file; a ``sql`` present is still checked).

    Returns:
        A list of dicts ``{"table_id", "question", "sql"?}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: (naming file and line) not JSON, no ``question``,
            an unknown ``table_id``, or a bad ``sql`` (see :func:`check_sql`:
            column index out of range, unknown agg/op/connector code, ...).
    """
    questions = []
    for number, item in _read_json_lines(path):
        where = "%s:%d" % (path, number)
        if not isinstance(item.get("question"), str):
            raise DataFormatError("%s: no 'question' string" % where)
        table_id = item.get("table_id")
        if table_id not in tables:
            raise DataFormatError("%s: unknown table_id %r (not in the tables file)"
                                  % (where, table_id))
        if "sql" in item or require_sql:
            if "sql" not in item:
                raise DataFormatError("%s: no 'sql' field" % where)
            problem = check_sql(item["sql"], len(tables[table_id]["header"]))
            if problem:
                raise DataFormatError("%s: %s" % (where, problem))
        questions.append(item)
    return questions


# ---------------------------------------------------------------------------
# SQL text, SQLite execution and the two scores
# ---------------------------------------------------------------------------


def to_number(value):
    """``value`` as a float if it is or contains a number, else ``None``.

    As the official ``DBEngine``: a plain number first, else the first
    number found inside the text (``"1000万"`` -> 1000.0).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).replace(",", "").strip()
    try:
        return float(text)
    except ValueError:
        found = NUMBER.findall(text)
        return float(found[0]) if found else None


def sql_to_query(sql, table, table_name="t"):
    """SQLite query text and parameters of an NL2SQL SQL dict.

    Columns are named ``col_1 .. col_n`` (as in the official ``.db`` files);
    the selected ``(column, agg)`` pairs are written in sorted order, so that
    queries equal up to the order of ``sel`` give the same result rows.
    Condition values are bound as parameters, as numbers for ``real``
    columns when they contain one (:func:`to_number`); connector 2 is
    ``OR``, anything else ``AND`` (as the official engine).

    Returns:
        ``(query, params)``.

    Raises:
        ValueError / IndexError / TypeError: the SQL dict is malformed (an
        index out of range, an unknown code); callers scoring predictions
        count this as a wrong answer.
    """
    num_columns = len(table["header"])
    if len(sql["sel"]) != len(sql["agg"]) or not sql["sel"]:
        raise ValueError("sel and agg must be non-empty and of the same length")
    parts = []
    for col, agg in sorted(set(zip(sql["sel"], sql["agg"]))):
        if not 0 <= col < num_columns or not 0 <= agg < len(AGG_OPS):
            raise IndexError("select (%r, %r) out of range" % (col, agg))
        name = "col_%d" % (col + 1)
        parts.append("%s(%s)" % (AGG_OPS[agg], name) if agg else name)
    where, params = [], []
    for col, op, value in sql["conds"]:
        if not 0 <= col < num_columns or not 0 <= op < len(COND_OPS):
            raise IndexError("condition (%r, %r) out of range" % (col, op))
        where.append("col_%d %s ?" % (col + 1, COND_OPS[op]))
        number = to_number(value) if table["types"][col] == "real" else None
        params.append(number if number is not None else str(value))
    query = 'SELECT %s FROM "%s"' % (", ".join(parts), table_name)
    if where:
        query += " WHERE " + (" OR " if sql["cond_conn_op"] == 2 else " AND ").join(where)
    return query, params


class TableDatabase:
    """The tables of one split in an in-memory SQLite database.

    Each table becomes ``t0, t1, ...`` with columns ``col_1 .. col_n`` typed
    ``TEXT`` or ``REAL`` from ``types``; ``real`` cells that are not numbers
    are stored as text (SQLite's type affinity), cells of ``text`` columns as
    their string.

    Args:
        tables: ``{id: table}`` from :func:`load_tables`.
    """

    def __init__(self, tables):
        self.tables = tables
        self.names = {}
        self.connection = sqlite3.connect(":memory:")
        for i, (table_id, table) in enumerate(tables.items()):
            name = "t%d" % i
            self.names[table_id] = name
            columns = ", ".join("col_%d %s" % (j + 1, "REAL" if kind == "real" else "TEXT")
                                for j, kind in enumerate(table["types"]))
            self.connection.execute('CREATE TABLE "%s" (%s)' % (name, columns))
            rows = [[self._cell(cell, kind) for cell, kind in zip(row, table["types"])]
                    for row in table["rows"]]
            if rows:
                marks = ", ".join("?" * len(table["types"]))
                self.connection.executemany('INSERT INTO "%s" VALUES (%s)' % (name, marks), rows)

    @staticmethod
    def _cell(cell, kind):
        if cell is None:
            return None
        if kind == "real":
            if isinstance(cell, (int, float)) and not isinstance(cell, bool):
                return float(cell)
            if isinstance(cell, str) and _is_plain_number(cell):
                return float(cell.replace(",", ""))
        return cell if isinstance(cell, str) else _cell_text(cell)

    def execute(self, table_id, sql):
        """Result rows of ``sql`` on the table, as a sorted list of tuples.

        Raises:
            KeyError: unknown ``table_id``.
            sqlite3.Error, ValueError, IndexError, TypeError: the SQL dict
                cannot be turned into a valid query.
        """
        table = self.tables[table_id]
        query, params = sql_to_query(sql, table, self.names[table_id])
        rows = self.connection.execute(query, params).fetchall()
        return sorted(rows, key=repr)

    def close(self):
        """Close the SQLite connection."""
        self.connection.close()


def _is_plain_number(text):
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def _cell_text(cell):
    """A table cell as the string a question would quote (``2019.0`` -> ``2019``)."""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


def _conds_key(conds):
    return {(int(c), int(o), str(v)) for c, o, v in conds}


def same_logic_form(predicted, gold):
    """Is the predicted SQL dict the gold one, up to order?

    The competition's logic-form match: the same connector, the same set of
    ``(sel, agg)`` pairs and the same set of ``(column, op, value)``
    conditions (values compared as strings, so ``1`` equals ``"1"``). This
    is the bert4keras baseline's ``is_equal``; without repeated columns it is
    also the official ``check_acc`` of ZhuiyiTechnology/nl2sql_baseline.
    """
    try:
        return (int(predicted["cond_conn_op"]) == int(gold["cond_conn_op"])
                and (set(zip(predicted["sel"], predicted["agg"]))
                     == set(zip(gold["sel"], gold["agg"])))
                and _conds_key(predicted["conds"]) == _conds_key(gold["conds"]))
    except (KeyError, TypeError, ValueError):
        return False


def logic_form_accuracy(golds, predictions):
    """Fraction of predictions equal to the gold SQL (:func:`same_logic_form`).

    Args:
        golds, predictions: lists of SQL dicts of the same length.

    Raises:
        ValueError: the lists differ in length.
    """
    if len(golds) != len(predictions):
        raise ValueError("%d gold SQL dicts but %d predictions" % (len(golds), len(predictions)))
    if not golds:
        return 0.0
    return sum(same_logic_form(p, g) for g, p in zip(golds, predictions)) / len(golds)


def execution_accuracy(database, table_ids, golds, predictions):
    """Fraction of predictions whose result equals the gold query's result.

    Both SQL dicts run on the question's table in ``database``
    (:class:`TableDatabase`); results are compared as multisets of rows. A
    prediction that cannot be rendered or executed counts as wrong.

    Differences from the official script (``sqlnet/lib/dbengine.py`` of
    ZhuiyiTechnology/nl2sql_baseline): it aliases only the last selected
    column ``AS result`` and compares those values in row order, and it
    lower-cases condition values; here whole rows are compared, in any
    order, and values are used as written.

    Raises:
        ValueError: the lists differ in length, or a gold SQL fails to run
            (the gold data is checked on load, so this signals a bug).
    """
    if not len(table_ids) == len(golds) == len(predictions):
        raise ValueError("table_ids, golds and predictions differ in length")
    if not golds:
        return 0.0
    correct = 0
    for table_id, gold, predicted in zip(table_ids, golds, predictions):
        try:
            expected = database.execute(table_id, gold)
        except (sqlite3.Error, ValueError, IndexError, TypeError) as e:
            raise ValueError("gold SQL %r on table %r does not run: %s"
                             % (gold, table_id, e)) from e
        try:
            got = database.execute(table_id, predicted)
        except (sqlite3.Error, ValueError, IndexError, TypeError, KeyError):
            continue
        correct += got == expected
    return correct / len(golds)


def component_accuracies(golds, predictions):
    """Accuracy of the parts: ``sel`` (columns+aggs), ``conds`` and ``conn``."""
    n = max(len(golds), 1)
    return dict(
        sel_acc=sum(set(zip(p["sel"], p["agg"])) == set(zip(g["sel"], g["agg"]))
                    for g, p in zip(golds, predictions)) / n,
        conds_acc=sum(_conds_key(p["conds"]) == _conds_key(g["conds"])
                      for g, p in zip(golds, predictions)) / n,
        conn_acc=sum(p["cond_conn_op"] == g["cond_conn_op"]
                     for g, p in zip(golds, predictions)) / n,
    )


# ---------------------------------------------------------------------------
# Encoding: tokens, column markers, labels
# ---------------------------------------------------------------------------


class Encoder:
    """Turn (question, table) into model inputs and, with a SQL, labels.

    Layout: ``[CLS] question [SEP]`` then ``[CLS] header [SEP]`` per column,
    question segment 0, headers segment 1. Header names are cut to
    ``MAX_HEADER_TOKENS`` tokens and the question to ``maxlen // 2`` tokens;
    columns that no longer fit in ``maxlen`` are left out (they can be
    neither predicted nor learned; counted in ``columns_dropped``).

    Args:
        tokenizer: a :class:`bert4keras.tokenizers.Tokenizer`.
        maxlen: maximum tokens per example (at most the model's positions).

    Raises:
        ValueError: ``maxlen`` below ``2 * (MAX_HEADER_TOKENS + 2)``.
    """

    def __init__(self, tokenizer, maxlen):
        if maxlen < 2 * (MAX_HEADER_TOKENS + 2):
            raise ValueError("maxlen %d too small: at least %d tokens are needed so that one "
                             "column always fits" % (maxlen, 2 * (MAX_HEADER_TOKENS + 2)))
        self.tokenizer, self.maxlen = tokenizer, maxlen
        self.cls = tokenizer.token_to_id("[CLS]")
        self.sep = tokenizer.token_to_id("[SEP]")
        self.header_cache = {}
        self.columns_dropped = 0

    def _header_ids(self, header):
        if header not in self.header_cache:
            ids = self.tokenizer.encode(str(header))[0][1:-1][:MAX_HEADER_TOKENS]
            self.header_cache[header] = [self.cls] + ids + [self.sep]
        return self.header_cache[header]

    def encode(self, question, table):
        """Inputs of one example.

        Returns:
            dict with ``token_ids``, ``segment_ids`` (lists), ``columns``
            (marker positions, one per kept column), ``spans`` (character
            indices of ``question`` per question token, from
            ``Tokenizer.rematch``) and ``num_question_tokens``.
        """
        tokens = self.tokenizer.tokenize(question)[1:-1][: self.maxlen // 2 - 2]
        spans = self.tokenizer.rematch(question, tokens)
        token_ids = [self.cls] + self.tokenizer.tokens_to_ids(tokens) + [self.sep]
        segment_ids = [0] * len(token_ids)
        columns = []
        for header in table["header"]:
            block = self._header_ids(header)
            if len(token_ids) + len(block) > self.maxlen:
                self.columns_dropped += len(table["header"]) - len(columns)
                break
            columns.append(len(token_ids))
            token_ids += block
            segment_ids += [1] * len(block)
        return dict(token_ids=token_ids, segment_ids=segment_ids, columns=columns, spans=spans,
                    num_question_tokens=len(tokens))

    @staticmethod
    def value_tokens(value, question, spans, used):
        """Question-token indices (0-based, without [CLS]) covering ``value``.

        The occurrence of ``value`` in ``question`` whose ends fall on token
        boundaries is preferred, then any occurrence; occurrences whose
        tokens are in ``used`` (an earlier condition) are skipped.

        Returns:
            A list of token indices (empty if ``value`` is not in the question).
        """
        value = str(value)
        if not value:
            return []
        starts = {s[0]: i for i, s in enumerate(spans) if s}
        ends = {s[-1] + 1: i for i, s in enumerate(spans) if s}
        candidates, start = [], question.find(value)
        while start >= 0:
            end = start + len(value)
            covered = [i for i, s in enumerate(spans) if s and s[0] < end and s[-1] >= start]
            if covered and not used.intersection(covered):
                aligned = start in starts and end in ends
                candidates.append((not aligned, start, covered))
            start = question.find(value, start + 1)
        return min(candidates)[2] if candidates else []

    def labels(self, example, sql):
        """Training targets of one encoded example (which must carry its
        ``question`` text, as :func:`encode_dataset` adds it).

        Returns:
            dict with ``conn`` (int), ``agg`` (per kept column: agg code or
            ``NOT_SELECTED``), ``op`` and ``col`` (per question token:
            condition op or ``NO_COND``; condition column or -1), and
            ``missing`` (conditions whose value is not in the question).
        """
        n_cols = len(example["columns"])
        agg = [NOT_SELECTED] * n_cols
        for col, code in zip(sql["sel"], sql["agg"]):
            if col < n_cols:
                agg[col] = code
        n = example["num_question_tokens"]
        op, col_of = [NO_COND] * n, [-1] * n
        used, missing = set(), 0
        for col, code, value in sql["conds"]:
            covered = self.value_tokens(value, example["question"], example["spans"], used)
            if not covered or col >= n_cols:
                missing += 1
                continue
            used.update(covered)
            for i in covered:
                op[i], col_of[i] = code, col
        return dict(conn=sql["cond_conn_op"], agg=agg, op=op, col=col_of, missing=missing)


def encode_dataset(encoder, questions, tables):
    """Encoded examples (with labels where a ``sql`` is given).

    Returns:
        ``(examples, missing)``: one dict per question, and the number of
        gold conditions whose value could not be found in the question.
    """
    examples, missing = [], 0
    for item in questions:
        example = encoder.encode(item["question"], tables[item["table_id"]])
        example["question"], example["table_id"] = item["question"], item["table_id"]
        if "sql" in item:
            example["labels"] = encoder.labels(example, item["sql"])
            missing += example["labels"]["missing"]
        examples.append(example)
    return examples, missing


def _round_up(n, bucket):
    return max(bucket, -(-n // bucket) * bucket)


def make_inputs(examples):
    """Padded inputs ``(token_ids, segment_ids, column_positions)``.

    Shapes ``(batch, seq_len)``, ``(batch, seq_len)`` and ``(batch,
    num_columns)``, int32; padded columns have position 0.
    """
    length = _round_up(max(len(e["token_ids"]) for e in examples), BUCKET)
    n_cols = _round_up(max(len(e["columns"]) for e in examples), COLUMN_BUCKET)
    ids = sequence_padding([e["token_ids"] for e in examples], length=length).astype("int32")
    seg = sequence_padding([e["segment_ids"] for e in examples], length=length).astype("int32")
    cols = sequence_padding([e["columns"] for e in examples], length=n_cols).astype("int32")
    return ids, seg, cols


def make_targets(examples, length, n_cols):
    """Padded targets (dict of int32 arrays; -1 marks positions without a loss).

    ``conn`` (batch,), ``agg`` (batch, num_columns), ``op`` and ``col``
    (batch, seq_len) aligned with the tokens (question token i at i + 1).
    """
    batch = len(examples)
    conn = np.array([e["labels"]["conn"] for e in examples], "int32")
    agg = np.full((batch, n_cols), -1, "int32")
    op = np.full((batch, length), -1, "int32")
    col = np.full((batch, length), -1, "int32")
    for b, e in enumerate(examples):
        labels = e["labels"]
        agg[b, : len(labels["agg"])] = labels["agg"]
        n = len(labels["op"])
        op[b, 1: n + 1] = labels["op"]
        col[b, 1: n + 1] = labels["col"]
    return dict(conn=conn, agg=agg, op=op, col=col)


class NL2SQLGenerator(DataGenerator):
    """Yields ``((token_ids, segment_ids, column_positions), targets)``."""

    def __iter__(self, random=False):
        batch = []
        for is_end, example in self.sample(random):
            batch.append(example)
            if len(batch) == self.batch_size or is_end:
                ids, seg, cols = make_inputs(batch)
                yield (ids, seg, cols), make_targets(batch, ids.shape[1], cols.shape[1])
                batch = []


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="bert4keras_nl2sql")
class ColumnGather(keras.layers.Layer):
    """``[(batch, seq_len, hidden), (batch, num_columns)] -> (batch, num_columns, hidden)``:
    the hidden vector at each column marker position."""

    def call(self, inputs):
        hidden, positions = inputs
        positions = keras.ops.cast(positions, "int32")
        return keras.ops.take_along_axis(hidden, keras.ops.expand_dims(positions, -1), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], input_shape[1][1], input_shape[0][-1])


@keras.saving.register_keras_serializable(package="bert4keras_nl2sql")
class ColumnPointer(keras.layers.Layer):
    """Softmax over the columns for every token.

    Inputs ``[tokens (batch, seq_len, d), columns (batch, num_columns, d),
    positions (batch, num_columns)]``; scores are ``tokens . columns /
    sqrt(d)``, padded columns (position 0) masked out. Output
    ``(batch, seq_len, num_columns)``.
    """

    def call(self, inputs):
        tokens, columns, positions = inputs
        scale = 1.0 / math.sqrt(tokens.shape[-1])
        scores = keras.ops.einsum("bsd,bcd->bsc", tokens, columns) * scale
        valid = keras.ops.expand_dims(keras.ops.greater(positions, 0), 1)
        scores = keras.ops.where(valid, scores, keras.ops.full_like(scores, -1e9))
        return keras.ops.softmax(scores, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], input_shape[0][1], input_shape[1][1])


def masked_crossentropy(y_true, y_pred):
    """Sparse categorical cross-entropy averaged over labels ``>= 0``.

    ``y_true`` (...,) with -1 where there is no label; ``y_pred`` (..., C)
    probabilities. Returns a scalar (0 when nothing is labelled).
    """
    y_true = keras.ops.reshape(y_true, keras.ops.shape(y_pred)[:-1])
    valid = keras.ops.cast(keras.ops.greater_equal(y_true, 0), "float32")
    labels = keras.ops.cast(keras.ops.maximum(y_true, 0), "int32")
    loss = keras.ops.sparse_categorical_crossentropy(labels, y_pred)
    return keras.ops.sum(loss * valid) / keras.ops.maximum(keras.ops.sum(valid), 1.0)


def build_nl2sql_model(config, checkpoint, pointer_size=128):
    """BERT with the four NL2SQL heads.

    Args:
        config, checkpoint: as for ``build_transformer_model``
            (``checkpoint=None``: random initialisation).
        pointer_size: size of the token/column projections of the pointer.

    Returns:
        A ``keras.Model`` with inputs ``(token_ids, segment_ids,
        column_positions)`` and a dict of probability outputs: ``conn``
        (batch, 3), ``agg`` (batch, num_columns, 7), ``op`` (batch, seq_len,
        5), ``col`` (batch, seq_len, num_columns).
    """
    bert = build_transformer_model(config, checkpoint)
    positions = keras.Input(shape=(None,), dtype="int32", name="Column-Positions")
    hidden = bert.output
    first = TokenSlice(index=0, name="NL2SQL-CLS")(hidden)
    conn = keras.layers.Dense(len(CONN_OPS), activation="softmax", name="NL2SQL-Conn")(first)
    columns = ColumnGather(name="NL2SQL-Columns")([hidden, positions])
    agg = keras.layers.Dense(NOT_SELECTED + 1, activation="softmax", name="NL2SQL-Agg")(columns)
    op = keras.layers.Dense(NO_COND + 1, activation="softmax", name="NL2SQL-Op")(hidden)
    token_proj = keras.layers.Dense(pointer_size, name="NL2SQL-Pointer-Token")(hidden)
    column_proj = keras.layers.Dense(pointer_size, name="NL2SQL-Pointer-Column")(columns)
    col = ColumnPointer(name="NL2SQL-Pointer")([token_proj, column_proj, positions])
    return keras.Model(list(bert.inputs) + [positions],
                       {"conn": conn, "agg": agg, "op": op, "col": col}, name="bert_nl2sql")


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _column_cells(table, col):
    return {_cell_text(row[col]) for row in table["rows"] if row[col] is not None}


def decode_sql(example, table, conn_probs, agg_probs, op_probs, col_probs):
    """One SQL dict from the head outputs of one example.

    Args:
        example: from :meth:`Encoder.encode` plus ``question``.
        table: the question's table.
        conn_probs: (3,); agg_probs: (num_columns, 7); op_probs: (seq_len,
            5); col_probs: (seq_len, num_columns) -- one row of the batch.

    Rules:

    * ``sel``/``agg``: every kept column whose best class is not "not
      selected"; if there is none, the column most likely to be selected.
    * conditions: each maximal run of question tokens with the same
      operator; the column is the argmax of the pointer averaged over the
      run; the value is the question text from the first to the last
      character of the run (``Tokenizer.rematch`` offsets).
    * fix-up against the table: ``>``/``<`` with a value holding no number
      becomes ``==``; for ``==``/``!=`` on a text column, a value that is
      not a cell of the column but is a cell of another text column moves
      the condition there, otherwise it is replaced by the most similar
      cell of its column (``difflib`` ratio >= 0.5).
    * duplicates are dropped; the connector is 0 for at most one
      condition, else the likelier of ``and``/``or``.
    """
    n_cols = len(example["columns"])
    agg_best = agg_probs[:n_cols].argmax(-1)
    sel = [(c, int(a)) for c, a in enumerate(agg_best) if a != NOT_SELECTED]
    if not sel:
        scores = 1.0 - agg_probs[:n_cols, NOT_SELECTED]
        c = int(scores.argmax())
        sel = [(c, int(agg_probs[c, :NOT_SELECTED].argmax()))]
    question, spans = example["question"], example["spans"]
    n = example["num_question_tokens"]
    ops = op_probs[1: n + 1].argmax(-1)
    runs, i = [], 0
    while i < n:
        j = i
        while j + 1 < n and ops[j + 1] == ops[i]:
            j += 1
        if ops[i] != NO_COND:
            runs.append((i, j, int(ops[i])))
        i = j + 1
    conds = []
    for start, end, op in runs:
        chars = [c for k in range(start, end + 1) for c in spans[k]]
        if not chars:
            continue
        value = question[min(chars): max(chars) + 1]
        col = int(col_probs[start + 1: end + 2, :n_cols].mean(0).argmax())
        conds.append(fix_condition(col, op, value, table, n_cols))
    conds = sorted(set(conds))
    conn = 0 if len(conds) <= 1 else 1 + int(np.argmax(conn_probs[1:]))
    return dict(sel=[c for c, _ in sel], agg=[a for _, a in sel], cond_conn_op=conn,
                conds=[list(c) for c in conds])


def fix_condition(col, op, value, table, n_cols=None):
    """``(col, op, value)`` after the table fix-ups of :func:`decode_sql`."""
    n_cols = len(table["header"]) if n_cols is None else n_cols
    if op in (0, 1) and to_number(value) is None:
        op = 2
    if op in (2, 3) and table["types"][col] == "text":
        if value not in _column_cells(table, col):
            others = [c for c in range(n_cols) if c != col and table["types"][c] == "text"
                      and value in _column_cells(table, c)]
            if others:
                col = others[0]
            else:
                best, ratio = value, 0.0
                for cell in sorted(_column_cells(table, col)):
                    r = difflib.SequenceMatcher(None, value, cell).ratio()
                    if r > ratio:
                        best, ratio = cell, r
                if ratio >= 0.5:
                    value = best
    return (col, op, value)


def predict_sql(model, examples, tables, batch_size):
    """Predicted SQL dicts of encoded examples, in order."""
    predictions = []
    for b in range(0, len(examples), batch_size):
        batch = examples[b: b + batch_size]
        out = model.predict_on_batch(make_inputs(batch))
        out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
        for i, example in enumerate(batch):
            predictions.append(decode_sql(example, tables[example["table_id"]], out["conn"][i],
                                          out["agg"][i], out["op"][i], out["col"][i]))
    return predictions


def evaluate(model, examples, questions, tables, database, batch_size):
    """Logic-form, execution and component accuracies; ``score`` is the
    mean of the first two (the leaderboard's ranking)."""
    predictions = predict_sql(model, examples, tables, batch_size)
    golds = [q["sql"] for q in questions]
    table_ids = [q["table_id"] for q in questions]
    scores = dict(logic_form_acc=logic_form_accuracy(golds, predictions),
                  execution_acc=execution_accuracy(database, table_ids, golds, predictions))
    scores["score"] = (scores["logic_form_acc"] + scores["execution_acc"]) / 2
    scores.update(component_accuracies(golds, predictions))
    return scores, predictions


def format_scores(scores):
    return " ".join("%s=%.4f" % (k, v) for k, v in scores.items())


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.json"),
                   help="training questions (default: the shipped sample)")
    p.add_argument("--train-tables", default=os.path.join(SAMPLE_DIR, "train.tables.json"))
    p.add_argument("--valid", default=os.path.join(SAMPLE_DIR, "val.json"),
                   help="validation questions (default: the shipped sample)")
    p.add_argument("--valid-tables", default=os.path.join(SAMPLE_DIR, "val.tables.json"))
    p.add_argument("--test", default=None, help="unlabelled questions (official test.json) "
                   "to predict after training; needs --test-tables")
    p.add_argument("--test-tables", default=None)
    p.add_argument("--submission", default="runs/nl2sql/test_predictions.json",
                   help="where the --test predictions go, one SQL dict per line")
    p.add_argument("--predictions", default=None,
                   help="write validation predictions (with gold) to this JSON-lines file")
    p.add_argument("--maxlen", type=int, default=256,
                   help="tokens per example: question, then column headers while they fit")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--pointer-size", type=int, default=128)
    add_run_args(p, limit="questions of each split", output="runs/nl2sql/model.keras")
    return p.parse_args(argv)


def main(argv=None):
    """Train on ``--train``, select on ``--valid``; returns the results dict."""
    args = parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be >= 1")
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    encoder = Encoder(tokenizer, args.maxlen)
    train_tables, valid_tables = load_tables(args.train_tables), load_tables(args.valid_tables)
    train_q = load_questions(args.train, train_tables)
    valid_q = load_questions(args.valid, valid_tables)
    if args.limit:
        train_q, valid_q = train_q[: args.limit], valid_q[: args.limit]
    if not train_q or not valid_q:
        raise ValueError("no training or validation questions (files %r, %r)"
                         % (args.train, args.valid))
    train_x, train_missing = encode_dataset(encoder, train_q, train_tables)
    valid_x, _ = encode_dataset(encoder, valid_q, valid_tables)
    print("questions: train %d (%d tables), valid %d (%d tables); %d training conditions "
          "with a value not found in the question; %d columns beyond maxlen"
          % (len(train_q), len(train_tables), len(valid_q), len(valid_tables), train_missing,
             encoder.columns_dropped))
    print("model: %s" % describe_model(config, checkpoint))

    model = build_nl2sql_model(config, checkpoint, args.pointer_size)
    train = NL2SQLGenerator(train_x, batch_size=args.batch_size)
    model.compile(optimizer=adamw(args.lr, len(train) * args.epochs),
                  loss={k: masked_crossentropy for k in ("conn", "agg", "op", "col")})
    database = TableDatabase(valid_tables)
    evaluator = BestEpoch(
        lambda model: evaluate(model, valid_x, valid_q, valid_tables, database, args.batch_size),
        key=lambda scores: scores["score"],
        report=lambda scores, best: "valid %s (best score %.4f)" % (format_scores(scores), best))
    start = time.time()
    batches = train.forfit()
    build_for_fit(model, batches)  # one trace of the training step on TensorFlow
    model.fit(batches, steps_per_epoch=len(train), epochs=args.epochs,
              shuffle=False, **common.fit_progress(args, [evaluator]))
    seconds = time.time() - start
    model.set_weights(evaluator.best_weights)
    valid, predictions = evaluate(model, valid_x, valid_q, valid_tables, database,
                                  args.batch_size)
    database.close()
    print("best validation: %s (training %.0f s)" % (format_scores(valid), seconds))
    if args.predictions:
        write_json_lines(args.predictions,
                         [dict(q, sql_pred=p) for q, p in zip(valid_q, predictions)])

    submission = None
    if args.test:
        if not args.test_tables:
            raise ValueError("--test needs --test-tables")
        test_tables = load_tables(args.test_tables)
        test_q = load_questions(args.test, test_tables, require_sql=False)
        test_x, _ = encode_dataset(encoder, test_q, test_tables)
        write_json_lines(args.submission, predict_sql(model, test_x, test_tables, args.batch_size))
        submission = args.submission
        print("wrote %d test predictions to %s" % (len(test_q), submission))

    reload_diff = None
    if args.output:
        reload_diff = save_and_check(model, args.output, make_inputs(valid_x[: args.batch_size]))
    results = dict(valid=valid, history=evaluator.history, best_score=evaluator.best,
                   train_seconds=round(seconds, 1), checkpoint=checkpoint, config=config,
                   epochs=args.epochs, lr=args.lr, maxlen=args.maxlen,
                   batch_size=args.batch_size, limit=args.limit, seed=args.seed,
                   questions=dict(train=len(train_q), valid=len(valid_q)),
                   train_conditions_not_in_question=train_missing,
                   columns_dropped=encoder.columns_dropped, reload_diff=reload_diff,
                   submission=submission, files=dict(train=args.train, valid=args.valid))
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
