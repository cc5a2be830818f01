"""Every Python code block of README.md runs as written (issue 16).

README's first example once could not run on anything in the repository (a
pooler the shipped checkpoint lacks, Google paths that are not here). This test
extracts the fenced blocks of README.md and runs them, in README order, each
in its own Python subprocess with the repository root as working directory,
``TF_CPP_MIN_LOG_LEVEL=2`` and a timeout; later blocks may use files that
earlier ones wrote (the reload block loads the file the "Ten lines" block
saved, in a new process, as a user would).

Which blocks run:

* every ```` ```python ```` block, unless the line before it (blank lines
  aside) is ``<!-- readme-test: skip (long run) -->`` -- kept for blocks that
  are explicitly commands for long runs; README has none today;
* a ```` ```bash ```` block only if the line before it is
  ``<!-- readme-test: run -->`` (its lines run with ``bash -e``).

Files the blocks create under ``runs/`` (git-ignored) are removed afterwards.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
SKIP = "<!-- readme-test: skip (long run) -->"
RUN = "<!-- readme-test: run -->"
TIMEOUT = 120  # seconds per block


def readme_blocks(text):
    """``[(language, code, marker, line number)]`` of the fenced blocks of
    ``text``; ``marker`` is the nearest non-blank line before the fence."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        start, language = i, match.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        assert j < len(lines), "README.md: code block opened at line %d never closes" % (i + 1)
        before = [line.strip() for line in lines[:start] if line.strip()]
        marker = before[-1] if before else ""
        blocks.append((language, "\n".join(lines[start + 1:j]) + "\n", marker, start + 1))
        i = j + 1
    return blocks


def test_block_extraction():
    text = "a\n```python\nx = 1\n```\n" + SKIP + "\n\n```python\ny\n```\n```bash\nls\n```\n"
    blocks = readme_blocks(text)
    assert [(b[0], b[1], b[2]) for b in blocks] == [
        ("python", "x = 1\n", "a"), ("python", "y\n", SKIP), ("bash", "ls\n", "```")]


def _runs_files():
    found = set()
    for base, _, names in os.walk(os.path.join(ROOT, "runs")):
        found.update(os.path.join(base, name) for name in names)
    return found


def test_every_python_block_of_readme_runs():
    with open(README, encoding="utf-8") as f:
        blocks = readme_blocks(f.read())
    to_run = [(language, code, line) for language, code, marker, line in blocks
              if (language == "python" and marker != SKIP)
              or (language == "bash" and marker == RUN)]
    python_blocks = [b for b in blocks if b[0] == "python"]
    assert len(python_blocks) >= 2, "README.md lost its Python examples"
    assert any("chinese_bert_small" in code for _, code, _ in to_run)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    existing = _runs_files()
    runs_existed = os.path.isdir(os.path.join(ROOT, "runs"))
    try:
        for language, code, line in to_run:
            command = [sys.executable, "-c", code] if language == "python" else \
                ["bash", "-e", "-c", code]
            try:
                run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                                     text=True, timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError("README.md block at line %d ran over %d s"
                                     % (line, TIMEOUT)) from None
            assert run.returncode == 0, (
                "README.md %s block at line %d failed (exit %d):\n%s\n--- stderr ---\n%s"
                % (language, line, run.returncode, code, run.stderr[-3000:]))
    finally:
        for path in _runs_files() - existing:
            os.remove(path)
        if not runs_existed and os.path.isdir(os.path.join(ROOT, "runs")):
            try:
                os.rmdir(os.path.join(ROOT, "runs"))  # only if the blocks left it empty
            except OSError:
                pass


def test_with_pool_on_the_shipped_checkpoint_is_named():
    """README's note beside "Ten lines": the shipped MLM checkpoint has no
    pooler, and ``with_pool=True`` on it is a named CheckpointError."""
    from bert4keras.checkpoints import CheckpointError
    from bert4keras.models import build_transformer_model

    shipped = os.path.join(ROOT, "checkpoints", "chinese_bert_small")
    with pytest.raises(CheckpointError, match="bert/pooler/dense/kernel") as caught:
        build_transformer_model(os.path.join(shipped, "bert_config.json"),
                                os.path.join(shipped, "bert_model.ckpt"), with_pool=True)
    assert "bert_model.ckpt" in str(caught.value) and "optional" in str(caught.value)


def test_bad_input_table_names_existing_tests():
    """Every ``tests/...::test_name`` cited in README's "Bad input" table is
    a test function of that file (so each row stays backed by a test)."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index("### Bad input")
    end = text.find("\n#", start + 1)
    table = [line for line in text[start:end].splitlines() if line.startswith("| ")][2:]
    assert len(table) >= 20, "README's Bad input table lost its rows"
    for row in table:
        cited = re.findall(r"`(test_\w+\.py)::(test_\w+)`", row)
        assert cited, "README Bad input row names no test: %s" % row
        for filename, name in cited:
            path = os.path.join(ROOT, "tests", filename)
            assert os.path.exists(path), "README cites %s, which does not exist" % filename
            with open(path, encoding="utf-8") as f:
                source = f.read()
            assert re.search(r"^def %s\(" % name, source, re.M), (
                "README cites %s::%s, which is not a test there" % (filename, name))
