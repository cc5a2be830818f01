"""Writing Hugging Face directories, the config-key translator, and find_config.

For every family ``transformers`` (5.x) has a class for, a small model of
ours with random weights (every weight perturbed, so a swapped or dropped
tensor shows) is saved with ``save_weights_as_checkpoint(dir,
format='huggingface')``; ``transformers`` loads the directory with
``from_pretrained`` (no missing weight) and must give our outputs within
1e-5 on the same inputs, and our own ``build_transformer_model(dir, dir)``
must give them back. Families without a ``transformers`` class raise an
error naming ``format='google'``.
"""

import argparse
import json
import os
import warnings

import keras
import numpy as np
import pytest

from bert4keras.checkpoints import open_checkpoint
from bert4keras.models import (
    CONFIG_KEYS,
    MODELS,
    build_transformer_model,
    find_config,
    load_config,
)
from bert4keras.models.config import merged_config_keys

ATOL = 1e-5
SIZES = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=37, max_position=64)


def build(model, seed=0, **kwargs):
    """Our model with random weights: every weight + N(0, 0.1^2)."""
    args = dict(SIZES, **kwargs)
    keras.utils.set_random_seed(seed)
    transformer = build_transformer_model(None, None, model=model, return_keras_model=False,
                                          **args)
    rng = np.random.RandomState(seed)
    for weight in transformer.model.weights:
        weight.assign(keras.ops.convert_to_numpy(weight)
                      + rng.normal(0, 0.1, weight.shape).astype("float32"))
    return transformer


def export(transformer, path):
    transformer.save_weights_as_checkpoint(str(path), format="huggingface")
    with open(os.path.join(path, "config.json")) as f:
        return str(path), json.load(f)


#: weights transformers computes itself rather than reads (RoFormer's fixed
#: sinusoid table, set by ``RoFormerPreTrainedModel._init_weights``).
COMPUTED = {"roformer.encoder.embed_positions.weight"}


def hf_load(cls_name, path):
    """``transformers`` ``cls_name.from_pretrained(path)``, checked complete."""
    import transformers

    model, info = getattr(transformers, cls_name).from_pretrained(path, output_loading_info=True)
    assert not set(info["missing_keys"]) - COMPUTED, info["missing_keys"]
    assert not info["mismatched_keys"], info["mismatched_keys"]
    return model.eval()


def torch_run(model, **inputs):
    import torch

    with torch.no_grad():
        return model(**{k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()})


def ids_and_segments(vocab=99, shape=(3, 11), seed=0):
    rng = np.random.RandomState(seed)
    return (rng.randint(1, vocab, shape).astype("int32"),
            rng.randint(0, 2, shape).astype("int32"))


def assert_round_trip(path, model, inputs, expected, **kwargs):
    """Our own loader reads the directory back to the same outputs."""
    again = build_transformer_model(path, path, model=model, **kwargs)
    outputs = again.predict(inputs, verbose=0)
    for ours, theirs in zip(keras.tree.flatten(outputs), keras.tree.flatten(expected)):
        np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)


def test_bert_for_pretraining(tmp_path):
    t = build("bert", with_mlm="linear", with_nsp="linear")
    path, config = export(t, tmp_path)
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForPreTraining"]
    ids, segments = ids_and_segments()
    nsp, mlm = t.model.predict([ids, segments], verbose=0)
    out = torch_run(hf_load("BertForPreTraining", path), input_ids=ids, token_type_ids=segments)
    np.testing.assert_allclose(mlm, out.prediction_logits.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(nsp, out.seq_relationship_logits.numpy(), atol=ATOL, rtol=0)
    assert_round_trip(path, "bert", [ids, segments], [nsp, mlm], with_mlm="linear",
                      with_nsp="linear")


def test_bert_keep_tokens_and_no_segments(tmp_path):
    """A ``keep_tokens`` model writes the kept vocabulary; a model without
    segments writes one all-zero token-type row (transformers' default ids)."""
    keep = list(range(0, 99, 3))
    t = build("bert", keep_tokens=keep, segment_vocab_size=0, with_pool=True)
    path, config = export(t, tmp_path)
    assert config["vocab_size"] == len(keep) == 33
    assert config["type_vocab_size"] == 1 and config["architectures"] == ["BertModel"]
    ids, _ = ids_and_segments(vocab=33)
    pooled = t.model.predict(ids, verbose=0)
    hf = hf_load("BertModel", path)
    assert hf.embeddings.word_embeddings.weight.shape[0] == 33
    out = torch_run(hf, input_ids=ids)
    np.testing.assert_allclose(pooled, out.pooler_output.numpy(), atol=ATOL, rtol=0)
    assert_round_trip(path, "bert", ids, pooled, with_pool=True, segment_vocab_size=0)


def test_albert_for_pretraining(tmp_path):
    t = build("albert", embedding_size=16, with_mlm="linear", with_nsp="linear")
    path, config = export(t, tmp_path)
    assert config["architectures"] == ["AlbertForPreTraining"]
    assert config["embedding_size"] == 16
    ids, segments = ids_and_segments()
    sop, mlm = t.model.predict([ids, segments], verbose=0)
    out = torch_run(hf_load("AlbertForPreTraining", path), input_ids=ids,
                    token_type_ids=segments)
    np.testing.assert_allclose(mlm, out.prediction_logits.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(sop, out.sop_logits.numpy(), atol=ATOL, rtol=0)
    assert_round_trip(path, "albert", [ids, segments], [sop, mlm], with_mlm="linear",
                      with_nsp="linear")


def test_electra_discriminator(tmp_path):
    t = build("electra", embedding_size=16, with_discriminator="linear")
    path, config = export(t, tmp_path)
    assert config["architectures"] == ["ElectraForPreTraining"]
    ids, segments = ids_and_segments()
    logits = t.model.predict([ids, segments], verbose=0)
    out = torch_run(hf_load("ElectraForPreTraining", path), input_ids=ids,
                    token_type_ids=segments)
    np.testing.assert_allclose(logits[..., 0], out.logits.numpy(), atol=ATOL, rtol=0)
    assert_round_trip(path, "electra", [ids, segments], logits, with_discriminator="linear")


def test_roformer_masked_lm(tmp_path):
    t = build("roformer", embedding_size=16, with_mlm="linear")
    path, config = export(t, tmp_path)
    assert config["architectures"] == ["RoFormerForMaskedLM"]
    ids, segments = ids_and_segments()
    mlm = t.model.predict([ids, segments], verbose=0)
    out = torch_run(hf_load("RoFormerForMaskedLM", path), input_ids=ids,
                    token_type_ids=segments)
    np.testing.assert_allclose(mlm, out.logits.numpy(), atol=ATOL, rtol=0)
    assert_round_trip(path, "roformer", [ids, segments], mlm, with_mlm="linear")


@pytest.mark.parametrize("key, cls_name, kwargs", [
    ("gpt", "OpenAIGPTLMHeadModel", dict(hidden_act="gelu_new", intermediate_size=128)),
    ("gpt2", "GPT2LMHeadModel", {}),
])
def test_gpt_lm_head(tmp_path, key, cls_name, kwargs):
    t = build(key, with_lm="linear", **kwargs)
    path, config = export(t, tmp_path)
    assert config["architectures"] == [cls_name]
    assert config["n_embd"] == 32 and config["n_positions"] == 64
    ids, _ = ids_and_segments()
    logits = t.model.predict(ids, verbose=0)
    out = torch_run(hf_load(cls_name, path), input_ids=ids)
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=ATOL, rtol=0)
    assert_round_trip(path, key, ids, logits, with_lm="linear")


def test_gpt_without_transformers_equivalent(tmp_path):
    """OpenAI GPT's ``afn='gelu'`` is the tanh GELU: the erf one is refused."""
    with pytest.raises(ValueError, match="gelu_new"):
        build("gpt", intermediate_size=128).save_weights_as_checkpoint(
            str(tmp_path), format="huggingface")


@pytest.mark.parametrize("key, cls_name", [
    ("t5", "T5ForConditionalGeneration"),
    ("t5.1.1", "T5ForConditionalGeneration"),
    ("mt5.1.1", "MT5ForConditionalGeneration"),
])
def test_t5_conditional_generation(tmp_path, key, cls_name):
    """T5 1.0 (tied, scaled head) and the 1.1 versions with their own
    ``lm_head`` (kept untied by transformers 5 since it differs from
    ``shared``)."""
    t = build(key, attention_head_size=8, relative_attention_num_buckets=16,
              relative_attention_max_distance=24, with_lm="linear")
    path, config = export(t, tmp_path)
    assert config["architectures"] == [cls_name]
    assert config["d_kv"] == 8 and config["tie_word_embeddings"] == (key == "t5")
    assert config["feed_forward_proj"] == ("relu" if key == "t5" else "gated-gelu")
    enc, _ = ids_and_segments(shape=(2, 9))
    dec, _ = ids_and_segments(shape=(2, 7), seed=1)
    dec[:, 0] = 0  # the decoder start id
    logits = t.model.predict([enc, dec], verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' "will NOT tie" note for 1.1
        out = torch_run(hf_load(cls_name, path), input_ids=enc, decoder_input_ids=dec)
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=ATOL, rtol=0)
    assert_round_trip(path, key, [enc, dec], logits, with_lm="linear")


def test_t5_encoder(tmp_path):
    t = build("t5.1.1_encoder", attention_head_size=8)
    path, config = export(t, tmp_path)
    assert config["architectures"] == ["T5EncoderModel"]
    enc, _ = ids_and_segments(shape=(2, 9))
    hidden = t.model.predict(enc, verbose=0)
    out = torch_run(hf_load("T5EncoderModel", path), input_ids=enc)
    np.testing.assert_allclose(hidden, out.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    assert_round_trip(path, "t5.1.1_encoder", enc, hidden)


@pytest.mark.parametrize("key, kwargs", [
    ("nezha", {}), ("gpt2_ml", {}), ("roformer_v2", {}),
    ("t5.1.1_decoder", dict(attention_head_size=8)),
])
def test_families_without_transformers_class(tmp_path, key, kwargs):
    t = build_transformer_model(None, None, model=key, return_keras_model=False,
                                **dict(SIZES, **kwargs))
    with pytest.raises(ValueError, match="format='google'") as error:
        t.save_weights_as_checkpoint(str(tmp_path / "hf"), format="huggingface")
    assert type(t).__name__ in str(error.value)
    assert not os.path.exists(tmp_path / "hf")
    t.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))  # the original format works


def test_google_format_dtype_and_bad_format(tmp_path):
    t = build("bert", num_hidden_layers=1)
    t.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"), dtype="float16")
    reader = open_checkpoint(str(tmp_path / "model.ckpt"))
    value = reader.get("bert/embeddings/word_embeddings")
    assert value.dtype == np.float16
    expected = keras.ops.convert_to_numpy(t.layers["Embedding-Token"].embeddings)
    np.testing.assert_array_equal(value, expected.astype("float16"))
    with pytest.raises(ValueError, match="format"):
        t.save_weights_as_checkpoint(str(tmp_path / "x"), format="pytorch")


# -- one config-key translator ----------------------------------------------------


def test_config_keys_merge_along_the_class_hierarchy():
    gpt2 = merged_config_keys(MODELS["gpt2"])
    assert list(gpt2)[0] == "activation_function"  # GPT-2's own key first
    assert gpt2["n_embd"] == "hidden_size" and gpt2["hidden_dropout_prob"] == "dropout_rate"
    t5 = merged_config_keys(MODELS["t5.1.1"])
    assert t5["d_kv"] == "attention_head_size"
    assert merged_config_keys(MODELS["bert"]) == CONFIG_KEYS
    assert "embedding_size" in merged_config_keys(MODELS["albert"])


def test_translate_config_renames_and_explicit_argument_wins():
    config = {"n_embd": 32, "hidden_size": 16, "n_layer": 2, "model_type": "gpt2",
              "hidden_dropout_prob": 0.3, "resid_pdrop": 0.1, "n_inner": None}
    args = MODELS["gpt2"].translate_config(config)
    assert args["hidden_size"] == 16 and "n_embd" not in args  # the argument itself wins
    assert args["dropout_rate"] == 0.1  # the family's own key before the BERT alias
    assert args["num_hidden_layers"] == 2 and args["intermediate_size"] == 64
    t5 = MODELS["t5.1.1"].translate_config({"d_model": 8, "feed_forward_proj": "gated-gelu",
                                            "max_position_embeddings": 9})
    assert t5 == {"hidden_size": 8, "hidden_act": ["gelu_new", "linear"], "max_position": 9}


# -- find_config --------------------------------------------------------------------


def write(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def test_find_config_order(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json or bert_config.json"):
        find_config(tmp_path)
    with pytest.raises(FileNotFoundError):
        find_config(tmp_path / "missing.json")
    write(tmp_path / "bert_config.json", {"hidden_size": 8})
    assert find_config(tmp_path) == str(tmp_path / "bert_config.json")
    write(tmp_path / "config.json", {"hidden_size": 8, "model_type": "bert"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same values: no warning
        assert find_config(tmp_path) == str(tmp_path / "config.json")
    assert find_config(str(tmp_path / "bert_config.json")) == str(tmp_path / "bert_config.json")


def test_find_config_follows_the_checkpoint_and_warns_on_conflict(tmp_path):
    write(tmp_path / "bert_config.json", {"hidden_size": 8})
    write(tmp_path / "config.json", {"hidden_size": 16})
    with pytest.warns(UserWarning, match="hidden_size"):
        assert find_config(tmp_path) == str(tmp_path / "config.json")  # no checkpoint
    (tmp_path / "bert_model.ckpt.index").write_bytes(b"")
    with pytest.warns(UserWarning, match="google checkpoint"):
        assert find_config(tmp_path) == str(tmp_path / "bert_config.json")
    assert load_config(tmp_path)["hidden_size"] == 8
    os.remove(tmp_path / "bert_model.ckpt.index")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.warns(UserWarning, match="hf checkpoint"):
        assert find_config(tmp_path) == str(tmp_path / "config.json")


def test_resolve_paths_uses_find_config(tmp_path):
    from common import resolve_paths

    write(tmp_path / "bert_config.json", {"hidden_size": 8})
    write(tmp_path / "config.json", {"hidden_size": 8})
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    (tmp_path / "checkpoint").write_text("")
    args = argparse.Namespace(model_dir=str(tmp_path), config=None, checkpoint=None,
                              vocab=None, random_init=False)
    config, checkpoint, vocab = resolve_paths(args)
    assert config == find_config(tmp_path) == str(tmp_path / "bert_config.json")
    os.remove(tmp_path / "checkpoint")
    assert resolve_paths(args)[0] == load_config(tmp_path)["_path"] == str(
        tmp_path / "config.json")
