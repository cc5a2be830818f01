"""bert4keras 0.11.5's ``bert4keras.tokenizers``, called the 0.11.5 way.

Every public name of 0.11.5's module with 0.11.5's signatures.  Expected
values are worked out by hand from 0.11.5's documented semantics (greedy
WordPiece, longest-sequence-first truncation, ``S*E*E`` pairs, ...) on the
shipped Chinese vocabulary ``checkpoints/chinese_bert_small/vocab.txt``; ids
are read off that file's line numbers here, without ``load_vocab``.  For
SentencePiece the ``sentencepiece`` library gives the pieces.  The last test
runs a small old-style preprocessing script in a fresh interpreter.
"""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest

from bert4keras import datasets
from bert4keras.tokenizers import SpTokenizer, Tokenizer, TokenizerBase, load_vocab, save_vocab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_VOCAB = os.path.join(ROOT, "checkpoints", "chinese_bert_small", "vocab.txt")


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


IDS = {token: i for i, token in enumerate(_lines(SMALL_VOCAB))}


def ids_of(tokens):
    return [IDS[t] for t in tokens]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(SMALL_VOCAB, do_lower_case=True)


# ---------------------------------------------------------------------------
# names and signatures
# ---------------------------------------------------------------------------


def _params(func):
    return [(p.name, p.default) for p in inspect.signature(func).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def test_signatures_are_those_of_0_11_5():
    empty = inspect.Parameter.empty
    assert _params(load_vocab) == [("dict_path", empty), ("encoding", "utf-8"),
                                   ("simplified", False), ("startswith", None)]
    assert _params(save_vocab) == [("dict_path", empty), ("token_dict", empty),
                                   ("encoding", "utf-8")]
    assert _params(TokenizerBase.__init__) == [
        ("self", empty), ("token_start", "[CLS]"), ("token_end", "[SEP]"),
        ("pre_tokenize", None), ("token_translate", None)]
    assert _params(Tokenizer.__init__)[:4] == [
        ("self", empty), ("token_dict", empty), ("do_lower_case", False), ("word_maxlen", 200)]
    assert _params(SpTokenizer.__init__)[:2] == [("self", empty), ("sp_model_path", empty)]
    for cls in (TokenizerBase, Tokenizer, SpTokenizer):
        assert _params(cls.encode) == [
            ("self", empty), ("first_text", empty), ("second_text", None), ("maxlen", None),
            ("pattern", "S*E*E"), ("truncate_from", "right")]
        assert _params(cls.tokenize) == [("self", empty), ("text", empty), ("maxlen", None)]
        for name in ("token_to_id", "tokens_to_ids", "id_to_token", "ids_to_tokens", "decode"):
            assert callable(getattr(cls, name))
    assert _params(Tokenizer.decode) == [("self", empty), ("ids", empty), ("tokens", None)]
    assert _params(Tokenizer.rematch) == [("self", empty), ("text", empty), ("tokens", empty)]
    for name in ("stem", "_is_space", "_is_punctuation", "_cjk_punctuation",
                 "_is_cjk_character", "_is_control", "_is_special", "_is_redundant"):
        assert isinstance(inspect.getattr_static(Tokenizer, name), staticmethod), name


def test_names_0_11_5_imported_into_the_module():
    from bert4keras import snippets, tokenizers
    from bert4keras.tokenizers import is_string, truncate_sequences  # noqa: F401

    for name in ("is_string", "is_py2", "open", "convert_to_unicode", "truncate_sequences",
                 "lowercase_and_normalize"):
        assert getattr(tokenizers, name) is getattr(snippets, name)
    assert tokenizers.unicodedata.category("a") == "Ll"
    with pytest.raises(AttributeError):
        tokenizers.no_such_name  # noqa: B018


# ---------------------------------------------------------------------------
# load_vocab / save_vocab
# ---------------------------------------------------------------------------


def test_load_vocab_simplified_the_old_way(tmp_path):
    full_path = datasets.chinese_vocab_path()
    full = _lines(full_path)
    token_dict = load_vocab(full_path)
    assert isinstance(token_dict, dict) and token_dict["中"] == full.index("中") == 704
    start = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    new, keep = load_vocab(dict_path=full_path, simplified=True, startswith=start)
    # startswith first, in its order, then the file order without the tokens
    # that cannot come out of the tokenizer: [unused1] ... and <S> <T> contain
    # punctuation, so "!" (line 106) is next
    assert [new[t] for t in start] == [0, 1, 2, 3, 4] and keep[:5] == [0, 100, 101, 102, 103]
    assert new["!"] == 5 and keep[5] == 106
    for token in ("中", "，", "##s", "a", "\u2028"):
        assert keep[new[token]] == full.index(token)
    for token in ("[unused1]", "<S>", "##中", "...", "##，"):
        assert token in token_dict and token not in new
    # the shipped small model's vocabulary is that simplified vocabulary
    assert sorted(new, key=new.get) == _lines(SMALL_VOCAB)
    save_vocab(str(tmp_path / "vocab.txt"), new)
    assert _lines(tmp_path / "vocab.txt") == _lines(SMALL_VOCAB)
    assert load_vocab(str(tmp_path / "vocab.txt")) == new
    save_vocab(tmp_path / "gbk.txt", {"[UNK]": 1, "中": 0}, encoding="gbk")
    assert load_vocab(tmp_path / "gbk.txt", encoding="gbk") == {"中": 0, "[UNK]": 1}


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def test_tokenize_and_ids(tokenizer):
    tokens = ["[CLS]", "我", "爱", "北", "京", "！", "hello", "，", "world", "[SEP]"]
    assert tokenizer.tokenize("我爱北京！Hello，WORLD") == tokens
    assert tokenizer.tokens_to_ids(tokens) == ids_of(tokens)
    assert tokenizer.ids_to_tokens(ids_of(tokens)) == tokens
    # greedy longest-match-first WordPiece
    assert tokenizer.tokenize("unaffable") == ["[CLS]", "u", "##na", "##ff", "##able", "[SEP]"]
    assert tokenizer.tokenize("abcdefg")[1:-1] == ["abc", "##de", "##f", "##g"]
    # maxlen drops the last tokens before [SEP]
    assert tokenizer.tokenize("我爱北京！", maxlen=5) == ["[CLS]", "我", "爱", "北", "[SEP]"]
    assert tokenizer.token_to_id("没有这个词") == IDS["[UNK]"] == 1
    assert tokenizer.id_to_token(2) == "[CLS]"
    assert [tokenizer._token_pad_id, tokenizer._token_unk_id, tokenizer._token_start_id,
            tokenizer._token_end_id, tokenizer._token_mask_id] == [0, 1, 2, 3, 4]
    assert tokenizer._vocab_size == len(IDS) == 13585
    assert tokenizer._token_dict["中"] == IDS["中"] and tokenizer._token_dict_inv[2] == "[CLS]"
    # word_maxlen: a longer word is unknown
    short = Tokenizer(SMALL_VOCAB, do_lower_case=True, word_maxlen=5)
    assert short.encode("abcdefg")[0] == [2, 1, 3]
    # cased: upper-case letters are not in the vocabulary
    cased = Tokenizer(SMALL_VOCAB)
    assert cased.encode("Hello")[0] == [2, 1, 3]
    assert cased.encode("hello")[0] == [2, IDS["hello"], 3]
    # start/end tokens can be switched off
    bare = Tokenizer(SMALL_VOCAB, token_start=None, token_end=None)
    assert bare.encode("中文") == (ids_of(["中", "文"]), [0, 0])


FIRST, SECOND = "今天天气很好", "我们去公园玩吧"  # 6 + 2 and 7 + 2 tokens


@pytest.mark.parametrize("maxlen, pattern, truncate_from, first, second", [
    # no truncation
    (None, "S*E*E", "right", "今天天气很好", "我们去公园玩吧"),
    # S*E*E counts the second [CLS] while truncating (maxlen 8 -> 9): the
    # longer sequence loses one token at a time, the first one on ties:
    # (8, 9) -> (8, 8) -> (7, 8) -> ... -> (4, 5); then the [CLS] goes
    (8, "S*E*E", "right", "今天", "我们去"),
    (8, "S*E*E", "left", "很好", "园玩吧"),
    (8, "S*E*E", 2, "今好", "我玩吧"),  # position 2 popped each time
    # S*ES*E keeps the second [CLS]: (8, 9) -> ... -> (4, 4)
    (8, "S*ES*E", "right", "今天", "我们"),
    (17, "S*ES*E", "right", "今天天气很好", "我们去公园玩吧"),
])
def test_encode_pairs(tokenizer, maxlen, pattern, truncate_from, first, second):
    token_ids, segment_ids = tokenizer.encode(FIRST, SECOND, maxlen=maxlen, pattern=pattern,
                                              truncate_from=truncate_from)
    second_tokens = list(second) + ["[SEP]"]
    if pattern == "S*ES*E":
        second_tokens = ["[CLS]"] + second_tokens
    expected = ["[CLS]"] + list(first) + ["[SEP]"] + second_tokens
    assert token_ids == ids_of(expected)
    assert segment_ids == [0] * (len(first) + 2) + [1] * len(second_tokens)
    if maxlen is not None:
        assert len(token_ids) <= maxlen


def test_encode_single_and_token_lists(tokenizer):
    tokens = ["[CLS]"] + list(FIRST) + ["[SEP]"]
    assert tokenizer.encode(FIRST) == (ids_of(tokens), [0] * 8)
    truncated = ids_of(["[CLS]", "今", "天", "天", "[SEP]"])
    assert tokenizer.encode(FIRST, maxlen=5) == (truncated, [0] * 5)
    assert tokenizer.encode(FIRST, maxlen=5, truncate_from="left")[0] == ids_of(
        ["[CLS]", "气", "很", "好", "[SEP]"])
    # already tokenized input, as 0.11.5 accepted it
    first, second = tokenizer.tokenize(FIRST), tokenizer.tokenize(SECOND)
    assert tokenizer.encode(first, second, maxlen=8) == tokenizer.encode(FIRST, SECOND, maxlen=8)
    assert len(first) == 8  # not truncated in place (0.11.5 did)


def test_decode(tokenizer):
    text = "今天天气很好，我们去公园玩吧！"
    assert tokenizer.decode(tokenizer.encode(text)[0]) == text
    # CJK punctuation takes no space; ASCII words are separated by one
    assert tokenizer.decode(tokenizer.encode("Hello，WORLD")[0]) == "hello，world"
    assert tokenizer.decode(tokenizer.encode("Hello world")[0]) == "hello world"
    assert tokenizer.decode(None, tokens=["[CLS]", "u", "##na", "##ff", "##able", "[SEP]"]) == \
        "unaffable"
    # special tokens (and padding) are dropped; numbers keep their point
    ids = tokenizer.encode("北京is big 3.14")[0] + [0, 0]
    assert tokenizer.decode(ids) == "北京is big 3.14"


def test_rematch(tokenizer):
    text = "Hi 北京，café"
    tokens = tokenizer.tokenize(text)
    assert tokens == ["[CLS]", "hi", "北", "京", "，", "cafe", "[SEP]"]
    # indices of the characters of the original text, [] for [CLS]/[SEP]
    assert tokenizer.rematch(text, tokens) == [[], [0, 1], [3], [4], [5], [6, 7, 8, 9], []]
    tokens = tokenizer.tokenize("unaffable")
    assert tokenizer.rematch("unaffable", tokens) == [[], [0], [1, 2], [3, 4], [5, 6, 7, 8], []]
    # truncated tokens map to the start of the text
    assert tokenizer.rematch(text, tokenizer.tokenize(text, maxlen=4)) == [[], [0, 1], [3], []]


def test_static_methods():
    assert Tokenizer.stem("##ab") == "ab" and Tokenizer.stem("ab") == "ab"
    assert Tokenizer._is_space(" ") and Tokenizer._is_space("\t") and Tokenizer._is_space("\u3000")
    assert not Tokenizer._is_space("a")
    assert Tokenizer._is_punctuation("，") and Tokenizer._is_punctuation("~")
    assert not Tokenizer._is_punctuation("中")
    assert Tokenizer._is_cjk_character("中") and not Tokenizer._is_cjk_character("a")
    assert Tokenizer._is_control("\x01") and not Tokenizer._is_control("a")
    assert Tokenizer._is_special("[CLS]") and not Tokenizer._is_special("CLS")
    assert Tokenizer._is_redundant("##中") and Tokenizer._is_redundant("...")
    assert not Tokenizer._is_redundant("中") and not Tokenizer._is_redundant("##s")
    punctuation = Tokenizer._cjk_punctuation()
    assert len(punctuation) == 81 and len(set(punctuation)) == 81
    assert punctuation[:3] == "＂＃＄" and punctuation[-4:] == "！？｡。"
    assert all(ch in punctuation for ch in "，、《》「」【】“”…—·")
    assert not any(ch in punctuation for ch in ",.!?中")


def test_pre_tokenize_and_token_translate():
    token_dict = load_vocab(SMALL_VOCAB)
    for word in ("北京", "天安门"):
        token_dict[word] = len(token_dict)
    seen = []

    def pre_tokenize(text):
        seen.append(text)
        return text.replace("北京", " 北京 ").replace("天安门", " 天安门 ").split(" ")

    tokenizer = Tokenizer(token_dict, do_lower_case=True, pre_tokenize=pre_tokenize)
    text = "Hi北京天安门！"
    tokens = tokenizer.tokenize(text)
    # the callback gets the lower-cased text; vocabulary words stay whole
    assert seen == ["hi北京天安门！"]
    assert tokens == ["[CLS]", "hi", "北京", "天安门", "！", "[SEP]"]
    assert tokenizer.encode(text)[0] == [2, IDS["hi"], 13585, 13586, IDS["！"], 3]
    assert tokenizer.rematch(text, tokens) == [[], [0, 1], [2, 3], [4, 5, 6], [7], []]
    # _tokenize(text, False) leaves the callback out, as in 0.11.5
    assert tokenizer._tokenize("北京", False) == ["北", "京"]

    translated = Tokenizer(SMALL_VOCAB, token_translate={"，": ","})
    assert translated._token_translate_inv == {",": "，"}
    tokens = translated.tokenize("你好，世界")
    assert tokens == ["[CLS]", "你", "好", ",", "世", "界", "[SEP]"]
    # _tokenize gives the tokens before translation
    assert translated._tokenize("你好，世界") == ["你", "好", "，", "世", "界"]
    assert translated.encode("你好，世界")[0] == ids_of(tokens)
    # decode maps back through the dict (0.11.5's Tokenizer.decode did not)
    assert translated.decode(ids_of(tokens)) == "你好，世界"


def test_old_style_tokenizer_base_subclass():
    """A character tokenizer written against 0.11.5's TokenizerBase."""

    class CharTokenizer(TokenizerBase):
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c", "X"]

        def _tokenize(self, text):
            return list(text)

        def token_to_id(self, token):
            return self.vocab.index(token) if token in self.vocab else 1

        def id_to_token(self, i):
            return self.vocab[i]

        def decode(self, ids):
            return "".join(t for t in self.ids_to_tokens(ids) if len(t) == 1)

    tok = CharTokenizer(token_translate={"c": "X"})
    assert tok.tokenize("abc") == ["[CLS]", "a", "b", "X", "[SEP]"]
    assert tok.tokenize("abcab", maxlen=4) == ["[CLS]", "a", "b", "[SEP]"]
    assert tok.encode("ab", "ca") == ([2, 4, 5, 3, 7, 4, 3], [0, 0, 0, 0, 1, 1, 1])
    assert tok.decode(tok.encode("abz")[0]) == "ab"
    bare = CharTokenizer(token_start=None, token_end=None)
    assert bare.encode("ab", "c") == ([4, 5, 6], [0, 0, 1])


# ---------------------------------------------------------------------------
# SpTokenizer
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def t5_model():
    return datasets.fetch("seqio", "0.0.20", "seqio/test_data/sentencepiece/sentencepiece.model")


@pytest.fixture(scope="module")
def albert_like_model(tmp_path_factory):
    """A SentencePiece model laid out like ALBERT's: <pad> <unk> [CLS] [SEP] [MASK]."""
    import sentencepiece as spm

    text = datasets.fetch("sentencepiece", "0.2.3", "test/botchan.txt", sdist=True)
    prefix = str(tmp_path_factory.mktemp("spm") / "albert")
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=prefix, vocab_size=300, pad_id=0, unk_id=1, bos_id=-1,
        eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"], minloglevel=2)
    return prefix + ".model"


def test_sptokenizer_t5_the_old_way(t5_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=t5_model)
    tokenizer = SpTokenizer(t5_model, token_start=None, token_end="</s>")
    text = "the cat sat on the mat"
    assert tokenizer.tokenize(text) == sp.encode_as_pieces(text) + ["</s>"]
    assert tokenizer._tokenize(text) == sp.encode_as_pieces(text)
    ids, segments = tokenizer.encode(text)
    assert ids == sp.encode(text) + [1] and segments == [0] * len(ids)
    assert [tokenizer._token_pad_id, tokenizer._token_unk_id, tokenizer._token_end_id] == [0, 2, 1]
    assert tokenizer._token_start is None and tokenizer._vocab_size == 26
    assert tokenizer.token_to_id("</s>") == 1 and tokenizer.id_to_token(1) == "</s>"
    assert tokenizer.sp_model.get_piece_size() == 26
    # maxlen: the last pieces before </s> go
    assert tokenizer.encode(text, maxlen=4)[0] == sp.encode(text)[:3] + [1]
    # a pair without start token: maxlen is not exceeded (0.11.5 gave maxlen + 1)
    ids, segments = tokenizer.encode("the cat", "the mat", maxlen=6)
    assert ids == sp.encode("the")[:2] + [1] + sp.encode("the")[:2] + [1]
    assert segments == [0, 0, 0, 1, 1, 1]
    # decode: control pieces and ids past the vocabulary give nothing
    assert tokenizer.decode(tokenizer.encode(text)[0] + [0, 0]) == text
    assert tokenizer.decode([30] + sp.encode("the mat") + [26, 1]) == "the mat"
    assert not tokenizer._is_decodable(1) and not tokenizer._is_decodable(26)
    assert tokenizer._is_decodable(sp.encode("t")[-1]) and tokenizer._is_special(0)


def test_sptokenizer_default_tokens(albert_like_model, t5_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=albert_like_model)
    tokenizer = SpTokenizer(albert_like_model)  # 0.11.5's defaults: [CLS] ... [SEP]
    text = "the town"
    assert tokenizer.tokenize(text) == ["[CLS]"] + sp.encode_as_pieces(text) + ["[SEP]"]
    assert tokenizer.encode(text)[0] == [2] + sp.encode(text) + [3]
    assert tokenizer._token_start_id == 2 and tokenizer._token_end_id == 3
    assert tokenizer._token_mask_id == 4
    assert tokenizer._token_pad_id == 0 and tokenizer._token_unk_id == 1
    assert tokenizer.decode(tokenizer.encode(text)[0]) == text
    ids, segments = tokenizer.encode("the", "town")
    assert ids == [2] + sp.encode("the") + [3] + sp.encode("town") + [3]
    assert segments == [0] * (len(sp.encode("the")) + 2) + [1] * (len(sp.encode("town")) + 1)
    # a model without [CLS]/[SEP] (T5) ends with its </s> instead
    t5 = SpTokenizer(t5_model)
    assert t5._token_start is None and t5._token_end == "</s>" and t5._token_mask is None


def test_sptokenizer_pre_tokenize_and_translate(t5_model):
    """As 0.11.5's CPM-LM example: a word segmenter joined by spaces, and a
    translated piece that decode maps back."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=t5_model)
    piece = sp.encode_as_pieces("the")[0]
    tokenizer = SpTokenizer(t5_model, token_start=None, token_end=None,
                            pre_tokenize=lambda text: text.split("|"),
                            token_translate={piece: "<pad>"})
    pieces = sp.encode_as_pieces("the cat")
    assert tokenizer._tokenize("the|cat") == pieces
    assert tokenizer.tokenize("the|cat") == ["<pad>"] + pieces[1:]
    ids = tokenizer.encode("the|cat")[0]
    assert ids == [0] + sp.encode("the cat")[1:]
    assert tokenizer.decode(ids) == "the cat"


# ---------------------------------------------------------------------------
# an old-style script
# ---------------------------------------------------------------------------

OLD_SCRIPT = textwrap.dedent('''
    # a bert4keras 0.11.5-style NER + seq2seq preprocessing script
    import json, sys
    import numpy as np
    from bert4keras.tokenizers import Tokenizer, load_vocab
    from bert4keras.snippets import sequence_padding

    dict_path = sys.argv[1]
    maxlen = 8
    token_dict = load_vocab(dict_path)
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    labels = ['PER', 'ORG', 'LOC', 'LANG']

    # (text, [(start, end inclusive, label)])
    data = [
        (u'王小明在北京大学读书', [(0, 2, 'PER'), (4, 7, 'ORG')]),
        (u'我爱Python和北京', [(2, 7, 'LANG'), (9, 10, 'LOC')]),
    ]

    batch_token_ids, batch_labels, found = [], [], []
    for text, entities in data:
        tokens = tokenizer.tokenize(text, maxlen=maxlen)
        mapping = tokenizer.rematch(text, tokens)
        start_mapping = {j[0]: i for i, j in enumerate(mapping) if j}
        end_mapping = {j[-1]: i for i, j in enumerate(mapping) if j}
        token_ids = tokenizer.tokens_to_ids(tokens)
        tags = np.zeros(len(token_ids), dtype='int32')
        for start, end, label in entities:
            if start in start_mapping and end in end_mapping:
                start, end = start_mapping[start], end_mapping[end]
                tags[start] = labels.index(label) * 2 + 1
                tags[start + 1:end + 1] = labels.index(label) * 2 + 2
        batch_token_ids.append(token_ids)
        batch_labels.append(tags)
        # decode the tags back into entities of the original text
        i = 0
        while i < len(tags):
            if tags[i] % 2 == 1:
                j = i
                while j + 1 < len(tags) and tags[j + 1] == tags[i] + 1:
                    j += 1
                found.append([text[mapping[i][0]:mapping[j][-1] + 1], labels[tags[i] // 2]])
                i = j
            i += 1

    batch_token_ids = sequence_padding(batch_token_ids)
    batch_labels = sequence_padding(batch_labels)

    # seq2seq: [CLS] content [SEP] title [SEP]
    token_ids, segment_ids = tokenizer.encode(u'今天天气很好', u'我们去公园玩吧', maxlen=12)
    title_ids = [t for t, s in zip(token_ids, segment_ids) if s == 1]
    print(json.dumps({
        'shape': list(batch_token_ids.shape),
        'first': tokenizer.ids_to_tokens(batch_token_ids[0]),
        'labels': batch_labels.tolist(),
        'found': found,
        'pair': [tokenizer.ids_to_tokens(token_ids), segment_ids],
        'title': tokenizer.decode(title_ids),
    }, ensure_ascii=False))
''')


def test_old_style_script(tmp_path):
    script = tmp_path / "old_script.py"
    script.write_text(OLD_SCRIPT, encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, str(script), SMALL_VOCAB], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["shape"] == [2, 8]
    assert out["first"] == ["[CLS]", "王", "小", "明", "在", "北", "京", "[SEP]"]
    # PER = 1, 2; ORG cut off by maxlen; "python" is one token; LOC = 5, 6
    assert out["labels"] == [[0, 1, 2, 2, 0, 0, 0, 0], [0, 0, 0, 7, 0, 5, 6, 0]]
    assert out["found"] == [["王小明", "PER"], ["Python", "LANG"], ["北京", "LOC"]]
    # (8, 9) tokens, maxlen 12 + 1 -> (6, 7); the second [CLS] is dropped
    assert out["pair"] == [["[CLS]", "今", "天", "天", "气", "[SEP]", "我", "们", "去", "公", "园",
                            "[SEP]"], [0] * 6 + [1] * 6]
    assert out["title"] == "我们去公园"
