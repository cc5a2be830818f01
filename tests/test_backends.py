"""Core model tests on the JAX and PyTorch backends (Keras fixes the backend
per process, so they run in a subprocess with ``KERAS_BACKEND=jax`` /
``torch``). Same-weights parity across all three backends, decoding included,
is tests/test_backend_parity.py."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = ["test_bert.py", "test_minilm.py"]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_core_suite_on_backend(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        # one process (no nested xdist workers: the suite already runs two)
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-o", "addopts=", *[os.path.join(HERE, f) for f in CORE]],
        cwd=os.path.dirname(HERE), env=env, capture_output=True, text=True, timeout=1800)
    tail = "\n".join(result.stdout.splitlines()[-30:])
    assert result.returncode == 0, "core tests failed on %s:\n%s\n%s" % (
        backend, tail, result.stderr[-3000:])
    assert " passed" in tail and "failed" not in tail, tail
