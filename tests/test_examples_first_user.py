"""What a new user meets first in examples/ (issue 16): every ``--help``
shows the defaults, the main job trains without Keras' ``shuffle=True ...
will be ignored`` warning, ``--stream`` decodes and prints once, and a script
starts without TensorFlow's C++ log lines."""

import glob
import os
import subprocess
import sys
import warnings

import pytest

from conftest import load_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(os.path.basename(p)[:-3]
                  for p in glob.glob(os.path.join(ROOT, "examples", "*.py"))
                  if not p.endswith(("common.py", "_kit.py")))  # shared modules, not scripts
SMALL_BERT_DIR = os.path.join(ROOT, "checkpoints", "chinese_bert_small")



@pytest.mark.parametrize("name", EXAMPLES)
def test_help_shows_every_default(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    example = load_example(name)
    with pytest.raises(SystemExit):
        example.parse_args(["--help"])
    blocks = {}  # "--flag" -> its lines of help (the invocation may stand on its own line)
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            blocks[flag] = line
        elif line.startswith("   ") and blocks:
            blocks[flag] += " " + line.strip()
    defaults = vars(example.parse_args([]))
    for key, value in defaults.items():
        if key.startswith("_") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        assert flag in blocks, (name, flag)
        assert "default" in blocks[flag], (name, blocks[flag])


def test_main_job_trains_without_the_shuffle_warning(tmp_path):
    example = load_example("task_sentiment_classification")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        example.main(["--random-init", "--limit", "16", "--batch-size", "8", "--epochs", "1",
                      "--output", ""])
    assert not [w for w in caught if "shuffle" in str(w.message)]


def test_stream_decodes_and_prints_once(capsys):
    example = load_example("basic_language_model_gpt2_ml")
    flags = ["--random-init", "--config", os.path.join(SMALL_BERT_DIR, "bert_config.json"),
             "--vocab", os.path.join(SMALL_BERT_DIR, "vocab.txt"), "--layers", "1",
             "--max-new-tokens", "6", "--method", "greedy", "--prompt", "今天天气"]
    streamed = example.main(flags + ["--stream"])
    out = capsys.readouterr().out
    assert out.count("今天天气") == 1, out
    assert streamed["texts"][0][0] in out
    # the streamed tokens are what generate() gives (greedy: deterministic)
    batch = example.main(flags)
    assert batch["texts"] == streamed["texts"] and batch["tokens"] == streamed["tokens"]
    with pytest.raises(SystemExit, match="--n 1"):
        example.main(flags[:-4] + ["--method", "sample", "--n", "2", "--stream"])


def test_example_starts_without_tensorflow_log_lines():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, os.path.join(ROOT, "examples",
                                                       "task_sentiment_classification.py"),
                          "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "usage:" in run.stdout
    for noise in ("absl::InitializeLog", "oneDNN", "cuda", "cpu_feature_guard", "I0000"):
        assert noise not in run.stderr, run.stderr
