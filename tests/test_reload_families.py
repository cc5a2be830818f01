"""A saved ``.keras`` file reloads in a NEW Python process after ``import bert4keras``.

Issue 16: a model saved as ``.keras`` did not load in a fresh process
(``Could not locate class 'Embedding'``) because the layers registered only
when ``bert4keras.layers`` was imported, and every reload check ran in the
process that saved. Here the saving happens in the test process and the
loading in one subprocess whose script does nothing but ``import bert4keras``,
``keras.saving.load_model`` and a forward pass (plus NumPy/JSON to read the
inputs and report). Covered:

* a fine-tuned classifier: the shipped ``checkpoints/chinese_bert_small``
  BERT + ``TokenSlice`` ([CLS]) + ``Dense`` softmax, fitted for a few steps
  (compiled; it must come back compiled with its optimizer state);
* one tiny random model per family: bert, albert, nezha, electra, roformer,
  roformer_v2, gpt, gpt2, gpt2_ml, t5 (every weight perturbed, so a bias or
  LayerNorm gain left at its initial value by the reload would show).

Reference: the outputs of the saved model in the saving process; the
reloaded outputs must equal them within 1e-6.
"""

import json
import os

import keras
import numpy as np

from conftest import reload_in_new_process
from bert4keras.layers import TokenSlice
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "checkpoints", "chinese_bert_small")

TINY = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, hidden_act="gelu", max_position=64)
FAMILIES = ["bert", "albert", "nezha", "electra", "roformer", "roformer_v2",
            "gpt", "gpt2", "gpt2_ml", "t5"]

IDS = np.array([[2, 5, 6, 7, 8, 3], [2, 9, 4, 3, 0, 0]], "int32")
SEGMENTS = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]], "int32")
DECODER_IDS = np.array([[1, 11, 12, 13], [1, 14, 15, 0]], "int32")


def _perturb(model, seed):
    """Add 0.05 * N(0, 1) to every weight (biases and LayerNorm gains
    included), so each reloaded weight matters to the outputs."""
    rng = np.random.RandomState(seed)
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight)
        weight.assign((value + 0.05 * rng.normal(size=value.shape)).astype(value.dtype))


def _family_model(family, seed):
    config = dict(TINY)
    if family == "albert":
        config["embedding_size"] = 8
    model = build_transformer_model(model=family, **config)
    _perturb(model, seed)
    if family.startswith("gpt"):
        inputs = [IDS]
    elif family == "t5":
        inputs = [IDS, DECODER_IDS]
    else:
        inputs = [IDS, SEGMENTS]
    return model, inputs


def _fine_tuned_classifier():
    """The README's classifier on the shipped BERT, fitted for 2 steps."""
    tokenizer = Tokenizer(os.path.join(SHIPPED, "vocab.txt"), do_lower_case=True)
    bert = build_transformer_model(os.path.join(SHIPPED, "bert_config.json"),
                                   os.path.join(SHIPPED, "bert_model.ckpt"))
    cls = TokenSlice(index=0, name="CLS-Token")(bert.output)
    output = keras.layers.Dense(2, activation="softmax", name="Classifier")(cls)
    model = keras.Model(bert.inputs, output)
    model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    texts = ["这家店的服务很好", "质量太差了，不会再买", "物流很快，包装完好", "味道一般，有点失望"] * 2
    labels = np.array([1, 0, 1, 0] * 2)
    encoded = [tokenizer.encode(text, maxlen=16) for text in texts]
    length = max(len(ids) for ids, _ in encoded)
    token_ids = np.array([ids + [0] * (length - len(ids)) for ids, _ in encoded], "int32")
    segment_ids = np.zeros_like(token_ids)
    before = keras.ops.convert_to_numpy(model.get_layer("Classifier").kernel).copy()
    model.fit([token_ids, segment_ids], labels, batch_size=4, epochs=1, verbose=0,
              shuffle=False)
    after = keras.ops.convert_to_numpy(model.get_layer("Classifier").kernel)
    assert np.abs(after - before).max() > 0, "the fit did not change the classifier"
    return model, [token_ids[:3], segment_ids[:3]]


def test_keras_files_reload_in_a_new_process(tmp_path):
    models = {"fine-tuned classifier": _fine_tuned_classifier()}
    for seed, family in enumerate(FAMILIES):
        models[family] = _family_model(family, seed)
    rows = reload_in_new_process(tmp_path, [(name, model, inputs)
                                            for name, (model, inputs) in models.items()])
    report = {row["key"]: row for row in rows}
    assert sorted(report) == sorted(models)
    failures = {name: row for name, row in report.items()
                if "error" in row or not row["shapes"] or row["diff"] > 1e-6}
    assert not failures, json.dumps(failures, indent=1)
    # the fine-tuned classifier comes back compiled, with its 2 optimizer steps
    classifier = report["fine-tuned classifier"]
    assert classifier["compiled"] and classifier["iterations"] == 2, classifier
