"""SpTokenizer against the sentencepiece library and transformers' T5Tokenizer,
on real SentencePiece models and real text (see shared/DATA.md):

* ``sentencepiece==0.2.3`` sdist: ``botchan_en_bpe_1000.model``,
  ``botchan_en_unigram_1000.model``, ``kyoto_ja_unigram_8000.model`` (unk 0,
  bos 1, eos 2) and ``botchan.txt`` (Project Gutenberg);
* ``seqio==0.0.20``: a T5-layout model (pad 0, eos 1, unk 2; 26 pieces).
"""

import pickle

import pytest

from bert4keras.datasets import fetch
from bert4keras.tokenizers import SpTokenizer

SP_MODELS = ["test/botchan_en_bpe_1000.model", "test/botchan_en_unigram_1000.model",
             "test/kyoto_ja_unigram_8000.model"]


@pytest.fixture(scope="module")
def model_paths():
    paths = {name: fetch("sentencepiece", "0.2.3", name, sdist=True) for name in SP_MODELS}
    paths["t5"] = fetch("seqio", "0.0.20", "seqio/test_data/sentencepiece/sentencepiece.model")
    return paths


@pytest.fixture(scope="module")
def lines():
    path = fetch("sentencepiece", "0.2.3", "test/botchan.txt", sdist=True)
    with open(path, encoding="utf-8") as f:
        out = [line.rstrip("\n") for line in f]
    assert len(out) > 4000
    return out


def processor(path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=path)


@pytest.mark.parametrize("name", SP_MODELS + ["t5"])
def test_ids_equal_the_sentencepiece_library(model_paths, lines, name):
    sp = processor(model_paths[name])
    tokenizer = SpTokenizer(model_paths[name], token_end=None)
    for line in lines:
        ids, segments = tokenizer.encode(line)
        assert ids == sp.encode(line), line
        assert segments == [0] * len(ids)
    for line in lines[::20]:  # the token path agrees with the fast path
        tokens = tokenizer.tokenize(line)
        assert tokens == sp.encode_as_pieces(line)
        assert tokenizer.tokens_to_ids(tokens) == sp.encode(line)


def test_special_ids(model_paths):
    botchan = SpTokenizer(model_paths["test/botchan_en_unigram_1000.model"])
    assert (botchan.unk_id, botchan.bos_id, botchan.eos_id, botchan.pad_id) == (0, 1, 2, None)
    assert botchan._token_end_id == 2 and botchan._token_start_id is None
    assert botchan.id_to_token(1) == "<s>" and botchan.token_to_id("</s>") == 2
    assert botchan.token_to_id("no-such-piece") == botchan.unk_id
    assert botchan.vocab_size == 1000
    t5 = SpTokenizer(model_paths["t5"])
    assert (t5.pad_id, t5.eos_id, t5.unk_id, t5.bos_id) == (0, 1, 2, None)
    assert (t5._token_pad_id, t5._token_end_id, t5._token_unk_id) == (0, 1, 2)
    assert [t5.id_to_token(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    with pytest.raises(KeyError):
        t5.id_to_token(26)


def test_start_and_end_tokens(model_paths):
    sp = processor(model_paths["test/botchan_en_bpe_1000.model"])
    text = "I am a cat, said Botchan."
    tokenizer = SpTokenizer(model_paths["test/botchan_en_bpe_1000.model"], token_start="<s>")
    ids, _ = tokenizer.encode(text)
    assert ids == [1] + sp.encode(text) + [2]
    assert tokenizer.tokenize(text) == ["<s>"] + sp.encode_as_pieces(text) + ["</s>"]
    # pairs and truncation go through the shared TokenizerBase.encode
    ids, segments = tokenizer.encode(text, "And the other one.", maxlen=12)
    assert len(ids) == 12 and ids[0] == 1 and ids.count(2) == 2
    assert segments[-1] == 1 and segments[0] == 0
    ids, _ = tokenizer.encode(text, maxlen=5)
    assert ids == [1] + sp.encode(text)[:3] + [2]


def test_matches_transformers_t5_tokenizer(model_paths, lines, tmp_path):
    """transformers' T5Tokenizer converted from the same ``spiece.model``
    (appends ``</s>``; ``<extra_id_N>`` sentinels numbered from the top)."""
    import shutil

    from transformers import T5Tokenizer

    shutil.copy(model_paths["t5"], tmp_path / "spiece.model")
    hf = T5Tokenizer.from_pretrained(str(tmp_path))
    ours = SpTokenizer(model_paths["t5"], extra_ids=100)
    assert ours.vocab_size == len(hf) == 126
    for line in lines:
        assert ours.encode(line)[0] == hf(line).input_ids, line
    for line in lines[::10]:
        ids = hf(line).input_ids
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True).strip(), line
    text = "the cat <extra_id_0> on the <extra_id_1> mat <extra_id_99>"
    assert ours.encode(text)[0] == hf(text).input_ids
    assert ours.tokenize(text) == hf.convert_ids_to_tokens(hf(text).input_ids)
    assert ours.token_to_id("<extra_id_0>") == hf.convert_tokens_to_ids("<extra_id_0>") == 125
    assert ours.id_to_token(26) == "<extra_id_99>"
    # sentinels are kept, the end token is dropped
    assert ours.decode(hf(text).input_ids) == hf.decode(hf(text).input_ids)[:-len("</s>")]


def test_decode_is_sentencepiece_detokenization(model_paths, lines):
    sp = processor(model_paths["test/botchan_en_unigram_1000.model"])
    tokenizer = SpTokenizer(model_paths["test/botchan_en_unigram_1000.model"], token_start="<s>")
    for line in lines[::7]:
        ids, _ = tokenizer.encode(line)
        expected = sp.decode([i for i in sp.encode(line) if i != sp.unk_id()]).strip()
        assert tokenizer.decode(ids) == expected
    text = "It was a fine day in the town."
    assert tokenizer.decode(tokenizer.encode(text)[0]) == text


def test_pre_tokenize_and_translate(model_paths):
    sp = processor(model_paths["test/botchan_en_unigram_1000.model"])
    tokenizer = SpTokenizer(model_paths["test/botchan_en_unigram_1000.model"],
                            pre_tokenize=lambda text: text.split("|"))
    assert tokenizer.encode("in|the|town")[0] == sp.encode("in the town") + [2]
    piece = sp.encode_as_pieces("the")[0]
    swap = SpTokenizer(model_paths["test/botchan_en_unigram_1000.model"],
                       token_translate={piece: "<s>"})
    assert swap.tokenize("the") == ["<s>", "</s>"]
    assert swap.encode("the")[0] == [1, 2]
    assert swap.decode([1, 2]) == "the"


def test_pickle_round_trip(model_paths, lines):
    tokenizer = SpTokenizer(model_paths["t5"], extra_ids=100)
    clone = pickle.loads(pickle.dumps(tokenizer))
    for line in lines[:50]:
        assert clone.encode(line) == tokenizer.encode(line)


def test_bad_inputs(model_paths, tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.model"):
        SpTokenizer(str(tmp_path / "absent.model"))
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.model"):
        SpTokenizer(str(bad))
    with pytest.raises(ValueError, match="\\[SEP\\]"):
        SpTokenizer(model_paths["t5"], token_end="[SEP]")
