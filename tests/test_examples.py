"""The examples and notebooks are code: run every example's ``main`` and execute every notebook at a small size.

Examples run in this process (``main(argv)`` with ``--quick``); notebooks run in a fresh
``python3`` kernel through nbclient, with their parameter cell (the first code cell) given
small values, and matplotlib on the Agg backend.

Notebooks are stored without outputs. After editing one in Jupyter, clear it with::

    python tests/test_examples.py --clear notebooks/*.ipynb
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = ROOT / "notebooks"


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"jdense_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, argv: list[str], capsys) -> tuple[dict, str]:
    """Call ``examples/<name>.py``'s ``main(argv)``; return its result and what it printed."""
    module = load_example(name)
    assert module.__doc__ and "Run::" in module.__doc__, f"{name}.py needs a docstring that says how to run it"
    result = module.main(argv)
    return result, capsys.readouterr().out


def printed_accuracy(out: str) -> float:
    match = re.search(r"test accuracy (\d\.\d+)", out)
    assert match, f"no 'test accuracy' line in the output:\n{out}"
    return float(match.group(1))


# -- examples -------------------------------------------------------------------------------
def test_every_example_is_tested():
    tested = {"mnist_mlp", "regression", "binary_classification", "custom_layer", "train_loop", "sklearn_search"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_mnist_mlp_on_digits(capsys):
    result, out = run_example("mnist_mlp", ["--quick"], capsys)
    assert "digits" in out and "64-128-64-10" in out
    assert result["sizes"] == [64, 128, 64, 10]
    assert printed_accuracy(out) == pytest.approx(result["test_accuracy"], abs=1e-4)
    assert result["test_accuracy"] > 0.5  # chance is 0.1


def _write_fake_mnist(directory: Path, n_train: int = 600, n_test: int = 200) -> None:
    """Learnable 28x28 IDX files: class k lights a 7x7 square at position k, plus noise."""
    from jdense.data import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            r, c = divmod(int(k), 4)
            images[i, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7] = 255
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)


def test_mnist_mlp_reads_idx_files(tmp_path, capsys):
    _write_fake_mnist(tmp_path)
    result, out = run_example("mnist_mlp", ["--mnist", str(tmp_path), "--epochs", "2", "--batch-size", "64"], capsys)
    assert "784-128-64-10" in out and str(tmp_path) in out
    assert result["sizes"] == [784, 128, 64, 10]
    assert result["test_accuracy"] > 0.5


def test_regression(capsys):
    result, out = run_example("regression", ["--quick"], capsys)
    assert "mean predictor" in out and "network, mae loss" in out
    for loss in ("mse", "mae"):
        assert np.isfinite(result[loss]["mse"])
        assert result[loss]["mse"] < result["baseline"]["mse"]  # better than always predicting the mean
        assert result[loss]["mae"] < result["baseline"]["mae"]


def test_binary_classification(capsys):
    result, out = run_example("binary_classification", ["--quick"], capsys)
    assert printed_accuracy(out) == pytest.approx(result["test_accuracy"], abs=1e-4)
    assert result["test_accuracy"] > max(result["majority"], 0.7)


def test_binary_classification_moons_data():  # the other data set, without another compile
    module = load_example("binary_classification")
    x, y = module.load(module.parse_args(["--dataset", "moons", "--samples", "300"]))
    assert x.shape == (300, 2) and set(np.unique(y)) == {0, 1}


def test_custom_layer(capsys):
    result, out = run_example("custom_layer", ["--quick"], capsys)
    assert "layer_0 (function)" in out and "(None, 4, 4, 32)" in out  # summary shows the user layer
    assert result["test_accuracy"] > 0.3


def test_train_loop(capsys):
    result, out = run_example("train_loop", ["--quick"], capsys)
    assert "epoch 2: train loss" in out
    assert printed_accuracy(out) == pytest.approx(result["test_accuracy"], abs=1e-4)
    assert result["test_accuracy"] > 0.3


def test_sklearn_search(capsys):
    result, out = run_example("sklearn_search", ["--quick"], capsys)
    assert printed_accuracy(out) == pytest.approx(result["test_accuracy"], abs=1e-4)
    assert "PopulationSearchCV: 4 candidates x 3 folds" in out and "GridSearchCV: 4 candidates" in out
    for name in ("PopulationSearchCV", "GridSearchCV"):  # a learning rate of 1e-4 barely moves in 3 epochs
        assert result[name]["best_params"]["learning_rate"] == 1e-2
    assert result["test_accuracy"] > 0.8


# -- notebooks ------------------------------------------------------------------------------
# name -> (lines appended to the parameter cell, texts the outputs must contain)
NOTEBOOK_CASES = {
    "01_quickstart.ipynb": ("EPOCHS = 2", ["equals relu(x @ w + b): True", "dL/dw == x.T @ delta: True",
                                           "Total params: 17,226", "test accuracy"]),
    "02_regularization.ipynb": ("EPOCHS = 3\nTRAIN_SAMPLES = 100\nWIDTH = 64\nLAMBDAS = (0.0, 1e-2)\nDROPOUTS = (0.3,)",
                                ["lambda_=0.01   dropout=0.3", "min val loss"]),
    "03_initialization.ipynb": ("WIDTH = 32\nDEPTH = 2\nBATCH = 64",
                                ["std of dL/dw", "relu, normal(0.2)", "auto initializer for activation relu     -> he_normal",
                                 "auto initializer for activation tanh     -> glorot_uniform"]),
    "04_populations.ipynb": ("EPOCHS = 2\nSEEDS = 2\nLEARNING_RATES = (1e-3, 1e-2)\nLAMBDAS = (0.0,)\nENSEMBLE = 2",
                             ["seeds: val accuracy", "grid best: learning_rate=", "ensemble test accuracy",
                              "member 0: 2 epochs"]),
    "05_uncertainty.ipynb": ("EPOCHS = 2\nENSEMBLE = 2\nMC_SAMPLES = 4",
                             ["ensemble test accuracy", "MC dropout (4 samples)", "temperature T =", "ECE before",
                              "noise            mean entropy"]),
}


def clear_outputs(nb) -> None:
    """Strip what running a notebook adds: outputs, execution counts and timings, widget state, versions."""
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None


def execute_notebook(name: str):
    """Run a notebook with its test parameters in a fresh python3 kernel; return the executed notebook."""
    import nbclient
    import nbformat

    overrides = NOTEBOOK_CASES[name][0]
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = next(cell for cell in nb.cells if cell.cell_type == "code")
    for line in overrides.splitlines():  # every override must replace a parameter the notebook has
        assert re.search(rf"^{line.split('=')[0].strip()} = ", params.source, re.M), f"{name} has no parameter {line}"
    params.source += "\n\n# small values for the test\n" + overrides
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    return client.execute()  # raises CellExecutionError on the first failing cell


@pytest.fixture(scope="module", autouse=True)
def notebook_runs(request):
    """Start the selected notebooks in a background thread, one kernel at a time, at the module's first test.

    The examples run in this process meanwhile: both are mostly single-threaded XLA
    compilation, so on two cores the file takes about half as long. Each notebook test
    waits for its own run.
    """
    names = sorted({item.callspec.params["name"] for item in request.session.items
                    if getattr(item, "originalname", None) == "test_notebook_runs"})
    if not names or any(importlib.util.find_spec(m) is None for m in ("nbclient", "nbformat", "ipykernel", "matplotlib")):
        yield {}
        return
    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(max_workers=1) as pool:
        mp.setenv("MPLBACKEND", "Agg")  # the kernels inherit it: figures are drawn, not shown
        yield {name: pool.submit(execute_notebook, name) for name in names}


def test_every_notebook_is_tested():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(NOTEBOOK_CASES)


@pytest.mark.parametrize("name", sorted(NOTEBOOK_CASES))
def test_notebook_is_stored_clean(name):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown"
    first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", [])
    cleared = copy.deepcopy(nb)
    clear_outputs(cleared)
    assert nb == cleared, f"{name} is stored with outputs: python tests/test_examples.py --clear notebooks/{name}"


@pytest.mark.parametrize("name", sorted(NOTEBOOK_CASES))
def test_notebook_runs(name, notebook_runs):
    for module in ("nbclient", "nbformat", "ipykernel", "matplotlib"):
        pytest.importorskip(module)
    nb = notebook_runs[name].result(timeout=600)
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            texts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    text = "".join(texts)
    for snippet in NOTEBOOK_CASES[name][1]:
        assert snippet in text, f"{name}: no {snippet!r} in the outputs:\n{text}"
    if name == "01_quickstart.ipynb":
        assert printed_accuracy(text) > 0.5


if __name__ == "__main__":
    import nbformat

    if len(sys.argv) < 3 or sys.argv[1] != "--clear":
        sys.exit("usage: python tests/test_examples.py --clear NOTEBOOK.ipynb ...")
    for path in sys.argv[2:]:
        notebook = nbformat.read(path, as_version=4)
        clear_outputs(notebook)
        nbformat.write(notebook, path)
        print("cleared", path)
