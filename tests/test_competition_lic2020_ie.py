"""The LIC2020 information-extraction examples (DuIE 2.0 relations, DuEE 1.0 events):
official-metric scorers on hand-computed cases, the shipped samples, a gold ->
labels -> decoding round trip, clear errors on malformed lines, and one short
end-to-end run of each script on its sample with the shipped small BERT."""

import json
import math
import os

import numpy as np
import pytest

from conftest import load_example

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VOCAB = os.path.join(REPO, "checkpoints", "chinese_bert_small", "vocab.txt")



@pytest.fixture(scope="module")
def re_mod():
    return load_example("competition_lic2020_relation_extraction")


@pytest.fixture(scope="module")
def ee_mod():
    return load_example("competition_lic2020_event_extraction")


@pytest.fixture(scope="module")
def tokenizer():
    from bert4keras.tokenizers import Tokenizer

    return Tokenizer(VOCAB, do_lower_case=True)


def spo(s, p, o):
    return {"subject": s, "predicate": p, "object": o if isinstance(o, dict) else {"@value": o}}


def write_lines(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
                              for x in lines) + "\n", encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------
# DuIE 2.0 scorer
# ---------------------------------------------------------------------------

GOLD_RE = [
    {"text": "A", "spo_list": [spo("雾港来信", "导演", "陈默"), spo("雾港来信", "主演", "周亦然"),
                               spo("周亦然", "饰演", {"@value": "赵四", "inWork": "长河谣"})]},
    {"text": "B", "spo_list": [spo("Jay Lin", "国籍", "新加坡")]},
]


def test_duie_scores_perfect_partial_empty(re_mod):
    perfect = re_mod.duie_scores(GOLD_RE, GOLD_RE)
    assert perfect["precision"] == perfect["recall"] == perfect["f1"] == 1.0
    assert perfect["gold"] == 4
    predicted = [
        # 《》 and case are normalised away; the duplicate counts once; the
        # complex SPO without its inWork slot is wrong as a whole
        {"text": "A", "spo_list": [spo("《雾港来信》", "导演", "陈默"), spo("雾港来信", "导演", "陈默"),
                                   spo("周亦然", "饰演", "赵四")]},
        {"text": "B", "spo_list": [spo("jay lin", "国籍", "新加坡")]},
        {"text": "not in gold", "spo_list": [spo("x", "导演", "y")]},  # ignored
    ]
    scores = re_mod.duie_scores(GOLD_RE, predicted)
    assert (scores["gold"], scores["predicted"], scores["correct"]) == (4, 3, 2)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(4 / 7)
    empty = re_mod.duie_scores(GOLD_RE, [])
    assert (empty["precision"], empty["recall"], empty["f1"], empty["predicted"]) == (0, 0, 0, 0)
    # an extra slot is as wrong as a missing one; types are never compared
    extra = [{"text": "B",
              "spo_list": [spo("Jay Lin", "国籍", {"@value": "新加坡", "inArea": "x"})]}]
    assert re_mod.duie_scores(GOLD_RE[1:], extra)["correct"] == 0


def test_duie_scores_aliases(re_mod):
    predicted = [{"text": "A", "spo_list": [spo("zhou", "饰演", {"@value": "四哥", "inWork": "长河谣"})]}]
    assert re_mod.duie_scores(GOLD_RE[:1], predicted)["correct"] == 0
    # as in the official script, a subject matches if the other side's subject
    # is among *its* aliases: a one-way alias entry helps precision only
    one_way = {"zhou": {"周亦然"}, "赵四": {"四哥"}, "四哥": {"赵四"}}
    scores = re_mod.duie_scores(GOLD_RE[:1], predicted, one_way)
    assert (scores["correct"], scores["gold_found"]) == (1, 0)
    both_ways = dict(one_way, 周亦然={"zhou"})
    scores = re_mod.duie_scores(GOLD_RE[:1], predicted, both_ways)
    assert (scores["correct"], scores["gold_found"]) == (1, 1)
    assert scores["precision"] == 1.0 and scores["recall"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------
# DuEE 1.0 scorer
# ---------------------------------------------------------------------------


def event(event_type, *arguments):
    return {"event_type": event_type,
            "arguments": [{"role": a[0], "argument": a[1], "alias": list(a[2:])}
                          for a in arguments]}


GOLD_EE = [
    {"id": "1", "text": "s1", "event_list": [
        event("竞赛行为-胜负", ("胜者", "青岛海鸥队"), ("败者", "大连蓝鲸队"), ("时间", "3月12日晚"))]},
    {"id": "2", "text": "s2", "event_list": [
        event("人生-死亡", ("死者", "著名画家李云山", "李云山"), ("死者年龄", "92岁"))]},
]


def test_char_f1(ee_mod):
    assert ee_mod.char_f1("大连队", "大连蓝鲸队") == pytest.approx(0.75)  # P 3/3, R 3/5
    assert ee_mod.char_f1("ABC", "abc") == 1.0
    assert ee_mod.char_f1("甲", "乙") == 0.0 and ee_mod.char_f1("", "乙") == 0.0


def test_duee_scores_perfect_partial_empty(ee_mod):
    perfect = ee_mod.duee_scores(GOLD_EE, GOLD_EE)
    assert perfect["precision"] == perfect["recall"] == perfect["f1"] == 1.0
    assert perfect["gold"] == perfect["predicted"] == 5
    predicted = [
        {"id": "1", "event_list": [
            event("竞赛行为-胜负", ("胜者", "青岛海鸥队"), ("败者", "大连队")),  # 1.0 and 0.75
            event("竞赛行为-夺冠", ("冠军", "青岛海鸥队"))]},                    # wrong type: 0
        {"id": "2", "event_list": [event("人生-死亡", ("死者", "李云山"))]},      # alias: 1.0
    ]
    scores = ee_mod.duee_scores(GOLD_EE, predicted)
    assert scores["score"] == pytest.approx(2.75)
    assert (scores["gold"], scores["predicted"]) == (5, 4)
    assert scores["precision"] == pytest.approx(11 / 16)
    assert scores["recall"] == pytest.approx(11 / 20)
    assert scores["f1"] == pytest.approx(11 / 18)
    empty = ee_mod.duee_scores(GOLD_EE, [])
    assert (empty["precision"], empty["recall"], empty["f1"], empty["predicted"]) == (0, 0, 0, 0)
    # the same argument in two events of one type counts once
    twice = [{"id": "2", "event_list": [event("人生-死亡", ("死者年龄", "92岁")),
                                        event("人生-死亡", ("死者年龄", "92岁"))]}]
    assert ee_mod.duee_scores(GOLD_EE[1:], twice)["predicted"] == 1


def test_duee_scores_pair_arguments_one_to_one(ee_mod):
    gold = [{"id": "1", "text": "t", "event_list": [
        event("人生-结婚", ("结婚双方", "歌手许星河"), ("结婚双方", "唐若溪"))]}]
    predicted = [{"id": "1", "event_list": [
        event("人生-结婚", ("结婚双方", "许星河"), ("结婚双方", "唐若溪"), ("结婚双方", "许星"))]}]
    scores = ee_mod.duee_scores(gold, predicted)
    # best pairing: 许星河-歌手许星河 (0.75) + 唐若溪-唐若溪 (1); 许星 is left unpaired
    assert scores["score"] == pytest.approx(1.75)
    assert scores["precision"] == pytest.approx(1.75 / 3)
    assert scores["recall"] == pytest.approx(1.75 / 2)
    assert ee_mod._best_pairing([[0.2, 0.9], [0.8, 0.1]]) == pytest.approx(1.7)
    assert ee_mod._best_pairing([[0.5, 0.4, 0.3]]) == pytest.approx(0.5)


# ---------------------------------------------------------------------------
# samples, and the gold -> labels -> decoding round trip
# ---------------------------------------------------------------------------


def test_duie_sample_round_trip(re_mod, tokenizer):
    schema, relations = re_mod.load_schema(os.path.join(re_mod.SAMPLE_DIR, "schema.json"))
    assert len(schema) >= 10 and len(relations) > len(schema)  # complex predicates add slots
    for name in ("train.json", "dev.json"):
        records = re_mod.load_duie(os.path.join(re_mod.SAMPLE_DIR, name), schema)
        assert len(records) >= 12
        assert any(len(s["object"]) > 1 for r in records for s in r["spo_list"])  # complex SPO
        examples, counts = re_mod.build_examples(records, tokenizer, relations, 256)
        assert counts["spos_placed"] == counts["spos"] and len(examples) == len(records)
        predicted = []
        for record, (token_ids, spans) in zip(records, examples):
            enc = re_mod.Encoded(tokenizer, record["text"], 256)
            pieces = []
            for subject, objects in spans.items():
                scores = np.zeros((len(token_ids), len(relations), 2))
                for relation, (start, end) in objects:
                    scores[start, relation, 0] = scores[end, relation, 1] = 1
                pieces += re_mod.decode_objects(enc, subject, scores, relations, 0.5)
            predicted.append({"text": record["text"],
                              "spo_list": re_mod.assemble_spos(pieces, schema)})
        assert re_mod.duie_scores(records, predicted)["f1"] == 1.0
    # overlapping entities in the sample: an object inside its subject
    train = re_mod.load_duie(os.path.join(re_mod.SAMPLE_DIR, "train.json"), schema)
    assert any(v in s["subject"] and v != s["subject"]
               for r in train for s in r["spo_list"] for v in s["object"].values())


def test_duee_sample_round_trip(ee_mod, tokenizer):
    schema = ee_mod.load_event_schema(os.path.join(ee_mod.SAMPLE_DIR, "event_schema.json"))
    labels = ee_mod.Labels(schema)
    assert len(schema) >= 6 and labels.size == 1 + 2 * sum(map(len, schema.values()))
    for name in ("train.json", "dev.json"):
        records = ee_mod.load_duee(os.path.join(ee_mod.SAMPLE_DIR, name), schema)
        assert len(records) >= 12
        for maxlen in (128, 12):  # one window per text, and many
            examples, counts = ee_mod.build_examples(records, tokenizer, labels, maxlen)
            assert counts["overlapping"] >= 1  # the same phrase in two roles
            predicted, k = [], 0
            for record in records:
                win = ee_mod.Windows(tokenizer, record["text"], maxlen)
                arguments = []
                for start in win.starts:
                    _, tags = examples[k]
                    k += 1
                    arguments += [(t, r, win.text_of(start + a, start + b))
                                  for (t, r), a, b in labels.spans(tags[1:-1])]
                predicted.append({"id": record["id"], "event_list": [
                    {"event_type": t, "arguments": [{"role": r, "argument": a}]}
                    for t, r, a in arguments]})
            scores = ee_mod.duee_scores(records, predicted)
            assert scores["precision"] == 1.0  # every decoded argument is exact
            assert scores["recall"] == pytest.approx(counts["placed"] / counts["arguments"])


def test_bio_reading_is_strict(ee_mod):
    labels = ee_mod.Labels({"T": ["a", "b"]})  # B-a 1, I-a 2, B-b 3, I-b 4
    assert labels.spans([1, 2, 2, 0, 3, 2, 4, 1]) == [(("T", "a"), 0, 2), (("T", "b"), 4, 4),
                                                       (("T", "a"), 7, 7)]


# ---------------------------------------------------------------------------
# malformed input
# ---------------------------------------------------------------------------


def test_duie_malformed_lines(re_mod, tmp_path):
    schema_path = os.path.join(re_mod.SAMPLE_DIR, "schema.json")
    schema, _ = re_mod.load_schema(schema_path)
    good = {"text": "智利的首都是圣地亚哥。", "spo_list": [spo("智利", "首都", "圣地亚哥")]}
    cases = [
        ({"text": "x"}, r"bad\.json, line 2: missing field 'spo_list'"),
        ({"text": "x", "spo_list": [{"subject": "a", "object": {"@value": "b"}}]},
         r"line 2, spo_list\[0\]: missing field 'predicate'"),
        ({"text": "x", "spo_list": [spo("a", "首都", {"inArea": "b"})]},
         r"line 2, spo_list\[0\]\.object: missing field '@value'"),
        ({"text": "x", "spo_list": [spo("a", "首府", "b")]}, r"line 2.*predicate '首府' is not in"),
        ('{"text": "x", ', r"line 2: invalid JSON"),
    ]
    for bad, message in cases:
        path = write_lines(tmp_path / "bad.json", [good, bad])
        with pytest.raises(re_mod.DataFormatError, match=message):
            re_mod.load_duie(path, schema)
    path = write_lines(tmp_path / "schema.json", [{"predicate": "p", "subject_type": "s"}])
    with pytest.raises(re_mod.DataFormatError, match="line 1: missing field 'object_type'"):
        re_mod.load_schema(path)
    # through the command line, before any model is built
    path = write_lines(tmp_path / "train.json", [good, {"spo_list": []}])
    with pytest.raises(re_mod.DataFormatError, match=r"train\.json, line 2: missing field 'text'"):
        re_mod.main(["--train", path, "--output", ""])


def test_duee_malformed_lines(ee_mod, tmp_path):
    schema = ee_mod.load_event_schema(os.path.join(ee_mod.SAMPLE_DIR, "event_schema.json"))
    good = {"id": "1", "text": "南湖电子宣布裁员800人。",
            "event_list": [event("组织关系-裁员", ("裁员方", "南湖电子"))]}
    cases = [
        ({"id": "2", "text": "x", "event_list": [{"arguments": []}]},
         r"line 2, event_list\[0\]: missing field 'event_type'"),
        ({"id": "2", "text": "x", "event_list": [{"event_type": "组织关系-裁员",
                                                  "arguments": [{"role": "裁员方"}]}]},
         r"line 2, event_list\[0\]\.arguments\[0\]: missing field 'argument'"),
        ({"id": "2", "text": "x", "event_list": [{"event_type": "组织关系-裁员", "arguments": [
            {"role": "裁员方", "argument": "x", "argument_start_index": "0"}]}]},
         r"field 'argument_start_index' must be int, got str"),
        ({"id": "2", "text": "x", "event_list": [event("组织关系-裁员", ("胜者", "x"))]},
         r"line 2.*role '胜者' is not in the schema of '组织关系-裁员'"),
        ({"id": "2", "event_list": []}, r"line 2: missing field 'text'"),
    ]
    for bad, message in cases:
        path = write_lines(tmp_path / "bad.json", [good, bad])
        with pytest.raises(ee_mod.DataFormatError, match=message):
            ee_mod.load_duee(path, schema)
    path = write_lines(tmp_path / "schema.json", [{"event_type": "t", "role_list": [{}]}])
    with pytest.raises(ee_mod.DataFormatError,
                       match=r"line 1, role_list\[0\]: missing field 'role'"):
        ee_mod.load_event_schema(path)


# ---------------------------------------------------------------------------
# end to end on the shipped samples (shipped small BERT, a few steps)
# ---------------------------------------------------------------------------

SMOKE = ["--limit", "8", "--epochs", "1", "--batch-size", "4", "--maxlen", "64"]


def _check_scores(scores):
    for key in ("precision", "recall", "f1"):
        assert math.isfinite(scores[key]) and 0.0 <= scores[key] <= 1.0


def test_relation_extraction_end_to_end(re_mod, tmp_path):
    with pytest.raises(SystemExit) as info:
        re_mod.parse_args(["--help"])
    assert info.value.code == 0
    results_path, test_out = tmp_path / "re.json", tmp_path / "re_test.json"
    results = re_mod.main(SMOKE + ["--output", str(tmp_path / "re.keras"),
                                   "--results", str(results_path),
                                   "--test", os.path.join(re_mod.SAMPLE_DIR, "dev.json"),
                                   "--test-output", str(test_out)])
    _check_scores(results["dev"])
    assert results["dev"]["gold"] > 0 and results["data"]["sentences_used"] == 8
    assert json.loads(results_path.read_text())["dev"]["f1"] == results["dev"]["f1"]
    assert results["reload_diff"] <= 1e-4
    lines = test_out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 and all("spo_list" in json.loads(x) for x in lines)


def test_event_extraction_end_to_end(ee_mod, tmp_path):
    with pytest.raises(SystemExit) as info:
        ee_mod.parse_args(["--help"])
    assert info.value.code == 0
    results_path = tmp_path / "ee.json"
    results = ee_mod.main(SMOKE + ["--output", str(tmp_path / "ee.keras"),
                                   "--results", str(results_path),
                                   "--dev-output", str(tmp_path / "ee_dev.json")])
    _check_scores(results["dev"])
    assert results["dev"]["gold"] > 0 and results["data"]["sentences"] == 8
    assert json.loads(results_path.read_text())["dev"]["f1"] == results["dev"]["f1"]
    assert results["reload_diff"] <= 1e-4
    lines = (tmp_path / "ee_dev.json").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 and all("event_list" in json.loads(x) for x in lines)
