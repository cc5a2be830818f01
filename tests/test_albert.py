"""ALBERT parity with Hugging Face transformers (``AlbertForPreTraining``) on the
same weights, read from the HF directory and from Google's ALBERT TF format
(written here by an independent name conversion), shared and unshared
layouts, checkpoint round trip and the wrong-family error."""

import json
import re

import numpy as np
import pytest

from conftest import save_tf1_checkpoint
from bert4keras.checkpoints import CheckpointError, open_checkpoint
from bert4keras.models import build_transformer_model

ATOL = 1e-5
SMALL_ALBERT = dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                    num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                    type_vocab_size=2, hidden_act="gelu_new", hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0)

# Hugging Face -> google-research/albert names (modeling.py: the shared block
# lives in transformer/group_0/inner_group_0 with attention_1, ffn_1, LayerNorm
# and LayerNorm_1). Written here on its own, not taken from bert4keras.
_HF_TO_GOOGLE = [
    (r"^albert\.embeddings\.(word|position|token_type)_embeddings\.weight$",
     r"bert/embeddings/\1_embeddings", False),
    (r"^albert\.embeddings\.LayerNorm\.weight$", "bert/embeddings/LayerNorm/gamma", False),
    (r"^albert\.embeddings\.LayerNorm\.bias$", "bert/embeddings/LayerNorm/beta", False),
    (r"^albert\.encoder\.embedding_hidden_mapping_in\.weight$",
     "bert/encoder/embedding_hidden_mapping_in/kernel", True),
    (r"^albert\.encoder\.embedding_hidden_mapping_in\.bias$",
     "bert/encoder/embedding_hidden_mapping_in/bias", False),
    (r"^albert\.encoder\.albert_layer_groups\.0\.albert_layers\.0\.(.*)$", "BLOCK", None),
    (r"^albert\.pooler\.weight$", "bert/pooler/dense/kernel", True),
    (r"^albert\.pooler\.bias$", "bert/pooler/dense/bias", False),
    (r"^predictions\.dense\.weight$", "cls/predictions/transform/dense/kernel", True),
    (r"^predictions\.dense\.bias$", "cls/predictions/transform/dense/bias", False),
    (r"^predictions\.LayerNorm\.weight$", "cls/predictions/transform/LayerNorm/gamma", False),
    (r"^predictions\.LayerNorm\.bias$", "cls/predictions/transform/LayerNorm/beta", False),
    (r"^predictions\.bias$", "cls/predictions/output_bias", False),
    (r"^sop_classifier\.classifier\.weight$", "cls/seq_relationship/output_weights", False),
    (r"^sop_classifier\.classifier\.bias$", "cls/seq_relationship/output_bias", False),
]
_BLOCK_PARTS = {
    "attention.query": "attention_1/self/query", "attention.key": "attention_1/self/key",
    "attention.value": "attention_1/self/value", "attention.dense": "attention_1/output/dense",
    "ffn": "ffn_1/intermediate/dense", "ffn_output": "ffn_1/intermediate/output/dense",
}
_BLOCK_NORMS = {"attention.LayerNorm": "LayerNorm", "full_layer_layer_norm": "LayerNorm_1"}


def hf_to_google(name):
    for pattern, target, transpose in _HF_TO_GOOGLE:
        match = re.match(pattern, name)
        if not match:
            continue
        if target != "BLOCK":
            return match.expand(target), transpose
        module, kind = match.group(1).rsplit(".", 1)
        prefix = "bert/encoder/transformer/group_0/inner_group_0/"
        if module in _BLOCK_NORMS:
            suffix = "/gamma" if kind == "weight" else "/beta"
            return prefix + _BLOCK_NORMS[module] + suffix, False
        return prefix + _BLOCK_PARTS[module] + ("/kernel" if kind == "weight" else "/bias"), \
            kind == "weight"
    return None, None  # predictions.decoder.* (tied to the embedding / the bias)



@pytest.fixture(scope="module")
def hf_albert(tmp_path_factory):
    import torch
    from transformers import AlbertConfig, AlbertForPreTraining

    torch.manual_seed(1)
    model = AlbertForPreTraining(AlbertConfig(**SMALL_ALBERT)).eval()
    with torch.no_grad():  # non-trivial LayerNorm/bias values so a swap would show
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("hf_albert")
    model.save_pretrained(path)
    return str(path), model


@pytest.fixture(scope="module")
def google_albert(hf_albert, tmp_path_factory):
    """Directory with albert_config.json + model.ckpt-best.* (Google's layout)."""
    _, model = hf_albert
    tensors = {}
    for key, value in model.state_dict().items():
        name, transpose = hf_to_google(key)
        if name is not None:
            array = value.detach().numpy()
            tensors[name] = array.T if transpose else array
    path = tmp_path_factory.mktemp("google_albert")
    save_tf1_checkpoint(tensors, str(path / "model.ckpt-best"))
    config = {k: v for k, v in SMALL_ALBERT.items() if k != "classifier_dropout_prob"}
    config.update(num_hidden_groups=1, inner_group_num=1, down_scale_factor=1, gap_size=0,
                  net_structure_type=0, num_memory_blocks=0, initializer_range=0.02)
    with open(path / "albert_config.json", "w") as f:
        json.dump(config, f)
    return str(path), str(path / "albert_config.json")


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.RandomState(3)
    ids = rng.randint(1, SMALL_ALBERT["vocab_size"], (3, 11)).astype("int32")
    seg = rng.randint(0, 2, (3, 11)).astype("int32")
    ids[1, 6:] = 0
    seg[1, 6:] = 0
    return ids, seg


def torch_outputs(model, ids, seg):
    import torch

    kwargs = dict(input_ids=torch.tensor(ids, dtype=torch.long),
                  token_type_ids=torch.tensor(seg, dtype=torch.long),
                  attention_mask=torch.tensor((ids > 0).astype("int64")))
    with torch.no_grad():
        base = model.albert(**kwargs)
        heads = model(**kwargs)
    return dict(sequence=base.last_hidden_state.numpy(), pooled=base.pooler_output.numpy(),
                mlm=heads.prediction_logits.numpy(), sop=heads.sop_logits.numpy())


def our_outputs(config, checkpoint, ids, seg, model):
    sequence = build_transformer_model(config, checkpoint, model=model)
    pooled = build_transformer_model(config, checkpoint, model=model, with_pool=True)
    heads = build_transformer_model(config, checkpoint, model=model, with_nsp="linear",
                                    with_mlm="linear")
    sop, mlm = heads.predict([ids, seg], verbose=0)
    return dict(sequence=sequence.predict([ids, seg], verbose=0),
                pooled=pooled.predict([ids, seg], verbose=0), mlm=mlm, sop=sop)


def assert_close(ours, theirs):
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], atol=ATOL, rtol=0, err_msg=key)


@pytest.mark.parametrize("model", ["albert", "albert_unshared"])
def test_hf_directory_matches_transformers(hf_albert, inputs, model):
    path, torch_model = hf_albert
    ids, seg = inputs
    assert_close(our_outputs(path, path, ids, seg, model), torch_outputs(torch_model, ids, seg))


@pytest.mark.parametrize("model", ["albert", "albert_unshared"])
def test_google_checkpoint_matches_transformers(google_albert, hf_albert, inputs, model):
    path, config = google_albert
    ids, seg = inputs
    assert_close(our_outputs(config, path, ids, seg, model),
                 torch_outputs(hf_albert[1], ids, seg))


def test_shared_and_unshared_layer_names(google_albert):
    path, config = google_albert
    shared = build_transformer_model(config, path, model="albert", with_mlm=True)
    names = {layer.name for layer in shared.layers}
    for expected in ["Embedding-Token", "Embedding-Mapping", "Transformer-MultiHeadSelfAttention",
                     "Transformer-MultiHeadSelfAttention-Norm", "Transformer-FeedForward",
                     "Transformer-FeedForward-Norm", "MLM-Dense", "MLM-Bias"]:
        assert expected in names, expected
    assert not any(n.startswith("Transformer-0") for n in names)
    unshared = build_transformer_model(config, path, model="albert_unshared")
    names = {layer.name for layer in unshared.layers}
    assert "Transformer-2-FeedForward" in names and "Transformer-FeedForward" not in names
    # one block's weights versus three
    assert shared.count_params() < unshared.count_params()


@pytest.mark.parametrize("model", ["albert", "albert_unshared"])
def test_save_weights_as_checkpoint_round_trip(google_albert, hf_albert, inputs, tmp_path, model):
    path, config = google_albert
    ids, seg = inputs
    transformer = build_transformer_model(config, path, model=model, with_nsp=True,
                                          with_mlm=True, return_keras_model=False)
    out = str(tmp_path / "albert_model.ckpt")
    transformer.save_weights_as_checkpoint(out)
    assert set(open_checkpoint(out).names()) == set(open_checkpoint(path).names())
    assert_close(our_outputs(config, out, ids, seg, "albert"),
                 torch_outputs(hf_albert[1], ids, seg))


def test_unshared_layers_that_diverged_are_not_written(google_albert, tmp_path):
    """The formats hold one shared block: once fine-tuning has made the
    per-layer copies differ, writing must refuse rather than keep one."""
    path, config = google_albert
    transformer = build_transformer_model(config, path, model="albert_unshared",
                                          return_keras_model=False)
    weight = transformer.layers["Transformer-1-FeedForward"].weights[0]
    weight.assign(np.asarray(weight.numpy()) + 0.5)
    with pytest.raises(ValueError, match="Transformer-1-FeedForward"):
        transformer.save_weights_as_checkpoint(str(tmp_path / "albert_model.ckpt"))


def test_albert_on_a_bert_checkpoint_names_the_family(google_bert):
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(google_bert, google_bert, model="albert", embedding_size=32)
    message = str(info.value)
    # ALBERT always has its embedding projection, the first variable a BERT checkpoint lacks
    assert "bert/encoder/embedding_hidden_mapping_in/kernel" in message
    assert "look like model='bert'" in message and "model='albert'" in message


def test_grouped_albert_is_refused(google_albert):
    _, config = google_albert
    with pytest.raises(ValueError, match="num_hidden_groups"):
        build_transformer_model(config, model="albert", num_hidden_groups=2)


def test_albert_with_embedding_size_equal_to_hidden_size_keeps_its_projection(tmp_path, inputs):
    """ALBERT always projects its embeddings (embedding_hidden_mapping_in),
    even when embedding_size == hidden_size; the projection was skipped and
    its stored weight silently dropped. Outputs against transformers, and our
    Hugging Face export of it loads back in transformers."""
    import torch
    from transformers import AlbertConfig, AlbertForPreTraining

    config = dict(SMALL_ALBERT, embedding_size=SMALL_ALBERT["hidden_size"])
    torch.manual_seed(5)
    model = AlbertForPreTraining(AlbertConfig(**config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embedding_hidden_mapping_in" in name:
                p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "hf")
    ids, seg = inputs
    theirs = torch_outputs(model, ids, seg)
    assert_close(our_outputs(str(tmp_path / "hf"), str(tmp_path / "hf"), ids, seg, "albert"),
                 theirs)
    ours = build_transformer_model(str(tmp_path / "hf"), str(tmp_path / "hf"), model="albert",
                                   with_nsp="linear", with_mlm="linear",
                                   return_keras_model=False)
    ours.save_weights_as_checkpoint(str(tmp_path / "export"), format="huggingface")
    again = AlbertForPreTraining.from_pretrained(str(tmp_path / "export")).eval()
    for key, value in torch_outputs(again, ids, seg).items():
        np.testing.assert_allclose(value, theirs[key], atol=ATOL, rtol=0, err_msg=key)
