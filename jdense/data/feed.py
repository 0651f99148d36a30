"""The data feed of :func:`jdense.fit` and :func:`jdense.fit_population`: checked data in, epochs out.

:func:`prepare` checks the training data (before anything is compiled or read in
full) and chooses where they live: on the device (:class:`Memory`), or streamed from a
row-indexable array (:class:`jdense.data.stream.Rows`: a memory map, ``h5py``/``zarr``)
or an iterable of batches (:class:`jdense.data.stream.Batches`) through
:class:`Streamed`. Either source runs an epoch as one call
``run(lead, params, opt_state, state, epoch, fresh) -> (params, opt_state, state, sums,
val_sums)``, the same for one network and for a population (``lead`` is the
population's ``active`` mask). The batch order is drawn by
:func:`jdense.data.stream.batch_order`, for every source.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from jdense import checks, parallel, programs
from jdense import losses as losses_lib
from jdense.data import stream as stream_lib


# -- checks of arrays and labels, shared by fit, fit_population, evaluate and predict ---------
def array(a, name: str, what: str) -> np.ndarray:
    """``a`` as a NumPy array (no copy when it is one), numeric; else a clear error (a truncated memory map too)."""
    checks.memmap_intact(a, f"{what}: {name}")
    try:
        a = np.asarray(a)
    except (ValueError, TypeError) as err:  # a ragged list, objects...
        raise ValueError(f"{what}: {name} must be a rectangular numeric array (rows of equal length); {err}") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"{what}: {name} must be numeric, got dtype {a.dtype}; convert it, e.g. with .astype(np.float32).")
    return a


def check_finite(a: np.ndarray, name: str, what: str) -> None:
    """Raise naming the first row with NaN or Inf; one pass, no temporary copy (a float64 sum is finite iff every entry is)."""
    if not np.issubdtype(a.dtype, np.floating) or np.isfinite(np.sum(a, dtype=np.float64)):
        return
    bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{what}: {name} has {int(bad.sum())} of {a.shape[0]} rows with NaN or infinite values (the first is row "
            f"{int(np.argmax(bad))}); drop or impute them before training."
        )


def arrays(x, y, what: str, finite: bool = True):
    """NumPy views of ``x, y`` (no copy), checked: numeric, same length, finite (unless ``finite=False``)."""
    x = array(x, "x", what)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{what}: x is empty (shape {x.shape}); pass at least one sample.")
    if finite:
        check_finite(x, "x", what)
    if y is not None:
        y = array(y, "y", what)
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"{what}: x has {x.shape[0]} samples but y has {y.shape[0] if y.ndim else 'no'} "
                "(their first axes must be equal)."
            )
        if finite:
            check_finite(y, "y", what)
    return x, y


def sample_weights(n: int, sample_weight, what: str, members: int | None = None) -> np.ndarray | None:
    """Checked float32 weights ``(n,)``, or ``(members, n)`` (one row per population member); None when not given."""
    if sample_weight is None:
        return None
    w = array(sample_weight, "sample_weight", what).astype(np.float32)
    if members is not None and w.ndim == 2:
        if w.shape != (members, n):
            raise ValueError(f"{what}: sample_weight must have shape ({n},) (shared) or ({members}, {n}) (a row per "
                             f"member), got {w.shape}.")
    elif w.shape != (n,):
        raise ValueError(f"{what}: sample_weight must have one weight per sample, shape ({n},), got {w.shape}.")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError(f"{what}: sample_weight must be finite, >= 0 and not all 0.")
    empty = np.flatnonzero(~w.reshape(-1, n).any(axis=1))
    if empty.size and w.ndim == 2:
        raise ValueError(f"{what}: sample_weight is 0 for every row of members {empty.tolist()}; give each member some "
                         "weight > 0.")
    if empty.size:
        raise ValueError(f"{what}: sample_weight must be finite, >= 0 and not all 0.")
    return w


def labels(loss, y: np.ndarray, out_shape: tuple, what: str) -> None:
    """Class labels must be in range for the network's outputs (cross-entropy), 0 or 1 (binary)."""
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


def validation(validation_data, loss, out_shape, what: str, members: int | None = None):
    """Checked ``(x_val, y_val, weights)`` from a pair or triple, or None.

    A population's (``members``) weights may be ``(members, n_val)``: each member's validation rows.
    """
    if validation_data is None:
        return None
    if not (isinstance(validation_data, tuple | list) and len(validation_data) in (2, 3)):
        raise TypeError("validation_data must be a pair (x_val, y_val) or a triple (x_val, y_val, sample_weight_val).")
    xv, yv = arrays(validation_data[0], validation_data[1], what)
    labels(loss, yv, out_shape, what)
    w = sample_weights(xv.shape[0], validation_data[2] if len(validation_data) == 3 else None, what, members)
    return xv, yv, np.ones(xv.shape[0], np.float32) if w is None else w


def padded_indices(order: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Split an index order into (steps, batch) indices and 0/1 weights; pad with index 0, weight 0."""
    n = order.shape[0]
    steps = math.ceil(n / batch)
    idx = np.zeros(steps * batch, np.int32)
    idx[:n] = order
    mask = np.zeros(steps * batch, np.float32)
    mask[:n] = 1.0
    return idx.reshape(steps, batch), mask.reshape(steps, batch)


def device_validation(checked, batch: int, mesh, what: str):
    """``(x, y, idx, weights)`` of checked validation data on the device(s), as the epoch programs take them."""
    if checked is None:
        return None
    xv, yv, swv = checked
    idx, mask = padded_indices(np.arange(xv.shape[0]), min(max(batch, 1024), xv.shape[0]))
    return (*parallel.device_data((xv, yv), mesh, what), *parallel.place((idx, mask * swv[..., idx]), mesh))


# -- the data, checked, and where they live ---------------------------------------------------
@dataclasses.dataclass
class Data:
    """Training data after :func:`prepare`: in memory (``x``, ``y``, ``weights``) or a stream ``source``."""

    x: Any  # in memory: the NumPy array; streamed: a sample row (for shapes)
    y: Any  # in memory: the NumPy array; streamed: None (labels are checked chunk by chunk)
    weights: np.ndarray | None
    batch: int
    validation_data: Any
    source: Any = None  # a stream.Rows or stream.Batches
    chunk: int = 0  # steps per streamed chunk
    limit: int = 0  # the memory budget, bytes
    shape: tuple = ()  # the caller's x shape (a streamed array's, or the first batch's), for messages

    def __post_init__(self):
        self.shape = self.shape or tuple(np.shape(self.x))


def _check_y(x, y, stream: bool | None, what: str) -> None:
    """``y=None`` only with an iterable of batches; a clear error otherwise."""
    if y is not None or stream_lib.is_batches(x, y):
        return
    raise TypeError(f"{what}: y is None but x is a {type(x).__name__}; pass the targets y, or pass x as an iterable of "
                    "(x_batch, y_batch) pairs with y=None.")


def _in_memory(x, y, *, stream, batches: bool, per_process: bool, limit: int) -> bool:
    if batches or per_process or stream:
        return False
    return stream is False or not all(hasattr(a, "shape") for a in (x, y)) or stream_lib.nbytes(x, y) <= limit


def prepare(x, y, *, batch_size, sample_weight=None, validation_split=None, validation_data=None, stream=None,
            data: str = "global", steps_per_epoch=None, device_memory=None, mesh=None, seed=(), finite: bool = True,
            members: int | None = None, what: str = "fit") -> Data:
    """Check the training data and choose their source; nothing is compiled, a stream is not read in full.

    Args:
      x, y, batch_size, sample_weight, validation_split, validation_data, stream, data,
        steps_per_epoch, device_memory, mesh: as :func:`jdense.fit` takes them.
      seed: the key's data (the batch order's seed).
      finite: refuse NaN and Inf in in-memory data (``fit(skip_nonfinite=True)`` passes False).
      members: a population's size (``sample_weight`` may then be ``(members, n)``).
      what: the caller's name, for messages.
    """
    checks.choice("data", data, ("global", "per_process"))
    if stream is not None:
        checks.boolean("stream", stream)
    per_process = data == "per_process"
    if per_process and mesh is None:
        raise ValueError(f"{what}: data='per_process' joins the processes' rows through a mesh; pass "
                         "mesh=jdense.parallel.data_mesh().")
    _check_y(x, y, stream, what)
    limit = stream_lib.budget(device_memory)
    if mesh is not None and jax.process_count() > 1:
        limit = min(parallel.process_values(limit))
    batches = stream_lib.is_batches(x, y)
    if stream is False and (batches or per_process):
        raise ValueError(f"{what}: {'an iterable of batches' if batches else 'data=per_process'} is always streamed; "
                         "pass stream=None (or True).")
    if not batches and steps_per_epoch is not None:
        raise ValueError(f"{what}: steps_per_epoch is for an iterable of batches (x with y=None); an array's epoch is "
                         "every row once, ceil(samples / batch_size) steps.")
    if _in_memory(x, y, stream=stream, batches=batches, per_process=per_process, limit=limit):
        return _memory_data(x, y, batch_size=batch_size, sample_weight=sample_weight, validation_split=validation_split,
                            validation_data=validation_data, finite=finite, members=members, what=what)
    if sample_weight is not None or validation_split is not None:
        raise ValueError(f"{what}: sample_weight= and validation_split= need in-memory data; with streamed data pass "
                         "validation_data= (and weights as a third element of it), or stream=False.")
    source = _source(x, y, batch_size=batch_size, batches=batches, per_process=per_process,
                     steps_per_epoch=steps_per_epoch, seed=seed, mesh=mesh, finite=finite, what=what)
    k = stream_lib.chunk_steps(source.steps, source.step_bytes, limit)
    k = min(parallel.process_values(k)) if mesh is not None else k
    batch = source.batch * (jax.process_count() if per_process else 1)
    return Data(source.sample_x, None, None, batch, validation_data, source, k, limit, source.shape)


def _memory_data(x, y, *, batch_size, sample_weight, validation_split, validation_data, finite, members, what) -> Data:
    x, y = arrays(x, y, what, finite=finite)
    sw = sample_weights(x.shape[0], sample_weight, what, members)
    if validation_split is not None:
        if validation_data is not None:
            raise ValueError(f"{what}: pass validation_data= or validation_split=, not both.")
        if isinstance(validation_split, bool) or not isinstance(validation_split, float | int | np.floating) \
                or not 0 < validation_split < 1:
            raise ValueError(f"validation_split must be a fraction in (0, 1) such as 0.1, got "
                             f"{checks.short(validation_split)}.")
        cut = int(x.shape[0] * (1 - validation_split))
        if not 0 < cut < x.shape[0]:
            raise ValueError(f"validation_split={validation_split} leaves no rows on one side of {x.shape[0]} samples.")
        if sw is not None and sw.ndim == 2:
            raise ValueError(f"{what}: validation_split= with per-member sample_weight is ambiguous; pass "
                             "validation_data= instead.")
        validation_data = (x[cut:], y[cut:], np.ones(x.shape[0] - cut, np.float32) if sw is None else sw[cut:])
        x, y = x[:cut], y[:cut]
        sw = np.ones(cut, np.float32) if sw is None else sw[..., :cut]  # a split is a weighted fit (as before)
    return Data(x, y, sw, checks.batch_size(batch_size, x.shape[0]), validation_data)


def _source(x, y, *, batch_size, batches: bool, per_process: bool, steps_per_epoch, seed, mesh, finite: bool, what: str):
    """The stream source of ``x, y``: Batches for an iterable, Rows for row-indexable arrays."""
    processes = jax.process_count() if per_process else 1
    if batch_size is not None and checks.positive_int("batch_size", batch_size) % processes:
        raise ValueError(f"{what}: batch_size={batch_size} must split evenly over the {processes} processes "
                         "(data='per_process').")
    local = batch_size if batch_size is None or processes == 1 else batch_size // processes  # (keeps the default's identity)
    if batches:  # its own batch size (its first batch's rows), as Keras ignores batch_size for generators
        source = stream_lib.Batches(x, local if processes > 1 else None, steps_per_epoch, what, finite)
    else:
        x, y = stream_lib.rows(x, "x", what), stream_lib.rows(y, "y", what)
        source = stream_lib.Rows(x, y, checks.batch_size(local, x.shape[0]), list(seed),
                                 (jax.process_index(),) if processes > 1 else (), what)
    if mesh is not None and not per_process:  # a cheap look: the first rows and the shapes
        parallel.check_same_data(source.sample_x, np.asarray(source.x_like[0]), what=what)
    if processes > 1:
        for name, value in (("steps per epoch", source.steps), ("rows per step", source.batch)):
            values = parallel.process_values(value)
            if len(set(values)) > 1:
                raise ValueError(f"{what}(data='per_process'): the processes have {values} {name}; every process must "
                                 "run the same steps of the same batch size (equal shards, or the same steps_per_epoch).")
    return source


# -- the sources' epochs ----------------------------------------------------------------------
class Memory:
    """An epoch over device-resident data: one call of the compiled epoch (one ``lax.scan``).

    The host draws the batch order (NumPy, seeded from the key) and the padded index and
    weight arrays; ``weights`` ``(n,)`` or ``(members, n)`` multiply the padding mask.
    """

    note = None

    def __init__(self, data: Data, program, *, seed, key, class_weight, val, mesh, what: str):
        self.program, self.seed, self.batch, self.weights, self.mesh = program, list(seed), data.batch, data.weights, mesh
        self.n = data.x.shape[0]
        self.rest = (key, class_weight, val)
        self.x, self.y = parallel.device_data((data.x, data.y), mesh, what)

    def run(self, lead: tuple, params, opt_state, state, epoch: int, fresh: bool):
        idx, mask = padded_indices(stream_lib.batch_order(self.seed, epoch, self.n, self.batch), self.batch)
        if self.weights is not None:
            mask = mask * self.weights[..., idx]
        idx, mask = parallel.place((idx, mask), self.mesh)
        key, class_weight, val = self.rest
        return self.program(*lead, params, opt_state, state, self.x, self.y, idx, mask, key, np.uint32(epoch),
                            class_weight, np.bool_(fresh), val)

    def nonfinite(self, epoch: int) -> str | None:
        """Where a non-finite loss came from in the data: never here (checked before training)."""
        return None


class Streamed:
    """An epoch over streamed data: chunk after chunk of steps while the feeder puts the next one on the device.

    The sums are read once per epoch, as in memory; validation runs after the last chunk.
    """

    def __init__(self, data: Data, chunk_program, evaluation, *, steps_key, epochs: range, key, class_weight, val,
                 mesh, per_process: bool, check, zeros):
        source, k = data.source, data.chunk
        self.source, self.k, self.program, self.evaluation = source, k, chunk_program, evaluation
        self.feeder = stream_lib.Feeder(source.chunks(epochs, k), lambda t: parallel.put_steps(t, mesh, per_process), check)
        self.steps_key, self.key, self.class_weight, self.val, self.zeros = steps_key, key, class_weight, val, zeros
        size = k * source.step_bytes
        self.note = f"stream {k} steps/chunk ({f'{size / 1e6:.1f} MB' if size >= 1e6 else f'{size / 1e3:.0f} kB'})"

    def run(self, lead: tuple, params, opt_state, state, epoch: int, fresh: bool):
        keys = programs.epoch_keys(self.steps_key, self.key, np.uint32(epoch), self.source.steps)
        sums, running = self.zeros, False
        for _ in range(-(-self.source.steps // self.k)):
            c = self.feeder.get()
            params, opt_state, state, new = self.program(
                *lead, params, opt_state, state, sums, c.xs, c.ys, c.mask, keys, np.int32(c.first), np.int32(c.count),
                self.class_weight, np.bool_(fresh))
            del c  # the dispatched steps hold their buffers until they have run
            if running:  # the previous chunk has run (its sums are this one's input): its buffers may be reused
                sums.block_until_ready()
                self.feeder.done()
            sums, running, fresh = new, True, False
        sums.block_until_ready()
        self.feeder.done()
        val_sums = None if self.val is None else self.evaluation(params, state, *self.val, self.class_weight)
        return params, opt_state, state, sums, val_sums

    def nonfinite(self, epoch: int) -> str | None:
        """The first row (or batch) of the data with NaN or Inf in ``epoch``, named; None if the data are finite."""
        self.feeder.close()
        return self.source.nonfinite()

    def close(self) -> None:
        self.feeder.close()


def epochs(data: Data, spec, *, loss, out_shape, seed, key, class_weight, val, mesh, per_process: bool, epochs: range,
           members: int | None = None, spread=None, what: str = "fit"):
    """What the epoch loop runs for these data: a :class:`Memory` or :class:`Streamed` source of epochs.

    Args:
      data: from :func:`prepare`.
      spec: the :class:`jdense.programs.Training` key of the epoch.
      members: a population's size: the programs are the population's (a member axis).
      spread: a population's ``"members"`` mesh (:func:`jdense.parallel.member_layout`), in memory only;
        then ``mesh`` is that mesh too (data replicated on it).
      loss, out_shape: to check the labels of each streamed chunk.
      seed, key, class_weight, val, mesh, per_process, epochs, what: as :func:`jdense.fit` has them.
    """
    val_per_member = val is not None and val[3].ndim == 3  # (members, steps, batch) validation weights
    if data.source is None:
        per_member = data.weights is not None and data.weights.ndim == 2
        program = programs.training(spec) if members is None else programs.population((spec, per_member, val_per_member, spread))
        return Memory(data, program, seed=seed, key=key, class_weight=class_weight, val=val, mesh=mesh, what=what)
    chunk_spec = dataclasses.replace(spec, validation=False)  # validation runs after the last chunk
    program = programs.streaming(chunk_spec) if members is None else programs.population_streaming(chunk_spec)
    step = programs.Step(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(programs.Step)})
    evaluation = None if val is None else programs.evaluation((step, members is not None, val_per_member))
    size = programs.layout_size(programs.layout(spec.metrics, _width(out_shape), spec.skip_nonfinite))
    zeros = parallel.place(np.zeros(size if members is None else (members, size), np.float32), mesh)

    def check(c):
        labels(loss, c.ys[:c.count].reshape(-1, *c.ys.shape[2:]), out_shape,
               f"{what} (steps {c.first}..{c.first + c.count - 1} of epoch {c.epoch + 1})")

    return Streamed(data, program, evaluation, steps_key=spec.net.needs_key, epochs=epochs, key=key,
                    class_weight=class_weight, val=val, mesh=mesh, per_process=per_process, check=check, zeros=zeros)


def _width(out_shape) -> int:
    return out_shape[-1] if len(out_shape) > 1 else 1
