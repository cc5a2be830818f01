"""Shared fixtures: small random Hugging Face BERT models and the same weights
in Google's TF checkpoint format, written independently of bert4keras."""

import gc
import json
import os
import re
import sys

import numpy as np
import pytest

# examples import their shared flags from examples/common.py, as `python examples/x.py` would
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
if EXAMPLES_DIR not in sys.path:
    sys.path.insert(0, EXAMPLES_DIR)


@pytest.fixture(scope="module", autouse=True)
def _freeze_what_earlier_test_files_left():
    """After each test file (its module fixtures torn down), collect its
    garbage once and freeze what survives (``gc.freeze``): later full
    collections then skip the ~3 million objects earlier files left alive in
    a worker (TensorFlow graphs, Keras state). Without it every collection in a
    late file walked them all: Keras' ``Layer.__delattr__`` collects once per
    dropped variable (``model.quantize`` drops one per ``Dense``), and a test
    that took 3 s alone took 35 s in the suite. The collection here can wait,
    with little CPU, on tf.data iterators left by a ``fit`` that raised
    mid-epoch (destroying one waits for tf.data's autotune thread: 13-20 s
    after tests/test_input_validation.py); the suite is still faster."""
    yield
    gc.collect()
    gc.freeze()


def load_example(name):
    """``examples/<name>.py`` imported as a new module object (its
    ``main``/``parse_args`` and helpers), as the example tests use them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES_DIR, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

SMALL_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def hf_to_google_name(name):
    """Hugging Face BERT name -> (Google checkpoint name, transpose?).

    Follows the layout of google-research/bert ``modeling.py``: dense kernels are
    ``[in, out]`` (torch Linear stores ``[out, in]``), NSP ``output_weights`` is
    ``[2, hidden]`` like torch, LayerNorm is gamma/beta. Written here on its own
    so that the fixture does not reuse bert4keras's name map.
    """
    if not name.startswith(("bert.", "cls.")):
        name = "bert." + name
    if name == "cls.predictions.bias":
        return "cls/predictions/output_bias", False
    if name == "cls.seq_relationship.weight":
        return "cls/seq_relationship/output_weights", False
    if name == "cls.seq_relationship.bias":
        return "cls/seq_relationship/output_bias", False
    transpose = False
    name = re.sub(r"layer\.(\d+)", r"layer_\1", name)
    if "LayerNorm" in name:
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    elif "embeddings." in name and name.endswith(".weight"):
        name = name[: -len(".weight")]
    elif name.endswith(".weight"):
        name = name[: -len(".weight")] + ".kernel"
        transpose = True
    return name.replace(".", "/"), transpose


def write_google_checkpoint(state_dict, prefix, drop=()):
    """Save a torch state dict as a TF1 checkpoint with tf.compat.v1's Saver,
    as Google's own BERT code saved its releases."""

    tensors = {}
    for key, value in state_dict.items():
        if key.endswith("position_ids") or key.startswith("cls.predictions.decoder"):
            continue
        name, transpose = hf_to_google_name(key)
        array = value.detach().cpu().numpy()
        tensors[name] = array.T if transpose else array
    for name in drop:
        tensors.pop(name)
    save_tf1_checkpoint(tensors, prefix)
    return tensors


def save_tf1_checkpoint(tensors, prefix):
    """Save ``{name: array}`` with tf.compat.v1's Saver, as Google's own code
    saved its releases (independent of bert4keras's checkpoint writer)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=n) for n, v in tensors.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, prefix)


def perturb_(model, scale=0.1, seed=None, which=None):
    """Add ``scale * N(0, 1)`` noise in place to a torch model's LayerNorm and
    bias parameters (default ``which``: LayerNorm or ``*bias``), so that a
    swapped weight would show in the outputs. Returns the model."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    if which is None:
        def which(name, p):
            return "LayerNorm" in name or name.endswith("bias")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if which(name, p):
                p.add_(scale * torch.randn_like(p))
    return model


def google_config(hf_config):
    keys = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "hidden_act", "hidden_dropout_prob",
            "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
            "initializer_range"]
    return {k: getattr(hf_config, k) for k in keys}


@pytest.fixture(scope="session")
def hf_bert(tmp_path_factory):
    """(directory, torch BertForPreTraining) for a random small BERT."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    model = perturb_(BertForPreTraining(BertConfig(**SMALL_BERT)).eval())
    path = tmp_path_factory.mktemp("hf_bert")
    model.save_pretrained(path)
    return str(path), model


@pytest.fixture(scope="session")
def google_bert(hf_bert, tmp_path_factory):
    """Directory with bert_config.json + bert_model.ckpt.* of the same weights."""
    _, model = hf_bert
    path = tmp_path_factory.mktemp("google_bert")
    write_google_checkpoint(model.state_dict(), str(path / "bert_model.ckpt"))
    with open(path / "bert_config.json", "w") as f:
        json.dump(google_config(model.config), f)
    return str(path)


@pytest.fixture(scope="session")
def sample_inputs():
    """token ids (with padding in row 1) and segment ids, (3, 11) int32."""
    rng = np.random.RandomState(0)
    ids = rng.randint(1, SMALL_BERT["vocab_size"], (3, 11)).astype("int32")
    seg = rng.randint(0, 2, (3, 11)).astype("int32")
    ids[1, 7:] = 0
    seg[1, 7:] = 0
    return ids, seg


# -- .keras files reloaded in a fresh process ---------------------------------------------

_RELOAD_SCRIPT = r'''
import json, sys
import numpy as np
import bert4keras  # the one import a user needs before load_model
import keras

report = []
for job in json.loads(sys.argv[1]):
    row = {"key": job["key"]}
    try:
        model = keras.saving.load_model(job["model"])
        data = np.load(job["data"])
        inputs = [data["input%d" % i] for i in range(job["inputs"])]
        outputs = [np.asarray(keras.ops.convert_to_numpy(y))
                   for y in keras.tree.flatten(model(inputs, training=False))]
        expected = [data["output%d" % i] for i in range(len(data.files) - job["inputs"])]
        row["shapes"] = [list(y.shape) for y in outputs] == [list(y.shape) for y in expected]
        row["diff"] = (max(float(np.max(np.abs(y - e))) if y.size else 0.0
                           for y, e in zip(outputs, expected)) if row["shapes"] else None)
        row["compiled"] = bool(model.compiled)
        row["iterations"] = (int(keras.ops.convert_to_numpy(model.optimizer.iterations))
                             if getattr(model, "optimizer", None) is not None else None)
        row["loaded"] = sorted({type(layer).__name__ for layer in model.layers})
    except Exception as error:  # reported per model; the others still run
        row["error"] = "%s: %s" % (type(error).__name__, error)
    report.append(row)
print("REPORT " + json.dumps(report))
'''


def model_outputs(model, inputs):
    """Every output of ``model(inputs)`` (inference mode) as a NumPy array."""
    import keras

    return [np.asarray(keras.ops.convert_to_numpy(y))
            for y in keras.tree.flatten(model(inputs, training=False))]


def reload_in_new_process(tmp_path, cases, timeout=600):
    """Save each ``(key, model, inputs)`` as ``.keras`` with its outputs, reload
    them all in ONE new Python process that only imports ``bert4keras`` and
    ``keras`` and calls ``keras.saving.load_model``, and return its report:
    one dict per case, in order, with ``key``, ``shapes`` (equal), ``diff``
    (max abs output difference), ``compiled``, ``iterations`` (optimizer
    steps or None), ``loaded`` (layer class names), or ``error``."""
    import subprocess

    jobs = []
    for index, (key, model, inputs) in enumerate(cases):
        path = str(tmp_path / ("case%d.keras" % index))
        model.save(path)
        data = str(tmp_path / ("case%d.npz" % index))
        arrays = {"input%d" % i: x for i, x in enumerate(inputs)}
        arrays.update({"output%d" % i: y for i, y in enumerate(model_outputs(model, inputs))})
        np.savez(data, **arrays)
        jobs.append({"key": key, "model": path, "data": data, "inputs": len(inputs)})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", _RELOAD_SCRIPT, json.dumps(jobs)], env=env,
                         capture_output=True, text=True, timeout=timeout, cwd=str(tmp_path))
    lines = [line for line in run.stdout.splitlines() if line.startswith("REPORT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


class tf_op_by_op:
    """Context: ``tf.function`` bodies run op by op (``run_functions_eagerly``)
    on TensorFlow, a no-op elsewhere. For references decoded by tiny models in
    a few steps, where tracing each step function (~0.3-0.7 s) costs more
    than running its ops eagerly; ``jit_compile=False`` in graph mode stays
    checked where a test says so."""

    def __enter__(self):
        import keras

        self.tf = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            self.tf, self.before = tf, tf.config.functions_run_eagerly()
            tf.config.run_functions_eagerly(True)
        return self

    def __exit__(self, *exc):
        if self.tf is not None:
            self.tf.config.run_functions_eagerly(self.before)


def rerun_on_backend(backend, test_files, selection=None, timeout=900, env=None):
    """Run the tests of ``test_files`` (``-k selection`` if given) in a
    subprocess with ``KERAS_BACKEND=backend`` (and the variables of ``env``),
    one process (no nested xdist workers: the suite already runs two), and
    assert that they passed (exit 0, a ``passed`` count, no ``failed``)."""
    import subprocess

    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
               "no:xdist", "-o", "addopts=", *map(os.path.abspath, test_files)]
    if selection:
        command += ["-k", selection]
    run = subprocess.run(command, cwd=os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), env=env, capture_output=True, text=True, timeout=timeout)
    tail = "\n".join(run.stdout.splitlines()[-30:])
    assert run.returncode == 0, "failed on %s:\n%s\n%s" % (backend, tail, run.stderr[-3000:])
    assert " passed" in tail and "failed" not in tail, tail
