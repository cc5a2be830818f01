"""GPT, GPT-2 and GPT2-ML parity on the same weights.

OpenAI GPT and GPT-2: random-init ``transformers`` models (saved with
``save_pretrained``) and the same weights written as TF1 checkpoints under
the names the original toolkit reads (``gpt/...``; converted here on their
own, as bojone/CDial-GPT-tf's ``convert.py`` did) must both give the
``transformers`` LM logits and last hidden states, within 1e-5, on a
right-padded batch run with an attention mask. GPT2-ML has no
``transformers`` class: it is checked against a NumPy forward pass written
below from imcaspar/gpt2-ml ``train/modeling.py``.
"""

import json
import os

import keras
import numpy as np
import pytest

from conftest import perturb_, save_tf1_checkpoint
from bert4keras.checkpoints import CheckpointError, open_checkpoint
from bert4keras.models import build_transformer_model

ATOL = 1e-5
VOCAB, HIDDEN, LAYERS, HEADS, POSITIONS = 97, 32, 2, 4, 24



def perturb(model, scale=0.1):
    """Non-trivial LayerNorm and bias values, so a swapped weight would show."""
    return perturb_(model, scale, seed=1, which=lambda name, p: p.ndim == 1)


def hf_to_gpt_names(state_dict, pre_ln):
    """``transformers`` OpenAI GPT / GPT-2 weights -> the TF names of the
    original toolkit (BERT's names with ``bert/`` -> ``gpt/``, ``encoder``
    -> ``transformer``; GPT-2's pre-norms ``.../input/LayerNorm``)."""
    sd = {k.replace("transformer.", "", 1): v.detach().numpy() for k, v in state_dict.items()}
    out = {"gpt/embeddings/word_embeddings": sd.get("tokens_embed.weight", sd.get("wte.weight")),
           "gpt/embeddings/position_embeddings": sd.get("positions_embed.weight",
                                                        sd.get("wpe.weight"))}
    norm1 = "attention/input/LayerNorm" if pre_ln else "attention/output/LayerNorm"
    norm2 = "input/LayerNorm" if pre_ln else "output/LayerNorm"
    for i in range(LAYERS):
        h, g = "h.%d." % i, "gpt/transformer/layer_%d/" % i
        for part, w, b in zip(("query", "key", "value"),
                              np.split(sd[h + "attn.c_attn.weight"], 3, axis=1),
                              np.split(sd[h + "attn.c_attn.bias"], 3)):
            out[g + "attention/self/%s/kernel" % part] = w
            out[g + "attention/self/%s/bias" % part] = b
        out[g + "attention/output/dense/kernel"] = sd[h + "attn.c_proj.weight"]
        out[g + "attention/output/dense/bias"] = sd[h + "attn.c_proj.bias"]
        out[g + norm1 + "/gamma"] = sd[h + "ln_1.weight"]
        out[g + norm1 + "/beta"] = sd[h + "ln_1.bias"]
        out[g + "intermediate/dense/kernel"] = sd[h + "mlp.c_fc.weight"]
        out[g + "intermediate/dense/bias"] = sd[h + "mlp.c_fc.bias"]
        out[g + "output/dense/kernel"] = sd[h + "mlp.c_proj.weight"]
        out[g + "output/dense/bias"] = sd[h + "mlp.c_proj.bias"]
        out[g + norm2 + "/gamma"] = sd[h + "ln_2.weight"]
        out[g + norm2 + "/beta"] = sd[h + "ln_2.bias"]
    if pre_ln:
        out["gpt/output/LayerNorm/gamma"] = sd["ln_f.weight"]
        out["gpt/output/LayerNorm/beta"] = sd["ln_f.bias"]
    return out


def bert4keras_config(path, hidden_act):
    """A config in the original toolkit's (BERT-style) keys."""
    with open(path, "w") as f:
        json.dump(dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                       num_attention_heads=HEADS, intermediate_size=4 * HIDDEN,
                       hidden_act=hidden_act, max_position_embeddings=POSITIONS,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), f)
    return str(path)


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """{key: (hf dir, google dir, torch model)} for 'gpt' and 'gpt2'."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, OpenAIGPTConfig, OpenAIGPTLMHeadModel

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                  n_positions=POSITIONS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    models = {"gpt": (OpenAIGPTLMHeadModel(OpenAIGPTConfig(**common)), False),
              "gpt2": (GPT2LMHeadModel(GPT2Config(**common)), True)}
    out = {}
    for key, (model, pre_ln) in models.items():
        model = perturb(model).eval()
        hf_dir = tmp_path_factory.mktemp("hf_" + key)
        model.save_pretrained(hf_dir)
        google_dir = tmp_path_factory.mktemp("google_" + key)
        save_tf1_checkpoint(hf_to_gpt_names(model.state_dict(), pre_ln),
                            str(google_dir / "gpt_model.ckpt"))
        bert4keras_config(google_dir / "gpt_config.json", "gelu_new")
        out[key] = (str(hf_dir), str(google_dir), model)
    return out


def padded_batch():
    """(3, 9) ids right-padded with 0; row 0 has a real id 0 (GPT-2's ``!``)."""
    rng = np.random.RandomState(0)
    ids = rng.randint(1, VOCAB, (3, 9)).astype("int32")
    ids[0, 2] = 0
    mask = np.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = 0, 0
    ids[2, 3:], mask[2, 3:] = 0, 0
    return ids, mask


def torch_reference(model, ids, mask, token_type_ids=None):
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long),
                    token_type_ids=None if token_type_ids is None
                    else torch.tensor(token_type_ids, dtype=torch.long),
                    output_hidden_states=True)
    return out.logits.numpy(), out.hidden_states[-1].numpy()


def our_outputs(config, checkpoint, key, inputs, **kwargs):
    logits = build_transformer_model(config, checkpoint, model=key, with_lm="linear", **kwargs)
    hidden = build_transformer_model(config, checkpoint, model=key, with_lm=False, **kwargs)
    return logits.predict(inputs, verbose=0), hidden.predict(inputs, verbose=0)


def assert_close_where(ours, theirs, mask):
    """Compare the real (mask == 1) positions; padding outputs are not defined."""
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("key", ["gpt", "gpt2"])
@pytest.mark.parametrize("fmt", ["hf", "google"])
def test_matches_transformers(hf_models, key, fmt):
    hf_dir, google_dir, model = hf_models[key]
    ids, mask = padded_batch()
    if fmt == "hf":
        config, checkpoint = os.path.join(hf_dir, "config.json"), hf_dir
    else:
        config, checkpoint = os.path.join(google_dir, "gpt_config.json"), google_dir
    logits, hidden = our_outputs(config, checkpoint, key, ids)
    ref_logits, ref_hidden = torch_reference(model, ids, mask)
    assert_close_where(logits, ref_logits, mask)
    assert_close_where(hidden, ref_hidden, mask)


def test_gpt_token_types_use_the_token_table(hf_models):
    """OpenAI GPT (and CDial-GPT, whose token types are speaker ids) embed
    token types with the token table: ``shared_segment_embeddings=True``."""
    hf_dir, _, model = hf_models["gpt"]
    ids, mask = padded_batch()
    types = np.where(np.arange(ids.shape[1]) < 4, 5, 6)[None].repeat(3, 0).astype("int32")
    logits, hidden = our_outputs(hf_dir, hf_dir, "gpt", [ids, types], segment_vocab_size=VOCAB,
                                 shared_segment_embeddings=True)
    ref_logits, ref_hidden = torch_reference(model, ids, mask, types)
    assert_close_where(logits, ref_logits, mask)
    assert_close_where(hidden, ref_hidden, mask)


def test_gpt2_model_without_prefix_and_probabilities(hf_models, tmp_path):
    """A ``GPT2Model`` directory (no ``transformer.`` prefix, no head) loads;
    ``with_lm=True`` gives the softmax of the logits."""
    import torch

    _, _, model = hf_models["gpt2"]
    model.transformer.save_pretrained(tmp_path)
    ids, mask = padded_batch()
    probs = build_transformer_model(str(tmp_path), str(tmp_path), model="gpt2")
    ref = torch.softmax(torch.tensor(torch_reference(model, ids, mask)[0]), -1).numpy()
    assert_close_where(probs.predict(ids, verbose=0), ref, mask)


@pytest.mark.parametrize("key", ["gpt", "gpt2"])
def test_save_weights_as_checkpoint_round_trip(hf_models, key, tmp_path):
    hf_dir, google_dir, model = hf_models[key]
    transformer = build_transformer_model(hf_dir, hf_dir, model=key, with_lm="linear",
                                          return_keras_model=False)
    out = str(tmp_path / "gpt_model.ckpt")
    transformer.save_weights_as_checkpoint(out)
    # the names written are the original toolkit's: those of the fixture's TF1 checkpoint
    assert set(open_checkpoint(out).names()) == set(open_checkpoint(google_dir).names())
    ids, mask = padded_batch()
    logits, _ = our_outputs(os.path.join(google_dir, "gpt_config.json"), out, key, ids)
    assert_close_where(logits, torch_reference(model, ids, mask)[0], mask)
    # and the Hugging Face names, fused c_attn included, round-trip too
    tensors = transformer.checkpoint_tensors("hf")
    state = {k.replace("transformer.", "", 1): v.detach().numpy()
             for k, v in model.state_dict().items()}
    for name, value in tensors.items():
        np.testing.assert_array_equal(value, state[name.replace("transformer.", "", 1)], name)


def test_causal_and_id_zero_is_not_padding(hf_models):
    """Changing token t changes exactly the outputs at positions >= t,
    including when the token is id 0."""
    hf_dir, _, _ = hf_models["gpt2"]
    model = build_transformer_model(hf_dir, hf_dir, model="gpt2", with_lm=False)
    ids = np.arange(1, 9, dtype="int32")[None]
    base = model.predict(ids, verbose=0)
    for position in range(ids.shape[1]):
        changed = ids.copy()
        changed[0, position] = 0
        diff = np.abs(model.predict(changed, verbose=0) - base).max(axis=(0, 2)) > 1e-6
        np.testing.assert_array_equal(diff, np.arange(ids.shape[1]) >= position)


def test_layer_names_and_keras_file(hf_models, tmp_path):
    hf_dir, _, _ = hf_models["gpt2"]
    model = build_transformer_model(hf_dir, hf_dir, model="gpt2")
    names = {layer.name for layer in model.layers}
    for expected in ["Input-Token", "Embedding-Token", "Embedding-Position",
                     "Transformer-0-MultiHeadSelfAttention-Norm",
                     "Transformer-0-MultiHeadSelfAttention", "Transformer-1-FeedForward-Norm",
                     "Transformer-1-FeedForward", "Output-Norm", "LM-Activation"]:
        assert expected in names, expected
    ids, _ = padded_batch()
    model.save(tmp_path / "gpt2.keras")
    loaded = keras.saving.load_model(tmp_path / "gpt2.keras")
    np.testing.assert_allclose(loaded.predict(ids, verbose=0), model.predict(ids, verbose=0),
                               atol=1e-6)


def test_wrong_family_is_named(hf_models):
    _, google_dir, _ = hf_models["gpt2"]
    with pytest.raises(CheckpointError, match="gpt2"):
        build_transformer_model(os.path.join(google_dir, "gpt_config.json"), google_dir,
                                model="gpt")


# -- GPT2-ML -------------------------------------------------------------------

def gpt2_ml_weights(seed=0):
    """Random weights under the variable names of imcaspar/gpt2-ml (``newslm/...``)."""
    rng = np.random.RandomState(seed)

    def r(*shape, scale=0.2):
        return (scale * rng.randn(*shape)).astype("float32")

    w = {"newslm/embeddings/word_embed": r(VOCAB, HIDDEN),
         "newslm/embeddings/pos_embed": r(POSITIONS, HIDDEN),
         "newslm/embeddings/LayerNorm_embed_norm/gamma": 1 + r(HIDDEN),
         "newslm/embeddings/LayerNorm_embed_norm/beta": r(HIDDEN)}
    for i in range(LAYERS):
        p = "newslm/layer%02d/" % i
        for name in ("query_layer", "key_layer", "value_layer", "context_projection_layer"):
            w[p + name + "/kernel"], w[p + name + "/bias"] = r(HIDDEN, HIDDEN), r(HIDDEN)
        w[p + "intermediate/kernel"], w[p + "intermediate/bias"] = r(HIDDEN, 4 * HIDDEN), r(4 * HIDDEN)
        w[p + "output/kernel"], w[p + "output/bias"] = r(4 * HIDDEN, HIDDEN), r(HIDDEN)
        for ln in ("LayerNorm_mlp_ln0", "LayerNorm_mlp_ln1"):
            w[p + ln + "/gamma"], w[p + ln + "/beta"] = 1 + r(HIDDEN), r(HIDDEN)
    return w


def gpt2_ml_reference(w, ids):
    """The forward pass of imcaspar/gpt2-ml ``train/modeling.py`` (``GroverModel``)
    in NumPy, float64: ``embed`` (token + position, then ``layer_norm`` with
    epsilon 1e-5), per layer ``attention_layer`` (scaled dot product, causal
    mask ``scores * m - 1e10 * (1 - m)``, no pre-norm) and ``residual_mlp_layer``
    (``LN1(h + W_o gelu(W_i LN0(h)))`` with ``h = x + attention``, erf GELU),
    logits ``hidden @ word_embed^T`` (no output bias)."""
    from math import erf, sqrt

    def ln(x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * w[name + "/gamma"] + w[name + "/beta"]

    def dense(x, name):
        return x @ w[name + "/kernel"].astype("float64") + w[name + "/bias"]

    gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + erf(v / sqrt(2.0))))
    batch, length = ids.shape
    size = HIDDEN // HEADS
    x = w["newslm/embeddings/word_embed"].astype("float64")[ids] + \
        w["newslm/embeddings/pos_embed"][:length]
    x = ln(x, "newslm/embeddings/LayerNorm_embed_norm")
    causal = np.tril(np.ones((length, length)))
    for i in range(LAYERS):
        p = "newslm/layer%02d/" % i

        def heads(t):
            return t.reshape(batch, length, HEADS, size).transpose(0, 2, 1, 3)

        q, k, v = (heads(dense(x, p + n)) for n in ("query_layer", "key_layer", "value_layer"))
        scores = q @ k.transpose(0, 1, 3, 2) / sqrt(size)
        scores = scores * causal - 1e10 * (1 - causal)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, HIDDEN)
        h = x + dense(context, p + "context_projection_layer")
        mlp = dense(gelu(dense(ln(h, p + "LayerNorm_mlp_ln0"), p + "intermediate")), p + "output")
        x = ln(h + mlp, p + "LayerNorm_mlp_ln1")
    return x @ w["newslm/embeddings/word_embed"].T.astype("float64"), x


@pytest.fixture(scope="module")
def gpt2_ml_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2_ml")
    weights = gpt2_ml_weights()
    save_tf1_checkpoint(weights, str(path / "model.ckpt-100000"))
    config = bert4keras_config(path / "mega.json", "gelu")
    return config, str(path), weights


def test_gpt2_ml_matches_numpy_reference(gpt2_ml_checkpoint):
    config, path, weights = gpt2_ml_checkpoint
    ids, mask = padded_batch()
    logits, hidden = our_outputs(config, path, "gpt2_ml", ids)
    ref_logits, ref_hidden = gpt2_ml_reference(weights, np.where(mask > 0, ids, 0))
    assert_close_where(logits, ref_logits, mask)
    assert_close_where(hidden, ref_hidden, mask)


def test_gpt2_ml_round_trip_and_names(gpt2_ml_checkpoint, tmp_path):
    config, path, weights = gpt2_ml_checkpoint
    transformer = build_transformer_model(config, path, model="gpt2_ml", with_lm="linear",
                                          return_keras_model=False)
    names = {layer.name for layer in transformer.model.layers}
    assert {"Embedding-Norm", "Transformer-0-FeedForward-Norm-0",
            "Transformer-1-FeedForward-Norm-1", "LM-Activation"} <= names
    out = str(tmp_path / "model.ckpt")
    transformer.save_weights_as_checkpoint(out)
    reader = open_checkpoint(out)
    assert set(reader.names()) == set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(reader.get(name), value, name)


def test_keep_tokens_slices_the_tied_head(gpt2_ml_checkpoint):
    config, path, weights = gpt2_ml_checkpoint
    keep = [0, 5, 3, 96, 7]
    model = build_transformer_model(config, path, model="gpt2_ml", with_lm="linear",
                                    keep_tokens=keep)
    ids = np.array([[1, 2, 4, 3]], "int32")  # indices into keep
    logits = model.predict(ids, verbose=0)
    ref, _ = gpt2_ml_reference(weights, np.array(keep)[ids])
    np.testing.assert_allclose(logits, ref[..., keep], atol=ATOL)


def test_a_bert_directory_loaded_as_gpt2_names_the_family(tmp_path):
    """Issue 16: a Hugging Face BERT directory with model='gpt2' raised a bare
    IndexError while building; it is named as the wrong family, both for the
    HF directory (its config.json's model_type) and for the same weights as a
    Google checkpoint with bert_config.json."""
    import transformers

    from bert4keras.checkpoints import CheckpointError

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(config).save_pretrained(tmp_path / "hf")
    for family in ("gpt2", "gpt2_ml", "gpt"):
        with pytest.raises(CheckpointError, match="model_type='bert'.*model='bert'"):
            build_transformer_model(str(tmp_path / "hf"), str(tmp_path / "hf"), model=family)
    bert = build_transformer_model(str(tmp_path / "hf"), str(tmp_path / "hf"),
                                   return_keras_model=False)
    bert.save_weights_as_checkpoint(str(tmp_path / "google" / "bert_model.ckpt"))
    google_config = tmp_path / "google" / "bert_config.json"
    google = {k: v for k, v in config.to_dict().items() if k != "model_type"}  # as Google's
    google_config.write_text(json.dumps(google))
    with pytest.raises(CheckpointError, match="look like model='bert'.*model='gpt2'"):
        build_transformer_model(str(google_config), str(tmp_path / "google"), model="gpt2")
