"""Meshes and shardings that :func:`jdense.fit` uses to train on many devices and hosts.

Everything here is JAX's own runtime: a :class:`jax.sharding.Mesh` with one axis,
``"data"``, :class:`jax.sharding.NamedSharding` placements, and
``jax.lax.with_sharding_constraint`` inside the compiled epoch; XLA's SPMD partitioner
inserts the gradient all-reduce. Multi-process runs use :func:`jax.distributed.initialize`.

The layout ``fit(..., mesh=data_mesh())`` uses:

- the data set ``x, y`` is *replicated* on every device (each process passes the whole
  set, the same on every process), so each step's random rows are gathered locally,
  without communication;
- each step's batch is *sharded* by rows over the ``"data"`` axis: every device runs the
  forward and backward pass on ``batch / devices`` rows;
- params, optimizer state and network state are *replicated* (or, for leaves placed with
  :func:`shard_params`, sharded FSDP-style); the loss is the mean over the global batch,
  so the result equals single-device training up to float rounding.

Example:
  >>> mesh = jdense.parallel.data_mesh()            # every device of every process
  >>> result = jdense.fit(net, params, x, y, loss="cross_entropy", optimizer=opt,
  ...                     epochs=5, batch_size=256, key=key, mesh=mesh)
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jdense import checks

DATA = "data"
"""The name of the mesh axis that batches are sharded over."""

MEMBERS = "members"
"""The name of the mesh axis that a population's members are spread over (:func:`member_layout`)."""


def cpu_devices(n: int | None = None) -> int:
    """Expose ``n`` CPU devices to JAX (default: one per core this process may run on), before its backend starts.

    JAX's CPU backend is one device however many cores the machine has, and a small
    network's step runs on about one core. A population (:func:`jdense.fit_population`)
    spreads its members over every device, so with one device per core it fills them all.
    This sets ``jax_num_cpu_devices``, which JAX reads once, when it starts its backend
    (the first JAX operation); call it right after ``import jdense``. Importing jdense
    changes no JAX setting: this is opt-in. A plain :func:`jdense.fit` still runs on one
    device (the first), so it is unaffected; GPU and TPU devices are not affected either.

    Args:
      n: how many CPU devices; default: the cores of ``os.sched_getaffinity`` (or ``os.cpu_count()``).

    Returns:
      The number of CPU devices set.

    Raises:
      TypeError, ValueError: ``n`` is not a positive int.
      RuntimeError: JAX's backend already started with another number of CPU devices (the
        message says how to fix it). Calling it again with the count already in use is a no-op.

    Example:
      >>> import jdense
      >>> jdense.cpu_devices()        # before any JAX operation
      2
    """
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"cpu_devices: n must be a positive int (how many CPU devices), got {checks.short(n)}.")
    if n < 1:
        raise ValueError(f"cpu_devices: n must be at least 1, got {n}; pass e.g. n=2 or leave it out for one per core.")
    n = int(n)
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # JAX's backend has started: fine only if it has n CPU devices already
        have = len(jax.local_devices(backend="cpu"))
        if have != n:
            raise RuntimeError(
                f"cpu_devices({n}): JAX's backend already started with {have} CPU device(s), and its device count is fixed "
                "from then on. Call jdense.cpu_devices() right after `import jdense`, before any JAX operation "
                "(or set XLA_FLAGS=--xla_force_host_platform_device_count=N before starting Python)."
            ) from None
    return n


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh ``("data",)`` over ``devices`` (default: every device of every process).

    Args:
      devices: the devices to train on, e.g. ``jax.devices()[:2]``. In a multi-process run
        every process must pass the same list (the default does).

    Returns:
      A :class:`jax.sharding.Mesh` with axis ``"data"`` for ``fit(..., mesh=...)``.

    Example:
      >>> mesh = data_mesh()
      >>> mesh.shape
      {'data': 4}
    """
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("data_mesh needs at least one device; pass e.g. devices=jax.devices().")
    kwargs = {"axis_types": (jax.sharding.AxisType.Auto,)} if hasattr(jax.sharding, "AxisType") else {}
    return Mesh(np.asarray(devices, dtype=object), (DATA,), **kwargs)


def _check_mesh(mesh: Any) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh such as jdense.parallel.data_mesh(), got {checks.short(mesh)}.")
    if DATA not in mesh.axis_names:
        raise ValueError(
            f"mesh must have an axis named {DATA!r} to shard batches over, got axes {mesh.axis_names}; "
            "build it with jdense.parallel.data_mesh()."
        )
    return mesh


def data_size(mesh: Mesh) -> int:
    """How many shards a batch is split into: the size of the mesh's ``"data"`` axis."""
    return int(_check_mesh(mesh).shape[DATA])


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of ``mesh``."""
    return NamedSharding(_check_mesh(mesh), P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (the first axis) split over the ``"data"`` axis, the rest whole."""
    return NamedSharding(_check_mesh(mesh), P(DATA))


def check_batch(mesh: Mesh | None, batch: int, what: str = "fit") -> None:
    """Raise a ValueError unless ``batch`` splits evenly over the mesh's ``"data"`` axis (no-op without a mesh).

    The padded last batch of an epoch has the same size, so one check covers every step.
    """
    if mesh is None:
        return
    n = data_size(mesh)
    if batch % n:
        lower, upper = (batch // n) * n, (batch // n + 1) * n
        hint = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"{what}: batch_size={batch} does not split evenly over the {n} devices of the mesh's {DATA!r} axis; "
            f"pass a multiple of {n}, e.g. batch_size={hint}."
        )


def _on_mesh(leaf: Any, mesh: Mesh) -> bool:
    sharding = getattr(leaf, "sharding", None)
    return isinstance(sharding, NamedSharding) and sharding.mesh == mesh


def _put(leaf: Any, sharding: NamedSharding) -> jax.Array:
    if sharding.is_fully_addressable:
        return jax.device_put(leaf, sharding)
    # Multi-process: every process holds the same value; each fills its own devices' shards.
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_put(jax.random.key_data(leaf), sharding), impl=jax.random.key_impl(leaf))
    value = np.asarray(leaf)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def place(tree: Any, mesh: Mesh | None) -> Any:
    """Put every array of ``tree`` on ``mesh`` (any mesh), replicated; the identity when ``mesh`` is None.

    Leaves already laid out on this mesh (e.g. by :func:`shard_params`) keep their sharding.
    NumPy, JAX and Python-scalar leaves are accepted; ``None`` leaves stay ``None``.
    In a multi-process run every process must pass the same values.
    """
    if mesh is None:
        return tree
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh such as jdense.parallel.data_mesh(), got {checks.short(mesh)}.")
    rep = NamedSharding(mesh, P())
    leaves, treedef = jax.tree.flatten(tree)
    todo = [i for i, a in enumerate(leaves) if not _on_mesh(a, mesh)]
    if rep.is_fully_addressable:  # one batched transfer
        placed = jax.device_put([leaves[i] for i in todo], rep)
    else:
        placed = [_put(leaves[i], rep) for i in todo]
    for i, a in zip(todo, placed):
        leaves[i] = a
    return jax.tree.unflatten(treedef, leaves)


def device_data(arrays: tuple, mesh: Mesh | None, what: str = "fit") -> tuple:
    """Data arrays to the device(s), as ``fit`` needs them.

    Without a mesh, ``jax.device_put`` each (one device). With one, check that every process
    passed the same data (:func:`check_same_data`), then replicate it on the mesh.
    """
    if mesh is None:  # device_put compiles nothing (jnp.asarray would, once per shape)
        return tuple(jax.device_put(a) for a in arrays)
    check_same_data(*arrays, what=what)
    return place(tuple(arrays), mesh)


def put_steps(tree: Any, mesh: Mesh | None, local: bool = False) -> Any:
    """Chunks of steps ``(k, batch, ...)`` to the device(s), each step's batch split by rows over ``"data"``.

    With ``local=True`` each process passes only its own rows of every batch,
    ``(k, batch / processes, ...)``; the global batch is the processes' rows in the
    mesh's device order (process order for :func:`data_mesh`). Otherwise every process
    passes the same whole chunk.
    """
    if mesh is None:
        return jax.device_put(tree)
    steps = NamedSharding(_check_mesh(mesh), P(None, DATA))
    if local:
        n = jax.process_count()
        return jax.tree.map(
            lambda a: jax.make_array_from_process_local_data(steps, a, (a.shape[0], a.shape[1] * n, *a.shape[2:])), tree)
    if steps.is_fully_addressable:
        return jax.device_put(tree, steps)
    return jax.tree.map(lambda a: jax.make_array_from_callback(a.shape, steps, lambda index: a[index]), tree)


def process_values(value: int) -> list[int]:
    """Every process's ``value`` (an int), in process order; ``[value]`` with one process. Every process must call it."""
    if jax.process_count() == 1:
        return [int(value)]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray([value], np.int64))).ravel().tolist()


def check_same_data(*arrays: Any, what: str = "fit") -> None:
    """In a multi-process run, check that every process passed the same arrays (a CRC32 per array).

    A no-op with one process. Every process must call it (it communicates).

    Raises:
      ValueError: when the checksums differ between processes.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    sums = np.array([zlib.crc32(np.ascontiguousarray(a).tobytes()) for a in arrays if a is not None], np.uint32)
    try:
        multihost_utils.assert_equal(sums)
    except AssertionError as err:
        raise ValueError(
            f"{what}: the processes passed different data; with a mesh every process must pass the whole, "
            "identical data set (the same files, the same preprocessing, the same order)."
        ) from err


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Inside a jitted function: constrain each array's rows to be split over the ``"data"`` axis.

    Arrays whose first axis does not split evenly are left to the compiler (computed
    replicated); :func:`check_batch` makes sure training batches always split. The
    identity when ``mesh`` is None.
    """
    if mesh is None:
        return tree
    n, rows = data_size(mesh), batch_sharding(mesh)
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, rows) if a.ndim and a.shape[0] % n == 0 else a, tree)


def replicate_output(tree: Any, mesh: Mesh | None) -> Any:
    """Inside a jitted function: constrain arrays to be replicated (so every process can read them)."""
    if mesh is None:
        return tree
    rep = replicated(mesh)
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, rep), tree)


def shard_params(params: Any, mesh: Mesh, *, min_size: int = 2**18) -> Any:
    """FSDP-style: split each large weight over the ``"data"`` axis, replicate the rest.

    A leaf with at least ``min_size`` entries is split along its largest axis that
    divides evenly over the devices; XLA gathers it for the matmuls and reduce-scatters
    its gradient. Pass the result to ``fit(..., mesh=mesh)``: the optimizer state
    follows the params' layout, and the trained params come back sharded the same way.
    It saves memory per device at the cost of communication; the numbers match
    replicated training up to float rounding.

    Args:
      params: a params tree (``net.init(key)``).
      mesh: the mesh from :func:`data_mesh`.
      min_size: smallest leaf (in entries) worth splitting.

    Returns:
      The params as JAX arrays on ``mesh``.
    """
    n = data_size(mesh)

    def spec(leaf) -> P:
        shape = np.shape(leaf)
        if int(np.prod(shape)) < min_size:
            return P()
        axes = [i for i in sorted(range(len(shape)), key=lambda i: -shape[i]) if shape[i] % n == 0]
        if not axes:
            return P()
        parts = [None] * len(shape)
        parts[axes[0]] = DATA
        return P(*parts)

    return jax.tree.map(lambda a: _put(a, NamedSharding(mesh, spec(a))), params)


def to_host(tree: Any) -> Any:
    """NumPy copies of a tree of (possibly multi-process, sharded) arrays, the same on every process.

    Every process must call it (it may communicate). Use it, e.g., before saving a
    checkpoint on process 0 only.
    """

    def fetch(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(fetch, tree)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_cpu_devices: int | None = None,
    cpu_collectives: str | None = "gloo",
    **kwargs: Any,
) -> None:
    """Join a multi-process run: :func:`jax.distributed.initialize`, with CPU collectives set up.

    Call it first, before any other JAX call. On a GPU or TPU cluster call it with no
    arguments: JAX detects the coordinator, the number of processes and this process's
    id from SLURM, Open MPI, Kubernetes or the Cloud TPU environment. On one machine or
    a plain cluster pass them yourself.

    Args:
      coordinator_address: ``"host:port"`` of process 0, e.g. ``"127.0.0.1:12345"``.
      num_processes: how many processes take part.
      process_id: this process's index, ``0 .. num_processes - 1``.
      local_cpu_devices: for CPU-only runs, how many CPU devices this process exposes
        (``jax_num_cpu_devices``; the same as ``XLA_FLAGS=--xla_force_host_platform_device_count``).
      cpu_collectives: the CPU backend's cross-process collectives (``"gloo"``; ``None``
        leaves JAX's setting alone). Only the CPU backend reads it.
      **kwargs: passed on to :func:`jax.distributed.initialize` (``local_device_ids``,
        ``initialization_timeout``, ...).

    Example:
      >>> jdense.parallel.initialize("10.0.0.1:1234", num_processes=2, process_id=rank)
      >>> mesh = jdense.parallel.data_mesh()   # the devices of both processes
    """
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if local_cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(local_cpu_devices))
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)


# -- populations: members spread over devices -------------------------------------------------
def member_devices(devices: Any = None, what: str = "fit_population") -> list[jax.Device]:
    """The devices a population spreads its members over: ``None`` every device (of every process), ``k`` the first k, or a list."""
    every = jax.devices()
    if devices is None:
        return list(every)
    if isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
        if not 1 <= devices <= len(every):
            raise ValueError(f"{what}: devices={devices} must be between 1 and the {len(every)} device(s) JAX has; "
                             "pass e.g. devices=1, a list such as jax.devices()[:2], or None for all.")
        return list(every[:int(devices)])
    if isinstance(devices, jax.Device):
        devices = [devices]
    if isinstance(devices, str | bytes) or not isinstance(devices, Sequence | np.ndarray):
        raise TypeError(f"{what}: devices must be None (every device), a count or a list of jax devices, got {checks.short(devices)}.")
    devices = list(np.ravel(np.asarray(devices, dtype=object)))
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"{what}: devices must be a non-empty list of jax devices such as jax.devices()[:2], got {checks.short(devices)}.")
    if len(set(devices)) != len(devices):
        raise ValueError(f"{what}: devices lists a device twice ({devices}); give each device once.")
    return devices


@dataclasses.dataclass(frozen=True)
class MemberLayout:
    """How a population's ``count`` members lie on devices: split along a ``"members"`` mesh axis, or on one device.

    With ``mesh`` (one axis, :data:`MEMBERS`), the member axis is padded to ``padded`` (a
    multiple of the device count) with copies of the last member, which never count
    (:meth:`pad_mask` keeps them inactive); each device holds ``padded / devices`` members.
    Data and everything else shared is replicated, so a step needs no communication. With
    ``mesh=None`` (one device, or a batch-sharded ``data`` mesh) every method is the identity.
    """

    count: int
    padded: int
    mesh: Mesh | None = None

    def pad(self, tree: Any) -> Any:
        """Host arrays with ``count`` rows padded to ``padded`` rows (copies of the last row); padded ones are left as they are."""
        extra = self.padded - self.count

        def grow(a):
            a = np.asarray(a)
            return np.concatenate([a, np.repeat(a[-1:], extra, 0)]) if a.shape[0] == self.count else a

        return tree if not extra else jax.tree.map(grow, tree)

    def pad_mask(self, flags: np.ndarray) -> np.ndarray:
        """A per-member bool vector padded with False (padding members never act)."""
        return np.concatenate([np.asarray(flags, bool), np.zeros(self.padded - self.count, bool)])

    def place(self, tree: Any) -> Any:
        """Host trees with a leading member axis, padded and split over the devices along :data:`MEMBERS`."""
        if self.mesh is None:
            return tree
        sharding = NamedSharding(self.mesh, P(MEMBERS))
        leaves, treedef = jax.tree.flatten(self.pad(tree))
        if sharding.is_fully_addressable:  # one batched transfer
            return jax.tree.unflatten(treedef, jax.device_put(leaves, sharding))
        return jax.tree.unflatten(treedef, [_put(a, sharding) for a in leaves])

    def host(self, tree: Any) -> Any:
        """NumPy copies of per-member outputs, padding dropped (every process must call it: it may gather)."""
        if self.mesh is None:
            return jax.tree.map(np.asarray, tree)
        return jax.tree.map(lambda a: a[:self.count], to_host(tree))

    def local_indices(self) -> np.ndarray:
        """The members (of ``count``) whose rows this process's devices hold, in order."""
        if self.mesh is None:
            return np.arange(self.count)
        per = self.padded // self.mesh.devices.size
        mine = [i for i, d in enumerate(self.mesh.devices.flat) if d.process_index == jax.process_index()]
        rows = np.concatenate([np.arange(i * per, (i + 1) * per) for i in mine]) if mine else np.zeros(0, int)
        return rows[rows < self.count]

    def gather(self, tree: Any, local: bool = False) -> Any:
        """Members' trees as one device's arrays (the process's first device), padding dropped.

        ``local=False``: every member, gathered from every process (each must call it).
        ``local=True``: only this process's members (:meth:`local_indices`), without communication.
        """
        if self.mesh is None:
            return tree
        target = jax.local_devices()[0]
        if not local:
            return jax.device_put(self.host(tree), target)
        rows = self.local_indices()

        def mine(a):
            parts = {s.index[0].start or 0: np.asarray(s.data) for s in a.addressable_shards}
            starts = sorted(parts)
            take = [parts[st][r - st] for r in rows for st in [max(v for v in starts if v <= r)]]
            return np.stack(take) if take else np.zeros((0, *a.shape[1:]), a.dtype)

        return jax.device_put(jax.tree.map(mine, tree), target)


def spread_members(fn, mesh: Mesh, in_axes: Sequence[int | None], **jit_options: Any):
    """``jax.jit`` of ``jax.vmap(fn, in_axes)`` with the member axis split over ``mesh``'s :data:`MEMBERS` axis.

    Arguments vmapped on axis 0 are split over the devices, the others (``None``) replicated
    (``in_axes`` may nest, as ``jax.vmap``'s: a tuple argument with an axis per element);
    every output has the member axis and is split likewise. Each device runs the vmapped
    ``fn`` on its own members (``jax.shard_map``): no communication. ``jit_options`` go to
    ``jax.jit`` (``donate_argnums``, ``compiler_options``).
    """
    split, whole = P(MEMBERS), P()

    def spec(axis):
        if axis not in (0, None):
            raise ValueError(f"spread_members: in_axes must be 0 (a member axis) or None (shared), got {tuple(in_axes)}.")
        return split if axis == 0 else whole

    specs = jax.tree.map(spec, tuple(in_axes), is_leaf=lambda a: a is None)  # nested as vmap's in_axes (e.g. a tuple argument)
    body = jax.shard_map(jax.vmap(fn, in_axes=tuple(in_axes)), mesh=mesh, in_specs=specs, out_specs=split, check_vma=False)
    return jax.jit(body, **jit_options)


def member_layout(devices: Any, count: int, *, mesh: Mesh | None = None, what: str = "fit_population") -> MemberLayout:
    """Where a population of ``count`` members trains: spread over ``devices`` (see :func:`member_devices`).

    With a batch-sharded ``mesh`` (``fit_population(mesh=data_mesh())``) the mesh decides
    (members replicated, each batch split over ``"data"``), and ``devices`` must be left out:
    the two layouts are not combined. One device gives a layout without a mesh.

    Raises:
      ValueError: ``devices`` and ``mesh`` are both given.
    """
    if mesh is not None:
        if devices is not None:
            raise ValueError(
                f"{what}: pass either mesh= (each batch split over its 'data' axis, members replicated) or devices= "
                "(members spread over the devices, each batch whole), not both; for a large population devices= alone is "
                "the faster layout (no communication inside a step)."
            )
        return MemberLayout(count, count)
    chosen = member_devices(devices, what)
    if jax.process_count() > 1:
        missing = sorted(set(range(jax.process_count())) - {d.process_index for d in chosen})
        if missing:
            raise ValueError(f"{what}: devices={checks.short(devices)} has no device of process(es) {missing}; in a multi-process run "
                             "every process trains some members: pass devices=None (every device) or a list with devices of each.")
    elif count < len(chosen):  # no device of its own for padding members only
        chosen = chosen[:count]
    if len(chosen) == 1 and chosen[0] == jax.local_devices()[0]:
        return MemberLayout(count, count)
    padded = -(-count // len(chosen)) * len(chosen)
    kwargs = {"axis_types": (jax.sharding.AxisType.Auto,)} if hasattr(jax.sharding, "AxisType") else {}
    return MemberLayout(count, padded, Mesh(np.asarray(chosen, dtype=object), (MEMBERS,), **kwargs))
