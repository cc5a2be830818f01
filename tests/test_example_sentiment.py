"""Smoke test of the main job: examples/task_sentiment_classification.py runs
end to end on the shipped checkpoint (and from random init), with batches of
several lengths, and its saved .keras model reloads to the same predictions."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_example():
    path = os.path.join(ROOT, "examples", "task_sentiment_classification.py")
    spec = importlib.util.spec_from_file_location("task_sentiment_classification", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extra", [[], ["--random-init"]], ids=["shipped", "random_init"])
def test_sentiment_example_smoke(tmp_path, extra):
    example = load_example()
    results = example.main(["--limit", "48", "--batch-size", "8", "--epochs", "1",
                            "--output", str(tmp_path / "model.keras")] + extra)
    assert 0.0 <= results["test_acc"] <= 1.0
    assert results["reload_diff"] <= 1e-5
    assert (results["checkpoint"] is None) == bool(extra)
    assert os.path.exists(tmp_path / "model.keras")


def test_missing_checkpoint_dir_is_named(tmp_path):
    example = load_example()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        example.main(["--model-dir", str(tmp_path / "nowhere"), "--limit", "8"])
