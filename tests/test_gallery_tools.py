"""Smoke and mechanism tests of the tool recipes (issue 15):
examples/basic_extract_features.py, basic_masked_language_model.py,
basic_gibbs_sampling_via_mlm.py, basic_make_uncased_model_cased.py,
basic_simple_web_serving_simbert.py, and the ``RequestBatcher`` of
``bert4keras.snippets`` that the web service batches requests with."""

import concurrent.futures
import os
import threading
import time

import numpy as np
import pytest

from conftest import load_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "checkpoints", "chinese_bert_small")



@pytest.fixture(scope="module")
def shipped_mlm():
    """``(tokenizer, MLM model)`` of the shipped small Chinese BERT."""
    from bert4keras.models import build_transformer_model
    from bert4keras.tokenizers import Tokenizer

    tokenizer = Tokenizer(os.path.join(SHIPPED, "vocab.txt"), do_lower_case=True)
    model = build_transformer_model(os.path.join(SHIPPED, "bert_config.json"),
                                    os.path.join(SHIPPED, "bert_model.ckpt"), with_mlm=True)
    return tokenizer, model


# -- basic_extract_features ------------------------------------------------------------------

def test_pool_against_brute_force():
    import tools_kit

    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 5, 4)).astype("float32")
    ids = np.array([[2, 7, 3, 0, 0], [2, 7, 8, 9, 3], [2, 3, 0, 0, 0]])
    mean = tools_kit.pool(hidden, ids, "mean")
    for row, n in enumerate([3, 5, 2]):
        expected = hidden[row, :n].mean(0)
        np.testing.assert_allclose(mean[row], expected / np.linalg.norm(expected), atol=1e-6)
    cls = tools_kit.pool(hidden, ids, "cls", normalize=False)
    np.testing.assert_array_equal(cls, hidden[:, 0])
    with pytest.raises(ValueError, match="max"):
        tools_kit.pool(hidden, ids, "max")


def test_extract_features_shipped(tmp_path):
    example = load_example("basic_extract_features")
    texts = ["语言模型", "科学技术是第一生产力。"]
    results = example.main(["--texts"] + texts + ["--maxlen", "32", "--pooling", "cls",
                                                  "--output", str(tmp_path / "f.keras")])
    assert results["token_shape"] == [2, 16, 192] and results["sentence_shape"] == [2, 192]
    vectors = np.array(results["embeddings"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)
    assert results["reload_diff"] <= 1e-5


def test_extract_features_minilm_matches_transformers():
    """The script's MiniLM sentence embeddings (its own tokenizer, padding and
    pooling) equal transformers' BertTokenizer + BertModel run on each sentence
    alone, mean-pooled and normalised as sentence-transformers does.
    (tests/test_minilm.py checks the model itself on 50 sentences.)"""
    import torch
    from transformers import BertModel, BertTokenizer

    from bert4keras.datasets import minilm_dir

    example = load_example("basic_extract_features")
    texts = ["Hi!", "Keras 3 runs the same BERT on TensorFlow, JAX and PyTorch backends."]
    results = example.main(["--minilm", "--texts"] + texts)
    assert results["pooling"] == "mean"
    directory = minilm_dir()
    tokenizer = BertTokenizer.from_pretrained(directory)
    model = BertModel.from_pretrained(directory).eval()
    for text, ours in zip(texts, results["embeddings"]):
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].numpy()
        reference = hidden.mean(0) / np.linalg.norm(hidden.mean(0))
        np.testing.assert_allclose(ours, reference, atol=1e-5)


# -- basic_masked_language_model --------------------------------------------------------------

def test_masked_language_model_scores():
    example = load_example("basic_masked_language_model")
    results = example.main(["--limit", "24", "--maxlen", "32", "--examples", "1",
                            "--batch-size", "24"])
    assert results["sentences"] == 24 and results["masked_characters"] >= 24
    assert 0.0 <= results["top1"] <= results["top5"] <= results["top10"] <= 1.0
    # far above chance (10 / 13,580 for top-10): the shipped MLM restores characters
    assert results["top10"] > 0.05, results


def test_masking_and_topk_mechanism(shipped_mlm):
    import tools_kit

    example = load_example("basic_masked_language_model")
    tokenizer, model = shipped_mlm
    sentences = ["科学技术是第一生产力。", "今天天气很好，我们去公园散步吧！"]
    ids, masked = example.mask_sentences(tokenizer, sentences, 32, 0.3,
                                         np.random.default_rng(0))
    for row, sentence in enumerate(sentences):
        characters = sum(tools_kit.is_character_token(c) for c in sentence)
        assert masked[row].sum() == max(1, round(0.3 * characters))
        assert all(tools_kit.is_character_token(tokenizer.id_to_token(int(i)))
                   for i in ids[row][masked[row]])
    rows = example.predict_masked(model, tokenizer, ids, masked, 1)
    assert rows.shape == (masked.sum(), tokenizer.vocab_size)
    assert np.all(rows[:, tools_kit.excluded_ids(tokenizer)] == 0)
    # top-k against a brute-force rank count
    targets = ids[masked]
    hits = example.topk_hits(rows, targets, [1, 3])
    for k in (1, 3):
        brute = [np.sum(r > r[t]) < k for r, t in zip(rows, targets)]
        np.testing.assert_array_equal(hits[k], brute)
    text, candidates = example.fill(model, tokenizer, "科学__是第一生产力")
    assert len(candidates) == 2 and len(text) == len("科学技术是第一生产力")
    assert text.startswith("科学") and text.endswith("是第一生产力")


# -- basic_gibbs_sampling_via_mlm --------------------------------------------------------------

def test_gibbs_sampling_mechanism(shipped_mlm):
    import tools_kit

    example = load_example("basic_gibbs_sampling_via_mlm")
    tokenizer, model = shipped_mlm
    excluded = tools_kit.excluded_ids(tokenizer)
    mask_id = tokenizer.token_to_id("[MASK]")
    start = np.tile(np.array(tokenizer.encode("科学技术是第一生产力。")[0], "int32"), (2, 1))
    states = [start.copy()]
    final = example.gibbs(model, start, mask_id, excluded, 8, np.random.default_rng(3),
                          callback=lambda step, ids: states.append(ids.copy()))
    assert len(states) == 9
    for before, after in zip(states, states[1:]):
        assert np.all((before != after).sum(-1) <= 1)  # one position per chain and step
        assert np.all(after[:, 0] == start[:, 0]) and np.all(after[:, -1] == start[:, -1])
        assert not np.isin(after[:, 1:-1], excluded).any()
    again = example.gibbs(model, start, mask_id, excluded, 8, np.random.default_rng(3))
    np.testing.assert_array_equal(final, again)  # seeded

    # the pseudo-log-likelihood against one model call per masked position
    pll = example.pseudo_log_likelihood(model, final[:1], mask_id, excluded)[0]
    logs = []
    for position in range(1, final.shape[1] - 1):
        masked = final[:1].copy()
        masked[0, position] = mask_id
        p = np.asarray(model.predict_on_batch([masked, np.zeros_like(masked)]))[0, position]
        p = np.array(p, "float64")
        p[excluded] = 0
        logs.append(np.log(p[final[0, position]] / p.sum()))
    assert pll == pytest.approx(np.mean(logs), abs=1e-4)


def test_gibbs_conditional_distribution():
    example = load_example("basic_gibbs_sampling_via_mlm")
    probs = np.array([[0.1, 0.2, 0.3, 0.4]])
    out = example.conditional(probs, [3], temperature=0.5, topk=2)
    expected = np.array([0.0, 0.04, 0.09, 0.0]) / 0.13  # squared, top-2 of the rest
    np.testing.assert_allclose(out[0], expected)
    with pytest.raises(ValueError, match="temperature"):
        example.conditional(probs, [], temperature=0)


def test_gibbs_main_smoke():
    example = load_example("basic_gibbs_sampling_via_mlm")
    results = example.main(["--steps", "4", "--chains", "2", "--print-every", "0",
                            "--burn-in", "1", "--seed", "5"])
    assert len(results["final"]) == 2 and results["steps"] == 4
    assert 0 <= results["changed_steps"] <= 8
    assert sum(count for _, count in results["most_common"]) == 2 * 3
    assert all(v <= 0 for v in results["pll_final"]) and results["pll_start"] <= 0


# -- basic_make_uncased_model_cased -----------------------------------------------------------

def test_make_uncased_model_cased(tmp_path):
    """Lower-case text: identical last-layer vectors before and after; the
    saved rows are the original rows (keep_tokens) and the means of the pieces
    (compound_tokens), read back with TensorFlow's own checkpoint reader."""
    import tensorflow as tf

    example = load_example("basic_make_uncased_model_cased")
    out = tmp_path / "cased"
    results = example.main(["--output-dir", str(out), "--words", "TensorFlow",
                            "--text", "Welcome to TensorFlow"])
    assert results["lowercase_same_tokens"] and results["lowercase_max_diff"] <= 1e-6
    assert results["cased_tokens"] == ["[CLS]", "Welcome", "to", "TensorFlow", "[SEP]"]
    assert results["uncased_tokens"][:3] == ["[CLS]", "welcome", "to"]

    with open(os.path.join(SHIPPED, "vocab.txt"), encoding="utf-8") as f:
        old = {token: i for i, token in enumerate(f.read().split("\n")[:-1])}
    with open(out / "vocab.txt", encoding="utf-8") as f:
        new = {token: i for i, token in enumerate(f.read().split("\n")[:-1])}
    assert len(new) == results["new_vocab"] == results["kept"] + results["added"]
    original = tf.train.load_checkpoint(os.path.join(SHIPPED, "bert_model.ckpt"))
    saved = tf.train.load_checkpoint(str(out / "bert_model.ckpt"))
    for name in ("bert/embeddings/word_embeddings", "cls/predictions/output_bias"):
        before, after = original.get_tensor(name), saved.get_tensor(name)
        assert after.shape[0] == len(new)
        for token in ("[CLS]", "welcome", "##ing", "北"):
            np.testing.assert_array_equal(after[new[token]], before[old[token]])
        np.testing.assert_array_equal(after[new["Welcome"]], before[old["welcome"]])
        np.testing.assert_array_equal(after[new["##ING"]], before[old["##ing"]])
        pieces = [old[p] for p in ("te", "##ns", "##or", "##flow")]
        np.testing.assert_allclose(after[new["TensorFlow"]], before[pieces].mean(0), atol=1e-6)


# -- RequestBatcher and basic_simple_web_serving_simbert --------------------------------------

def test_request_batcher_gathers_waiting_calls():
    from bert4keras.snippets import RequestBatcher

    gate, entered = threading.Event(), threading.Event()

    def double(items):
        entered.set()
        assert gate.wait(30)
        return [2 * x for x in items]

    with RequestBatcher(double, max_batch=4, max_wait=0) as batcher:
        first = batcher.submit(1)
        assert entered.wait(30)  # the worker is inside func with [1]
        batcher.max_wait = 30.0
        rest = [batcher.submit(x) for x in range(2, 6)]
        gate.set()
        # the four waiting calls fill one batch, which goes at once (no 30 s wait)
        assert first.result(30) == 2 and [f.result(30) for f in rest] == [4, 6, 8, 10]
        assert batcher.batch_sizes == [1, 4]
        tail = [batcher.submit(6), batcher.submit(7)]
    # close() answers a partial batch without waiting for max_wait
    assert [f.result(0) for f in tail] == [12, 14] and batcher.batch_sizes == [1, 4, 2]
    with pytest.raises(RuntimeError, match="closed"):
        batcher(1)


def test_request_batcher_errors():
    from bert4keras.snippets import RequestBatcher

    with pytest.raises(ValueError, match="max_batch"):
        RequestBatcher(list, max_batch=0)

    def fail(items):
        if "bad" in items:
            raise KeyError("bad item")
        return items[:1]

    with RequestBatcher(fail, max_batch=1, max_wait=0) as batcher:
        with pytest.raises(KeyError, match="bad item"):
            batcher("bad")
        assert batcher("good") == "good"  # the worker survived
    with RequestBatcher(fail, max_batch=2, max_wait=30) as batcher:
        futures = [batcher.submit(x) for x in ("a", "b")]
        errors = [f.exception(30) for f in futures]
    assert batcher.batch_sizes == [2]
    assert all(isinstance(e, ValueError) and "1 results for 2" in str(e) for e in errors)


def test_web_serving_over_http():
    """The service on a free localhost port: /embed equals the model run on
    that text alone; /similar finds a corpus review itself; requests that
    arrive while the model is busy are answered by one batched call."""
    from bert4keras.models import build_transformer_model

    example = load_example("basic_simple_web_serving_simbert")
    service = example.EmbeddingService(example.parse_args(
        ["--port", "0", "--corpus-size", "24", "--max-batch", "4", "--max-wait-ms", "0",
         "--maxlen", "32"]))
    service.web.start(block=False)
    try:
        port = service.web.port
        texts = ["质量很好", "物流太慢了，包装也破了，很失望", "这本书值得一读", "不推荐", "一般般吧"]
        gate, entered = threading.Event(), threading.Event()
        embed = service.batcher.func

        def gated(batch):
            entered.set()
            assert gate.wait(60)
            return embed(batch)

        service.batcher.func = gated
        with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
            first = pool.submit(example.query, port, "/embed", text=texts[0])
            assert entered.wait(60)
            service.batcher.max_wait = 30.0  # the next batch waits for all four
            rest = [pool.submit(example.query, port, "/embed", text=t) for t in texts[1:]]
            deadline = time.time() + 60
            while service.batcher.pending < len(texts) - 1 and time.time() < deadline:
                time.sleep(0.01)
            gate.set()
            answers = [first.result(60)] + [f.result(60) for f in rest]
        service.batcher.func = embed
        service.batcher.max_wait = 0.0
        assert service.batcher.batch_sizes == [1, len(texts) - 1]

        model = build_transformer_model(os.path.join(SHIPPED, "bert_config.json"),
                                        os.path.join(SHIPPED, "bert_model.ckpt"))
        for text, answer in zip(texts, answers):
            ids = np.array([service.tokenizer.encode(text)[0]], "int32")
            hidden = np.asarray(model.predict_on_batch([ids, np.zeros_like(ids)]))[0]
            expected = hidden.mean(0) / np.linalg.norm(hidden.mean(0))
            assert answer["text"] == text
            np.testing.assert_allclose(answer["embedding"], expected, atol=1e-5)

        review = service.corpus[5][0][:20]
        nearest = example.query(port, "/similar", text=review, k=3)
        assert len(nearest) == 3 and nearest[0]["score"] >= nearest[1]["score"]
        assert example.query(port, "/similar", text=service.corpus[5][0], k=1)[0]["text"] \
            == service.corpus[5][0]
        with pytest.raises(RuntimeError, match="lack"):
            example.query(port, "/embed")
    finally:
        service.close()


def test_web_serving_demo_main():
    example = load_example("basic_simple_web_serving_simbert")
    results = example.main(["--port", "0", "--demo", "6", "--corpus-size", "16",
                            "--maxlen", "32", "--max-wait-ms", "50"])
    assert sum(results["batch_sizes"]) == 6 and results["model_calls"] <= 6
    assert 0.0 <= results["nearest_label_agreement"] <= 1.0
