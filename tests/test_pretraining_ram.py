"""Pretraining with every path under TensorFlow's in-memory ``ram://`` file system
(issue 16, "TPU-ready paths"): records, checkpoints, logs and exports go through
``tf.io.gfile``, as they would to ``gs://`` on a TPU.

``ram://`` lives inside one process, so nothing here runs in a subprocess and the
crash is **simulated**: the interrupted run is stopped by an exception
(:class:`SimulatedKill`, a ``BaseException`` no code of ours catches) raised at
the moment a real kill would hurt most -- after the step-4 checkpoint's files
are complete in their uniquely named directory, before the pointer file that
publishes them is written.  Everything after that point is skipped, as with
SIGKILL (no ``on_train_end``, no final export, an open ``history.csv``);
what a SIGKILL could do beyond that (a torn file) is covered on a local disk by
``tests/test_pretraining_train.py`` and by a torn pointer file added below.
The rerun happens in the same process, as a restarted job would start afresh
(``main`` reseeds everything from ``--seed``); its results are compared
bitwise with an uninterrupted run of the same command.
"""

import re
import uuid

import numpy as np
import pytest

from bert4keras import fileio

keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("ram:// is TensorFlow's file system; records are tf.data",
                allow_module_level=True)

from test_pretraining_train import cli_args, make_tiny_setup  # noqa: E402


class SimulatedKill(BaseException):
    """Stands in for SIGKILL inside one process (see the module docstring)."""


def _ram(name):
    return "ram://%s-%s" % (name, uuid.uuid4().hex[:8])


@pytest.fixture(scope="module")
def ram_tiny(tmp_path_factory):
    """The tiny setup of test_pretraining_train with config, vocab and records in ram://."""
    local = make_tiny_setup(tmp_path_factory.mktemp("tiny_ram"), kinds=())
    from bert4keras.tokenizers import Tokenizer
    from pretraining.data_utils import TrainingDatasetRoBERTa
    from test_pretraining_train import CHARS

    root = _ram("tiny")
    config, vocab = root + "/bert_config.json", root + "/vocab.txt"
    fileio.copy(local["config"], config)
    fileio.copy(local["vocab"], vocab)
    rng = np.random.default_rng(0)
    docs = [["".join(rng.choice(CHARS[:40], size=rng.integers(5, 20)))
             for _ in range(rng.integers(1, 4))] for _ in range(60)]
    data = TrainingDatasetRoBERTa(Tokenizer(local["vocab"]), 32,
                                  word_segment=lambda t: [t[i:i + 2] for i in range(0, len(t), 2)])
    data.process(docs, root + "/records/roberta", num_shards=2, progress=False)
    return {"config": config, "vocab": vocab, "records": {"roberta": root + "/records"}}


def _tensors(prefix):
    from bert4keras.checkpoints import open_checkpoint

    reader = open_checkpoint(prefix)
    return {name: reader.get(name) for name in reader.names()}


def test_records_on_ram_are_listed_and_verified(ram_tiny):
    from pretraining.data_utils import ShardMismatchError, TrainingDatasetRoBERTa

    records = ram_tiny["records"]["roberta"]
    assert fileio.listdir(records) == ["manifest.json", "roberta-00000-of-00002.tfrecord",
                                       "roberta-00001-of-00002.tfrecord"]
    batch = next(iter(TrainingDatasetRoBERTa.load_tfrecord(records, 32, 4)))
    assert batch[1].shape == (4, 32)
    # a truncated shard copy in another ram:// directory is named at load
    copy = _ram("torn-records")
    for name in fileio.listdir(records):
        fileio.copy(records + "/" + name, copy + "/" + name)
    shard = copy + "/roberta-00001-of-00002.tfrecord"
    fileio.write_bytes(shard, fileio.read_bytes(shard)[:-10])
    with pytest.raises(ShardMismatchError, match="roberta-00001-of-00002"):
        TrainingDatasetRoBERTa.load_tfrecord(copy, 32, 4)


def test_pretrain_kill_resume_export_all_on_ram(ram_tiny, monkeypatch):
    from bert4keras.models import build_transformer_model
    from pretraining import resume
    from pretraining.export import export_checkpoint
    from pretraining.plot_history import read_history
    from pretraining.pretraining import main
    from pretraining.resume import CheckpointManager

    whole, broken = _ram("whole"), _ram("broken")
    assert main(cli_args(ram_tiny, whole, **{"--no-jit": True})) == whole + "/bert_model.ckpt"

    publish = resume._pointer_text

    def die_before_publishing(step, data_name, sha256):
        if step == 4:
            raise SimulatedKill("killed before publishing ckpt-00000004")
        return publish(step, data_name, sha256)

    monkeypatch.setattr(resume, "_pointer_text", die_before_publishing)
    with pytest.raises(SimulatedKill):
        main(cli_args(ram_tiny, broken, **{"--no-jit": True}))
    monkeypatch.setattr(resume, "_pointer_text", publish)
    ckpts = broken + "/checkpoints"
    names = fileio.listdir(ckpts)
    assert [n for n in names if n.startswith("ckpt-00000002")][0] == "ckpt-00000002"
    assert "ckpt-00000004" not in names  # its files exist, unpublished
    assert any(n.startswith("ckpt-00000004.") for n in names), names
    assert not fileio.exists(broken + "/bert_model.ckpt.index")
    # a newer pointer file that is torn: must be skipped, not resumed from
    fileio.write_text(ckpts + "/ckpt-00000099", '{"form')

    with pytest.warns(UserWarning, match="Ignoring checkpoint .*ckpt-00000099"):
        main(cli_args(ram_tiny, broken, **{"--no-jit": True}))
    names = fileio.listdir(ckpts)
    pointers = [n for n in names if re.fullmatch(r"ckpt-\d{8}(\.corrupt)?", n)]
    assert pointers == ["ckpt-00000004", "ckpt-00000006", "ckpt-00000099.corrupt"], names
    data = [n for n in names if n not in pointers]  # one directory per kept checkpoint,
    assert len(data) == 2, names  # the unpublished one of the killed run removed
    assert all(re.fullmatch(r"ckpt-0000000[46]\.\d+-[0-9a-f]{8}", n) for n in data), names
    assert fileio.isdir(ckpts + "/" + data[0]) and fileio.isfile(ckpts + "/ckpt-00000004")

    # Same final weights as the uninterrupted run, bitwise ...
    a, b = _tensors(whole + "/bert_model.ckpt"), _tensors(broken + "/bert_model.ckpt")
    assert sorted(a) == sorted(b) and len(a) > 20
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # ... and the same training state (moments, iteration, dropout seeds).
    meta_a, state_a = CheckpointManager.read(whole + "/checkpoints/ckpt-00000006")
    meta_b, state_b = CheckpointManager.read(ckpts + "/ckpt-00000006")
    assert meta_a["sha256"] == meta_b["sha256"]
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    # The history on ram:// is continuous and equal.
    history_a, _ = read_history(whole)
    history_b, _ = read_history(broken)
    np.testing.assert_array_equal(history_b["loss"][0], np.arange(1, 7))
    np.testing.assert_array_equal(history_a["loss"][1], history_b["loss"][1])

    # Export an intermediate checkpoint to ram:// and load it with build_transformer_model.
    exported = _ram("export")
    prefix = export_checkpoint(ckpts + "/ckpt-00000004", ram_tiny["config"], exported,
                               ram_tiny["vocab"])
    assert prefix == exported + "/bert_model.ckpt"
    assert fileio.read_text(exported + "/vocab.txt") == fileio.read_text(ram_tiny["vocab"])
    meta, arrays = CheckpointManager.read(ckpts + "/ckpt-00000004")
    stored = {spec[0]: arrays["v%05d" % i] for i, spec in enumerate(meta["variables"])}
    model = build_transformer_model(exported + "/bert_config.json", prefix, with_mlm=True)
    np.testing.assert_array_equal(model.get_layer("Embedding-Token").embeddings.numpy(),
                                  stored["Embedding-Token/embeddings"])
    np.testing.assert_array_equal(_tensors(prefix)["bert/embeddings/word_embeddings"],
                                  stored["Embedding-Token/embeddings"])
    # the run's own final export loads from ram:// too (config found in the directory)
    final = build_transformer_model(broken, broken + "/bert_model.ckpt", with_mlm=True)
    np.testing.assert_array_equal(final.get_layer("Embedding-Token").embeddings.numpy(),
                                  a["bert/embeddings/word_embeddings"])
