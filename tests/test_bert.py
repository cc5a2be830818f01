"""BERT parity with Hugging Face transformers on the same weights, checkpoint
round trips, LM/UniLM masks, serialization and bad-input errors."""

import json
import os

import keras
import numpy as np
import pytest

from bert4keras.checkpoints import CheckpointError, open_checkpoint
from bert4keras.models import build_transformer_model
from conftest import SMALL_BERT, google_config, write_google_checkpoint

ATOL = 1e-5


def torch_outputs(model, ids, seg, padding=True):
    import torch

    mask = (ids > 0).astype("int64") if padding else np.ones_like(ids, dtype="int64")
    with torch.no_grad():
        base = model.bert(input_ids=torch.tensor(ids, dtype=torch.long),
                          token_type_ids=torch.tensor(seg, dtype=torch.long),
                          attention_mask=torch.tensor(mask))
        heads = model(input_ids=torch.tensor(ids, dtype=torch.long),
                      token_type_ids=torch.tensor(seg, dtype=torch.long),
                      attention_mask=torch.tensor(mask))
    return dict(sequence=base.last_hidden_state.numpy(), pooled=base.pooler_output.numpy(),
                mlm=heads.prediction_logits.numpy(), nsp=heads.seq_relationship_logits.numpy())


def our_outputs(config, checkpoint, ids, seg, **kwargs):
    seq_model = build_transformer_model(config, checkpoint, **kwargs)
    pool_model = build_transformer_model(config, checkpoint, with_pool=True, **kwargs)
    heads = build_transformer_model(config, checkpoint, with_nsp="linear", with_mlm="linear",
                                    **kwargs)
    nsp, mlm = heads.predict([ids, seg], verbose=0)
    return dict(sequence=seq_model.predict([ids, seg], verbose=0),
                pooled=pool_model.predict([ids, seg], verbose=0), mlm=mlm, nsp=nsp)


def assert_outputs_close(ours, theirs):
    for key in ("sequence", "pooled", "mlm", "nsp"):
        np.testing.assert_allclose(ours[key], theirs[key], atol=ATOL, rtol=0, err_msg=key)


@pytest.mark.parametrize("padding", [True, False], ids=["padded", "unpadded"])
def test_hf_directory_matches_transformers(hf_bert, sample_inputs, padding):
    path, model = hf_bert
    ids, seg = sample_inputs
    if not padding:
        ids = np.where(ids == 0, 5, ids).astype("int32")
    ours = our_outputs(os.path.join(path, "config.json"), path, ids, seg)
    assert_outputs_close(ours, torch_outputs(model, ids, seg))


def test_google_checkpoint_matches_transformers(google_bert, hf_bert, sample_inputs):
    _, model = hf_bert
    ids, seg = sample_inputs
    ours = our_outputs(os.path.join(google_bert, "bert_config.json"),
                       os.path.join(google_bert, "bert_model.ckpt"), ids, seg)
    assert_outputs_close(ours, torch_outputs(model, ids, seg))


def test_checkpoint_directory_is_accepted(google_bert, hf_bert, sample_inputs):
    _, model = hf_bert
    ids, seg = sample_inputs
    ours = build_transformer_model(google_bert, google_bert).predict([ids, seg], verbose=0)
    np.testing.assert_allclose(ours, torch_outputs(model, ids, seg)["sequence"], atol=ATOL)


def test_save_weights_as_checkpoint_round_trip(google_bert, hf_bert, sample_inputs, tmp_path):
    _, model = hf_bert
    ids, seg = sample_inputs
    config = os.path.join(google_bert, "bert_config.json")
    transformer = build_transformer_model(config, google_bert, with_nsp=True, with_mlm=True,
                                          return_keras_model=False)
    out = str(tmp_path / "bert_model.ckpt")
    transformer.save_weights_as_checkpoint(out)
    # The written names are Google's: the same set as the fixture's TF1 checkpoint.
    assert set(open_checkpoint(out).names()) == set(open_checkpoint(google_bert).names())
    ours = our_outputs(config, out, ids, seg)
    assert_outputs_close(ours, torch_outputs(model, ids, seg))


def test_sharded_hf_directory_without_prefix(hf_bert, tmp_path, sample_inputs):
    """BertModel (no ``bert.`` prefix) saved in several safetensors shards."""
    path, model = hf_bert
    ids, seg = sample_inputs
    model.bert.save_pretrained(tmp_path, max_shard_size="20KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    ours = build_transformer_model(str(tmp_path), str(tmp_path), with_pool=True)
    np.testing.assert_allclose(ours.predict([ids, seg], verbose=0),
                               torch_outputs(model, ids, seg)["pooled"], atol=ATOL)


def test_keep_tokens_slices_vocabulary(hf_bert, sample_inputs):
    path, model = hf_bert
    keep = [0, 3, 1, 2, 50, 98, 7]
    ids = np.array([[2, 1, 4, 5, 6, 3, 0]], "int32")  # indices into `keep`
    seg = np.zeros_like(ids)
    ours = build_transformer_model(path, path, keep_tokens=keep, with_mlm="linear")
    logits = ours.predict([ids, seg], verbose=0)
    original_ids = np.array(keep)[ids]
    theirs = torch_outputs(model, original_ids, seg)["mlm"][..., keep]
    np.testing.assert_allclose(logits, theirs, atol=ATOL)
    assert logits.shape[-1] == len(keep)


def test_keras_file_reloads_and_predicts_the_same(google_bert, sample_inputs, tmp_path):
    ids, seg = sample_inputs
    model = build_transformer_model(google_bert, google_bert, with_pool=True)
    x = keras.layers.Dense(2, activation="softmax", name="Classifier")(model.output)
    model = keras.Model(model.inputs, x)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict([ids, seg], verbose=0),
                               model.predict([ids, seg], verbose=0), atol=1e-6)


def test_layer_names_follow_original_toolkit(google_bert):
    model = build_transformer_model(google_bert, with_nsp=True, with_mlm=True)
    names = {layer.name for layer in model.layers}
    for expected in ["Input-Token", "Input-Segment", "Embedding-Token", "Embedding-Segment",
                     "Embedding-Position", "Embedding-Norm", "Transformer-0-MultiHeadSelfAttention",
                     "Transformer-0-MultiHeadSelfAttention-Norm", "Transformer-1-FeedForward",
                     "Transformer-1-FeedForward-Norm", "Pooler", "Pooler-Dense", "NSP-Proba",
                     "MLM-Dense", "MLM-Norm", "MLM-Bias", "MLM-Activation"]:
        assert expected in names, expected


# -- applications ----------------------------------------------------------------

def _perturbation_effects(model, ids, seg, position):
    """Which output positions change when the token at ``position`` changes."""
    base = model.predict([ids, seg], verbose=0)
    changed = ids.copy()
    changed[:, position] = (changed[:, position] % 97) + 1
    new = model.predict([changed, seg], verbose=0)
    return np.abs(new - base).max(axis=(0, 2)) > 1e-6


def test_lm_application_is_causal(google_bert):
    model = build_transformer_model(google_bert, google_bert, application="lm", with_mlm=False)
    ids = np.arange(1, 13, dtype="int32")[None]
    seg = np.zeros_like(ids)
    for position in range(ids.shape[1]):
        changed = _perturbation_effects(model, ids, seg, position)
        expected = np.arange(ids.shape[1]) >= position
        np.testing.assert_array_equal(changed, expected, err_msg="position %d" % position)


def test_unilm_application_visibility(google_bert):
    model = build_transformer_model(google_bert, google_bert, application="unilm",
                                    with_mlm=False)
    ids = np.arange(1, 11, dtype="int32")[None]
    seg = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]], "int32")
    n = ids.shape[1]
    for position in range(n):
        changed = _perturbation_effects(model, ids, seg, position)
        # Source tokens (segment 0) are seen by everyone; a target token only
        # by itself and later target tokens.
        if seg[0, position] == 0:
            expected = np.ones(n, bool)
        else:
            expected = np.arange(n) >= position
        np.testing.assert_array_equal(changed, expected, err_msg="position %d" % position)


def test_encoder_padding_does_not_leak(google_bert):
    model = build_transformer_model(google_bert, google_bert)
    ids = np.array([[5, 6, 7, 0, 0]], "int32")
    seg = np.zeros_like(ids)
    longer = np.array([[5, 6, 7, 0, 0, 0, 0, 0]], "int32")
    a = model.predict([ids, seg], verbose=0)[:, :3]
    b = model.predict([longer, np.zeros_like(longer)], verbose=0)[:, :3]
    np.testing.assert_allclose(a, b, atol=1e-6)


# -- bad input ---------------------------------------------------------------------

def test_missing_checkpoint_is_named(google_bert, tmp_path):
    missing = str(tmp_path / "nope" / "bert_model.ckpt")
    with pytest.raises(CheckpointError, match="nope"):
        build_transformer_model(google_bert, missing)


def test_missing_config_file_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.json"):
        build_transformer_model(str(tmp_path / "absent.json"))
    config = dict(SMALL_BERT)
    del config["num_attention_heads"]
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(KeyError, match="num_attention_heads"):
        build_transformer_model(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bert_config.json"):
        build_transformer_model(str(path))


def test_missing_variable_is_named(hf_bert, tmp_path):
    _, model = hf_bert
    prefix = str(tmp_path / "bert_model.ckpt")
    write_google_checkpoint(model.state_dict(), prefix,
                            drop=["bert/encoder/layer_1/attention/self/key/kernel"])
    with open(tmp_path / "bert_config.json", "w") as f:
        json.dump(google_config(model.config), f)
    with pytest.raises(CheckpointError, match="layer_1/attention/self/key/kernel"):
        build_transformer_model(str(tmp_path / "bert_config.json"), prefix)


def test_shape_mismatch_names_both_variables_and_shapes(google_bert, tmp_path):
    with open(os.path.join(google_bert, "bert_config.json")) as f:
        config = json.load(f)
    config["intermediate_size"] = 40
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(str(path), google_bert)
    message = str(info.value)
    assert "bert/encoder/layer_0/intermediate/dense/kernel" in message
    assert "(32, 37)" in message and "(32, 40)" in message
    assert "Transformer-0-FeedForward" in message


def test_input_longer_than_max_position(google_bert):
    model = build_transformer_model(google_bert, google_bert)
    ids = np.ones((1, SMALL_BERT["max_position_embeddings"] + 1), "int32")
    with pytest.raises(Exception, match="max_position"):
        model.predict([ids, np.zeros_like(ids)], verbose=0)
    # eager call (a fresh model: JAX leaves a model unusable after a failed trace)
    model = build_transformer_model(google_bert, google_bert)
    with pytest.raises(ValueError, match="max_position"):
        model([ids, np.zeros_like(ids)])


def test_hf_directory_without_safetensors(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        open_checkpoint(str(tmp_path))


def test_unknown_argument_and_model(google_bert):
    with pytest.raises(TypeError, match="with_poool"):
        build_transformer_model(google_bert, with_poool=True)
    with pytest.raises(ValueError, match="Unknown model"):
        build_transformer_model(google_bert, model="bort")


def test_onednn_projections_match_transformers(hf_bert, sample_inputs, monkeypatch):
    """``predict`` with every projection qualifying for oneDNN (its weight
    threshold lowered to this small model's kernels): on torch the encoder,
    pooler, MLM and NSP projections run ``bert4keras.layers.Dense``'s oneDNN
    path (calls counted), and the outputs are still transformers'."""
    from bert4keras.layers import direct

    monkeypatch.setattr(direct, "ONEDNN_MIN_WEIGHTS", 1)
    calls = []
    op = direct._onednn_op() if keras.backend.backend() == "torch" else None
    if op is not None:
        monkeypatch.setattr(direct, "_ONEDNN_OP", [lambda *a: calls.append(1) or op(*a)])
    path, model = hf_bert
    ids, seg = sample_inputs
    ours = our_outputs(os.path.join(path, "config.json"), path, ids, seg)
    assert_outputs_close(ours, torch_outputs(model, ids, seg))
    assert bool(calls) == (op is not None)
