"""Checks of the arguments of :func:`jdense.fit`, :func:`jdense.fit_population`, :func:`jdense.evaluate`
and :func:`jdense.predict` other than the data (those are in :mod:`jdense.data.feed`).

Each raises before anything is compiled, with the same type and wording whichever
function the mistake was made in: the error names the argument, what was given (a
short repr, or its type), what was expected, and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdense import checks, optim, programs
from jdense import losses as losses_lib
from jdense import metrics as metrics_lib
from jdense.network import Sequential


def network(net, what: str) -> Sequential:
    if not isinstance(net, Sequential):
        raise TypeError(f"{what}: net must be a jdense.Sequential (from jdense.mlp([...]) or Sequential([...])), got "
                        f"{type(net).__name__}.")
    return net


def epochs(epochs, initial_epoch=0) -> tuple[int, int]:
    """``(epochs, initial_epoch)`` checked: a positive int, and an int in ``[0, epochs)``."""
    epochs = checks.positive_int("epochs", epochs)
    initial_epoch = checks.integer("initial_epoch", initial_epoch, 0)
    if initial_epoch >= epochs:
        raise ValueError(f"initial_epoch must be in [0, epochs={epochs}), got {initial_epoch!r}.")
    return epochs, initial_epoch


def key_data(key, what: str) -> list[int]:
    """The key's data as ints (the batch order's seed); a clear error for a missing or wrong key."""
    if key is None:
        raise TypeError(f"{what}: key= is required: it seeds the shuffle of every epoch and the dropout masks, so the "
                        "same key gives bitwise the same result; pass e.g. key=jax.random.key(0).")
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(key)
    elif isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32 and key.shape == (2,):
        data = key  # a raw key from jax.random.PRNGKey
    else:
        raise TypeError(f"key must be a JAX PRNG key such as jax.random.key(0), got {checks.short(key)}.")
    return np.asarray(data).ravel().astype(np.uint32).tolist()


def fit_optimizer(net: Sequential, optimizer) -> optax.GradientTransformation:
    """``fit``'s optimizer: a name (``jdense.optimizer(net, name)``, learning rate 1e-3) or an optax transformation."""
    if isinstance(optimizer, str):
        return optim.optimizer(net, optimizer)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be a name such as 'adam' ({', '.join(optim.OPTIMIZERS)}) or an optax "
                        f"transformation such as jdense.optimizer(net, 'adam', 1e-3), got {checks.short(optimizer)}.")
    return optimizer


def compute_dtype(dtype):
    return None if dtype is None else checks.floating_dtype("compute_dtype", dtype)


def default_metrics(loss) -> tuple[str, ...]:
    name = losses_lib.name_of(loss)
    if name in losses_lib.CLASSIFICATION:
        return ("accuracy",)
    if name in losses_lib.REGRESSION:
        return ("mse", "mae")
    return ()


def metric_objects(loss, metrics) -> tuple:
    """The :class:`jdense.metrics.Metric` objects for ``metrics`` (default: from the loss), names checked unique."""
    specs = default_metrics(loss) if metrics is None else metrics
    if isinstance(specs, str) or not isinstance(specs, Sequence):
        raise TypeError(f"metrics must be a list such as ['accuracy'], got {checks.short(metrics)}.")
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


def output_shape(net: Sequential, params, state, x, what: str = "fit", shape: tuple | None = None) -> tuple:
    """The network's output shape for one row of ``x`` (from shapes: nothing is computed).

    A width that does not fit names the layer and the caller's shape: ``shape`` when ``x`` is a
    sample of the data (a streamed array's first row), else ``x``'s own (never a traced slice).
    """
    net.check_input(np.shape(x) if shape is None else tuple(shape), what)
    width = net.output_width
    if width is not None and np.ndim(x) == 2:  # a network ending in Dense: no tracing needed
        return (1, width)
    spec = jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), jnp.float32)
    return jax.eval_shape(lambda p, s, x: net.apply_with_state(p, s, x)[0], params, state, spec).shape


def width(out_shape) -> int:
    return out_shape[-1] if len(out_shape) > 1 else 1


def class_weights(class_weight, out_shape, what: str = "fit") -> np.ndarray | None:
    """``class_weight`` (a dict ``{class: weight}`` or a sequence) as one float32 weight per class."""
    if class_weight is None:
        return None
    n = max(width(out_shape), 2)
    if isinstance(class_weight, dict):
        cw = np.ones(n, np.float32)
        for k, v in class_weight.items():
            if isinstance(k, bool) or not isinstance(k, int | np.integer):
                raise TypeError(f"class_weight keys must be class indices (ints), got {k!r}; e.g. {{0: 1.0, 1: 5.0}}.")
            if not 0 <= int(k) < n:
                raise ValueError(f"class_weight has class {k!r} but the network predicts classes 0..{n - 1}.")
            cw[int(k)] = checks.real(f"class_weight[{k!r}]", v, "a number >= 0")
    else:
        from jdense.data import feed

        cw = feed.array(class_weight, "class_weight", what).astype(np.float32)
        if cw.shape != (n,):
            raise ValueError(f"class_weight must have one weight per class, shape ({n},), got {cw.shape}.")
    if not (np.isfinite(cw).all() and (cw >= 0).all()):
        raise ValueError("class_weight must be finite and >= 0.")
    if not cw.any():
        raise ValueError("class_weight is 0 for every class: nothing would be learned; give some class a weight > 0.")
    return cw


def state(net: Sequential, state, what: str) -> None:
    """The network state must have the structure and shapes of ``net.init_state()``."""
    if not isinstance(state, dict):
        raise TypeError(f"{what}: state must be a dict like net.init_state() (or fit's result.state), got "
                        f"{checks.short(state)}.")
    state = {k: v for k, v in state.items() if k != programs.LOSS_SCALE}
    expected = net.init_state()
    same = jax.tree.structure(state) == jax.tree.structure(expected) and all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected)))
    if not same:
        shapes = lambda t: jax.tree.map(np.shape, t)  # noqa: E731
        raise ValueError(f"{what}: state does not fit this network: got {shapes(state)}, expected {shapes(expected)} "
                         "(pass net.init_state() or the result.state of a fit of this network).")


def opt_state(optimizer, params, opt_state) -> None:
    """A given optimizer state must be the one ``optimizer.init(params)`` makes (structure and shapes)."""
    expected = jax.eval_shape(optimizer.init, params)
    same = jax.tree.structure(opt_state) == jax.tree.structure(expected) and all(
        np.shape(a) == b.shape for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(expected)))
    if not same:
        raise ValueError("fit: opt_state does not fit this optimizer and params (was it made by another optimizer or "
                         "network?); pass the opt_state of a fit with the same optimizer, or None to start afresh.")


def training_spec(net, loss, metrics, optimizer, *, hyperparams=(), compute_dtype=None, class_weight=None,
                  mesh=None, skip_nonfinite=False, validation=False) -> programs.Training:
    """The cache key of a training epoch (see :class:`jdense.programs.Training`)."""
    init = optimizer.init.program.tx.init if isinstance(optimizer.init, optim.OptimizerInit) else optimizer.init
    step = step_spec(net, loss, metrics, compute_dtype, class_weight, mesh)
    return programs.Training(**vars(step), init=init, update=optimizer.update, hyperparams=hyperparams,
                             skip_nonfinite=skip_nonfinite, validation=validation)


def step_spec(net, loss, metrics, compute_dtype, class_weight, mesh) -> programs.Step:
    """The cache key of an evaluation (see :class:`jdense.programs.Step`)."""
    return programs.Step(programs.structure(net), loss, tuple(metrics),
                         None if compute_dtype is None else jnp.dtype(compute_dtype), class_weight is not None, mesh)


def refuse_unknown(what: str, options: dict[str, Any], known: Sequence[str], why: str) -> None:
    """Refuse keyword arguments of ``known`` (e.g. fit's) that ``what`` does not take, by their own name."""
    wrong = sorted(set(options) & set(known))
    if wrong:
        raise TypeError(f"{what} does not take {', '.join(k + '=' for k in wrong)}: {why}")


# -- one network's or a population's params and state, checked against each other --------------------
def member_shapes(tree):
    """The shapes of member 0 of a population's tree (for checks: nothing is computed)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), tree)


def _fits(check, *args) -> bool:
    try:
        check(*args)
    except (ValueError, TypeError):
        return False
    return True


def members(net: Sequential, params, net_state, population: bool, what: str):
    """Params and state (``net_state``) checked as one network's (``population=False``) or as one population's, with a single
    member axis; returns the state to use (``net.init_state()``, one per member, when ``state`` is None).

    The errors say which of the two was passed where the other was expected.
    """
    if population:
        if _fits(net.check_params, params, what):
            raise ValueError(f"{what}: population=True, but params are one network's (no member axis); pass "
                             "population=False, or a population's params (fit_population's result.params).")
        checks.member_count(what, params=params, state=net_state)
        net.check_params(member_shapes(params), what)
    else:
        try:
            net.check_params(params, what)
        except ValueError:
            if _fits(net.check_params, member_shapes(params), what):
                raise ValueError(f"{what}: params have a leading member axis: they are a population's; pass "
                                 "population=True, or one member's params (result.member(i).params).") from None
            raise
    if net_state is not None:
        own = {k: v for k, v in net_state.items() if not (isinstance(v, dict) and set(v) == {"keep"})} \
            if population and isinstance(net_state, dict) else net_state  # per-member dropout rates are not the net's state
        try:
            state(net, member_shapes(own) if population else own, what)
        except ValueError:
            if not population and isinstance(own, dict) and _fits(state, net, member_shapes(own), what):
                raise ValueError(f"{what}: state has a leading member axis: it is a population's state; pass "
                                 "population=True with the population's params, or one member's state.") from None
            raise
        return net_state
    initial = net.init_state()
    if population and initial:
        n = jax.tree.leaves(params)[0].shape[0]
        initial = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (n, *a.shape)), initial)
    return initial
