"""CSVLogger, TensorBoard and plot_history: driven by hand with scripted logs, then inside one real fit.

The CSV is read back with Python's ``csv`` module, the TensorBoard event files with a
TFRecord reader written here (length-prefixed ``Event`` protos), the figure through its
matplotlib artists.
"""

from __future__ import annotations

import csv
import importlib.util
import struct
import sys

import jax
import numpy as np
import optax
import pytest

import jdense
from jdense import CSVLogger, TensorBoard, plot_history

SCRIPT = [{"loss": 1.0 / 3, "accuracy": 0.5, "val_loss": 1.25}, {"loss": 0.25, "accuracy": 0.75, "val_loss": 2e-7}]
EVENT_TOL = dict(rtol=1e-6)  # TensorBoard stores scalars as float32


def _read_csv(path, separator=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=separator))


def _drive(logger, logs_per_epoch, first_epoch=0):
    logger.on_train_begin()
    for epoch, logs in enumerate(logs_per_epoch, first_epoch):
        assert logger.on_epoch_end(epoch, logs, {}) is False
    logger.on_train_end({}, {})


# --------------------------------------------------------------------------- CSVLogger


def test_csv_rows_are_exact_and_flushed_every_epoch(tmp_path):
    path = tmp_path / "log.csv"
    logger = CSVLogger(path)
    logger.on_train_begin()
    for epoch, logs in enumerate(SCRIPT):
        logger.on_epoch_end(epoch, logs, {})
        rows = _read_csv(path)  # read while the file is still open: a crash now would keep these rows
        assert rows[0] == ["epoch", "loss", "accuracy", "val_loss"]
        assert len(rows) == epoch + 2
        assert int(rows[-1][0]) == epoch
        assert [float(v) for v in rows[-1][1:]] == list(logs.values())  # bit-exact round trip
    logger.on_train_end({}, {})
    assert logger._file is None


def test_csv_append_continues_under_the_header(tmp_path):
    path = tmp_path / "log.csv"
    _drive(CSVLogger(path), SCRIPT[:1])
    _drive(CSVLogger(path, append=True), [{"loss": 0.5, "accuracy": 0.625}], first_epoch=1)  # no val_loss this time
    rows = _read_csv(path)
    assert rows == [["epoch", "loss", "accuracy", "val_loss"], ["0", repr(1.0 / 3), "0.5", "1.25"],
                    ["1", "0.5", "0.625", ""]]
    with pytest.raises(ValueError, match=r"has the columns \['loss', 'accuracy', 'val_loss'\], but the logs add \['auc'\]"):
        _drive(CSVLogger(path, append=True), [{"loss": 0.5, "auc": 0.9}])
    _drive(CSVLogger(path), SCRIPT[1:])  # append=False starts afresh
    assert _read_csv(path) == [["epoch", "loss", "accuracy", "val_loss"], ["0", "0.25", "0.75", "2e-07"]]


def test_csv_append_to_a_new_file_writes_the_header(tmp_path):
    path = tmp_path / "new.csv"
    _drive(CSVLogger(str(path), append=True, separator=";"), SCRIPT)
    rows = _read_csv(path, ";")
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss"] and len(rows) == 3


def test_csv_append_refuses_a_foreign_file(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="does not start with an 'epoch' header"):
        CSVLogger(path, append=True).on_train_begin()


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(path=3), TypeError, "path must be a file system path"),
    (dict(path="x.csv", separator=", "), ValueError, "separator must be one character"),
    (dict(path="x.csv", separator='"'), ValueError, "separator must be one character"),
    (dict(path="x.csv", append="yes"), TypeError, "append must be True or False"),
])
def test_csv_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        CSVLogger(**kwargs)


# --------------------------------------------------------------------------- TensorBoard


def _scalars(run_dir):
    """{tag: [(step, value), ...]} from the TFRecord event files in run_dir."""
    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])  # skip the length's CRC
            pos += 12 + length + 4  # and the data's CRC
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_writes_train_and_validation_runs(tmp_path):
    pytest.importorskip("tensorboardX")
    _drive(TensorBoard(tmp_path), SCRIPT)
    train, validation = _scalars(tmp_path / "train"), _scalars(tmp_path / "validation")
    assert set(train) == {"loss", "accuracy"} and set(validation) == {"loss"}
    for tag, run, key in (("loss", train, "loss"), ("accuracy", train, "accuracy"), ("loss", validation, "val_loss")):
        steps, values = zip(*run[tag])
        assert steps == (0, 1)
        np.testing.assert_allclose(values, [logs[key] for logs in SCRIPT], **EVENT_TOL)


def test_tensorboard_without_tensorboardx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r'pip install "jdense\[tensorboard\]"'):
        TensorBoard(tmp_path)
    with pytest.raises(TypeError, match="logdir must be a file system path"):
        TensorBoard(None)


# --------------------------------------------------------------------------- plot_history


@pytest.fixture
def agg():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def _lines(ax):
    return {line.get_label(): line.get_ydata() for line in ax.get_lines()}


def test_plot_history_one_panel_per_metric(agg):
    history = {"accuracy": [0.5, 0.7, 0.9], "loss": [1.0, 0.5, 0.25], "val_loss": [1.1, 0.6, 0.4],
               "val_accuracy": [0.4, 0.6, 0.8], "learning_rate": [1e-3, 1e-3, 1e-4]}
    fig = plot_history(history)
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy", "learning_rate"]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    for ax, name in zip(fig.axes, ("loss", "accuracy")):
        lines = _lines(ax)
        assert set(lines) == {"train", "validation"}
        np.testing.assert_array_equal(lines["train"], history[name])
        np.testing.assert_array_equal(lines["validation"], history[f"val_{name}"])
        np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [1, 2, 3])
    assert set(_lines(fig.axes[2])) == {"train"}
    assert [ax.get_ylabel() for ax in plot_history(history, "accuracy").axes] == ["accuracy"]
    assert len(plot_history(history, ["loss", "accuracy", "learning_rate", "loss"]).axes) == 4  # 2 rows of 3, 2 removed


def test_plot_history_errors(agg):
    with pytest.raises(ValueError, match=r"no metric 'auc' in the history; it has \['loss'\]"):
        plot_history({"loss": [1.0], "val_loss": [1.0]}, ["auc"])
    with pytest.raises(ValueError, match="the history is empty"):
        plot_history({})
    with pytest.raises(TypeError, match="history must be fit's result.history"):
        plot_history([1.0, 0.5])


# --------------------------------------------------------------------------- inside fit


def test_loggers_inside_fit(tmp_path, agg):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    net = jdense.mlp([4, 8, 2])
    callbacks = [CSVLogger(tmp_path / "fit.csv")]
    if importlib.util.find_spec("tensorboardX") is not None:
        callbacks.append(TensorBoard(tmp_path / "tb"))
    result = jdense.fit(net, net.init(jax.random.key(0)), x, y, loss="cross_entropy", optimizer=optax.adam(1e-2),
                        epochs=3, batch_size=20, key=jax.random.key(1), validation_data=(x[:20], y[:20]),
                        callbacks=callbacks, verbose=0)
    rows = _read_csv(tmp_path / "fit.csv")
    assert rows[0] == ["epoch", *result.history]  # the logs' keys, in fit's order
    for i, row in enumerate(rows[1:]):
        assert [float(v) for v in row] == [i, *(values[i] for values in result.history.values())]
    if len(callbacks) == 2:
        steps, values = zip(*_scalars(tmp_path / "tb" / "validation")["accuracy"])
        assert steps == (0, 1, 2)
        np.testing.assert_allclose(values, result.history["val_accuracy"], **EVENT_TOL)
    fig = plot_history(result)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]



# -- a place that cannot be written is refused when the logger is made, not at the first epoch (issue 19) ----------------
def test_csv_logger_and_tensorboard_refuse_a_place_they_cannot_write(tmp_path):
    with pytest.raises(ValueError, match=r"cannot write the CSV log to .*missing/x\.csv: the directory .*missing does not "
                                         r"exist; create it first"):
        CSVLogger(tmp_path / "missing" / "x.csv")
    with pytest.raises(ValueError, match=r"is a directory; give a file name such as .*history\.csv"):
        CSVLogger(tmp_path)
    (tmp_path / "file").write_text("")
    pytest.importorskip("tensorboardX")
    with pytest.raises(ValueError, match=r"cannot write TensorBoard events under .*file/run: .*file is a file, not a "
                                         r"directory; pass another logdir"):
        TensorBoard(tmp_path / "file" / "run")
    TensorBoard(tmp_path / "new" / "run")  # a directory that does not exist yet is made at the first epoch
