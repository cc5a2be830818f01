"""Smoke test of the main job: examples/task_sentiment_classification.py runs
end to end on the shipped checkpoint (and from random init), with batches of
several lengths, and its saved .keras model reloads to the same predictions."""

import os

import pytest

from conftest import load_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sentiment_example():
    return load_example("task_sentiment_classification")


@pytest.mark.parametrize("extra", [[], ["--random-init"]], ids=["shipped", "random_init"])
def test_sentiment_example_smoke(tmp_path, extra):
    example = sentiment_example()
    results = example.main(["--limit", "48", "--batch-size", "8", "--epochs", "1",
                            "--output", str(tmp_path / "model.keras")] + extra)
    assert 0.0 <= results["test_acc"] <= 1.0
    assert results["reload_diff"] <= 1e-5
    assert (results["checkpoint"] is None) == bool(extra)
    assert os.path.exists(tmp_path / "model.keras")
    if not extra:  # --compare of the saved model with itself: no difference at all
        same = example.main(["--limit", "48", "--batch-size", "8", "--compare",
                             str(tmp_path / "model.keras"), str(tmp_path / "model.keras")])
        assert same["acc_a"] == same["acc_b"] == results["test_acc"]
        assert same["a_only"] == same["b_only"] == 0 and same["mcnemar_p"] == 1.0
        with pytest.raises(FileNotFoundError, match="nowhere.keras"):
            example.main(["--limit", "8", "--compare", str(tmp_path / "model.keras"),
                          str(tmp_path / "nowhere.keras")])


def test_paired_comparison_matches_the_binomial_test():
    """Exact McNemar p-values: hand-computed, and scipy.stats.binomtest's
    value for the 98-vs-69 split reported in the README."""
    import numpy as np

    example = sentiment_example()
    a = np.array([1, 1, 1, 0, 1], bool)
    b = np.array([0, 0, 0, 0, 1], bool)
    result = example.paired_comparison(a, b, resamples=200)
    assert (result["a_only"], result["b_only"]) == (3, 0)
    assert result["mcnemar_p"] == pytest.approx(0.25)  # 2 * (1/2) ** 3
    assert result["diff"] == pytest.approx(0.6)
    a = np.r_[np.ones(98, bool), np.zeros(69, bool), np.ones(1000, bool)]
    b = np.r_[np.zeros(98, bool), np.ones(69, bool), np.ones(1000, bool)]
    result = example.paired_comparison(a, b, resamples=200)
    assert result["mcnemar_p"] == pytest.approx(0.029951223196102755, rel=1e-9)
    assert result["diff_95ci"][0] < result["diff"] < result["diff_95ci"][1]
    with pytest.raises(ValueError, match="different texts"):
        example.paired_comparison(a, b[:10])


def test_missing_checkpoint_dir_is_named(tmp_path):
    example = sentiment_example()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        example.main(["--model-dir", str(tmp_path / "nowhere"), "--limit", "8"])


def test_shipped_bert_is_pretrained():
    """The main job's default checkpoint is the MLM that ``pretraining`` trained:
    loaded from the shipped Google-format files, it restores characters of
    People's Daily text replaced by ``[MASK]`` (every sixth position) far above
    chance (1/13,585), and copies unmasked characters through its tied output
    embedding. Measured on these 1,024 positions: random init 0.0, the
    2,500 / 6,500 / 10,000-step checkpoints 0.069 / 0.103 / 0.146 (the training
    log's 0.22 also counts the 10 % of chosen tokens left unchanged); a
    mis-mapped checkpoint is near zero on both."""
    import numpy as np

    from bert4keras.datasets import load_peoples_daily_sentences
    from bert4keras.models import build_transformer_model
    from bert4keras.tokenizers import Tokenizer

    directory = os.path.join(ROOT, "checkpoints", "chinese_bert_small")
    tokenizer = Tokenizer(os.path.join(directory, "vocab.txt"), do_lower_case=True)
    mlm = build_transformer_model(os.path.join(directory, "bert_config.json"),
                                  os.path.join(directory, "bert_model.ckpt"), with_mlm=True)
    sentences = [s for s in load_peoples_daily_sentences() if len(s) >= 24][:256]
    ids = [tokenizer.encode(s, maxlen=48)[0] for s in sentences]
    width = min(len(t) for t in ids)
    ids = np.array([t[:width - 1] + [t[-1]] for t in ids], dtype="int32")  # keep [SEP]
    masked = np.zeros(ids.shape, bool)
    masked[:, 1:-1:6] = True
    inputs = np.where(masked, tokenizer.token_to_id("[MASK]"), ids)
    restored = np.asarray(mlm.predict([inputs, np.zeros_like(inputs)], verbose=0, batch_size=64))
    accuracy = float(np.mean(restored.argmax(-1)[masked] == ids[masked]))
    assert accuracy > 0.12, accuracy
    copied = np.asarray(mlm.predict([ids, np.zeros_like(ids)], verbose=0, batch_size=64))
    assert float(np.mean(copied.argmax(-1)[masked] == ids[masked])) > 0.9
