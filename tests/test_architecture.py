"""The shape of the tree (issue 13): no import loops, small modules, a
family-agnostic generation package, a declared public surface, lint clean."""

import ast
import importlib
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("bert4keras", "pretraining")


def _modules():
    """``{dotted module name: path}`` of every module in PACKAGES."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _top_level_imports(path, name, modules):
    """Modules of ours imported when ``name`` is imported (module level only:
    imports inside functions run later and cannot form a loop at import)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    edges = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + ["%s.%s" % (base, alias.name) for alias in node.names]
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                continue
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    edges.add(target)

    visit(tree.body)
    return edges


def _parents(name):
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_no_import_loops():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = _top_level_imports(path, name, modules)
        # importing a.b.c runs a and a.b first; a package importing its own
        # submodule is the usual re-export, not a loop
        graph[name] = {e for e in edges if e not in _parents(name)}
    state, stack, loops = {}, [], []

    def walk(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                loops.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    # a submodule importing its own package's __init__ while that __init__
    # imports the submodule is a loop too: it is in the graph above
    assert not loops, "import loops: %s" % ["  ->  ".join(loop) for loop in loops]


def test_library_modules_are_small():
    big = {str(path.relative_to(ROOT)): n for package in PACKAGES
           for path in (ROOT / package).rglob("*.py")
           if (n := len(path.read_text(encoding="utf-8").splitlines())) > 700}
    assert not big, "modules over 700 lines: %s" % big
    generation = ROOT / "bert4keras" / "generation"
    if generation.is_dir():
        big = {p.name: n for p in generation.glob("*.py")
               if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
        assert not big, "generation modules over 500 lines: %s" % big


FAMILY_WORDS = ("T5", "GPT", "BERT", "Bert", "ALBERT", "NEZHA", "Nezha", "RoFormer",
                "ELECTRA", "Electra", "UniLM", "unilm")


def test_generation_knows_no_family():
    generation = ROOT / "bert4keras" / "generation"
    assert generation.is_dir(), "bert4keras/generation/ is a package"
    hits = []
    for path in generation.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                continue  # docstrings and messages may name an example family
            if isinstance(node, ast.Name):
                text = node.id
            elif isinstance(node, ast.Attribute):
                text = node.attr
            elif isinstance(node, ast.alias):
                text = node.name
            else:
                continue
            if any(word in text for word in FAMILY_WORDS):
                hits.append("%s:%d %s" % (path.name, node.lineno, text))
    assert not hits, "generation/ names model families in code: %s" % hits


@pytest.mark.parametrize("package", ["bert4keras", "bert4keras.layers", "bert4keras.models",
                                     "bert4keras.tokenizers", "bert4keras.generation"])
def test_public_surface_declared(package):
    module = __import__(package, fromlist=["__all__"])
    assert hasattr(module, "__all__"), "%s has no __all__" % package
    missing = []
    for name in module.__all__:
        if hasattr(module, name):
            continue
        try:  # a subpackage named in __all__ (``from bert4keras import *`` imports it)
            importlib.import_module("%s.%s" % (package, name))
        except ImportError:
            missing.append(name)
    assert not missing, "%s.__all__ names missing attributes: %s" % (package, missing)


def test_lint_clean():
    ruff = shutil.which("ruff")
    command = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    try:
        result = subprocess.run(command + ["check", "--no-cache", "."], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.fail("ruff is not installed: pip install -e '.[test]' brings it")
    assert result.returncode == 0, "ruff check found problems:\n%s" % result.stdout[-6000:]
