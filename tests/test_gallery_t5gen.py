"""Four gallery recipes and the vocabulary-trimming helper they brought.

* ``bert4keras.tokenizers.simplify``: the kept ids against a brute-force
  count of the SentencePiece library's own ids; the simplified tokenizer's
  ids against the original's mapped by hand; a T5 built with ``keep_tokens``
  from a mesh-TF checkpoint against the full model's logits at the kept ids.
* ``task_seq2seq_autotitle_csl_mt5.py`` (random tiny mT5, CSL sample, beam
  search), ``task_reading_comprehension_by_mlm.py`` (answers in ``[MASK]``
  slots, decoding constrained to the passage), ``basic_language_model_nezha_gen_gpt.py``
  and ``basic_language_model_cpm_lm.py`` (random checkpoints in the original
  formats; CPM's jieba + SentencePiece tokenizer): a tiny run of each.
"""

import collections
import json

import keras
import numpy as np
import pytest

from bert4keras.datasets import fetch
from bert4keras.tokenizers import SimplifiedTokenizer, SpTokenizer, corpus_keep_tokens

KYOTO = ("sentencepiece", "0.2.3", "test/kyoto_ja_unigram_8000.model")
TEXTS = ["基于深度学习的文本分类方法研究", "東京の天気は晴れです", "图像识别方法"]


@pytest.fixture(scope="module")
def sp():
    return SpTokenizer(fetch(*KYOTO), token_start=None, token_end="</s>")


# ---------------------------------------------------------------------------
# the library helper
# ---------------------------------------------------------------------------


def test_keep_tokens_match_a_brute_force_count(sp):
    raw = sp.sp_model  # the sentencepiece library itself, not our wrapper
    used = sorted({i for text in TEXTS for i in raw.encode(text)} | {raw.eos_id()})
    specials = ["<s>", "</s>", "<unk>"]  # T5's layout: pad(<s> here), eos, unk
    keep = corpus_keep_tokens(sp, TEXTS, startswith=specials)
    assert keep[:3] == [raw.piece_to_id(p) for p in specials] == [1, 2, 0]
    assert keep[3:] == [i for i in used if i not in (0, 1, 2)]
    # default specials: the tokenizer's own, in ascending id; extra tokens kept too
    assert corpus_keep_tokens(sp, TEXTS, tokens=["の"])[:3] == [0, 2, raw.piece_to_id("の")]
    texts = TEXTS + TEXTS[:1]
    counts = collections.Counter(i for t in texts for i in raw.encode(t) + [raw.eos_id()])
    assert corpus_keep_tokens(sp, texts, startswith=[], min_count=2) == sorted(
        i for i, n in counts.items() if n >= 2)
    with pytest.raises(ValueError, match="'<pad>' is not in the vocabulary"):
        corpus_keep_tokens(sp, TEXTS, startswith=["<pad>"])


def test_simplified_tokenizer_maps_ids(sp):
    raw = sp.sp_model
    tokenizer = SimplifiedTokenizer.from_corpus(sp, TEXTS[:2], startswith=["<s>", "</s>",
                                                                             "<unk>"])
    keep = tokenizer.keep_tokens
    new = {old: k for k, old in enumerate(keep)}
    assert tokenizer.vocab_size == len(keep) < sp.vocab_size
    for text in TEXTS:  # the third text has pieces that were not kept: <unk> (new id 2)
        expected = [new.get(i, 2) for i in raw.encode(text)] + [1]
        assert tokenizer.encode(text)[0] == expected
    ids = tokenizer.encode(TEXTS[0])[0]
    assert tokenizer.decode(ids) == sp.decode(raw.encode(TEXTS[0]))  # <unk> dropped by both
    assert tokenizer._token_end_id == 1 and tokenizer._token_unk_id == 2
    assert tokenizer.id_to_token(ids[0]) == raw.id_to_piece(raw.encode(TEXTS[0])[0])
    assert tokenizer.encode(TEXTS[0], maxlen=4)[0] == ids[:3] + [1]  # the original's truncation
    with pytest.raises(ValueError, match="lacks the unknown token '<unk>'"):
        SimplifiedTokenizer(sp, [1, 2, 5])
    with pytest.raises(ValueError, match="lists id 5 twice"):
        SimplifiedTokenizer(sp, [0, 5, 5])
    with pytest.raises(ValueError, match="id 8000, outside"):
        SimplifiedTokenizer(sp, [0, 8000])
    with pytest.raises(KeyError):
        tokenizer.id_to_token(len(keep))


def test_keep_tokens_t5_equals_full_model_columns(sp, tmp_path):
    """A mesh-TF mT5 loaded with ``keep_tokens`` computes the full model's
    logits at the kept ids (inputs renumbered), and its embedding rows are
    the checkpoint's rows read by TensorFlow's own reader."""
    import tensorflow as tf

    import release_kit
    from bert4keras.models import build_transformer_model

    config = dict(vocab_size=sp.vocab_size, hidden_size=16, num_hidden_layers=1,
                  num_attention_heads=2, attention_head_size=8, intermediate_size=24,
                  hidden_act=["gelu_new", "linear"], hidden_dropout_prob=0.0)
    config_path, ckpt = release_kit.write_random_checkpoint(str(tmp_path), config, "mt5.1.1",
                                                            "model.ckpt-0", seed=1)
    tokenizer = SimplifiedTokenizer.from_corpus(sp, TEXTS, startswith=["<s>", "</s>", "<unk>"])
    keep = tokenizer.keep_tokens
    full = build_transformer_model(config_path, ckpt, model="mt5.1.1", with_lm="linear")
    small = build_transformer_model(config_path, ckpt, model="mt5.1.1", with_lm="linear",
                                    keep_tokens=keep, return_keras_model=False)
    stored = tf.train.load_checkpoint(ckpt)
    for layer, name, axis in (("Embedding-Token", "shared/embedding", 0),
                              ("Decoder-Output-LM", "decoder/logits/kernel", 1)):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(small.layers[layer].weights[0]),
            np.take(stored.get_tensor(name), keep, axis=axis))
    # kept pieces other than the specials (old 0 is <unk> but T5's padding)
    n = len(keep)
    enc_new = np.array([list(range(3, min(n, 15))) + [1]], "int32")
    dec_new = np.array([[0] + list(range(n - 6, n))], "int32")
    enc_old, dec_old = (np.take(keep, a).astype("int32") for a in (enc_new, dec_new))
    assert 0 not in enc_old and 0 not in dec_old  # the start: new 0 = old 1 (<s>)
    want = full.predict([enc_old, dec_old], verbose=0)[..., keep]
    np.testing.assert_allclose(small.model.predict([enc_new, dec_new], verbose=0), want,
                               atol=1e-5)


# ---------------------------------------------------------------------------
# the recipes
# ---------------------------------------------------------------------------


def test_mt5_title_generation(tmp_path):
    import task_seq2seq_autotitle_csl_mt5 as recipe

    results = recipe.main(["--limit", "8", "--epochs", "1", "--batch-size", "8",
                           "--max-c-len", "32", "--max-t-len", "6", "--beams", "2",
                           "--work-dir", str(tmp_path), "--output", "", "--log-every", "0"])
    assert results["random_weights"] and results["test"]["count"] == 6
    for key in ("rouge-1", "rouge-2", "rouge-l", "bleu"):
        assert 0.0 <= results["test"][key] <= 1.0
    keep = json.load(open(tmp_path / "keep_tokens.json"))
    assert results["vocabulary"] == len(keep) < 8000 and keep[:3] == [1, 2, 0]
    assert np.isfinite(results["loss"]).all() and len(results["titles"]) == 6


def test_reading_comprehension_by_mlm(tmp_path):
    import task_reading_comprehension_by_mlm as recipe
    from bert4keras.tokenizers import Tokenizer

    results = recipe.main(["--limit", "8", "--epochs", "1", "--batch-size", "8",
                           "--max-p-len", "32", "--max-a-len", "8", "--log-every", "0"])
    assert 0.0 <= results["dev"]["em"] <= results["dev"]["f1"] <= 1.0
    contexts, examples = recipe.load_mrc_file(recipe.SAMPLE_DIR + "/dev.json", True)
    for example in examples[:8]:  # decoding never leaves the passage
        assert results["predictions"][example["id"]] in contexts[example["passage"]]

    tokenizer = Tokenizer(recipe.common.DEFAULT_DIR + "/vocab.txt", do_lower_case=True)
    questions = recipe.MaskedQuestions(tokenizer, ["甲乙丙乙丁"], 4, 32, 16)
    example = dict(question="问", passage=0, spans=[(1, 3)], answers=["乙丙"])
    ids = questions.inputs(example)
    assert ids[1:5] == [questions.mask] * 4 and ids[5] == questions.sep
    assert questions.targets(example) == [tokenizer.encode("乙丙")[0][1:]]
    p = questions.passage_ids(example)
    logits = np.zeros((4, tokenizer.vocab_size))
    logits[:, tokenizer.token_to_id("戊")] = 9.0  # not in the passage: never chosen
    logits[0, p[1]], logits[1, p[4]], logits[1, p[2]] = 5, 4, 3  # 乙 then 丁 (乙丁 exists)
    logits[2, questions.sep] = 1
    assert questions.answer(example, logits) == "乙丁"
    logits[1, p[4]] = 0  # 乙 then 丙 (ranked over 丁 now)
    assert questions.answer(example, logits) == "乙丙"


def test_nezha_gen_random_checkpoint_and_sampling(tmp_path):
    import tensorflow as tf

    import basic_language_model_nezha_gen_gpt as recipe

    results = recipe.main(["--work-dir", str(tmp_path), "--prompt", "今天", "--prompt",
                           "中国的首都", "--max-new-tokens", "4", "--n", "2"])
    assert results["random_weights"] and len(results["texts"]) == 2
    assert all(len(rows) == 2 and all(t.startswith(p) for t in rows)
               for p, rows in zip(["今天", "中国的首都"], results["texts"]))
    names = tf.train.load_checkpoint(results["checkpoint"]).get_variable_to_shape_map()
    assert "bert/encoder/layer_1/attention/self/query/kernel" in names  # Google BERT names
    assert "cls/predictions/output_bias" in names  # the LM head of the release
    assert not any("position_embeddings" in n for n in names)  # NEZHA: relative positions


def test_cpm_tokenizer_and_generation(tmp_path):
    import basic_language_model_cpm_lm as recipe

    results = recipe.main(["--work-dir", str(tmp_path), "--max-new-tokens", "3",
                           "--method", "greedy"])
    assert results["random_weights"] and len(results["texts"]) == 3
    tokenizer = recipe.cpm_tokenizer(results["spm"])
    text = "北京是中国的首都\n今天 天气"
    ids = tokenizer.encode(text)[0]
    assert tokenizer.token_to_id("<cls>") == 3 and 3 in ids  # the newline
    assert tokenizer.token_to_id(recipe.SPACE) in ids  # the space inside the text
    assert recipe.cpm_text(tokenizer.decode(ids)) == text
    for prompt, ids, rows in zip(results["prompts"], results["prompt_ids"], results["texts"]):
        assert ids == tokenizer.encode(prompt)[0]
        assert rows[0].startswith(recipe.cpm_text(tokenizer.decode(ids)))
