"""Smoke and mechanism tests of four gallery recipes (issue 15):

* ``task_iflytek_bert_of_theseus.py``: runs on the iFLYTEK sample (phase 3,
  the successor's fine-tuning, is phase 1's code: skipped here to save
  time); the module-replacing phase leaves the predecessor frozen; the
  replacement layer draws Bernoulli(p) per call and is the successor at
  inference;
* ``task_iflytek_multigpu.py``: on 2 logical CPU devices (TensorFlow
  ``MirroredStrategy``; JAX ``DataParallel`` with
  ``--xla_force_host_platform_device_count=2``), each in a subprocess, the
  per-step losses and the final weights equal a one-device run's;
* ``task_sentiment_albert.py``: runs from random init; its weight count is
  the one ALBERT's shared block gives (counted by hand);
* ``task_relation_extraction_gplinker.py``: runs on the DuIE sample and its
  loss falls; the sparse loss equals the dense multi-label cross-entropy
  computed in NumPy; decoding turns pair scores into the right triple.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
IFLYTEK = os.path.join(EXAMPLES, "data", "iflytek_sample")
TINY = ["--maxlen", "32", "--batch-size", "8", "--log-every", "0"]
#: a 2-block BERT of the shipped vocabulary, random init: the smoke runs trace it fast
SMALL_CONFIG = dict(vocab_size=13585, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128, hidden_act="gelu", hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1, max_position_embeddings=128,
                    type_vocab_size=2, initializer_range=0.02)


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory):
    """``--config`` of :data:`SMALL_CONFIG` plus ``--random-init``."""
    path = tmp_path_factory.mktemp("small_bert") / "bert_config.json"
    path.write_text(json.dumps(SMALL_CONFIG), encoding="utf-8")
    return ["--config", str(path), "--random-init"]


# --- BERT-of-Theseus --------------------------------------------------------


def test_theseus_runs_on_the_iflytek_sample(tmp_path, small_bert):
    import task_iflytek_bert_of_theseus as theseus

    results = theseus.main(TINY + small_bert + [
        "--train", os.path.join(IFLYTEK, "train.json"), "--valid", os.path.join(IFLYTEK, "dev.json"),
        "--labels", os.path.join(IFLYTEK, "labels.json"), "--limit", "16",
        "--predecessor-epochs", "1", "--theseus-epochs", "1", "--successor-epochs", "0",
        "--output", str(tmp_path / "successor.keras")])
    pred, succ = results["predecessor"], results["successor"]
    assert (pred["blocks"], succ["blocks"]) == (2, 1)
    assert succ["params"] < pred["params"]
    for acc in (pred["test_acc"], succ["test_acc"], results["successor_before_finetune_test_acc"]):
        assert 0.0 <= acc <= 1.0
    assert results["scored_split"].startswith("valid")  # the sample has no labelled test file
    assert results["theseus"]["frozen_unchanged"]  # only the successor blocks learned
    assert len(results["theseus"]["val_acc"]) == 1 and results["successor"]["val_acc"] == []
    assert results["reload_diff"] <= 1e-5


def test_module_replacing_draws_per_call():
    import keras

    from task_iflytek_bert_of_theseus import BernoulliModuleReplace

    old, new = np.zeros((2, 3, 4), "float32"), np.ones((2, 3, 4), "float32")
    never = BernoulliModuleReplace(0.0, seed=1)
    always = BernoulliModuleReplace(1.0, seed=1)
    half = BernoulliModuleReplace(0.5, seed=1)
    assert np.all(keras.ops.convert_to_numpy(never([old, new], training=True)) == 0)
    assert np.all(keras.ops.convert_to_numpy(always([old, new], training=True)) == 1)
    assert np.all(keras.ops.convert_to_numpy(half([old, new], training=False)) == 1)
    draws = [keras.ops.convert_to_numpy(half([old, new], training=True)) for _ in range(200)]
    assert all(np.all(d == d.flat[0]) for d in draws)  # one draw for the whole batch
    replaced = sum(float(d.flat[0]) for d in draws)
    assert 70 <= replaced <= 130  # Binomial(200, 0.5): outside this range p < 1e-4
    with pytest.raises(ValueError, match="rate must be in"):
        BernoulliModuleReplace(1.5)


def test_iflytek_reader_names_the_problem(tmp_path):
    from common import DataFormatError
    from iflytek_kit import load_data, load_iflytek

    assert load_iflytek(os.path.join(IFLYTEK, "train.json"), limit=2)[0][1] == 0
    examples = load_iflytek(os.path.join(IFLYTEK, "train.json"))
    assert len(examples) == 32 and {label for _, label in examples} == {0, 1, 2, 3}
    with pytest.raises(DataFormatError, match=r"test\.json:1: missing field 'label'"):
        load_iflytek(os.path.join(IFLYTEK, "test.json"))
    odd = tmp_path / "odd.json"  # CLUE's ids are the classes: "10" is class 10, not re-indexed
    odd.write_text('{"label": "10", "sentence": "x"}\n{"label": "b", "sentence": "y"}\n',
                   encoding="utf-8")
    assert load_iflytek(str(odd), limit=1) == [("x", 10)]
    with pytest.raises(DataFormatError, match=r"odd\.json:2: field 'label' must be a class id"):
        load_iflytek(str(odd))
    labels = tmp_path / "labels.json"
    labels.write_text('{"label": "0", "label_des": "x"}\n', encoding="utf-8")

    class Args:
        train, valid = os.path.join(IFLYTEK, "train.json"), os.path.join(IFLYTEK, "dev.json")
        test, labels, limit = None, str(tmp_path / "labels.json"), None

    with pytest.raises(ValueError, match="label id 3 is not in"):
        load_data(Args)


# --- data parallel ------------------------------------------------------------

DRIVER = """
import json, sys
sys.path.insert(0, %r)
import task_iflytek_multigpu as recipe
args = json.loads(sys.argv[1])
one = recipe.main(args + ["--strategy", "default"])
two = recipe.main(args + ["--strategy", sys.argv[2]])
print("RESULTS " + json.dumps([one, two]))
""" % EXAMPLES


@pytest.mark.parametrize("backend,strategy", [("tensorflow", "mirrored"),
                                              ("jax", "data_parallel")])
def test_data_parallel_on_two_devices_matches_one(backend, strategy, small_bert):
    """Global batch 8 on one device vs 4 + 4 on two: same losses, same weights."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if backend == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    args = ["--limit", "16", "--steps", "2", "--epochs", "1", "--dropout", "0",
            "--cpu-devices", "2", "--maxlen", "16"] + TINY[2:] + small_bert
    run = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(args), strategy], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    line = [x for x in run.stdout.splitlines() if x.startswith("RESULTS ")][-1]
    one, two = json.loads(line[len("RESULTS "):])
    assert (one["replicas"], two["replicas"], two["strategy"]) == (1, 2, strategy)
    assert one["backend"] == backend
    assert len(one["losses"]) == len(two["losses"]) == 2
    np.testing.assert_allclose(one["losses"], two["losses"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one["weights_digest"], two["weights_digest"], rtol=1e-5,
                               atol=1e-5)


# --- ALBERT -----------------------------------------------------------------------


def test_albert_from_scratch(tmp_path):
    import task_sentiment_albert as albert

    results = albert.main(TINY + ["--limit", "16", "--epochs", "1",
                                  "--output", str(tmp_path / "albert.keras")])
    assert 0.0 <= results["test_acc"] <= 1.0
    assert not results["pretrained"]
    assert results["reload_diff"] <= 1e-5
    # one shared block: counted by hand from the built-in config (vocab 13,585)
    vocab, emb, hidden, ffn, pos = 13585, 128, 192, 768, 512
    embeddings = vocab * emb + pos * emb + 2 * emb + 2 * emb + emb * hidden + hidden
    block = 4 * (hidden * hidden + hidden) + 2 * 2 * hidden + hidden * ffn + ffn + ffn * hidden \
        + hidden
    assert results["encoder_params"] == embeddings + block
    assert results["params"] == embeddings + block + hidden * 2 + 2


# --- GPLinker ----------------------------------------------------------------------


def test_gplinker_runs_on_the_duie_sample(small_bert):
    import task_relation_extraction_gplinker as gplinker

    results = gplinker.main(small_bert + ["--limit", "8", "--maxlen", "64", "--epochs", "2",
                                          "--output", "", "--log-every", "0"])
    assert 0.0 <= results["dev"]["f1"] <= 1.0
    assert results["data"]["spos_placed"] > 0
    assert results["losses"][1] < results["losses"][0]


def test_sparse_loss_is_the_dense_multilabel_crossentropy():
    import keras

    from task_relation_extraction_gplinker import pack, sparse_global_pointer_loss

    rng = np.random.default_rng(0)
    batch, heads, length = 2, 3, 5
    scores = rng.normal(0, 3, (batch, heads, length, length)).astype("float32")
    gold = [[{(1, 2), (3, 3)}, set(), {(2, 4)}], [{(4, 1)}, {(1, 1), (2, 3), (0, 4)}, set()]]
    loss = keras.ops.convert_to_numpy(sparse_global_pointer_loss(pack(gold, batch), scores))
    expected = np.zeros(batch)
    for b in range(batch):
        for h in range(heads):
            flat = scores[b, h].reshape(-1).astype("float64")
            positive = np.zeros(flat.shape, bool)
            for i, j in gold[b][h]:
                positive[i * length + j] = True
            real = np.arange(flat.size) != 0  # index 0, the pair (0, 0), is padding
            expected[b] += np.log1p(np.exp(-flat[positive & real]).sum())
            expected[b] += np.log1p(np.exp(flat[~positive & real]).sum())
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_gplinker_decodes_pair_scores_into_triples():
    from bert4keras.tokenizers import Tokenizer
    from competition_lic2020_relation_extraction import Encoded
    from task_relation_extraction_gplinker import decode

    tokenizer = Tokenizer(os.path.join(ROOT, "checkpoints", "chinese_bert_small", "vocab.txt"))
    enc = Encoded(tokenizer, "周杰伦的歌", 32)  # [CLS] 周 杰 伦 的 歌 [SEP]
    relations = [("国籍", "@value"), ("歌手", "@value")]
    entities = np.full((2, 7, 7), -5.0)
    heads, tails = np.full((2, 7, 7), -5.0), np.full((2, 7, 7), -5.0)
    entities[0, 5, 5] = entities[1, 1, 3] = 4.0  # subject 歌, object 周杰伦
    entities[1, 0, 6] = 9.0  # a span over [CLS]..[SEP] is never an entity
    heads[1, 5, 1] = tails[1, 5, 3] = 3.0  # relation 1 (歌手): head pair and tail pair
    heads[0, 5, 1] = 3.0  # relation 0: head pair only, not a triple
    assert decode(enc, entities, heads, tails, relations) == [("歌", "歌手", "@value", "周杰伦", 0)]
