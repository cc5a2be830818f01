"""The NL2SQL example: file checks, SQL rendering and SQLite execution on
hand-computed cases, both scorers, the encode/decode round trip, and a short
end-to-end run of ``main`` with the shipped small BERT."""

import json
import os

import numpy as np
import pytest

from conftest import load_example

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
SAMPLE = os.path.join(EXAMPLES, "data", "nl2sql_sample")
VOCAB = os.path.join(os.path.dirname(HERE), "checkpoints", "chinese_bert_small", "vocab.txt")


@pytest.fixture(scope="module")
def nl2sql():
    return load_example("competition_nl2sql")


# A table small enough to compute every answer by hand.
TABLE = {
    "id": "t1",
    "header": ["城市", "人口(万)", "面积"],
    "types": ["text", "real", "real"],
    "rows": [["北京", 2000, 16410.5], ["上海", 2400, 6340.5], ["天津", 1300, 11966.0],
             ["重庆", 3100, 82400.0]],
}


def sql(sel, agg, conds=(), conn=0):
    return {"sel": list(sel), "agg": list(agg), "cond_conn_op": conn,
            "conds": [list(c) for c in conds]}


@pytest.fixture()
def database(nl2sql):
    db = nl2sql.TableDatabase({"t1": TABLE})
    yield db
    db.close()


def test_official_codes(nl2sql):
    assert nl2sql.AGG_OPS == ["", "AVG", "MAX", "MIN", "COUNT", "SUM"]
    assert nl2sql.COND_OPS == [">", "<", "==", "!="]
    assert nl2sql.CONN_OPS == ["", "and", "or"]


def test_sql_text(nl2sql):
    query, params = nl2sql.sql_to_query(
        sql([2, 0], [1, 0], [(1, 0, "1500"), (0, 3, "天津")], conn=1), TABLE, "t")
    # pairs sorted, real values bound as numbers, text as strings
    assert query == 'SELECT col_1, AVG(col_3) FROM "t" WHERE col_2 > ? AND col_1 != ?'
    assert params == [1500.0, "天津"]
    query, params = nl2sql.sql_to_query(sql([0], [4], [(1, 1, "约2100万"), (0, 2, "北京")], 2),
                                        TABLE, "t")
    assert query == 'SELECT COUNT(col_1) FROM "t" WHERE col_2 < ? OR col_1 == ?'
    assert params == [2100.0, "北京"]  # the number inside the text, as the official engine


def test_execution_hand_computed(nl2sql, database):
    run = database.execute
    assert run("t1", sql([1], [0], [(0, 2, "上海")])) == [(2400.0,)]
    assert run("t1", sql([1], [5], [(1, 0, "2000")])) == [(5500.0,)]  # 2400 + 3100
    assert run("t1", sql([2], [1], [(0, 2, "北京"), (0, 2, "天津")], 2)) == [(14188.25,)]
    assert run("t1", sql([0], [4], [(1, 0, "1500"), (2, 1, "20000")], 1)) == [(2,)]
    assert run("t1", sql([0, 1], [0, 0], [(0, 3, "北京"), (1, 1, "3000")], 1)) == \
        [("上海", 2400.0), ("天津", 1300.0)]
    assert run("t1", sql([0], [0], [(0, 2, "广州")])) == []


def test_scores_gold_against_itself_on_the_sample(nl2sql):
    for split in ("train", "val"):
        tables = nl2sql.load_tables(os.path.join(SAMPLE, split + ".tables.json"))
        questions = nl2sql.load_questions(os.path.join(SAMPLE, split + ".json"), tables)
        golds = [q["sql"] for q in questions]
        ids = [q["table_id"] for q in questions]
        db = nl2sql.TableDatabase(tables)
        assert nl2sql.logic_form_accuracy(golds, golds) == 1.0
        assert nl2sql.execution_accuracy(db, ids, golds, golds) == 1.0
        db.close()
        aggs = {a for g in golds for a in g["agg"]}
        ops = {c[1] for g in golds for c in g["conds"]}
        assert aggs == set(range(6)) and ops == set(range(4))
        assert {g["cond_conn_op"] for g in golds} == {0, 1, 2}
        assert any(len(g["sel"]) > 1 for g in golds)


def test_wrong_agg_same_execution(nl2sql, database):
    gold = sql([1], [2], [(0, 2, "北京")])  # MAX over one row
    wrong = sql([1], [3], [(0, 2, "北京")])  # MIN over the same single row
    assert nl2sql.logic_form_accuracy([gold], [wrong]) == 0.0
    assert nl2sql.execution_accuracy(database, ["t1"], [gold], [wrong]) == 1.0
    # over two rows the aggregation matters: AVG 2200 vs SUM 4400
    gold = sql([1], [1], [(0, 2, "北京"), (0, 2, "上海")], 2)
    wrong = sql([1], [5], [(0, 2, "北京"), (0, 2, "上海")], 2)
    assert nl2sql.execution_accuracy(database, ["t1"], [gold], [wrong]) == 0.0


def test_order_and_value_type_do_not_matter(nl2sql, database):
    gold = sql([0, 2], [0, 2], [(1, 0, "1500"), (2, 1, "20000")], 1)
    shuffled = sql([2, 0], [2, 0], [(2, 1, "20000"), (1, 0, 1500)], 1)
    assert nl2sql.logic_form_accuracy([gold], [shuffled]) == 1.0
    assert nl2sql.execution_accuracy(database, ["t1"], [gold], [shuffled]) == 1.0
    # a wrong connector, a wrong value: logic form wrong
    assert not nl2sql.same_logic_form(sql([0, 2], [0, 2], gold["conds"], 2), gold)
    assert not nl2sql.same_logic_form(sql([0, 2], [0, 2], [(1, 0, "1500"), (2, 1, "2")], 1), gold)


def test_invalid_prediction_is_wrong_not_a_crash(nl2sql, database):
    gold = sql([1], [0], [(0, 2, "上海")])
    bad = [sql([7], [0]), sql([1], [9]), sql([1], [0], [(5, 2, "x")]),
           sql([1], [0], [(0, 8, "x")]), sql([], []), {"sel": [1]}, sql([1], [0, 1])]
    for prediction in bad:
        assert nl2sql.execution_accuracy(database, ["t1"], [gold], [prediction]) == 0.0
        assert nl2sql.logic_form_accuracy([gold], [prediction]) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        nl2sql.execution_accuracy(database, ["t1"], [gold], [])


def write_lines(path, objects):
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects),
                    encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("item, message", [
    ({"table_id": "nope", "question": "q", "sql": sql([0], [0])}, "unknown table_id 'nope'"),
    ({"table_id": "t1", "question": "q", "sql": sql([3], [0])}, "sel column 3 out of range"),
    ({"table_id": "t1", "question": "q", "sql": sql([0], [6])}, "agg code 6"),
    ({"table_id": "t1", "question": "q", "sql": sql([0], [0], [(0, 4, "北京")])},
     "condition op code 4"),
    ({"table_id": "t1", "question": "q", "sql": sql([0], [0], [(-1, 2, "北京")])},
     "condition column -1 out of range"),
    ({"table_id": "t1", "question": "q", "sql": sql([0], [0], conn=3)}, "cond_conn_op 3"),
    ({"table_id": "t1", "question": "q"}, "no 'sql' field"),
])
def test_malformed_questions_name_file_and_line(nl2sql, tmp_path, item, message):
    good = {"table_id": "t1", "question": "北京人口", "sql": sql([1], [0], [(0, 2, "北京")])}
    path = write_lines(tmp_path / "q.json", [good, item])
    with pytest.raises(nl2sql.NL2SQLDataError) as info:
        nl2sql.load_questions(path, {"t1": TABLE})
    assert str(info.value).startswith(path + ":2: ") and message in str(info.value)


def test_malformed_tables_name_file_and_line(nl2sql, tmp_path):
    cases = [
        (dict(TABLE, types=["text", "real"]), "2 types for 3 headers"),
        (dict(TABLE, types=["text", "real", "int"]), "column 2 has type 'int'"),
        (dict(TABLE, rows=[["北京", 1]]), "row 0 has 2 cells"),
        ({k: v for k, v in TABLE.items() if k != "header"}, "no 'header' field"),
        (TABLE, "table id 't1' appears twice"),
    ]
    for bad, message in cases:
        path = write_lines(tmp_path / "t.json", [TABLE, bad])
        with pytest.raises(nl2sql.NL2SQLDataError, match=message) as info:
            nl2sql.load_tables(path)
        assert str(info.value).startswith(path + ":2: ")
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(TABLE) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(nl2sql.NL2SQLDataError, match=":2: not a JSON object"):
        nl2sql.load_tables(str(path))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        nl2sql.load_tables(str(tmp_path / "missing.json"))


def test_encode_then_decode_the_labels_gives_the_gold_sql(nl2sql):
    """Decoding one-hot 'predictions' made from the training labels must give
    back every gold SQL of the sample: the value search, the token tags and
    the rematch offsets agree (incl. two conditions with the same value '10'
    and the value 'S10 Pro' that the tokenizer lower-cases and splits)."""
    from bert4keras.tokenizers import Tokenizer

    tokenizer = Tokenizer(VOCAB, do_lower_case=True)
    with pytest.raises(ValueError, match="maxlen 20 too small"):
        nl2sql.Encoder(tokenizer, maxlen=20)
    encoder = nl2sql.Encoder(tokenizer, maxlen=256)
    for split in ("train", "val"):
        tables = nl2sql.load_tables(os.path.join(SAMPLE, split + ".tables.json"))
        questions = nl2sql.load_questions(os.path.join(SAMPLE, split + ".json"), tables)
        examples, missing = nl2sql.encode_dataset(encoder, questions, tables)
        assert missing == 0
        predictions = []
        for example in examples:
            labels, n_cols = example["labels"], len(example["columns"])
            length = len(example["token_ids"])
            op = np.tile(np.eye(5)[4], (length, 1))
            col = np.tile(np.eye(n_cols)[0], (length, 1))
            for i, (o, c) in enumerate(zip(labels["op"], labels["col"])):
                op[i + 1] = np.eye(5)[o]
                if c >= 0:
                    col[i + 1] = np.eye(n_cols)[c]
            predictions.append(nl2sql.decode_sql(
                example, tables[example["table_id"]], np.eye(3)[labels["conn"]],
                np.eye(7)[labels["agg"]], op, col))
        golds = [q["sql"] for q in questions]
        assert nl2sql.logic_form_accuracy(golds, predictions) == 1.0


def test_value_fix_ups(nl2sql):
    fix = nl2sql.fix_condition
    assert fix(1, 0, "很多", TABLE) == (1, 2, "很多")  # '>' needs a number
    assert fix(1, 0, "2000", TABLE) == (1, 0, "2000")
    assert fix(0, 2, "北京", TABLE) == (0, 2, "北京")
    assert fix(0, 2, "北京市", TABLE) == (0, 2, "北京")  # nearest cell of the column
    assert fix(0, 2, "纽约", TABLE) == (0, 2, "纽约")  # nothing close: kept
    two_text = dict(TABLE, header=["城市", "人口", "简称"], types=["text", "real", "text"],
                    rows=[["北京", 1, "京"], ["上海", 2, "沪"]])
    assert fix(0, 2, "沪", two_text) == (2, 2, "沪")  # a cell of another text column


def test_help(nl2sql, capsys):
    with pytest.raises(SystemExit) as info:
        nl2sql.parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--train-tables", "--valid-tables", "--epochs", "--batch-size", "--maxlen",
                 "--lr", "--limit", "--results", "--output", "--model-dir", "--random-init"):
        assert flag in out


def test_main_end_to_end_on_the_sample(nl2sql, tmp_path):
    results_path = tmp_path / "results.json"
    submission = tmp_path / "test_pred.json"
    results = nl2sql.main([
        "--limit", "8", "--epochs", "1", "--batch-size", "8", "--maxlen", "96",
        "--output", str(tmp_path / "nl2sql.keras"), "--results", str(results_path),
        "--predictions", str(tmp_path / "valid_pred.json"),
        "--test", os.path.join(SAMPLE, "val.json"),
        "--test-tables", os.path.join(SAMPLE, "val.tables.json"),
        "--submission", str(submission)])
    saved = json.loads(results_path.read_text(encoding="utf-8"))
    assert saved["valid"] == results["valid"]
    assert results["questions"] == {"train": 8, "valid": 8}
    for key in ("logic_form_acc", "execution_acc", "score", "sel_acc", "conds_acc", "conn_acc"):
        assert 0.0 <= results["valid"][key] <= 1.0
    assert results["reload_diff"] <= 1e-4 and len(results["history"]) == 1
    lines = submission.read_text(encoding="utf-8").splitlines()
    tables = nl2sql.load_tables(os.path.join(SAMPLE, "val.tables.json"))
    questions = nl2sql.load_questions(os.path.join(SAMPLE, "val.json"), tables)
    assert len(lines) == len(questions) == 15
    for line, question in zip(lines, questions):
        predicted = json.loads(line)
        assert set(predicted) == {"sel", "agg", "cond_conn_op", "conds"}
        assert nl2sql.check_sql(predicted, len(tables[question["table_id"]]["header"])) is None
    pred_lines = (tmp_path / "valid_pred.json").read_text(encoding="utf-8").splitlines()
    assert len(pred_lines) == 8 and "sql_pred" in json.loads(pred_lines[0])
