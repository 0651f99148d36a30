"""The documentation is tested: every ```python and ```bash block of README.md and docs/**/*.md runs, and the site builds.

Each python block runs in a fresh namespace with a temporary directory as the working directory, so
a block must import what it uses. Each bash block runs in ``bash -e`` in a temporary directory, with
``jdense`` this tree's command line. A block that cannot run here (pip install, long trainings,
files that are not in the repository) is preceded by the line ``<!-- skip: why -->``.
"""

import importlib.util
import inspect
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import jdense

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

_BLOCK = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
_BASH = re.compile(r"^(?P<indent>[ \t]*)```(?:bash|sh|shell|console)[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
_MARKER = re.compile(r"^\s*<!--\s*(skip):(.*?)-->\s*$")


# Optional dependencies a page may use: a block that needs one that is not installed is skipped.
_OPTIONAL = {"torch", "tensorboardX", "grain", "onnx", "onnxruntime", "matplotlib", "sklearn"}


def _missing_optional(error):
    """The optional module whose absence caused ``error`` (also when re-raised with an install hint), or None."""
    while error is not None:
        if isinstance(error, ImportError) and error.name in _OPTIONAL:
            return error.name
        error = error.__cause__ or error.__context__
    return None


def _blocks(pattern=_BLOCK):
    """(page, line, code, marker kind, marker text) for every ```python block (``pattern``'s blocks)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = _MARKER.match(before)
            kind, why = (marker.group(1), marker.group(2).strip()) if marker else (None, "")
            found.append((page, line, textwrap.dedent(match.group("code")), kind, why))
    return found


BLOCKS = _blocks()
BASH_BLOCKS = _blocks(_BASH)


def _id(block):
    page, line = block[0], block[1]
    return f"{page.relative_to(ROOT)}:{line}"


def test_the_pages_have_examples():
    pages = {block[0] for block in BLOCKS}
    assert README in pages
    assert len(pages) >= 8, sorted(str(p.relative_to(ROOT)) for p in pages)


def test_markers_are_well_formed():
    for page, line, _, kind, why in BLOCKS:
        where = f"{page.relative_to(ROOT)}:{line}"
        if kind == "skip":
            assert why, f"{where}: a skipped block says why, <!-- skip: reason -->"


@pytest.mark.parametrize("block", BLOCKS, ids=_id)
def test_block_runs(block, tmp_path, monkeypatch):
    page, line, code, kind, why = block
    if kind == "skip":
        pytest.skip(f"marked: {why}")
    monkeypatch.chdir(tmp_path)
    name = f"{page.relative_to(ROOT)}:{line}"
    try:
        exec(compile("\n" * line + code, name, "exec"), {"__name__": "__docs__"})
    except ImportError as error:
        missing = _missing_optional(error)
        if missing is None:
            raise
        pytest.skip(f"{name} needs the optional dependency {missing}, not installed here")
    finally:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")


def test_every_bash_block_runs_or_says_why_not():
    """A shell block is either run (test_bash_block_runs) or marked <!-- skip: reason --> with a reason."""
    assert BASH_BLOCKS, "no ```bash block found: the pattern is wrong"
    assert any(kind is None for *_, kind, _ in BASH_BLOCKS), "at least the cheap jdense commands run"
    for page, line, _, kind, why in BASH_BLOCKS:
        where = f"{page.relative_to(ROOT)}:{line}"
        assert kind in (None, "skip") and (kind is None or why), f"{where}: a skipped block says why, <!-- skip: reason -->"


@pytest.mark.parametrize("block", BASH_BLOCKS, ids=_id)
def test_bash_block_runs(block, tmp_path):
    page, line, code, kind, why = block
    if kind == "skip":
        pytest.skip(f"marked: {why}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "JDENSE_NO_COMPILATION_CACHE": "1"}
    prelude = f'jdense() {{ "{sys.executable}" -m jdense "$@"; }}\n'  # this tree's command line, whatever is on PATH
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, f"{page.relative_to(ROOT)}:{line} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), "the commands print something"


def test_readme_is_a_landing_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    commands = re.findall(r"```bash\n(.*?)```", text, re.S)[:2]
    assert 'pip install -e ".[examples]"' in commands[0] and commands[0].strip().endswith("jdense train")
    assert 'pip install -e ".[test]"' in commands[1] and commands[1].strip().endswith("pytest")
    assert text.index("```bash") < 400, "the two commands come first"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=f"the docs build needs {module}: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_site_builds_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "index.html").is_file()


def test_api_reference_covers_every_public_name(site):
    ids = set()
    for page in (site / "api").rglob("*.html"):
        ids.update(re.findall(r'id="(jdense[\w.]*)"', page.read_text()))
    missing = []
    for name in jdense.__all__:
        obj = getattr(jdense, name)
        home = obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{name}"
        if home not in ids and f"jdense.{name}" not in ids:
            module = home if inspect.ismodule(obj) else obj.__module__
            missing.append(f"{name} (list it under members: in docs/api/{module.split('.')[-1]}.md, "
                           f"or make that page, '::: {module}', and add it to mkdocs.yml's nav)")
    assert not missing, "not in the API reference: " + "; ".join(missing)
    for module in ("jdense.data", "jdense.parallel"):
        assert module in ids, f"no API page for {module}"


def test_docstring_conventions_are_read_as_google_sections():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("_griffe_jdense", ROOT / "docs" / "_griffe_jdense.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = textwrap.dedent("""\
        Train on :func:`fit`'s data, see `safetensors <https://example.org/st>`_.

        Args:
          x, y: the data.
          loss, epochs,
            key: as in fit,
            continued.

        Returns:
          A :class:`Checkpoint`.

        Example:
          >>> 1 + 1
          2
        """)
    assert module.normalize(text) == textwrap.dedent("""\
        Train on `fit`'s data, see [safetensors](https://example.org/st).

        Args:
          x: the data.
          y: the data.
          loss: as in fit,
            continued.
          epochs: as in fit,
            continued.
          key: as in fit,
            continued.

        Returns:
          A `Checkpoint`.

        Examples:
          >>> 1 + 1
          2
        """)
