#!/usr/bin/env bash
# Install bert4keras with its test extras and run the whole suite: TensorFlow
# backend (the default) for everything; tests/test_backends.py re-runs the core
# model tests on JAX in a subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
python -m pytest -q "$@"
