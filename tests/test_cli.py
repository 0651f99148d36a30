"""The command line: `jdense train` meets its accuracy, prints a bar and one result line, and fails in one line."""

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from jdense import cli
from jdense.cli import main

pytest.importorskip("sklearn")

RESULT = re.compile(r"^test accuracy (\d\.\d{4})  loss (\d+\.\d{4})  \((\d+) epochs in [\d.]+ s training, [\d.]+ s total\)$",
                    re.M)
SMALL = ["--epochs", "2", "--hidden", "16"]


@pytest.fixture(autouse=True)
def _no_compilation_cache(monkeypatch):
    """In-process runs must not turn on the persistent cache for the rest of the suite (tested in test_compilation)."""
    monkeypatch.setenv("JDENSE_NO_COMPILATION_CACHE", "1")


def _status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own errors and --help
        return exit_.code


def test_default_run_reaches_95_percent_on_digits(capsys):
    """`jdense train` with no arguments: the README's main job (issue: >= 95% test accuracy)."""
    assert main(["train", "--verbose", "0"]) == 0
    out, err = capsys.readouterr()
    match = RESULT.search(out)
    assert match, out
    assert float(match.group(1)) >= 0.95
    assert err == ""  # a healthy run gives no warning


def test_module_entry_point_runs_and_honours_the_cache_opt_out(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "JDENSE_NO_COMPILATION_CACHE": "1"}
    proc = subprocess.run([sys.executable, "-m", "jdense", "train", *SMALL, "--verbose", "0"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert RESULT.search(proc.stdout), proc.stdout
    assert not (tmp_path / "jdense").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_total_time_counts_from_process_start():
    script = "import time; t = time.perf_counter(); from jdense.cli import _process_age; print(_process_age(), time.perf_counter() - t)"
    age, since_import = map(float, subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                                  timeout=120, check=True).stdout.split())
    assert since_import <= age < since_import + 5.0  # plus the interpreter's own start


@pytest.mark.parametrize("verbose", [1, 2])
def test_output_is_a_bar_or_epoch_lines_then_one_result_line(verbose, capsys):
    assert main(["train", *SMALL, "--verbose", str(verbose), "--patience", "0"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert RESULT.fullmatch(lines[-1]), out
    assert RESULT.fullmatch(lines[-1]).group(3) == "2"
    if verbose == 1:
        assert len(lines) == 1  # the README's promise: a progress bar and one line
        assert "2/2" in err and "val_loss=" in err  # tqdm's bar, the metrics in its postfix
    else:
        assert [line.split("  ")[0] for line in lines[:-1]] == ["epoch 1/2", "epoch 2/2"]
        assert all(re.search(r"  elapsed \d+\.\d s$", line) for line in lines[:-1]), out
        assert "epoch/s" not in err


def test_help_shows_every_default_and_explains_the_data(capsys):
    assert _status(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's wrapping
    options = text.partition(" options: ")[2]
    for option, default in [("--epochs EPOCHS", "40"), ("--batch-size N", "32"), ("--patience PATIENCE", "10"),
                            ("--seed SEED", "0"), ("--activation NAME", "relu"), ("--optimizer", "adam"),
                            ("--lr LR", "1e-3"), ("--lambda LAMBDA", "1e-4"), ("--hidden WIDTHS", "128,64"),
                            ("--verbose", "1"), ("--dropout RATE", "0.0"), ("--data SOURCE", "digits"),
                            ("--initializer NAME", "auto"), ("--task", "classification")]:
        assert re.search(re.escape(option) + r" .*?\(default: ([^)]*)\)", options).group(1) == default, option
    assert "LAMBDA_" not in text
    assert "0: only the result line; 1: a progress bar and the result line; 2: a line per epoch" in text
    for fragment in ("split 70/10/20 into training, validation and test sets, stratified by class",
                     "standardized to mean 0 and standard deviation 1 with the training split's statistics",
                     "converted back to the target's units", "JDENSE_NO_COMPILATION_CACHE=1", "JDENSE_DEBUG=1"):
        assert fragment in text, fragment
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    with_default = [a for a in train._actions if a.default is not None and a.default is not False
                    and a.default != "==SUPPRESS=="]  # not the store_true flag, not --help
    assert text.count("(default: ") == len(with_default)


@pytest.mark.parametrize(
    "argv, status, fragment",
    [
        (["train", "--epochs", "0"], 2, "--epochs"),
        (["train", "--hidden", "12,x"], 2, "--hidden"),
        (["train", "--activation", "relux"], 2, "--activation"),
        (["train", "--lr", "-1"], 2, "--lr"),
        (["train", "--lr", "inf"], 2, "argument --lr: must be a finite number > 0, got inf"),
        (["train", "--lr", "nan"], 2, "argument --lr: must be a finite number > 0, got nan"),
        (["train", "--lambda", "inf"], 2, "--lambda"),
        (["train", "--dropout", "1.5"], 2, "argument --dropout: must be a finite number >= 0 and < 1"),
        (["train", "--seed", "-1"], 2, "--seed"),
        (["train", "--patience", "-1"], 2, "--patience"),
        (["train", "--data", "imagenet"], 2, "must be digits, mnist:DIR or csv:FILE"),
        (["train", "--data", "csv:/nonexistent/table.csv"], 2, "--target"),
        (["train", "--task", "regression"], 2, "csv:FILE only"),
        (["train", "--data", "csv:/nonexistent/table.csv", "--target", "y"], 2, "/nonexistent/table.csv"),  # bad input
        (["train", "--data", "mnist:/nonexistent"], 2, "/nonexistent"),
    ],
)
def test_failures_are_one_line_with_status_2_for_arguments_1_for_runs(argv, status, fragment, capsys):
    assert _status(argv) == status
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("jdense train: error: ") and fragment in err
    assert "Traceback" not in err and out == ""


def test_a_diverging_run_is_one_line_and_status_1(capsys):
    argv = ["train", *SMALL, "--optimizer", "sgd", "--lr", "1e3"]
    assert main([*argv, "--verbose", "0"]) == 1
    out, err = capsys.readouterr()
    assert err == "jdense train: error: the run diverged (the training loss became nan in epoch 1); lower --lr\n"
    assert main([*argv, "--verbose", "1"]) == 1  # the bar is closed first: the error gets its own line
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("jdense train: error: the run diverged")


def test_jdense_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("JDENSE_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["train", "--data", "csv:/nonexistent/table.csv", "--target", "y"])


def test_an_unexpected_error_is_named_in_one_line(monkeypatch, capsys):
    def broken(args, start=None):
        raise RuntimeError("XLA ran out of memory\nmore detail")

    monkeypatch.setattr(cli, "train", broken)
    assert main(["train"]) == 1
    assert capsys.readouterr().err == (
        "jdense train: error: RuntimeError: XLA ran out of memory (JDENSE_DEBUG=1 shows the traceback)\n")


def test_a_run_that_learns_nothing_warns(capsys):
    """Adam at lr 1e6: the loss falls from 1e20 but stays far above chance; exit 0, with a warning."""
    assert main(["train", *SMALL, "--lr", "1e6", "--verbose", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("test accuracy ")
    assert re.fullmatch(r"jdense train: warning: the final training loss \S+ is no better than predicting the class "
                        r"frequencies \(2\.30\d\); the run diverged or learned nothing: lower --lr\n", err), err


def test_a_rising_loss_warns(capsys):
    cli._check_progress([0.5, 0.4, 0.7], baseline=2.3, what="chance")
    assert capsys.readouterr().err == (
        "jdense train: warning: the training loss rose from 0.5 (epoch 1) to 0.7 (epoch 3); the run diverged: lower --lr\n")
    cli._check_progress([2.0, 0.1], baseline=2.3, what="chance")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv, env, enabled", [([], None, True), (["--no-compilation-cache"], None, False),
                                                ([], "1", False), ([], "0", True)])
def test_compilation_cache_is_on_unless_turned_off(argv, env, enabled, monkeypatch):
    calls = []
    monkeypatch.setattr("jdense.compilation.enable_compilation_cache", lambda path=None: calls.append(path))
    if env is None:
        monkeypatch.delenv("JDENSE_NO_COMPILATION_CACHE")
    else:
        monkeypatch.setenv("JDENSE_NO_COMPILATION_CACHE", env)
    cli._compilation_cache(cli.build_parser().parse_args(["train", *argv]))
    assert len(calls) == int(enabled)


def test_an_unusable_cache_directory_warns_and_trains_on(tmp_path, monkeypatch, capsys):
    (tmp_path / "jdense").write_text("a file where the cache directory belongs")
    monkeypatch.delenv("JDENSE_NO_COMPILATION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cli._compilation_cache(SimpleNamespace(no_compilation_cache=False))
    assert capsys.readouterr().err.startswith("jdense train: warning: running without the compilation cache: ")


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
    logs = dict(re.findall(r"(\w+) (\d+\.\d+)", out.splitlines()[0]))
    assert float(logs["mse"]) < 0.2 * np.var(y)  # far better than predicting the mean
    assert logs["loss"] == logs["mse"]  # the loss is the mse, in target units too
    assert out.splitlines()[0].endswith(" s total, loss and errors in target units)")
    loaded = ckpt.load(out_path)
    assert loaded.net is not None and loaded.net.layers[0].in_features == 3


def test_l1_metrics_and_csv_log(tmp_path, capsys):
    log = tmp_path / "history.csv"
    assert main(["train", *SMALL, "--verbose", "0", "--l1", "1e-5", "--metrics", "accuracy,f1,auc",
                 "--csv-log", str(log)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"test accuracy \S+  auc \S+  f1 \S+  loss", out), out
    rows = log.read_text().splitlines()
    assert rows[0].split(",")[:2] == ["epoch", "accuracy"] and "val_f1" in rows[0] and len(rows) == 3
    assert _status(["train", "--metrics", "accuracy,f2"]) == 2


_CPU_DEVICES = """
import os, sys, jax
from jdense.cli import main, _cpu_devices
if sys.argv[1] == "default":
    _cpu_devices(None)  # what jdense train does first, without a flag
    print(len(jax.devices("cpu")), len(os.sched_getaffinity(0)))
else:
    print(main(["train", "--epochs", "1", "--hidden", "8", "--verbose", "0", "--cpu-devices", "3"]), len(jax.devices("cpu")))
    print(main(["train", "--epochs", "1", "--verbose", "0", "--cpu-devices", "2"]))  # JAX runs: 3 devices, fixed
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="counts the cores with sched_getaffinity")
def test_train_exposes_one_cpu_device_per_core_or_cpu_devices_n(capfd):
    env = {**os.environ, "JDENSE_NO_COMPILATION_CACHE": "1"}
    run = lambda mode: subprocess.run([sys.executable, "-c", _CPU_DEVICES, mode], capture_output=True, text=True,  # noqa: E731
                                      timeout=300, env=env)
    default = run("default")
    devices, cores = default.stdout.split()
    assert devices == cores, default.stderr
    flagged = run("flag")
    lines = flagged.stdout.splitlines()
    assert "0 3" in lines and lines[-1] == "2", flagged.stdout + flagged.stderr
    assert "--cpu-devices 2: cpu_devices(2): JAX's backend already started with 3 CPU device(s)" in flagged.stderr


@pytest.mark.parametrize("flag", ["--csv-log", "--save"])
def test_an_output_in_a_missing_directory_is_a_usage_error_before_training(tmp_path, capsys, flag):
    assert _status(["train", *SMALL, flag, str(tmp_path / "missing" / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: {flag}: cannot write {tmp_path / 'missing' / 'out'}: the directory {tmp_path / 'missing'} does not " \
           "exist; create it first" in err
