"""Core model tests on the JAX and PyTorch backends (Keras fixes the backend
per process, so they run in a subprocess with ``KERAS_BACKEND=jax`` /
``torch``). Same-weights parity across all three backends, decoding included,
is tests/test_backend_parity.py."""

import os

import pytest

from conftest import rerun_on_backend

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = ["test_bert.py", "test_minilm.py"]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_core_suite_on_backend(backend):
    rerun_on_backend(backend, [os.path.join(HERE, f) for f in CORE], timeout=1800)
