"""The compiled programs of :func:`jdense.fit`, :func:`jdense.evaluate` and :func:`jdense.predict`.

Each program is built once per *structure* and kept in a bounded LRU cache: a later call
with the same network structure, loss, metrics, optimizer structure and options runs
the compiled program again (``jax.jit`` adds its own cache per shapes and dtypes of the
data). What is only a value travels as an argument, never as a constant: the
hyperparameters sit in the optimizer state (:mod:`jdense.optim`), class weights and
keys are arrays. So a new learning rate, L2 strength, data set of the same shape or
set of initial params compiles nothing. :func:`clear_cache` empties every cache.

The training epoch runs every minibatch step in one ``jax.lax.scan``: each step gathers
its rows by index from the device-resident data, computes the loss and its gradient,
applies the optax update and adds to the metric sums. A fresh optimizer state is made
inside the first epoch (no program of its own), and validation runs at the end of
each epoch in the same program.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdense import caches, network, parallel
from jdense import losses as losses_lib
from jdense.network import Sequential

CACHE_SIZE = caches.CACHE_SIZE


def structure(net: Sequential) -> Sequential:
    """``net`` with only what shapes the training and inference programs (see :func:`jdense.network.structure`).

    Two networks with the same structure run the same compiled programs.
    """
    return network.structure(net, "training")


@dataclasses.dataclass(frozen=True)
class Step:
    """What shapes the forward pass and its sums: the key of evaluation programs."""

    net: Sequential
    loss: Callable
    metrics: tuple  # jdense.metrics.Metric objects
    compute_dtype: Any = None
    class_weighted: bool = False
    mesh: Any = None


@dataclasses.dataclass(frozen=True)
class Training(Step):
    """The key of a training epoch: a :class:`Step` plus the optimizer's structure and options.

    ``init`` and ``update`` are the optimizer's structural functions (shared by every
    :func:`jdense.optimizer` of one structure; for a user's optax transformation, its own).
    ``hyperparams`` names the values that a fresh state takes from the host.
    """

    init: Callable = None
    update: Callable = None
    hyperparams: tuple[str, ...] = ()
    skip_nonfinite: bool = False
    validation: bool = False


# -- pieces of the step -------------------------------------------------------------------
def _cast(tree, dtype):
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _weights(mask, class_weight, outputs, targets):
    """Per-sample weights: the padding mask times the class weight of each sample's label."""
    return mask if class_weight is None else mask * class_weight[losses_lib.labels_of(outputs, targets)]


def _batch_sums(outputs, y, weights, loss_values, metrics):
    sums = {"loss": jnp.sum(weights * loss_values.astype(jnp.float32)), "count": jnp.sum(weights)}
    for metric in metrics:
        sums[metric.name] = metric.update(outputs, y, weights).astype(jnp.float32)
    return sums


def layout(metrics, width: int, skip_nonfinite: bool = False) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The entries of a sums vector, in order: ``(name, shape)`` (see :func:`_stack`)."""
    shapes = {"loss": (), "count": (), **{m.name: tuple(m.shape(width)) for m in metrics}}
    if skip_nonfinite:
        shapes["skipped"] = ()
    return tuple(sorted(shapes.items()))


def _zero_sums(entries) -> dict[str, jax.Array]:
    return {k: jnp.zeros(shape, jnp.float32) for k, shape in entries}


def _stack(sums):
    """The sums as one vector (sorted keys, each raveled), read by the host in one transfer."""
    return jnp.concatenate([jnp.ravel(sums[k]) for k in sorted(sums)])


def unstack(vector, entries) -> dict[str, jax.Array]:
    """The inverse of :func:`_stack` for the ``(name, shape)`` entries of :func:`layout`."""
    out, at = {}, 0
    for name, shape in entries:
        size = math.prod(shape)
        out[name] = vector[at:at + size].reshape(shape)
        at += size
    return out


def layout_size(entries) -> int:
    """The length of a sums vector of these :func:`layout` entries."""
    return sum(math.prod(shape) for _, shape in entries)


def _width(net, params, state, x) -> int:
    """The network's output width, from shapes alone (inside a trace)."""
    out = jax.eval_shape(lambda p, s, xb: net.apply_with_state(p, s, xb)[0], params, state, x[:1])
    return out.shape[-1] if len(out.shape) > 1 else 1


def _gather(a, i):
    return a.at[i].get(mode="promise_in_bounds")


# One gather fetches the rows of several steps, about this many bytes (see _epoch).
_CHUNK_BYTES = 1 << 20


def chunk_steps(steps: int, batch: int, x, y) -> int:
    """Steps whose rows one gather fetches: about _CHUNK_BYTES, in [1, steps], equal chunks.

    1 (a gather per step) when fewer than 4 batches fit: such batches are large enough
    that the step, not the hand-off, dominates (measured neutral for 784-128-64-10/b128).
    """
    row_bytes = math.prod(x.shape[1:]) * x.dtype.itemsize + math.prod(y.shape[1:]) * y.dtype.itemsize
    most = min(steps, _CHUNK_BYTES // max(1, batch * row_bytes))
    if most < 4:
        return 1
    return -(-steps // -(-steps // most))  # ceil(steps / number of chunks): the last chunk pads few steps


def _sums(spec: Step, params, state, x, y, idx, mask, class_weight):
    """Loss and metric sums over batches in inference mode (a :func:`_stack` vector)."""
    def body(sums, batch):
        i, m = batch
        xb, yb, m = parallel.shard_batch((_gather(x, i), _gather(y, i), m), spec.mesh)
        out = spec.net.apply_with_state(_cast(params, spec.compute_dtype), state, _cast(xb, spec.compute_dtype))[0]
        out = out.astype(jnp.float32)
        w = _weights(m, class_weight, out, yb)
        return jax.tree.map(jnp.add, sums, _batch_sums(out, yb, w, spec.loss(out, yb), spec.metrics)), None

    zeros = _zero_sums(layout(spec.metrics, _width(spec.net, params, state, x)))
    return _stack(jax.lax.scan(body, zeros, (idx, mask))[0])


# -- dynamic loss scaling (float16) ------------------------------------------------------------
LOSS_SCALE = "loss_scale"
"""The key of the network state that holds float16 training's loss scale: ``{"scale", "good_steps"}``."""
LOSS_SCALE_PERIOD = 2000  # finite steps before the scale doubles (as jmp's and Keras's dynamic scaling)


def initial_loss_scale() -> dict[str, np.ndarray]:
    return {"scale": np.float32(2.0**15), "good_steps": np.int32(0)}


def _unscale(grads, state):
    """Divide the gradients by the scale; double it after a period of finite steps, halve it (>= 1) on overflow."""
    scale, good = state[LOSS_SCALE]["scale"], state[LOSS_SCALE]["good_steps"]
    grads = jax.tree.map(lambda g: g / scale.astype(g.dtype), grads)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    grow = good + 1 >= LOSS_SCALE_PERIOD
    new = {"scale": jnp.where(finite, jnp.where(grow, scale * 2, scale), jnp.maximum(scale / 2, 1.0)),
           "good_steps": jnp.where(finite & ~grow, good + 1, 0).astype(good.dtype)}
    return grads, {**state, LOSS_SCALE: new}, finite


# -- programs -----------------------------------------------------------------------------
def _fresh(spec: Training, params, opt_state, fresh):
    """``opt_state``, or when ``fresh`` (traced) the optimizer's initial state made from it as a template."""
    def initial(template):
        new = spec.init(params)
        if spec.hyperparams:  # this optimizer's values, not the structure's placeholders
            new = new._replace(hyperparams={**new.hyperparams, **{k: template.hyperparams[k] for k in spec.hyperparams}})
        return new

    return jax.lax.cond(fresh, initial, lambda s: s, opt_state)


def _train_step(spec: Training, class_weight):
    """The training step, ``(params, opt_state, state, sums), (xb, yb, mask, key) -> the same carry``."""
    net, use_key = spec.net, spec.net.needs_key
    scaled = spec.compute_dtype == jnp.float16

    def step(carry, batch):
        params, opt_state, state, sums = carry
        xb, yb, m, k = batch
        xb, yb, m = parallel.shard_batch((xb, yb, m), spec.mesh)  # rows split over the mesh; no-op without

        def loss_fn(p):
            out, new_state = net.apply_with_state(
                _cast(p, spec.compute_dtype), state, _cast(xb, spec.compute_dtype), train=True,
                key=k if use_key else None, mask=m,
            )
            out = out.astype(jnp.float32)
            values = spec.loss(out, yb)
            if values.shape != (xb.shape[0],):
                raise ValueError(f"a loss callable must return per-sample losses of shape ({xb.shape[0]},), got {values.shape}.")
            w = _weights(m, class_weight, out, yb)
            mean = losses_lib.weighted_mean(values, w)
            return (mean * state[LOSS_SCALE]["scale"] if scaled else mean), (out, new_state, values, w)

        grads, (out, new_state, values, w) = jax.grad(loss_fn, has_aux=True)(params)
        if scaled:  # float16: the loss was scaled up so that small gradients survive; scale them back
            grads, new_state, finite = _unscale(grads, new_state)
        updates, new_opt_state = spec.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if scaled:  # an overflowing step changes nothing but the scale (halved)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
            new_params, new_opt_state = keep((new_params, new_opt_state), (params, opt_state))
            new_state = {**keep({k: v for k, v in new_state.items() if k != LOSS_SCALE},
                                {k: v for k, v in state.items() if k != LOSS_SCALE}), LOSS_SCALE: new_state[LOSS_SCALE]}
        batch_sums = _batch_sums(out, yb, w, values, spec.metrics)
        if spec.skip_nonfinite:  # keep params, optimizer and BatchNorm state of a step whose update is not finite
            ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves((updates, new_params))]))
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
            new_params, new_opt_state, new_state = keep((new_params, new_opt_state, new_state), (params, opt_state, state))
            batch_sums = jax.tree.map(lambda v: jnp.where(ok, v, 0.0), batch_sums)
            batch_sums["skipped"] = jnp.where(ok, 0.0, 1.0)
        return new_params, new_opt_state, new_state, jax.tree.map(jnp.add, sums, batch_sums)

    return step


def _step_keys(use_key: bool, key, epoch_number, steps: int):
    """One key per step of the epoch, only for a network that draws random numbers (Dropout)."""
    if not use_key:
        return jnp.zeros((steps,), jnp.uint32)
    return jax.random.split(jax.random.fold_in(key, epoch_number), steps)


def _epoch(spec: Training, params, opt_state, state, x, y, idx, mask, key, epoch_number, class_weight, fresh,
           validation):
    """One epoch: ``-> (params, opt_state, state, sums, val_sums)`` (sums as :func:`_stack` vectors).

    ``fresh`` (a traced bool) replaces ``opt_state`` (then a template of the right shapes)
    by the optimizer's initial state. The rows are gathered by chunks of steps (about
    ``_CHUNK_BYTES``) rather than step by step: on a multi-core CPU, XLA splits a gather
    from an array larger than ~0.5 MB over its threads, and that hand-off, once per step,
    costs as much as a small network's whole step. Results are bitwise those of a
    per-step gather.
    """
    opt_state = _fresh(spec, params, opt_state, fresh)
    step = _train_step(spec, class_weight)
    steps, batch = idx.shape
    keys = _step_keys(spec.net.needs_key, key, epoch_number, steps)
    zeros = _zero_sums(layout(spec.metrics, _width(spec.net, params, state, x), spec.skip_nonfinite))
    carry = (params, opt_state, state, zeros)
    k = 1 if spec.mesh is not None else chunk_steps(steps, batch, x, y)
    if k == 1:
        def one(carry, b):
            i, m, kk = b
            return step(carry, (_gather(x, i), _gather(y, i), m, kk)), None

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
            xs = _gather(x, i.reshape(-1)).reshape(k, batch, *x.shape[1:])
            ys = _gather(y, i.reshape(-1)).reshape(k, batch, *y.shape[1:])
            run = lambda j, carry: step(carry, (xs[j], ys[j], m[j], kk[j]))  # noqa: E731
            return jax.lax.fori_loop(0, jnp.minimum(k, steps - first) if pad else k, run, carry), None

        firsts = jnp.arange(chunks, dtype=jnp.int32) * k
        carry, _ = jax.lax.scan(chunk, carry, (idx.reshape(chunks, k, batch), mask.reshape(chunks, k, batch),
                                               keys.reshape(chunks, k, *keys.shape[1:]), firsts))
    params, opt_state, state, sums = carry
    val_sums = None if validation is None else _sums(spec, params, state, *validation, class_weight)
    return params, opt_state, state, _stack(sums), val_sums


def _streamed(spec: Training, params, opt_state, state, sums, xs, ys, mask, keys, first, count, class_weight, fresh):
    """Steps whose data arrive as a chunk: ``xs`` ``(k, batch, ...)``, ``ys``, ``mask`` ``(k, batch)``.

    Runs the first ``count`` steps of the chunk with :func:`_epoch`'s step and returns
    ``(params, opt_state, state, sums)``; ``sums`` (a :func:`_stack` vector) carries the
    epoch's sums from chunk to chunk and ``keys[first + j]`` is step ``j``'s key (of
    :func:`epoch_keys`), so chunk after chunk adds up bitwise to one :func:`_epoch`.
    """
    opt_state = _fresh(spec, params, opt_state, fresh)
    step = _train_step(spec, class_weight)
    carry = (params, opt_state, state, unstack(sums, layout(spec.metrics, _width(spec.net, params, state, xs[0]),
                                                              spec.skip_nonfinite)))
    run = lambda j, carry: step(carry, (xs[j], ys[j], mask[j], keys[first + j]))  # noqa: E731
    params, opt_state, state, sums = jax.lax.fori_loop(0, count, run, carry)
    return params, opt_state, state, _stack(sums)


@caches.cached
def training(spec: Training):
    """The jitted epoch of :func:`_epoch` for ``spec``; params, optimizer and network state are donated."""
    return jax.jit(functools.partial(_epoch, spec), donate_argnums=(0, 1, 2))


@caches.cached
def streaming(spec: Training):
    """The jitted chunk of steps of :func:`_streamed`; params, optimizer and network state are donated."""
    return jax.jit(functools.partial(_streamed, spec), donate_argnums=(0, 1, 2))


# -- populations: the same epoch and chunk under jax.vmap over a member axis ----------------------
def _member_epoch(spec: Training, active, params, opt_state, state, *rest):
    """fit's epoch for one member; a member that is not ``active`` keeps its params and states."""
    new = _epoch(spec, params, opt_state, state, *rest)
    return (*_keep(active, new[:3], (params, opt_state, state)), *new[3:])


def _member_chunk(spec: Training, active, params, opt_state, state, *rest):
    """fit's streamed chunk for one member; a member that is not ``active`` keeps its params and states."""
    new = _streamed(spec, params, opt_state, state, *rest)
    return (*_keep(active, new[:3], (params, opt_state, state)), new[3])


def _keep(active, new, old):
    return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)


def compiler_options(mesh) -> dict[str, Any] | None:
    """XLA options of the population's programs: on CPU, LLVM's optimization level 1 (XLA's default is 2).

    A population's step spends its time in library matmuls (batched over the members) and in
    memory-bound updates of large arrays, which LLVM's level-2 passes do not speed up, and
    level 1 compiles faster. Measured in fresh processes, alternating, on the 2-core CPU: 64 x
    64-32-10 on 16,000 rows compiled in 1.17-1.25 s instead of 1.51-1.66 s, its epoch 0.67-0.69 s
    either way; 32 x 64-128-64-10 on digits compiled in 1.6-2.0 s instead of 2.8-2.9 s at the
    same speed. A single small network is another matter: there level 1 cost ~30% of its
    speed, so ``fit`` keeps XLA's default. A level set in ``XLA_FLAGS`` wins; other platforms
    keep their defaults.
    """
    devices = jax.devices() if mesh is None else mesh.devices.flat
    if next(iter(devices)).platform != "cpu" or "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    return {"xla_backend_optimization_level": 1}


@caches.cached
def population(key: tuple[Training, bool, bool]):
    """The population's epoch: :func:`_epoch` vmapped over the member axis, the data shared.

    ``key = (spec, per_member_weights, per_member_validation_weights[, members_mesh])``; with a
    ``members_mesh`` the members are split over its ``"members"`` axis (:func:`jdense.parallel.spread_members`,
    no communication inside). The program takes
    ``(active, params, opt_state, state, ...)`` as :func:`training` does after ``active``;
    with per-member weights the step mask (and the validation mask) has a member axis.
    """
    spec, per_member, per_member_val, *spread = key
    val_axes = (None, None, None, 0) if per_member_val else None
    axes = (0, 0, 0, 0) + (None,) * 3 + (0 if per_member else None,) + (None,) * 4 + (val_axes,)
    if spread and spread[0] is not None:  # members split over a "members" mesh axis (fit_population(devices=))
        return parallel.spread_members(functools.partial(_member_epoch, spec), spread[0], axes, donate_argnums=(1, 2, 3),
                                       compiler_options=compiler_options(spread[0]))
    return jax.jit(jax.vmap(functools.partial(_member_epoch, spec), in_axes=axes), donate_argnums=(1, 2, 3),
                   compiler_options=compiler_options(spec.mesh))


@caches.cached
def population_streaming(spec: Training):
    """The population's streamed chunk: :func:`_streamed` vmapped over members (sums per member, chunk shared)."""
    axes = (0, 0, 0, 0, 0) + (None,) * 8
    return jax.jit(jax.vmap(functools.partial(_member_chunk, spec), in_axes=axes), donate_argnums=(1, 2, 3),
                   compiler_options=compiler_options(spec.mesh))


@jax.jit
def select(mask, new, old):
    """Per member: ``new`` where ``mask`` else ``old`` (e.g. the best params of EarlyStopping(restore_best))."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


@functools.partial(jax.jit, static_argnums=(0, 3))
def epoch_keys(use_key: bool, key, epoch_number, steps: int):
    """The per-step keys of an epoch for :func:`_streamed`, as :func:`_epoch` draws them (zeros without Dropout)."""
    return _step_keys(use_key, key, epoch_number, steps)


@caches.cached
def evaluation(key: tuple):
    """Jitted ``(params, state, x, y, idx, mask, class_weight) -> sums`` in inference mode.

    ``key = (spec, population)`` or ``(spec, population, per_member_mask)``; with
    ``population``, params and state have a leading member axis and so do the sums (and
    the mask with ``per_member_mask``: each member's own sample weights).
    """
    spec, population, per_member = (*key, False)[:3]
    fn = functools.partial(_sums, spec)
    axes = (0, 0, None, None, None, 0 if per_member else None, None)
    return jax.jit(jax.vmap(fn, in_axes=axes) if population else fn)


def _outputs(net: Sequential, mesh, params, state, x, idx, n):
    def body(_, i):
        return None, net.apply_with_state(params, state, parallel.shard_batch(_gather(x, i), mesh))[0]

    out = parallel.replicate_output(jax.lax.scan(body, None, idx)[1], mesh)
    return out.reshape(-1, *out.shape[2:])[:n]


@caches.cached
def prediction(key: tuple):
    """Jitted ``(params, state, x, idx, *, n) -> the first n outputs`` for ``key = (net, mesh, population)``."""
    net, mesh, population = key

    def outputs(params, state, x, idx, n):
        if population:
            return jax.vmap(lambda p, s: _outputs(net, mesh, p, s, x, idx, n))(params, state)
        return _outputs(net, mesh, params, state, x, idx, n)

    return jax.jit(outputs, static_argnames="n")


@caches.cached
def sampling(net: Sequential):
    """Jitted ``(params, state, x, idx, key, *, samples, chunk, n) -> (samples, n, ...)``: inference outputs once
    per key of ``jax.random.split(key, samples)``, vmapped over ``chunk`` keys at a time (``jax.lax.map``); each
    row draws from its own key (``fold_in`` of its index), so the draws depend on neither ``batch`` nor ``chunk``.
    Layers that draw at inference (MC dropout) see the key."""

    def one(params, state, x, idx, key, n):
        def body(_, i):
            keys = jax.vmap(lambda row: jax.random.fold_in(key, row))(i)
            row = lambda xr, k: net.apply_with_state(params, state, xr[None], key=k)[0][0]  # noqa: E731
            return None, jax.vmap(row)(_gather(x, i), keys)

        out = jax.lax.scan(body, None, idx)[1]
        return out.reshape(-1, *out.shape[2:])[:n]

    def outputs(params, state, x, idx, key, samples, chunk, n):
        return jax.lax.map(lambda k: one(params, state, x, idx, k, n), jax.random.split(key, samples), batch_size=chunk)

    return jax.jit(outputs, static_argnames=("samples", "chunk", "n"))


_SHAPES: collections.OrderedDict = collections.OrderedDict()
caches.register(_SHAPES.clear)


def _opt_state_shapes(init, params):
    """``jax.eval_shape(init, params)``, cached per optimizer structure and params shapes (tracing costs ~3 ms)."""
    leaves, treedef = jax.tree.flatten(params)
    key = (getattr(init, "program", init), treedef, tuple((np.shape(a), np.dtype(a.dtype)) for a in leaves))
    try:
        _SHAPES.move_to_end(key)
        return _SHAPES[key]
    except KeyError:
        shapes = _SHAPES[key] = jax.eval_shape(init, params)
        if len(_SHAPES) > CACHE_SIZE:
            _SHAPES.popitem(last=False)
        return shapes
    except TypeError:  # an unhashable init
        return jax.eval_shape(init, params)


def initial_opt_state(tx: optax.GradientTransformation, params) -> tuple[Any, tuple[str, ...]]:
    """A host template of ``tx.init(params)`` for :func:`_epoch` to fill, and the hyperparameters it carries.

    Zeros of the right shapes (no program is compiled for it); a :func:`jdense.optimizer`'s
    hyperparameter values are set here, the rest is made inside the first epoch.
    """
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _opt_state_shapes(tx.init, params))
    values = getattr(tx.init, "hyperparams", None)
    if values is None:
        return template, ()
    from jdense.optim import host_values, with_values

    return with_values(template, host_values(values)), tuple(sorted(values))


def clear_cache() -> None:
    """Forget every compiled program of jdense (training, populations, evaluation, prediction, sampling, init,
    optimizer init).

    The next call of each compiles again. JAX's own caches are left alone
    (``jax.clear_caches()`` empties those).
    """
    caches.clear()
