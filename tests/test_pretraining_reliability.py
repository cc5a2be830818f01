"""Reliability of pretraining/ (issue 16): scripts run as files, logging never kills a
run, no flag is a silent no-op, diverged runs never overwrite good checkpoints, records
are checked against the config and their manifest, and a broken out-dir is named.

Tiny models only (hidden 32, 2 layers, vocab 100; see ``test_pretraining_train``).
"""

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from test_pretraining_train import ROOT, cli_args, make_tiny_setup, read_history, run_training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_setup(tmp_path_factory.mktemp("tiny_reliability"), kinds=("roberta", "gpt"))


# ---------------------------------------------------------------------------
# 1. Every runnable file runs both as a file and as a module
# ---------------------------------------------------------------------------

RUNNABLE = ["pretraining", "data_utils", "export", "plot_history", "corpora"]


#: Runs each file as ``python pretraining/<name>.py --help`` would, one after
#: another in one process: the file's folder first on ``sys.path`` and the
#: ``pretraining`` package, ``_as_script`` and the folder's modules not yet
#: imported (TensorFlow and bert4keras stay imported: ~7 s of start-up each).
HELP_DRIVER = r"""
import contextlib, io, json, os, runpy, sys
folder = sys.argv[1]
shadowed = [f[:-3] for f in os.listdir(folder) if f.endswith(".py")]
path = list(sys.path)
for name in sys.argv[2:]:
    for module in list(sys.modules):
        if module.split(".")[0] in ["pretraining"] + shadowed:
            del sys.modules[module]
    sys.path[:] = [folder] + [p for p in path if p not in ("", folder)]
    file = os.path.join(folder, name + ".py")
    sys.argv[:] = [file, "--help"]
    out, err, code = io.StringIO(), io.StringIO(), None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(file, run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code
        except BaseException as error:  # reported, not raised: the next file still runs
            code = repr(error)
    print(json.dumps({"name": name, "code": code, "out": out.getvalue()[:500],
                      "err": err.getvalue()[-2000:]}))
"""


def test_runnable_files_show_help(tmp_path):
    """``python path/to/pretraining/<name>.py --help`` for every runnable
    file, from another directory (the file shadows the package of the same
    name on ``sys.path``: :mod:`pretraining._as_script` must undo that); the
    files run one after another in one fresh process (:data:`HELP_DRIVER`)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", HELP_DRIVER, os.path.join(ROOT, "pretraining"),
                           *RUNNABLE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [row["name"] for row in rows] == RUNNABLE, proc.stdout[-2000:]
    for row in rows:
        assert row["code"] in (0, None), row
        assert row["out"].startswith("usage:"), row
        assert "ImportError" not in row["err"], row


@pytest.mark.parametrize("name", RUNNABLE)
def test_runnable_modules_show_help(name, monkeypatch, capsys):
    """``python -m pretraining.<name> --help``: the module run as ``__main__``
    beside its imported copy, as ``-m`` does (in this process: ``runpy`` is
    what ``-m`` calls; the fresh-process imports are the file test's)."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["pretraining." + name, "--help"])
    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # found in sys.modules: as -m after import
        with pytest.raises(SystemExit) as exit_:
            runpy.run_module("pretraining." + name, run_name="__main__", alter_sys=True)
    assert exit_.value.code in (0, None)
    assert capsys.readouterr().out.startswith("usage:")


# ---------------------------------------------------------------------------
# 2. Logging never kills training
# ---------------------------------------------------------------------------


class TBNotInstalledError(Exception):
    """Stands for tensorflow's error when TensorBoard is not installed."""


def test_tensorboard_failure_falls_back_to_csv(tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    from pretraining.pretraining import TrainingLogger

    def scalar(*args, **kwargs):
        raise TBNotInstalledError("TensorBoard is not installed, missing implementation for "
                                  "scalar")

    monkeypatch.setattr(tf.summary, "scalar", scalar)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x, y = np.ones((16, 3), "float32"), np.zeros((16, 1), "float32")
    logger = TrainingLogger(str(tmp_path), log_every=1, batches_per_epoch=4, total_batches=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=4, epochs=1, callbacks=[logger], verbose=0)
    tb = [w for w in caught if "TensorBoard" in str(w.message)]
    assert len(tb) == 1, [str(w.message) for w in caught]
    assert "TBNotInstalledError" in str(tb[0].message) and "history.csv" in str(tb[0].message)
    assert [r["step"] for r in read_history(str(tmp_path))] == ["1", "2", "3", "4"]


# ---------------------------------------------------------------------------
# 3. No flag is a silent no-op
# ---------------------------------------------------------------------------

_U = np.full((4, 4), 0.25, "float32")  # unit Frobenius norm


def _apply(optimizer_name, weight_decay=0.0, clipnorm=0.0, grad_accum=1, grads=None):
    """Weights after applying ``grads`` (default: zero, once) to a (4, 4) ``kernel`` of ones."""
    import keras

    from pretraining.pretraining import make_optimizer

    optimizer = make_optimizer(optimizer_name, 0.1, weight_decay, grad_accum, clipnorm)
    kernel = keras.Variable(np.ones((4, 4), "float32"), name="kernel")
    optimizer.build([kernel])
    for grad in grads if grads is not None else [np.zeros((4, 4), "float32")]:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(grad), kernel)])
    return keras.ops.convert_to_numpy(kernel)


@pytest.mark.parametrize("flag", ["weight_decay", "clipnorm", "grad_accum"])
@pytest.mark.parametrize("optimizer", ["adamw", "lamb", "tiger"])
def test_every_optimizer_flag_acts(optimizer, flag):
    from pretraining.pretraining import OPTIMIZER_FLAGS

    assert flag in OPTIMIZER_FLAGS
    if flag == "weight_decay":  # zero gradients: only the decay moves the weights
        off, on = _apply(optimizer), _apply(optimizer, weight_decay=0.5)
        np.testing.assert_allclose(on, off * (1 - 0.1 * 0.5), rtol=1e-5)
    elif flag == "clipnorm":  # clipped, the second gradient outweighs the first
        grads = [100 * _U, -10 * _U]
        off, on = _apply(optimizer, grads=grads), _apply(optimizer, clipnorm=1.0, grads=grads)
    else:  # one of two accumulated batches moves nothing
        grads = [_U]
        off, on = _apply(optimizer, grads=grads), _apply(optimizer, grad_accum=2, grads=grads)
        np.testing.assert_array_equal(on, np.ones((4, 4)))
    assert not np.allclose(on, off, rtol=1e-4, atol=0), (optimizer, flag)


@pytest.mark.parametrize("model, flags", [
    ("gpt", ["--max-predictions", "8"]),
    ("unilm", ["--max-predictions", "8"]),
    ("roberta", ["--tpu-address", "grpc://10.0.0.2:8470"]),
    ("roberta", ["--tpu-timeout", "30"]),
    ("roberta", ["--strategy", "mirrored", "--tpu-timeout", "30"]),
])
def test_flags_without_effect_are_errors(model, flags, capsys):
    from pretraining.pretraining import parse_args

    base = ["--config", "c.json", "--vocab", "v.txt", "--records", "r", "--out-dir", "o",
            "--model", model]
    with pytest.raises(SystemExit):
        parse_args(base + flags)
    assert "has no effect" in capsys.readouterr().err
    # where they act they are accepted
    args = parse_args(base[:-1] + ["roberta", "--max-predictions", "8", "--strategy", "tpu",
                                   "--tpu-timeout", "30"])
    assert args.max_predictions == 8 and args.tpu_timeout == 30
    assert parse_args(base).tpu_timeout == 600


# ---------------------------------------------------------------------------
# 4. A diverging run never saves a non-finite checkpoint
# ---------------------------------------------------------------------------


def _all_finite_checkpoints(out_dir):
    from pretraining.resume import CheckpointManager

    manager = CheckpointManager(os.path.join(out_dir, "checkpoints"))
    found = manager.checkpoints()
    for _, path in found:
        meta, arrays = manager.read(path)
        for value in arrays.values():
            if value.dtype.kind == "f":
                assert np.isfinite(value).all(), path
    return [os.path.basename(p) for _, p in found]


def test_diverging_adamw_run_stops_and_keeps_good_checkpoint(tiny, tmp_path):
    out = str(tmp_path / "run")
    # step 1 runs at learning rate 0 (warm-up starts there) and is saved; step 2 at 1e30
    args = cli_args(tiny, out, **{"--lr": 1e30, "--warmup-steps": 1, "--steps": 6,
                                  "--save-every": 1, "--keep-checkpoints": 2, "--no-jit": True})
    proc = run_training(args)
    assert proc.returncode != 0
    assert "training diverged" in proc.stderr, proc.stderr[-3000:]
    message = proc.stderr[proc.stderr.index("training diverged"):]
    assert "at step 2" in message or "at step 3" in message, message[:500]
    kept = _all_finite_checkpoints(out)
    assert kept and kept[-1] in ("ckpt-00000001", "ckpt-00000002"), kept
    assert not os.path.exists(os.path.join(out, "bert_model.ckpt.index"))


def test_diverging_tiger_run_never_saves_non_finite_state(tiny, tmp_path, capsys):
    from pretraining.pretraining import NonFiniteLossGuard, main
    from pretraining.resume import NonFiniteStateError

    out = str(tmp_path / "run")
    steps = NonFiniteLossGuard.MAX_CONSECUTIVE + 6
    args = cli_args(tiny, out, **{"--optimizer": "tiger", "--lr": 1e30, "--warmup-steps": 1,
                                  "--steps": steps, "--save-every": 1, "--no-jit": True})
    with pytest.raises(NonFiniteStateError, match=r"training diverged: .* in a row, up to "
                                                  r"step \d+"):
        main(args)
    assert "the optimizer's non-finite guard skipped this update" in capsys.readouterr().out
    kept = _all_finite_checkpoints(out)
    assert kept and int(kept[-1][-8:]) < steps, kept
    assert not os.path.exists(os.path.join(out, "bert_model.ckpt.index"))


def test_guarded_optimizer_skips_and_logs_a_non_finite_step(tmp_path, capsys):
    """One NaN batch under Tiger: skipped, logged (its row is nan), later rows exact."""
    import keras

    from bert4keras.optimizers import Tiger
    from pretraining.pretraining import NonFiniteLossGuard, TrainingLogger

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3)).astype("float32")
    y = rng.normal(size=(24, 1)).astype("float32")
    x[8:12] = np.nan  # batch 3 of 6

    def fit(x, y, batches):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=Tiger(learning_rate=0.01, weight_decay=0.0, shrink_ratio=1.0),
                      loss="mse")  # shrink_ratio=1.0: the skip option (default shrinks)
        logger = TrainingLogger(str(tmp_path), 1, batches, batches)
        guard = NonFiniteLossGuard(True, batches_per_epoch=batches, logger=logger)
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, callbacks=[logger, guard],
                  verbose=0)
        return model, guard, [float(r["loss"]) for r in read_history(str(tmp_path))]

    model, guard, losses = fit(x, y, 6)
    assert guard.skipped == [3]
    assert "non-finite loss (nan) at step 3" in capsys.readouterr().out
    assert np.isnan(losses[2]) and np.isfinite(losses[:2] + losses[3:]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # the skipped batch changed nothing: the same run without it gives the same losses
    keep = np.r_[0:8, 12:24]
    _, _, reference = fit(x[keep], y[keep], 5)
    np.testing.assert_allclose(losses[:2] + losses[3:], reference, rtol=1e-5)


# ---------------------------------------------------------------------------
# 5, 6. Records checked against the config and their manifest
# ---------------------------------------------------------------------------


def test_records_with_a_larger_vocabulary_are_refused(tiny, tmp_path):
    from pretraining.pretraining import RecordsMismatchError, main

    with open(tiny["config"]) as f:
        config = json.load(f)
    small = str(tmp_path / "config50.json")
    with open(small, "w") as f:
        json.dump(dict(config, vocab_size=50), f)
    args = cli_args(tiny, str(tmp_path / "run"), **{"--config": small, "--no-jit": True})
    with pytest.raises(RecordsMismatchError) as info:
        main(args)
    message = str(info.value)
    assert "100-token" in message and "vocab_size 50" in message
    assert "manifest.json" in message and "config50.json" in message


def _copy_records(tiny, tmp_path):
    records = str(tmp_path / "records")
    shutil.copytree(tiny["records"]["gpt"], records)
    with open(os.path.join(records, "manifest.json")) as f:
        return records, json.load(f)


@pytest.mark.parametrize("old_manifest", [False, True])
def test_truncated_shard_is_named(tiny, tmp_path, old_manifest):
    from pretraining.data_utils import ShardMismatchError, TrainingDatasetGPT

    records, manifest = _copy_records(tiny, tmp_path)
    if old_manifest:  # written before shard sizes were recorded: records are counted
        del manifest["shard_bytes"]
        with open(os.path.join(records, "manifest.json"), "w") as f:
            json.dump(manifest, f)
    shard = os.path.join(records, manifest["files"][1])
    with open(shard, "rb") as f:
        data = f.read()
    # cut at a record boundary, as an interrupted writer leaves it: records read fine
    import tensorflow as tf

    lengths = [len(r.numpy()) + 16 for r in tf.data.TFRecordDataset(shard)]
    with open(shard, "wb") as f:
        f.write(data[:sum(lengths[:len(lengths) // 2])])
    with pytest.raises(ShardMismatchError, match=manifest["files"][1]):
        TrainingDatasetGPT.load_tfrecord(records, 32, 4)
    # a glob of the same files is checked against the manifest beside them too
    with pytest.raises(ShardMismatchError, match=manifest["files"][1]):
        TrainingDatasetGPT.load_tfrecord(os.path.join(records, "*.tfrecord"), 32, 4)


def test_interrupted_rewrite_leaves_records_consistent(tiny, tmp_path):
    from bert4keras.tokenizers import Tokenizer
    from pretraining.data_utils import TrainingDatasetGPT, verify_shards

    records, manifest = _copy_records(tiny, tmp_path)
    before = {n: open(os.path.join(records, n), "rb").read() for n in manifest["files"]}

    def corpus():
        for i in range(40):
            if i == 30:
                raise KeyboardInterrupt("killed while writing")
            yield ["%s" % chr(0x4E00 + i % 40) * 12]

    data = TrainingDatasetGPT(Tokenizer(tiny["vocab"]), 32)
    with pytest.raises(KeyboardInterrupt):
        data.process(corpus(), os.path.join(records, "gpt"), num_shards=2, progress=False,
                     chunk_size=4)
    assert sorted(os.listdir(records)) == sorted(manifest["files"] + ["manifest.json"])
    for name, content in before.items():
        with open(os.path.join(records, name), "rb") as f:
            assert f.read() == content, name
    verify_shards(os.path.join(records, "manifest.json"))
    TrainingDatasetGPT.load_tfrecord(records, 32, 4)


# ---------------------------------------------------------------------------
# 7. A broken out-dir is named; all-corrupt checkpoints stop the run
# ---------------------------------------------------------------------------


def test_garbage_history_row_and_corrupt_checkpoints(tiny, tmp_path):
    from pretraining.pretraining import NoValidCheckpointError, main

    out = str(tmp_path / "run")
    base = {"--steps": 2, "--save-every": 1, "--no-jit": True}
    main(cli_args(tiny, out, **base))
    with open(os.path.join(out, "history.csv"), "a") as f:
        f.write("\x00\x01garbage,,,\n")
    with pytest.warns(UserWarning, match=r"history\.csv: dropped 1 unreadable row\(s\) \(line 4"):
        main(cli_args(tiny, out, **dict(base, **{"--steps": 3})))
    assert [r["step"] for r in read_history(out)] == ["1", "2", "3"]
    assert os.path.exists(os.path.join(out, "history.csv.bad"))

    checkpoints = os.path.join(out, "checkpoints")
    for name in os.listdir(checkpoints):  # corrupt every checkpoint
        with open(os.path.join(checkpoints, name, "state.npz"), "r+b") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last[0] ^ 0xFF]))
    args = cli_args(tiny, out, **dict(base, **{"--steps": 4}))
    for _ in range(2):  # the second time they are already moved aside as .corrupt
        with pytest.warns(UserWarning) if _ == 0 else warnings.catch_warnings():
            with pytest.raises(NoValidCheckpointError, match=r"ckpt-0000000[23].*--start-over"):
                main(args)
    assert main(args + ["--start-over"]) is not None
    assert read_history(out)[-1]["step"] == "4"
