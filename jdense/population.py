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
import itertools
import math
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdense import _checks, optim, parallel, programs, train
from jdense import losses as losses_lib
from jdense import metrics as metrics_lib
from jdense.callbacks import EarlyStopping, ProgressBar, _Monitor
from jdense.layers import Dropout
from jdense.network import Sequential

MEMBER_KEYS = ("seed", "learning_rate", "lambda_", "dropout")
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
            raise TypeError(f"grid axis {name!r} must be an iterable of values such as [1e-3, 1e-2], got {vals!r}.")
        values[name] = list(vals)
        if not values[name]:
            raise ValueError(f"grid axis {name!r} is empty; give it at least one value.")
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def _members(members) -> list[dict[str, Any]]:
    """Validated member dicts, each with its seed (default: its index)."""
    if isinstance(members, numbers.Integral) and not isinstance(members, bool):
        if members < 1:
            raise ValueError(f"members must be a positive count or a list of member dicts, got {members}.")
        return [{"seed": i} for i in range(int(members))]
    if isinstance(members, dict) or not isinstance(members, Sequence) or isinstance(members, str):
        raise TypeError(f"members must be a positive int or a list of dicts (e.g. jdense.grid(...)), got {members!r}.")
    if not members:
        raise ValueError("members is empty; pass a count or at least one member dict.")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, dict):
            raise TypeError(f"member {i} must be a dict with keys among {MEMBER_KEYS}, got {m!r}.")
        unknown = sorted(set(m) - set(MEMBER_KEYS))
        if unknown:
            raise ValueError(f"member {i} has unknown keys {unknown}; a member may set {', '.join(MEMBER_KEYS)}.")
        m = {"seed": i, **m}
        seed = m["seed"]
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**31:
            raise ValueError(f"member {i}: seed must be an int in [0, 2**31), got {seed!r}.")
        for name in ("learning_rate", "lambda_"):  # 0 is allowed: a member with learning rate 0 stays as it starts
            if name in m:
                try:
                    m[name] = optim._number(name, m[name], positive=False)
                except ValueError as err:
                    raise ValueError(f"member {i}: {err}") from None
        if "dropout" in m:
            rate = m["dropout"]
            if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
                raise ValueError(f"member {i}: dropout must be a rate in [0, 1), got {rate!r}.")
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
    """

    params: Any
    opt_state: Any
    state: Any
    history: dict[str, np.ndarray]
    epochs: np.ndarray
    members: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.members)

    def best(self, monitor: str = "val_loss", mode: str = "auto") -> int:
        """The index of the member whose ``monitor`` is best at its last epoch (min or max, as EarlyStopping's mode)."""
        if monitor not in self.history:
            raise ValueError(f"cannot rank by {monitor!r}: the history has {sorted(self.history)}.")
        last = self.history[monitor][self.epochs - 1, np.arange(len(self))]
        sign = _Monitor(monitor, mode, 0.0).sign
        if np.isnan(last).all():
            raise ValueError(f"every member's last {monitor!r} is NaN; nothing to rank.")
        return int(np.nanargmin(sign * last))

    def member(self, i: int) -> train.FitResult:
        """Member ``i`` as a :class:`jdense.FitResult` (its history up to its last epoch)."""
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not -len(self) <= i < len(self):
            raise IndexError(f"member index must be an int in [0, {len(self)}), got {i!r}.")
        take = lambda tree: jax.tree.map(lambda a: a[i], tree)  # noqa: E731
        state = {k: v for k, v in take(self.state).items() if not (isinstance(v, dict) and set(v) == {"keep"})}
        n = int(self.epochs[i])
        history = {k: [float(v) for v in h[:n, i]] for k, h in self.history.items()}
        return train.FitResult(take(self.params), take(self.opt_state), state, history, n)


# -- compiled programs ------------------------------------------------------------------------
def _member_epoch(spec, active, params, opt_state, state, *rest):
    """fit's epoch for one member; a member that is not ``active`` keeps its params and states."""
    new = programs._epoch(spec, params, opt_state, state, *rest)
    keep = lambda n, o: jax.tree.map(lambda a, b: jnp.where(active, a, b), n, o)  # noqa: E731
    return (*keep(new[:3], (params, opt_state, state)), *new[3:])


def _compiler_options(mesh) -> dict[str, Any] | None:
    """XLA options of the population's epoch: on CPU, LLVM's optimization level 1 (XLA's default is 2).

    A population's step spends its time in library matmuls (batched over the members) and in
    memory-bound updates of large arrays, which LLVM's level-2 passes do not speed up, and
    level 1 compiles faster. Measured in fresh processes, alternating, on the 2-core CPU: 64 x
    64-32-10 on 16,000 rows compiled in 1.17-1.25 s instead of 1.51-1.66 s, its epoch 0.67-0.69 s
    either way; 32 x 64-128-64-10 on digits compiled in 1.6-2.0 s instead of 2.8-2.9 s at the
    same speed (0.17-0.25 s against 0.19-0.34 s an epoch, on a noisier machine). A single
    small network is another matter: there level 1 cost ~30% of its speed, so ``fit`` keeps
    XLA's default. A level set in ``XLA_FLAGS`` wins; other platforms keep their defaults.
    """
    devices = jax.devices() if mesh is None else mesh.devices.flat
    if next(iter(devices)).platform != "cpu" or "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    return {"xla_backend_optimization_level": 1}


@programs._cached
def _training(spec: programs.Training):
    """The population's epoch: :func:`programs._epoch` vmapped over the member axis, the data shared."""
    axes = (0, 0, 0, 0) + (None,) * 9
    return jax.jit(jax.vmap(functools.partial(_member_epoch, spec), in_axes=axes), donate_argnums=(1, 2, 3),
                   compiler_options=_compiler_options(spec.mesh))


@jax.jit
def _select(mask, new, old):
    """Per member: ``new`` where ``mask`` else ``old`` (the best params of EarlyStopping(restore_best))."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


def _fits_device(n_members: int, one_params, tx) -> None:
    """Refuse, before anything is allocated, a population whose params and optimizer state cannot fit the device."""
    one = _checks.nbytes(one_params) + _checks.nbytes(jax.eval_shape(tx.init, one_params))
    _checks.fits_device(f"a population of {n_members:,} members", n_members * one,
                        f"{n_members:,} x {one:,} bytes of params and optimizer state; train fewer members at a time")


def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


def _member_net(net: Sequential, dropout: bool) -> Sequential:
    if not dropout:
        return net
    if not any(isinstance(layer, Dropout) for layer in net.layers):
        raise ValueError("a member sets dropout but the network has no Dropout layer; add one (e.g. mlp(..., dropout=0.1)).")
    return Sequential([MemberDropout() if type(layer) is Dropout else layer for layer in net.layers])


def fit_population(
    net: Sequential,
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    members: int | Sequence[dict],
    loss: str | Callable,
    optimizer: str = "adam",
    epochs: int,
    batch_size: int | None,
    key: jax.Array,
    validation_data: tuple | None = None,
    metrics: Sequence[str] | None = None,
    callbacks: Sequence[Any] = (),
    class_weight: dict | Sequence[float] | None = None,
    verbose: int = 1,
    skip_nonfinite: bool = False,
    compute_dtype: Any = None,
    mesh: Any = None,
    **optimizer_options: Any,
) -> PopulationResult:
    """Train a population of networks in one compiled fit: one program per epoch for every member.

    Member ``i`` starts from ``net.init(jax.random.key(seed_i))`` and trains as
    ``jdense.fit(net_i, ..., optimizer=jdense.optimizer(net_i, optimizer, learning_rate_i), key=key)``
    would, where ``net_i`` carries the member's ``lambda_`` (every Dense layer) and dropout
    rate (every Dropout layer). Every member sees the batch order drawn from ``key``.

    Args:
      net: the network every member has.
      x, y: training data, shared by the members (never copied per member).
      members: N (seeds 0..N-1, the same hyperparameters) or a list of dicts with keys
        among ``seed`` (default: the index), ``learning_rate`` (default 1e-3; 0 keeps the member as it starts), ``lambda_``
        (default: the net's) and ``dropout`` (default: the net's), e.g. from :func:`grid`.
      loss, epochs, batch_size, key, validation_data, metrics, class_weight, verbose,
        skip_nonfinite, compute_dtype, mesh: as in :func:`jdense.fit` (with a mesh,
        members are replicated and batch rows sharded).
      optimizer: a base name as in :func:`jdense.optimizer` (``"adam"``, ``"sgd"``, ...).
      callbacks: :class:`jdense.EarlyStopping` acts per member: a stopped member's params
        and states stay frozen and its later history entries are NaN; ``restore_best``
        per member. Other callbacks get ``on_epoch_end(epoch, logs, params, ...)`` once
        per epoch with ``logs`` of per-member arrays and the stacked params.
      **optimizer_options: keyword options of :func:`jdense.optimizer`, e.g. ``clip_norm=1.0``.

    Returns:
      A :class:`PopulationResult`.

    Raises:
      ValueError, TypeError: for bad members (naming the member) or arguments, before compiling.

    Example:
      >>> pop = jdense.fit_population(net, x, y, members=5, loss="cross_entropy", epochs=10,
      ...                             batch_size=32, key=jax.random.key(0))
      >>> pop.history["accuracy"][-1]     # the last epoch's accuracy of each of the 5 members
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a jdense.Sequential, got {type(net).__name__}.")
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a base name such as 'adam' (members set the learning rate), got {optimizer!r}.")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
    epochs = int(epochs)
    members = _members(members)
    n_members = len(members)
    per_dropout = any("dropout" in m for m in members)
    member_net = _member_net(net, per_dropout)
    tx = optim.optimizer(net, optimizer, 1e-3, **optimizer_options)  # the members' rates are values in its state
    if "learning_rate" not in tx.init.hyperparams:
        raise ValueError("fit_population needs a learning rate that is a value, not a schedule.")

    per_sample = losses_lib.per_sample(loss)
    metric_objs = train._metrics(loss, metrics)
    seed = train._key_data(key)
    x, y = train._as_data(x, y, "fit_population")
    n = x.shape[0]
    batch = train._batch_size(batch_size, n)
    parallel.check_batch(mesh, batch, "fit_population")
    one_state = member_net.init_state()
    one_params = jax.eval_shape(net.init, jax.random.key(0))
    _checks.trainable("fit_population", net, one_params)
    out_shape = train._output_shape(net, one_params, net.init_state(), x, "fit_population")
    train._check_labels(loss, y, out_shape, "fit_population")
    metrics_lib.check_width(metric_objs, train._width(out_shape), "fit_population")
    cw = train._class_weights(class_weight, out_shape)
    checked_val = train._validation(validation_data, loss, out_shape, "fit_population(validation_data)")
    callbacks = train._callbacks(callbacks, metric_objs, validation_data is not None, skip_nonfinite)
    _fits_device(n_members, one_params, tx)
    stoppers = [cb for cb in callbacks if isinstance(cb, EarlyStopping)]
    others = [cb for cb in callbacks if not isinstance(cb, EarlyStopping)]

    # The members' starting points: params, a template of the optimizer state, the network state.
    # net.init's one compiled program, once per member (a vmapped init compiles many times slower).
    params = _stack([net.init(jax.random.key(m["seed"])) for m in members])
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), params)
    one_template, hyper = programs.initial_opt_state(tx, shapes)
    values = {k: [] for k in hyper}
    for m in members:
        v = {**tx.init.hyperparams, "learning_rate": m.get("learning_rate", 1e-3)}
        if "lambda_" in m and "lambda_" in v:
            v["lambda_"] = [m["lambda_"]] * len(v["lambda_"])
        for k in hyper:
            values[k].append(v[k])
    opt_state = optim.with_values(jax.tree.map(lambda a: np.broadcast_to(a, (n_members, *a.shape)), one_template),
                                  optim.host_values(values))
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
    state = _stack(states)

    run_epoch = _training(train._training_spec(
        member_net, per_sample, metric_objs, tx, hyperparams=hyper, compute_dtype=compute_dtype, class_weight=cw,
        mesh=mesh, skip_nonfinite=skip_nonfinite, validation=validation_data is not None))
    cw_dev = None if cw is None else jax.device_put(cw)
    params, opt_state, state, cw_dev = parallel.place((params, opt_state, state, cw_dev), mesh)
    x_dev, y_dev = parallel.device_data((x, y), mesh, "fit_population")
    val = train._device_validation(checked_val, batch, mesh, "fit_population(validation_data)")
    width = train._width(out_shape)
    key_dev = parallel.place(key, mesh)

    member_stoppers = [[copy.deepcopy(cb) for _ in members] for cb in stoppers]
    for cbs in member_stoppers:
        for cb in cbs:
            cb.restore_best = False
            cb.on_train_begin()
    restore = any(cb.restore_best for cb in stoppers)
    best_params = best_state = None
    bar = ProgressBar(epochs, verbose) if verbose else None
    for cb in [*others, *([bar] if bar else [])]:
        getattr(cb, "on_train_begin", lambda: None)()

    active = np.ones(n_members, bool)
    ran = np.zeros(n_members, np.int64)
    history: dict[str, list[np.ndarray]] = {}
    fresh = True
    for epoch in range(epochs):
        order = np.random.default_rng([*seed, epoch]).permutation(n) if batch < n else np.arange(n)
        idx, mask = parallel.place(train._padded_indices(order, batch), mesh)
        params, opt_state, state, sums, val_sums = run_epoch(
            active, params, opt_state, state, x_dev, y_dev, idx, mask, key_dev, np.uint32(epoch), cw_dev,
            np.bool_(fresh), val)
        fresh = False
        rows = [train._logs(s, metric_objs, width, skip_nonfinite) for s in np.asarray(sums)]
        if val is not None:
            for r, s in zip(rows, np.asarray(val_sums)):
                r.update(train._logs(s, metric_objs, width, prefix="val_"))
        logs = {k: np.array([r[k] if a else math.nan for r, a in zip(rows, active)]) for k in rows[0]}
        bad = active & ~np.isfinite(logs["loss"])
        if bad.any() and not skip_nonfinite:
            raise FloatingPointError(
                f"fit_population: the training loss of members {np.flatnonzero(bad).tolist()} became non-finite in "
                f"epoch {epoch + 1}; lower their learning rates, pass clip_norm=, or skip_nonfinite=True."
            )
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        ran[active] = epoch + 1
        stopped = np.zeros(n_members, bool)
        improved = np.zeros(n_members, bool)
        for cb, cbs in zip(stoppers, member_stoppers):
            for i in np.flatnonzero(active):
                stopped[i] |= bool(cbs[i].on_epoch_end(epoch, {k: float(v[i]) for k, v in logs.items()}, None))
                improved[i] |= cb.restore_best and cbs[i].best_epoch == epoch
        if restore and improved.any():
            best_params, best_state = (params, state) if best_params is None else (best_params, best_state)
            best_params, best_state = _select(improved, (params, state), (best_params, best_state))
        stop_all = False
        for cb in others:
            hook = getattr(cb, "on_epoch_end", None)
            if hook is not None and hook(epoch, logs, params, opt_state=opt_state, state=state):
                stop_all = True
        if bar is not None:
            bar.on_epoch_end(epoch, _summary(logs), None)
        active &= ~stopped
        if stop_all or not active.any():
            break
    if bar is not None:
        bar.on_train_end(None, None)
    for cb in others:
        getattr(cb, "on_train_end", lambda *a: None)(params, state)
    if best_params is not None:  # members that improved at least once get their best epoch back
        params, state = best_params, best_state
    hist = {k: np.stack(v) for k, v in history.items()}
    return PopulationResult(params, opt_state, state, hist, ran, members)


def _summary(logs: dict[str, np.ndarray]) -> dict[str, float]:
    """The population's best and median loss (and val_loss) for the progress bar."""
    out = {}
    for k in ("loss", "val_loss"):
        if k in logs and not np.isnan(logs[k]).all():
            out[f"{k} best"], out[f"{k} median"] = float(np.nanmin(logs[k])), float(np.nanmedian(logs[k]))
    return out


# -- ensembles ------------------------------------------------------------------------------
def ensemble_predict(net: Sequential, params, x: jax.typing.ArrayLike, *, loss: str | Callable = "cross_entropy",
                     output: str | None = None, state: Any = None, batch_size: int | None = None) -> np.ndarray:
    """The ensemble's prediction: the mean of the members' probabilities, or of their outputs.

    Args:
      loss: the members' loss. For ``"cross_entropy"`` the members' softmax probabilities
        are averaged, for ``"binary_cross_entropy"`` their sigmoid probabilities (as
        :func:`jdense.losses.link`); for a regression loss (or a callable) their raw outputs.
      output: ``None`` (default: probabilities for a classification loss, the mean output
        otherwise), ``"probabilities"``, ``"labels"`` (of the averaged probabilities: argmax,
        or ``p > 0.5``) or ``"logits"`` (the mean of the raw outputs), as :func:`jdense.predict`.

    Raises:
      ValueError: an unknown loss (with the closest name) or output, probabilities or labels
        for a regression loss, or params and state that are not one population's.

    Example:
      >>> probs = jdense.ensemble_predict(net, pop.params, x_test)      # (n, classes)
      >>> labels = jdense.ensemble_predict(net, pop.params, x_test, output="labels")
    """
    name = losses_lib.name_of(loss)  # refuses a typo such as "crossentropy" instead of averaging raw outputs
    classification = name in losses_lib.SOFTMAX | losses_lib.SIGMOID
    output = ("probabilities" if classification else "logits") if output is None else output
    losses_lib.link(loss, output, "ensemble_predict")  # checks output against the loss
    out = np.asarray(train.predict(net, params, x, state=state, batch_size=batch_size, population=True), np.float64)
    if output == "logits":
        return out.mean(axis=0)
    if name in losses_lib.SOFTMAX:
        out = np.exp(out - out.max(-1, keepdims=True))
        out = out / out.sum(-1, keepdims=True)
    else:
        out = 1.0 / (1.0 + np.exp(-out))
    p = out.mean(axis=0)
    if output == "probabilities":
        return p
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
    name = losses_lib.name_of(loss)
    if name in ("kl_divergence", "sigmoid_focal"):
        raise ValueError(f"ensemble_evaluate: loss={name!r} is not supported; evaluate the ensemble's probabilities with "
                         "loss='cross_entropy' or 'binary_cross_entropy', or a regression loss.")
    x, y = train._as_data(x, y, "ensemble_evaluate")
    members_state = train._member_args(net, params, state, True, "ensemble_evaluate")
    out_shape = train._output_shape(net, train._member(params, True), train._member(members_state, True), x,
                                    "ensemble_evaluate")
    train._check_labels(loss, y, out_shape, "ensemble_evaluate")
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
