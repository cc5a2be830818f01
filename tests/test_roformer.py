"""RoFormer parity with Hugging Face transformers (``RoFormerForMaskedLM``) on
the same weights, from the HF directory and from the original (bert4keras /
ZhuiyiTechnology) ``bert/...`` TF format written here by an independent name
conversion; the rotary embedding against HF's own function; RoFormer-V2
against a NumPy forward pass written here; round trips and ``.keras`` reloads.

RoFormer-V2 reference: Su, "RoFormerV2: A Faster and Better RoFormer"
(ZhuiyiTechnology/roformer-v2, 2022) and bojone/bert4keras ``RoFormerV2``:
no biases; ``LayerNormalization(zero_mean=False, scale=False, offset=False)``
i.e. ``x / sqrt(mean(x^2) + 1e-7)`` after the embeddings (dropout first) and
after each residual add; rotary attention (Su et al. 2021, RoFormer, eq. 34:
the pair ``(x_2i, x_2i+1)`` at position ``m`` is rotated by ``m theta_i``,
``theta_i = 10000^(-2i/d)``); MLM logits ``h E^T`` with the tied embedding.
"""

import json
import math
import re

import keras
import numpy as np
import pytest

from conftest import perturb_, save_tf1_checkpoint
from bert4keras import backend as B
from bert4keras.checkpoints import CheckpointError, open_checkpoint
from bert4keras.layers import SinusoidalPositionEmbedding
from bert4keras.models import build_transformer_model

ATOL = 1e-5
SMALL_ROFORMER = dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                      type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def hf_to_original(name):
    """Hugging Face RoFormer name -> (original RoFormer TF name, transpose?).

    ZhuiyiTechnology's RoFormer was saved by bert4keras with Google BERT's
    names (no position embeddings; the embedding projection is
    ``bert/encoder/embedding_hidden_mapping_in``). Written here on its own.
    """
    if name.endswith("embed_positions.weight") or name.startswith("cls.predictions.decoder"):
        return None, None  # HF's fixed sinusoid table; the tied decoder
    if name == "cls.predictions.bias":
        return "cls/predictions/output_bias", False
    name = name.replace("roformer.embeddings_project", "bert.encoder.embedding_hidden_mapping_in")
    name = name.replace("roformer.", "bert.")
    name = re.sub(r"layer\.(\d+)", r"layer_\1", name)
    if "LayerNorm" in name:
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                          "LayerNorm.beta")
        return name.replace(".", "/"), False
    if "embeddings." in name:
        return name[: -len(".weight")].replace(".", "/"), False
    if name.endswith(".weight"):
        return (name[: -len(".weight")] + ".kernel").replace(".", "/"), True
    return name.replace(".", "/"), False



@pytest.fixture(scope="module")
def hf_roformer(tmp_path_factory):
    import torch
    from transformers import RoFormerConfig, RoFormerForMaskedLM

    torch.manual_seed(3)
    model = perturb_(RoFormerForMaskedLM(RoFormerConfig(**SMALL_ROFORMER)).eval())
    path = tmp_path_factory.mktemp("hf_roformer")
    model.save_pretrained(path)
    return str(path), model


@pytest.fixture(scope="module")
def original_roformer(hf_roformer, tmp_path_factory):
    _, model = hf_roformer
    tensors = {}
    for key, value in model.state_dict().items():
        name, transpose = hf_to_original(key)
        if name is not None:
            array = value.detach().numpy()
            tensors[name] = array.T if transpose else array
    path = tmp_path_factory.mktemp("roformer")
    save_tf1_checkpoint(tensors, str(path / "bert_model.ckpt"))
    with open(path / "bert_config.json", "w") as f:
        json.dump(SMALL_ROFORMER, f)
    return str(path)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.RandomState(6)
    ids = rng.randint(1, 99, (3, 14)).astype("int32")
    seg = rng.randint(0, 2, (3, 14)).astype("int32")
    ids[1, 8:] = 0
    seg[1, 8:] = 0
    return ids, seg


def torch_outputs(model, ids, seg):
    import torch

    kwargs = dict(input_ids=torch.tensor(ids, dtype=torch.long),
                  token_type_ids=torch.tensor(seg, dtype=torch.long),
                  attention_mask=torch.tensor((ids > 0).astype("int64")))
    with torch.no_grad():
        base = model.roformer(**kwargs)
        logits = model(**kwargs).logits
    return dict(sequence=base.last_hidden_state.numpy(), mlm=logits.numpy())


def our_outputs(config, checkpoint, ids, seg, model="roformer"):
    sequence = build_transformer_model(config, checkpoint, model=model)
    mlm = build_transformer_model(config, checkpoint, model=model, with_mlm="linear")
    return dict(sequence=sequence.predict([ids, seg], verbose=0),
                mlm=mlm.predict([ids, seg], verbose=0))


def assert_close(ours, theirs):
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], atol=ATOL, rtol=0, err_msg=key)


# -- RoFormer -------------------------------------------------------------------------

def test_rotary_matches_transformers():
    """Our sinusoid table + rotation against HF's table and ``apply_rotary_position_embeddings``."""
    import torch
    from transformers.models.roformer.modeling_roformer import (
        RoFormerSelfAttention,
        RoFormerSinusoidalPositionalEmbedding,
    )

    length, heads, dim = 37, 3, 16
    rng = np.random.RandomState(0)
    q = rng.randn(2, length, heads, dim).astype("float32")
    k = rng.randn(2, length, heads, dim).astype("float32")
    table = RoFormerSinusoidalPositionalEmbedding(length, dim).create_weight()[None, None]
    hf_q, hf_k = RoFormerSelfAttention.apply_rotary_position_embeddings(
        table, torch.tensor(q).transpose(1, 2), torch.tensor(k).transpose(1, 2))
    ours = SinusoidalPositionEmbedding(dim, merge_mode="zero")(np.zeros((2, length, 5), "float32"))
    our_q, our_k = B.apply_rotary_position_embeddings(ours, q, k)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(our_q),
                               hf_q.transpose(1, 2).numpy(), atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(our_k),
                               hf_k.transpose(1, 2).numpy(), atol=1e-5)


def test_hf_directory_matches_transformers(hf_roformer, inputs):
    path, model = hf_roformer
    ids, seg = inputs
    assert_close(our_outputs(path, path, ids, seg), torch_outputs(model, ids, seg))


def test_original_checkpoint_matches_transformers(original_roformer, hf_roformer, inputs):
    ids, seg = inputs
    assert_close(our_outputs(original_roformer, original_roformer, ids, seg),
                 torch_outputs(hf_roformer[1], ids, seg))


def test_longer_than_max_position_is_fine(original_roformer, hf_roformer):
    """Rotary positions have no table limit (HF's table: 64 rows; we test 40 < 64
    against HF, then 80 runs without error)."""
    rng = np.random.RandomState(1)
    ids = rng.randint(1, 99, (1, 40)).astype("int32")
    seg = np.zeros_like(ids)
    assert_close(our_outputs(original_roformer, original_roformer, ids, seg),
                 torch_outputs(hf_roformer[1], ids, seg))
    model = build_transformer_model(original_roformer, original_roformer, model="roformer")
    ids = rng.randint(1, 99, (1, 80)).astype("int32")
    assert model.predict([ids, np.zeros_like(ids)], verbose=0).shape == (1, 80, 32)


def test_save_weights_as_checkpoint_round_trip(original_roformer, hf_roformer, inputs, tmp_path):
    ids, seg = inputs
    transformer = build_transformer_model(original_roformer, original_roformer,
                                          model="roformer", with_mlm=True,
                                          return_keras_model=False)
    out = str(tmp_path / "roformer.ckpt")
    transformer.save_weights_as_checkpoint(out)
    assert set(open_checkpoint(out).names()) == set(open_checkpoint(original_roformer).names())
    assert_close(our_outputs(original_roformer, out, ids, seg),
                 torch_outputs(hf_roformer[1], ids, seg))


def test_layer_names_and_keras_file(original_roformer, inputs, tmp_path):
    ids, seg = inputs
    model = build_transformer_model(original_roformer, original_roformer, model="roformer",
                                    with_mlm=True)
    names = {layer.name for layer in model.layers}
    assert {"Embedding-Rotary-Position", "Embedding-Mapping",
            "Transformer-1-MultiHeadSelfAttention", "MLM-Bias"} <= names
    assert "Embedding-Position" not in names
    model.save(tmp_path / "roformer.keras")
    loaded = keras.saving.load_model(tmp_path / "roformer.keras")
    np.testing.assert_allclose(loaded.predict([ids, seg], verbose=0),
                               model.predict([ids, seg], verbose=0), atol=1e-6)


def test_pooler_is_not_in_hf_roformer(hf_roformer):
    path, _ = hf_roformer
    with pytest.raises(CheckpointError, match="no hf-format name for Pooler-Dense"):
        build_transformer_model(path, path, model="roformer", with_pool=True)


# -- RoFormer-V2 ----------------------------------------------------------------------

V2_CONFIG = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=48, hidden_act="relu", hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, max_position_embeddings=512,
                 type_vocab_size=2)


def random_v2_weights(config, seed=0):
    """Random weights under RoFormer-V2's names (BERT's minus gamma/beta/bias)."""
    rng = np.random.RandomState(seed)
    h, i = config["hidden_size"], config["intermediate_size"]
    t = {"bert/embeddings/word_embeddings": 0.3 * rng.randn(config["vocab_size"], h),
         "bert/embeddings/token_type_embeddings": 0.3 * rng.randn(2, h)}
    for n in range(config["num_hidden_layers"]):
        p = "bert/encoder/layer_%d/" % n
        for part in ("self/query", "self/key", "self/value", "output/dense"):
            t[p + "attention/%s/kernel" % part] = 0.3 * rng.randn(h, h)
        t[p + "intermediate/dense/kernel"] = 0.3 * rng.randn(h, i)
        t[p + "output/dense/kernel"] = 0.3 * rng.randn(i, h)
    return {k: v.astype("float32") for k, v in t.items()}


def rms(x, eps=1e-7):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)


def rotate(x):
    """RoPE as a complex product: pair (x_2i, x_2i+1) at position m times e^{i m theta_i}."""
    length, dim = x.shape[-2], x.shape[-1]
    theta = 10000.0 ** (-2 * np.arange(dim // 2) / dim)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * np.arange(length)[:, None] * theta)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def roformer_v2_reference(t, config, ids, seg):
    t = {k: v.astype("float64") for k, v in t.items()}
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    d = hidden // heads
    batch, length = ids.shape
    x = rms(t["bert/embeddings/word_embeddings"][ids]
            + t["bert/embeddings/token_type_embeddings"][seg])
    adder = np.where(ids > 0, 0.0, -np.inf)[:, None, None, :]
    for n in range(config["num_hidden_layers"]):
        p = "bert/encoder/layer_%d/attention/" % n

        def proj(name):
            y = x @ t[p + "self/%s/kernel" % name]
            return y.reshape(batch, length, heads, d).transpose(0, 2, 1, 3)

        q, k, v = rotate(proj("query")), rotate(proj("key")), proj("value")
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + adder
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs = probs / probs.sum(-1, keepdims=True)
        o = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = rms(x + o @ t[p + "output/dense/kernel"])
        p = "bert/encoder/layer_%d/" % n
        f = np.maximum(x @ t[p + "intermediate/dense/kernel"], 0) @ t[p + "output/dense/kernel"]
        x = rms(x + f)
    return dict(sequence=x, mlm=x @ t["bert/embeddings/word_embeddings"].T)


@pytest.fixture(scope="module")
def v2_weights():
    return random_v2_weights(V2_CONFIG)


@pytest.fixture(scope="module")
def original_v2(v2_weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("roformer_v2")
    save_tf1_checkpoint(v2_weights, str(path / "bert_model.ckpt"))
    with open(path / "bert_config.json", "w") as f:
        json.dump(V2_CONFIG, f)
    return str(path)


def test_roformer_v2_matches_numpy_reference(original_v2, v2_weights, inputs):
    ids, seg = inputs
    ids = ids % V2_CONFIG["vocab_size"]
    ids[1, 8:] = 0
    ids[ids[:, 0] == 0, 0] = 1
    assert_close(our_outputs(original_v2, original_v2, ids, seg, "roformer_v2"),
                 roformer_v2_reference(v2_weights, V2_CONFIG, ids, seg))


def test_roformer_v2_round_trip_names_and_keras_file(original_v2, v2_weights, inputs, tmp_path):
    ids, seg = inputs
    ids = ids % V2_CONFIG["vocab_size"] + 1
    transformer = build_transformer_model(original_v2, original_v2, model="roformer_v2",
                                          with_mlm="linear", return_keras_model=False)
    model = transformer.model
    names = {layer.name for layer in model.layers}
    assert {"Embedding-Norm", "Transformer-0-MultiHeadSelfAttention-Norm",
            "Output-MLM-Activation"} <= names
    assert not any(w.path.endswith(("bias", "gamma", "beta")) for w in model.weights)
    out = str(tmp_path / "v2.ckpt")
    transformer.save_weights_as_checkpoint(out)
    assert set(open_checkpoint(out).names()) == set(v2_weights)
    reloaded = build_transformer_model(original_v2, out, model="roformer_v2", with_mlm="linear")
    np.testing.assert_allclose(reloaded.predict([ids, seg], verbose=0),
                               model.predict([ids, seg], verbose=0), atol=1e-6)
    model.save(tmp_path / "v2.keras")
    loaded = keras.saving.load_model(tmp_path / "v2.keras")
    np.testing.assert_allclose(loaded.predict([ids, seg], verbose=0),
                               model.predict([ids, seg], verbose=0), atol=1e-6)


def test_wrong_roformer_version_is_named(original_v2, original_roformer):
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(original_v2, original_v2, model="roformer")
    message = str(info.value)
    assert "bert/embeddings/LayerNorm/gamma" in message
    assert "look like model='roformer_v2'" in message
    # V2's names are a subset of V1's: it loads, with a warning
    with pytest.warns(UserWarning, match="looks like model='nezha' or 'roformer'"):
        build_transformer_model(original_roformer, original_roformer, model="roformer_v2")
