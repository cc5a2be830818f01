"""ELECTRA parity with Hugging Face transformers (``ElectraForPreTraining``, the
discriminator) on the same weights, read from the HF directory and from
google-research/electra's TF format (written here by an independent name
conversion), checkpoint round trip and the wrong-family error."""

import json
import re

import numpy as np
import pytest

from conftest import perturb_, save_tf1_checkpoint
from bert4keras.checkpoints import CheckpointError, open_checkpoint
from bert4keras.models import build_transformer_model

ATOL = 1e-5
SMALL_ELECTRA = dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                     type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)


def hf_to_google(name):
    """Hugging Face ELECTRA name -> (google-research/electra name, transpose?).

    The encoder is google-research/bert's layout under the ``electra`` scope;
    the embedding projection is ``electra/embeddings_project``; the
    discriminator head is ``discriminator_predictions/dense`` and ``dense_1``
    (``tf.layers.dense`` default names). Written here on its own.
    """
    if name.startswith("discriminator_predictions."):
        name = name.replace("dense_prediction", "dense_1")
    name = re.sub(r"layer\.(\d+)", r"layer_\1", name)
    if "LayerNorm" in name:
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                          "LayerNorm.beta")
        return name.replace(".", "/"), False
    if "embeddings." in name and "project" not in name:
        return name[: -len(".weight")].replace(".", "/"), False
    if name.endswith(".weight"):
        return (name[: -len(".weight")] + ".kernel").replace(".", "/"), True
    return name.replace(".", "/"), False



@pytest.fixture(scope="module")
def hf_electra(tmp_path_factory):
    import torch
    from transformers import ElectraConfig, ElectraForPreTraining

    torch.manual_seed(2)
    model = perturb_(ElectraForPreTraining(ElectraConfig(**SMALL_ELECTRA)).eval())
    path = tmp_path_factory.mktemp("hf_electra")
    model.save_pretrained(path)
    return str(path), model


@pytest.fixture(scope="module")
def google_electra(hf_electra, tmp_path_factory):
    _, model = hf_electra
    tensors = {}
    for key, value in model.state_dict().items():
        if key.endswith(("position_ids", "token_type_ids")):
            continue
        name, transpose = hf_to_google(key)
        array = value.detach().numpy()
        tensors[name] = array.T if transpose else array
    # a discriminator release also holds the generator, which is not read
    tensors["generator/embeddings_project/kernel"] = np.zeros((16, 8), "float32")
    path = tmp_path_factory.mktemp("google_electra")
    save_tf1_checkpoint(tensors, str(path / "electra_small"))
    with open(path / "config.json", "w") as f:
        json.dump(SMALL_ELECTRA, f)
    return str(path), str(path / "config.json")


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.RandomState(4)
    ids = rng.randint(1, SMALL_ELECTRA["vocab_size"], (3, 12)).astype("int32")
    seg = rng.randint(0, 2, (3, 12)).astype("int32")
    ids[2, 5:] = 0
    seg[2, 5:] = 0
    return ids, seg


def torch_outputs(model, ids, seg):
    import torch

    kwargs = dict(input_ids=torch.tensor(ids, dtype=torch.long),
                  token_type_ids=torch.tensor(seg, dtype=torch.long),
                  attention_mask=torch.tensor((ids > 0).astype("int64")))
    with torch.no_grad():
        base = model.electra(**kwargs)
        logits = model(**kwargs).logits
    return dict(sequence=base.last_hidden_state.numpy(), logits=logits.numpy())


def our_outputs(config, checkpoint, ids, seg):
    sequence = build_transformer_model(config, checkpoint, model="electra")
    head = build_transformer_model(config, checkpoint, model="electra",
                                   with_discriminator="linear")
    return dict(sequence=sequence.predict([ids, seg], verbose=0),
                logits=head.predict([ids, seg], verbose=0)[..., 0])


def assert_close(ours, theirs):
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], atol=ATOL, rtol=0, err_msg=key)


def test_hf_directory_matches_transformers(hf_electra, inputs):
    path, model = hf_electra
    ids, seg = inputs
    assert_close(our_outputs(path, path, ids, seg), torch_outputs(model, ids, seg))


def test_google_checkpoint_matches_transformers(google_electra, hf_electra, inputs):
    path, config = google_electra
    ids, seg = inputs
    assert_close(our_outputs(config, path, ids, seg), torch_outputs(hf_electra[1], ids, seg))


def test_discriminator_defaults_to_sigmoid(google_electra, hf_electra, inputs):
    path, config = google_electra
    ids, seg = inputs
    model = build_transformer_model(config, path, model="electra", with_discriminator=True)
    names = {layer.name for layer in model.layers}
    assert {"Discriminator-Dense", "Discriminator-Prediction"} <= names
    probs = model.predict([ids, seg], verbose=0)[..., 0]
    logits = torch_outputs(hf_electra[1], ids, seg)["logits"]
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=ATOL)


def test_save_weights_as_checkpoint_round_trip(google_electra, hf_electra, inputs, tmp_path):
    path, config = google_electra
    ids, seg = inputs
    transformer = build_transformer_model(config, path, model="electra",
                                          with_discriminator=True, return_keras_model=False)
    out = str(tmp_path / "electra.ckpt")
    transformer.save_weights_as_checkpoint(out)
    written = set(open_checkpoint(out).names())
    assert written == set(open_checkpoint(path).names()) - {"generator/embeddings_project/kernel"}
    assert_close(our_outputs(config, out, ids, seg), torch_outputs(hf_electra[1], ids, seg))


def test_heads_electra_does_not_have_are_refused(google_electra):
    _, config = google_electra
    with pytest.raises(ValueError, match="no mlm head"):
        build_transformer_model(config, model="electra", with_mlm=True)


def test_bert_on_an_electra_checkpoint_names_the_family(google_electra):
    path, config = google_electra
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(config, path, model="bert")
    message = str(info.value)
    assert "bert/embeddings/word_embeddings" in message
    assert "look like model='electra'" in message
