"""Streaming: the host side of :func:`jdense.fit`'s epoch for data that stay off the device.

A *source* cuts an epoch into chunks of steps on the host: :class:`Rows` gathers the
rows of each step in the epoch's permutation order from any row-indexable array (a
NumPy memmap, an ``h5py``/``zarr`` array), :class:`Batches` stacks the ``(x, y)``
batches of an iterable (a generator, a ``grain`` or PyTorch data loader) in their own
order. A :class:`Feeder` runs a source in a background thread and puts each chunk on
the device(s) ahead of the compiled steps (``jax.device_put``: double buffering), with
at most ``depth`` chunks alive at once. The host buffers are 64-byte aligned and
reused in a ring, so on CPU ``device_put`` aliases them instead of copying.

The chunk size follows a memory budget (:func:`budget`, :func:`chunk_steps`): by
default half of the device's free memory (``Device.memory_stats()``), or of the
host's available RAM where the device reports none.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from jdense import checks

CHUNK_CAP = 32 << 20
"""Largest chunk in bytes: bigger ones only cost host memory (the hand-off is per chunk, not per step)."""

DEPTH = 2
"""Chunks alive at once: one whose steps run while the next is gathered and put on the device."""


# -- what is streamed, and how much at a time ----------------------------------------------
def is_batches(x: Any, y: Any) -> bool:
    """``x`` is an iterable of ``(x_batch, y_batch)`` pairs passed with ``y=None`` (Keras' convention)."""
    return y is None and not hasattr(x, "shape") and isinstance(x, Iterable) and not isinstance(x, str | bytes)


def rows(a: Any, name: str, what: str = "fit") -> Any:
    """``a`` if it can be read by rows without loading it (a NumPy array or memmap, h5py, zarr), else ``np.asarray(a)``."""
    import jax

    keep = all(hasattr(a, k) for k in ("shape", "dtype", "__getitem__")) and not isinstance(a, jax.Array)
    a = a if keep else np.asarray(a)
    if len(a.shape) == 0 or a.shape[0] == 0:
        raise ValueError(f"{what}: {name} is empty (shape {tuple(a.shape)}); pass at least one sample.")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{what}: {name} must be numeric, got dtype {a.dtype}.")
    return a


def batch_order(seed: list[int], epoch: int, n: int, batch: int, salt: tuple[int, ...] = ()) -> np.ndarray:
    """The order of the ``n`` rows in ``epoch``: the one place where jdense shuffles.

    ``np.random.default_rng([*seed, epoch, *salt]).permutation(n)`` (a NumPy permutation:
    a sort-based ``jax.random.permutation`` costs as much as an epoch of a small network
    on CPU), or the rows in order when one batch takes them all. Depends only on the
    key's ``seed`` and the epoch, so a resumed fit repeats an uninterrupted one.
    """
    if batch >= n:
        return np.arange(n)
    return np.random.default_rng([*seed, epoch, *salt]).permutation(n)


def source_name(a: Any) -> str:
    """How an error names a data array: its file for a memory map, else its type."""
    filename = getattr(a, "filename", None)
    return f"the memory map {filename}" if filename else f"the {type(a).__name__}"


def check_file_size(a: Any, what: str) -> None:
    """Raise (instead of a SIGBUS on reading) when a memory map's file has become shorter than the array
    (:func:`jdense.checks.memmap_intact`)."""
    checks.memmap_intact(a, what)


def first_nonfinite(a: Any, block: int = 1 << 16) -> int | None:
    """The index of the first row of ``a`` with NaN or Inf (read block by block), or None."""
    if not np.issubdtype(a.dtype, np.floating):
        return None
    for start in range(0, a.shape[0], block):
        part = np.asarray(a[start:start + block])
        bad = ~np.isfinite(part.reshape(part.shape[0], -1)).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def nbytes(*arrays: Any) -> int:
    """Bytes of the arrays (of their shapes and dtypes: nothing is read)."""
    return sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in arrays if a is not None)


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def free_memory(device: Any = None) -> int:
    """Free bytes on ``device`` (default: the first local one), or the host's available RAM if it reports none."""
    import jax

    device = jax.local_devices()[0] if device is None else device
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics raise various errors
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return _host_available()


def budget(device_memory: Any) -> int:
    """``device_memory`` checked, or the default: half the free memory (:func:`free_memory`)."""
    if device_memory is None:
        return free_memory() // 2
    if isinstance(device_memory, bool) or not isinstance(device_memory, int | np.integer | float | np.floating) \
            or not device_memory > 0 or not math.isfinite(device_memory):
        raise ValueError("device_memory must be a positive number of bytes (finite), e.g. device_memory=2**30, got "
                         f"{checks.short(device_memory)}.")
    return int(device_memory)


def step_bytes(batch: int, x_like: tuple, y_like: tuple) -> int:
    """Host bytes of one step's ``x``, ``y`` and mask rows; ``x_like = (shape of a row, dtype)``."""
    (xshape, xdt), (yshape, ydt) = x_like, y_like
    return batch * (math.prod(xshape) * np.dtype(xdt).itemsize + math.prod(yshape) * np.dtype(ydt).itemsize + 4)


def chunk_steps(steps: int, step_bytes: int, device_memory: int) -> int:
    """Steps per chunk: ``DEPTH`` chunks (and their host twins) within ``device_memory``, at most ``CHUNK_CAP`` each.

    At least 1; the epoch's chunks are made as equal as possible.
    """
    most = max(1, min(steps, min(device_memory // (2 * DEPTH), CHUNK_CAP) // max(1, step_bytes)))
    return -(-steps // -(-steps // most))


def _aligned(shape: tuple, dtype) -> np.ndarray:
    """A zeroed array at a 64-byte boundary (which jax.device_put on CPU aliases instead of copying)."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.zeros(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size].view(dtype).reshape(shape)


class _Ring:
    """``DEPTH`` sets of chunk buffers ``(xs, ys, mask)``, reused in turn (the Feeder's permits keep them safe)."""

    def __init__(self, k: int, batch: int, x_like: tuple, y_like: tuple):
        (xshape, xdtype), (yshape, ydtype) = x_like, y_like
        self.sets = [(_aligned((k, batch, *xshape), xdtype), _aligned((k, batch, *yshape), ydtype),
                      _aligned((k, batch), np.float32)) for _ in range(DEPTH)]
        self.turn = 0

    def next(self):
        self.turn += 1
        return self.sets[(self.turn - 1) % DEPTH]


@dataclasses.dataclass
class Chunk:
    """Steps ``first .. first + count - 1`` of ``epoch``: ``xs`` ``(k, batch, ...)``, ``ys``, ``mask`` ``(k, batch)``."""

    epoch: int
    first: int
    count: int
    xs: Any
    ys: Any
    mask: Any


# -- sources --------------------------------------------------------------------------------
def _take(a, idx: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = a[idx]`` for a NumPy array or memmap, or for an array that takes only sorted rows (h5py, zarr)."""
    if isinstance(a, np.ndarray):
        np.take(a, idx, axis=0, out=out, mode="clip")  # clip: indices are in range; "raise" would buffer out
        return
    rows, inverse = np.unique(idx, return_inverse=True)
    data = np.asarray(a.oindex[rows] if hasattr(a, "oindex") else a[rows])
    np.take(data, inverse.ravel(), axis=0, out=out, mode="clip")


class Rows:
    """Chunks of an epoch from row-indexable ``x, y``: the permutation ``np.random.default_rng([*seed, epoch, *salt])``.

    Each step's rows are those of ``fit``'s in-memory epoch: the last partial batch is
    padded with row 0 at weight 0. ``salt`` (a process's index) draws another permutation.
    """

    def __init__(self, x, y, batch: int, seed: list[int], salt: tuple[int, ...] = (), what: str = "fit"):
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{what}: x has {x.shape[0]} samples but y has {y.shape[0]} (their first axes must be equal).")
        self.x, self.y, self.batch, self.seed, self.salt, self.what = x, y, batch, list(seed), tuple(salt), what
        check_file_size(x, what)
        check_file_size(y, what)
        self.n = x.shape[0]
        self.sample_x = np.asarray(x[:1])
        self.shape = tuple(x.shape)  # the caller's array, for messages
        self.steps = -(-self.n // batch)
        self.x_like, self.y_like = (tuple(x.shape[1:]), x.dtype), (tuple(y.shape[1:]), y.dtype)
        self.step_bytes = step_bytes(batch, self.x_like, self.y_like)

    def chunks(self, epochs: range, k: int) -> Iterator[Chunk]:
        ring, b = _Ring(k, self.batch, self.x_like, self.y_like), self.batch
        for epoch in epochs:
            order = batch_order(self.seed, epoch, self.n, b, self.salt)
            for first in range(0, self.steps, k):
                count = min(k, self.steps - first)
                xs, ys, mask = ring.next()
                idx = np.zeros(count * b, np.int64)
                real = order[first * b:(first + count) * b]
                idx[:real.size] = real
                check_file_size(self.x, self.what)
                check_file_size(self.y, self.what)
                _take(self.x, idx, xs.reshape(-1, *xs.shape[2:])[:idx.size])
                _take(self.y, idx, ys.reshape(-1, *ys.shape[2:])[:idx.size])
                mask[:count] = (np.arange(first * b, (first + count) * b) < self.n).reshape(count, b)
                yield Chunk(epoch, first, count, xs, ys, mask)

    def nonfinite(self) -> str | None:
        """Names the first row of x or y with NaN or Inf (its global row and the file), or None when all are finite."""
        for name, a in (("x", self.x), ("y", self.y)):
            row = first_nonfinite(a)
            if row is not None:
                return (f"{name} has NaN or infinite values in row {row} of {source_name(a)}; drop or impute that row "
                        "(or pass skip_nonfinite=True to skip the steps it is in)")
        return None


class Batches:
    """Chunks of an epoch from an iterable of ``(x_batch, y_batch)``, in its own order.

    A re-iterable (a list, a data loader) starts over each epoch; an iterator (a
    generator) goes on where the last epoch stopped. A batch with fewer rows than
    ``batch`` (a loader's last one) is padded with zeros at weight 0.
    """

    def __init__(self, data: Iterable, batch: int | None, steps: int | None, what: str = "fit", finite: bool = True):
        self.data, self.what, self.finite = data, what, finite
        self.restarts = iter(data) is not data
        if steps is None and hasattr(data, "__len__") and len(data) == 0:
            raise ValueError(f"{what}: x is an empty {type(data).__name__} of batches; pass arrays x, y or an iterable "
                             "that yields (x_batch, y_batch) pairs.")
        if steps is None:
            if not hasattr(data, "__len__"):
                raise ValueError(
                    f"{what}: x is an iterable of batches without a length; pass steps_per_epoch= "
                    "(the number of batches that make an epoch).")
            steps = len(data)
        self.steps = checks.positive_int("steps_per_epoch", steps)
        self._iter = iter(data)
        try:
            first = next(self._iter)
        except StopIteration:
            raise ValueError(f"{what}: x is an empty iterable of batches; it must yield (x_batch, y_batch) pairs.") from None
        xb, yb = self._pair(first, 0, 0)
        self.batch = xb.shape[0] if batch is None else batch
        self.x_like, self.y_like = (xb.shape[1:], xb.dtype), (yb.shape[1:], yb.dtype)
        self._check(xb, yb, 0, 0)
        self.step_bytes = step_bytes(self.batch, self.x_like, self.y_like)
        self._first = (xb, yb)
        self.sample_x = xb[:1]
        self.shape = tuple(xb.shape)  # the first batch's, for messages

    def _pair(self, item, step: int, epoch: int):
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise TypeError(
                f"{self.what}: the batch at step {step} of epoch {epoch + 1} is a {type(item).__name__}; "
                "each item of x must be a pair (x_batch, y_batch) (pass y=None only with such an iterable).")
        return np.asarray(item[0]), np.asarray(item[1])

    def _check(self, xb: np.ndarray, yb: np.ndarray, step: int, epoch: int) -> None:
        (xshape, xdt), (yshape, ydt) = self.x_like, self.y_like
        ok = (xb.shape[1:] == xshape and yb.shape[1:] == yshape and xb.dtype == xdt and yb.dtype == ydt
              and xb.ndim > 0 and yb.ndim > 0 and 0 < xb.shape[0] == yb.shape[0] <= self.batch)
        if not ok:
            rows = lambda shape: "(" + ", ".join(["rows", *map(str, shape)]) + ("," if not shape else "") + ")"  # noqa: E731
            raise ValueError(
                f"{self.what}: the batch at step {step} of epoch {epoch + 1} has x of shape {xb.shape} ({xb.dtype}) "
                f"and y of shape {yb.shape} ({yb.dtype}); every batch must have x of shape {rows(xshape)} ({xdt}) "
                f"and y of shape {rows(yshape)} ({ydt}) like the first, with 1 <= rows <= {self.batch} equal in x and y.")

    def _check_finite(self, xb: np.ndarray, yb: np.ndarray, step: int, epoch: int) -> None:
        for name, a in (("x", xb), ("y", yb)):
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(np.sum(a, dtype=np.float64)):
                row = int(np.argmax(~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)))
                raise ValueError(
                    f"{self.what}: the batch at step {step} of epoch {epoch + 1} (from the {type(self.data).__name__} of "
                    f"batches) has NaN or infinite values in {name} (row {row} of the batch); drop or impute them at the "
                    "source, or pass skip_nonfinite=True to skip such steps.")

    def nonfinite(self) -> str | None:
        """None: every batch is checked as it arrives (an iterable cannot be read again)."""
        return None

    def chunks(self, epochs: range, k: int) -> Iterator[Chunk]:
        ring, it, start = _Ring(k, self.batch, self.x_like, self.y_like), self._iter, True
        for epoch in epochs:
            if self.restarts and not start:
                it = iter(self.data)
            for first in range(0, self.steps, k):
                count = min(k, self.steps - first)
                xs, ys, mask = ring.next()
                for j in range(count):
                    step = first + j
                    if start:
                        (xb, yb), start = self._first, False
                    else:
                        try:
                            xb, yb = self._pair(next(it), step, epoch)
                        except StopIteration:
                            raise ValueError(
                                f"{self.what}: the iterable of batches ended at step {step} of epoch {epoch + 1}, before "
                                f"steps_per_epoch={self.steps}; pass a smaller steps_per_epoch or make it yield more "
                                "(e.g. a generator that loops over the data forever).") from None
                        self._check(xb, yb, step, epoch)
                    if self.finite:
                        self._check_finite(xb, yb, step, epoch)
                    rows = xb.shape[0]
                    xs[j, :rows], ys[j, :rows], mask[j, :rows] = xb, yb, 1.0
                    xs[j, rows:], ys[j, rows:], mask[j, rows:] = 0, 0, 0.0
                yield Chunk(epoch, first, count, xs, ys, mask)
            start = False


# -- the background feeder ------------------------------------------------------------------
class Feeder:
    """Puts a source's chunks on the device(s) from a background thread, ``DEPTH`` chunks ahead at most.

    ``get()`` hands the next placed :class:`Chunk` (or raises what the thread raised);
    call ``done()`` once its steps have run, in order, so its buffers can be reused.
    The thread stops after the last chunk, on :meth:`close`, or when the feeder is
    garbage collected.

    Args:
      chunks: host chunks (:meth:`Rows.chunks`, :meth:`Batches.chunks`).
      put: ``(xs, ys, mask) -> the same on the device(s)``, e.g. :func:`jdense.parallel.put_steps`.
      check: called on each host chunk before it is put (e.g. a label check); may raise.
    """

    def __init__(self, chunks: Iterator[Chunk], put: Callable, check: Callable[[Chunk], None] | None = None):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._free = threading.Semaphore(DEPTH)
        self._stop = threading.Event()
        threading.Thread(target=_feed, args=(chunks, put, check, self._queue, self._free, self._stop),
                         name="jdense-feeder", daemon=True).start()
        weakref.finalize(self, self._stop.set)

    def get(self) -> Chunk:
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def done(self) -> None:
        self._free.release()

    def close(self) -> None:
        self._stop.set()


def _feed(chunks, put, check, out: queue.SimpleQueue, free: threading.Semaphore, stop: threading.Event) -> None:
    try:
        while True:
            while not free.acquire(timeout=0.05):
                if stop.is_set():
                    return
            chunk = None if stop.is_set() else next(chunks, None)
            if chunk is None:
                return
            if check is not None:
                check(chunk)
            out.put(dataclasses.replace(chunk, **dict(zip(("xs", "ys", "mask"), put((chunk.xs, chunk.ys, chunk.mask))))))
    except BaseException as err:  # noqa: BLE001 - handed to the training loop, which raises it
        out.put(err)
