"""The epoch loop and the callback list of :func:`jdense.fit` and :func:`jdense.fit_population`.

One loop runs both: each epoch is one call of the data feed's compiled epoch
(:mod:`jdense.data.feed`), whose logs the host reads; then the callbacks run, in
order, and may stop training or change the optimizer's values for the next epoch. A
population is the same loop with a member axis: its logs hold one value per member,
and its per-member early stopping is one more callback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jdense import checks, optim, programs


def logs_of(sums, metrics, width: int, skip_nonfinite: bool = False, prefix: str = "") -> dict[str, float]:
    """The loss (a weighted mean) and each metric's result, from a sums vector (see :func:`jdense.programs.layout`).

    NaN when no sample counted (every step of the epoch skipped as non-finite).
    """
    parts = programs.unstack(np.asarray(sums), programs.layout(metrics, width, skip_nonfinite))
    count = float(parts["count"])
    logs = {prefix + "loss": float(parts["loss"]) / count if count > 0 else math.nan}
    for m in metrics:
        logs[prefix + m.name] = m.result(parts[m.name], count, width) if count > 0 else math.nan
    if skip_nonfinite:
        logs[prefix + "skipped_steps"] = float(parts["skipped"])
    return dict(sorted(logs.items()))


class CallbackList:
    """The callbacks of one training run, checked before it starts.

    Each must have a hook (``on_train_begin``, ``on_epoch_end``, ``on_train_end``); a
    monitor (``cb.tracker``) must name a key the logs will have, and takes its direction
    from ``metrics`` (the :class:`jdense.metrics.Metric` objects being logged). A callback
    with ``check_logs(keys)`` sees the keys every epoch's logs will have, before training
    (e.g. :class:`jdense.CSVLogger` refuses a file whose header lacks one).
    """

    def __init__(self, callbacks, metrics: Sequence, has_validation: bool, skip_nonfinite: bool = False):
        callbacks = list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
        for cb in callbacks:
            if not any(hasattr(cb, m) for m in ("on_train_begin", "on_epoch_end", "on_train_end")):
                raise TypeError(f"{checks.short(cb)} is not a callback: give it on_epoch_end(epoch, logs, params, *, "
                                "opt_state, state).")
            tracker = getattr(cb, "tracker", None)
            if tracker is not None and hasattr(tracker, "monitor"):
                check_monitor(tracker.monitor, [m.name for m in metrics], has_validation)
                if hasattr(tracker, "resolve"):
                    tracker.resolve(metrics)
        self.callbacks = callbacks
        self.adjusters = [cb for cb in callbacks if callable(getattr(cb, "adjust_hyperparams", None))]
        keys = ["loss", *(m.name for m in metrics)]
        keys += [f"val_{k}" for k in keys] if has_validation else []
        keys += ["skipped_steps"] if skip_nonfinite else []
        keys += ["learning_rate"] if self.adjusters else []
        for cb in callbacks:
            if callable(getattr(cb, "check_logs", None)):
                cb.check_logs(sorted(keys))

    def append(self, callback) -> None:
        self.callbacks.append(callback)

    def begin(self) -> None:
        for cb in self.callbacks:
            getattr(cb, "on_train_begin", lambda: None)()

    def epoch_end(self, epoch: int, logs, params, opt_state, state) -> bool:
        """Every callback's ``on_epoch_end``; True when one asks to stop."""
        stop = False
        for cb in self.callbacks:
            hook = getattr(cb, "on_epoch_end", None)
            if hook is not None and hook(epoch, logs, params, opt_state=opt_state, state=state):
                stop = True
        return stop

    def adjust(self, epoch: int, logs, opt_state, set_values: Callable[[Any, dict], Any]):
        """``opt_state`` with the new values the adjusters ask for (e.g. ``{"learning_rate": 1e-4}``), in turn."""
        for cb in self.adjusters:
            changes = cb.adjust_hyperparams(epoch, logs, optim.hyperparams(opt_state))
            if changes:
                opt_state = set_values(opt_state, changes)
        return opt_state

    def end(self, params, state):
        """Every ``on_train_end``; the last params and state a callback hands back (EarlyStopping's best) win."""
        for cb in self.callbacks:
            hook = getattr(cb, "on_train_end", None)
            restored = hook(params, state) if hook is not None else None
            if restored is not None:
                params, state = restored
        return params, state


def check_monitor(monitor: str, metric_names, has_validation: bool) -> None:
    """A callback's monitor must be a key of the logs: check it before training, not after an epoch."""
    keys = {"loss", *metric_names}
    keys |= {f"val_{k}" for k in keys} if has_validation else set()
    if monitor not in keys:
        hint = " (pass validation_data= for 'val_*' metrics)" if monitor.startswith("val_") and not has_validation else ""
        raise ValueError(f"cannot monitor {monitor!r}{checks.did_you_mean(monitor, keys)}: the logs will have "
                         f"{sorted(keys)}{hint}.")


def run(epoch_fn: Callable, carry: tuple, epochs: range, callbacks: CallbackList, *,
        set_values: Callable[[Any, dict], Any] | None = None) -> tuple[tuple, dict[str, list], int]:
    """Run the epochs: ``epoch_fn(carry, epoch) -> (carry, logs)``, then the callbacks; ``carry = (params, opt_state, state)``.

    ``set_values(opt_state, changes)`` applies the adjusters' changes between epochs (on
    the device(s)); nothing recompiles, they are values.

    Returns:
      ``(carry, history, last epoch run)``, the carry's params and state possibly those
      a callback handed back at the end (EarlyStopping's best).
    """
    history: dict[str, list] = {}
    callbacks.begin()
    epoch = epochs.start
    for epoch in epochs:
        carry, logs = epoch_fn(carry, epoch)
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        params, opt_state, state = carry
        stop = callbacks.epoch_end(epoch, logs, params, opt_state, state)
        if callbacks.adjusters:  # e.g. a lower learning rate for the next epoch: a value, nothing recompiles
            carry = (params, callbacks.adjust(epoch, logs, opt_state, set_values), state)
        if stop:
            break
    params, opt_state, state = carry
    params, state = callbacks.end(params, state)
    return (params, opt_state, state), history, epoch
