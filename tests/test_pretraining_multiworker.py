"""``--strategy multiworker``: two worker processes on localhost equal one device.

A cluster is run the way a user runs one: two processes, each with its own
``TF_CONFIG`` (the same cluster of two ``localhost`` gRPC ports, task index
0 and 1), both started with the same ``python -m pretraining.pretraining ...
--strategy multiworker --batch-size 4`` command and the same (shared)
``--out-dir``.  Their run must follow a one-process ``--batch-size 8`` run:
the same per-step loss, accuracy and learning rate, and the same final
weights and optimizer state (:func:`test_pretraining_distributed.compare_runs`).
Only the chief (worker 0) may write into ``--out-dir``.

Then the same cluster is killed with SIGKILL mid-run (both workers, from
outside, one step after a checkpoint), restarted once with a non-shared
``--out-dir`` on worker 1 (both workers must refuse, and worker 1 must not
create it), and restarted with the original command: it must resume from
the checkpoint and end with bitwise the same state and loss curve as the
uninterrupted cluster run.

Every wait has a timeout: a worker that fails makes the test kill the other
one and fail with both logs, instead of leaving it blocked in a collective.
Dropout is off (its masks are drawn per replica).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from test_pretraining_distributed import compare_runs
from test_pretraining_train import DRIVER, ROOT, cli_args, make_tiny_setup, read_history

#: Seconds one cluster run may take before it counts as hung (the machine may be busy).
RUN_TIMEOUT = 420

# Both workers stop after the 5th batch (step 5; ckpt-4 is written at the end
# of step 4) and wait there to be killed by the test.
PAUSE_AFTER_STEP_5 = """
import os, time, keras

class PauseForKill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 2 and batch == 0:
            open(os.environ["PAUSED_MARKER"], "w").close()
            time.sleep(3600)

CALLBACKS.append(PauseForKill())
"""


def _localhost_ports(count):
    """``count`` distinct free TCP ports on localhost (None if binding fails)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    except OSError:
        return None
    finally:
        for s in sockets:
            s.close()


class Cluster:
    """Two ``--strategy multiworker`` processes on localhost, with logs in ``log_dir``."""

    def __init__(self, log_dir):
        ports = _localhost_ports(2)
        if ports is None:
            pytest.skip("cannot bind TCP ports on localhost, so no gRPC cluster can run here")
        self.workers = ["localhost:%d" % p for p in ports]
        self.log_dir = str(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        self.procs, self.logs, self.cwds = [], [], []

    def env(self, index):
        config = {"cluster": {"worker": self.workers},
                  "task": {"type": "worker", "index": index}}
        return dict(os.environ, TF_CONFIG=json.dumps(config), KERAS_BACKEND="tensorflow",
                    TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                    PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def start(self, name, args_per_worker, prelude=None, extra_env=None):
        """Start one process per worker: ``python -m pretraining.pretraining ARGS``.

        Every start gets fresh ports (those of a killed cluster may still be
        held for a while).
        """
        self.workers = ["localhost:%d" % p for p in _localhost_ports(2)]
        self.procs, self.logs, self.cwds = [], [], []
        for index, args in enumerate(args_per_worker):
            if prelude is None:
                command = [sys.executable, "-m", "pretraining.pretraining"]
            else:
                command = [sys.executable, "-c", DRIVER.format(prelude=prelude)]
            log = os.path.join(self.log_dir, "%s-worker%d.log" % (name, index))
            env = dict(self.env(index), **(extra_env or {}).get(index, {}))
            cwd = os.path.join(self.log_dir, "%s-cwd%d" % (name, index))  # must stay empty
            os.makedirs(cwd)
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen(
                    command + list(args), cwd=cwd, env=env, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True))
            self.logs.append(log)
            self.cwds.append(cwd)
        return self.procs

    def text(self, index):
        with open(self.logs[index], errors="replace") as f:
            return f.read()

    def report(self):
        return "\n".join("---- worker %d (rc %s) ----\n%s" % (
            i, p.poll(), self.text(i)[-3000:]) for i, p in enumerate(self.procs))

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    def wait(self, expect_ok=True, until=None, timeout=RUN_TIMEOUT):
        """Wait until every worker exits (or ``until()`` holds); kill all on a timeout.

        With ``expect_ok``, a worker that exits non-zero fails the test at
        once (the other one is killed, both logs are shown).
        """
        deadline = time.time() + timeout
        while time.time() < deadline:
            codes = [p.poll() for p in self.procs]
            if expect_ok and any(c not in (None, 0) for c in codes):
                self.kill()
                pytest.fail("a worker failed:\n" + self.report())
            if until is not None and until():
                return codes
            if until is None and all(c is not None for c in codes):
                return codes
            time.sleep(0.5)
        self.kill()
        pytest.fail("the cluster did not finish within %d s (hung?):\n%s"
                    % (timeout, self.report()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_setup(tmp_path_factory.mktemp("tiny_multiworker"), dropout=0.0)


def _state(out_dir, step):
    path = os.path.join(out_dir, "checkpoints", "ckpt-%08d" % step, "state.npz")
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def test_two_workers_match_one_device_and_resume_after_sigkill(tiny, tmp_path):
    # Global-norm clipping is on (it must act on the all-reduced gradient);
    # --no-jit keeps these tiny runs short.
    extra = {"--dropout": 0, "--clipnorm": 0.1, "--no-jit": True}
    one, two, killed = (str(tmp_path / name) for name in ("one", "two", "killed"))
    cluster = Cluster(tmp_path / "logs")
    command = cli_args(tiny, two, **dict(extra, **{"--batch-size": 4,
                                                   "--strategy": "multiworker"}))

    # The one-device reference runs beside the cluster (it is independent of it).
    env = dict(cluster.env(0), TF_CONFIG="")
    with open(os.path.join(cluster.log_dir, "one.log"), "w") as out:
        reference = subprocess.Popen(
            [sys.executable, "-m", "pretraining.pretraining"]
            + cli_args(tiny, one, **dict(extra, **{"--batch-size": 8})),
            cwd=str(tmp_path), env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        cluster.start("two", [command, command])
        cluster.wait()
        assert reference.wait(timeout=RUN_TIMEOUT) == 0, open(out.name).read()[-3000:]
    finally:
        cluster.kill()
        if reference.poll() is None:
            reference.kill()
    compare_runs(one, two, steps=6)
    for i in (0, 1):
        assert "task worker:%d of 2 worker(s)" % i in cluster.text(i)

    # Only the chief (worker 0) wrote: one TensorBoard file, named with its pid,
    # no temporaries, one history row per step (checked by compare_runs), and
    # nothing in the workers' working directories.
    assert [os.listdir(cwd) for cwd in cluster.cwds] == [[], []]
    chief_pid = cluster.procs[0].pid
    events = os.listdir(os.path.join(two, "logs", "train"))
    assert len(events) == 1 and ".%d." % chief_pid in events[0], (events, chief_pid)
    assert sorted(os.listdir(two)) == sorted([
        "bert_config.json", "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index",
        "checkpoint", "checkpoints", "history.csv", "logs", "train_info.json", "vocab.txt"])
    assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == [
        "ckpt-00000004", "ckpt-00000006"]
    with open(os.path.join(two, "train_info.json")) as f:
        assert json.load(f)["strategy"] == "multiworker"

    # Kill both workers with SIGKILL one step after ckpt-4 ...
    markers = [str(tmp_path / ("paused%d" % i)) for i in (0, 1)]
    command = cli_args(tiny, killed, **dict(extra, **{"--batch-size": 4,
                                                      "--strategy": "multiworker"}))
    cluster.start("killed", [command, command], prelude=PAUSE_AFTER_STEP_5,
                  extra_env={i: {"PAUSED_MARKER": markers[i]} for i in (0, 1)})
    try:
        cluster.wait(until=lambda: all(os.path.exists(m) for m in markers))
    finally:
        cluster.kill()
    assert [p.returncode for p in cluster.procs] == [-signal.SIGKILL] * 2
    ckpts = os.path.join(killed, "checkpoints")
    assert sorted(os.listdir(ckpts)) == ["ckpt-00000002", "ckpt-00000004"]
    assert [r["step"] for r in read_history(killed)] == ["1", "2", "3", "4", "5"]
    assert not os.path.exists(os.path.join(killed, "bert_model.ckpt.index"))

    # ... a restart where worker 1 cannot see the chief's --out-dir is refused
    # by both workers, before any training, and worker 1 creates nothing ...
    elsewhere = str(tmp_path / "not_shared")
    cluster.start("not-shared", [command, cli_args(tiny, elsewhere, **dict(
        extra, **{"--batch-size": 4, "--strategy": "multiworker"}))])
    try:
        codes = cluster.wait(expect_ok=False)
    finally:
        cluster.kill()
    assert all(code not in (None, 0) for code in codes), cluster.report()
    for i in (0, 1):
        assert "the workers disagree on the state to resume from" in cluster.text(i), \
            cluster.report()
    assert "ckpt-00000004" in cluster.text(0) and "no checkpoint" in cluster.text(1)
    assert not os.path.exists(elsewhere)
    assert sorted(os.listdir(ckpts)) == ["ckpt-00000002", "ckpt-00000004"]

    # ... and rerunning the same command on both resumes from ckpt-4 and ends
    # exactly where the uninterrupted cluster run ended.
    cluster.start("resumed", [command, command])
    try:
        cluster.wait()
    finally:
        cluster.kill()
    for i in (0, 1):
        assert "ckpt-00000004: step 4, 4 batches consumed" in cluster.text(i), cluster.report()
    assert sorted(os.listdir(ckpts)) == ["ckpt-00000004", "ckpt-00000006"]
    a, b = _state(two, 6), _state(killed, 6)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    rows_a, rows_b = read_history(two), read_history(killed)
    assert [r["step"] for r in rows_b] == [str(i) for i in range(1, 7)]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    compare_runs(one, killed, steps=6)


# ---------------------------------------------------------------------------
# TF_CONFIG errors (no cluster needed)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw, message", [
    ("", "needs the TF_CONFIG environment variable"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": ', "not valid JSON"),
    ('["localhost:1"]', "must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster" object'),
    ('{"cluster": {"worker": ["localhost:1"]}}', 'no "task" object'),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker"}}',
     "job\\(s\\) 'ps'"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
     "cluster.worker must be a non-empty list"),
    ('{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}',
     "cluster.worker\\[1\\] must be \"host:port\", got 'b'"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
     "lists 'a:1' twice"),
    ('{"cluster": {"chief": ["a:1", "b:1"], "worker": ["c:1"]}, '
     '"task": {"type": "chief", "index": 0}}', "cluster.chief must list one address"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "task.type is 'chief' but the cluster has only 'worker'"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "task.index is 2 but cluster.worker has 2 address\\(es\\) \\(valid: 0..1\\)"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}',
     "task.index is '0'"),
])
def test_tf_config_errors(raw, message):
    from pretraining.distribute import read_tf_config

    with pytest.raises(ValueError, match=message):
        read_tf_config({"TF_CONFIG": raw})


def test_tf_config_accepted():
    from pretraining.distribute import read_tf_config

    raw = json.dumps({"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222",
                                                                     "[::1]:2223"]},
                      "task": {"type": "worker", "index": 1}})
    cluster, task_type, index = read_tf_config({"TF_CONFIG": raw})
    assert (task_type, index) == ("worker", 1) and cluster["chief"] == ["host0:2222"]


def test_cli_without_tf_config_fails_clearly(tiny, tmp_path, monkeypatch):
    import keras

    from pretraining.pretraining import main

    if keras.backend.backend() != "tensorflow":
        pytest.skip("--strategy multiworker is TensorFlow only")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="--strategy multiworker needs the TF_CONFIG"):
        main(cli_args(tiny, str(out), **{"--strategy": "multiworker"}))
    assert not out.exists()


def test_tpu_that_never_answers_stops_with_the_address_named():
    """``--strategy tpu`` at an address where no TPU listens: TensorFlow would
    wait forever in ``initialize_tpu_system``; we stop after ``tpu_timeout``
    with exit code 2 (or TensorFlow's own error re-raised) naming the address.
    No TPU exists on this machine: this is the only TPU path tested here."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = "grpc://127.0.0.1:%d" % port
    code = ("from pretraining import distribute; "
            "distribute.setup('tpu', %r, tpu_timeout=5)" % address)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode != 0 and address in proc.stderr, proc.stderr[-2000:]
    if proc.returncode == 2:
        assert "no TPU answered at --tpu-address" in proc.stderr
    assert time.time() - start < 170
