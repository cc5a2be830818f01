"""Checkpoint files on any file system (issue 16): damaged files are named,
and the readers/writers work on TensorFlow's in-memory ``ram://`` as on disk."""

import json
import pathlib
import shutil
import uuid

import numpy as np
import pytest

from bert4keras import fileio
from bert4keras.checkpoints import (
    CheckpointError,
    SafetensorsReader,
    TFCheckpointReader,
    open_checkpoint,
    write_hf_directory,
    write_tf_checkpoint,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = ROOT / "checkpoints" / "chinese_bert_small"
DATA = "bert_model.ckpt.data-00000-of-00001"


def _ram(name):
    return "ram://%s-%s" % (name, uuid.uuid4().hex[:8])


def _truncated_copy(tmp_path):
    out = tmp_path / "small"
    out.mkdir()
    for f in SMALL.iterdir():
        if f.name.startswith("bert_model.ckpt") or f.name in ("checkpoint", "bert_config.json"):
            shutil.copy(f, out / f.name)
    data = out / DATA
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    return out


def test_truncated_data_file_names_file_and_variable(tmp_path):
    out = _truncated_copy(tmp_path)
    reader = open_checkpoint(str(out / "bert_model.ckpt"))
    errors = []  # the variables stored in the cut-off half of the .data file
    for name in reader.names():
        try:
            reader.get(name)
        except CheckpointError as exc:
            errors.append((name, str(exc)))
    assert errors, "half of %s was cut off but every variable read" % DATA
    name, message = errors[0]
    assert str(out / "bert_model.ckpt") in message and repr(name) in message
    assert "IndexError" in message or "truncated" in message


def test_truncated_data_file_through_build_transformer_model(tmp_path):
    from bert4keras.models import build_transformer_model

    out = _truncated_copy(tmp_path)
    with pytest.raises(CheckpointError, match="bert_model.ckpt") as info:
        build_transformer_model(str(out / "bert_config.json"), str(out / "bert_model.ckpt"))
    assert "Cannot read variable" in str(info.value)
    assert not isinstance(info.value, IndexError)


def test_damaged_safetensors_names_file(tmp_path):
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    write_hf_directory(tmp_path / "hf", tensors, {"model_type": "bert"})
    weights = tmp_path / "hf" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        SafetensorsReader(str(tmp_path / "hf")).get("a")


def test_tf_checkpoint_round_trip_on_ram():
    directory = _ram("tfckpt")
    tensors = {"bert/x": np.arange(12, dtype=np.float32).reshape(3, 4),
               "bert/y": np.array([1, 2, 3], dtype=np.int32)}
    write_tf_checkpoint(directory + "/bert_model.ckpt", tensors)
    assert fileio.listdir(directory) == ["bert_model.ckpt.data-00000-of-00001",
                                         "bert_model.ckpt.index", "checkpoint"]
    for path in (directory, directory + "/bert_model.ckpt", directory + "/bert_model.ckpt.index"):
        reader = open_checkpoint(path)
        assert isinstance(reader, TFCheckpointReader)
        for name, value in tensors.items():
            np.testing.assert_array_equal(reader.get(name), value)
    # a prefix of the real name is not a checkpoint (ram:// says every prefix "exists")
    with pytest.raises(CheckpointError, match="not found"):
        open_checkpoint(directory + "/bert_model")


def test_hf_directory_round_trip_on_ram():
    directory = _ram("hfdir")
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
               "b": np.ones(3, dtype=np.float16)}
    write_hf_directory(directory, tensors, {"model_type": "bert", "hidden_size": 3})
    assert fileio.listdir(directory) == ["config.json", "model.safetensors"]
    assert json.loads(fileio.read_text(directory + "/config.json"))["hidden_size"] == 3
    reader = open_checkpoint(directory)
    assert isinstance(reader, SafetensorsReader) and reader.names() == ["b", "w"]
    assert reader.shape("w") == (2, 3)
    for name, value in tensors.items():
        got = reader.get(name)
        assert got.dtype == value.dtype
        np.testing.assert_array_equal(got, value)


def test_fileio_answers_like_a_local_disk_on_ram():
    root = _ram("fileio")
    fileio.makedirs(root + "/d")
    fileio.write_text(root + "/f.txt", "hi")
    assert fileio.exists(root + "/f.txt") and fileio.isfile(root + "/f.txt")
    assert not fileio.exists(root + "/f")  # a prefix of f.txt, which ram:// calls a directory
    assert not fileio.isdir(root + "/f")
    assert fileio.isdir(root + "/d") and not fileio.isfile(root + "/d")
    assert fileio.listdir(root) == ["d", "f.txt"]
    assert fileio.getsize(root + "/f.txt") == 2
    fileio.rmtree(root)
    assert not fileio.exists(root + "/f.txt")


@pytest.mark.parametrize("fmt", ["google", "huggingface"])
def test_save_weights_as_checkpoint_to_ram_loads_back(fmt):
    from bert4keras.models import build_transformer_model

    sizes = dict(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=16, max_position=16, hidden_act="gelu")
    source = build_transformer_model(None, None, return_keras_model=False, **sizes)
    target = _ram("save-" + fmt)
    path = target + "/bert_model.ckpt" if fmt == "google" else target
    source.save_weights_as_checkpoint(path, format=fmt)
    loaded = build_transformer_model(None, path, **sizes)
    for a, b in zip(source.model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
