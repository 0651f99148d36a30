"""The command line: `jdense train` meets its accuracy, prints one result line, and refuses bad input in one line."""

import re
import subprocess
import sys

import numpy as np
import pytest

from jdense.cli import main

pytest.importorskip("sklearn")

RESULT = re.compile(r"^test accuracy (\d\.\d{4})  loss (\d+\.\d{4})", re.M)


def test_default_run_reaches_95_percent_on_digits(capsys):
    """`jdense train` with no arguments: the README's main job (issue: >= 95% test accuracy)."""
    assert main(["train", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    match = RESULT.search(out)
    assert match, out
    assert float(match.group(1)) >= 0.95


def test_module_entry_point_runs_and_prints_the_result_line():
    proc = subprocess.run([sys.executable, "-m", "jdense", "train", "--epochs", "2", "--hidden", "16", "--verbose", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert RESULT.search(proc.stdout), proc.stdout


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--hidden", "12,x"], "--hidden"),
        (["train", "--activation", "relux"], "--activation"),
        (["train", "--lr", "-1"], "--lr"),
        (["train", "--data", "imagenet"], "--data must be digits"),
        (["train", "--data", "csv:/nonexistent/table.csv", "--target", "y"], "/nonexistent/table.csv"),
        (["train", "--data", "csv:/nonexistent/table.csv"], "--target"),
        (["train", "--dropout", "1.5"], "--dropout"),
        (["train", "--data", "mnist:/nonexistent"], "/nonexistent"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(argv, fragment, capsys):
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status != 0
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err


def test_csv_regression_and_save(tmp_path, capsys):
    import jdense.checkpoint as ckpt

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=300)
    path = tmp_path / "table.csv"
    rows = ["a,b,c,target"] + [",".join(f"{v:.6f}" for v in (*xi, yi)) for xi, yi in zip(x, y)]
    path.write_text("\n".join(rows) + "\n")
    out_path = tmp_path / "model.safetensors"
    status = main(["train", "--data", f"csv:{path}", "--target", "target", "--task", "regression",
                   "--epochs", "60", "--hidden", "32", "--verbose", "0", "--save", str(out_path)])
    assert status == 0
    out = capsys.readouterr().out
    mse = float(re.search(r"test mse (\d+\.\d+)", out).group(1))
    assert mse < 0.2 * np.var(y)  # far better than predicting the mean
    loaded = ckpt.load(out_path)
    assert loaded.net is not None and loaded.net.layers[0].in_features == 3
