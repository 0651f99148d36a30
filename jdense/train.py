"""Training and inference: :func:`fit`, :func:`evaluate` and :func:`predict`.

The data set goes to the device once. Each epoch is one call of a compiled program
(:mod:`jdense.programs`, cached across calls) that runs every minibatch step in a
``jax.lax.scan``. Params, optimizer state and network state are donated to that call,
so the update happens in place. The host only draws the epoch's permutation (NumPy,
seeded from the key: a sort-based ``jax.random.permutation`` costs as much as an epoch
of a small network on CPU) and reads the metrics between epochs, where the callbacks
run.

The last partial batch counts: it is padded with in-range indices whose weight is 0,
so every sample contributes exactly once per epoch and the padded batch's gradient is
the mean over its real samples. BatchNorm statistics also ignore the padding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdense import _checks, optim, parallel, programs
from jdense import losses as losses_lib
from jdense import metrics as metrics_lib
from jdense.callbacks import Callback, ProgressBar
from jdense.data import stream as stream_lib
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
def _array(a, name: str, what: str) -> np.ndarray:
    try:
        a = np.asarray(a)
    except (ValueError, TypeError) as err:  # a ragged list, objects...
        raise ValueError(f"{what}: {name} must be a rectangular numeric array (rows of equal length); {err}") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"{what}: {name} must be numeric, got dtype {a.dtype}; convert it, e.g. with .astype(np.float32).")
    return a


def _check_finite(a: np.ndarray, name: str, what: str) -> None:
    """One pass, no temporary copy: a float64 sum is finite exactly when every float32 entry is."""
    if not np.issubdtype(a.dtype, np.floating) or np.isfinite(np.sum(a, dtype=np.float64)):
        return
    bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{what}: {name} has {int(bad.sum())} of {a.shape[0]} rows with NaN or infinite values (the first is row "
            f"{int(np.argmax(bad))}); drop or impute them before training."
        )


def _as_data(x, y, what: str, finite: bool = True):
    """NumPy views of ``x, y`` (no copy), checked: numeric, same length, finite (unless ``finite=False``)."""
    x = _array(x, "x", what)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{what}: x is empty (shape {x.shape}); pass at least one sample.")
    if finite:
        _check_finite(x, "x", what)
    if y is not None:
        y = _array(y, "y", what)
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"{what}: x has {x.shape[0]} samples but y has {y.shape[0] if y.ndim else 'no'} "
                "(their first axes must be equal)."
            )
        if finite:
            _check_finite(y, "y", what)
    return x, y


def _sample_weights(x: np.ndarray, sample_weight, what: str) -> np.ndarray:
    """Validated ``(n,)`` float32 weights (ones when ``sample_weight`` is None)."""
    if sample_weight is None:
        return np.ones(x.shape[0], np.float32)
    w = _array(sample_weight, "sample_weight", what).astype(np.float32)
    if w.shape != (x.shape[0],):
        raise ValueError(f"{what}: sample_weight must have one weight per sample, shape ({x.shape[0]},), got {w.shape}.")
    if not (np.isfinite(w).all() and (w >= 0).all()) or not w.any():
        raise ValueError(f"{what}: sample_weight must be finite, >= 0 and not all 0.")
    return w


def _output_shape(net: Sequential, params, state, x: np.ndarray, what: str = "fit") -> tuple:
    net.check_input(x.shape, what)  # names the layer and the caller's shape, not a traced slice
    width = net.output_width
    if width is not None and x.ndim == 2:  # a network ending in Dense: no tracing needed
        return (1, width)
    spec = jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32)
    return jax.eval_shape(lambda p, s, x: net.apply_with_state(p, s, x)[0], params, state, spec).shape


def _check_labels(loss, y: np.ndarray, out_shape: tuple, what: str):
    loss = losses_lib.name_of(loss)
    if loss not in losses_lib.CLASSIFICATION:
        return
    width = out_shape[-1] if len(out_shape) > 1 else 1
    if loss == "cross_entropy" and y.ndim == len(out_shape) - 1 and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{what}: cross_entropy takes integer class labels of shape {y.shape} or one-hot rows of shape "
            f"{(*y.shape, width)}, got {y.dtype} labels (e.g. {y.ravel()[0]!r}); pass y.astype(np.int32)."
        )
    if loss == "cross_entropy" and np.issubdtype(y.dtype, np.integer) and y.ndim == len(out_shape) - 1:
        bad = (y < 0) | (y >= width)
        if bad.any():
            raise ValueError(
                f"{what}: {int(bad.sum())} labels are outside 0..{width - 1} for a network with {width} outputs "
                f"(e.g. {y[bad].ravel()[0]}); widen the last layer or fix the labels."
            )
    if loss == "binary_cross_entropy" and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what}: binary_cross_entropy needs labels 0 or 1, got values such as {y[~np.isin(y, (0, 1))][0]}.")


def _validation(validation_data, loss, out_shape, what: str):
    """Checked ``(x_val, y_val, weights)`` from a pair or triple, or None."""
    if validation_data is None:
        return None
    if not (isinstance(validation_data, tuple | list) and len(validation_data) in (2, 3)):
        raise TypeError("validation_data must be a pair (x_val, y_val) or a triple (x_val, y_val, sample_weight_val).")
    xv, yv = _as_data(validation_data[0], validation_data[1], what)
    _check_labels(loss, yv, out_shape, what)
    return xv, yv, _sample_weights(xv, validation_data[2] if len(validation_data) == 3 else None, what)


def _device_validation(checked, batch: int, mesh, what: str):
    """``(x, y, idx, weights)`` of the validation data on the device(s), as the epoch program takes them."""
    if checked is None:
        return None
    xv, yv, swv = checked
    idx, mask = _padded_indices(np.arange(xv.shape[0]), min(max(batch, 1024), xv.shape[0]))
    return (*parallel.device_data((xv, yv), mesh, what), *parallel.place((idx, mask * swv[idx]), mesh))


def _callbacks(callbacks, metrics, has_validation: bool, skip_nonfinite: bool = False) -> list:
    """The callbacks as a list (one alone is fine), each a callback whose monitor the logs will have.

    A callback with ``check_logs(keys)`` sees the keys every epoch's logs will have, before training.
    """
    callbacks = list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
    for cb in callbacks:
        if not any(hasattr(cb, m) for m in ("on_train_begin", "on_epoch_end", "on_train_end")):
            raise TypeError(f"{cb!r} is not a callback: give it on_epoch_end(epoch, logs, params, *, opt_state, state).")
        tracker = getattr(cb, "tracker", None)
        if tracker is not None and hasattr(tracker, "monitor"):
            _check_monitor(tracker.monitor, [m.name for m in metrics], has_validation)
    keys = ["loss", *(m.name for m in metrics)]
    keys += [f"val_{k}" for k in keys] if has_validation else []
    keys += ["skipped_steps"] if skip_nonfinite else []
    keys += ["learning_rate"] if any(callable(getattr(cb, "adjust_hyperparams", None)) for cb in callbacks) else []
    for cb in callbacks:
        if callable(getattr(cb, "check_logs", None)):
            cb.check_logs(sorted(keys))
    return callbacks


def _check_state(net: Sequential, state, what: str) -> None:
    """The network state must have the structure and shapes of ``net.init_state()``."""
    if not isinstance(state, dict):
        raise TypeError(f"{what}: state must be a dict like net.init_state() (or fit's result.state), got {state!r}.")
    state = {k: v for k, v in state.items() if k != programs.LOSS_SCALE}
    expected = net.init_state()
    same = jax.tree.structure(state) == jax.tree.structure(expected) and all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected)))
    if not same:
        shapes = lambda t: jax.tree.map(np.shape, t)  # noqa: E731
        raise ValueError(f"{what}: state does not fit this network: got {shapes(state)}, expected {shapes(expected)} "
                         "(pass net.init_state() or the result.state of a fit of this network).")


def _check_opt_state(optimizer, params, opt_state) -> None:
    """A given optimizer state must be the one ``optimizer.init(params)`` makes (structure and shapes)."""
    expected = jax.eval_shape(optimizer.init, params)
    same = jax.tree.structure(opt_state) == jax.tree.structure(expected) and all(
        np.shape(a) == b.shape for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(expected)))
    if not same:
        raise ValueError("fit: opt_state does not fit this optimizer and params (was it made by another optimizer or "
                         "network?); pass the opt_state of a fit with the same optimizer, or None to start afresh.")


def _check_monitor(monitor: str, metric_names, has_validation: bool) -> None:
    """A callback's monitor must be a key of the logs: check it before training, not after an epoch."""
    keys = {"loss", *metric_names}
    keys |= {f"val_{k}" for k in keys} if has_validation else set()
    if monitor not in keys:
        hint = " (pass validation_data= for 'val_*' metrics)" if monitor.startswith("val_") and not has_validation else ""
        raise ValueError(f"cannot monitor {monitor!r}: the logs will have {sorted(keys)}{hint}.")


def _class_weights(class_weight, out_shape) -> np.ndarray | None:
    if class_weight is None:
        return None
    width = max(out_shape[-1] if len(out_shape) > 1 else 1, 2)
    if isinstance(class_weight, dict):
        cw = np.ones(width, np.float32)
        for k, v in class_weight.items():
            if isinstance(k, bool) or not isinstance(k, int | np.integer):
                raise TypeError(f"class_weight keys must be class indices (ints), got {k!r}; e.g. {{0: 1.0, 1: 5.0}}.")
            if not 0 <= int(k) < width:
                raise ValueError(f"class_weight has class {k!r} but the network predicts classes 0..{width - 1}.")
            cw[int(k)] = _number_or_raise(v, f"class_weight[{k!r}]")
    else:
        cw = _array(class_weight, "class_weight", "fit").astype(np.float32)
        if cw.shape != (width,):
            raise ValueError(f"class_weight must have one weight per class, shape ({width},), got {cw.shape}.")
    if not (np.isfinite(cw).all() and (cw >= 0).all()):
        raise ValueError("class_weight must be finite and >= 0.")
    if not cw.any():
        raise ValueError("class_weight is 0 for every class: nothing would be learned; give some class a weight > 0.")
    return cw


def _number_or_raise(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    return float(value)


def _int(value, name: str, low: int) -> int:
    """A Python or NumPy integer >= low (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}; e.g. {name}={max(low, 1)}.")
    if value < low:
        raise ValueError(f"{name} must be a {'positive int' if low == 1 else f'int >= {low}'}, got {value}.")
    return int(value)


def _metrics(loss, metrics) -> tuple:
    """The Metric objects for ``metrics`` (default: from the loss), names checked unique."""
    specs = _default_metrics(loss) if metrics is None else metrics
    if isinstance(specs, str) or not isinstance(specs, Sequence):
        raise TypeError(f"metrics must be a list such as ['accuracy'], got {metrics!r}.")
    out = []
    for spec in specs:
        try:
            out.append(metrics_lib.get_metric(tuple(spec) if isinstance(spec, list) else spec))
        except TypeError as err:
            raise TypeError(f"metrics: {err}") from None
    names = [m.name for m in out]
    if len(set(names)) != len(names) or {"loss", "count"} & set(names):
        raise ValueError(f"metrics must have distinct names other than 'loss', got {names}.")
    return tuple(out)


def _width(out_shape) -> int:
    return out_shape[-1] if len(out_shape) > 1 else 1


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
    name = losses_lib.name_of(loss)
    if name in losses_lib.CLASSIFICATION:
        return ("accuracy",)
    if name in losses_lib.REGRESSION:
        return ("mse", "mae")
    return ()


def _key_data(key) -> list[int]:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(key)
    elif isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32 and key.shape == (2,):
        data = key  # a raw key from jax.random.PRNGKey
    else:
        raise TypeError(f"key must be a JAX PRNG key such as jax.random.key(0), got {key!r}.")
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


def _logs(sums, metrics, width: int, skip_nonfinite: bool = False, prefix: str = "") -> dict[str, float]:
    """The loss (a weighted mean) and each metric's result, from a sums vector (see :func:`programs.layout`).

    NaN when no sample counted (every step of the epoch skipped as non-finite).
    """
    parts = programs._unstack(np.asarray(sums), programs.layout(metrics, width, skip_nonfinite))
    count = float(parts["count"])
    logs = {prefix + "loss": float(parts["loss"]) / count if count > 0 else math.nan}
    for m in metrics:
        logs[prefix + m.name] = m.result(parts[m.name], count, width) if count > 0 else math.nan
    if skip_nonfinite:
        logs[prefix + "skipped_steps"] = float(parts["skipped"])
    return dict(sorted(logs.items()))


def _copy(tree):
    """Private device copies (no program compiled): donation must never consume the caller's buffers."""
    return jax.tree.map(lambda a: jax.device_put(a, may_alias=False) if isinstance(a, jax.Array) else a, tree)


def _step_spec(net, loss, metrics, compute_dtype, class_weight, mesh) -> programs.Step:
    return programs.Step(programs.structure(net), loss, tuple(metrics),
                         None if compute_dtype is None else jnp.dtype(compute_dtype), class_weight is not None, mesh)


def _training_spec(net, loss, metrics, optimizer, *, hyperparams=(), compute_dtype=None, class_weight=None,
                   mesh=None, skip_nonfinite=False, validation=False) -> programs.Training:
    """The cache key of a training epoch (see :class:`programs.Training`)."""
    init = optimizer.init.program.tx.init if isinstance(optimizer.init, optim.OptimizerInit) else optimizer.init
    step = _step_spec(net, loss, metrics, compute_dtype, class_weight, mesh)
    return programs.Training(**vars(step), init=init, update=optimizer.update, hyperparams=hyperparams,
                             skip_nonfinite=skip_nonfinite, validation=validation)


# -- streaming (jdense.data.stream): the host side of the epoch ---------------------------
def _stream_source(x, y, *, stream, data, batch_size, steps_per_epoch, seed, device_memory, mesh):
    """``(source, steps per chunk)`` that stream fit's data, or None for the in-memory path (see fit's ``stream``).

    In a multi-process run the processes agree on the choice and the chunk (the smallest
    memory budget counts).
    """
    _checks.choice("data", data, ("global", "per_process"))
    if stream is not None:
        _checks.boolean("stream", stream)
    per_process = data == "per_process"
    if per_process and mesh is None:
        raise ValueError("fit: data='per_process' joins the processes' rows through a mesh; pass mesh=jdense.parallel.data_mesh().")
    limit = stream_lib.budget(device_memory)
    if mesh is not None and jax.process_count() > 1:
        limit = min(parallel.process_values(limit))
    batches = stream_lib.is_batches(x, y)
    if stream is False and (batches or per_process):
        raise ValueError(f"fit: {'an iterable of batches' if batches else 'data=per_process'} is always streamed; "
                         "pass stream=None (or True).")
    if not (batches or per_process or stream) and (
            stream is False or not all(hasattr(a, "shape") for a in (x, y)) or stream_lib.nbytes(x, y) <= limit):
        if steps_per_epoch is not None:
            raise ValueError("fit: steps_per_epoch is for an iterable of batches (x with y=None); an array's epoch is "
                             "every row once, ceil(samples / batch_size) steps.")
        return None
    processes = jax.process_count() if per_process else 1
    if batch_size is not None and _checks.positive_int("batch_size", batch_size) % processes:
        raise ValueError(f"fit: batch_size={batch_size} must split evenly over the {processes} processes (data='per_process').")
    local = None if batch_size is None else batch_size // processes
    if batches:
        source = stream_lib.Batches(x, local, steps_per_epoch)
    elif steps_per_epoch is not None:
        raise ValueError("fit: steps_per_epoch is for an iterable of batches (x with y=None); an array's epoch is "
                         "every row once, ceil(samples / batch_size) steps.")
    else:
        x, y = stream_lib.rows(x, "x"), stream_lib.rows(y, "y")
        source = stream_lib.Rows(x, y, _batch_size(local, x.shape[0]), seed, (jax.process_index(),) if processes > 1 else ())
    if mesh is not None and not per_process:  # a cheap look: the first rows and the shapes
        parallel.check_same_data(source.sample_x, np.asarray(source.x_like[0]), what="fit")
    if processes > 1:
        for name, value in (("steps per epoch", source.steps), ("rows per step", source.batch)):
            values = parallel.process_values(value)
            if len(set(values)) > 1:
                raise ValueError(f"fit(data='per_process'): the processes have {values} {name}; every process must "
                                 "run the same steps of the same batch size (equal shards, or the same steps_per_epoch).")
    k = stream_lib.chunk_steps(source.steps, source.step_bytes, limit)
    return source, min(parallel.process_values(k)) if mesh is not None else k


def _stream_epochs(source, k, spec, step_spec, *, epochs, mesh, per_process, key, class_weight, val, check, width):
    """fit's epoch over streamed data: ``(params, opt_state, state, epoch, fresh) -> (..., sums, val_sums)``, and a note.

    Chunk after chunk of ``k`` steps goes through :func:`programs.streaming` while the
    feeder puts the next one on the device; the sums are read once per epoch, as in memory.
    """
    feeder = stream_lib.Feeder(source.chunks(epochs, k), lambda t: parallel.put_steps(t, mesh, per_process), check)
    run_chunk = programs.streaming(dataclasses.replace(spec, validation=False))  # validation runs apart
    evaluation = None if val is None else programs.evaluation((step_spec, False))
    zeros = parallel.place(np.zeros(programs.layout_size(programs.layout(spec.metrics, width, spec.skip_nonfinite)),
                                    np.float32), mesh)

    def run_epoch(params, opt_state, state, epoch, fresh):
        keys = programs.epoch_keys(spec.net.needs_key, key, np.uint32(epoch), source.steps)
        sums, running = zeros, False
        for _ in range(-(-source.steps // k)):
            c = feeder.get()
            params, opt_state, state, new = run_chunk(params, opt_state, state, sums, c.xs, c.ys, c.mask, keys,
                                                      np.int32(c.first), np.int32(c.count), class_weight, np.bool_(fresh))
            del c  # the dispatched steps hold their buffers until they have run
            if running:  # the previous chunk has run (its sums are this one's input): its buffers may be reused
                sums.block_until_ready()
                feeder.done()
            sums, running, fresh = new, True, False
        sums.block_until_ready()
        feeder.done()
        return params, opt_state, state, sums, None if val is None else evaluation(params, state, *val, class_weight)

    size = k * source.step_bytes
    return run_epoch, f"stream {k} steps/chunk ({f'{size / 1e6:.1f} MB' if size >= 1e6 else f'{size / 1e3:.0f} kB'})"


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
    sample_weight: jax.typing.ArrayLike | None = None,
    validation_split: float | None = None,
    stream: bool | None = None,
    steps_per_epoch: int | None = None,
    device_memory: int | None = None,
    data: str = "global",
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
      validation_data: optional ``(x_val, y_val)`` or ``(x_val, y_val, sample_weight_val)``;
        adds ``val_*`` entries to the logs (computed in the same compiled program).
      metrics: names from :mod:`jdense.metrics` (``"accuracy"``, ``"top_k_accuracy"``,
        ``("top_k_accuracy", k)``, ``"precision"``, ``"recall"``, ``"f1"``, ``"auc"``, ``"mse"``,
        ``"mae"``, ``"rmse"``) or callables ``(outputs, targets) -> per-sample values``; by
        default accuracy for classification, mse and mae for regression. The loss is always logged.
      callbacks: e.g. ``[jdense.EarlyStopping(patience=5), jdense.BestCheckpoint(save)]``.
      class_weight: ``{class: weight}`` or a sequence, to weigh rare classes up.
      verbose: 1 a progress bar (metrics in its postfix), 2 a line per epoch (no bar), 0 silent.
      opt_state: to resume: the optimizer state (default ``optimizer.init(params)``).
      state: to resume: the network state (default ``net.init_state()``).
      initial_epoch: to resume: the epoch to start from (the shuffle of epoch ``e`` depends
        only on ``key`` and ``e``, so a resumed run repeats an uninterrupted one exactly).
      skip_nonfinite: skip every step whose update is not finite (params, optimizer and
        BatchNorm state stay as they were, and the batch is left out of the logged sums)
        instead of stopping with an error when the loss is not finite.
      compute_dtype: mixed precision, e.g. ``jnp.bfloat16``: the forward and backward pass
        run in it while params, optimizer state and the loss stay float32. ``jnp.float16``
        adds dynamic loss scaling (as Keras's ``LossScaleOptimizer``): the loss is multiplied
        by a scale (2**15 at first) so that small gradients do not underflow, the gradients
        divided by it; a step with an overflow is skipped and halves the scale, 2000 finite
        steps double it. The scale lives in ``result.state["loss_scale"]``.
      mesh: data-parallel training on several devices or processes: a mesh from
        ``jdense.parallel.data_mesh()`` (all devices). Each batch is split by rows over its
        ``"data"`` axis (``batch_size`` must be a multiple of its size); params and
        optimizer state are replicated (see :mod:`jdense.parallel`). ``None`` (default):
        one device. Every process of a multi-process run calls ``fit`` with the same data
        (or, with ``data="per_process"``, its own).
      stream: ``None`` (default): keep the data on the device when they take at most
        ``device_memory``, stream them otherwise; ``True``: stream; ``False``: on the
        device. Streamed, the host gathers the next chunk of steps (from a memory map, an
        ``h5py``/``zarr`` array, or any row-indexable array) in a background thread while
        the device runs the current one; the params are bitwise those of the in-memory fit.
        ``x`` may also be an iterable of ``(x_batch, y_batch)`` pairs with ``y=None`` (a
        generator, a grain or PyTorch data loader): always streamed, in its own order (a
        re-iterable starts over each epoch, an iterator goes on), a shorter batch padded
        at weight 0.
      steps_per_epoch: batches per epoch of an iterable of batches (default: its ``len``).
      device_memory: bytes of device memory the data may take (default: half the free
        memory of the device, or of the host's RAM where the device reports none); a
        streamed chunk takes at most a quarter of it (and 32 MiB).
      data: ``"global"`` (default): ``x, y`` are the whole data set, the same on every
        process; ``"per_process"``: with a multi-process ``mesh``, each process passes only
        its own rows (or batches) and every step takes ``batch_size / processes`` of them
        from each process, joined in process order (streamed; process ``p`` of several
        shuffles its rows with the seed ``(key, epoch, p)``). ``validation_data`` stays
        the same on every process.
      sample_weight: optional ``(n,)`` weights: the loss and metrics are the weighted means
        ``Σ wᵢ·ℓᵢ / Σ wᵢ`` per batch, multiplied with ``class_weight`` when both are given
        (BatchNorm's batch statistics are weighted alike).
      validation_split: a fraction in (0, 1): the last rows of ``x, y`` (taken before any
        shuffling, as Keras does) become the validation data.

    Compiled programs are cached (:mod:`jdense.programs`): a later call with the same
    network structure, loss, metrics, optimizer structure, batch size, data shapes and
    options compiles nothing, whatever its learning rate, L2 strengths or params. A
    callback with ``adjust_hyperparams(epoch, logs, hyperparams) -> dict | None`` changes
    the optimizer's values between epochs (e.g. ``{"learning_rate": 1e-4}``); then
    ``history["learning_rate"]`` records the rate of each epoch.

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
    epochs = _int(epochs, "epochs", 1)
    initial_epoch = _int(initial_epoch, "initial_epoch", 0)
    if initial_epoch >= epochs:
        raise ValueError(f"initial_epoch must be in [0, epochs={epochs}), got {initial_epoch!r}.")
    compute_dtype = None if compute_dtype is None else _checks.floating_dtype("compute_dtype", compute_dtype)
    per_sample = losses_lib.per_sample(loss)
    metric_objs = _metrics(loss, metrics)
    seed = _key_data(key)
    source = _stream_source(x, y, stream=stream, data=data, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                            seed=seed, device_memory=device_memory, mesh=mesh)
    if source is None:
        x, y = _as_data(x, y, "fit", finite=not skip_nonfinite)  # skip_nonfinite: bad rows become skipped steps
        sw = _sample_weights(x, sample_weight, "fit")
        if validation_split is not None:
            if validation_data is not None:
                raise ValueError("pass validation_data= or validation_split=, not both.")
            if isinstance(validation_split, bool) or not isinstance(validation_split, float | int | np.floating) \
                    or not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be a fraction in (0, 1) such as 0.1, got {validation_split!r}.")
            cut = int(x.shape[0] * (1 - validation_split))
            if not 0 < cut < x.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no rows on one side of {x.shape[0]} samples.")
            validation_data = (x[cut:], y[cut:], sw[cut:])
            x, y, sw = x[:cut], y[:cut], sw[:cut]
        n = x.shape[0]
        batch = _batch_size(batch_size, n)
    else:
        if sample_weight is not None or validation_split is not None:
            raise ValueError("fit: sample_weight= and validation_split= need in-memory data; with streamed data pass "
                             "validation_data= (and weights as a third element of it), or stream=False.")
        source, chunk = source
        x, batch = source.sample_x, source.batch * (jax.process_count() if data == "per_process" else 1)
    parallel.check_batch(mesh, batch, "fit")
    net.check_params(params, "fit")
    _checks.trainable("fit", net, params)
    state = net.init_state() if state is None else state
    _check_state(net, state, "fit")
    if compute_dtype == jnp.float16 and programs.LOSS_SCALE not in state:  # dynamic loss scaling, kept in the state
        state = {**state, programs.LOSS_SCALE: programs.initial_loss_scale()}
    out_shape = _output_shape(net, params, state, x)
    if source is None:
        _check_labels(loss, y, out_shape, "fit")
    metrics_lib.check_width(metric_objs, _width(out_shape), "fit")
    cw = _class_weights(class_weight, out_shape)
    checked_val = _validation(validation_data, loss, out_shape, "fit(validation_data)")
    callbacks = _callbacks(callbacks, metric_objs, validation_data is not None, skip_nonfinite)
    adjusters = [cb for cb in callbacks if callable(getattr(cb, "adjust_hyperparams", None))]
    if adjusters and not isinstance(optimizer.init, optim.OptimizerInit) and not hasattr(opt_state, "hyperparams"):
        raise TypeError("a callback with adjust_hyperparams needs a jdense.optimizer(...): its values live in its state.")

    params = _copy(params)  # donation below consumes these buffers: never the caller's
    fresh = opt_state is None
    if fresh:  # made inside the first epoch, from this template
        opt_state, hyper = programs.initial_opt_state(optimizer, params)
    else:
        _check_opt_state(optimizer, params, opt_state)
        opt_state, hyper = _copy(opt_state), ()
    spec = _training_spec(
        net, per_sample, metric_objs, optimizer, hyperparams=hyper, compute_dtype=compute_dtype, class_weight=cw,
        mesh=mesh, skip_nonfinite=skip_nonfinite, validation=validation_data is not None)
    state = _copy(state)
    cw_dev = None if cw is None else jax.device_put(cw)
    params, opt_state, state, cw_dev = parallel.place((params, opt_state, state, cw_dev), mesh)
    val = _device_validation(checked_val, batch, mesh, "fit(validation_data)")
    width = _width(out_shape)
    weighted = sample_weight is not None or validation_split is not None

    key_dev = parallel.place(key, mesh)
    note = None
    if source is None:
        program = programs.training(spec)
        x_dev, y_dev = parallel.device_data((x, y), mesh, "fit")

        def run_epoch(params, opt_state, state, epoch, fresh):
            order = np.random.default_rng([*seed, epoch]).permutation(n) if batch < n else np.arange(n)
            idx, mask = _padded_indices(order, batch)
            idx, mask = parallel.place((idx, mask * sw[idx] if weighted else mask), mesh)
            return program(params, opt_state, state, x_dev, y_dev, idx, mask, key_dev, np.uint32(epoch), cw_dev,
                           np.bool_(fresh), val)
    else:
        check = lambda c: _check_labels(  # noqa: E731
            loss, c.ys[:c.count].reshape(-1, *c.ys.shape[2:]), out_shape,
            f"fit (steps {c.first}..{c.first + c.count - 1} of epoch {c.epoch + 1})")
        run_epoch, note = _stream_epochs(
            source, chunk, spec, _step_spec(net, per_sample, metric_objs, compute_dtype, cw, mesh),
            epochs=range(initial_epoch, epochs), mesh=mesh, per_process=data == "per_process", key=key_dev,
            class_weight=cw_dev, val=val, check=check, width=width)
    if verbose:
        callbacks.append(ProgressBar(epochs, verbose, initial_epoch, note=note))
    history: dict[str, list[float]] = {}
    for cb in callbacks:
        getattr(cb, "on_train_begin", lambda: None)()
    epoch = initial_epoch
    for epoch in range(initial_epoch, epochs):
        params, opt_state, state, sums, val_sums = run_epoch(params, opt_state, state, epoch, fresh)
        fresh = False
        logs = _logs(sums, metric_objs, width, skip_nonfinite)
        if val is not None:
            logs.update(_logs(val_sums, metric_objs, width, prefix="val_"))
        if adjusters:
            logs["learning_rate"] = optim.hyperparams(opt_state)["learning_rate"]
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
        for cb in adjusters:  # e.g. a lower learning rate for the next epoch: a value, nothing recompiles
            changes = cb.adjust_hyperparams(epoch, logs, optim.hyperparams(opt_state))
            if changes:
                opt_state = parallel.place(optim.set_hyperparams(opt_state, **changes), mesh)
        if stop:
            break
    for cb in callbacks:
        hook = getattr(cb, "on_train_end", None)
        restored = hook(params, state) if hook is not None else None
        if restored is not None:
            params, state = restored
    return FitResult(params, opt_state, state, history, epoch + 1)


def _eval_batches(n: int, batch_size: int | None):
    """Indices of inference batches; a ``batch_size`` above ``n`` is clamped to ``n``."""
    if batch_size is not None and not isinstance(batch_size, bool) and isinstance(batch_size, int | np.integer):
        batch_size = min(int(batch_size), n)
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
    population: bool = False,
    sample_weight: jax.typing.ArrayLike | None = None,
) -> dict[str, float]:
    """Loss and metrics of ``net`` on ``(x, y)`` in inference mode, batched and compiled once.

    The compiled program is cached (see :mod:`jdense.programs`): calling again with the
    same network structure, loss, metrics and data shapes compiles nothing. With
    ``mesh=`` (as in :func:`fit`) each batch is split over the mesh's devices when its
    size is a multiple of theirs.

    With ``population=True``, ``params`` (and ``state``) are a population's, with a leading
    member axis (:func:`jdense.fit_population`), and every value is an array with one entry
    per member. ``sample_weight`` (``(n,)``) weighs each sample as in :func:`fit`.

    Returns:
      ``{"loss": ..., "accuracy": ...}`` (the metrics default as in :func:`fit`).

    Example:
      >>> jdense.evaluate(net, result.params, x_test, y_test, loss="cross_entropy")
      {'loss': 0.09, 'accuracy': 0.97}
    """
    per_sample = losses_lib.per_sample(loss)
    metric_objs = _metrics(loss, metrics)
    x, y = _as_data(x, y, "evaluate")
    sw = _sample_weights(x, sample_weight, "evaluate")
    state = _member_args(net, params, state, population, "evaluate")
    out_shape = _output_shape(net, _member(params, population), _member(state, population), x, "evaluate")
    _check_labels(loss, y, out_shape, "evaluate")
    metrics_lib.check_width(metric_objs, _width(out_shape), "evaluate")
    cw = _class_weights(class_weight, out_shape)
    fn = programs.evaluation((_step_spec(net, per_sample, metric_objs, None, cw, mesh), bool(population)))
    idx, mask = _eval_batches(x.shape[0], batch_size)
    if sample_weight is not None:
        mask = mask * sw[idx]
    params, state, idx, mask, cw = parallel.place((params, state, idx, mask, cw), mesh)
    sums = fn(params, state, *parallel.device_data((x, y), mesh, "evaluate"), idx, mask, cw)
    width = _width(out_shape)
    if not population:
        return _logs(sums, metric_objs, width)
    rows = [_logs(s, metric_objs, width) for s in np.asarray(sums)]
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _member(tree, population: bool):
    """The shapes of member 0 of a population's tree (for checks, nothing computed), or the tree itself."""
    if not population:
        return tree
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), tree)


def _member_args(net: Sequential, params, state, population: bool, what: str):
    """Checked params and state (one network's, or a population's with one member axis); returns the state to use."""
    if population:
        if _fits(net.check_params, params, what):
            raise ValueError(f"{what}: population=True, but params are one network's (no member axis); pass "
                             "population=False, or a population's params (fit_population's result.params).")
        _checks.member_count(what, params=params, state=state)
        net.check_params(_member(params, True), what)
    else:
        try:
            net.check_params(params, what)
        except ValueError:
            if _fits(net.check_params, _member(params, True), what):
                raise ValueError(f"{what}: params have a leading member axis: they are a population's; pass "
                                 "population=True, or one member's params (result.member(i).params).") from None
            raise
    if state is not None:
        member_state = {k: v for k, v in state.items() if not (isinstance(v, dict) and set(v) == {"keep"})} \
            if population and isinstance(state, dict) else state
        try:
            _check_state(net, _member(member_state, population), what)
        except ValueError:
            other = _member(member_state, not population) if isinstance(member_state, dict) and not population else None
            if other is not None and _fits(_check_state, net, other, what):
                raise ValueError(f"{what}: state has a leading member axis: it is a population's state; pass "
                                 "population=True with the population's params, or one member's state.") from None
            raise
    return _default_state(net, params, state, population)


def _fits(check, *args) -> bool:
    try:
        check(*args)
    except (ValueError, TypeError):
        return False
    return True


def _default_state(net: Sequential, params, state, population: bool):
    """``state``, or the network's initial state (one per member for a population)."""
    if state is not None:
        return state
    state = net.init_state()
    if population and state:
        members = jax.tree.leaves(params)[0].shape[0]
        state = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (members, *a.shape)), state)
    return state


def predict(
    net: Sequential, params: Params, x: jax.typing.ArrayLike, *, output: str = "logits", loss: Any = None,
    batch_size: int | None = None, state: Any = None, mesh: Any = None, population: bool = False,
) -> jax.Array:
    """The network's outputs for ``x`` in inference mode, batched and compiled once (cached).

    With ``mesh=`` (as in :func:`fit`) each batch is split over the mesh's devices when its
    size is a multiple of theirs; the outputs come back replicated. With
    ``population=True``, ``params`` (and ``state``) have a leading member axis
    (:func:`jdense.fit_population`) and so do the outputs.

    Args:
      output: ``"logits"`` (default: the network's raw outputs), ``"probabilities"`` or
        ``"labels"``; the last two follow from ``loss`` (:func:`jdense.losses.link`): softmax
        for ``"cross_entropy"``, sigmoid for ``"binary_cross_entropy"``; labels are the argmax,
        or ``p > 0.5`` as int32 (shape ``(n,)`` for one output).
      loss: the loss the network was trained with; needed for probabilities and labels.

    Raises:
      ValueError: ``output`` other than logits without a classification ``loss``, or data,
        params or state that do not fit the network (before anything is compiled).

    Example:
      >>> p = jdense.predict(net, result.params, x_test, output="probabilities", loss="cross_entropy")
      >>> labels = jdense.predict(net, result.params, x_test, output="labels", loss="cross_entropy")
    """
    link = losses_lib.link(loss, output, "predict")
    x, _ = _as_data(x, None, "predict")
    state = _member_args(net, params, state, population, "predict")
    net.check_input(x.shape, "predict")
    idx, _ = _eval_batches(x.shape[0], batch_size)
    params, state, idx = parallel.place((params, state, idx), mesh)
    fn = programs.prediction((programs.structure(net), mesh, bool(population)))
    return link(fn(params, state, *parallel.device_data((x,), mesh, "predict"), idx, n=x.shape[0]))
