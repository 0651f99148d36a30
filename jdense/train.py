"""Training and inference: :func:`fit`, :func:`evaluate` and :func:`predict`.

The data set goes to the device once (or streams, :mod:`jdense.data.feed`). Each epoch
is one call of a compiled program (:mod:`jdense.programs`, cached across calls) that runs
every minibatch step in a ``jax.lax.scan``; params, optimizer state and network state
are donated to it, so the update happens in place. Between epochs the host reads the
metrics and runs the callbacks (:mod:`jdense.loop`). The guide is ``docs/training.md``.
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

from jdense import arguments, checks, loop, optim, parallel, programs
from jdense import losses as losses_lib
from jdense import metrics as metrics_lib
from jdense.callbacks import Callback, ProgressBar
from jdense.data import feed
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


def copy(tree):
    """Private device copies (no program compiled): donation must never consume the caller's buffers."""
    return jax.tree.map(lambda a: jax.device_put(a, may_alias=False) if isinstance(a, jax.Array) else a, tree)


def nonfinite_error(what: str, runner, epoch: int, detail: str, advice: str,
                    kept: str = "the params you passed are unchanged") -> Exception:
    """The error for a non-finite training loss: the data's row or batch when the data hold NaN/Inf, else ``advice``.

    ``kept`` says what of the caller's is intact (fit: the params it was given)."""
    where = runner.nonfinite(epoch)
    if where is not None:
        return ValueError(f"{what}: {where}. The training loss became non-finite in epoch {epoch + 1}; {kept}.")
    return FloatingPointError(f"{what}: the training loss {detail} in epoch {epoch + 1}; {advice}")


# -- public API -------------------------------------------------------------------------
def fit(
    net: Sequential,
    params: Params,
    x: Any,
    y: jax.typing.ArrayLike | None = None,
    *,
    loss: str | Callable,
    optimizer: str | optax.GradientTransformation = "adam",
    epochs: int = 1,
    batch_size: int | None = checks.BATCH_SIZE,
    key: jax.Array | None = None,
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

    The defaults are Keras's (``optimizer="adam"`` at learning rate 1e-3, ``batch_size=32``,
    ``epochs=1``); ``key`` is required, as JAX users expect: the same key and data give
    bitwise the same params on CPU. The inputs are never mutated. More in the guide,
    ``docs/training.md`` (streaming, multi-device, mixed precision, resuming).

    Args:
      net, params: the network and its initial params (``net.init(key)``, or a checkpoint's).
      x, y: inputs and targets (arrays, first axis = samples); a memory map or ``h5py``/``zarr``
        array (streamed when larger than ``device_memory``); or ``x`` an iterable of
        ``(x_batch, y_batch)`` pairs with ``y=None``.
      loss: a name from :mod:`jdense.losses` or a callable ``(outputs, targets) -> (batch,)``.
      optimizer: a name (``"adam"``, ``"sgd"``, ``"momentum"``, ``"rmsprop"``, ``"adamw"``) or an
        optax transformation such as ``jdense.optimizer(net, "adam", 1e-3)``.
      epochs: the epoch to stop after (a total, counting ``initial_epoch``).
      batch_size: samples per step; ``None`` is the whole set (batch gradient descent). The
        default 32 shrinks to a smaller data set (as Keras's); a size you pass must be at most
        the number of samples. An iterable of batches sets its own (its first batch's rows;
        later ones may be shorter).
      key: PRNG key of the shuffle and dropout, e.g. ``jax.random.key(0)``.
      validation_data: ``(x_val, y_val)`` or ``(x_val, y_val, weights)``: adds ``val_*`` logs.
      metrics: names from :mod:`jdense.metrics` or callables (default: accuracy for
        classification, mse and mae for regression); the loss is always logged.
      callbacks: e.g. ``[jdense.EarlyStopping(patience=5)]`` (see :mod:`jdense.callbacks`).
      class_weight, sample_weight: weights per class (dict or sequence) and per sample ``(n,)``.
      verbose: 1 a progress bar, 2 a line per epoch, 0 silent.
      opt_state, state, initial_epoch: to resume a run exactly.
      skip_nonfinite: skip steps whose update is not finite instead of raising.
      compute_dtype: mixed precision, e.g. ``jnp.bfloat16`` (``float16`` adds loss scaling).
      mesh: data-parallel training, e.g. ``jdense.parallel.data_mesh()``.
      validation_split: the last fraction of the rows becomes the validation data.
      stream, steps_per_epoch, device_memory, data: streaming (see ``docs/training.md``).

    Returns:
      A :class:`FitResult` with ``params``, ``opt_state``, ``state``, ``history``, ``epochs``.

    Raises:
      ValueError, TypeError: for inconsistent data or arguments, before compiling; for
        streamed data with NaN or Inf, naming the file's row or the batch.
      FloatingPointError: when the training loss is not finite (naming the epoch).

    Example:
      >>> net = jdense.mlp([64, 32, 10])
      >>> result = jdense.fit(net, net.init(jax.random.key(0)), x, y, loss="cross_entropy",
      ...                     epochs=10, key=jax.random.key(1))
      >>> result.history["accuracy"][-1]
    """
    what = "fit"
    arguments.network(net, what)
    optimizer = arguments.fit_optimizer(net, optimizer)
    epochs, initial_epoch = arguments.epochs(epochs, initial_epoch)
    compute_dtype = arguments.compute_dtype(compute_dtype)
    per_sample = losses_lib.per_sample(loss)
    metric_objs = arguments.metric_objects(loss, metrics)
    seed = arguments.key_data(key, what)
    data_in = feed.prepare(
        x, y, batch_size=batch_size, sample_weight=sample_weight, validation_split=validation_split,
        validation_data=validation_data, stream=stream, data=data, steps_per_epoch=steps_per_epoch,
        device_memory=device_memory, mesh=mesh, seed=seed, finite=not skip_nonfinite, what=what)
    parallel.check_batch(mesh, data_in.batch, what)
    net.check_params(params, what)
    checks.trainable(what, net, params)
    state = net.init_state() if state is None else state
    arguments.state(net, state, what)
    if compute_dtype == jnp.float16 and programs.LOSS_SCALE not in state:  # dynamic loss scaling, kept in the state
        state = {**state, programs.LOSS_SCALE: programs.initial_loss_scale()}
    out_shape = arguments.output_shape(net, params, state, data_in.x, what, data_in.shape)
    if data_in.source is None:
        feed.labels(loss, data_in.y, out_shape, what)
    metrics_lib.check_width(metric_objs, arguments.width(out_shape), what)
    cw = arguments.class_weights(class_weight, out_shape)
    checked_val = feed.validation(data_in.validation_data, loss, out_shape, "fit(validation_data)")
    if checked_val is not None:
        net.check_input(checked_val[0].shape, "fit(validation_data)")
    callbacks = loop.CallbackList(callbacks, metric_objs, checked_val is not None, skip_nonfinite)
    if callbacks.adjusters and not isinstance(optimizer.init, optim.OptimizerInit) and not hasattr(opt_state, "hyperparams"):
        raise TypeError("a callback with adjust_hyperparams needs a jdense.optimizer(...): its values live in its state.")

    params = copy(params)  # donation below consumes these buffers: never the caller's
    fresh = opt_state is None
    if fresh:  # made inside the first epoch, from this template
        opt_state, hyper = programs.initial_opt_state(optimizer, params)
    else:
        arguments.opt_state(optimizer, params, opt_state)
        opt_state, hyper = copy(opt_state), ()
    spec = arguments.training_spec(
        net, per_sample, metric_objs, optimizer, hyperparams=hyper, compute_dtype=compute_dtype, class_weight=cw,
        mesh=mesh, skip_nonfinite=skip_nonfinite, validation=checked_val is not None)
    cw_dev = None if cw is None else jax.device_put(cw)
    params, opt_state, state, cw_dev = parallel.place((params, opt_state, copy(state), cw_dev), mesh)
    val = feed.device_validation(checked_val, data_in.batch, mesh, "fit(validation_data)")
    width = arguments.width(out_shape)
    runner = feed.epochs(data_in, spec, loss=loss, out_shape=out_shape, seed=seed, key=parallel.place(key, mesh),
                         class_weight=cw_dev, val=val, mesh=mesh, per_process=data == "per_process",
                         epochs=range(initial_epoch, epochs), what=what)
    if verbose:
        callbacks.append(ProgressBar(epochs, verbose, initial_epoch, note=runner.note))

    def epoch_fn(carry, epoch):
        nonlocal fresh
        params, opt_state, state, sums, val_sums = runner.run((), *carry, epoch, fresh)
        fresh = False
        logs = loop.logs_of(sums, metric_objs, width, skip_nonfinite)
        if val is not None:
            logs.update(loop.logs_of(val_sums, metric_objs, width, prefix="val_"))
        if callbacks.adjusters:
            logs["learning_rate"] = optim.hyperparams(opt_state)["learning_rate"]
        if not math.isfinite(logs["loss"]) and not skip_nonfinite:
            raise nonfinite_error(what, runner, epoch, f"became {logs['loss']}", "lower the learning rate, add "
                                  "clip_norm= to jdense.optimizer, check the data for NaN, or pass skip_nonfinite=True.")
        return (params, opt_state, state), logs

    set_values = lambda s, changes: parallel.place(optim.set_hyperparams(s, **changes), mesh)  # noqa: E731
    (params, opt_state, state), history, epoch = loop.run(
        epoch_fn, (params, opt_state, state), range(initial_epoch, epochs), callbacks, set_values=set_values)
    return FitResult(params, opt_state, state, history, epoch + 1)


def _eval_batches(n: int, batch_size: int | None):
    """Indices of inference batches; a ``batch_size`` above ``n`` is clamped to ``n``."""
    batch = n if batch_size is None else min(checks.positive_int("batch_size", batch_size), n)
    return feed.padded_indices(np.arange(n), batch)


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
    per member. ``sample_weight`` (``(n,)``) weighs each sample as in :func:`fit`; for a
    population it may be ``(members, n)``, each member's own weights (e.g. its held-out fold).

    Returns:
      ``{"loss": ..., "accuracy": ...}`` (the metrics default as in :func:`fit`).

    Example:
      >>> jdense.evaluate(net, result.params, x_test, y_test, loss="cross_entropy")
      {'loss': 0.09, 'accuracy': 0.97}
    """
    arguments.network(net, "evaluate")
    per_sample = losses_lib.per_sample(loss)
    metric_objs = arguments.metric_objects(loss, metrics)
    x, y = feed.arrays(x, y, "evaluate")
    state = arguments.members(net, params, state, population, "evaluate")
    members = jax.tree.leaves(params)[0].shape[0] if population else None
    sw = feed.sample_weights(x.shape[0], sample_weight, "evaluate", members)
    out_shape = arguments.output_shape(net, _member(params, population), _member(state, population), x, "evaluate")
    feed.labels(loss, y, out_shape, "evaluate")
    metrics_lib.check_width(metric_objs, arguments.width(out_shape), "evaluate")
    cw = arguments.class_weights(class_weight, out_shape, "evaluate")
    per_member = sw is not None and sw.ndim == 2
    fn = programs.evaluation((arguments.step_spec(net, per_sample, metric_objs, None, cw, mesh), bool(population),
                              per_member))
    idx, mask = _eval_batches(x.shape[0], batch_size)
    if sw is not None:
        mask = mask * sw[..., idx]
    params, state, idx, mask, cw = parallel.place((params, state, idx, mask, cw), mesh)
    sums = fn(params, state, *parallel.device_data((x, y), mesh, "evaluate"), idx, mask, cw)
    width = arguments.width(out_shape)
    if not population:
        return loop.logs_of(sums, metric_objs, width)
    rows = [loop.logs_of(s, metric_objs, width) for s in np.asarray(sums)]
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _member(tree, population: bool):
    """The shapes of member 0 of a population's tree (for checks, nothing computed), or the tree itself."""
    return arguments.member_shapes(tree) if population else tree


_PREDICT_ARGUMENTS = ("output", "loss", "batch_size", "state", "mesh", "population")


def predict(
    net: Sequential, params: Params, x: jax.typing.ArrayLike, *, output: str = "logits", loss: Any = None,
    batch_size: int | None = None, state: Any = None, mesh: Any = None, population: bool = False, **kwargs: Any,
) -> jax.Array:
    """The network's outputs for ``x`` in inference mode, batched and compiled once (cached).

    With ``mesh=`` (as in :func:`fit`) each batch is split over the mesh's devices when its
    size is a multiple of theirs; the outputs come back replicated. With
    ``population=True``, ``params`` (and ``state``) have a leading member axis
    (:func:`jdense.fit_population`) and so do the outputs.

    Args:
      output: ``"logits"`` (default: the network's raw outputs), ``"probabilities"`` or
        ``"labels"``, derived from ``loss`` (:func:`jdense.losses.link`): softmax for
        ``"cross_entropy"``, sigmoid for ``"binary_cross_entropy"``; labels are the argmax,
        or ``p > 0.5`` as int32 (shape ``(n,)`` for one output).
      loss: the loss the network was trained with; needed for probabilities and labels.
      **kwargs: none are taken; ``activation=`` (another library's spelling) is pointed to
        ``output=`` and ``loss=``, other names to the closest argument.

    Raises:
      ValueError: ``output`` other than logits without a classification ``loss``, or data,
        params or state that do not fit the network (before anything is compiled).
      TypeError: an unknown keyword argument.

    Example:
      >>> p = jdense.predict(net, result.params, x_test, output="probabilities", loss="cross_entropy")
      >>> labels = jdense.predict(net, result.params, x_test, output="labels", loss="cross_entropy")
    """
    checks.keywords("predict", kwargs, {}, _PREDICT_ARGUMENTS, losses_lib.PREDICT_HINTS)
    arguments.network(net, "predict")
    link = losses_lib.link(loss, output, "predict")
    x, _ = feed.arrays(x, None, "predict")
    state = arguments.members(net, params, state, population, "predict")
    net.check_input(x.shape, "predict")
    idx, _ = _eval_batches(x.shape[0], batch_size)
    params, state, idx = parallel.place((params, state, idx), mesh)
    fn = programs.prediction((programs.structure(net), mesh, bool(population)))
    return link(fn(params, state, *parallel.device_data((x,), mesh, "predict"), idx, n=x.shape[0]))
