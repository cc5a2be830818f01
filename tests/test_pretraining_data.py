"""Tests for pretraining.data_utils (corpus -> TFRecords -> tf.data)."""

import glob
import json
import logging
import os

import jieba
import numpy as np
import pytest

from pretraining.data_utils import (
    TextCorpus,
    TrainingDatasetGPT,
    TrainingDatasetRoBERTa,
    TrainingDatasetUniLM,
    main,
)

jieba.setLogLevel(logging.WARNING)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)

SUBJECTS = ["我们", "小明", "研究人员", "北京大学的学生", "这家公司", "老师和家长", "科学家"]
VERBS = ["正在讨论", "认真学习", "发现了", "参观了", "打算研究", "喜欢", "写了一篇关于"]
OBJECTS = ["人工智能", "自然语言处理", "天安门广场", "中国历史", "新型冠状病毒",
           "长江三角洲的经济发展", "机器学习模型", "图书馆里的古籍"]
TAILS = ["。", "！", "，效果很好。", "，大家都很满意。", "？"]


def make_corpus(n_docs, seed=0, max_sents=6):
    """Documents of generated Chinese sentences (list of lists of str)."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    return [
        [pick(SUBJECTS) + pick(VERBS) + pick(OBJECTS) + pick(TAILS) for _ in range(rng.integers(1, max_sents + 1))]
        for _ in range(n_docs)
    ]


VOCAB_CHARS = sorted(set("".join(SUBJECTS + VERBS + OBJECTS + TAILS)) | set("abcdefghij0123456789"))


class StubTokenizer:
    """Char-level tokenizer with [PAD]=0, [UNK], [CLS], [SEP], [MASK]."""

    def __init__(self, chars=VOCAB_CHARS):
        self.vocab = SPECIALS + list(chars)
        self.ids = {t: i for i, t in enumerate(self.vocab)}

    def __len__(self):
        return len(self.vocab)

    def tokenize(self, text):
        return ["[CLS]"] + [c for c in text if not c.isspace()] + ["[SEP]"]

    def token_to_id(self, token):
        return self.ids.get(token, UNK)

    def tokens_to_ids(self, tokens):
        return [self.token_to_id(t) for t in tokens]


class RematchStubTokenizer(StubTokenizer):
    """The stub plus ``rematch`` (token -> character indices)."""

    def rematch(self, text, tokens):
        spans, chars = [], [i for i, c in enumerate(text) if not c.isspace()]
        for token in tokens:
            spans.append([] if token in ("[CLS]", "[SEP]") else [chars.pop(0)])
        return spans


@pytest.fixture(scope="module")
def tokenizer():
    return StubTokenizer()


def read_records(files, features):
    """All records of the shard files, as dicts of numpy int lists."""
    import tensorflow as tf

    spec = {name: tf.io.VarLenFeature(tf.int64) for name in features}
    out = []
    for path in files:
        for raw in tf.data.TFRecordDataset(path):
            example = tf.io.parse_single_example(raw, spec)
            out.append({k: tf.sparse.to_dense(v).numpy().tolist() for k, v in example.items()})
    return out


def shard_files(directory):
    return sorted(glob.glob(os.path.join(directory, "*.tfrecord")))


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize("tokenizer", [StubTokenizer(), RematchStubTokenizer()], ids=["per-word", "rematch"])
def test_whole_word_masking_matches_segmenter(tokenizer):
    dataset = TrainingDatasetRoBERTa(tokenizer, seq_len=512)  # jieba.lcut
    rng = np.random.default_rng(0)
    words_seen = masked_words = 0
    for (sentence,) in make_corpus(300, seed=1, max_sents=1):
        [record] = dataset.document_instances([sentence], rng)
        words = [tokenizer.tokens_to_ids(list(w)) for w in jieba.lcut(sentence)]
        assert record["token_ids"] == [CLS] + [t for w in words for t in w] + [SEP]
        chosen = [m > 0 for m in record["mask_ids"]]
        assert not chosen[0] and not chosen[-1]
        start = 1
        for word in words:
            flags = chosen[start : start + len(word)]
            assert all(flags) or not any(flags), (sentence, word)
            words_seen += 1
            masked_words += all(flags)
            start += len(word)
    assert 0 < masked_words < words_seen


def test_masking_rate_and_80_10_10(tokenizer):
    dataset = TrainingDatasetRoBERTa(tokenizer, seq_len=128, word_segment=jieba.lcut)
    rng = np.random.default_rng(123)
    tokens = masked = as_mask = as_self = as_random = 0
    for document in make_corpus(600, seed=2):
        for record in dataset.document_instances(document, rng):
            tokens += len(record["token_ids"]) - 2
            for token, m in zip(record["token_ids"], record["mask_ids"]):
                if not m:
                    continue
                masked += 1
                shown = m - 1
                if shown == MASK:
                    as_mask += 1
                elif shown == token:
                    as_self += 1
                else:
                    as_random += 1
                    assert shown not in (PAD, CLS, SEP, MASK) and 0 <= shown < len(tokenizer)
    assert tokens > 20000
    assert 0.13 < masked / tokens <= 0.16
    assert abs(as_mask / masked - 0.8) < 0.025
    assert abs(as_self / masked - 0.1) < 0.02
    assert abs(as_random / masked - 0.1) < 0.02


def test_whole_words_keep_wordpieces_together(tmp_path):
    from bert4keras.tokenizers import Tokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + list("１２３８９年月日新讲话。") + ["##９", "##８", "１２"]), encoding="utf-8")
    dataset = TrainingDatasetRoBERTa(Tokenizer(str(vocab)), seq_len=64, word_segment=jieba.lcut)
    text = "１２月１９９８年新年讲话。"
    # jieba cuts the digits one by one; the tokenizer makes 1 + 3 wordpieces.
    assert jieba.lcut(text)[:6] == ["１", "２", "月", "１", "９", "９"]
    groups = [dataset.tokenizer.ids_to_tokens(w) for w in dataset.sentence_words(text)]
    assert groups == [["１２"], ["月"], ["１", "##９", "##９", "##８"], ["年"], ["新", "年"], ["讲", "话"], ["。"]]
    assert [i for g in dataset.sentence_words(text) for i in g] == dataset.tokenize(text)


def test_mask_words_budget_and_single_token(tokenizer):
    dataset = TrainingDatasetRoBERTa(tokenizer, seq_len=16, word_segment=list)
    record = dataset.mask_words([[7]], np.random.default_rng(0))
    assert record["token_ids"] == [CLS, 7, SEP]
    assert sum(1 for m in record["mask_ids"] if m) == 1  # at least one prediction
    record = dataset.mask_words([[i + 5] for i in range(40)], np.random.default_rng(0))
    assert sum(1 for m in record["mask_ids"] if m) == 6  # round(40 * 0.15)


# ---------------------------------------------------------------- packing

LONG = "".join(OBJECTS) * 3  # one sentence far longer than seq_len


@pytest.mark.parametrize("cls", [TrainingDatasetRoBERTa, TrainingDatasetGPT])
def test_packing_lengths_and_coverage(tokenizer, cls):
    seq_len = 24
    kwargs = {"word_segment": list} if cls is TrainingDatasetRoBERTa else {}
    dataset = cls(tokenizer, seq_len=seq_len, **kwargs)
    rng = np.random.default_rng(0)
    for document in make_corpus(30, seed=3) + [[LONG, "短句。", LONG]]:
        records = dataset.document_instances(document, rng)
        expected = tokenizer.tokens_to_ids(list("".join(document)))
        got = []
        for record in records:
            ids = record["token_ids"]
            assert len(ids) <= seq_len
            assert ids[0] == CLS and ids[-1] == SEP
            assert CLS not in ids[1:-1] and SEP not in ids[1:-1]
            got.extend(ids[1:-1])
        assert got == expected  # nothing lost, order kept, long sentence cut


def test_packing_respects_sentences(tokenizer):
    dataset = TrainingDatasetGPT(tokenizer, seq_len=11)
    records = dataset.document_instances(["甲乙丙丁", "戊己庚辛", "壬癸"], np.random.default_rng(0))
    lengths = [len(r["token_ids"]) for r in records]
    assert lengths == [10, 4]  # 4 + 4 fit in 9; adding 2 more would not


def test_unilm_documents_and_pairs(tokenizer):
    dataset = TrainingDatasetUniLM(tokenizer, seq_len=32)
    rng = np.random.default_rng(0)
    for document in make_corpus(20, seed=4) + [[LONG]]:
        for record in dataset.document_instances(document, rng):
            ids, seg = record["token_ids"], record["segment_ids"]
            assert len(ids) == len(seg) <= 32
            assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
            boundary = ids.index(SEP) + 1
            assert seg == [0] * boundary + [1] * (len(ids) - boundary)
            assert len(ids) - boundary >= 2  # a non-empty target plus [SEP]

    pairs = TrainingDatasetUniLM(tokenizer, seq_len=10, pairs=True)
    [record] = pairs.document_instances(("人工智能", "自然语言处理的发展"), rng)
    # 4 + 9 tokens into 7: the target loses 5, then on the tie the source 1.
    assert record["token_ids"] == (
        [CLS] + tokenizer.tokens_to_ids(list("人工智")) + [SEP] + tokenizer.tokens_to_ids(list("自然语言")) + [SEP]
    )
    assert record["segment_ids"] == [0] * 5 + [1] * 5


# ---------------------------------------------------------------- process()


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(120, seed=5)


def roberta(tokenizer, seq_len=64):
    return TrainingDatasetRoBERTa(tokenizer, seq_len=seq_len, word_segment=jieba.lcut)


def test_determinism_across_workers(tokenizer, corpus, tmp_path):
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        roberta(tokenizer).process(
            corpus, out / "roberta", num_shards=3, workers=workers, seed=7,
            dupe_factor=2, chunk_size=7, progress=False,
        )
        outputs[workers] = [p.read_bytes() for p in sorted(out.iterdir())]
    assert len(outputs[1]) == 4  # 3 shards + manifest
    assert outputs[1] == outputs[2]

    other = tmp_path / "seed8"
    roberta(tokenizer).process(corpus, other / "roberta", num_shards=3, workers=1, seed=8, progress=False)
    assert [p.read_bytes() for p in sorted(other.glob("*.tfrecord"))] != outputs[1][:3]


def test_dupe_factor_remasks_and_manifest(tokenizer, corpus, tmp_path):
    manifest = roberta(tokenizer).process(
        corpus, tmp_path / "roberta", num_shards=2, workers=1, seed=0, dupe_factor=2, progress=False
    )
    with open(tmp_path / "manifest.json", encoding="utf-8") as f:
        assert json.load(f) == manifest
    records = read_records(shard_files(tmp_path), ("token_ids", "mask_ids"))
    assert manifest["documents"] == len(corpus)
    assert manifest["sequences"] == len(records) == sum(manifest["shard_sequences"])
    assert manifest["tokens"] == sum(len(r["token_ids"]) for r in records)
    assert manifest["masked_tokens"] == sum(sum(1 for m in r["mask_ids"] if m) for r in records)
    chars = sum(len("".join(d)) for d in corpus)
    assert manifest["tokens"] == 2 * chars + 2 * manifest["sequences"]  # 2 passes; [CLS], [SEP]
    assert (manifest["shards"], manifest["seed"], manifest["seq_len"]) == (2, 0, 64)
    assert manifest["vocab_size"] == len(tokenizer) and manifest["kind"] == "roberta"
    assert manifest["shard_sequences"][0] - manifest["shard_sequences"][1] in (0, 1)
    # Records go round-robin: shard s holds sequences s, s + 2, s + 4, ...
    # The two passes have the same tokens but different masks.
    ordered = [None] * len(records)
    for s, path in enumerate(shard_files(tmp_path)):
        for j, r in enumerate(read_records([path], ("token_ids", "mask_ids"))):
            ordered[s + 2 * j] = r
    half = len(records) // 2
    assert [r["token_ids"] for r in ordered[:half]] == [r["token_ids"] for r in ordered[half:]]
    assert [r["mask_ids"] for r in ordered[:half]] != [r["mask_ids"] for r in ordered[half:]]


def test_process_errors(tokenizer, corpus, tmp_path):
    with pytest.raises(ValueError, match="re-iterable"):
        roberta(tokenizer).process(iter(corpus), tmp_path / "x", dupe_factor=2, progress=False)
    with pytest.raises(ValueError, match="dupe_factor"):
        TrainingDatasetGPT(tokenizer, 32).process(corpus, tmp_path / "x", dupe_factor=2, progress=False)
    with pytest.raises(ValueError):
        TrainingDatasetGPT(tokenizer, 2)
    with pytest.raises(FileNotFoundError):
        TrainingDatasetGPT.load_tfrecord(tmp_path / "nothing-*.tfrecord", 8, 2)


# ---------------------------------------------------------------- loader


@pytest.mark.parametrize("kind", ["roberta", "gpt", "unilm"])
def test_loader_shapes_and_semantics(tokenizer, corpus, tmp_path, kind):
    import tensorflow as tf

    seq_len, batch_size = 48, 8
    dataset = {
        "roberta": lambda: roberta(tokenizer, seq_len),
        "gpt": lambda: TrainingDatasetGPT(tokenizer, seq_len),
        "unilm": lambda: TrainingDatasetUniLM(tokenizer, seq_len),
    }[kind]()
    manifest = dataset.process(corpus, tmp_path / kind, num_shards=2, workers=1, progress=False)
    loaded = type(dataset).load_tfrecord(tmp_path, seq_len, batch_size, shuffle=False, drop_remainder=False)
    total_weight = total_tokens = sequences = 0
    for x, y, w in loaded:
        assert set(x) == {"Input-Token", "Input-Segment"}
        assert x["Input-Token"].dtype == tf.int32 and x["Input-Segment"].dtype == tf.int32
        assert y.dtype == tf.int32 and w.dtype == tf.float32
        assert x["Input-Token"].shape[1:] == y.shape[1:] == w.shape[1:] == (seq_len,)
        tokens, labels, weights = x["Input-Token"].numpy(), y.numpy(), w.numpy()
        sequences += len(tokens)
        total_weight += weights.sum()
        assert set(np.unique(weights)) <= {0.0, 1.0}
        if kind == "roberta":
            total_tokens += (labels != PAD).sum()
            assert ((tokens != labels) <= (weights == 1)).all()  # only chosen positions change
            assert (x["Input-Segment"].numpy() == 0).all()
        else:
            total_tokens += (tokens != PAD).sum()
            assert (labels[:, :-1] == tokens[:, 1:]).all()
            assert (weights[:, -1] == 0).all()
    assert sequences == manifest["sequences"]
    assert total_tokens == manifest["tokens"]
    if kind == "roberta":
        assert total_weight == manifest["masked_tokens"]
    elif kind == "gpt":
        assert total_weight == manifest["tokens"] - manifest["sequences"]
    else:
        records = read_records(shard_files(tmp_path), ("token_ids", "segment_ids"))
        assert total_weight == sum(sum(r["segment_ids"]) for r in records)

    # Shuffled, repeated, fixed batch: reproducible with a seed.
    def first_batch():
        ds = type(dataset).load_tfrecord(tmp_path, seq_len, batch_size, shuffle=True, seed=3, repeat=True)
        return next(iter(ds))[0]["Input-Token"].numpy()

    a, b = first_batch(), first_batch()
    assert a.shape == (batch_size, seq_len)
    np.testing.assert_array_equal(a, b)


def test_loader_feeds_keras_fit(tokenizer, corpus, tmp_path):
    import keras

    seq_len = 32
    roberta(tokenizer, seq_len).process(corpus, tmp_path / "roberta", workers=1, progress=False)
    loaded = TrainingDatasetRoBERTa.load_tfrecord(tmp_path / "roberta-*.tfrecord", seq_len, 4, repeat=True, seed=0)
    tokens = keras.Input(shape=(seq_len,), dtype="int32", name="Input-Token")
    segments = keras.Input(shape=(seq_len,), dtype="int32", name="Input-Segment")
    h = keras.layers.Embedding(len(tokenizer), 16)(tokens) + keras.layers.Embedding(2, 16)(segments)
    out = keras.layers.Dense(len(tokenizer), name="MLM")(h)
    model = keras.Model([tokens, segments], out)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
    )
    history = model.fit(loaded, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


# ---------------------------------------------------------------- files and CLI


def test_text_corpus(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("第一句。\n第二句。\n\n\n第三句。\n", encoding="utf-8")
    corpus = TextCorpus(path)
    assert list(corpus) == [["第一句。", "第二句。"], ["第三句。"]]
    assert list(corpus) == list(corpus)  # re-iterable
    pairs = tmp_path / "p.tsv"
    pairs.write_text("问题一\t答案一\n\n问题二\t答案二\n", encoding="utf-8")
    assert list(TextCorpus([pairs], pairs=True)) == [("问题一", "答案一"), ("问题二", "答案二")]
    pairs.write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="p.tsv:1"):
        list(TextCorpus(pairs, pairs=True))
    with pytest.raises(FileNotFoundError):
        TextCorpus(tmp_path / "missing.txt")


def test_cli_with_real_tokenizer(corpus, tmp_path):
    from bert4keras.datasets import chinese_vocab_path

    vocab = chinese_vocab_path()  # Google's Chinese vocab; a failure to fetch fails the test
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join("\n".join(doc) for doc in corpus[:40]) + "\n", encoding="utf-8")
    for model in ("roberta", "gpt", "unilm"):
        out = tmp_path / model
        manifest = main([
            "--model", model, "--vocab", str(vocab), "--corpus", str(text), "--seq-len", "64",
            "--out", str(out), "--workers", "2", "--seed", "0", "--quiet",
        ] + (["--dupe-factor", "2"] if model == "roberta" else []))
        assert manifest["documents"] == 40 and manifest["sequences"] > 0
        assert (out / "manifest.json").exists() and len(shard_files(out)) == 1
        records = read_records(shard_files(out), manifest["features"])
        assert all(len(r["token_ids"]) <= 64 for r in records)
        assert all(r["token_ids"][0] == manifest["special_ids"]["cls"] for r in records)


# ---------------------------------------------------------------- packing='full'


def two_char_words(text):
    """A segmenter independent of jieba: words of two characters."""
    return [text[i : i + 2] for i in range(0, len(text), 2)]


def corpus_words(tokenizer, corpus, segment):
    """Per document, the token ids of its words, in order."""
    return [[tokenizer.tokens_to_ids(list(w)) for s in doc for w in segment(s)] for doc in corpus]


FULL_CASES = {
    "roberta-jieba": (TrainingDatasetRoBERTa, {"word_segment": jieba.lcut}, jieba.lcut),
    "roberta-chars": (TrainingDatasetRoBERTa, {"word_segment": list}, list),
    "gpt": (TrainingDatasetGPT, {}, list),
}


@pytest.mark.parametrize("case", sorted(FULL_CASES))
def test_full_packing_fills_sequences_and_keeps_the_stream(tokenizer, tmp_path, case):
    cls, kwargs, segment = FULL_CASES[case]
    seq_len = 24
    corpus = make_corpus(25, seed=3) + [[], [LONG, "短句。"]] + make_corpus(5, seed=9)
    dataset = cls(tokenizer, seq_len=seq_len, packing="full", **kwargs)
    manifest = dataset.process(corpus, tmp_path / "full", num_shards=1, workers=1,
                               chunk_size=len(corpus), progress=False)
    assert manifest["packing"] == "full" and manifest["documents"] == len(corpus)
    records = read_records(shard_files(tmp_path), cls.features)
    assert len(records) == manifest["sequences"]

    # The expected stream: the documents' tokens with one [SEP] between two
    # (non-empty) documents; the word boundaries in real-token offsets.
    words = [doc for doc in corpus_words(tokenizer, corpus, segment) if doc]
    stream, boundaries, offset = [], {0}, 0
    for d, doc in enumerate(words):
        stream.extend([SEP] if d else [])
        for word in doc:
            stream.extend(word)
            offset += len(word)
            boundaries.add(offset)
    word_starts = sorted(boundaries)
    got, cuts, real, separators = [], [], 0, 0
    for r, record in enumerate(records):
        ids = record["token_ids"]
        assert ids[0] == CLS and ids[-1] == SEP and len(ids) <= seq_len
        inner = ids[1:-1]
        assert inner[0] != SEP  # never a separator first
        separators += inner.count(SEP)
        real += len(inner) - inner.count(SEP)
        cuts.append(real)
        got.append(inner)
        if r < len(records) - 1:
            if segment is list:  # one-token words: exactly full
                assert len(ids) == seq_len
            else:  # full, or the next word would not have fitted
                assert real in boundaries  # cut between two words
                i = word_starts.index(real)
                assert len(ids) == seq_len or len(ids) + word_starts[i + 1] - real > seq_len
        if cls is TrainingDatasetRoBERTa:
            masks = record["mask_ids"]
            assert all(m == 0 for t, m in zip(ids, masks) if t == SEP)  # separators kept
            n = len(inner) - inner.count(SEP)
            assert 0 < sum(1 for m in masks if m) <= max(1, round(n * 0.15))
    assert separators >= 1
    assert set(cuts) <= boundaries  # every cut between two words
    # Walk the stream: the records reproduce it in order, nothing lost or
    # duplicated; a separator is only left out where a document filled a
    # sequence to the end.
    j = 0
    for r, inner in enumerate(got):
        for k, token in enumerate(inner):
            if stream[j] == SEP and token != SEP:
                assert k == 0 and r and len(got[r - 1]) == seq_len - 2
                j += 1
            assert token == stream[j]
            j += 1
    assert j == len(stream)


def test_full_packing_masks_whole_words(tokenizer):
    dataset = TrainingDatasetRoBERTa(tokenizer, seq_len=20, word_segment=jieba.lcut, packing="full")
    corpus = make_corpus(40, seed=6)
    per_document = dataset._process_chunk((0, 0, list(enumerate(corpus))))
    records = [r for rs in per_document for r in rs]
    assert len(per_document) == len(corpus)  # one entry per document, for the counts
    word_lengths = [len(w) for doc in corpus_words(tokenizer, corpus, jieba.lcut) for w in doc]
    lengths = iter(word_lengths)
    masked_words = 0
    for record in records:
        flags = [m > 0 for t, m in zip(record["token_ids"][1:-1], record["mask_ids"][1:-1]) if t != SEP]
        start = 0
        while start < len(flags):  # sequences hold whole words: the lengths line up
            n = next(lengths)
            assert all(flags[start : start + n]) or not any(flags[start : start + n])
            masked_words += all(flags[start : start + n])
            start += n
        assert start == len(flags)
    assert next(lengths, None) is None and masked_words > 0


def test_full_packing_chunks_workers_and_dupes(tokenizer, corpus, tmp_path):
    seq_len, chunk = 32, 7
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        TrainingDatasetRoBERTa(tokenizer, seq_len, word_segment=list, packing="full").process(
            corpus, out / "roberta", num_shards=1, workers=workers, seed=3, dupe_factor=2,
            chunk_size=chunk, progress=False,
        )
        outputs[workers] = [p.read_bytes() for p in sorted(out.iterdir())]
    assert outputs[1] == outputs[2]
    manifest = json.loads((tmp_path / "w1" / "manifest.json").read_text())
    assert manifest["packing"] == "full" and manifest["documents"] == len(corpus)
    records = read_records(shard_files(tmp_path / "w1"), ("token_ids", "mask_ids"))
    half = len(records) // 2
    assert [r["token_ids"] for r in records[:half]] == [r["token_ids"] for r in records[half:]]
    assert [r["mask_ids"] for r in records[:half]] != [r["mask_ids"] for r in records[half:]]
    # Documents are crossed within a chunk only: at most one short sequence
    # per chunk (its last), at most one separator per document boundary inside it.
    chunks = -(-len(corpus) // chunk)
    assert sum(1 for r in records[:half] if len(r["token_ids"]) < seq_len) <= chunks
    separators = sum(r["token_ids"][1:-1].count(SEP) for r in records[:half])
    assert 0 < separators <= len(corpus) - chunks
    chars = sum(len("".join(d)) for d in corpus)
    assert manifest["tokens"] == 2 * (chars + 2 * half + separators)


# Records of the DOC-SENTENCES packing made by the code before ``packing=``
# existed (sha256 of their JSON); the default must keep them bit for bit.
DOCUMENT_PACKING_SHA256 = {
    "roberta": "6d530d2a873e14c522352ec81c277d7bd2c1526b56d6d49220456f612fcb2279",
    "gpt": "177e43241743828822ac5e6df0ecb1992571c7d87ce852c8ae1b319d01d51fd0",
}


@pytest.mark.parametrize("kind", ["roberta", "gpt"])
def test_document_packing_is_the_default_and_unchanged(tokenizer, tmp_path, kind):
    import hashlib

    def make(**packing):
        if kind == "roberta":
            return TrainingDatasetRoBERTa(tokenizer, 24, word_segment=two_char_words, **packing)
        return TrainingDatasetGPT(tokenizer, 24, **packing)

    corpus = make_corpus(40, seed=11) + [[LONG, "短句。"]]
    records = [make()._process_chunk((7, r, list(enumerate(corpus)))) for r in (0, 1)]
    digest = hashlib.sha256(json.dumps(records).encode()).hexdigest()
    assert digest == DOCUMENT_PACKING_SHA256[kind]
    shards = {}
    for packing in ({}, {"packing": "document"}):
        out = tmp_path / str(len(packing))
        manifest = make(**packing).process(corpus, out / kind, num_shards=2, progress=False)
        assert manifest["packing"] == "document"
        shards[len(packing)] = [p.read_bytes() for p in sorted(out.iterdir())]
    assert shards[0] == shards[1]


def test_packing_errors(tokenizer, tmp_path):
    for cls in (TrainingDatasetRoBERTa, TrainingDatasetGPT):
        with pytest.raises(ValueError, match="packing='sentences'"):
            cls(tokenizer, 32, packing="sentences")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + VOCAB_CHARS) + "\n", encoding="utf-8")
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join("\n".join(doc) for doc in make_corpus(6, seed=2)) + "\n", encoding="utf-8")
    common = ["--vocab", str(vocab), "--corpus", str(text), "--seq-len", "32", "--quiet"]
    manifest = main(["--model", "gpt", "--out", str(tmp_path / "gpt"), "--packing", "full"] + common)
    assert manifest["packing"] == "full" and manifest["documents"] == 6
    with pytest.raises(SystemExit):
        main(["--model", "unilm", "--out", str(tmp_path / "u"), "--packing", "full"] + common)
