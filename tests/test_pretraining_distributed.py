"""Data-parallel pretraining on one machine equals one-device training.

Each test runs in a subprocess that splits the host into 2 devices before
the framework starts: 2 logical CPU devices for ``tf.distribute.
MirroredStrategy``, ``--xla_force_host_platform_device_count=2`` for JAX's
``keras.distribution.DataParallel``.  In that process the same tiny run is
trained on one device with ``--batch-size 8`` and on two with
``--batch-size 4`` (the same global batch of 8), and the loss curves and the
final training states (weights and optimizer slots) are compared.

Dropout is off: masks are drawn per replica, so with dropout the two runs
agree in distribution but not number for number.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_pretraining_train import ROOT, cli_args, make_tiny_setup

TF_DRIVER = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pretraining.pretraining import main
runs = json.loads(sys.argv[1])
for args in runs:
    main(args)
# Keras' gradient accumulation cannot run under tf.distribute: refused up front.
try:
    main(runs[-1] + ["--grad-accum", "2"])
except ValueError as exc:
    print("REFUSED:", exc)
"""

JAX_DRIVER = """
import json, sys
import jax
assert len(jax.devices()) == 2, jax.devices()
from pretraining.pretraining import main
for args in json.loads(sys.argv[1]):
    main(args)
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_setup(tmp_path_factory.mktemp("tiny_distributed"), dropout=0.0)


def run_driver(code, runs, env):
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", **env)
    result = subprocess.run([sys.executable, "-c", code, json.dumps(runs)], cwd=ROOT,
                            env=full_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def compare_runs(one, two, steps, tolerance=1e-5):
    """Same per-step loss/accuracy/learning rate and the same final training state."""
    with open(os.path.join(two, "train_info.json")) as f:
        info = json.load(f)
    assert info["replicas"] == 2 and info["global_batch_size"] == 8, info
    rows = []
    for out in (one, two):
        with open(os.path.join(out, "history.csv"), newline="") as f:
            rows.append(list(csv.DictReader(f)))
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]] == [
        str(i) for i in range(1, steps + 1)]
    for key in ("loss", "accuracy", "learning_rate"):
        a = np.array([float(r[key]) for r in rows[0]])
        b = np.array([float(r[key]) for r in rows[1]])
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance, err_msg=key)
    assert np.ptp([float(r["loss"]) for r in rows[0]]) > 1e-3  # it did train

    final = "checkpoints/ckpt-%08d" % steps
    with open(os.path.join(one, final, "meta.json")) as f:
        names = [v[0] for v in json.load(f)["variables"]]
    moved = 0.0
    with np.load(os.path.join(one, final, "state.npz")) as a, \
            np.load(os.path.join(two, final, "state.npz")) as b:
        assert sorted(a.files) == sorted(b.files)
        for index, name in enumerate(names):
            key = "v%05d" % index
            np.testing.assert_allclose(a[key], b[key], rtol=tolerance, atol=tolerance,
                                       err_msg=name)
            if "momentum" in name:
                moved = max(moved, float(np.abs(a[key]).max()))
    assert moved > 1e-3  # the optimizer state is not trivially zero


def test_mirrored_strategy_matches_one_device(tiny, tmp_path):
    # Global-norm clipping is active (--clipnorm 0.1): it must act on the
    # all-reduced gradient.  (XLA cannot compile for logical CPU devices.)
    extra = {"--dropout": 0, "--clipnorm": 0.1, "--no-jit": True}
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    runs = [cli_args(tiny, one, **dict(extra, **{"--batch-size": 8})),
            cli_args(tiny, two, **dict(extra, **{"--batch-size": 4, "--strategy": "mirrored"}))]
    result = run_driver(TF_DRIVER, runs, {"KERAS_BACKEND": "tensorflow"})
    assert "not XLA-compiled" in result.stdout
    assert "REFUSED: --grad-accum with --optimizer adamw" in result.stdout
    compare_runs(one, two, steps=6)


def test_jax_data_parallel_matches_one_device(tiny, tmp_path):
    # With clipping and Keras' gradient accumulation over 2 batches.
    extra = {"--dropout": 0, "--clipnorm": 0.1, "--grad-accum": 2, "--steps": 4,
             "--save-every": 2}
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    runs = [cli_args(tiny, one, **dict(extra, **{"--batch-size": 8})),
            cli_args(tiny, two, **dict(extra, **{"--batch-size": 4,
                                                 "--strategy": "data_parallel"}))]
    run_driver(JAX_DRIVER, runs, {"KERAS_BACKEND": "jax",
                                  "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    compare_runs(one, two, steps=4)
