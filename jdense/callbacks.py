"""Callbacks that :func:`jdense.fit` runs on the host between epochs.

A callback is an object with any of these methods (all optional):

- ``on_train_begin()``;
- ``on_epoch_end(epoch, logs, params, *, opt_state, state) -> bool | None``: ``logs`` is
  the epoch's metrics (``{"loss": ..., "val_loss": ...}``); return ``True`` to stop.
  ``params`` are the live training buffers, donated to the next epoch: copy what you keep;
- ``on_train_end(params, state) -> (params, state) | None``: may hand back other params
  (EarlyStopping restores the best ones).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


class Callback:
    """Base class with no-op hooks; subclass and override what you need."""

    def on_train_begin(self) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, float], params: Any, *, opt_state: Any = None,
                     state: Any = None) -> bool | None:
        return None

    def on_train_end(self, params: Any, state: Any) -> tuple[Any, Any] | None:
        return None


class _Monitor:
    """Tracks the best value of a logged metric (lower is better unless mode='max')."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}.")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}.")
        self.monitor = monitor
        self.sign = -1.0 if (mode == "max" or (mode == "auto" and "accuracy" in monitor)) else 1.0
        self.min_delta = float(min_delta)
        self.reset()

    def reset(self):
        self.best = math.inf
        self.best_epoch = None

    def improved(self, epoch: int, logs: dict[str, float]) -> bool:
        if self.monitor not in logs:
            raise ValueError(
                f"cannot monitor {self.monitor!r}: the logs have {sorted(logs)}; pass validation_data= to fit "
                "for 'val_*' metrics, or monitor one of these."
            )
        value = self.sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch = value, epoch
            return True
        return False


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
      monitor: a key of fit's logs, e.g. ``"val_loss"`` (default) or ``"val_accuracy"``.
      patience: epochs without improvement before stopping.
      min_delta: the smallest change that counts as an improvement.
      mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies, min otherwise).
      restore_best: hand back the params (and BatchNorm state) of the best epoch.

    Example:
      >>> stop = EarlyStopping("val_loss", patience=5)
      >>> # result = jdense.fit(..., validation_data=(xv, yv), callbacks=[stop])
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0, mode: str = "auto",
                 restore_best: bool = True):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}.")
        self.tracker = _Monitor(monitor, mode, min_delta)
        self.patience = patience
        self.restore_best = restore_best
        self.stopped_epoch: int | None = None
        self.wait = 0
        self.best_params = self.best_state = None

    @property
    def best_epoch(self) -> int | None:
        return self.tracker.best_epoch

    def on_train_begin(self):
        self.tracker.reset()
        self.wait = 0
        self.stopped_epoch = None
        self.best_params = self.best_state = None

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        if self.tracker.improved(epoch, logs):
            self.wait = 0
            if self.restore_best:  # the live buffers are donated to the next epoch: keep a copy
                self.best_params, self.best_state = jax.tree.map(jnp.copy, (params, state))
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, params, state):
        if self.restore_best and self.best_params is not None:
            return self.best_params, self.best_state
        return None


class BestCheckpoint(Callback):
    """Call ``save(params, opt_state=..., state=..., epoch=..., metrics=...)`` whenever ``monitor`` improves.

    ``save`` is any callable; :func:`jdense.checkpoint_callback` makes one that writes a
    safetensors checkpoint. It runs before the next epoch reuses the buffers.
    """

    def __init__(self, save: Callable[..., Any], monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        if not callable(save):
            raise TypeError(f"save must be a callable (params, *, opt_state, state, epoch, metrics), got {save!r}.")
        self.save = save
        self.tracker = _Monitor(monitor, mode, min_delta)

    def on_train_begin(self):
        self.tracker.reset()

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        if self.tracker.improved(epoch, logs):
            self.save(params, opt_state=opt_state, state=state, epoch=epoch, metrics=dict(logs))
        return False


def format_logs(logs: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in logs.items())


class ProgressBar(Callback):
    """A ``tqdm.auto`` bar over epochs (a widget in Jupyter) and one line per epoch with the metrics.

    ``verbose=1``: bar and lines; ``verbose=2``: lines only; ``verbose=0``: silent.
    ``note`` (e.g. how fit streams its data) leads the bar's postfix, or is printed once.
    """

    def __init__(self, epochs: int, verbose: int = 1, initial_epoch: int = 0, note: str | None = None):
        self.epochs, self.verbose, self.initial_epoch, self.note = epochs, verbose, initial_epoch, note
        self.bar = None

    def on_train_begin(self):
        self.start = time.perf_counter()
        if self.verbose == 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.epochs, initial=self.initial_epoch, unit="epoch", dynamic_ncols=True)
            if self.note:
                self.bar.set_postfix_str(self.note)
        elif self.verbose and self.note:
            print(self.note, flush=True)

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        line = f"epoch {epoch + 1}/{self.epochs}  {format_logs(logs)}  ({time.perf_counter() - self.start:.1f} s)"
        if self.bar is not None:
            self.bar.set_postfix({**({"data": self.note} if self.note else {}), **{k: f"{v:.4f}" for k, v in logs.items()}},
                                 refresh=False)
            self.bar.update(1)
            self.bar.write(line)
        elif self.verbose:
            print(line, flush=True)
        return False

    def on_train_end(self, params, state):
        if self.bar is not None:
            self.bar.close()
        return None
