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


# -- memory of loading (issue 17): no second copy of the weights ------------------


def test_local_safetensors_reader_matches_safetensors_for_every_dtype(tmp_path):
    """Our plain-read reader (no memory map) returns what ``safetensors``
    itself reads, for each dtype, a 0-d and an empty tensor, as writable
    arrays of their own."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    tensors = {"f32": rng.normal(size=(3, 700, 400)).astype("float32"),  # > 1 MiB
               "f16": rng.normal(size=(5,)).astype("float16"),
               "f64": rng.normal(size=(2, 2)), "i64": np.arange(6).reshape(2, 3),
               "i8": np.arange(-3, 3, dtype="int8"), "u8": np.arange(4, dtype="uint8"),
               "b": np.array([True, False, True]), "scalar": np.array(2.5, "float32"),
               "empty": np.zeros((0, 4), "float32")}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    reference = load_file(str(tmp_path / "model.safetensors"))
    reader = SafetensorsReader(str(tmp_path))
    assert reader.names() == sorted(tensors)
    for name, value in reference.items():
        got = reader.get(name)
        assert got.dtype == value.dtype and reader.shape(name) == value.shape, name
        np.testing.assert_array_equal(got, value)
        assert got.flags.writeable


def test_loading_keeps_no_stored_tensor_alive(tmp_path, monkeypatch):
    """Every array the reader hands to ``checkpoints.load`` is garbage once
    the weights are assigned (checked by weak references, not by RSS)."""
    import gc
    import weakref

    import keras

    from bert4keras import checkpoints
    from bert4keras.models import build_transformer_model

    if keras.backend.backend() == "jax":  # jax may alias a host array instead of copying
        pytest.skip("JAX's device_put may keep the array itself as the weight's buffer")
    config = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position=24, model="gpt2", with_lm="linear",
                  return_keras_model=False)
    source = build_transformer_model(None, **config)
    source.save_weights_as_checkpoint(str(tmp_path / "hf"), format="huggingface")
    refs = []
    get = checkpoints.SafetensorsReader.get

    def tracked(self, name):
        value = get(self, name)
        refs.append(weakref.ref(value))
        return value

    monkeypatch.setattr(checkpoints.SafetensorsReader, "get", tracked)
    loaded = build_transformer_model(str(tmp_path / "hf" / "config.json"), str(tmp_path / "hf"),
                                     **{k: v for k, v in config.items() if k == "model"
                                        or k == "with_lm" or k == "return_keras_model"})
    gc.collect()
    assert refs and all(ref() is None for ref in refs)
    for name, value in source.checkpoint_tensors("hf").items():
        np.testing.assert_array_equal(loaded.checkpoint_tensors("hf")[name], value)


def test_weights_left_unset_by_the_checkpoint_get_their_random_values(tmp_path):
    """``build_transformer_model`` with a checkpoint starts the weights at a
    marker constant (no random draws to overwrite); a weight the checkpoint does not set
    (``ignore_invalid_weights``: here the pooler) gets the very values a
    build without a checkpoint draws under the same seed, and no layer keeps
    the deferred initializer (the model's config is plain)."""
    import keras

    from bert4keras.models import build_transformer_model
    from bert4keras.models.weights import DeferredInitializer, marker, marker_index

    assert [marker_index(np.float32(marker(k))) for k in (0, 1, 4095)] == [0, 1, 4095]
    assert marker_index(np.float32(-1e30)) is None and marker_index(0.0) is None
    tiny = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=32, max_position=24, return_keras_model=False)
    keras.utils.set_random_seed(3)
    build_transformer_model(None, **tiny).save_weights_as_checkpoint(
        str(tmp_path / "model.ckpt"))
    keras.utils.set_random_seed(1)
    fresh = build_transformer_model(None, with_pool=True, **tiny)
    keras.utils.set_random_seed(1)
    with pytest.warns(UserWarning, match="ignored"):
        loaded = build_transformer_model(None, str(tmp_path / "model.ckpt"), with_pool=True,
                                         ignore_invalid_weights=True, **tiny)
    pooler = loaded.layers["Pooler-Dense"].get_weights()
    assert np.abs(pooler[0]).max() > 0
    for a, b in zip(pooler, fresh.layers["Pooler-Dense"].get_weights()):
        np.testing.assert_array_equal(a, b)
    for layer in loaded.model._flatten_layers():
        assert not any(isinstance(v, DeferredInitializer) for v in vars(layer).values()), layer
    assert all(marker_index(w.reshape(-1)[0]) is None for w in loaded.model.get_weights()
               if w.size)
    json.loads(loaded.model.to_json())


@pytest.mark.parametrize("shape", [(37, 5), (11,), (3, 4, 2), ()])
def test_assign_in_row_blocks(shape):
    """Loading writes a large tensor into its variable a block of rows at a
    time (TensorFlow; a shared view on torch): the variable ends up equal to
    the array, for any block size, rank and row count (last block partial),
    and (TensorFlow) is not left in copy-on-read mode."""
    import keras

    from bert4keras.loading import assign as _assign

    value = np.random.RandomState(0).normal(size=shape).astype("float32")
    for block in (1, 24, 100, 1 << 24):  # bytes: below one row .. above the whole array
        variable = keras.Variable(np.zeros(shape, "float32"))
        _assign(variable, value.copy(), block=block)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
        _assert_reads_share_the_buffer([variable])


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_large_tensors_are_written_from_the_file_in_blocks(tmp_path, monkeypatch, family):
    """Stored tensors over ``loading.BLOCK_BYTES`` go from a local safetensors
    file into their variables a block of rows at a time (shrunk here to 256
    bytes so that most tensors qualify): none of those is read whole, each
    takes several reads, and the loaded weights equal the file's tensors as
    ``safetensors`` itself reads them -- plain (GPT-2's Conv1D weights),
    transposed (BERT's ``(out, in)`` Linear weights: column blocks), bfloat16
    on disk into float32 variables, and a last block that is partial."""
    import keras
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    from bert4keras import loading
    from bert4keras.models import build_transformer_model

    shape = dict(vocab_size=61, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, max_position=24)
    family_args = dict(model=family, return_keras_model=False,
                       **({"with_lm": "linear"} if family == "gpt2" else {}))
    keras.utils.set_random_seed(4)
    build_transformer_model(None, **shape, **family_args).save_weights_as_checkpoint(
        str(tmp_path / "hf"), format="huggingface")
    path = str(tmp_path / "hf" / "model.safetensors")
    stored = load_file(path)
    big = max(stored, key=lambda k: stored[k].size)
    stored[big] = stored[big].astype(ml_dtypes.bfloat16)  # read as bf16, cast per block
    save_file(stored, path)

    whole, rows = [], []
    read_whole, read_rows = loading.SafetensorsFile.get_tensor, loading.SafetensorsFile.get_rows
    monkeypatch.setattr(loading.SafetensorsFile, "get_tensor",
                        lambda self, name: whole.append(name) or read_whole(self, name))
    monkeypatch.setattr(loading.SafetensorsFile, "get_rows", lambda self, name, a, b: (
        rows.append(name) if a is not None else None) or read_rows(self, name, a, b))
    monkeypatch.setattr(loading, "BLOCK_BYTES", 256)
    loaded = build_transformer_model(str(tmp_path / "hf" / "config.json"),
                                     str(tmp_path / "hf"), **family_args)
    streamed = set(rows)
    assert big in streamed and not streamed & set(whole)
    assert all(rows.count(name) > 1 for name in streamed)
    if family == "bert":  # HF Linear weights are the transposes of our kernels
        assert any(name.endswith("attention.self.query.weight") for name in streamed)
    got = loaded.checkpoint_tensors("hf")
    for name, value in stored.items():
        if name in got:
            np.testing.assert_array_equal(got[name], value.astype("float32"), err_msg=name)
    _assert_reads_share_the_buffer(loaded.model.variables)


def _assert_reads_share_the_buffer(variables):
    """On TensorFlow, two reads of each variable return the same buffer: no
    variable was left in copy-on-read mode (where every graph-mode read
    copies the whole tensor), as TF's own slice assignment leaves it."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return

    def address(tensor):
        return np.from_dlpack(tensor).__array_interface__["data"][0]

    for variable in variables:
        value = variable.value
        if hasattr(value, "read_value") and np.prod(variable.shape):
            assert address(value.read_value()) == address(value.read_value()), variable.path


@pytest.mark.parametrize("axis", [0, 1])
def test_block_writer_writes_rows_or_columns_in_place(axis):
    """``block_writer`` writes a block at an offset along rows (0) or columns
    (1) and leaves the rest of the variable as it was."""
    import keras

    from bert4keras.loading import block_writer

    start = np.arange(35, dtype="float32").reshape(5, 7)
    variable = keras.Variable(start.copy())
    write = block_writer(variable, axis)
    block = -np.ones((2, 7) if axis == 0 else (5, 3), "float32")
    write(2, block)
    expected = start.copy()
    if axis == 0:
        expected[2:4] = -1
    else:
        expected[:, 2:5] = -1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), expected)


def test_failed_block_read_names_file_and_variable(tmp_path, monkeypatch):
    """A read error in the middle of a block-wise load is a CheckpointError
    naming the safetensors file and the stored variable."""
    from bert4keras import loading
    from bert4keras.models import build_transformer_model

    config = dict(vocab_size=61, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position=24, return_keras_model=False)
    build_transformer_model(None, **config).save_weights_as_checkpoint(
        str(tmp_path / "hf"), format="huggingface")

    whole = loading.SafetensorsFile.get_rows

    def broken(self, name, start, stop):
        if start is None:  # whole tensors read fine; blocks fail
            return whole(self, name, start, stop)
        raise OSError("Input/output error")

    monkeypatch.setattr(loading.SafetensorsFile, "get_rows", broken)
    monkeypatch.setattr(loading, "BLOCK_BYTES", 256)
    with pytest.raises(CheckpointError, match=r"rows 0:\d+ of variable .* file .*model\."
                       r"safetensors.*OSError: Input/output error"):
        build_transformer_model(str(tmp_path / "hf" / "config.json"), str(tmp_path / "hf"))
