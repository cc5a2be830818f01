"""The LIC2020 reading-comprehension example: the official-metric scorer on
hand-computed cases, the window/offset mapping on the shipped sample, the
file checks, and a smoke run of ``main`` (shipped small BERT, 1 epoch)."""

import copy
import json
import os

import numpy as np
import pytest

from conftest import load_example

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EXAMPLES = os.path.join(REPO, "examples")
SAMPLE = os.path.join(EXAMPLES, "data", "dureader_robust_sample")
VOCAB = os.path.join(REPO, "checkpoints", "chinese_bert_small", "vocab.txt")
TEST_MAXLEN, TEST_STRIDE = 128, 64


@pytest.fixture(scope="module")
def mrc():
    return load_example("competition_lic2020_reading_comprehension")


@pytest.fixture(scope="module")
def tokenizer():
    from bert4keras.tokenizers import Tokenizer

    return Tokenizer(VOCAB, do_lower_case=True)


# ---------------------------------------------------------------------------
# scorer (official LIC2020 DuReader-robust evaluate.py)
# ---------------------------------------------------------------------------


def test_normalize_and_segment(mrc):
    assert mrc.normalize_answer("《三体》，刘慈欣（著）") == "三体刘慈欣著"
    assert mrc.normalize_answer("USB Type-C") == "usb type-c"  # '-' and spaces are kept
    assert mrc.segment_answer("gpu 3090显卡") == ["gpu 3090", "显", "卡"]
    assert mrc.segment_answer("a=b中") == ["a", "=", "b", "中"]
    assert mrc.longest_common_run(list("大韩民国"), list("大国")) == 1  # contiguous only
    assert mrc.longest_common_run(list("北京天安门"), list("天安门广场")) == 3


def test_scores_perfect_partial_and_several_golds(mrc):
    assert mrc.answer_em("白玉兰", ["白玉兰"]) == 1.0
    assert mrc.answer_f1("白玉兰", ["白玉兰"]) == 1.0
    # 天安门 shared: P = R = 3/5
    assert mrc.answer_f1("天安门广场", ["北京天安门"]) == pytest.approx(0.6)
    # common characters 大, 国 but the longest common *run* is 1: P = 1/2, R = 1/4
    assert mrc.answer_f1("大国", ["大韩民国"]) == pytest.approx(1 / 3)
    # 'gpu 3090' is one unit, so only 显卡 is shared: P = R = 2/3
    assert mrc.answer_f1("3090显卡", ["GPU 3090显卡"]) == pytest.approx(2 / 3)
    assert mrc.answer_f1("无关", ["白玉兰"]) == 0.0
    # punctuation from the official list does not count
    assert mrc.answer_em("三体", ["《三体》"]) == 1.0
    # several golds: the maximum; 周杰 vs 周杰伦 P=1, R=2/3 -> 0.8, vs 杰伦 -> 0.5
    golds = ["周杰伦", "杰伦"]
    assert mrc.answer_em("杰伦", golds) == 1.0
    assert mrc.answer_em("周杰", golds) == 0.0
    assert mrc.answer_f1("周杰", golds) == pytest.approx(0.8)

    gold = {"q1": ["白玉兰"], "q2": ["北京天安门"], "q3": ["周杰伦", "杰伦"],
            "q4": ["88个"]}
    assert mrc.mrc_scores(gold, {"q1": "白玉兰", "q2": "北京天安门", "q3": "杰伦",
                                 "q4": "88个"}) == dict(em=1.0, f1=1.0, total=4, skip=0)
    # q4 has no prediction: it counts 0 and as skipped, the average is over all 4
    scores = mrc.mrc_scores(gold, {"q1": "白玉兰", "q2": "天安门广场", "q3": "周杰"})
    assert scores["em"] == pytest.approx(1 / 4)
    assert scores["f1"] == pytest.approx((1 + 0.6 + 0.8 + 0) / 4)
    assert (scores["total"], scores["skip"]) == (4, 1)
    assert mrc.format_scores(scores) == '{"F1": "60.000", "EM": "25.000", "TOTAL": 4, "SKIP": 1}'
    with pytest.raises(ValueError, match="no gold answer"):
        mrc.mrc_scores({"q": []}, {"q": "x"})


# ---------------------------------------------------------------------------
# windows and offsets
# ---------------------------------------------------------------------------


def test_window_starts(mrc):
    assert mrc.window_starts(10, 4, 3) == [0, 3, 6]
    assert mrc.window_starts(4, 4, 3) == [0]
    assert mrc.window_starts(0, 4, 3) == [0]
    assert mrc.window_starts(10, 4, 9) == [0, 4, 8]  # stride cut to the window size
    for n, size, stride in [(449, 100, 50), (37, 8, 3), (5, 1, 1)]:
        starts = mrc.window_starts(n, size, stride)
        covered = set()
        for s in starts:
            covered.update(range(s, min(s + size, n)))
        assert covered == set(range(n)) and starts[-1] + size >= n


@pytest.mark.parametrize("name", ["train", "dev"])
def test_offsets_recover_every_gold_answer(mrc, tokenizer, name):
    contexts, examples = mrc.load_mrc_file(os.path.join(SAMPLE, name + ".json"), True)
    assert len(examples) >= 14
    featurizer = mrc.Featurizer(tokenizer, contexts, TEST_MAXLEN, TEST_STRIDE, 64)
    most_windows, late_answers = 0, 0
    for example in examples:
        passage = featurizer.passage(example["passage"])
        for (start, end), text in zip(example["spans"], example["answers"]):
            assert passage.text(*passage.token_span(start, end)) == text
        span = passage.token_span(*example["spans"][0])
        windows = featurizer.windows(example, span)
        most_windows = max(most_windows, len(windows))
        hits = [w for w in windows if w["start"]]
        assert hits, example["id"]  # some window holds the whole answer
        for w in windows:
            ids = w["token_ids"]
            assert len(ids) <= TEST_MAXLEN and len(w["segment_ids"]) == len(ids)
            assert ids[0] == featurizer.cls_id and ids[w["offset"] - 1] == featurizer.sep_id
            assert ids[w["offset"]:w["offset"] + w["length"]] == \
                passage.token_ids[w["window_start"]:w["window_start"] + w["length"]]
        for w in hits:  # back from window positions to the original text
            first = w["start"] - w["offset"] + w["window_start"]
            last = w["end"] - w["offset"] + w["window_start"]
            assert passage.text(first, last) == example["answers"][0]
        late_answers += all(w["window_start"] > 0 for w in hits)
    assert most_windows >= 3  # the long passage needs several windows
    assert late_answers >= 1  # an answer found only beyond the first window
    windows, stats = featurizer.training_windows(examples)
    assert stats["dropped_answers"] == stats["inexact_answers"] == 0
    assert stats["windows"] == len(windows) > len(examples)


def test_each_epoch_draws_one_gold_answer_per_question(mrc, tokenizer):
    """A question with two gold answers: ordered passes train on the first,
    shuffled passes (training epochs) on a random one, the same for all the
    question's windows; both answers are drawn over a few epochs."""
    context = ("北京是中国的首都，也是一座历史文化名城，有故宫和长城。"
               "上海是中国最大的城市，位于长江入海口，港口繁忙。")
    first, second = context.index("北京"), context.index("上海")
    example = dict(id="q1", question="中国的城市有哪些", passage=0,
                   answers=["北京", "上海"], spans=[(first, first + 2), (second, second + 2)])
    featurizer = mrc.Featurizer(tokenizer, [context], 32, 8, 16)
    windows, stats = featurizer.training_windows([example])
    assert stats["dropped_answers"] == stats["other_answers_dropped"] == 0
    assert len(windows) >= 2 and all(len(w["targets"]) == 2 for w in windows)
    by_ids = {tuple(w["token_ids"]): w for w in windows}
    assert len(by_ids) == len(windows)
    generator = mrc.WindowGenerator(windows, batch_size=len(windows), maxlen=32, seed=1)

    def answers(random):
        (x, y), = list(generator.__iter__(random=random))
        texts = set()
        for ids, (start, end) in zip(np.asarray(x[0]), y):
            w = by_ids[tuple(int(i) for i in ids[:len(np.trim_zeros(ids, "b"))])]
            if start:  # back to the text through the window's offsets
                texts.add(featurizer.passage(0).text(start - w["offset"] + w["window_start"],
                                                     end - w["offset"] + w["window_start"]))
        return frozenset(texts)

    assert answers(False) == {"北京"}
    assert {answers(True) for _ in range(8)} == {frozenset({"北京"}), frozenset({"上海"})}


def test_ascii_answer_keeps_original_case_and_spaces(mrc, tokenizer):
    passage = mrc.Passage("由荷兰程序员Guido van Rossum设计", tokenizer)
    start = passage.context.index("Guido")
    span = passage.token_span(start, start + len("Guido van Rossum"))
    assert passage.text(*span) == "Guido van Rossum"


def test_best_span(mrc):
    start = np.array([0.0, 5.0, 1.0, 4.0])
    end = np.array([0.0, 1.0, 0.0, 6.0])
    valid = np.ones(4, bool)
    assert mrc.best_span(start, end, valid, 30) == (11.0, 1, 3)
    assert mrc.best_span(start, end, valid, 2) == (10.0, 3, 3)  # spans of <= 2 tokens
    valid[3] = False
    assert mrc.best_span(start, end, valid, 30) == (6.0, 1, 1)
    assert mrc.best_span(start, end, np.zeros(4, bool), 30) is None


def test_maxlen_checks(mrc, tokenizer):
    passage = mrc.Passage("一二三四五", tokenizer)
    with pytest.raises(ValueError, match="no room for the passage"):
        mrc.make_windows([5] * 10, passage, 13, 4, 2, 3)
    config = os.path.join(REPO, "checkpoints", "chinese_bert_small", "bert_config.json")
    with pytest.raises(ValueError, match="max_position_embeddings=512"):
        mrc.check_maxlen(config, 600)


# ---------------------------------------------------------------------------
# malformed files
# ---------------------------------------------------------------------------


def _sample_doc():
    with open(os.path.join(SAMPLE, "dev.json"), encoding="utf-8") as f:
        return json.load(f)


def _write(tmp_path, doc, name="bad.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False),
                    encoding="utf-8")
    return str(path)


def test_malformed_files(mrc, tmp_path):
    doc = _sample_doc()
    qa = doc["data"][0]["paragraphs"][1]["qas"][1]

    bad = copy.deepcopy(doc)
    del bad["data"][0]["paragraphs"][1]["qas"][1]["id"]
    path = _write(tmp_path, bad)
    with pytest.raises(mrc.MrcFormatError, match=r"bad\.json: data\[0\]\.paragraphs\[1\]\.qas\[1\]"
                                                  r": question without an 'id'"):
        mrc.load_mrc_file(path)

    bad = copy.deepcopy(doc)
    bad["data"][0]["paragraphs"][1]["qas"][1]["answers"][0]["answer_start"] += 2
    path = _write(tmp_path, bad)
    with pytest.raises(mrc.MrcFormatError) as err:
        mrc.load_mrc_file(path)
    message = str(err.value)
    assert path in message and qa["id"] in message and "answers[0]" in message
    assert "does not point at the answer text '高压锅'" in message

    bad = copy.deepcopy(doc)
    first = doc["data"][0]["paragraphs"][0]["qas"]
    bad["data"][0]["paragraphs"][0]["qas"][1]["id"] = first[0]["id"]
    with pytest.raises(mrc.MrcFormatError, match="repeated question id"):
        mrc.load_mrc_file(_write(tmp_path, bad))

    with pytest.raises(mrc.MrcFormatError, match=r"not valid JSON \(line 1"):
        mrc.load_mrc_file(_write(tmp_path, '{"data": [}'))
    with pytest.raises(mrc.MrcFormatError, match="'data' list"):
        mrc.load_mrc_file(_write(tmp_path, {"version": "1.1"}))
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        mrc.load_mrc_file(str(tmp_path / "nowhere.json"))

    # a test file: answers absent -- fine to predict, an error where answers are needed
    unanswered = copy.deepcopy(doc)
    for paragraph in unanswered["data"][0]["paragraphs"]:
        for q in paragraph["qas"]:
            del q["answers"]
    path = _write(tmp_path, unanswered, "test.json")
    _, examples = mrc.load_mrc_file(path)
    assert len(examples) == 14 and all(e["answers"] == [] for e in examples)
    with pytest.raises(mrc.MrcFormatError, match="question without answers"):
        mrc.load_mrc_file(path, require_answers=True)


def test_help(mrc, capsys):
    with pytest.raises(SystemExit) as exit_info:
        mrc.parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--train", "--dev", "--predict", "--maxlen", "--doc-stride", "--model-dir"):
        assert flag in out


# ---------------------------------------------------------------------------
# smoke run: train 1 epoch, score the sample dev, answer a file without answers,
# then --load the saved model and get the same answers
# ---------------------------------------------------------------------------


def test_example_smoke(mrc, tmp_path):
    unanswered = _sample_doc()
    for paragraph in unanswered["data"][0]["paragraphs"]:
        for q in paragraph["qas"]:
            del q["answers"]
    test_file = _write(tmp_path, unanswered, "test.json")
    common = ["--maxlen", str(TEST_MAXLEN), "--doc-stride", str(TEST_STRIDE), "--limit", "10",
              "--batch-size", "4", "--predict", test_file]
    results = mrc.main(common + ["--epochs", "1", "--output", str(tmp_path / "mrc.keras"),
                                 "--results", str(tmp_path / "results.json"),
                                 "--predict-output", str(tmp_path / "pred.json"),
                                 "--dev-predictions", str(tmp_path / "dev_pred.json")])
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["dev"] == results["dev"] and results["dev"]["total"] == 10
    assert 0.0 <= results["dev"]["em"] <= results["dev"]["f1"] <= 1.0
    assert results["train"]["questions"] == 10 and results["reload_diff"] <= 1e-4
    predictions = json.loads((tmp_path / "pred.json").read_text(encoding="utf-8"))
    _, examples = mrc.load_mrc_file(test_file)
    assert list(predictions) == [e["id"] for e in examples[:10]]
    assert all(isinstance(a, str) and a for a in predictions.values())
    # the dev file holds the same questions, so the answers agree
    assert json.loads((tmp_path / "dev_pred.json").read_text(encoding="utf-8")) == predictions

    again = mrc.main(common + ["--load", str(tmp_path / "mrc.keras"),
                               "--predict-output", str(tmp_path / "pred2.json")])
    assert json.loads((tmp_path / "pred2.json").read_text(encoding="utf-8")) == predictions
    assert again["dev"] == results["dev"] and again["train"] is None
