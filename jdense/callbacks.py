"""Callbacks that :func:`jdense.fit` runs on the host between epochs.

A callback is an object with any of these methods (all optional):

- ``on_train_begin()``;
- ``on_epoch_end(epoch, logs, params, *, opt_state, state) -> bool | None``: ``logs`` is
  the epoch's metrics (``{"loss": ..., "val_loss": ...}``); return ``True`` to stop.
  ``params`` are the live training buffers, donated to the next epoch: copy what you keep;
- ``on_train_end(params, state) -> (params, state) | None``: may hand back other params
  (EarlyStopping restores the best ones);
- ``adjust_hyperparams(epoch, logs, hyperparams) -> dict | None``: new values for the
  optimizer of :func:`jdense.optimizer` for the next epoch, e.g. ``{"learning_rate": 1e-4}``
  (``hyperparams`` are the current ones, see :func:`jdense.hyperparams`). They are values in
  the optimizer state, so nothing recompiles; ``fit`` then logs ``learning_rate`` each epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jdense import checks
from jdense import metrics as metrics_lib


class Callback:
    """Base class with no-op hooks; subclass and override what you need."""

    def on_train_begin(self) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, float], params: Any, *, opt_state: Any = None,
                     state: Any = None) -> bool | None:
        return None

    def on_train_end(self, params: Any, state: Any) -> tuple[Any, Any] | None:
        return None


KERAS_KEYWORDS = {"restore_best_weights": "restore_best", "epsilon": "min_delta"}
"""Keras's keyword spellings the callbacks refuse with a pointer to theirs (one spelling per argument)."""

ROUNDING = 1e-6
"""Relative changes this small are float32 rounding (the epoch's sums in another order), never improvements."""


class Monitor:
    """Tracks the best value of a logged metric, in the metric's direction.

    ``mode="auto"`` takes the direction the metric declares (``Metric.higher_is_better``,
    see :mod:`jdense.metrics`): ``fit`` and ``fit_population`` call :meth:`resolve` with
    their metrics before training; until then a known metric name decides
    (:func:`jdense.metrics.higher_is_better`). An improvement must beat the best by more
    than ``min_delta`` and by more than :data:`ROUNDING` of its size: a network whose
    params do not change (learning rate 0) logs the same loss up to the last bits each
    epoch, as its batches are summed in a new order.

    Args:
      monitor: a key of the logs, e.g. ``"val_loss"`` or ``"val_auc"``.
      mode: ``"auto"``, ``"min"`` or ``"max"``.
      min_delta: the smallest change that counts as an improvement (>= 0).
    """

    def __init__(self, monitor: str, mode: str = "auto", min_delta: float = 0.0):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged value such as 'val_loss', got {checks.short(monitor)} "
                            f"of type {type(monitor).__name__}.")
        self.monitor, self.mode = monitor, checks.choice("mode", mode, ("auto", "min", "max"))
        self.min_delta = checks.non_negative_float("min_delta", min_delta)
        self.resolve(())
        self.reset()

    def resolve(self, metrics) -> None:
        """Set the direction of mode ``"auto"`` from the :class:`jdense.metrics.Metric` objects being logged."""
        higher = self.mode == "max" or (self.mode == "auto" and metrics_lib.higher_is_better(self.monitor, metrics))
        self.sign = -1.0 if higher else 1.0

    def reset(self):
        self.best = math.inf
        self.best_epoch = None

    def improved(self, epoch: int, logs: dict[str, float]) -> bool:
        if self.monitor not in logs:
            raise ValueError(
                f"cannot monitor {self.monitor!r}{checks.did_you_mean(self.monitor, logs)}: the logs have {sorted(logs)}; "
                "pass validation_data= to fit "
                "for 'val_*' metrics, or monitor one of these."
            )
        value = self.sign * logs[self.monitor]
        if value < self.best - max(self.min_delta, ROUNDING * abs(self.best) if math.isfinite(self.best) else 0.0):
            self.best, self.best_epoch = value, epoch
            return True
        return False


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
      monitor: a key of fit's logs, e.g. ``"val_loss"`` (default) or ``"val_accuracy"``.
      patience: epochs without improvement before stopping.
      min_delta: the smallest change that counts as an improvement (a change within float32
        rounding, 1e-6 of the value, never does).
      mode: ``"min"``, ``"max"`` or ``"auto"``: the direction the metric declares
        (``higher_is_better``: accuracy, precision, recall, f1, auc; lower for the loss).
      restore_best: hand back the params (and BatchNorm state) of the best epoch.

    Example:
      >>> stop = EarlyStopping("val_loss", patience=5)
      >>> # result = jdense.fit(..., validation_data=(xv, yv), callbacks=[stop])
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0, mode: str = "auto",
                 restore_best: bool = True, **keras: Any):
        checks.keywords("EarlyStopping", keras, KERAS_KEYWORDS,
                         ("monitor", "patience", "min_delta", "mode", "restore_best"))
        self.tracker = Monitor(monitor, mode, min_delta)
        self.patience = checks.integer("patience", patience, 0)
        self.restore_best = checks.boolean("restore_best", restore_best)
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
            raise TypeError(f"save must be a callable (params, *, opt_state, state, epoch, metrics), got {checks.short(save)}.")
        self.save = save
        self.tracker = Monitor(monitor, mode, min_delta)

    def on_train_begin(self):
        self.tracker.reset()

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        if self.tracker.improved(epoch, logs):
            self.save(params, opt_state=opt_state, state=state, epoch=epoch, metrics=dict(logs))
        return False


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs.

    Keras's rule: an epoch improves when ``monitor`` beats the best so far by more than
    ``min_delta``; after ``patience`` epochs without improvement the rate becomes
    ``max(rate * factor, min_lr)``, then ``cooldown`` epochs pass before counting again.
    The rate is a value in the optimizer state (:func:`jdense.optimizer`), so lowering it
    recompiles nothing; ``history["learning_rate"]`` records it. (``optax.contrib.reduce_on_plateau``
    needs the loss passed to every update as an extra argument, which a compiled epoch of
    many steps does not have; this callback decides once per epoch, on the epoch's logs.)

    Example:
      >>> plateau = jdense.ReduceLROnPlateau("val_loss", factor=0.5, patience=3)
      >>> # result = jdense.fit(..., validation_data=(xv, yv), callbacks=[plateau])
      >>> # result.history["learning_rate"]
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, min_delta: float = 0.0,
                 cooldown: int = 0, min_lr: float = 0.0, mode: str = "auto", **keras: Any):
        checks.keywords("ReduceLROnPlateau", keras, KERAS_KEYWORDS,
                         ("monitor", "factor", "patience", "min_delta", "cooldown", "min_lr", "mode"))
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1) (the rate is multiplied by it), got {checks.short(factor)}.")
        patience, cooldown = checks.integer("patience", patience, 0), checks.integer("cooldown", cooldown, 0)
        min_lr = checks.non_negative_float("min_lr", min_lr)
        self.tracker = Monitor(monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = float(factor), patience, cooldown, min_lr
        self.on_train_begin()

    def on_train_begin(self):
        self.tracker.reset()
        self.wait = self.cooldown_counter = 0

    def adjust_hyperparams(self, epoch, logs, hyperparams):
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.tracker.improved(epoch, logs):
            self.wait = 0
            return None
        if self.cooldown_counter > 0:
            return None
        self.wait += 1
        rate = hyperparams["learning_rate"]
        if self.wait < self.patience or rate <= self.min_lr:
            return None
        self.cooldown_counter, self.wait = self.cooldown, 0
        return {"learning_rate": max(rate * self.factor, self.min_lr)}


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"  # a diverged loss stays short


def format_logs(logs: dict[str, float]) -> str:
    """``{"loss": 0.5, "accuracy": 0.9}`` as ``"loss 0.5000  accuracy 0.9000"``."""
    return "  ".join(f"{k} {_number(v)}" for k, v in logs.items())


class ProgressBar(Callback):
    """Shows training progress: a ``tqdm.auto`` bar over epochs, or one line per epoch.

    :func:`jdense.fit` adds one when ``verbose`` is not 0.

    Args:
      epochs: the epoch training stops after (the bar's total).
      verbose: 1: a bar (a widget in Jupyter) whose postfix shows the last epoch's
        metrics; 2: one line per epoch with its metrics and the time elapsed since
        training began, and no bar (for logs); 0: silent.
      initial_epoch: the epoch a resumed run starts from.
      note: e.g. how fit streams its data; it leads the bar's postfix, or is printed once.

    Example:
      >>> bar = ProgressBar(epochs=40, verbose=2)
      >>> # result = jdense.fit(..., callbacks=[bar], verbose=0)
      >>> # epoch 1/40  accuracy 0.5501  loss 1.5868  elapsed 1.2 s
    """

    def __init__(self, epochs: int, verbose: int = 1, initial_epoch: int = 0, note: str | None = None):
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (a line per epoch), got {checks.short(verbose)}.")
        self.epochs, self.verbose, self.initial_epoch, self.note = epochs, int(verbose), initial_epoch, note
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
        if self.bar is not None:
            self.bar.set_postfix({**({"data": self.note} if self.note else {}), **{k: _number(v) for k, v in logs.items()}},
                                 refresh=False)
            self.bar.update(1)
        elif self.verbose == 2:
            elapsed = time.perf_counter() - self.start
            print(f"epoch {epoch + 1}/{self.epochs}  {format_logs(logs)}  elapsed {elapsed:.1f} s", flush=True)
        return False

    def on_train_end(self, params, state):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return None
