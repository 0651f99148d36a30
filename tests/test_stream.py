"""Streaming fit: data that stay on the host reach the compiled steps chunk by chunk.

The reference is the in-memory fit: a memory map (or any row-indexable array) streamed
in chunks that do not divide the epoch must train bitwise the same params on CPU, and
an iterable yielding the in-memory fit's own batches must too. Bad iterables fail
naming the step. Every fit here shares one network structure, so programs compile once.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
import time

import jax
import numpy as np
import pytest

import jdense
from jdense.data import stream as stream_lib

RNG = np.random.default_rng(0)
X = RNG.normal(size=(301, 12)).astype(np.float32)  # 19 steps of 16, the last one partial (13 rows)
Y = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 1)
BATCH, STEPS, EPOCHS = 16, 19, 2
STEP_BYTES = BATCH * (12 * 4 + 4 + 4)
CHUNK_OF_4 = 4 * 4 * STEP_BYTES  # device_memory for chunks of 4 steps: 4, 4, 4, 4, 3
NETS = {"dropout": ([12, 16, 3], dict(dropout=0.2)), "batchnorm": ([12, 16, 3], dict(batch_norm=True))}
SEED = np.asarray(jax.random.key_data(jax.random.key(1))).ravel().tolist()


def _net(name):
    sizes, kw = NETS[name]
    return jdense.mlp(sizes, **kw)


def _fit(name, x, y, **kw):
    net = _net(name)
    kw = {**dict(loss="cross_entropy", optimizer=jdense.optimizer(net, learning_rate=1e-2), epochs=EPOCHS,
                 batch_size=BATCH, key=jax.random.key(1), verbose=0, validation_data=(X[:40], Y[:40])), **kw}
    return jdense.fit(net, net.init(jax.random.key(0)), x, y, **kw)


@functools.cache
def _reference(name):
    return _fit(name, X, Y, stream=False)


def _assert_same(a, b):
    for u, v in zip(jax.tree.leaves((a.params, a.state, a.opt_state)), jax.tree.leaves((b.params, b.state, b.opt_state))):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert a.history == b.history


def _in_memory_batches(epochs=range(EPOCHS)):
    """The in-memory fit's batches: each epoch's permutation, the last batch shorter."""
    for e in epochs:
        order = np.random.default_rng([*SEED, e]).permutation(len(X))
        for s in range(STEPS):
            i = order[s * BATCH:(s + 1) * BATCH]
            yield X[i], Y[i]


@pytest.mark.parametrize("name", NETS)
def test_memmap_streamed_in_uneven_chunks_is_bitwise_the_in_memory_fit(name, tmp_path):
    extra = dict(class_weight={0: 1.0, 1: 2.0, 2: 0.5}) if name == "batchnorm" else {}
    xm = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, X.shape)
    xm[:] = X
    ym = np.lib.format.open_memmap(tmp_path / "y.npy", "w+", np.int32, Y.shape)
    ym[:] = Y
    streamed = _fit(name, np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r"),
                    stream=True, device_memory=CHUNK_OF_4, **extra)
    _assert_same(_fit(name, X, Y, stream=False, **extra) if extra else _reference(name), streamed)


class SortedRowsOnly:
    """Like an h5py dataset: reads rows by a slice or by sorted, distinct indices only."""

    def __init__(self, a):
        self.a, self.shape, self.dtype = a, a.shape, a.dtype

    def __getitem__(self, index):
        if not isinstance(index, slice):
            index = np.asarray(index)
            assert (np.diff(index) > 0).all(), "indices must be increasing"
        return self.a[index]


def test_auto_choice_and_row_indexable_arrays(capsys):
    reference = _reference("dropout")
    _assert_same(reference, _fit("dropout", X, Y, device_memory=X.nbytes + Y.nbytes, verbose=2))  # fits: in memory
    assert "stream" not in capsys.readouterr().out
    _assert_same(reference, _fit("dropout", SortedRowsOnly(X), SortedRowsOnly(Y), device_memory=CHUNK_OF_4, verbose=2))
    assert f"stream 4 steps/chunk ({4 * STEP_BYTES / 1e3:.0f} kB)" in capsys.readouterr().out  # too big for the budget: streamed


def test_iterables_of_batches_follow_their_own_order():
    reference = _reference("dropout")
    # A generator goes on across epochs; its batches are the in-memory fit's, the last one short of rows.
    _assert_same(reference, _fit("dropout", _in_memory_batches(), None, steps_per_epoch=STEPS, device_memory=CHUNK_OF_4))
    # A list starts over each epoch (len gives the steps): the same as a generator repeating it.
    first = list(_in_memory_batches(range(1)))
    _assert_same(_fit("dropout", first, None, batch_size=None),
                 _fit("dropout", iter(first + first), None, steps_per_epoch=STEPS, device_memory=CHUNK_OF_4))


def test_grain_map_dataset_is_streamed_like_a_list_of_its_batches():
    grain = pytest.importorskip("grain")
    batches = grain.MapDataset.source(list(zip(X, Y))).batch(BATCH)
    _assert_same(_fit("dropout", [(X[i:i + BATCH], Y[i:i + BATCH]) for i in range(0, len(X), BATCH)], None),
                 _fit("dropout", batches, None))


def test_torch_data_loader_is_streamed_like_a_list_of_its_batches():
    torch = pytest.importorskip("torch")
    data = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y))
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False)
    _assert_same(_fit("dropout", [(X[i:i + BATCH], Y[i:i + BATCH]) for i in range(0, len(X), BATCH)], None),
                 _fit("dropout", loader, None))


def _with(step, batch):
    """The in-memory batches with step ``step`` of the first epoch replaced by ``batch``."""
    for i, b in enumerate(_in_memory_batches()):
        yield batch if i == step else b


@pytest.mark.parametrize("batches, match", [
    (_with(5, (X[:16, :5], Y[:16])), r"step 5 of epoch 1 has x of shape \(16, 5\) \(float32\) and y of shape \(16,\).*"
                                     r"x of shape \(rows, 12\)"),
    (_with(3, (X[:16].astype(np.float64), Y[:16])), r"step 3 of epoch 1 has x of shape \(16, 12\) \(float64\)"),
    (_with(2, (X[:20], Y[:20])), r"step 2 of epoch 1 .*1 <= rows <= 16"),
    (_with(4, (X[:16], Y[:8])), r"step 4 of epoch 1 .*equal in x and y"),
    (_with(6, X[:16]), r"the batch at step 6 of epoch 1 is a ndarray; each item of x must be a pair"),
    (_with(7, (X[:16], np.full(16, 3, np.int32))), r"steps 4\.\.7 of epoch 1\): 16 labels are outside 0\.\.2"),
    (_in_memory_batches(range(1)), r"ended at step 19 of epoch 1, before steps_per_epoch=20"),
])
def test_bad_iterables_name_the_step(batches, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _fit("dropout", batches, None, steps_per_epoch=20, device_memory=CHUNK_OF_4)


@pytest.mark.parametrize("kw, match", [
    (dict(data="sharded"), "unknown data 'sharded'"),
    (dict(data="per_process"), "data='per_process' .* pass mesh="),
    (dict(steps_per_epoch=5), "steps_per_epoch is for an iterable of batches"),
    (dict(device_memory=-1, stream=True), "device_memory must be a positive number of bytes"),
    (dict(stream="yes"), "stream must be True or False"),
])
def test_argument_errors(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _fit("dropout", X, Y, **kw)


@pytest.mark.parametrize("x, kw, match", [
    (_in_memory_batches(), dict(stream=False), "an iterable of batches is always streamed"),
    ((b for b in []), dict(steps_per_epoch=3), "empty iterable of batches"),
    (map(lambda b: b, [(X[:4], Y[:4])]), {}, "without a length; pass steps_per_epoch="),
])
def test_iterable_errors_before_training(x, kw, match):
    with pytest.raises(ValueError, match=match):
        _fit("dropout", x, None, **kw)


def test_chunk_size_follows_the_memory_budget():
    assert stream_lib.chunk_steps(STEPS, STEP_BYTES, CHUNK_OF_4) == 4
    assert stream_lib.chunk_steps(STEPS, STEP_BYTES, 1) == 1  # at least one step
    assert stream_lib.chunk_steps(STEPS, STEP_BYTES, 1 << 40) == STEPS  # at most the epoch
    assert stream_lib.chunk_steps(10**6, 1 << 20, 1 << 40) == stream_lib.CHUNK_CAP >> 20
    assert stream_lib.budget(None) > 0 and stream_lib.budget(1000) == 1000


def _feeders():
    return [t for t in threading.enumerate() if t.name == "jdense-feeder"]


def test_feeder_threads_stop_after_early_stopping_and_errors():
    stop = jdense.EarlyStopping("loss", patience=0, min_delta=1e9)  # stops after the 2nd epoch of 5
    result = _fit("dropout", X, Y, stream=True, epochs=5, callbacks=[stop], device_memory=CHUNK_OF_4)
    assert result.epochs == 2
    with pytest.raises(ValueError, match="step 5"):
        _fit("dropout", _with(5, (X[:16, :5], Y[:16])), None, steps_per_epoch=STEPS)
    deadline = time.monotonic() + 5
    while _feeders() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert not _feeders()


# --------------------------------------------------------------------------- streaming errors that name the data


def _memmaps(tmp_path, x=X, y=Y):
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")


def test_a_nan_row_in_a_memory_map_names_the_file_and_row(tmp_path):
    bad = X.copy()
    bad[137, 3] = np.nan
    xm, ym = _memmaps(tmp_path, bad)
    net = _net("dropout")
    params = net.init(jax.random.key(0))
    before = jax.tree.map(np.array, params)
    with pytest.raises(ValueError) as info:
        jdense.fit(net, params, xm, ym, loss="cross_entropy", epochs=EPOCHS, batch_size=BATCH, key=jax.random.key(1),
                   verbose=0, stream=True, device_memory=CHUNK_OF_4)
    message = str(info.value)
    assert "row 137" in message and str(tmp_path / "x.npy") in message, message
    assert "learning rate" not in message
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before)):  # the caller's params are untouched
        np.testing.assert_array_equal(np.asarray(a), b)
    skipped = jdense.fit(net, params, xm, ym, loss="cross_entropy", epochs=1, batch_size=BATCH, key=jax.random.key(1),
                         verbose=0, stream=True, device_memory=CHUNK_OF_4, skip_nonfinite=True)
    assert skipped.history["skipped_steps"] == [1.0]  # the one step with that row, as in memory


def test_a_nan_in_a_generators_batch_names_the_step():
    batches = list(_in_memory_batches(range(1)))
    x7 = batches[7][0].copy()
    x7[2, 0] = np.inf
    batches[7] = (x7, batches[7][1])
    with pytest.raises(ValueError, match=r"the batch at step 7 of epoch 1 \(from the generator of batches\) has NaN or "
                                         r"infinite values in x \(row 2 of the batch\)") as info:
        _fit("dropout", (b for b in batches), None, steps_per_epoch=STEPS, epochs=1, device_memory=CHUNK_OF_4)
    assert "learning rate" not in str(info.value)


@pytest.mark.parametrize("make, match", [
    (lambda tmp: (X, None), r"fit: y is None but x is a ndarray; pass the targets y"),
    (lambda tmp: (_memmaps(tmp)[0], None), r"fit: y is None but x is a memmap; pass the targets y"),
    (lambda tmp: ([], None), r"fit: x is an empty list of batches"),
    (lambda tmp: (X, Y, dict(device_memory=float("inf"))), r"device_memory must be a positive number of bytes \(finite\)"),
])
def test_streaming_arguments_give_clear_errors(tmp_path, make, match):
    x, y, *kw = make(tmp_path)
    with pytest.raises((TypeError, ValueError), match=match):
        _fit("dropout", x, y, **(kw[0] if kw else {}))


def test_a_truncated_memory_map_is_an_error_naming_the_file(tmp_path):
    xm, ym = _memmaps(tmp_path)
    source = stream_lib.Rows(xm, ym, BATCH, SEED)
    chunks = source.chunks(range(1), 4)
    next(chunks)  # the file is whole: a chunk is gathered
    os.truncate(tmp_path / "x.npy", 128 + 100 * 12 * 4)  # the header and 100 of 301 rows remain
    with pytest.raises(ValueError, match=r"the memory map .*x\.npy is 4,928 bytes but its array needs 14,576"):
        next(chunks)  # checked before the next gather: an error, not a SIGBUS
    with pytest.raises(ValueError, match=r"x\.npy is 4,928 bytes .* truncated or rewritten"):
        _fit("dropout", xm, ym, stream=True, device_memory=CHUNK_OF_4)


def test_a_nan_row_streamed_to_a_population_says_nothing_was_returned(tmp_path):
    bad = X.copy()
    bad[137, 3] = np.nan
    xm, ym = _memmaps(tmp_path, bad)
    with pytest.raises(ValueError) as info:
        jdense.fit_population(_net("dropout"), xm, ym, members=2, loss="cross_entropy", epochs=1, batch_size=BATCH,
                              key=jax.random.key(1), verbose=0, stream=True, device_memory=CHUNK_OF_4)
    message = str(info.value)
    assert message.startswith("fit_population: ") and "row 137" in message and str(tmp_path / "x.npy") in message
    assert "params you passed" not in message and "nothing was returned" in message, message
