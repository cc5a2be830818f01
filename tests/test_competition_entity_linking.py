"""The CCKS 2019 entity-linking example: file readers and their errors, the
alias index, the scorer on hand-computed cases, the pointer decoder and the
ranker's input, and one end-to-end run of ``main`` on the shipped sample."""

import json
import os

import pytest

from conftest import load_example

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
SAMPLE = os.path.join(EXAMPLES, "data", "ccks2019_el_sample")


@pytest.fixture(scope="module")
def el():
    return load_example("competition_entity_linking")


@pytest.fixture(scope="module")
def kb(el):
    return el.load_kb(os.path.join(SAMPLE, "kb_data"))


# ---------------------------------------------------------------------------
# the shipped sample and the readers
# ---------------------------------------------------------------------------


def test_sample_files(el, kb):
    train = el.load_texts(os.path.join(SAMPLE, "train.json"), kb)
    dev = el.load_texts(os.path.join(SAMPLE, "develop.json"), kb)
    assert len(kb) == 40 and len(train) == 34 and len(dev) == 13
    assert train[0]["text_id"] == "1" and train[0]["mentions"] == [(0, "苹果公司", "10002")]
    mentions = [m for r in train + dev for m in r["mentions"]]
    assert sum(el.is_nil(k) for _, _, k in mentions) == 8
    for record in train + dev:
        for offset, mention, _ in record["mentions"]:
            assert record["text"][offset:offset + len(mention)] == mention
    entity = kb["10002"]
    assert entity["subject"] == "苹果公司" and entity["aliases"] == ["苹果公司", "苹果", "Apple"]
    assert entity["description"].startswith("苹果公司；类型：Organization；义项描述：美国科技公司")
    assert entity["description"].endswith("摘要：苹果公司是美国的一家高科技公司，以设计和生产智能手机与个人电脑闻名。")


def test_alias_index_finds_every_entity_of_an_ambiguous_alias(el, kb):
    index = el.AliasIndex(kb)
    assert index.candidates("李娜") == ["10003", "10004"]  # tennis player, singer
    assert index.candidates("苹果") == ["10001", "10002"]  # fruit, company
    assert index.candidates("火箭") == ["10018", "10019"]
    assert index.candidates(" APPLE ") == ["10002"]  # stripped, case-insensitive
    assert index.candidates("苹果", limit=1) == ["10001"]
    assert index.candidates("库克") == []
    # gold mentions of the training split become aliases; NIL ones do not
    records = [{"mentions": [(0, "大苹果", "10001"), (3, "库克", "NIL")]}]
    index = el.AliasIndex(kb, records)
    assert index.candidates("大苹果") == ["10001"] and index.candidates("库克") == []


# ---------------------------------------------------------------------------
# annotator statistics, the frequency filter and rare aliases (training split only)
# ---------------------------------------------------------------------------


def rec(text, *mentions):
    return {"text": text, "mentions": list(mentions)}


STATS_TRAIN = [
    rec("苹果手机和苹果汁", (0, "苹果", "10002")),  # labelled once, a 2nd occurrence: 1 text
    rec("苹果公司的股价", (0, "苹果公司", "10002")),  # 苹果 inside a labelled span: not counted
    rec("我爱吃苹果"),  # 苹果 unlabelled
    rec("苹果很甜，苹果很脆", (0, "苹果", "10001"), (5, "苹果", "10001")),  # 2 links, 1 text
    rec("APPLE的苹果", (0, "APPLE", "10002")),  # apple labelled, 苹果 unlabelled
]


def test_mention_statistics_by_hand(el, kb):
    stats = el.MentionStats(STATS_TRAIN, el.AliasIndex(kb).index)
    # 苹果: links 10001 x2 (text 4), 10002 x1 (text 1); labelled in texts 1, 4;
    # unlabelled in texts 3, 5 (text 2 has it only inside 苹果公司)
    assert stats.links["苹果"] == {"10001": 2, "10002": 1}
    assert (stats.labelled["苹果"], stats.unlabelled["苹果"]) == (2, 2)
    assert stats.prior("苹果", "10001") == pytest.approx(2 / 3)
    assert stats.prior("苹果", "10002") == pytest.approx(1 / 3)
    assert stats.link_probability("苹果") == 0.5
    assert stats.features("苹果", "10001").tolist() == pytest.approx([2 / 3, 1.0, 0.5])
    # case-insensitive keys; a string seen once, always labelled
    assert stats.prior("Apple", "10002") == 1.0 and stats.link_probability("apple") == 1.0
    assert (stats.labelled["苹果公司"], stats.unlabelled["苹果公司"]) == (1, 0)
    # a KB alias never seen in training: no prior, no link probability, zero features
    assert stats.prior("平安果", "10001") is None and stats.link_probability("平安果") is None
    assert stats.features("平安果", "10001").tolist() == [0.0, 0.0, 0.0]
    assert stats.features("苹果", "10001").dtype == "float32"


def test_mention_statistics_leave_one_out(el, kb):
    stats = el.MentionStats(STATS_TRAIN, el.AliasIndex(kb).index)
    # without text 4: links {10002: 1}, labelled 1 (text 1), unlabelled 2 (texts 3, 5)
    assert stats.counts("苹果", exclude=STATS_TRAIN[3]) == ({"10002": 1}, 1, 2)
    assert stats.features("苹果", "10001", exclude=STATS_TRAIN[3]).tolist() == pytest.approx(
        [0.0, 1.0, 1 / 3])
    # without text 3 (苹果 unlabelled there): labelled 2, unlabelled 1
    assert stats.link_probability("苹果", exclude=STATS_TRAIN[2]) == pytest.approx(2 / 3)
    # without text 5, "apple" was never seen
    assert stats.features("apple", "10002", exclude=STATS_TRAIN[4]).tolist() == [0.0, 0.0, 0.0]
    # the ranker's training pairs carry the statistics without their own text
    index = el.AliasIndex(kb)
    pairs = el.ranking_pairs([STATS_TRAIN[3]], index, 0, None, __import__("random").Random(0),
                             stats)
    assert [p[3:5] for p in pairs] == [("10001", 1), ("10001", 1)]
    assert pairs[0][5].tolist() == pytest.approx([0.0, 1.0, 1 / 3])
    assert el.ranking_pairs([STATS_TRAIN[3]], index, 0, None,
                            __import__("random").Random(0))[0][5] is None


def test_frequency_filter_rule(el, kb):
    stats = el.MentionStats(STATS_TRAIN, el.AliasIndex(kb).index)
    # 苹果: 4 texts, link probability 0.5; apple / 苹果公司: 1 text, 1.0
    assert stats.rarely_linked(0.6, 4) == {"苹果"}
    assert stats.rarely_linked(0.6, 5) == set()  # too few occurrences to judge
    assert stats.rarely_linked(0.5, 1) == set()  # not below the threshold
    assert stats.rarely_linked(0.0, 1) == set()  # 0 disables
    assert stats.rarely_linked(1.0, 2) == {"苹果"}  # apple, 苹果公司: 1 text each


def test_alias_index_drops_rare_training_pairs_and_orders_by_training_links(el, kb):
    records = [rec("苹果", (0, "苹果", "10002")), rec("苹果", (0, "苹果", "10002")),
               rec("大苹果", (0, "大苹果", "10001")),
               rec("红富士", (0, "红富士", "10001")), rec("红富士", (0, "红富士", "10001"))]
    index = el.AliasIndex(kb, records, min_count=2)
    assert index.candidates("苹果") == ["10002", "10001"]  # linked twice to the company
    assert index.candidates("苹果", limit=1) == ["10002"]
    assert index.candidates("大苹果") == []  # seen once: dropped
    assert index.candidates("红富士") == ["10001"]
    assert el.AliasIndex(kb, records).candidates("大苹果") == ["10001"]  # min_count 1 keeps it
    assert el.AliasIndex(kb, records[2:]).candidates("苹果") == ["10001", "10002"]  # KB order


def test_pair_generator_adds_the_statistics_input_only_with_stats(el, kb):
    from bert4keras.tokenizers import Tokenizer

    vocab = os.path.join(os.path.dirname(HERE), "checkpoints", "chinese_bert_small", "vocab.txt")
    encoder = el.CharEncoder(Tokenizer(vocab, do_lower_case=True))
    stats = el.MentionStats(STATS_TRAIN, el.AliasIndex(kb).index)
    rng = __import__("random").Random(0)
    for with_stats, n_inputs in ((stats, 3), (None, 2)):  # --no-mention-stats: 2 inputs
        pairs = el.ranking_pairs(STATS_TRAIN, el.AliasIndex(kb), 1, None, rng, with_stats)
        inputs, labels = next(iter(el.PairGenerator(pairs, encoder, kb, 8, 32)))
        assert len(inputs) == n_inputs and inputs[0].shape == (8, 32) and labels.shape == (8, 1)
    assert inputs[0].dtype.kind == "i"
    pairs = el.ranking_pairs(STATS_TRAIN, el.AliasIndex(kb), 1, None, rng, stats)
    inputs, _ = next(iter(el.PairGenerator(pairs, encoder, kb, 8, 32)))
    assert inputs[2].shape == (8, el.N_FEATURES) and inputs[2].dtype == "float32"


class FakePointers:
    """Marks characters 3-4 of every text as a mention (tokens 4 and 5)."""

    def predict_on_batch(self, inputs):
        import numpy as np

        probs = np.zeros(inputs[0].shape + (2,), "float32")
        probs[:, 4, 0] = probs[:, 5, 1] = 1.0
        return probs


class FakeRanker:
    inputs = [None, None]
    name = "fake"


def test_linker_applies_the_frequency_filter_to_detected_mentions(el, tmp_path):
    from bert4keras.tokenizers import Tokenizer

    vocab = os.path.join(os.path.dirname(HERE), "checkpoints", "chinese_bert_small", "vocab.txt")
    encoder = el.CharEncoder(Tokenizer(vocab, do_lower_case=True))
    kb = {"1": {"subject": "梨", "aliases": ["梨"], "description": "梨"}}
    texts = ["我爱吃苹果", "他也吃苹果的", "我们吃米饭"]
    args = (FakePointers(), FakeRanker(), encoder, kb, el.AliasIndex(kb), 32, 4, 8, True, 0.5)
    linker = el.Linker(*args)
    assert linker(texts) == [{(3, "苹果", "NIL")}, {(3, "苹果", "NIL")}, {(3, "米饭", "NIL")}]
    assert linker.filtered == 0
    linker = el.Linker(*args, drop={"苹果"})
    assert linker(texts) == [set(), set(), {(3, "米饭", "NIL")}] and linker.filtered == 2
    ranker = FakeRanker()
    ranker.inputs = [None, None, None]
    with pytest.raises(ValueError, match="takes mention statistics"):
        el.Linker(FakePointers(), ranker, *args[2:])


def write_lines(path, objects):
    with open(path, "w", encoding="utf-8") as f:
        for obj in objects:
            f.write((obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)) + "\n")
    return str(path)


GOOD = {"text_id": "1", "text": "吃苹果", "mention_data": [
    {"kb_id": "10001", "mention": "苹果", "offset": "1"}]}


@pytest.mark.parametrize("line, message", [
    ({"text_id": "1", "text": "吃苹果", "mention_data": [
        {"kb_id": "10001", "mention": "苹果", "offset": "0"}]},
     r"offset 0 in mention_data\[0\] does not match mention '苹果': the text has '吃苹'"),
    ({"text_id": "1", "text": "吃苹果", "mention_data": [
        {"kb_id": "99999", "mention": "苹果", "offset": "1"}]},
     r"kb_id '99999' in mention_data\[0\] .*not a subject_id"),
    ({"text_id": "1", "text": "吃苹果", "mention_data": [{"kb_id": "10001", "offset": "1"}]},
     r"missing field 'mention' in mention_data\[0\]"),
    ({"text_id": "1", "text": "吃苹果", "mention_data": [
        {"kb_id": "10001", "mention": "苹果", "offset": "x1"}]},
     r"offset 'x1' in mention_data\[0\] is not a non-negative integer"),
    ({"text_id": "1", "mention_data": []}, r"missing field 'text'"),
    ('{"text_id": "1", "text": ', r"not valid JSON"),
    ({"text_id": "2", "text": "吃苹果"}, r"mention_data is absent here but present on the first"),
])
def test_malformed_text_lines_name_file_and_line(el, kb, tmp_path, line, message):
    path = write_lines(tmp_path / "train.json", [GOOD, line])
    with pytest.raises(el.DataFormatError, match=r"train\.json:2: " + message) as info:
        el.load_texts(path, kb)
    assert info.value.path == path and info.value.line_no == 2


def test_malformed_kb_lines(el, tmp_path):
    entity = {"subject_id": "1", "subject": "苹果", "alias": ["苹果"], "data": []}
    cases = [
        ({"subject": "苹果"}, r"kb_data:2: missing field 'subject_id'"),
        (entity, r"kb_data:2: subject_id '1' appears twice"),
        ({"subject_id": "2", "subject": "梨", "data": [{"predicate": "颜色"}]},
         r"kb_data:2: missing field 'object' in data\[0\]"),
        ({"subject_id": "2", "subject": "梨", "alias": "梨"},
         r"kb_data:2: field 'alias' should be list"),
    ]
    for line, message in cases:
        path = write_lines(tmp_path / "kb_data", [entity, line])
        with pytest.raises(el.DataFormatError, match=message):
            el.load_kb(path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        el.load_kb(str(tmp_path / "nowhere"))


def test_unlabelled_file_and_prediction_round_trip(el, kb, tmp_path):
    # the official develop.json has no mention_data: read as unlabelled
    path = write_lines(tmp_path / "develop.json", [{"text_id": "7", "text": "吃苹果和小米粥"},
                                                   {"text_id": 8, "text": "李娜夺冠"}])
    records = el.load_texts(path, kb)
    assert [r["mentions"] for r in records] == [None, None] and records[1]["text_id"] == "8"
    predicted = [{(4, "小米", "10007"), (1, "苹果", "10001")}, {(0, "李娜", "NIL")}]
    out = tmp_path / "pred.json"
    el.write_predictions(str(out), records, predicted)
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first == {"text_id": "7", "text": "吃苹果和小米粥", "mention_data": [
        {"kb_id": "10001", "mention": "苹果", "offset": "1"},
        {"kb_id": "10007", "mention": "小米", "offset": "4"}]}
    back = el.load_texts(str(out), kb)  # the output is valid input again
    assert [set(r["mentions"]) for r in back] == predicted


# ---------------------------------------------------------------------------
# the scorer
# ---------------------------------------------------------------------------

GOLD = [
    {(0, "苹果", "10002"), (11, "库克", "NIL")},
    {(0, "李娜", "10003")},
    {(2, "长城", "10005"), (9, "长城", "10005")},
]  # 5 gold mentions, one of them NIL


def test_link_scores_perfect(el):
    scores = el.link_scores(GOLD, GOLD)
    assert scores == dict(precision=1.0, recall=1.0, f1=1.0, gold=5, predicted=5, correct=5)
    assert el.link_scores([[]], [[]])["f1"] == 0.0


@pytest.mark.parametrize("text, replacement, correct, n_pred", [
    # a wrong kb_id: the other (ambiguous) entity named 李娜
    (1, {(0, "李娜", "10004")}, 4, 5),
    # a wrong offset: the second 长城 placed one character off
    (2, {(2, "长城", "10005"), (10, "长城", "10005")}, 4, 5),
    # a missing mention
    (0, {(0, "苹果", "10002")}, 4, 4),
])
def test_link_scores_one_error(el, text, replacement, correct, n_pred):
    predicted = [set(s) for s in GOLD]
    predicted[text] = replacement
    scores = el.link_scores(GOLD, predicted)
    p, r = correct / n_pred, correct / 5
    assert (scores["correct"], scores["predicted"], scores["gold"]) == (correct, n_pred, 5)
    assert scores["precision"] == pytest.approx(p) and scores["recall"] == pytest.approx(r)
    assert scores["f1"] == pytest.approx(2 * p * r / (p + r))
    # the values, worked out by hand: P = R = F1 = 0.8 for the first two; 1.0 / 0.8 / 0.889
    expected = {5: (0.8, 0.8, 0.8), 4: (1.0, 0.8, 8 / 9)}[n_pred]
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx(expected)


def test_link_scores_by_hand(el):
    # text 0: company right, NIL predicted as an entity; text 1: right, plus a
    # spurious mention; text 2: one 长城 right, one missed
    predicted = [{(0, "苹果", "10002"), (11, "库克", "10001")},
                 {(0, "李娜", "10003"), (2, "夺冠", "NIL")},
                 {(2, "长城", "10005")}]
    scores = el.link_scores(GOLD, predicted)
    assert (scores["correct"], scores["predicted"], scores["gold"]) == (3, 5, 5)
    assert scores["precision"] == pytest.approx(0.6) and scores["recall"] == pytest.approx(0.6)
    assert scores["f1"] == pytest.approx(0.6)
    # without NIL mentions: gold 4, predicted 4 (夺冠/NIL dropped), correct 3
    in_kb = el.link_scores(GOLD, predicted, nil="drop")
    assert (in_kb["correct"], in_kb["predicted"], in_kb["gold"]) == (3, 4, 4)
    assert in_kb["f1"] == pytest.approx(0.75)
    # detection alone ignores kb_id: 4 of 5 predicted spans are gold spans
    spans = el.mention_scores(GOLD, predicted)
    assert (spans["correct"], spans["predicted"], spans["gold"]) == (4, 5, 5)
    # offsets given as the official strings score the same; a repeat counts once
    as_strings = [{(str(o), m, k) for o, m, k in s} for s in predicted]
    assert el.link_scores(GOLD, as_strings) == scores
    assert el.link_scores([{(0, "a", "1")}], [[(0, "a", "1"), (0, "a", "1")]])["precision"] == 1.0


def test_link_scores_errors(el):
    with pytest.raises(ValueError, match="gold has 3 texts but predicted has 1"):
        el.link_scores(GOLD, [set()])
    with pytest.raises(ValueError, match="nil must be"):
        el.link_scores(GOLD, GOLD, nil="ignore")
    with pytest.raises(ValueError, match="expected \\(offset, mention, kb_id\\)"):
        el.link_scores([{(0, "苹果")}], [set()])


# ---------------------------------------------------------------------------
# model inputs and outputs (no model needed)
# ---------------------------------------------------------------------------


def test_decode_pointers(el):
    import numpy as np

    probs = np.zeros((10, 2))  # token i + 1 is character i
    probs[[1, 4, 8], 0] = 0.9  # starts at characters 0, 3, 7
    probs[[2, 6], 1] = 0.8  # ends at characters 1, 5
    assert el.decode_pointers(probs, 8) == [(0, 1), (3, 5)]  # 7 has no end after it
    assert el.decode_pointers(probs, 8, max_chars=2) == [(0, 1)]
    assert el.decode_pointers(probs, 3) == [(0, 1)]  # only the first 3 characters


def test_ranker_input_marks_the_mention(el, kb):
    from bert4keras.tokenizers import Tokenizer

    vocab = os.path.join(os.path.dirname(HERE), "checkpoints", "chinese_bert_small", "vocab.txt")
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    encoder = el.CharEncoder(tokenizer)
    text = "每天吃一个苹果有益健康"
    ids, segs = encoder.pair(text, 5, "苹果", kb["10001"]["description"], maxlen=40)
    tokens = tokenizer.ids_to_tokens(ids)
    assert len(ids) == len(segs) == 40
    assert tokens[:16] == ["[CLS]", "每", "天", "吃", "一", "个", "【", "苹", "果", "】", "有",
                           "益", "健", "康", "[SEP]", "苹"]
    assert segs[:15] == [0] * 15 and segs[15:] == [1] * 25 and tokens[-1] == "[SEP]"
    # a long text is cut to a window around the mention
    ids, _ = encoder.pair("啊" * 100 + "苹果" + "啊" * 100, 100, "苹果", "描述", maxlen=40)
    tokens = tokenizer.ids_to_tokens(ids)
    assert "【" in tokens and tokens.index("】") - tokens.index("【") == 3 and len(ids) <= 40
    assert encoder("a b") == [encoder.cls, tokenizer.token_to_id("a"), encoder.unk,
                              tokenizer.token_to_id("b"), encoder.sep]


# ---------------------------------------------------------------------------
# end to end on the sample (a few steps of the shipped small BERT)
# ---------------------------------------------------------------------------


def test_help(el, capsys):
    with pytest.raises(SystemExit) as info:
        el.parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data-dir", "--model-dir", "--epochs", "--threshold", "--predictions",
                 "--min-link-prob", "--min-occurrences", "--min-alias-count", "--no-mention-stats"):
        assert flag in out


def test_main_end_to_end(el, kb, tmp_path):
    results_path, pred_path = tmp_path / "el.json", tmp_path / "pred.json"
    results = el.main(["--epochs", "1", "--limit", "12", "--batch-size", "16", "--maxlen", "48",
                       "--output", str(tmp_path / "models"), "--results", str(results_path),
                       "--predictions", str(pred_path)])
    saved = json.loads(results_path.read_text(encoding="utf-8"))
    assert saved["texts"] == {"train": 12, "valid": 3, "dev": 12}
    assert saved["predict_nil"] is True and saved["entities"] == 40
    for key in ("linking", "linking_in_kb", "mentions", "gold_mention_linking"):
        assert 0.0 <= results["dev"][key]["f1"] <= 1.0
    assert results["dev"]["linking"]["gold"] == 16
    assert results["dev"]["gold_mention_linking"]["predicted"] == 16  # one answer per mention
    assert results["dev"]["candidate_recall"] == 1.0
    # the statistics input is on and the filter judged nothing (no string occurs in 5 texts)
    assert saved["mention_stats"] is True and saved["min_alias_count"] == 2
    assert saved["filtered_strings"] == 0 and results["dev"]["filtered_mentions"] == 0
    assert len(results["valid"]) == 1 and results["best_epoch"] == 1
    assert results["reload_diff"] <= 1e-4
    back = el.load_texts(str(pred_path), kb)  # well-formed predictions, in dev order
    assert [r["text_id"] for r in back] == [str(1001 + i) for i in range(12)]
