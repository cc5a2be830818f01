"""Tests of tools/port_upstream_examples.py: its rewrite rules, import listing
and traceback classification, on a small old-style script written here."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "port_upstream_examples.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("port_upstream_examples", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OLD_STYLE = '''\
import json
from bert4keras.backend import keras, K
from bert4keras.snippets import open, to_array

maxlen = 256
batch_size = 32
epochs = 20
config_path = '/root/kg/bert/chinese_L-12_H-768_A-12/bert_config.json'
checkpoint_path = '/root/kg/bert/chinese_L-12_H-768_A-12/bert_model.ckpt'
dict_path = '/root/kg/bert/chinese_L-12_H-768_A-12/vocab.txt'
train = open('datasets/sentiment/sentiment.train.data').read()
if not os.path.exists('../random_order.json'):
    pass


def main(model, gen):
    model.fit_generator(gen, steps_per_epoch=1000, epochs=50)
    model.save_weights('./best_model.weights')
    model.load_weights("best_model.weights")
    model.save('test.model')
    model = keras.models.load_model('test.model')
    model.save('ok.keras')
    out = model.layers[-2].get_output_at(-1)
    nodes = model.predict([[token_ids], [segment_ids]])[0]
    grads = grad_model.predict([[token_ids], [segment_ids], [[label]]])[0]
    probas = model.predict(to_array([token_ids], [segment_ids]))
'''

PATHS = {"ckpt": "/ck", "config": "/ck/bert_config.json", "data": "/d", "work": "/w",
         "port": "1234", "vocab": "/ck/vocab.txt"}


def test_rewrite_paths_sizes_and_keras3_rules(tool):
    new, applied = tool.rewrite(OLD_STYLE, "my_script", PATHS)
    assert "config_path = '/ck/bert_config.json'" in new
    assert "checkpoint_path = '/ck/bert_model.ckpt'" in new
    assert "dict_path = '/ck/vocab.txt'" in new
    assert "open('/d/sentiment/sentiment.train.data')" in new
    assert "'./random_order.json'" in new
    assert "maxlen = 32" in new and "batch_size = 4" in new and "epochs = 1\n" in new
    assert "steps_per_epoch=2, epochs=1" in new
    assert "model.fit(gen" in new and "fit_generator" not in new
    assert "save_weights('./best_model.weights.h5')" in new
    assert 'load_weights("best_model.weights.h5")' in new
    assert "model.save('test.model.keras')" in new
    assert "load_model('test.model.keras')" in new
    assert "model.save('ok.keras')" in new  # already a Keras 3 name: untouched
    assert "out = model.layers[-2].output" in new
    assert "model.predict([np.array([token_ids]), np.array([segment_ids])])[0]" in new
    assert ("grad_model.predict([np.array([token_ids]), np.array([segment_ids]), "
            "np.array([[label]])])[0]") in new
    assert "model.predict(to_array([token_ids], [segment_ids]))" in new  # arrays: untouched
    for rule in ("keras3:weights-suffix", "keras3:fit-generator", "keras3:model-save-suffix",
                 "keras3:load-model-suffix", "path:config_path", "data:../random_order.json"):
        assert rule in applied
    # nothing else changed: same number of lines, imports untouched
    assert len(new.splitlines()) == len(OLD_STYLE.splitlines())
    assert new.splitlines()[:3] == OLD_STYLE.splitlines()[:3]


def test_rewrite_random_init_sets_checkpoint_none(tool):
    new, _ = tool.rewrite(OLD_STYLE, "my_script", dict(PATHS, ckpt=None))
    assert "checkpoint_path = None" in new
    assert "dict_path = '/ck/vocab.txt'" in new  # the vocabulary still comes from /ck


def test_rewrite_is_idempotent_on_weights_suffix(tool):
    once, _ = tool.rewrite(OLD_STYLE, "my_script", PATHS)
    twice, applied = tool.rewrite(once, "my_script", PATHS)
    assert "best_model.weights.h5.h5" not in twice
    assert not any(a.startswith("keras3:") for a in applied)


def test_import_statements_one_entry_per_name(tool):
    stmts = tool.import_statements(OLD_STYLE)
    codes = [s[1] for s in stmts]
    assert codes == ["import json", "from bert4keras.backend import keras",
                     "from bert4keras.backend import K", "from bert4keras.snippets import open",
                     "from bert4keras.snippets import to_array"]
    assert not any(s[4] for s in stmts)  # all top level


def test_static_names(tool):
    k, chains, tok, dec = tool.static_names(OLD_STYLE + "\nK.sum(x)\ntokenizer._token_end_id\n")
    assert k == ["sum"] and "keras.models.load_model" in chains and tok == ["_token_end_id"]


def test_parse_traceback_names_script_line_and_error(tool, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("x = 1\n\ndef f():\n    raise ValueError('bad shape (2, 3)')\n\nf()\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    info = tool.parse_traceback(proc.stderr, script)
    assert info["error"] == "ValueError: bad shape (2, 3)"
    assert info["script_line"] == "4: raise ValueError('bad shape (2, 3)')"
    assert info["library_frame"] is None


def test_classify_imports(tool):
    probe = {"imports": [[1, "from bert4keras.layers import Loss", "bert4keras.layers", "Loss",
                          False, "ImportError: cannot import name 'Loss'"],
                         [2, "import cv2", "cv2", None, False, "ModuleNotFoundError: cv2"]],
             "attrs": {}}
    assert tool.classify_imports(probe)[0] == "import-fails"
    probe["imports"] = probe["imports"][1:]
    assert tool.classify_imports(probe)[0] == "missing-package"
    probe["imports"] = []
    assert tool.classify_imports(probe) == ("imports", "")


def test_help_runs():
    proc = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--mode" in proc.stdout
