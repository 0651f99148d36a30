"""The shape of the code, checked with ``ast``: modules use each other's public names only, functions stay short.

- No module of ``jdense/`` imports or reads another jdense module's ``_private`` names, private
  modules included (the shared argument checks live in the public ``jdense.checks``).
  Benchmarks and the test workers are held to the same rule.
- No function in ``jdense/`` is longer than :data:`MAX_FUNCTION_LINES` lines, not counting its docstring.
- ``jdense/train.py`` stays within :data:`MAX_TRAIN_LINES` lines.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jdense"
MAX_FUNCTION_LINES = 100
MAX_TRAIN_LINES = 450


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _jdense_modules() -> set[str]:
    return {_module_name(p) for p in PACKAGE.rglob("*.py")}


def private_uses(path: pathlib.Path, modules: set[str]) -> list[str]:
    """``file:line name`` for each use of another jdense module's private name in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    own = _module_name(path) if PACKAGE in path.parents else None
    aliases: dict[str, str] = {}  # local name -> jdense module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules:
                    aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jdense" and not node.level:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in modules and not _private(a.name):  # a public module, e.g. `from jdense import checks`
                    aliases[a.asname or a.name] = full
                elif _private(a.name) and node.module != own:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            target = aliases[node.value.id]
            if f"{target}.{node.attr}" in modules:
                continue  # a submodule (e.g. jdense.data), checked where it is used
            if _private(node.attr) and target != own:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def long_functions(path: pathlib.Path, limit: int) -> list[str]:
    """``file:line name (n lines)`` for each function longer than ``limit`` lines without its docstring."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            doc = node.body[0] if node.body else None
            if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
                lines -= doc.end_lineno - doc.lineno + 1
            if lines > limit:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_the_checker_finds_what_it_should(tmp_path):
    """The rule itself: a private import and a private attribute are found, a public one and the module's own are not."""
    pkg = tmp_path / "jdense"
    pkg.mkdir()
    (pkg / "a.py").write_text("def _x():\n    pass\n\n\ndef f():\n    return _x()\n")
    (pkg / "b.py").write_text("from jdense import a, checks, _hidden\nfrom jdense.a import _x\n\n\ndef g():\n"
                              "    return a._x(), a.f(), checks.short(1)\n")
    global ROOT, PACKAGE
    saved = ROOT, PACKAGE
    ROOT, PACKAGE = tmp_path, pkg
    try:
        modules = {"jdense", "jdense.a", "jdense.b", "jdense.checks", "jdense._hidden"}
        assert private_uses(pkg / "a.py", modules) == []
        assert private_uses(pkg / "b.py", modules) == ["jdense/b.py:1 from jdense import _hidden", "jdense/b.py:2 from jdense.a import _x",
                                                  "jdense/b.py:6 a._x"]
        assert long_functions(pkg / "a.py", 1) == ["jdense/a.py:1 _x (2 lines)", "jdense/a.py:5 f (2 lines)"]
    finally:
        ROOT, PACKAGE = saved


@pytest.mark.parametrize("where", ["jdense", "benchmarks", "tests/_*_worker.py"])
def test_no_module_uses_another_modules_private_names(where):
    modules = _jdense_modules()
    paths = sorted(PACKAGE.rglob("*.py")) if where == "jdense" else (
        sorted((ROOT / "benchmarks").glob("*.py")) if where == "benchmarks" else sorted((ROOT / "tests").glob("_*_worker.py")))
    found = [use for path in paths for use in private_uses(path, modules)]
    assert found == []


def test_no_function_is_longer_than_100_lines_without_its_docstring():
    found = [f for path in sorted(PACKAGE.rglob("*.py")) for f in long_functions(path, MAX_FUNCTION_LINES)]
    assert found == []


def test_train_py_stays_short():
    assert len((PACKAGE / "train.py").read_text().splitlines()) <= MAX_TRAIN_LINES
