"""Where the history goes: a CSV file, TensorBoard, or a matplotlib figure.

:class:`CSVLogger` and :class:`TensorBoard` are callbacks for :func:`jdense.fit`;
:func:`plot_history` draws ``result.history`` after it. TensorBoard files are written with
``tensorboardX`` (``pip install "jdense[tensorboard]"``), plots with matplotlib.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jdense import checks
from jdense.callbacks import Callback

_TENSORBOARD_MISSING = (
    'jdense.TensorBoard writes with the tensorboardX package, which is not installed; '
    'pip install "jdense[tensorboard]" (or pip install tensorboardX).'
)


def _path(name: str, path: Any) -> str:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a file system path (str or pathlib.Path), got {path!r}.")
    return os.fspath(path)


MEMBER = "member"
"""The column of :class:`CSVLogger`'s rows of a population (``fit_population``): the member's index."""


def _cell(value: Any) -> Any:
    return float(value) if isinstance(value, numbers.Real) else value


def _members(logs: Mapping[str, Any]) -> int | None:
    """The number of members when ``logs`` are a population's (a value per member), else None."""
    sizes = {np.shape(v)[0] for v in logs.values() if np.ndim(v) == 1}
    return sizes.pop() if len(sizes) == 1 else None


class CSVLogger(Callback):
    """Write one CSV row per epoch: ``epoch`` (fit's 0-based index, as Keras), then the logs.

    The header comes from the first epoch's keys. Each row is flushed as it is written,
    so a crash loses nothing that was logged. With ``append=True`` a fit continues an
    existing file under its header (a logged key that the header lacks is an error, a
    missing one an empty cell); otherwise each fit starts the file afresh.

    With :func:`jdense.fit_population` the logs hold a value per member: each epoch writes
    one row per member, with the member's index in a ``member`` column after ``epoch``
    (a long table: ``pandas.read_csv(path).pivot(index="epoch", columns="member")``).

    Args:
      path: the CSV file.
      append: continue an existing file instead of overwriting it.
      separator: the one-character field delimiter.

    Example:
      >>> logger = CSVLogger("history.csv")
      >>> # jdense.fit(..., callbacks=[logger]); pandas.read_csv("history.csv")
    """

    def __init__(self, path: str | os.PathLike, append: bool = False, separator: str = ","):
        self.path = _path("path", path)
        checks.output_file(self.path, "path", "history.csv", "write the CSV log to")
        append = checks.boolean("append", append)
        if not (isinstance(separator, str) and len(separator) == 1) or separator in "\r\n\"":
            raise ValueError(f"separator must be one character such as ',' or ';' (not a quote or newline), got {separator!r}.")
        self.append, self.separator = append, separator
        self.keys: list[str] | None = None
        self._file = self._writer = None

    def _header(self) -> list[str] | None:
        """The columns after ``epoch`` of the file this logger appends to, or None (a new file)."""
        if not (self.append and os.path.isfile(self.path) and os.path.getsize(self.path) > 0):
            return None
        with open(self.path, newline="") as f:
            header = next(csv.reader(f, delimiter=self.separator), [])
        if header[:1] != ["epoch"]:
            raise ValueError(f"CSVLogger(append=True): {self.path} does not start with an 'epoch' header; "
                             "append to a file that a CSVLogger wrote, or pass append=False.")
        return header[1:]

    def _check_keys(self, header: list[str], keys) -> None:
        if extra := [k for k in keys if k not in header]:
            raise ValueError(f"CSVLogger: {self.path} has the columns {header}, but the logs add {extra}; "
                             "write this run to a new file (or pass append=False).")

    def check_logs(self, keys: Sequence[str]) -> None:
        """Before training: refuse to append logs with keys the file's header lacks (no epoch is lost to it)."""
        if (header := self._header()) is not None:
            self._check_keys(header, keys)

    def on_train_begin(self) -> None:
        self.close()
        self.keys = self._header()
        self._file = open(self.path, "a" if self.append else "w", newline="")
        self._writer = csv.writer(self._file, delimiter=self.separator)

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        if self._file is None:
            self.on_train_begin()
        members = _members(logs)
        if self.keys is None:
            self.keys = list(logs) if members is None else [MEMBER, *logs]
            self._writer.writerow(["epoch", *self.keys])
        else:
            self._check_keys(self.keys, [*logs, *([] if members is None else [MEMBER])])
        if members is None:
            self._writer.writerow([epoch, *(_cell(logs.get(k, "")) for k in self.keys)])
        for i in range(members or 0):  # a population: a row per member, its index in the 'member' column
            row = {MEMBER: i, **{k: np.asarray(v)[i] for k, v in logs.items()}}
            self._writer.writerow([epoch, *(_cell(row.get(k, "")) for k in self.keys)])
        self._file.flush()
        return False

    def on_train_end(self, params, state):
        self.close()
        return None

    def close(self) -> None:
        """Close the file (fit does this at the end of training)."""
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


class TensorBoard(Callback):
    """Log every epoch's metrics as TensorBoard scalars, with ``tensorboardX``.

    Training metrics go to the run ``logdir/train`` and ``val_*`` metrics, without the
    prefix, to ``logdir/validation``, so that TensorBoard draws the two curves of each
    metric in one chart. The step is fit's 0-based epoch. Events are flushed every epoch.
    With :func:`jdense.fit_population` each member's values are their own scalars, tagged
    ``loss/member_3`` and so on (a stopped member's later epochs are not written).

    Args:
      logdir: the directory to write event files under (``tensorboard --logdir DIR``).

    Raises:
      ImportError: when tensorboardX is not installed, naming the extra to install.

    Example:
      >>> board = TensorBoard("runs/mlp")  # doctest: +SKIP
      >>> # jdense.fit(..., callbacks=[board]), then: tensorboard --logdir runs
    """

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = _path("logdir", logdir)
        checks.output_dir(self.logdir, "logdir", "write TensorBoard events under")
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            raise ImportError(_TENSORBOARD_MISSING) from err
        self._writer_class = SummaryWriter
        self._writers: dict[str, Any] = {}

    def _writer(self, run: str):
        if run not in self._writers:
            self._writers[run] = self._writer_class(os.path.join(self.logdir, run))
        return self._writers[run]

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        for key, value in logs.items():
            run, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            if np.ndim(value) == 0:
                self._writer(run).add_scalar(tag, float(value), int(epoch))
                continue
            for i, v in enumerate(np.asarray(value, np.float64)):  # a population: a chart per member
                if not math.isnan(v):  # a stopped member's later epochs
                    self._writer(run).add_scalar(f"{tag}/member_{i}", float(v), int(epoch))
        for writer in self._writers.values():
            writer.flush()
        return False

    def on_train_end(self, params, state):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
        return None


def plot_history(history: Mapping[str, Sequence[float]] | Any, metrics: str | Sequence[str] | None = None):
    """One panel per metric with its training curve and, if logged, its ``val_`` curve.

    Args:
      history: ``fit``'s ``result.history`` (``{"loss": [...], "val_loss": [...], ...}``)
        or the result itself.
      metrics: the metrics to draw, e.g. ``["loss", "accuracy"]``; by default every
        logged one, the loss first (``"val_loss"`` is drawn in the ``"loss"`` panel).

    Returns:
      A ``matplotlib.figure.Figure`` made with pyplot (shown by Jupyter at the end of the
      cell; ``fig.savefig(path)`` or ``plt.show()`` elsewhere), up to three panels a row.

    Raises:
      TypeError: if ``history`` is not a mapping of metric names to lists.
      ValueError: for an empty history or a metric it does not have.

    Example:
      >>> fig = plot_history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]})
      >>> [ax.get_ylabel() for ax in fig.axes]
      ['loss']
    """
    history = getattr(history, "history", history)
    if not isinstance(history, Mapping):
        raise TypeError(f"history must be fit's result.history (a dict of per-epoch lists), got {type(history).__name__}.")
    names = [k for k in history if not k.startswith("val_")]
    names += [k[4:] for k in history if k.startswith("val_") and k[4:] not in history]
    names.sort(key=lambda k: k != "loss")  # the loss first, the rest in the history's order
    if metrics is None:
        metrics = names
    elif isinstance(metrics, str):
        metrics = [metrics]
    if not metrics:
        raise ValueError("plot_history: the history is empty; pass fit's result.history after at least one epoch.")
    for m in metrics:
        if m not in names:
            raise ValueError(f"plot_history: no metric {m!r} in the history; it has {names}.")

    import matplotlib.pyplot as plt
    import numpy as np

    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    for ax, m in zip(axes.ravel(), metrics):
        for key, label in ((m, "train"), (f"val_{m}", "validation")):
            if key in history:
                values = np.asarray(history[key], dtype=float)
                ax.plot(np.arange(1, len(values) + 1), values, marker="." if len(values) <= 30 else None, label=label)
        ax.set(xlabel="epoch", ylabel=m, title=m)
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes.ravel()[len(metrics):]:
        ax.remove()
    return fig
