"""The UniLM seq2seq recipes of the gallery (issue 15): title generation, question-
answer generation, reading comprehension by generation, Ape210k math word
problems, and their shared kit ``examples/seq2seq_kit.py``.

Scores are checked against independent references (NLTK's ``sentence_bleu``
and the ``rouge`` package, values recorded below; NumPy for the loss); the
safe arithmetic evaluator on tricky and hostile expressions; the
substring-constrained decoder with a scripted model; every script end to end
on its sample for one eager step (``--eager``: no graph compilation)."""

import json
import math
import os

import numpy as np
import pytest

import seq2seq_kit as kit
import task_question_answer_generation_by_seq2seq as qag
import task_reading_comprehension_by_seq2seq as rc
import task_seq2seq_ape210k_math_word_problem as ape
import task_seq2seq_autotitle as autotitle
from common import DataFormatError

SMOKE = ["--epochs", "1", "--limit", "4", "--batch-size", "4", "--beams", "2", "--eager",
         "--log-every", "0", "--show", "1"]


# ---------------------------------------------------------------------------
# The kit: scores, loss, encoding
# ---------------------------------------------------------------------------

# (reference, hypothesis) -> BLEU from nltk 3.10.4 sentence_bleu(..., SmoothingFunction().method1)
# and ROUGE-1/2/L F from rouge 1.0.1 (which agrees with the clipped-count definition when no
# character repeats), on characters
REFERENCE_SCORES = [
    ("中国人民银行", "人民银行", 0.6065306597126334, 0.8, 0.75, 0.8),
    ("图像识别方法研究", "基于深度学习的图像识别", 0.23462350320528, 0.4210526315789474,
     0.3529411764705882, 0.4210526315789474),
    ("abc", "abd", 0.24028114141347542, 2 / 3, 0.5, 2 / 3),
    ("ab", "abcdef", 0.08633400213704504, 0.5, 1 / 3, 0.5),
]


@pytest.mark.parametrize("ref,hyp,bleu,r1,r2,rl", REFERENCE_SCORES)
def test_scores_match_nltk_and_rouge(ref, hyp, bleu, r1, r2, rl):
    ref, hyp = list(ref), list(hyp)
    assert kit.sentence_bleu(ref, hyp) == pytest.approx(bleu, abs=1e-12)
    assert kit.rouge_n(ref, hyp, 1) == pytest.approx(r1, abs=1e-7)
    assert kit.rouge_n(ref, hyp, 2) == pytest.approx(r2, abs=1e-7)
    assert kit.rouge_l(ref, hyp) == pytest.approx(rl, abs=1e-7)


def test_scores_count_repeats_and_average_over_all_texts():
    # clipped counts: "aa" in "aaa" matches twice (the rouge package's sets would say once)
    assert kit.rouge_n(list("aa"), list("aaa"), 1) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    scores = kit.generation_scores(["天气很好", "Deep Learning"], ["天气很好", ""])
    assert scores["count"] == 2
    for key in ("rouge-1", "rouge-2", "rouge-l", "bleu"):
        assert scores[key] == pytest.approx(0.5)  # an empty hypothesis scores 0
    assert kit.text_units(" Ab c") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 references but 1"):
        kit.generation_scores(["a", "b"], ["a"])


def test_target_mean_loss_is_the_masked_cross_entropy():
    pairs = [([2, 5, 6, 3], [7, 3]), ([2, 5, 3], [8, 9, 7, 3])]
    (tokens, segments), labels, weights = next(iter(
        kit.Seq2seqGenerator(pairs, batch_size=2, target_mean=True)))
    assert tokens.shape[1] % kit.BUCKET == 0 and weights.sum() == pytest.approx(1.0)
    # the weighted positions predict exactly the target tokens
    assert labels[weights > 0].tolist() == [7, 3, 8, 9, 7, 3]
    logits = np.random.default_rng(0).normal(size=tokens.shape + (12,)).astype("float32")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    mask = weights > 0
    expected = picked[mask].mean()  # sum(ce * mask) / sum(mask)
    loss = kit.seq2seq_loss(True)(labels, logits, sample_weight=weights)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    # the old weighting (unchanged for task_seq2seq_unilm.py): weights 1, Keras's mean
    (_, _), _, ones = next(iter(kit.Seq2seqGenerator(pairs, batch_size=2)))
    assert ones.sum() == 6


def test_encode_source_cuts_the_last_text_first():
    from bert4keras.tokenizers import Tokenizer

    tokenizer = Tokenizer(os.path.join(os.path.dirname(kit.common.HERE), "checkpoints",
                                       "chinese_bert_small", "vocab.txt"))
    ids = kit.encode_source(tokenizer, "一二三四五", "六七八九十", maxlen=10)
    assert len(ids) == 10 and tokenizer.decode(ids) == "一二三四五六七"
    assert kit.encode_target(tokenizer, "一二三四五", maxlen=4) == \
        tokenizer.encode("一二三")[0][1:]
    assert "".join(kit.split_passage("第一句。第二句很长，很长。", 6)) == "第一句。第二句很长，很长。"


# ---------------------------------------------------------------------------
# Ape210k: the safe evaluator
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,value", [
    ("x=(1/3)*90", 30), ("120*(1-25%)", 90), ("2(1/2)*4", 10), ("3**2", 9), ("2^3", 8),
    ("-3+5", 2), ("1/3+1/6", 0.5), ("x=(47.5*8)-(60.8*5)", 76), ("(3)/(2)", 1.5),
    ("25%", 0.25), ("4:5", 0.8), ("2**-3", 0.125), ("（1+2）×3÷9", 1), ("12.5%*8", 1),
])
def test_evaluator_computes_ape210k_notation(text, value):
    assert ape.evaluate_expression(text) == pytest.approx(value, abs=1e-12)


def test_evaluator_is_exact_and_compares_with_a_tolerance():
    assert ape.evaluate_expression("0.1+0.2") == ape.evaluate_expression("0.3")
    assert ape.evaluate_expression("1/3*3") == 1
    assert math.isclose(float(ape.evaluate_expression("2**0.5")), math.sqrt(2))
    assert ape.same_value(ape.evaluate_expression("10/3"), 3.3333333333)
    assert not ape.same_value(ape.evaluate_expression("10/3"), 3.33)


@pytest.mark.parametrize("text,reason", [
    ("__import__('os').system('ls')", "Call"), ("abs(-3)", "Call"), ("x", "Name"),
    ("(1).real", "Attribute"), ("[1, 2]", "List"), ("1<2", "Compare"), ("'7'", "not a number"),
    ("True+1", "not a number"), ("lambda: 1", "not an arithmetic"), ("1/0", "division by zero"),
    ("0**-1", "zero to a negative"), ("2**1000000", "exponent"), ("9**9**9", "exponent"),
    ("((10**64)**64)**64", "bits"), ("(-8)**(1/3)", "negative number"), ("3 % 2", "not an"),
    ("", "empty"), ("1+" * 300 + "1", "characters"),
])
def test_evaluator_rejects_everything_but_arithmetic(text, reason):
    with pytest.raises(ape.ExpressionError, match=reason):
        ape.evaluate_expression(text)
    assert ape.try_value(text) is None


def test_ape210k_normalisation_and_sample():
    assert ape.drop_redundant_brackets("(47.5*8)-(60.8*5)") == "47.5*8-60.8*5"
    assert ape.drop_redundant_brackets("100-(20+30)") == "100-(20+30)"
    assert ape.normalise_problem("绳长2(1/2)米，剪去(3/4)米", "x=2(1/2)-(3/4)", "(7)/(4)") == \
        ("绳长(2+1/2)米，剪去3/4米", "2+1/2-3/4", 1.75)
    assert ape.normalise_problem("?", "x=1+1", "3") is None  # equation and answer disagree
    for name in ("train", "valid", "test"):
        path = os.path.join(ape.SAMPLE_DIR, name + ".ape.json")
        with open(path, encoding="utf-8") as f:
            for line in f:
                assert set(json.loads(line)) == {"id", "original_text", "segmented_text",
                                                 "equation", "ans"}
        problems, left_out = ape.load_problems(path)
        assert problems and left_out == 0


def test_ape210k_file_errors(tmp_path):
    path = tmp_path / "bad.ape.json"
    path.write_text('{"id": "1", "original_text": "1+1=?", "equation": "x=1+1", "ans": "2"}\n'
                    '{"id": "2", "original_text": "?", "ans": "2"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.ape.json:2: missing field 'equation'"):
        ape.load_problems(str(path))


def test_ape210k_smoke(tmp_path):
    results = ape.main(SMOKE + ["--max-source", "48", "--max-target", "12",
                                "--results", str(tmp_path / "ape.json")])
    assert results["problems"] == {"train": 4, "valid": 4, "test": 4}
    assert 0.0 <= results["test"]["accuracy"] <= results["test"]["computable"] <= 1.0
    assert json.loads((tmp_path / "ape.json").read_text())["test"]["count"] == 4


# ---------------------------------------------------------------------------
# Title generation
# ---------------------------------------------------------------------------


def test_title_readers(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("标题一\t正文一\nto title\t摘要二\t标题二\n", encoding="utf-8")
    assert autotitle.read_pairs(str(tsv)) == [("正文一", "标题一"), ("摘要二", "标题二")]
    jsonl = tmp_path / "csl_title_dev.json"
    jsonl.write_text(json.dumps({"id": 7, "title": "标题", "abst": "摘要"}, ensure_ascii=False)
                     + "\n", encoding="utf-8")
    assert autotitle.read_pairs(str(jsonl)) == [("摘要", "标题")]
    news = tmp_path / "THUCNews" / "科技"
    news.mkdir(parents=True)
    (news / "1.txt").write_text("新闻标题\n\n第一段。\n第二段。\n", encoding="utf-8")
    (news / "2.txt").write_text("只有标题\n", encoding="utf-8")
    assert autotitle.read_pairs(str(tmp_path / "THUCNews")) == [("第一段。\n第二段。", "新闻标题")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("标题\t正文\n只有一列\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="bad.tsv:2: expected 'title<TAB>content'"):
        autotitle.read_pairs(str(bad))
    pairs = {k: autotitle.read_pairs(os.path.join(autotitle.SAMPLE_DIR, k + ".tsv"))
             for k in ("train", "dev", "test")}
    assert [len(v) for v in pairs.values()] == [24, 6, 6]


def test_autotitle_smoke(tmp_path):
    results = autotitle.main(SMOKE + ["--max-source", "32", "--max-target", "8",
                                      "--results", str(tmp_path / "title.json")])
    assert results["pairs"] == {"train": 4, "dev": 4, "test": 4}
    for key in ("rouge-1", "rouge-2", "rouge-l", "bleu"):
        assert 0.0 <= results["test"][key] <= 1.0
    assert len(results["history"]) == 1 and (tmp_path / "title.json").exists()


# ---------------------------------------------------------------------------
# Reading comprehension: answers constrained to the passage
# ---------------------------------------------------------------------------


class ScriptedModel:
    """Stands in for the UniLM model: the same next-token logits everywhere,
    favouring ``ranking`` in order; a source holding token 4 ("no answer
    here") favours [SEP] (id 3) instead."""

    def __init__(self, ranking, vocab=12):
        self.logits = np.full(vocab, -10.0)
        for rank, token in enumerate(ranking):
            self.logits[token] = 10.0 - rank

    def __call__(self, inputs, training=False):
        tokens = np.asarray(inputs[0])
        out = np.tile(self.logits, tokens.shape + (1,))
        for row, ids in enumerate(tokens):
            if 4 in ids:
                out[row, :, :] = -10.0
                out[row, :, 3] = 10.0
        return out


def test_continuations():
    assert rc.continuations([5, 6, 7, 6, 8], [6]) == {7, 8}
    assert rc.continuations([5, 6, 7], [6, 7]) == set()
    assert rc.continuations([5, 6, 7], [7, 5]) is None
    assert rc.continuations([5, 6], []) == {5, 6}


@pytest.mark.parametrize("beams", [1, 3])
def test_extractive_decoding_stays_inside_the_passage(beams):
    # the model prefers token 9 (not in the passage 5 6 7), then 6, 7, [SEP]
    model = ScriptedModel([9, 6, 7, 3, 5])
    source = [2, 5, 6, 7, 3, 8, 3]  # [CLS] 5 6 7 [SEP] question [SEP]
    free = rc.PieceVotingDecoder(model, end_id=3, maxlen=4, extractive=False)
    assert free.answer([source], beams) == [9, 9, 9, 9]
    extractive = rc.PieceVotingDecoder(model, end_id=3, maxlen=4)
    assert extractive.answer([source], beams) == [6, 7]  # then only [SEP] continues 6 7
    # a piece that says "no answer" (token 4 makes the scripted model start with [SEP]) is
    # dropped; the answer comes from the other piece
    other = [2, 4, 9, 3, 8, 3]
    assert extractive.answer([other, source], beams) == [6, 7]
    assert extractive.answer([other], beams) == []


def test_reading_comprehension_smoke(tmp_path):
    results = rc.main(SMOKE + ["--max-source", "64", "--max-passage", "64", "--max-target", "6",
                               "--eval-limit", "2", "--results", str(tmp_path / "rc.json")])
    dev = results["dev"]
    assert dev["total"] == 4 and 0.0 <= dev["em"] <= dev["f1"] <= 1.0
    assert dev["in_passage"] == 1.0  # extractive decoding
    assert results["training_sequences"] >= 4


# ---------------------------------------------------------------------------
# Question-answer generation
# ---------------------------------------------------------------------------


def test_question_answer_generation_smoke(tmp_path):
    triples, missed = qag.load_triples(os.path.join(qag.SAMPLE_DIR, "train.json"), 48)
    assert missed == 0 and all(answer in passage for passage, _, answer in triples)
    out = tmp_path / "pairs.json"
    results = qag.main(SMOKE + ["--max-source", "64", "--max-passage", "48", "--max-target", "8",
                                "--eval-limit", "2",
                                "--max-answer", "6", "--pairs-output", str(out)])
    dev = results["dev"]
    assert dev["count"] == 4
    for key in ("rouge-1", "rouge-l", "bleu", "answer_in_passage", "answer_f1"):
        assert 0.0 <= dev[key] <= 1.0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4 and set(lines[0]) == {"passage", "answer", "question"}
