"""Tests for pretraining.pretraining / pretraining.resume / pretraining.plot_history.

The end-to-end tests train a tiny BERT (hidden 32, 2 layers, vocab 100,
sequences of 32) for a few steps in subprocesses, so that a run can be
killed with SIGKILL exactly like a crashed job.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARS = [chr(0x4E00 + i) for i in range(95)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_setup(root, kinds=("roberta",), dropout=0.1):
    """vocab.txt (100 tokens), bert_config.json (hidden 32, 2 layers) and records.

    Returns ``{"config", "vocab", "records": {kind: dir}}``.
    """
    from bert4keras.tokenizers import Tokenizer
    from pretraining.data_utils import TrainingDatasetGPT, TrainingDatasetRoBERTa

    root = str(root)
    os.makedirs(root, exist_ok=True)
    vocab = os.path.join(root, "vocab.txt")
    with open(vocab, "w", encoding="utf-8") as f:
        f.write("\n".join(SPECIALS + CHARS) + "\n")
    config = os.path.join(root, "bert_config.json")
    with open(config, "w") as f:
        json.dump(dict(vocab_size=len(SPECIALS) + len(CHARS), hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       hidden_act="gelu", max_position_embeddings=64, type_vocab_size=2,
                       hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                       initializer_range=0.02), f)
    rng = np.random.default_rng(0)
    docs = [["".join(rng.choice(CHARS[:40], size=rng.integers(5, 20)))
             for _ in range(rng.integers(1, 4))] for _ in range(60)]
    tokenizer = Tokenizer(vocab)
    records = {}
    for kind in kinds:
        if kind == "roberta":
            data = TrainingDatasetRoBERTa(
                tokenizer, 32, word_segment=lambda t: [t[i:i + 2] for i in range(0, len(t), 2)])
        else:
            data = TrainingDatasetGPT(tokenizer, 32)
        records[kind] = os.path.join(root, "records_" + kind)
        data.process(docs, os.path.join(records[kind], kind), num_shards=2, progress=False)
    return {"config": config, "vocab": vocab, "records": records}


def cli_args(tiny, out_dir, kind="roberta", **overrides):
    """Command-line arguments of a tiny run (``overrides``: flag -> value, None = bare flag)."""
    flags = {"--model": kind, "--config": tiny["config"], "--vocab": tiny["vocab"],
             "--records": tiny["records"][kind], "--seq-len": 32, "--batch-size": 4,
             "--steps": 6, "--warmup-steps": 2, "--lr": 1e-3, "--save-every": 2,
             "--log-every": 1, "--seed": 0, "--out-dir": out_dir}
    flags.update(overrides)
    args = []
    for flag, value in flags.items():
        if value is False:
            continue
        args.append(flag)
        if value is not None and value is not True:
            args.append(str(value))
    return args


DRIVER = """
import sys
CALLBACKS = []
{prelude}
from pretraining.pretraining import main
main(sys.argv[1:], callbacks=CALLBACKS)
"""


def run_training(args, prelude="", env=None, timeout=600):
    """Run ``pretraining.pretraining.main(args)`` in a fresh Python process."""
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow",
                    CUDA_VISIBLE_DEVICES="")
    full_env.update(env or {})
    code = DRIVER.format(prelude=textwrap.dedent(prelude))
    return subprocess.run([sys.executable, "-c", code] + list(args), cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def checkpoint_tensors(prefix):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def read_history(out_dir):
    with open(os.path.join(out_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_setup(tmp_path_factory.mktemp("tiny_pretraining"), kinds=("roberta", "gpt"))


# ---------------------------------------------------------------------------
# Exact resume after SIGKILL
# ---------------------------------------------------------------------------

# Dies right after the temporary directory of the step-4 checkpoint is complete
# and fsync-ed, before the rename that publishes it: a kill in the middle of a
# save, two steps after the last published checkpoint (ckpt-2).
KILL_DURING_SAVE = """
import os, signal
from pretraining import resume
_fsync_dir = resume._fsync_dir
def _fsync_then_die(path):
    _fsync_dir(path)
    if os.path.basename(path).startswith(".tmp-ckpt-00000004"):
        os.kill(os.getpid(), signal.SIGKILL)
resume._fsync_dir = _fsync_then_die
"""


def test_sigkill_then_rerun_matches_uninterrupted_run(tiny, tmp_path):
    whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
    # --no-jit: XLA compilation would triple the time of these tiny runs.
    result = run_training(cli_args(tiny, whole, **{"--no-jit": True}))
    assert result.returncode == 0, result.stderr[-3000:]

    killed = run_training(cli_args(tiny, broken, **{"--no-jit": True}), KILL_DURING_SAVE)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpts = os.path.join(broken, "checkpoints")
    assert sorted(os.listdir(ckpts))[0].startswith(".tmp-ckpt-00000004")
    assert os.path.isdir(os.path.join(ckpts, "ckpt-00000002"))
    assert not os.path.exists(os.path.join(ckpts, "ckpt-00000004"))
    assert not os.path.exists(os.path.join(broken, "bert_model.ckpt.index"))
    # A newer checkpoint that is torn: must be skipped, not resumed from.
    torn = os.path.join(ckpts, "ckpt-00000099")
    shutil.copytree(os.path.join(ckpts, "ckpt-00000002"), torn)
    with open(os.path.join(torn, "state.npz"), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(torn, "state.npz")) // 2)

    resumed = run_training(cli_args(tiny, broken, **{"--no-jit": True}))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Ignoring checkpoint" in resumed.stderr and "ckpt-00000099" in resumed.stderr
    assert "Resuming from" in resumed.stdout and "ckpt-00000002" in resumed.stdout
    assert "step 2, 2 batches consumed" in resumed.stdout
    names = sorted(os.listdir(ckpts))
    assert names == ["ckpt-00000004", "ckpt-00000006", "ckpt-00000099.corrupt"], names

    # Same final weights, bitwise: the Google checkpoint ...
    a = checkpoint_tensors(os.path.join(whole, "bert_model.ckpt"))
    b = checkpoint_tensors(os.path.join(broken, "bert_model.ckpt"))
    assert sorted(a) == sorted(b) and len(a) > 20
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # ... and the whole training state (optimizer moments, iteration, dropout seeds).
    with np.load(os.path.join(whole, "checkpoints", "ckpt-00000006", "state.npz")) as x, \
            np.load(os.path.join(ckpts, "ckpt-00000006", "state.npz")) as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
    # The loss curve is continuous: every step once, same values.
    rows_a, rows_b = read_history(whole), read_history(broken)
    assert [r["step"] for r in rows_b] == [str(i) for i in range(1, 7)]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    with open(os.path.join(broken, "bert_config.json")) as f:
        assert json.load(f)["hidden_size"] == 32
    assert os.path.exists(os.path.join(broken, "vocab.txt"))

    # Rerunning a finished run trains nothing and rewrites the same export.
    again = run_training(cli_args(tiny, broken, **{"--no-jit": True}))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Epoch" not in again.stdout
    c = checkpoint_tensors(os.path.join(broken, "bert_model.ckpt"))
    for name in a:
        np.testing.assert_array_equal(a[name], c[name], err_msg=name)


# ---------------------------------------------------------------------------
# Checkpoint manager
# ---------------------------------------------------------------------------


def test_checkpoint_manager_atomic_keep_and_corruption(tmp_path):
    from pretraining.resume import CheckpointManager

    directory = str(tmp_path / "ckpts")
    manager = CheckpointManager(directory, keep=2)
    for step in (1, 2, 3):
        manager.save(step, {"v00000": np.full(3, step, "float32")},
                     {"variables": [["w", [3], "float32"]], "batches": step})
    assert [s for s, _ in manager.checkpoints()] == [2, 3]
    path, meta, arrays = manager.latest()
    assert meta["step"] == 3 and meta["batches"] == 3
    np.testing.assert_array_equal(arrays["v00000"], [3, 3, 3])

    # Leftover temporaries are never read, and are removed by the next writer.
    temp = os.path.join(directory, ".tmp-ckpt-00000009-123")
    shutil.copytree(path, temp)
    assert manager.latest()[0] == path
    CheckpointManager(directory)
    assert not os.path.exists(temp)

    # Each kind of damage to the newest checkpoint falls back to the previous one.
    damages = {
        "no meta": lambda d: os.remove(os.path.join(d, "meta.json")),
        "torn meta": lambda d: open(os.path.join(d, "meta.json"), "w").write('{"form'),
        "no state": lambda d: os.remove(os.path.join(d, "state.npz")),
        "flipped byte": lambda d: _flip_last_byte(os.path.join(d, "state.npz")),
        "empty dir": lambda d: [os.remove(os.path.join(d, n)) for n in os.listdir(d)],
    }
    for i, (what, damage) in enumerate(damages.items()):
        step = 10 + i
        bad = manager.save(step, {"v00000": np.zeros(3, "float32")},
                           {"variables": [["w", [3], "float32"]], "batches": step})
        good = manager.checkpoints()[-2][1]
        damage(bad)
        with pytest.warns(UserWarning, match="Ignoring checkpoint"):
            found = manager.latest()
        assert found is not None and found[0] == good, what
        assert os.path.exists(bad + ".corrupt") and not os.path.exists(bad), what
    # A checkpoint of a stranger format is ignored too.
    os.makedirs(os.path.join(directory, "ckpt-00000999"))
    with open(os.path.join(directory, "ckpt-00000999", "meta.json"), "w") as f:
        json.dump({"format": "something-else"}, f)
    with pytest.warns(UserWarning, match="not a bert4keras"):
        assert manager.latest()[0] != os.path.join(directory, "ckpt-00000999")


def _flip_last_byte(path):
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))


def test_restore_state_refuses_another_model():
    import keras

    from pretraining.resume import CheckpointMismatchError, capture_state, restore_state

    def model(width):
        inputs = keras.Input((4,))
        m = keras.Model(inputs, keras.layers.Dense(width)(keras.layers.Dropout(0.1)(inputs)))
        m.compile(optimizer="adam", loss="mse")
        m.optimizer.build(m.trainable_variables)
        return m

    source = model(3)
    arrays, specs = capture_state(source)
    # weights, one dropout seed state, and the optimizer's iteration/lr/moments
    assert len(arrays) == len(source.variables) + len(source.optimizer.variables)
    target = model(3)
    restore_state(target, arrays, specs)
    for a, b in zip(source.variables, target.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(CheckpointMismatchError, match=r"shape \(4, 3\).*shape \(4, 5\)"):
        restore_state(model(5), arrays, specs)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind, extra", [
    ("gpt", {"--optimizer": "tiger", "--lr": 2e-3, "--mixed-precision": "mixed_bfloat16",
             "--recompute": True}),
    ("roberta", {"--optimizer": "lamb", "--mixed-precision": "mixed_float16",
                 "--grad-accum": 2}),
])
def test_options_train_and_export(tiny, tmp_path, kind, extra):
    import keras

    from bert4keras.models import build_transformer_model
    from pretraining.pretraining import main

    out = str(tmp_path / "run")
    policy = keras.mixed_precision.global_policy().name
    args = cli_args(tiny, out, kind, **{"--steps": 2, "--save-every": 1, "--no-jit": True,
                                        **extra})
    prefix = main(args)
    assert keras.mixed_precision.global_policy().name == policy  # restored
    rows = read_history(out)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    with open(os.path.join(out, "checkpoints", "ckpt-00000002", "meta.json")) as f:
        meta = json.load(f)
    assert meta["batches"] == 2 * int(extra.get("--grad-accum", 1))
    paths = [v[0] for v in meta["variables"]]
    if extra["--mixed-precision"] == "mixed_float16":
        assert any("dynamic_scale" in p for p in paths)  # loss-scale state is saved
    if extra["--optimizer"] == "tiger":
        assert any("momentum" in p for p in paths)
    # The export is a float32 Google checkpoint that loads back.
    tensors = checkpoint_tensors(prefix)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in tensors.values())
    model = build_transformer_model(os.path.join(out, "bert_config.json"), prefix)
    np.testing.assert_array_equal(
        model.get_layer("Embedding-Token").embeddings.numpy(),
        tensors["bert/embeddings/word_embeddings"])


def test_recompute_gives_the_same_gradients(tiny):
    import keras

    from pretraining.pretraining import build_pretraining_model, recompute_layer_names

    rng = np.random.default_rng(0)
    x = {"Input-Token": rng.integers(5, 100, (2, 16)).astype("int32"),
         "Input-Segment": np.zeros((2, 16), "int32")}
    y = rng.integers(5, 100, (2, 16)).astype("int32")
    results = []
    for recompute in (False, True):
        keras.utils.set_random_seed(0)
        model, transformer = build_pretraining_model(tiny["config"], "gpt", 8,
                                                     recompute=recompute, dropout_rate=0.0,
                                                     attention_dropout_rate=0.0)
        if recompute:
            from bert4keras.models.recompute import RecomputeBlock

            block = transformer.model.get_layer(recompute_layer_names(2)[0])
            assert isinstance(block, RecomputeBlock)  # the block runs under keras.remat
        model.compile(optimizer=keras.optimizers.SGD(1.0),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.train_on_batch(x, y)
        results.append([np.asarray(v) for v in model.trainable_variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_argument_errors(tiny, tmp_path):
    from pretraining.pretraining import main

    with pytest.raises(SystemExit):
        main(cli_args(tiny, str(tmp_path), **{"--optimizer": "sgd"}))
    with pytest.raises(SystemExit):
        main(cli_args(tiny, str(tmp_path), **{"--save-every": 0}))
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        main(cli_args(tiny, str(tmp_path), **{"--strategy": "data_parallel"}))


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def test_plot_history_from_csv_and_tensorboard(tmp_path):
    import tensorflow as tf

    from pretraining.plot_history import main, read_history

    run = tmp_path / "run"
    run.mkdir()
    with open(run / "history.csv", "w") as f:
        f.write("step,loss,accuracy,learning_rate,wall_time\n")
        for step in range(1, 21):
            f.write("%d,%f,%f,%f,0\n" % (step, 5 - step / 10, step / 40, 1e-3))
    out = main([str(run)])
    assert out == str(run / "history.png")
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # TensorBoard events, with steps 3..4 logged twice (a resumed run): last wins.
    logs = tmp_path / "tb" / "logs" / "train"
    for offset, steps in ((0.0, range(1, 5)), (1.0, range(3, 7))):
        writer = tf.summary.create_file_writer(str(logs), filename_suffix=".%d" % offset)
        with writer.as_default():
            for step in steps:
                tf.summary.scalar("loss", 10.0 * offset + step, step=step)
        writer.close()
    history, axis = read_history(str(tmp_path / "tb"))
    steps, values = history["loss"]
    np.testing.assert_array_equal(steps, [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(values, [1, 2, 13, 14, 15, 16])
    png = main([str(tmp_path / "tb" / "logs"), str(run / "history.csv"),
                "--out", str(tmp_path / "both.png"), "--labels", "tb", "csv"])
    assert os.path.getsize(png) > 1000

    # An older per-epoch Keras CSVLogger file.
    with open(tmp_path / "epochs.csv", "w") as f:
        f.write("epoch,accuracy,loss\n0,0.1,7.0\n1,0.2,6.0\n")
    history, axis = read_history(str(tmp_path / "epochs.csv"))
    assert axis == "epoch" and list(history["loss"][0]) == [1, 2]
