"""T5 1.0, T5.1.1 and mT5 parity with ``transformers`` on the same weights.

Each version: a random-init ``T5ForConditionalGeneration`` /
``MT5ForConditionalGeneration`` saved with ``save_pretrained``, and the same
weights written as a mesh-TensorFlow style TF1 checkpoint (names converted
here on their own: ``shared/embedding``,
``encoder/block_000/layer_000/SelfAttention/q``, ``.../layer_norm/scale`` or
mT5's ``rms_norm/scale``, ``decoder/logits/kernel``; kernels ``[in, out]``,
``relative_attention_bias`` ``[heads, buckets]``), must both reproduce the
encoder output, the decoder's last hidden states and the LM logits within
1e-5 on a batch padded on both sides (encoder and decoder inputs).

transformers 5 always ties ``lm_head`` to ``shared``; the 1.1 fixtures untie
it by hand (T5.1.1 and mT5 were released with their own head) and a test
covers the tied directories transformers 5 writes.
"""

import json
import os
import re

import keras
import numpy as np
import pytest

from conftest import save_tf1_checkpoint
from bert4keras.checkpoints import open_checkpoint
from bert4keras.models import build_transformer_model

ATOL = 1e-5
VOCAB, D_MODEL, D_KV, D_FF, LAYERS, HEADS = 99, 32, 8, 37, 2, 4
VERSIONS = ["t5.1.0", "t5.1.1", "mt5.1.1"]
KEYS = {"t5.1.0": "t5", "t5.1.1": "t5.1.1", "mt5.1.1": "mt5.1.1"}
BUCKETS = {"t5.1.0": (32, 128), "t5.1.1": (32, 128), "mt5.1.1": (16, 24)}



def hf_to_mesh_names(state_dict, rms_names, tied):
    """``transformers`` T5 weights -> mesh-TF checkpoint names and layouts (the
    inverse of transformers' old ``load_tf_weights_in_t5``: everything but the
    embedding is stored transposed)."""
    norm = "rms_norm" if rms_names else "layer_norm"
    out = {}
    for key, value in state_dict.items():
        value = value.detach().numpy()
        if key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            continue
        if key == "shared.weight":
            out["shared/embedding"] = value
            continue
        if key == "lm_head.weight":
            if not tied:  # T5 1.0's head is the embedding: no variable of its own
                out["decoder/logits/kernel"] = value.T
            continue
        m = re.fullmatch(r"(encoder|decoder)\.final_layer_norm\.weight", key)
        if m:
            final = "rms_norm" if rms_names else "final_layer_norm"
            out["%s/%s/scale" % (m.group(1), final)] = value
            continue
        m = re.fullmatch(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)\.weight", key)
        stack, block, layer, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        prefix = "%s/block_%03d/layer_%03d/" % (stack, block, layer)
        if rest == "layer_norm":
            out[prefix + norm + "/scale"] = value
        elif rest.startswith("DenseReluDense."):
            out[prefix + rest.replace(".", "/") + "/kernel"] = value.T
        else:  # SelfAttention.q, EncDecAttention.o, SelfAttention.relative_attention_bias
            out[prefix + rest.replace(".", "/")] = value.T
    return out


def make_hf_model(version):
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration, T5Config, \
        T5ForConditionalGeneration

    torch.manual_seed(0)
    buckets, distance = BUCKETS[version]
    common = dict(vocab_size=VOCAB, d_model=D_MODEL, d_kv=D_KV, d_ff=D_FF, num_layers=LAYERS,
                  num_heads=HEADS, dropout_rate=0.0, relative_attention_num_buckets=buckets,
                  relative_attention_max_distance=distance)
    if version == "t5.1.0":
        model = T5ForConditionalGeneration(T5Config(feed_forward_proj="relu", **common))
    elif version == "t5.1.1":
        model = T5ForConditionalGeneration(T5Config(feed_forward_proj="gated-gelu",
                                                    tie_word_embeddings=False, **common))
    else:
        model = MT5ForConditionalGeneration(MT5Config(**common))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # the RMS norm scales
                p.add_(0.2 * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.mul_(20.0)  # position biases that matter
            elif name == "shared.weight":
                p.mul_(0.3)  # logits of a few units: 1e-5 is then well above fp32 noise
        if version != "t5.1.0":  # T5.1.1 / mT5 have their own LM head
            model.lm_head.weight = torch.nn.Parameter(0.3 * torch.randn(VOCAB, D_MODEL))
    return model.eval()


def mesh_config(path, version):
    """A config in the original toolkit's keys for a mesh-TF checkpoint."""
    buckets, distance = BUCKETS[version]
    with open(path, "w") as f:
        json.dump(dict(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=LAYERS,
                       num_attention_heads=HEADS, attention_head_size=D_KV,
                       intermediate_size=D_FF, hidden_dropout_prob=0.0,
                       hidden_act="relu" if version == "t5.1.0" else ["gelu_new", "linear"],
                       relative_attention_num_buckets=buckets,
                       relative_attention_max_distance=distance), f)
    return str(path)


@pytest.fixture(scope="module")
def t5_models(tmp_path_factory):
    """{version: (hf dir, mesh config, mesh checkpoint dir, torch model)}."""
    out = {}
    for version in VERSIONS:
        model = make_hf_model(version)
        hf_dir = tmp_path_factory.mktemp("hf_" + version)
        model.save_pretrained(hf_dir)
        mesh_dir = tmp_path_factory.mktemp("mesh_" + version)
        save_tf1_checkpoint(hf_to_mesh_names(model.state_dict(), version == "mt5.1.1",
                                             version == "t5.1.0"),
                            str(mesh_dir / "model.ckpt-1000000"))
        config = mesh_config(mesh_dir / "config.json", version)
        out[version] = (str(hf_dir), config, str(mesh_dir), model)
    return out


def padded_inputs():
    """Encoder ids (3, 13) and decoder ids (3, 18), both right-padded with 0;
    the decoder starts with the decoder start id 0. Lengths reach the
    logarithmic buckets of both directions."""
    rng = np.random.RandomState(0)
    enc = rng.randint(1, VOCAB, (3, 13)).astype("int32")
    enc[1, 9:], enc[2, 4:] = 0, 0
    dec = rng.randint(1, VOCAB, (3, 18)).astype("int32")
    dec[:, 0] = 0
    dec_mask = np.ones_like(dec)
    dec[1, 11:], dec_mask[1, 11:] = 0, 0
    dec[2, 5:], dec_mask[2, 5:] = 0, 0
    return enc, dec, (enc > 0).astype("int32"), dec_mask


def torch_reference(model, enc, dec, enc_mask, dec_mask):
    import torch

    def t(a):
        return torch.tensor(a, dtype=torch.long)

    with torch.no_grad():
        out = model(input_ids=t(enc), attention_mask=t(enc_mask), decoder_input_ids=t(dec),
                    decoder_attention_mask=t(dec_mask), output_hidden_states=True)
    return dict(encoder=out.encoder_last_hidden_state.numpy(),
                decoder=out.decoder_hidden_states[-1].numpy(), logits=out.logits.numpy())


def our_outputs(config, checkpoint, key, enc, dec):
    t5 = build_transformer_model(config, checkpoint, model=key, with_lm="linear",
                                 return_keras_model=False)
    hidden = build_transformer_model(config, checkpoint, model=key + "_decoder", with_lm=False)
    encoded = t5.encoder.predict(enc, verbose=0)
    return dict(encoder=encoded, decoder=hidden.predict([encoded, dec], verbose=0),
                logits=t5.model.predict([enc, dec], verbose=0),
                stepwise=t5.decoder.predict([encoded, dec], verbose=0))


def assert_matches(ours, theirs, enc_mask, dec_mask):
    real_enc, real_dec = enc_mask.astype(bool), dec_mask.astype(bool)
    np.testing.assert_allclose(ours["encoder"][real_enc], theirs["encoder"][real_enc],
                               atol=ATOL, rtol=0, err_msg="encoder")
    assert not ours["encoder"][~real_enc].any()  # padding rows are zeroed
    for key in ("decoder", "logits"):
        np.testing.assert_allclose(ours[key][real_dec], theirs[key][real_dec], atol=ATOL,
                                   rtol=0, err_msg=key)
    np.testing.assert_allclose(ours["stepwise"], ours["logits"], atol=1e-6)


@pytest.mark.parametrize("fmt", ["hf", "mesh"])
@pytest.mark.parametrize("version", VERSIONS)
def test_matches_transformers(t5_models, version, fmt):
    hf_dir, config, mesh_dir, model = t5_models[version]
    enc, dec, enc_mask, dec_mask = padded_inputs()
    if fmt == "hf":
        config, checkpoint = os.path.join(hf_dir, "config.json"), hf_dir
    else:
        checkpoint = mesh_dir
    ours = our_outputs(config, checkpoint, KEYS[version], enc, dec)
    assert_matches(ours, torch_reference(model, enc, dec, enc_mask, dec_mask), enc_mask,
                   dec_mask)


@pytest.mark.parametrize("version", ["t5.1.1", "mt5.1.1"])
def test_transformers5_tied_directory(version, tmp_path):
    """transformers 5 ties every T5/mT5 head to ``shared`` and writes no
    ``lm_head.weight``; such a directory loads with the head read from
    ``shared.weight``, unscaled, as transformers 5 computes it."""
    from transformers import AutoModelForSeq2SeqLM

    model = make_hf_model(version)
    model.lm_head.weight = model.shared.weight  # tie again, as transformers 5 builds it
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    enc, dec, enc_mask, dec_mask = padded_inputs()
    ours = our_outputs(str(tmp_path), str(tmp_path), KEYS[version], enc, dec)
    assert_matches(ours, torch_reference(reloaded, enc, dec, enc_mask, dec_mask), enc_mask,
                   dec_mask)


@pytest.mark.parametrize("version", VERSIONS)
def test_save_weights_as_checkpoint_round_trip(t5_models, version, tmp_path):
    hf_dir, config, mesh_dir, _ = t5_models[version]
    t5 = build_transformer_model(os.path.join(hf_dir, "config.json"), hf_dir,
                                 model=KEYS[version], return_keras_model=False)
    out = str(tmp_path / "model.ckpt")
    t5.save_weights_as_checkpoint(out)
    written, fixture = open_checkpoint(out), open_checkpoint(mesh_dir)
    assert set(written.names()) == set(fixture.names())  # the version's own spellings
    for name in fixture.names():
        np.testing.assert_array_equal(written.get(name), fixture.get(name), name)


def test_encoder_and_decoder_keys(t5_models):
    hf_dir, _, _, model = t5_models["t5.1.1"]
    enc, dec, enc_mask, dec_mask = padded_inputs()
    ref = torch_reference(model, enc, dec, enc_mask, dec_mask)
    encoder = build_transformer_model(hf_dir, hf_dir, model="t5.1.1_encoder")
    assert [i.name for i in encoder.inputs] == ["Encoder-Input-Token"]
    encoded = encoder.predict(enc, verbose=0)
    real = enc_mask.astype(bool)
    np.testing.assert_allclose(encoded[real], ref["encoder"][real], atol=ATOL)
    decoder = build_transformer_model(hf_dir, hf_dir, model="t5.1.1_decoder", with_lm="linear")
    assert [i.name for i in decoder.inputs] == ["Input-Context", "Decoder-Input-Token"]
    logits = decoder.predict([encoded, dec], verbose=0)
    real = dec_mask.astype(bool)
    np.testing.assert_allclose(logits[real], ref["logits"][real], atol=ATOL)


def test_relative_position_buckets_match_transformers():
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    from bert4keras.backend import t5_relative_position_buckets

    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (16, 24), (8, 20), (32, 64)):
            q_len, k_len = 300, 520
            ours = keras.ops.convert_to_numpy(t5_relative_position_buckets(
                q_len, k_len, buckets, distance, bidirectional))
            relative = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
            theirs = T5Attention._relative_position_bucket(
                relative, bidirectional=bidirectional, num_buckets=buckets,
                max_distance=distance).numpy()
            np.testing.assert_array_equal(ours, theirs)


def test_layer_names_and_keras_file(t5_models, tmp_path):
    hf_dir, _, _, _ = t5_models["t5.1.0"]
    model = build_transformer_model(hf_dir, hf_dir, model="t5")
    names = {layer.name for layer in model.layers}
    for expected in ["Encoder-Input-Token", "Decoder-Input-Token", "Embedding-Token",
                     "Encoder-Embedding-Relative-Position",
                     "Encoder-Transformer-0-MultiHeadSelfAttention",
                     "Encoder-Transformer-0-MultiHeadSelfAttention-Norm",
                     "Encoder-Transformer-1-FeedForward", "Encoder-Output-Norm",
                     "Decoder-Embedding-Relative-Position",
                     "Decoder-Transformer-0-MultiHeadSelfAttention",
                     "Decoder-Transformer-0-MultiHeadCrossAttention",
                     "Decoder-Transformer-1-MultiHeadCrossAttention-Norm",
                     "Decoder-Transformer-1-FeedForward", "Decoder-Output-Norm",
                     "Decoder-Output-Scale", "Decoder-Output-LM-Activation"]:
        assert expected in names, expected
    enc, dec, _, _ = padded_inputs()
    model.save(tmp_path / "t5.keras")
    loaded = keras.saving.load_model(tmp_path / "t5.keras")
    np.testing.assert_allclose(loaded.predict([enc, dec], verbose=0),
                               model.predict([enc, dec], verbose=0), atol=1e-6)


def test_keep_tokens_slices_embedding_and_untied_head(t5_models):
    hf_dir, _, _, model = t5_models["mt5.1.1"]
    keep = [0, 1, 2, 40, 7, 98, 13]
    t5 = build_transformer_model(hf_dir, hf_dir, model="mt5.1.1", with_lm="linear",
                                 keep_tokens=keep)
    enc = np.array([[3, 4, 6, 5, 0]], "int32")  # indices into keep
    dec = np.array([[0, 2, 3, 4]], "int32")
    ones = np.ones_like
    ref = torch_reference(model, np.array(keep)[enc], np.array(keep)[dec],
                          (enc > 0).astype("int32"), ones(dec))
    np.testing.assert_allclose(t5.predict([enc, dec], verbose=0), ref["logits"][..., keep],
                               atol=ATOL)


def test_unsupported_application_and_model_key(t5_models):
    hf_dir, _, _, _ = t5_models["t5.1.0"]
    with pytest.raises(ValueError, match="application"):
        build_transformer_model(hf_dir, model="t5", application="lm")


def test_wrong_version_is_named(t5_models):
    from bert4keras.checkpoints import CheckpointError

    _, config, mesh_dir, _ = t5_models["t5.1.1"]
    with pytest.raises(CheckpointError, match="t5.1.1"):
        build_transformer_model(config, mesh_dir, model="t5", hidden_act="relu")
