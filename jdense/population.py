"""Populations: many networks trained in one compiled fit (seeds, ensembles, hyperparameter grids).

A population is a leading *member* axis on the params, the optimizer state and the
network state. Its epoch is :func:`jdense.fit`'s compiled epoch under ``jax.vmap``: the
data, the batch order and the dropout keys are shared, every member's matmuls become
one batched matmul, and each member's hyperparameters (learning rate, L2 strength,
dropout rate) are values on that axis. So member ``i`` trains exactly as
``jdense.fit`` would train it alone, up to float rounding.

Example:
  >>> members = jdense.grid(learning_rate=[1e-3, 3e-3, 1e-2], lambda_=[0.0, 1e-4], seed=range(5))
  >>> pop = jdense.fit_population(net, x, y, members=members, loss="cross_entropy", epochs=20,
  ...                             batch_size=32, key=jax.random.key(0), validation_data=(xv, yv))
  >>> pop.history["val_accuracy"].shape        # (epochs run, 30 members)
  >>> best = pop.member(pop.best("val_loss"))   # a jdense.FitResult
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdense import arguments, caches, checks, loop, optim, parallel, programs, train
from jdense import losses as losses_lib
from jdense import metrics as metrics_lib
from jdense.callbacks import BestCheckpoint, Callback, EarlyStopping, Monitor, ProgressBar
from jdense.data import feed
from jdense.layers import Dropout
from jdense.network import Sequential

MEMBER_KEYS = ("seed", "learning_rate", "lambda_", "l1", "dropout")
"""The hyperparameters a member dict may set."""


def grid(**axes: Iterable) -> list[dict[str, Any]]:
    """The Cartesian product of the given values, as member dicts for :func:`fit_population`.

    Args:
      **axes: each a non-empty iterable of values, e.g. ``learning_rate=[1e-3, 1e-2]``.

    Returns:
      One dict per combination, the last axis varying fastest.

    Example:
      >>> len(jdense.grid(learning_rate=[1e-3, 3e-3, 1e-2], lambda_=[0.0, 1e-4], seed=range(5)))
      30
    """
    if not axes:
        raise ValueError("grid needs at least one axis, e.g. grid(learning_rate=[1e-3, 1e-2]).")
    values = {}
    for name, vals in axes.items():
        if isinstance(vals, str | bytes) or not isinstance(vals, Iterable):
            raise TypeError(f"grid axis {name!r} must be an iterable of values such as [1e-3, 1e-2], got {checks.short(vals)}.")
        values[name] = list(vals)
        if not values[name]:
            raise ValueError(f"grid axis {name!r} is empty; give it at least one value.")
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def _defaults(options: dict) -> dict[str, float]:
    """The member values given as fit_population's own keywords (``learning_rate=0.1``), taken out of ``options``:
    every member's default, checked by name."""
    out = {}
    for name in ("learning_rate", "lambda_", "l1", "dropout"):
        if name not in options:
            continue
        value = options.pop(name)
        if name == "dropout":
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
                raise ValueError(f"fit_population: dropout must be a rate in [0, 1), got {checks.short(value)}.")
            out[name] = float(value)
        else:
            out[name] = checks.non_negative_float(name, value)
    return out


def _members(members, defaults: dict | None = None) -> list[dict[str, Any]]:
    """Validated member dicts, each with its seed (default: its index) and ``defaults`` for the values it does not set."""
    defaults = defaults or {}
    if isinstance(members, numbers.Integral) and not isinstance(members, bool):
        if members < 1:
            raise ValueError(f"members must be a positive count or a list of member dicts, got {members}.")
        return [{"seed": i, **defaults} for i in range(int(members))]
    if isinstance(members, dict) or not isinstance(members, Sequence) or isinstance(members, str):
        raise TypeError(f"members must be a positive int or a list of dicts (e.g. jdense.grid(...)), got {checks.short(members)}.")
    if not members:
        raise ValueError("members is empty; pass a count or at least one member dict.")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, dict):
            raise TypeError(f"member {i} must be a dict with keys among {MEMBER_KEYS}, got {checks.short(m)}.")
        unknown = sorted(set(m) - set(MEMBER_KEYS))
        if unknown:
            raise ValueError(f"member {i} has unknown keys {unknown}; a member may set {', '.join(MEMBER_KEYS)}.")
        m = {"seed": i, **defaults, **m}
        seed = m["seed"]
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**31:
            raise ValueError(f"member {i}: seed must be an int in [0, 2**31), got {checks.short(seed)}.")
        for name in ("learning_rate", "lambda_", "l1"):  # 0 is allowed: a member with learning rate 0 stays as it starts
            if name in m:
                value = m[name]
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                        math.isfinite(value) and value >= 0):
                    raise ValueError(f"member {i}: {name} must be a finite non-negative float, got "
                                     f"{checks.short(value)}.")
                m[name] = float(value)
        if "dropout" in m:
            rate = m["dropout"]
            if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
                raise ValueError(f"member {i}: dropout must be a rate in [0, 1), got {checks.short(rate)}.")
            m["dropout"] = float(rate)
        out.append({**m, "seed": int(seed)})
    return out


@dataclasses.dataclass(frozen=True)
class MemberDropout(Dropout):
    """Dropout whose keep probability is a value in the network state, one per population member.

    Draws exactly what ``Dropout(rate)`` draws when the state holds ``1 - rate``.
    """

    rate: float = 0.5  # a placeholder: the rate used is the state's

    def init_state(self):
        return {"keep": jnp.ones((), jnp.float32)}

    def apply_with_state(self, params, state, x, *, train=False, key=None, mask=None):
        if not train:
            return x, state
        keep = state["keep"]
        drop = jax.random.bernoulli(key, keep, jnp.shape(x))
        return jnp.where(drop, x / keep.astype(x.dtype), jnp.zeros((), x.dtype)), state


@dataclasses.dataclass(frozen=True)
class PopulationResult:
    """What :func:`fit_population` returns.

    Attributes:
      params, opt_state, state: the members' trees, each leaf with a leading axis of size N.
      history: ``{name: array (epochs run, N)}``; NaN after a member stopped.
      epochs: how many epochs each member ran, an int array ``(N,)``.
      members: the member dicts (with their seeds).
      indices: the positions of these members in the population that was trained: ``None``
        for all of them, in order; with ``fit_population(..., gather=False)`` in a
        multi-process run, the members this process holds.
    """

    params: Any
    opt_state: Any
    state: Any
    history: dict[str, np.ndarray]
    epochs: np.ndarray
    members: list[dict[str, Any]]
    metrics: tuple = ()
    indices: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.members)

    def best(self, monitor: str = "val_loss", mode: str = "auto") -> int:
        """The index of the member whose ``monitor`` is best at its last epoch.

        ``mode`` as EarlyStopping's: ``"auto"`` takes the metric's declared direction
        (``higher_is_better``: the largest ``val_auc``, the smallest ``val_loss``).
        """
        if monitor not in self.history:
            raise ValueError(f"cannot rank by {checks.short(monitor)}{checks.did_you_mean(monitor, self.history)}: the "
                             f"history has {sorted(self.history)}.")
        last = self.history[monitor][self.epochs - 1, np.arange(len(self))]
        tracker = Monitor(monitor, mode)
        tracker.resolve(self.metrics)
        sign = tracker.sign
        if np.isnan(last).all():
            raise ValueError(f"every member's last {monitor!r} is NaN; nothing to rank.")
        return int(np.nanargmin(sign * last))

    def member(self, i: int) -> train.FitResult:
        """Member ``i`` as a :class:`jdense.FitResult` (its history up to its last epoch)."""
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not -len(self) <= i < len(self):
            raise IndexError(f"member index must be an int in [0, {len(self)}), got {checks.short(i)}.")
        take = lambda tree: jax.tree.map(lambda a: a[i], tree)  # noqa: E731
        state = {k: v for k, v in take(self.state).items() if not (isinstance(v, dict) and set(v) == {"keep"})}
        n = int(self.epochs[i])
        history = {k: [float(v) for v in h[:n, i]] for k, h in self.history.items()}
        return train.FitResult(take(self.params), take(self.opt_state), state, history, n)

    def __repr__(self) -> str:
        return f"PopulationResult({len(self)} members, epochs {self.epochs.tolist()}, history {sorted(self.history)})"


def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


def _l1_net(net: Sequential) -> Sequential:
    """``net`` with an L1 term on every layer that has an L2 one, so that its optimizer carries ``l1`` values."""
    return Sequential([dataclasses.replace(layer, l1=1.0) if hasattr(layer, "l1") else layer for layer in net.layers])


def _member_net(net: Sequential, dropout: bool) -> Sequential:
    if not dropout:
        return net
    if not any(isinstance(layer, Dropout) for layer in net.layers):
        raise ValueError("a member sets dropout but the network has no Dropout layer; add one (e.g. mlp(..., dropout=0.1)).")
    return Sequential([MemberDropout() if type(layer) is Dropout else layer for layer in net.layers])


def _optimizer(net: Sequential, optimizer, members: list[dict], options: dict) -> optax.GradientTransformation:
    """The members' optimizer: a base name, or a ``jdense.optimizer(...)`` whose values become the members' defaults."""
    if isinstance(optimizer, str):
        per_l1 = any("l1" in m for m in members)
        try:
            tx = optim.optimizer(_l1_net(net) if per_l1 else net, optimizer, 1e-3, **options)
        except TypeError:
            if not options:
                raise
            raise TypeError(f"fit_population got unexpected keyword arguments {sorted(options)}: they are neither its "
                            f"own arguments nor options of optimizer {checks.short(optimizer)} (see help(jdense.fit_population) "
                            "and help(jdense.optimizer)).") from None
        if per_l1:  # the layers' own l1 values, not the placeholder's
            own = [float(getattr(layer, "l1", 0.0)) for layer in net.layers if hasattr(layer, "lambda_")]
            tx.init.hyperparams["l1"] = own
    elif isinstance(optimizer, optax.GradientTransformation) and isinstance(optimizer.init, optim.OptimizerInit):
        if options:
            raise TypeError(f"fit_population does not take {', '.join(k + '=' for k in sorted(options))} with a "
                            "jdense.optimizer(...): set them in jdense.optimizer(net, ..., clip_norm=...) itself.")
        tx = optimizer
        if any("l1" in m for m in members) and "l1" not in tx.init.hyperparams:
            raise ValueError("a member sets l1 but the optimizer has no L1 term; pass optimizer='adam' (a name), or "
                             "build it from a network with l1 set, e.g. jdense.optimizer(jdense.mlp(..., l1=...)).")
    else:
        raise TypeError(
            "fit_population: optimizer must be a name such as 'adam' or a jdense.optimizer(net, ...) result (the "
            f"members' learning rates are values in its state), got {checks.short(optimizer)}; a plain optax "
            "transformation cannot take per-member values.")
    if "learning_rate" not in tx.init.hyperparams:
        raise ValueError("fit_population needs a learning rate that is a value, not a schedule.")
    return tx


def _opt_state(tx, params, members: list[dict]):
    """The members' optimizer states (a template filled in the first epoch) with their values, and the value names."""
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), params)
    one_template, hyper = programs.initial_opt_state(tx, shapes)
    values = {k: [] for k in hyper}
    for m in members:
        v = dict(tx.init.hyperparams)
        for name in ("learning_rate", "lambda_", "l1"):
            if name in m and name in v:
                v[name] = [m[name]] * len(v[name]) if isinstance(v[name], list | tuple) else m[name]
        for k in hyper:
            values[k].append(v[k])
    template = jax.tree.map(lambda a: np.broadcast_to(a, (len(members), *a.shape)), one_template)
    return optim.with_values(template, optim.host_values(values)), hyper


def _fits_device(n_members: int, one_params, tx, layout: parallel.MemberLayout | None = None,
                 landing: int | None = None) -> None:
    """Refuse, before anything is allocated, a population whose params and optimizer state cannot fit a device.

    Spread over devices (``layout``), each trains its share of the (padded) members; the result then lands on one
    device: ``landing`` members (all of them unless ``gather=False`` keeps a process's own), default all.
    """
    one = checks.nbytes(one_params) + checks.nbytes(jax.eval_shape(tx.init, one_params))
    devices = 1 if layout is None or layout.mesh is None else layout.mesh.devices.size
    share = n_members if devices == 1 else layout.padded // devices
    landing = n_members if landing is None else landing
    if devices == 1 or landing >= share:
        why = "" if devices == 1 else " (the result gathers them onto one device)"
        checks.fits_device(f"a population of {n_members:,} members", landing * one,
                            f"{landing:,} x {one:,} bytes of params and optimizer state{why}; train fewer members at a "
                            "time")
        return
    checks.fits_device(f"a population of {n_members:,} members on {devices} devices", share * one,
                        f"{share:,} members per device x {one:,} bytes of params and optimizer state; train fewer "
                        "members at a time or spread them over more devices")


def _states(net: Sequential, member_net: Sequential, members: list[dict], compute_dtype) -> Any:
    one_state = member_net.init_state()
    if compute_dtype is not None and jnp.dtype(compute_dtype) == jnp.float16:
        one_state = {**one_state, programs.LOSS_SCALE: programs.initial_loss_scale()}
    states = []
    for m in members:
        s = dict(one_state)
        for name, layer in zip(member_net.names, member_net.layers):
            if isinstance(layer, MemberDropout):
                rate = m.get("dropout", next(lay.rate for lay in net.layers if isinstance(lay, Dropout)))
                s[name] = {"keep": np.float32(1.0 - rate)}
        states.append(s)
    return _stack(states)


class MemberStopping(Callback):
    """The population's EarlyStopping: a copy of each stopper per member, run on that member's logs.

    A stopped member leaves ``active`` (its params and states stay frozen, its later
    history is NaN); with ``restore_best`` each member that improved gets its best
    epoch's params back at the end. Asks to stop when no member is active.
    """

    def __init__(self, stoppers: list[EarlyStopping], members: int, pad: Callable = np.asarray):
        self.stoppers, self.pad = stoppers, pad  # pad: a spread population's padding members never improve
        self.copies = [[copy.deepcopy(cb) for _ in range(members)] for cb in stoppers]
        for cbs in self.copies:
            for cb in cbs:
                cb.restore_best = False
        self.restore = any(cb.restore_best for cb in stoppers)
        self.active = np.ones(members, bool)
        self.ran = np.zeros(members, np.int64)
        self.best = None

    def on_train_begin(self):
        for cbs in self.copies:
            for cb in cbs:
                cb.on_train_begin()

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        self.ran[self.active] = epoch + 1
        stopped = np.zeros_like(self.active)
        improved = np.zeros_like(self.active)
        for cb, cbs in zip(self.stoppers, self.copies):
            for i in np.flatnonzero(self.active):
                stopped[i] |= bool(cbs[i].on_epoch_end(epoch, {k: float(v[i]) for k, v in logs.items()}, None))
                improved[i] |= cb.restore_best and cbs[i].best_epoch == epoch
        if self.restore and improved.any():
            best = (params, state) if self.best is None else self.best
            self.best = programs.select(self.pad(improved), (params, state), best)
        self.active &= ~stopped
        return not self.active.any()

    def on_train_end(self, params, state):
        return self.best  # members that improved at least once get their best epoch back


def _population_callbacks(callbacks) -> list:
    """The user's callbacks as a population runs them: a :class:`jdense.ProgressBar` shows the members' best and
    median loss; one that keeps one model's best (:class:`jdense.BestCheckpoint`) is refused before compiling."""
    callbacks = list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
    for cb in callbacks:
        if isinstance(cb, BestCheckpoint):
            raise TypeError(
                "fit_population does not run BestCheckpoint: it saves one model's params when one monitored value "
                "improves, and a population has a value per member. Pass EarlyStopping(monitor=..., restore_best=True) "
                "(each member gets its best epoch back), then save the one you want: "
                "m = pop.member(pop.best('val_loss')); jdense.save(path, m.params, net=net, state=m.state).")
    return [_Summarised(cb) if isinstance(cb, ProgressBar) and not isinstance(cb, PopulationBar) else cb for cb in callbacks]


class _Summarised(Callback):
    """A user's :class:`jdense.ProgressBar` on a population: it shows the summary the population's own bar shows."""

    def __init__(self, bar: ProgressBar):
        self.bar = bar

    def on_train_begin(self):
        self.bar.on_train_begin()

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        return self.bar.on_epoch_end(epoch, _summary(logs), None)

    def on_train_end(self, params, state):
        return self.bar.on_train_end(None, None)


class PopulationBar(ProgressBar):
    """The progress bar of a population: the best and median loss (and val_loss) of the members."""

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        return super().on_epoch_end(epoch, _summary(logs), None)


_FIT_ONLY = ("params", "opt_state", "state", "initial_epoch")


def fit_population(
    net: Sequential,
    x: Any,
    y: jax.typing.ArrayLike | None = None,
    *,
    members: int | Sequence[dict],
    loss: str | Callable,
    optimizer: str | optax.GradientTransformation = "adam",
    epochs: int = 1,
    batch_size: int | None = checks.BATCH_SIZE,
    key: jax.Array | None = None,
    validation_data: tuple | None = None,
    metrics: Sequence[str] | None = None,
    callbacks: Sequence[Any] = (),
    class_weight: dict | Sequence[float] | None = None,
    verbose: int = 1,
    skip_nonfinite: bool = False,
    compute_dtype: Any = None,
    mesh: Any = None,
    sample_weight: jax.typing.ArrayLike | None = None,
    validation_split: float | None = None,
    stream: bool | None = None,
    steps_per_epoch: int | None = None,
    device_memory: int | None = None,
    data: str = "global",
    devices: Any = None,
    gather: bool = True,
    **optimizer_options: Any,
) -> PopulationResult:
    """Train a population of networks in one compiled fit: one program per epoch for every member.

    Member ``i`` starts from ``net.init(jax.random.key(seed_i))`` and trains as
    ``jdense.fit(net_i, ..., optimizer=jdense.optimizer(net_i, optimizer, learning_rate_i), key=key)``
    would, where ``net_i`` carries the member's ``lambda_``/``l1`` (every Dense layer) and
    dropout rate (every Dropout layer). Every member sees the batch order drawn from ``key``.

    Args:
      net: the network every member has.
      x, y: training data, shared by the members (never copied per member); everything
        :func:`jdense.fit` takes: arrays, memory maps (streamed), iterables of batches.
      members: N (seeds 0..N-1, the same hyperparameters) or a list of dicts with keys
        among ``seed`` (default: the index), ``learning_rate`` (0 keeps the member as it
        starts), ``lambda_`` and ``l1`` (on every layer with an L2 term) and ``dropout``;
        what a member leaves out is the optimizer's (or the net's) value. E.g. from :func:`grid`.
      optimizer: a base name as in :func:`jdense.optimizer` (learning rate 1e-3), or a
        ``jdense.optimizer(net, ...)`` result whose values (learning rate, L2/L1, clip_norm)
        become the members' defaults.
      sample_weight: ``(n,)`` weights shared by the members, as in :func:`jdense.fit`, or
        ``(members, n)``: a row of weights per member (0: the member never sees that row;
        e.g. cross-validation folds). Member ``i`` trains as ``fit(..., sample_weight=w[i])``.
        ``validation_data``'s weights may be ``(members, n_val)`` alike (each fold's held-out rows).
      callbacks: :class:`jdense.EarlyStopping` acts per member: a stopped member's params
        and states stay frozen and its later history entries are NaN; ``restore_best``
        per member. :class:`jdense.ProgressBar` shows the members' best and median loss,
        :class:`jdense.CSVLogger` writes a row per member (a ``member`` column) and
        :class:`jdense.TensorBoard` a scalar per member (``loss/member_3``);
        :class:`jdense.BestCheckpoint` is refused (use ``EarlyStopping(restore_best=True)``
        and save ``pop.member(i)``). Other callbacks get ``on_epoch_end(epoch, logs, params, ...)``
        once per epoch with ``logs`` of per-member arrays and the stacked params.
      loss, epochs, batch_size, key, validation_data, metrics, class_weight, verbose,
        skip_nonfinite, compute_dtype, mesh, validation_split, stream, steps_per_epoch,
        device_memory, data: as in :func:`jdense.fit` (with a mesh, members are
        replicated and batch rows sharded).
      devices: where the members train: ``None`` (default) every device of the process, and
        under ``jax.distributed`` of every process; ``k`` the first k devices; or a list of
        devices. Members are split over them along a ``"members"`` axis (padded with
        inactive copies when the count does not divide); data are replicated and a step
        needs no communication. On CPU, :func:`jdense.cpu_devices` makes one device per
        core. Not combined with ``mesh=`` (pass one or the other); streamed data train on one device.
      gather: with several processes, ``True`` gathers every member into each process's
        result; ``False`` keeps only this process's members (``result.indices`` says which).
      **optimizer_options: keyword options of :func:`jdense.optimizer`, e.g. ``clip_norm=1.0``;
        and ``learning_rate``, ``lambda_``, ``l1``, ``dropout``: every member's default
        (``fit_population(..., members=5, learning_rate=0.1)``), which a member's own entry overrides.

    Returns:
      A :class:`PopulationResult`.

    Raises:
      ValueError, TypeError: for bad members (naming the member) or arguments, before compiling.

    Example:
      >>> pop = jdense.fit_population(net, x, y, members=5, loss="cross_entropy", epochs=10,
      ...                             key=jax.random.key(0))
      >>> pop.history["accuracy"][-1]     # the last epoch's accuracy of each of the 5 members
    """
    what = "fit_population"
    arguments.refuse_unknown(what, optimizer_options, _FIT_ONLY, "members start from net.init(jax.random.key(seed)) "
                             "with a fresh optimizer; train further with jdense.fit on pop.member(i).")
    arguments.refuse_unknown(what, optimizer_options, inspect.signature(train.fit).parameters,
                             "see help(jdense.fit_population) for the arguments it takes.")
    arguments.network(net, what)
    epochs, _ = arguments.epochs(epochs)
    compute_dtype = arguments.compute_dtype(compute_dtype)
    members = _members(members, _defaults(optimizer_options))
    member_net = _member_net(net, any("dropout" in m for m in members))
    tx = _optimizer(net, optimizer, members, optimizer_options)
    per_sample = losses_lib.per_sample(loss)
    metric_objs = arguments.metric_objects(loss, metrics)
    seed = arguments.key_data(key, what)
    data_in = feed.prepare(
        x, y, batch_size=batch_size, sample_weight=sample_weight, validation_split=validation_split,
        validation_data=validation_data, stream=stream, data=data, steps_per_epoch=steps_per_epoch,
        device_memory=device_memory, mesh=mesh, seed=seed, finite=not skip_nonfinite, members=len(members), what=what)
    parallel.check_batch(mesh, data_in.batch, what)
    layout, shared = _layout(devices, gather, len(members), mesh, streamed=data_in.source is not None)
    if data_in.weights is not None and data_in.weights.ndim == 2:  # a row per member: padding members get copies
        data_in.weights = layout.pad(data_in.weights)
    one_params = jax.eval_shape(net.init, jax.random.key(0))
    checks.trainable(what, net, one_params)
    out_shape = arguments.output_shape(net, one_params, net.init_state(), data_in.x, what, data_in.shape)
    if data_in.source is None:
        feed.labels(loss, data_in.y, out_shape, what)
    metrics_lib.check_width(metric_objs, arguments.width(out_shape), what)
    cw = arguments.class_weights(class_weight, out_shape, what)
    checked_val = feed.validation(data_in.validation_data, loss, out_shape, f"{what}(validation_data)", len(members))
    if checked_val is not None:
        net.check_input(checked_val[0].shape, f"{what}(validation_data)")
    if checked_val is not None and checked_val[2].ndim == 2:
        checked_val = (*checked_val[:2], layout.pad(checked_val[2]))
    callbacks = loop.CallbackList(_population_callbacks(callbacks), metric_objs, checked_val is not None, skip_nonfinite)
    if callbacks.adjusters:
        raise TypeError(f"{what} does not run callbacks with adjust_hyperparams (e.g. ReduceLROnPlateau): the members "
                        "would need one schedule each; give members learning rates instead, or use jdense.fit.")

    local = not gather and jax.process_count() > 1  # the result keeps this process's members only
    _fits_device(len(members), one_params, tx, layout, len(layout.local_indices()) if local else None)
    # net.init's one compiled program, once per member (a vmapped init compiles many times slower).
    params = _stack([_init(net)(jax.random.key(m["seed"])) for m in members])
    opt_state, hyper = _opt_state(tx, params, members)
    state = _states(net, member_net, members, compute_dtype)
    spec = arguments.training_spec(
        member_net, per_sample, metric_objs, tx, hyperparams=hyper, compute_dtype=compute_dtype, class_weight=cw,
        mesh=mesh, skip_nonfinite=skip_nonfinite, validation=checked_val is not None)
    cw_dev = None if cw is None else jax.device_put(cw)
    params, opt_state, state = layout.place((params, opt_state, state))  # split over the devices' member axis
    params, opt_state, state, cw_dev = parallel.place((params, opt_state, state, cw_dev), shared)
    val = feed.device_validation(checked_val, data_in.batch, shared, f"{what}(validation_data)")
    runner = feed.epochs(data_in, spec, loss=loss, out_shape=out_shape, seed=seed, key=parallel.place(key, shared),
                         class_weight=cw_dev, val=val, mesh=shared, per_process=data == "per_process",
                         epochs=range(epochs), members=len(members), spread=layout.mesh, what=what)
    stopping = MemberStopping([cb for cb in callbacks.callbacks if isinstance(cb, EarlyStopping)], len(members),
                              layout.pad_mask)
    callbacks.callbacks = [cb if layout.padded == layout.count else _Unpadded(cb, layout.count)
                           for cb in callbacks.callbacks if not isinstance(cb, EarlyStopping)]
    if verbose:
        callbacks.append(PopulationBar(epochs, verbose, note=runner.note))
    callbacks.append(stopping)  # last: its on_train_end hands back the members' best params
    epoch_fn = _epoch_fn(runner, stopping, metric_objs, arguments.width(out_shape), skip_nonfinite, val is not None, layout)
    carry, history, _ = loop.run(epoch_fn, (params, opt_state, state), range(epochs), callbacks)
    hist = {k: np.stack(v) for k, v in history.items()}
    return _result(layout, gather, carry, hist, stopping.ran, members, metric_objs)


def _layout(devices, gather, count: int, mesh, streamed: bool) -> tuple[parallel.MemberLayout, Any]:
    """Where the members train (see ``devices=``) and the mesh that shared arrays are replicated on."""
    if not isinstance(gather, bool):
        raise TypeError(f"gather must be True (every member in the result) or False (this process's members), got {checks.short(gather)}.")
    if streamed and mesh is None:  # a streamed chunk is put on one device (or a data mesh): members stay together
        if devices not in (None, 1):
            raise ValueError(f"fit_population: streamed data train the population on one device, got devices={checks.short(devices)}; "
                             "pass devices=1 (or leave it out), or load the data in memory to spread the members.")
        devices = 1
    layout = parallel.member_layout(devices, count, mesh=mesh, what="fit_population")
    return layout, (mesh if layout.mesh is None else layout.mesh)


def _result(layout: parallel.MemberLayout, gather: bool, trees: tuple, history, epochs, members, metrics) -> PopulationResult:
    """The result; a spread population's members gathered onto one device, or (``gather=False``, several
    processes) this process's own members only, with their indices."""
    if layout.mesh is None:
        return PopulationResult(*trees, history, epochs, members, metrics)
    local = not gather and jax.process_count() > 1
    trees = layout.gather(trees, local=local)
    if not local:
        return PopulationResult(*trees, history, epochs, members, metrics)
    mine = layout.local_indices()
    return PopulationResult(*trees, {k: v[:, mine] for k, v in history.items()}, epochs[mine], [members[i] for i in mine],
                            metrics, mine)


class _Unpadded(Callback):
    """A user's callback on a spread population: it sees the ``count`` members, never the padding members."""

    def __init__(self, callback, count: int):
        self.callback, self.count = callback, count

    def on_train_begin(self):
        getattr(self.callback, "on_train_begin", lambda: None)()

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        hook = getattr(self.callback, "on_epoch_end", None)
        if hook is None:
            return False
        params, opt_state, state = _unpad(self.count, (params, opt_state, state))
        return hook(epoch, logs, params, opt_state=opt_state, state=state)

    def on_train_end(self, params, state):
        hook = getattr(self.callback, "on_train_end", None)
        return None if hook is None else hook(*_unpad(self.count, (params, state)))


@functools.partial(jax.jit, static_argnums=0)
def _unpad(count: int, tree):
    return jax.tree.map(lambda a: a[:count], tree)


@caches.cached
def _init(net: Sequential) -> Callable:
    """``net.init`` compiled as the population's epoch is (LLVM level 1 on CPU): bitwise the same params.

    Its random-number kernels dominate the compile time, which level 1 halves (measured 2.0 s ->
    0.95 s for 64-128-64-10 on the 2-core CPU); it runs once per member, so its speed does not
    matter. Every initializer, float32 and bfloat16, gave identical arrays at both levels.
    """
    options = programs.compiler_options(None)
    return net.init if options is None else jax.jit(net.init, compiler_options=options)


def _epoch_fn(runner, stopping: MemberStopping, metric_objs, width: int, skip_nonfinite: bool, validation: bool,
              layout: parallel.MemberLayout):
    """The population's epoch for :func:`jdense.loop.run`: logs of per-member arrays, NaN for stopped members."""
    fresh = True

    def epoch_fn(carry, epoch):
        nonlocal fresh
        active = stopping.active
        params, opt_state, state, sums, val_sums = runner.run((layout.place(layout.pad_mask(active)),), *carry, epoch, fresh)
        fresh = False
        sums, val_sums = layout.host((sums, val_sums))  # (members, entries), padding dropped
        rows = [loop.logs_of(s, metric_objs, width, skip_nonfinite) for s in sums]
        if validation:
            for r, s in zip(rows, val_sums):
                r.update(loop.logs_of(s, metric_objs, width, prefix="val_"))
        logs = {k: np.array([r[k] if a else math.nan for r, a in zip(rows, active)]) for k in rows[0]}
        bad = active & ~np.isfinite(logs["loss"])
        if bad.any() and not skip_nonfinite:
            raise train.nonfinite_error(
                "fit_population", runner, epoch, f"of members {np.flatnonzero(bad).tolist()} became non-finite",
                "lower their learning rates, pass clip_norm=, or skip_nonfinite=True.",
                "nothing was returned: drop or impute those rows (or pass skip_nonfinite=True) and train the population again")
        return (params, opt_state, state), logs

    return epoch_fn


def _summary(logs: dict[str, np.ndarray]) -> dict[str, float]:
    """The population's best and median loss (and val_loss) for the progress bar."""
    out = {}
    for k in ("loss", "val_loss"):
        if k in logs and not np.isnan(logs[k]).all():
            out[f"{k} best"], out[f"{k} median"] = float(np.nanmin(logs[k])), float(np.nanmedian(logs[k]))
    return out


# -- ensembles ------------------------------------------------------------------------------
def _ensemble_params(net: Sequential, params, what: str) -> None:
    """Refuse one network's params where an ensemble's (a leading member axis) are needed, naming ``what``."""
    arguments.network(net, what)
    try:
        net.check_params(params, what)
    except (ValueError, TypeError):
        return  # not one network's: the population checks that follow name what is wrong
    raise ValueError(f"{what}: params are one network's (no member axis); pass a population's params (fit_population's "
                     "result.params), or use jdense.predict for one network.")


def ensemble_predict(net: Sequential, params, x: jax.typing.ArrayLike, *, loss: str | Callable = "cross_entropy",
                     output: str | None = None, state: Any = None, batch_size: int | None = None,
                     return_std: bool = False, **kwargs: Any) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The ensemble's prediction: the mean of the members' probabilities, or of their outputs.

    Args:
      loss: the members' loss. For ``"cross_entropy"`` the members' softmax probabilities
        are averaged, for ``"binary_cross_entropy"`` their sigmoid probabilities (as
        :func:`jdense.losses.link`); for a regression loss (or a callable) their raw outputs.
      output: ``None`` (default: probabilities for a classification loss, the mean output
        otherwise), ``"probabilities"``, ``"labels"`` (of the averaged probabilities: argmax,
        or ``p > 0.5``) or ``"logits"`` (the mean of the raw outputs), as :func:`jdense.predict`.
      return_std: also the standard deviation across the members (``ddof=0``), per output:
        ``(mean, std)`` (not with ``output="labels"``).
      **kwargs: none are taken; ``activation=`` is pointed to ``output=`` and ``loss=``.

    Raises:
      ValueError: an unknown loss (with the closest name) or output, probabilities or labels
        for a regression loss, or params and state that are not one population's.

    Example:
      >>> probs = jdense.ensemble_predict(net, pop.params, x_test)      # (n, classes)
      >>> labels = jdense.ensemble_predict(net, pop.params, x_test, output="labels")
      >>> mean, std = jdense.ensemble_predict(net, pop.params, x_test, loss="mse", return_std=True)
    """
    checks.keywords("ensemble_predict", kwargs, {}, ("loss", "output", "state", "batch_size", "return_std"),
                     losses_lib.PREDICT_HINTS)
    _ensemble_params(net, params, "ensemble_predict")
    name = losses_lib.name_of(loss)  # refuses a typo such as "crossentropy" instead of averaging raw outputs
    classification = name in losses_lib.SOFTMAX | losses_lib.SIGMOID
    output = ("probabilities" if classification else "logits") if output is None else output
    losses_lib.link(loss, output, "ensemble_predict")  # checks output against the loss
    if checks.boolean("return_std", return_std) and output == "labels":
        raise ValueError("ensemble_predict: return_std=True needs output='probabilities' or 'logits' (labels have no "
                         "standard deviation).")
    out = np.asarray(train.predict(net, params, x, state=state, batch_size=batch_size, population=True), np.float64)
    if output != "logits" and name in losses_lib.SOFTMAX:
        out = np.exp(out - out.max(-1, keepdims=True))
        out = out / out.sum(-1, keepdims=True)
    elif output != "logits":
        out = 1.0 / (1.0 + np.exp(-out))
    if output != "labels":
        return (out.mean(axis=0), out.std(axis=0)) if return_std else out.mean(axis=0)
    p = out.mean(axis=0)
    if name in losses_lib.SOFTMAX:
        return p.argmax(-1).astype(np.int32)
    labels = (p > 0.5).astype(np.int32)
    return labels[..., 0] if labels.shape[-1] == 1 else labels


def ensemble_evaluate(net: Sequential, params, x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *,
                      loss: str | Callable = "cross_entropy", state: Any = None,
                      batch_size: int | None = None) -> dict[str, float]:
    """Loss and metrics of the ensemble's prediction (:func:`ensemble_predict`).

    Classification: ``loss`` is the negative log-likelihood of the averaged probabilities,
    and ``accuracy``; regression: the loss of the mean output, ``mse`` and ``mae``.

    Raises:
      ValueError, TypeError: before any compute, for an unknown loss, a ``y`` of another
        length than ``x``, labels outside ``0..classes-1`` or float class labels, and
        params and state that are not one population's.

    Example:
      >>> jdense.ensemble_evaluate(net, pop.params, x_test, y_test)
      {'loss': 0.08, 'accuracy': 0.98}
    """
    what = "ensemble_evaluate"
    name = losses_lib.name_of(loss)
    if name in ("kl_divergence", "sigmoid_focal"):
        raise ValueError(f"{what}: loss={name!r} is not supported; evaluate the ensemble's probabilities with "
                         "loss='cross_entropy' or 'binary_cross_entropy', or a regression loss.")
    x, y = feed.arrays(x, y, what)
    _ensemble_params(net, params, what)
    members_state = arguments.members(net, params, state, True, what)
    out_shape = arguments.output_shape(net, arguments.member_shapes(params), arguments.member_shapes(members_state), x,
                                       what)
    feed.labels(loss, y, out_shape, what)
    p = ensemble_predict(net, params, x, loss=loss, state=state, batch_size=batch_size)
    tiny = np.finfo(np.float64).tiny
    if name == "cross_entropy":
        labels = y if np.issubdtype(y.dtype, np.integer) and y.ndim == 1 else y.argmax(-1)
        return {"loss": float(-np.log(np.maximum(p[np.arange(len(p)), labels], tiny)).mean()),
                "accuracy": float((p.argmax(-1) == labels).mean())}
    if name == "binary_cross_entropy":
        p, t = p.reshape(len(p)), y.reshape(len(p)).astype(np.float64)
        nll = -(t * np.log(np.maximum(p, tiny)) + (1 - t) * np.log(np.maximum(1 - p, tiny)))
        return {"loss": float(nll.mean()), "accuracy": float(((p > 0.5) == (t > 0.5)).mean())}
    values = losses_lib.per_sample(loss)(jnp.asarray(p, jnp.float32), jnp.asarray(y))
    t = y.reshape(p.shape).astype(np.float64)
    return {"loss": float(np.mean(values)), "mse": float(((p - t) ** 2).mean()), "mae": float(np.abs(p - t).mean())}


__all__ = ["MemberDropout", "PopulationResult", "ensemble_evaluate", "ensemble_predict", "fit_population", "grid"]
