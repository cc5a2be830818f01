"""Bad config values get a named error before the model is built, and a
checkpoint with more layers than the config warns about what it left unused
(issue 16). Uses the shipped 4-layer ``checkpoints/chinese_bert_small``."""

import json
import os
import shutil
import warnings

import pytest

from bert4keras.models import build_transformer_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "checkpoints", "chinese_bert_small")
CHECKPOINT = os.path.join(SHIPPED, "bert_model.ckpt")


def small_config(tmp_path, **changes):
    """The shipped config with ``changes``, written to ``tmp_path``."""
    with open(os.path.join(SHIPPED, "bert_config.json")) as f:
        config = json.load(f)
    config.update(changes)
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize("changes, error, words", [
    ({"num_hidden_layers": 0}, ValueError, ["num_hidden_layers", ">= 1", "got 0"]),
    ({"num_hidden_layers": -2}, ValueError, ["num_hidden_layers", "got -2"]),
    ({"hidden_size": "192"}, TypeError, ["hidden_size", "'192'", "str"]),
    ({"num_attention_heads": 0}, ValueError, ["num_attention_heads", "got 0"]),
    ({"num_hidden_layers": 4.9}, ValueError, ["num_hidden_layers", "4.9", "truncated"]),
    ({"vocab_size": True}, TypeError, ["vocab_size"]),
    ({"hidden_dropout_prob": 1.5}, ValueError, ["hidden_dropout_prob", "dropout_rate"]),
])
def test_bad_config_value_names_file_and_key(tmp_path, changes, error, words):
    path = small_config(tmp_path, **changes)
    with pytest.raises(error) as caught:
        build_transformer_model(path, CHECKPOINT)
    message = str(caught.value)
    assert path in message
    for word in words:
        assert word in message


def test_family_key_spelling_and_keyword_overrides_are_named(tmp_path):
    gpt2 = tmp_path / "config.json"
    gpt2.write_text(json.dumps({"model_type": "gpt2", "vocab_size": 50, "n_embd": 16,
                                "n_layer": 0, "n_head": 2, "n_positions": 32}))
    with pytest.raises(ValueError, match=r"key 'n_layer' \(num_hidden_layers\) must be >= 1"):
        build_transformer_model(str(gpt2), model="gpt2")
    with pytest.raises(ValueError, match="build_transformer_model argument num_attention_heads"):
        build_transformer_model(small_config(tmp_path), num_attention_heads=0)


def test_whole_number_floats_are_accepted(tmp_path):
    model = build_transformer_model(small_config(tmp_path, num_hidden_layers=2.0,
                                                 hidden_size=192.0))
    assert len([w for w in model.weights if "Transformer-1-" in w.path]) > 0


def test_fewer_layers_than_checkpoint_warns_once_listing_unused(tmp_path):
    path = small_config(tmp_path, num_hidden_layers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_transformer_model(path, CHECKPOINT)
    unused = [w for w in caught if "left unused" in str(w.message)]
    assert len(unused) == 1
    message = str(unused[0].message)
    assert CHECKPOINT in message and "fewer layers" in message
    assert "bert/encoder/layer_2/" in message and "bert/encoder/layer_3/" in message
    assert "32 variable(s)" in message  # 16 per BERT layer, layers 2 and 3
    assert "cls/predictions" not in message  # a head the model does not build is expected
    assert "layer_0/" not in message and "layer_1/" not in message


def test_full_load_does_not_warn_about_unused(tmp_path):
    shutil.copy(os.path.join(SHIPPED, "bert_config.json"), tmp_path / "bert_config.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_transformer_model(str(tmp_path / "bert_config.json"), CHECKPOINT)
    assert not [w for w in caught if "left unused" in str(w.message)]
