"""The sequence-labelling examples: their scorers on hand-computed cases, and
a smoke run of each script's ``main`` (random init, a few sentences, 1 epoch)."""

import json

import pytest

from conftest import load_example




@pytest.fixture(scope="module")
def cws():
    return load_example("task_sequence_labeling_cws_crf")


@pytest.fixture(scope="module")
def ner():
    return load_example("task_sequence_labeling_ner_crf")


# ---------------------------------------------------------------------------
# word segmentation scorer
# ---------------------------------------------------------------------------


def test_cws_tags_round_trip(cws):
    words = ["迈向", "充满", "希望", "的", "新", "世纪", "一九九八年"]
    tags = cws.words_to_tags(words)
    assert tags[:7] == ["B", "E", "B", "E", "B", "E", "S"]
    assert tags[-5:] == ["B", "M", "M", "M", "E"]
    assert cws.tags_to_words("".join(words), tags) == words
    # lenient reading of ill-formed tags: a new word after E/S or at B/S
    assert cws.tags_to_words("abcde", ["M", "M", "E", "B", "B"]) == ["abc", "d", "e"]
    # a piece cut through words gets well-formed tags at its ends
    assert cws.chunk_tags(["M", "E", "B", "M"]) == ["B", "E", "B", "E"]
    assert cws.chunk_tags(["E", "S", "B"]) == ["S", "S", "S"]
    assert cws.chunk_tags(["M"]) == ["S"]


def test_cws_long_sentences_are_cut_into_pieces(cws):
    words = ["我们", "，"] * 40 + ["好"]
    pieces = cws.training_pieces([words], maxlen=20)
    assert "".join(p for p, _ in pieces) == "".join(words)
    assert all(len(p) <= 18 for p, _ in pieces) and len(pieces) > 1
    assert all(p.endswith("，") for p, _ in pieces[:-1])  # cut after punctuation
    tags = [cws.TAGS[i] for _, t in pieces for i in t]
    assert tags == cws.words_to_tags(words)


def test_cws_scores_perfect_and_partial(cws):
    gold = [["我", "爱", "北京", "天安门"], ["的", "的"]]
    perfect = cws.cws_scores(gold, gold)
    assert perfect["precision"] == perfect["recall"] == perfect["f1"] == 1.0
    # predicted spans (0,1) (1,4) (4,7) vs gold (0,1) (1,2) (2,4) (4,7): 2 correct of
    # 3 predicted and 4 gold; '的的' as one word matches neither gold '的' (spans
    # are compared, not strings)
    predicted = [["我", "爱北京", "天安门"], ["的的"]]
    scores = cws.cws_scores(gold, predicted, train_words={"我", "爱", "北京", "的"})
    assert scores["correct"] == 2 and scores["predicted_words"] == 4
    assert scores["gold_words"] == 6
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 6)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert scores["oov_rate"] == pytest.approx(1 / 6)
    assert scores["oov_recall"] == 1.0  # 天安门
    assert scores["iv_recall"] == pytest.approx(1 / 5)  # 我 of 我 爱 北京 的 的
    with pytest.raises(ValueError, match="do not spell"):
        cws.cws_scores([["ab"]], [["a"]])


# ---------------------------------------------------------------------------
# NER scorer
# ---------------------------------------------------------------------------


def test_ner_entities_from_tags(ner):
    tags = ["B-PER", "E-PER", "O", "S-LOC", "B-ORG", "M-ORG", "M-ORG", "E-ORG"]
    assert ner.tags_to_entities(tags) == {("PER", 0, 1), ("LOC", 3, 3), ("ORG", 4, 7)}
    # fragments and type changes are not entities
    assert ner.tags_to_entities(["M-PER", "E-PER", "B-LOC", "E-ORG", "B-PER"]) == set()
    assert ner.tags_to_entities(["B-LOC", "S-PER", "E-LOC"]) == {("PER", 1, 1)}
    assert len(ner.TAGS) == 13 and ner.TAGS[0] == "O"


def test_ner_scores_perfect_and_partial(ner):
    gold = [{("PER", 0, 1), ("LOC", 3, 4)}, {("ORG", 2, 5), ("PER", 7, 8)}]
    perfect = ner.ner_scores(gold, gold)
    assert all(perfect[k]["f1"] == 1.0 for k in ("overall", "PER", "LOC", "ORG"))
    # sentence 1: PER right, LOC boundary wrong, a spurious ORG; sentence 2: both missed
    predicted = [{("PER", 0, 1), ("LOC", 3, 3), ("ORG", 5, 6)}, set()]
    scores = ner.ner_scores(gold, predicted)
    overall = scores["overall"]
    assert (overall["gold"], overall["predicted"], overall["correct"]) == (4, 3, 1)
    assert overall["precision"] == pytest.approx(1 / 3)
    assert overall["recall"] == pytest.approx(1 / 4)
    assert overall["f1"] == pytest.approx(2 / 7)
    assert scores["PER"]["precision"] == 1.0 and scores["PER"]["recall"] == 0.5
    assert scores["PER"]["f1"] == pytest.approx(2 / 3)
    assert scores["LOC"]["precision"] == scores["LOC"]["recall"] == scores["LOC"]["f1"] == 0.0
    assert scores["ORG"]["predicted"] == 1 and scores["ORG"]["gold"] == 1
    assert scores["ORG"]["f1"] == 0.0


def test_load_msra_ner():
    from bert4keras.datasets import load_msra_ner

    data = load_msra_ner()
    assert len(data["train"]) == 50289 and len(data["test"]) == 5000
    assert sum(len(c) for c, _ in data["test"]) == 189018
    text, tags = data["train"][0]
    assert len(text) == len(tags) and set(tags) <= {"O", "B-LOC", "M-LOC", "E-LOC", "S-LOC",
                                                    "B-PER", "M-PER", "E-PER", "S-PER",
                                                    "B-ORG", "M-ORG", "E-ORG", "S-ORG"}
    entities = sum(tags.count("S-PER") + tags.count("B-PER") for _, tags in data["test"])
    assert entities > 1000


# ---------------------------------------------------------------------------
# smoke runs (one batch each: a single traced train step)
# ---------------------------------------------------------------------------

SMOKE = ["--random-init", "--limit", "24", "--epochs", "1", "--batch-size", "32"]


def test_cws_example_smoke(cws, tmp_path):
    results_path = tmp_path / "cws.json"
    results = cws.main(SMOKE + ["--output", str(tmp_path / "cws.keras"),
                                "--results", str(results_path), "--crf-lr-multiplier", "10"])
    assert json.loads(results_path.read_text())["test"]["f1"] == results["test"]["f1"]
    assert results["sentences"] == {"train": 24, "valid": 24, "test": 24}
    assert 0.0 <= results["test"]["f1"] <= 1.0 and results["test"]["gold_words"] > 100
    assert results["reload_diff"] <= 1e-4 and results["crf_lr_multiplier"] == 10


@pytest.mark.parametrize("head", ["crf", "globalpointer"])
def test_ner_example_smoke(ner, head, tmp_path):
    results_path = tmp_path / "ner.json"
    results = ner.main(SMOKE + ["--head", head, "--head-size", "16",
                                "--output", str(tmp_path / "ner.keras"),
                                "--results", str(results_path)])
    saved = json.loads(results_path.read_text())
    assert saved["head"] == head and set(saved["test"]) == {"overall", "PER", "LOC", "ORG"}
    assert 0.0 <= results["test"]["overall"]["f1"] <= 1.0
    assert results["test"]["overall"]["gold"] > 0
    assert results["reload_diff"] <= 1e-4
