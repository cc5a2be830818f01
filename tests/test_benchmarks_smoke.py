"""Cheap checks of benchmarks/pretraining.py (no run, no timing: the script's
own ``--quick`` mode is the smoke run; it needs TensorFlow, torch and an XLA
compilation, too slow for the suite)."""

import importlib.util
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    path = os.path.join(ROOT, "benchmarks", "pretraining.py")
    spec = importlib.util.spec_from_file_location("bench_pretraining", path)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
        import pretraining  # the package, not the benchmark file of the same name

        assert os.path.dirname(os.path.abspath(pretraining.__file__)) == os.path.join(
            ROOT, "pretraining")
    finally:
        sys.path[:] = saved
    return module


def test_full_labels_against_a_loop(bench):
    rng = np.random.default_rng(0)
    batch, seq_len, predictions = 3, 16, 5
    positions = np.stack([rng.permutation(seq_len)[:predictions] for _ in range(batch)])
    labels = rng.integers(1, 50, size=(batch, predictions))
    weights = (rng.random((batch, predictions)) < 0.6).astype("float32")
    expected = np.full((batch, seq_len), -100)
    for b in range(batch):
        for j in range(predictions):
            if weights[b, j] > 0:
                expected[b, positions[b, j]] = labels[b, j]
    got = bench.full_labels((batch, seq_len), positions, labels, weights)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64


def test_arguments_and_flops(bench):
    args = bench.parse_args(["--quick"])
    assert args.shape_list == ["small"] and args.rounds == 1
    with pytest.raises(SystemExit):
        bench.parse_args(["--shapes", "large"])
    spec = dict(batch=2, seq_len=8, layers=1, hidden=4, intermediate=6, vocab_size=10)
    head = 2.0 * (4 * 4 + 4 * 10)
    per_token = 4 * 4 * 4 + 2 * 4 * 6 + 2 * 8 * 4
    assert bench.step_flops(spec, 3) == 3.0 * (2.0 * 16 * per_token + 3 * head)


def test_torch_linear_one_round(monkeypatch):
    """benchmarks/torch_linear.py, one round at 2 rows: every variant
    (oneDNN on the kernel's view, on an (out, in) copy and on a blocked copy,
    the E^T copy, the q/k/v kernels joined, the blocked table) computes what
    the workload's first variant computes, and a row per (workload,
    variant) comes out; the blocked copy is made for the rows the library
    packs for."""
    from bert4keras.layers import direct

    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    path = os.path.join(ROOT, "benchmarks", "torch_linear.py")
    spec = importlib.util.spec_from_file_location("bench_torch_linear", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--rows", "2", "--rounds", "1", "--reps", "1"])
    assert [(r["workload"], r["variant"]) for r in rows] == [
        ("ffn", "addmm"), ("ffn", "onednn view"), ("ffn", "onednn (out,in)"),
        ("ffn", "onednn packed"), ("ffn", "addmm, 1 thread"),
        ("qkv", "packed apart"), ("qkv", "packed joined"),
        ("head", "matmul view"), ("head", "matmul E^T copy"), ("head", "onednn"),
        ("head", "onednn packed")]
    for r in rows:  # products of ~3072 terms of size ~1: float32 summation order only
        assert r["max_diff"] < 1e-2 and r["ms"] > 0, r
    assert module.PACK_ROWS == direct.PACK_ROWS
