"""Compiled training: :func:`fit`, :func:`evaluate` and :func:`predict`.

The data set goes to the device once. Each epoch is one call of a jitted function that
runs every minibatch step in a ``jax.lax.scan``: each step gathers its rows by index
from the device-resident data, computes the loss and its gradient, applies the optax
update and adds to the metric sums. Params, optimizer state and network state are
donated to that call, so the update happens in place. The host only draws the epoch's
permutation (NumPy, seeded from the key: a sort-based ``jax.random.permutation`` costs
as much as an epoch of a small network on CPU) and reads the metrics between epochs,
where the callbacks run.

The last partial batch counts: it is padded with in-range indices whose weight is 0,
so every sample contributes exactly once per epoch and the padded batch's gradient is
the mean over its real samples. BatchNorm statistics also ignore the padding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdense import losses as losses_lib
from jdense import metrics as metrics_lib
from jdense import parallel
from jdense.callbacks import Callback, ProgressBar
from jdense.network import Sequential

Params = Any


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      params: the trained params.
      opt_state: the optimizer state (pass it back to ``fit`` to resume).
      state: the network's non-trainable state (BatchNorm running averages; ``{}`` if none).
      history: per-epoch lists, e.g. ``{"loss": [...], "accuracy": [...], "val_loss": [...]}``.
      epochs: the number of the last epoch that ran (counted from 1, so it includes
        ``initial_epoch``; fewer than asked when a callback stopped training).
    """

    params: Params
    opt_state: Any
    state: Any
    history: dict[str, list[float]]
    epochs: int


# -- checks at the boundary, before anything is compiled -------------------------------
def _as_data(x, y, what: str):
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{what}: x is empty (shape {x.shape}); pass at least one sample.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{what}: x must be numeric, got dtype {x.dtype}.")
    if y is None:
        return x, None
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{what}: x has {x.shape[0]} samples but y has {y.shape[0] if y.ndim else 'no'} "
            "(their first axes must be equal)."
        )
    return x, y


def _output_shape(net: Sequential, params, state, x: np.ndarray) -> tuple:
    spec = jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32)
    return jax.eval_shape(lambda p, s, x: net.apply_with_state(p, s, x)[0], params, state, spec).shape


def _check_labels(loss, y: np.ndarray, out_shape: tuple, what: str):
    if loss not in losses_lib.CLASSIFICATION:
        return
    width = out_shape[-1] if len(out_shape) > 1 else 1
    if loss == "cross_entropy" and np.issubdtype(y.dtype, np.integer) and y.ndim == len(out_shape) - 1:
        bad = (y < 0) | (y >= width)
        if bad.any():
            raise ValueError(
                f"{what}: {int(bad.sum())} labels are outside 0..{width - 1} for a network with {width} outputs "
                f"(e.g. {y[bad].ravel()[0]}); widen the last layer or fix the labels."
            )
    if loss == "binary_cross_entropy" and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what}: binary_cross_entropy needs labels 0 or 1, got values such as {y[~np.isin(y, (0, 1))][0]}.")


def _class_weights(class_weight, out_shape) -> np.ndarray | None:
    if class_weight is None:
        return None
    width = max(out_shape[-1] if len(out_shape) > 1 else 1, 2)
    if isinstance(class_weight, dict):
        cw = np.ones(width, np.float32)
        for k, v in class_weight.items():
            if not 0 <= int(k) < width:
                raise ValueError(f"class_weight has class {k!r} but the network predicts classes 0..{width - 1}.")
            cw[int(k)] = v
    else:
        cw = np.asarray(class_weight, np.float32)
        if cw.shape != (width,):
            raise ValueError(f"class_weight must have one weight per class, shape ({width},), got {cw.shape}.")
    if not (np.isfinite(cw).all() and (cw >= 0).all()):
        raise ValueError("class_weight must be finite and >= 0.")
    return cw


def _batch_size(batch_size, n: int) -> int:
    if batch_size is None:
        return n  # batch gradient descent: the whole set each step
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None (the whole set), got {batch_size!r}.")
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} is larger than the data set ({n} samples); pass batch_size<={n}, "
            "or batch_size=None for batch gradient descent."
        )
    return int(batch_size)


def _default_metrics(loss) -> tuple[str, ...]:
    if loss in losses_lib.CLASSIFICATION:
        return ("accuracy",)
    if loss in ("mse", "mae"):
        return ("mse", "mae")
    return ()


def _key_data(key) -> list[int]:
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a JAX PRNG key such as jax.random.key(0), got {key!r}.")
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.asarray(data).ravel().astype(np.uint32).tolist()


def _padded_indices(order: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Split an index order into (steps, batch) indices and 0/1 weights; pad with index 0, weight 0."""
    n = order.shape[0]
    steps = math.ceil(n / batch)
    idx = np.zeros(steps * batch, np.int32)
    idx[:n] = order
    mask = np.zeros(steps * batch, np.float32)
    mask[:n] = 1.0
    return idx.reshape(steps, batch), mask.reshape(steps, batch)


# -- the compiled pieces ----------------------------------------------------------------
def _cast(tree, dtype):
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _batch_sums(outputs, y, weights, loss_values, metric_fns):
    sums = {"loss": jnp.sum(weights * loss_values.astype(jnp.float32))}
    for name, fn in metric_fns.items():
        sums[name] = jnp.sum(weights * fn(outputs, y).astype(jnp.float32))
    sums["count"] = jnp.sum(weights)
    return sums


# One gather fetches the rows of several steps, about this many bytes (see _make_epoch).
_CHUNK_BYTES = 1 << 20
_EPOCH_ZERO = np.uint32(0)


def _chunk_steps(steps: int, batch: int, x, y) -> int:
    """Steps whose rows one gather fetches: about _CHUNK_BYTES, in [1, steps], equal chunks.

    1 (a gather per step, as before) when fewer than 4 batches fit: such batches are large
    enough that the step, not the hand-off, dominates (measured neutral for 784-128-64-10/b128).
    """
    row_bytes = math.prod(x.shape[1:]) * x.dtype.itemsize + math.prod(y.shape[1:]) * y.dtype.itemsize
    most = min(steps, _CHUNK_BYTES // max(1, batch * row_bytes))
    if most < 4:
        return 1
    return -(-steps // -(-steps // most))  # ceil(steps / number of chunks): the last chunk pads few steps


def _zero_sums(metric_fns) -> dict[str, jax.Array]:
    return {k: jnp.zeros((), jnp.float32) for k in ("loss", *metric_fns, "count")}


def _weights(mask, class_weight, outputs, targets):
    """Per-sample weights: the padding mask times the class weight of each sample's label."""
    return mask if class_weight is None else mask * class_weight[losses_lib.labels_of(outputs, targets)]


def _stack_sums(sums):
    """The epoch's sums as one vector (sorted keys), read by the host in one transfer."""
    return jnp.stack([sums[k] for k in sorted(sums)])


def _make_epoch(net, per_sample_loss, tx, metric_fns, compute_dtype, class_weight, use_key, mesh=None,
                skip_nonfinite=False):
    """The jitted epoch: (params, opt_state, state, x, y, idx, mask, key, epoch) -> (params, opt_state, state, sums).

    ``sums`` is a vector, see :func:`_stack_sums`. The rows are gathered by chunks of
    steps (about ``_CHUNK_BYTES``) rather than step by step: on a multi-core CPU, XLA
    splits a gather from an array larger than ~0.5 MB over its threads, and that
    cross-thread hand-off, once per step, costs as much as a small network's whole step
    (about 2x slower epochs for 64-32-10 / batch 32). A chunk's gather still splits, but
    once per chunk. Results are bitwise those of a per-step gather.
    """

    def step(carry, batch):
        params, opt_state, state, sums = carry
        xb, yb, mask, key = batch
        xb, yb, mask = parallel.shard_batch((xb, yb, mask), mesh)  # rows split over the mesh; no-op without

        def loss_fn(p):
            out, new_state = net.apply_with_state(
                _cast(p, compute_dtype), state, _cast(xb, compute_dtype), train=True,
                key=key if use_key else None, mask=mask,
            )
            out = out.astype(jnp.float32)
            values = per_sample_loss(out, yb)
            if values.shape != (xb.shape[0],):
                raise ValueError(f"a loss callable must return per-sample losses of shape ({xb.shape[0]},), got {values.shape}.")
            w = _weights(mask, class_weight, out, yb)
            return losses_lib.weighted_mean(values, w), (out, new_state, values, w)

        grads, (out, new_state, values, w) = jax.grad(loss_fn, has_aux=True)(params)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        batch_sums = _batch_sums(out, yb, w, values, metric_fns)
        if skip_nonfinite:  # keep params, optimizer and BatchNorm state of a step whose update is not finite
            ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves((updates, new_params))]))
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
            new_params, new_opt_state, new_state = keep((new_params, new_opt_state, new_state), (params, opt_state, state))
            batch_sums = jax.tree.map(lambda v: jnp.where(ok, v, 0.0), batch_sums)
        params, opt_state = new_params, new_opt_state
        sums = jax.tree.map(jnp.add, sums, batch_sums)
        return (params, opt_state, new_state, sums)

    def gather(a, i):
        return a.at[i].get(mode="promise_in_bounds")

    def epoch(params, opt_state, state, x, y, idx, mask, key, epoch_number=_EPOCH_ZERO):
        steps, batch = idx.shape
        # The epoch's key is folded in here: eagerly on the host it costs ~0.3-0.6 ms an epoch.
        # Per-step keys only for a network that draws random numbers (Dropout).
        keys = jax.random.split(jax.random.fold_in(key, epoch_number), steps) if use_key else jnp.zeros((steps,), jnp.uint32)
        carry = (params, opt_state, state, _zero_sums(metric_fns))
        k = 1 if mesh is not None else _chunk_steps(steps, batch, x, y)
        if k == 1:
            def one(carry, b):
                i, m, kk = b
                return step(carry, (gather(x, i), gather(y, i), m, kk)), None

            carry, _ = jax.lax.scan(one, carry, (idx, mask, keys))
        else:
            chunks = -(-steps // k)
            pad = chunks * k - steps  # the last chunk runs only its real steps (no update for the padding)
            if pad:
                idx = jnp.concatenate([idx, jnp.zeros((pad, batch), idx.dtype)])
                mask = jnp.concatenate([mask, jnp.zeros((pad, batch), mask.dtype)])
                keys = jnp.concatenate([keys, keys[:pad]])

            def chunk(carry, c):
                i, m, kk, first = c
                xs = gather(x, i.reshape(-1)).reshape(k, batch, *x.shape[1:])
                ys = gather(y, i.reshape(-1)).reshape(k, batch, *y.shape[1:])
                run = lambda j, carry: step(carry, (xs[j], ys[j], m[j], kk[j]))  # noqa: E731
                return jax.lax.fori_loop(0, jnp.minimum(k, steps - first) if pad else k, run, carry), None

            firsts = jnp.arange(chunks, dtype=jnp.int32) * k
            carry, _ = jax.lax.scan(chunk, carry, (idx.reshape(chunks, k, batch), mask.reshape(chunks, k, batch),
                                                   keys.reshape(chunks, k, *keys.shape[1:]), firsts))
        params, opt_state, state, sums = carry
        return params, opt_state, state, _stack_sums(sums)

    return jax.jit(epoch, donate_argnums=(0, 1, 2))


def _make_eval(net, per_sample_loss, metric_fns, compute_dtype, class_weight, mesh=None):
    """Jitted (params, state, x, y, idx, mask) -> sums over batches (see :func:`_stack_sums`), in inference mode."""

    def eval_fn(params, state, x, y, idx, mask):
        def body(sums, batch):
            i, m = batch
            xb, yb = x.at[i].get(mode="promise_in_bounds"), y.at[i].get(mode="promise_in_bounds")
            xb, yb, m = parallel.shard_batch((xb, yb, m), mesh)
            out = net.apply_with_state(_cast(params, compute_dtype), state, _cast(xb, compute_dtype))[0]
            out = out.astype(jnp.float32)
            w = _weights(m, class_weight, out, yb)
            return jax.tree.map(jnp.add, sums, _batch_sums(out, yb, w, per_sample_loss(out, yb), metric_fns)), None

        return _stack_sums(jax.lax.scan(body, _zero_sums(metric_fns), (idx, mask))[0])

    return jax.jit(eval_fn)


def _logs(sums, metric_names, prefix="") -> dict[str, float]:
    """Per-sample means from a :func:`_stack_sums` vector, read by the host in one transfer."""
    sums = dict(zip(sorted(("loss", *metric_names, "count")), np.asarray(sums).tolist()))
    count = max(float(sums.pop("count")), np.finfo(np.float32).tiny)
    return {prefix + k: float(v) / count for k, v in sums.items()}


# -- public API -------------------------------------------------------------------------
def fit(
    net: Sequential,
    params: Params,
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    loss: str | Callable,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int | None,
    key: jax.Array,
    validation_data: tuple | None = None,
    metrics: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    class_weight: dict | Sequence[float] | None = None,
    verbose: int = 1,
    opt_state: Any = None,
    state: Any = None,
    initial_epoch: int = 0,
    skip_nonfinite: bool = False,
    compute_dtype: Any = None,
    mesh: Any = None,
) -> FitResult:
    """Train ``net`` from ``params`` on ``(x, y)``: one compiled ``lax.scan`` per epoch.

    The three gradient-descent variants are batch sizes: ``batch_size=None`` is batch
    gradient descent (the whole set each step), ``1`` is stochastic, anything else
    mini-batch. The inputs are never mutated; the same key and data give bitwise the same
    params on CPU.

    Args:
      net: the network.
      params: initial params (``net.init(key)``), or a checkpoint's.
      x, y: training inputs and targets (NumPy or JAX arrays, first axis = samples).
      loss: a name from :mod:`jdense.losses` (``"cross_entropy"``, ``"mse"``...) or a callable
        ``(outputs, targets) -> per-sample losses of shape (batch,)``, like ``optax.losses``.
      optimizer: an optax transformation, typically ``jdense.optimizer(net, ...)``.
      epochs: the epoch to stop after (counted from 0, so with ``initial_epoch`` it is a total).
      batch_size: samples per step, or ``None`` for the whole set.
      key: PRNG key for the per-epoch shuffle and dropout.
      validation_data: optional ``(x_val, y_val)``; adds ``val_*`` entries to the logs.
      metrics: names from :mod:`jdense.metrics`; by default accuracy for classification,
        mse and mae for regression. The loss is always logged.
      callbacks: e.g. ``[jdense.EarlyStopping(patience=5), jdense.BestCheckpoint(save)]``.
      class_weight: ``{class: weight}`` or a sequence, to weigh rare classes up.
      verbose: 1 progress bar and a line per epoch, 2 lines only, 0 silent.
      opt_state: to resume: the optimizer state (default ``optimizer.init(params)``).
      state: to resume: the network state (default ``net.init_state()``).
      initial_epoch: to resume: the epoch to start from (the shuffle of epoch ``e`` depends
        only on ``key`` and ``e``, so a resumed run repeats an uninterrupted one exactly).
      skip_nonfinite: skip every step whose update is not finite (params, optimizer and
        BatchNorm state stay as they were, and the batch is left out of the logged sums)
        instead of stopping with an error when the loss is not finite.
      compute_dtype: mixed precision, e.g. ``jnp.bfloat16``: the forward and backward pass
        run in it while params, optimizer state and the loss stay float32.
      mesh: data-parallel training on several devices or processes: a mesh from
        ``jdense.parallel.data_mesh()`` (all devices). Each batch is split by rows over its
        ``"data"`` axis (``batch_size`` must be a multiple of its size); params and
        optimizer state are replicated (see :mod:`jdense.parallel`). ``None`` (default):
        one device. Every process of a multi-process run calls ``fit`` with the same data.

    Returns:
      A :class:`FitResult` with ``params``, ``opt_state``, ``state``, ``history``, ``epochs``.

    Raises:
      ValueError, TypeError: for inconsistent data or arguments, before compiling.
      FloatingPointError: when the training loss is not finite (naming the epoch).

    Example:
      >>> net = jdense.mlp([64, 32, 10])
      >>> result = jdense.fit(net, net.init(jax.random.key(0)), x, y, loss="cross_entropy",
      ...                     optimizer=jdense.optimizer(net), epochs=10, batch_size=32,
      ...                     key=jax.random.key(1))
      >>> result.history["accuracy"][-1]
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a jdense.Sequential, got {type(net).__name__}.")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation (e.g. jdense.optimizer(net)), got {optimizer!r}.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
    if not 0 <= initial_epoch < epochs:
        raise ValueError(f"initial_epoch must be in [0, epochs={epochs}), got {initial_epoch!r}.")
    per_sample = losses_lib.per_sample(loss)
    metric_names = tuple(_default_metrics(loss) if metrics is None else metrics)
    metric_fns = {name: metrics_lib.get_metric(name) for name in metric_names}
    seed = _key_data(key)
    x, y = _as_data(x, y, "fit")
    n = x.shape[0]
    batch = _batch_size(batch_size, n)
    parallel.check_batch(mesh, batch, "fit")
    state = net.init_state() if state is None else state
    out_shape = _output_shape(net, params, state, x)
    _check_labels(loss, y, out_shape, "fit")
    cw = _class_weights(class_weight, out_shape)
    if validation_data is not None:
        if not (isinstance(validation_data, tuple | list) and len(validation_data) == 2):
            raise TypeError("validation_data must be a pair (x_val, y_val).")
        xv, yv = _as_data(*validation_data, "fit(validation_data)")
        _check_labels(loss, yv, out_shape, "fit(validation_data)")
    callbacks = list(callbacks)
    for cb in callbacks:
        if not any(hasattr(cb, m) for m in ("on_train_begin", "on_epoch_end", "on_train_end")):
            raise TypeError(f"{cb!r} is not a callback: give it on_epoch_end(epoch, logs, params, *, opt_state, state).")
    if verbose:
        callbacks.append(ProgressBar(epochs, verbose, initial_epoch))

    # Never touch the caller's buffers: donation below works on private copies.
    params = jax.tree.map(jnp.array, params)
    opt_state = optimizer.init(params) if opt_state is None else jax.tree.map(jnp.array, opt_state)
    state = jax.tree.map(jnp.array, state)
    cw_dev = None if cw is None else jnp.asarray(cw)
    params, opt_state, state, cw_dev = parallel.place((params, opt_state, state, cw_dev), mesh)
    x_dev, y_dev = parallel.device_data((x, y), mesh, "fit")
    run_epoch = _make_epoch(net, per_sample, optimizer, metric_fns, compute_dtype, cw_dev, net.needs_key, mesh,
                            skip_nonfinite)
    if validation_data is not None:
        evaluate_val = _make_eval(net, per_sample, metric_fns, compute_dtype, cw_dev, mesh)
        xv_dev, yv_dev = parallel.device_data((xv, yv), mesh, "fit(validation_data)")
        v_idx, v_mask = parallel.place(_padded_indices(np.arange(xv.shape[0]), min(max(batch, 1024), xv.shape[0])), mesh)

    key_dev = parallel.place(key, mesh)
    history: dict[str, list[float]] = {}
    for cb in callbacks:
        getattr(cb, "on_train_begin", lambda: None)()
    epoch = initial_epoch
    for epoch in range(initial_epoch, epochs):
        order = np.random.default_rng([*seed, epoch]).permutation(n) if batch < n else np.arange(n)
        idx, mask = parallel.place(_padded_indices(order, batch), mesh)
        params, opt_state, state, sums = run_epoch(params, opt_state, state, x_dev, y_dev, idx, mask, key_dev, np.uint32(epoch))
        logs = _logs(sums, metric_fns)
        if validation_data is not None:
            logs.update(_logs(evaluate_val(params, state, xv_dev, yv_dev, v_idx, v_mask), metric_fns, "val_"))
        if not math.isfinite(logs["loss"]) and not skip_nonfinite:
            raise FloatingPointError(
                f"fit: the training loss became {logs['loss']} in epoch {epoch + 1}; lower the learning rate, "
                "add clip_norm= to jdense.optimizer, check the data for NaN, or pass skip_nonfinite=True."
            )
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        stop = False
        for cb in callbacks:
            hook = getattr(cb, "on_epoch_end", None)
            if hook is not None and hook(epoch, logs, params, opt_state=opt_state, state=state):
                stop = True
        if stop:
            break
    for cb in callbacks:
        hook = getattr(cb, "on_train_end", None)
        restored = hook(params, state) if hook is not None else None
        if restored is not None:
            params, state = restored
    return FitResult(params, opt_state, state, history, epoch + 1)


def _eval_batches(n: int, batch_size: int | None):
    batch = n if batch_size is None else _batch_size(batch_size, n)
    return _padded_indices(np.arange(n), batch)


def evaluate(
    net: Sequential,
    params: Params,
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    loss: str | Callable,
    metrics: Sequence[str] | None = None,
    batch_size: int | None = None,
    state: Any = None,
    class_weight: Any = None,
    mesh: Any = None,
) -> dict[str, float]:
    """Loss and metrics of ``net`` on ``(x, y)`` in inference mode, batched and jitted.

    With ``mesh=`` (as in :func:`fit`) each batch is split over the mesh's devices when its
    size is a multiple of theirs.

    Returns:
      ``{"loss": ..., "accuracy": ...}`` (the metrics default as in :func:`fit`).

    Example:
      >>> jdense.evaluate(net, result.params, x_test, y_test, loss="cross_entropy")
      {'loss': 0.09, 'accuracy': 0.97}
    """
    per_sample = losses_lib.per_sample(loss)
    metric_fns = {m: metrics_lib.get_metric(m) for m in (_default_metrics(loss) if metrics is None else metrics)}
    x, y = _as_data(x, y, "evaluate")
    state = net.init_state() if state is None else state
    out_shape = _output_shape(net, params, state, x)
    _check_labels(loss, y, out_shape, "evaluate")
    cw = _class_weights(class_weight, out_shape)
    fn = _make_eval(net, per_sample, metric_fns, None, parallel.place(None if cw is None else jnp.asarray(cw), mesh), mesh)
    idx, mask = _eval_batches(x.shape[0], batch_size)
    params, state, idx, mask = parallel.place((params, state, idx, mask), mesh)
    return _logs(fn(params, state, *parallel.device_data((x, y), mesh, "evaluate"), idx, mask), metric_fns)


@partial(jax.jit, static_argnums=(0, 5))
def _predict_batches(net, params, state, x, idx, mesh=None):
    def body(_, i):
        return None, net.apply_with_state(params, state, parallel.shard_batch(x.at[i].get(mode="promise_in_bounds"), mesh))[0]

    return parallel.replicate_output(jax.lax.scan(body, None, idx)[1], mesh)


def predict(
    net: Sequential, params: Params, x: jax.typing.ArrayLike, *, batch_size: int | None = None, state: Any = None,
    mesh: Any = None,
) -> jax.Array:
    """The network's outputs for ``x`` in inference mode, batched and jitted.

    With ``mesh=`` (as in :func:`fit`) each batch is split over the mesh's devices when its
    size is a multiple of theirs; the outputs come back replicated.

    Example:
      >>> logits = jdense.predict(net, result.params, x_test, batch_size=1024)
      >>> labels = logits.argmax(-1)
    """
    x, _ = _as_data(x, None, "predict")
    state = net.init_state() if state is None else state
    idx, _ = _eval_batches(x.shape[0], batch_size)
    params, state, idx = parallel.place((params, state, idx), mesh)
    out = _predict_batches(net, params, state, *parallel.device_data((x,), mesh, "predict"), idx, mesh)
    return out.reshape(-1, *out.shape[2:])[: x.shape[0]]
