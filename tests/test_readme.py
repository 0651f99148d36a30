"""The README's Python examples run as written (those before its Scaling section, which needs a cluster)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    text = README.read_text().split("\n## Scaling")[0]
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_has_examples():
    assert len(_blocks()) >= 3


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)  # the checkpoint example writes a file
    exec(compile(_blocks()[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})
