"""Same weights, three Keras backends: TensorFlow, JAX and PyTorch compute the
same outputs.

Small models of the families that matter (a BERT encoder with its MLM head, a
GPT-2 LM, a T5 encoder-decoder, a UniLM BERT) are built once here with
random weights, which are written to ``.weights.h5`` files in ``tmp_path``.
Keras fixes its backend per process, so one subprocess per backend
(``KERAS_BACKEND=tensorflow|jax|torch``, run side by side) loads those files
and computes everything: the forward passes, and cached decoding with
:class:`bert4keras.generation.CachedDecoder` (greedy search on the GPT-2, T5
and UniLM paths; beam search and top-p sampling on GPT-2). The checks, every
backend against the others:

* forward outputs (MLM / LM logits) agree to 1e-5 (max abs, float32);
* greedy and beam decoding give identical tokens;
* the beam scores (sums of log-probabilities), and the logits of the model at
  every position of the decoded sequences, agree to 1e-5;
* top-p sampling runs (its draws come from each backend's own random
  generator, so only their range and length are checked).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BACKENDS = ("tensorflow", "jax", "torch")
TOL = 1e-5
VOCAB = 61
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=48, max_position=48)
NEW_TOKENS = 6


def build(family):
    """The family's model (``return_keras_model=False``), same code in every
    process; heads without softmax, so the checks read logits."""
    from bert4keras.models import build_transformer_model

    if family == "bert":
        return build_transformer_model(None, None, model="bert", with_mlm="linear",
                                       return_keras_model=False, **SMALL)
    if family == "unilm":
        return build_transformer_model(None, None, model="bert", application="unilm",
                                       with_mlm="linear", return_keras_model=False, **SMALL)
    if family == "gpt2":
        return build_transformer_model(None, None, model="gpt2", with_lm="linear",
                                       return_keras_model=False, **SMALL)
    if family == "t5":
        config = {k: v for k, v in SMALL.items() if k != "max_position"}
        return build_transformer_model(None, None, model="t5", with_lm="linear",
                                       attention_head_size=8, return_keras_model=False,
                                       **config)
    raise ValueError(family)


FAMILIES = ("bert", "unilm", "gpt2", "t5")


def write_weights(directory):
    """Random weights of every family, scaled so that greedy paths vary."""
    rng = np.random.default_rng(0)
    for family in FAMILIES:
        model = build(family).model
        for weight in model.weights:
            shape = tuple(weight.shape)
            if len(shape) == 1:
                base = 1.0 if "gamma" in weight.path or "scale" in weight.path else 0.0
                value = base + 0.1 * rng.standard_normal(shape)
            else:
                value = rng.standard_normal(shape) / np.sqrt(shape[0])
            if "MLM-Bias" in weight.path:
                value[0] = -10.0  # id 0 is [PAD]: a trained head never picks it
            weight.assign(value.astype("float32"))
        model.save_weights(os.path.join(directory, family + ".weights.h5"))


def inputs():
    rng = np.random.default_rng(1)
    ids = rng.integers(1, VOCAB, size=(2, 11)).astype("int32")
    ids[1, 8:] = 0  # padding in the second row
    segments = np.zeros_like(ids)
    segments[:, 6:] = 1
    prompts = [rng.integers(1, VOCAB, size=n).tolist() for n in (5, 9)]
    return ids, segments, prompts


def worker(directory):
    """One backend's outputs, written to ``<directory>/<backend>.npz``."""
    sys.path.insert(0, ROOT)
    import keras

    from bert4keras.generation import CachedDecoder

    backend = keras.backend.backend()
    ids, segments, prompts = inputs()
    out = {}
    models = {}
    for family in FAMILIES:
        models[family] = build(family)
        models[family].model.load_weights(os.path.join(directory, family + ".weights.h5"))

    def forward(model, x):
        return keras.ops.convert_to_numpy(model(x, training=False)).astype("float32")

    out["bert/forward"] = forward(models["bert"].model, [ids, segments])
    out["unilm/forward"] = forward(models["unilm"].model, [ids, segments])
    out["gpt2/forward"] = forward(models["gpt2"].model, ids)
    out["t5/forward"] = forward(models["t5"].model, [ids, ids[:, :7]])

    def padded(rows):
        width = max(len(r) for r in rows)
        return np.array([list(r) + [0] * (width - len(r)) for r in rows], "int32")

    for family in ("gpt2", "t5", "unilm"):
        decoder = CachedDecoder(models[family], end_id=None, maxlen=NEW_TOKENS, bucket=8)
        greedy = [np.asarray(r).tolist() for r in decoder.generate(prompts)]
        out[family + "/greedy"] = padded(greedy)
        # the model's logits along the decoded paths, where each token was chosen
        # (both rows in one call, right-padded: causal rows / masked encoder padding)
        start = [] if decoder.start_id is None else [decoder.start_id]
        generated = []
        for output in greedy:
            assert output[:len(start)] == start and len(output) == len(start) + NEW_TOKENS, (
                backend, family, output)
            generated.append(output[len(start):])
        if family == "t5":
            x = [padded(prompts), padded([start + g[:-1] for g in generated])]
            y = forward(models[family].model, x)
        else:
            seqs = [p + start + g[:-1] for p, g in zip(prompts, generated)]
            x = padded(seqs)
            if family == "unilm":
                x = [x, padded([[0] * len(p) + [1] * (len(q) - len(p))
                                for p, q in zip(prompts, seqs)])]
            y = forward(models[family].model, x)
            y = np.stack([row[len(q) - NEW_TOKENS:len(q)] for row, q in zip(y, seqs)])
        for row, g in zip(y, generated):
            assert np.array_equal(np.argmax(row, -1), g), (backend, family)
        out[family + "/path_logits"] = np.asarray(y).reshape(-1, VOCAB)
    decoder = CachedDecoder(models["gpt2"], end_id=None, maxlen=NEW_TOKENS, bucket=8)
    beams, scores = decoder.generate(prompts, method="beam", num_beams=2, return_scores=True)
    out["gpt2/beam"] = padded([np.asarray(r).tolist() for r in beams])
    out["gpt2/beam_scores"] = np.asarray(scores, "float32")
    samples = decoder.generate(prompts, method="sample", topp=0.9, seed=3)
    for rows in samples:
        for row in rows:
            row = np.asarray(row)
            assert row.shape == (NEW_TOKENS,) and row.min() >= 0 and row.max() < VOCAB
    np.savez(os.path.join(directory, backend + ".npz"), **out)
    print(json.dumps(dict(backend=backend, keys=sorted(out))))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("parity"))
    write_weights(directory)
    procs = {}
    for backend in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        procs[backend] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), directory], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for backend, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, "%s worker failed:\n%s\n%s" % (
            backend, stdout[-2000:], stderr[-4000:])
        with np.load(os.path.join(directory, backend + ".npz")) as f:
            results[backend] = {k: f[k] for k in f.files}
    return results


CLOSE = ["bert/forward", "unilm/forward", "gpt2/forward", "t5/forward", "gpt2/path_logits",
         "t5/path_logits", "unilm/path_logits", "gpt2/beam_scores"]
EQUAL = ["gpt2/greedy", "t5/greedy", "unilm/greedy", "gpt2/beam"]


@pytest.mark.parametrize("key", CLOSE)
def test_outputs_agree(outputs, key):
    reference = outputs["tensorflow"][key]
    assert np.all(np.isfinite(reference))
    for backend in BACKENDS[1:]:
        got = outputs[backend][key]
        assert got.shape == reference.shape, (backend, key, got.shape, reference.shape)
        diff = float(np.max(np.abs(got - reference)))
        assert diff <= TOL, "%s: %s differs from tensorflow by %.3g (max abs)" % (
            key, backend, diff)


@pytest.mark.parametrize("key", EQUAL)
def test_tokens_identical(outputs, key):
    reference = outputs["tensorflow"][key]
    assert len(np.unique(reference)) >= 3  # varied paths, not one repeated token
    for backend in BACKENDS[1:]:
        np.testing.assert_array_equal(outputs[backend][key], reference,
                                      err_msg="%s: %s" % (key, backend))


if __name__ == "__main__":
    worker(sys.argv[1])
