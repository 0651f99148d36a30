#!/usr/bin/env python
"""Training throughput of ``jdense.fit`` side by side with hand-written JAX and other libraries.

Every column trains the same dense network (``x @ w + b``, ReLU between layers, logits
out) on the same random data (float32 inputs, integer labels) with softmax
cross-entropy, Adam (lr 1e-3) and a coupled L2 term of 1e-4 on the weights only
(``gradient += 1e-4 * w``; biases are not decayed), reshuffling the samples every epoch.

Columns (see ``benchmarks/README.md``):

- ``jdense``: ``jdense.fit(..., epochs=1 + k)``; a callback takes ``time.perf_counter()``
  at each epoch end, and the first epoch (which contains the compilation) is not timed.
- ``jax_scan``: a hand-written jitted epoch, one ``lax.scan`` over the batches with
  donated params and optimizer state, shuffled per epoch by a NumPy permutation (the
  ceiling for a shuffled epoch). It reports the fastest of three ways to fetch the rows:
  ``step_gather`` (each step gathers its rows by index from the device-resident data, as
  ``fit`` does), ``chunk_gather`` (one gather per ~1 MiB of steps) and ``epoch_gather``
  (all the epoch's rows gathered up front).
- ``jax_scan_noshuffle``: the same scan over contiguous slices (no shuffle): the
  absolute ceiling.
- ``jax_loop``: one ``jax.jit`` step per batch called from a Python loop, the data
  shuffled with NumPy every epoch and the batches sliced on the host.
- ``flax_nnx``, ``equinox``, ``torch``: the idiomatic step of each library (only if
  it is importable).

Throughput is steps/s, the best epoch after compilation. The scan columns run
interleaved, one epoch each in turn (inside a jdense callback, outside its timing), so
that other processes on the machine hit them alike; the per-step columns run after them. GFLOP/s counts
``6 * batch * sum(in * out)`` floating-point operations per step (2 for the forward
matmuls, 4 for the backward ones; biases, activations, the loss and the optimizer are
not counted) and is compared with a 2048x2048 float32 ``jnp.dot`` timed in the same run.

Peak memory: ``jdense`` and ``jax_scan`` each train one shape in a fresh subprocess that
imports the same modules, and report ``resource.getrusage(RUSAGE_SELF).ru_maxrss``.

Usage::

    python benchmarks/bench_fit.py                       # all shapes (about 6-7 min on 2 cores)
    python benchmarks/bench_fit.py --quick               # tiny smoke test (< 60 s)
    python benchmarks/bench_fit.py --shapes 64-32-10 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from functools import partial

import numpy as np

WEIGHT_DECAY = 1e-4
LEARNING_RATE = 1e-3


@dataclasses.dataclass(frozen=True)
class Shape:
    sizes: tuple[int, ...]
    batch: int
    samples: int
    fast_epochs: int  # timed epochs per round for jdense / jax_scan / jax_scan_noshuffle
    slow_epochs: int  # timed epochs per round for the per-step peers

    @property
    def name(self) -> str:
        return "-".join(map(str, self.sizes))

    @property
    def key(self) -> str:
        return f"{self.name}/b{self.batch}"

    @property
    def flops_per_step(self) -> int:
        return 6 * self.batch * sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))


SHAPES = [
    Shape((64, 32, 10), 32, 16_000, fast_epochs=20, slow_epochs=3),  # fast epochs take ~10 ms: take many
    Shape((784, 128, 64, 10), 128, 60_000, fast_epochs=6, slow_epochs=2),
    Shape((1024, 4096, 4096, 1024), 256, 4_096, fast_epochs=2, slow_epochs=1),  # 16 steps, ~3-6 s an epoch
]
QUICK_SHAPES = [
    Shape((32, 16, 10), 16, 2_048, fast_epochs=5, slow_epochs=1),
    Shape((128, 64, 10), 64, 4_096, fast_epochs=5, slow_epochs=1),
]
FAST = ("jdense", "jax_scan", "jax_scan_noshuffle")
OPTIONAL = {"flax_nnx": "flax.nnx", "equinox": "equinox", "torch": "torch"}
PEERS = ("jdense", "jax_scan", "jax_scan_noshuffle", "jax_loop", "flax_nnx", "equinox", "torch")
RSS_SHAPE = "784-128-64-10"


def make_data(shape: Shape, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((shape.samples, shape.sizes[0]), dtype=np.float32)
    y = rng.integers(0, shape.sizes[-1], shape.samples).astype(np.int32)
    return x, y


# -- the JAX pieces shared by jax_scan, jax_scan_noshuffle and jax_loop -------------------
def _jax():
    import jax
    import jax.numpy as jnp
    import optax

    return jax, jnp, optax


def jax_init(sizes, seed=0):
    jax, jnp, _ = _jax()
    keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
    return {
        f"dense_{i}": {"w": jax.random.normal(k, (a, b), jnp.float32) * math.sqrt(2.0 / a), "b": jnp.zeros((b,), jnp.float32)}
        for i, (a, b, k) in enumerate(zip(sizes[:-1], sizes[1:], keys))
    }


def jax_tx():
    _, _, optax = _jax()
    weights_only = lambda params: {layer: {"w": True, "b": False} for layer in params}  # noqa: E731
    return optax.chain(optax.add_decayed_weights(WEIGHT_DECAY, mask=weights_only), optax.adam(LEARNING_RATE))


def jax_loss(params, xb, yb):
    jax, _, optax = _jax()
    h = xb
    n = len(params)
    for i in range(n):
        h = h @ params[f"dense_{i}"]["w"] + params[f"dense_{i}"]["b"]
        if i < n - 1:
            h = jax.nn.relu(h)
    return optax.losses.softmax_cross_entropy_with_integer_labels(h, yb).mean()


def jax_step(tx, params, opt_state, xb, yb):
    jax, _, optax = _jax()
    loss, grads = jax.value_and_grad(jax_loss)(params, xb, yb)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


SCAN_SHUFFLES = ("step_gather", "chunk_gather", "epoch_gather")  # jax_scan reports the fastest
CHUNK_BYTES = 1 << 20  # chunk_gather: gather about 1 MiB of rows at once


def chunk_steps(shape: Shape) -> int:
    """Steps per gather for chunk_gather: about CHUNK_BYTES of rows (float32 x, int32 y)."""
    row_bytes = 4 * shape.sizes[0] + 4
    steps = shape.samples // shape.batch
    most = max(1, min(steps, CHUNK_BYTES // (shape.batch * row_bytes)))
    return -(-steps // -(-steps // most))  # chunks of equal size, so that few steps are left over


def _scan_epoch_fn(tx, shuffle: str, chunk: int = 1):
    """A jitted epoch: ``lax.scan`` over the batches, params and optimizer state donated.

    shuffle="step_gather": ``x, y`` are the whole data set and ``idx`` the epoch's
    permutation, shape (steps, batch); each step gathers its rows (what fit does).
    shuffle="chunk_gather": one gather fetches the rows of ``chunk`` steps (about 1 MiB),
    an inner scan runs them; the steps left over run with per-step gathers.
    shuffle="epoch_gather": the epoch first gathers all its rows at once into
    (steps, batch, ...) and the scan slices them (one big gather instead of one per
    step, at the price of a shuffled copy of the data set while the epoch runs).
    shuffle="none": ``x, y`` are already (steps, batch, ...): no shuffle.
    """
    jax, jnp, _ = _jax()

    def gather(a, i):
        return a.at[i].get(mode="promise_in_bounds")

    def on_rows(carry, xy):
        params, opt_state, loss = jax_step(tx, *carry, *xy)
        return (params, opt_state), loss

    def on_index(carry, i):
        return on_rows(carry, (gather(x_, i), gather(y_, i)))

    def on_chunk(carry, i):
        rows = i.reshape(-1)
        xs = gather(x_, rows).reshape(*i.shape, *x_.shape[1:])
        ys = gather(y_, rows).reshape(i.shape)
        return jax.lax.scan(on_rows, carry, (xs, ys))

    def epoch(params, opt_state, x, y, idx):
        nonlocal x_, y_
        x_, y_ = x, y
        carry = (params, opt_state)
        if shuffle == "step_gather":
            carry, losses = jax.lax.scan(on_index, carry, idx)
        elif shuffle == "chunk_gather":
            steps, batch = idx.shape
            full = steps - steps % chunk
            carry, losses = jax.lax.scan(on_chunk, carry, idx[:full].reshape(full // chunk, chunk, batch))
            losses = losses.reshape(-1)
            if full < steps:
                carry, rest = jax.lax.scan(on_index, carry, idx[full:])
                losses = jnp.concatenate([losses, rest])
        elif shuffle == "epoch_gather":
            carry, losses = jax.lax.scan(on_rows, carry, (gather(x, idx), gather(y, idx)))
        else:
            carry, losses = jax.lax.scan(on_rows, carry, (x, y))
        return (*carry, jnp.mean(losses))

    x_ = y_ = None
    return jax.jit(epoch, donate_argnums=(0, 1))


def make_jax_scan(shape: Shape, x, y, shuffle: str = "step_gather"):
    """Compile a jax_scan variant; return (steps per epoch, a function that runs one epoch -> loss)."""
    jax, jnp, _ = _jax()
    tx = jax_tx()
    params = jax_init(shape.sizes)
    steps = shape.samples // shape.batch  # the last partial batch is dropped
    if shuffle == "none":
        xd = jnp.asarray(x[: steps * shape.batch].reshape(steps, shape.batch, -1))
        yd = jnp.asarray(y[: steps * shape.batch].reshape(steps, shape.batch))
        idx0 = None
    else:
        xd, yd = jnp.asarray(x), jnp.asarray(y)
        idx0 = np.zeros((steps, shape.batch), np.int32)
    epoch = _scan_epoch_fn(tx, shuffle, chunk_steps(shape)).lower(params, tx.init(params), xd, yd, idx0).compile()
    rng = np.random.default_rng(1)
    state = {"params": params, "opt_state": tx.init(params)}

    def run_epoch() -> float:
        idx = None
        if shuffle != "none":  # a NumPy permutation: jax.random.permutation is sort-based and slow on CPU
            idx = rng.permutation(shape.samples)[: steps * shape.batch].astype(np.int32).reshape(steps, shape.batch)
        state["params"], state["opt_state"], loss = epoch(state["params"], state["opt_state"], xd, yd, idx)
        return float(loss)

    return steps, run_epoch


def run_jax_scan(shape: Shape, x, y, epochs: int, shuffle: str = "step_gather"):
    steps, run_epoch = make_jax_scan(shape, x, y, shuffle)
    times, loss = [], None
    for _ in range(epochs):
        t0 = time.perf_counter()
        loss = run_epoch()
        times.append(time.perf_counter() - t0)
    return steps, times, loss


def run_jax_loop(shape: Shape, x, y, epochs: int):
    jax, jnp, _ = _jax()
    tx = jax_tx()
    params = jax_init(shape.sizes)
    opt_state = tx.init(params)
    # Plain jax.jit, as most code has it (donating params and optimizer state: ~1.5x faster
    # for 64-32-10, still far from one scan per epoch).
    step = jax.jit(partial(jax_step, tx))
    B, steps = shape.batch, shape.samples // shape.batch
    for i in range(2):  # compile and warm up
        params, opt_state, loss = step(params, opt_state, x[i * B:(i + 1) * B], y[i * B:(i + 1) * B])
    jax.block_until_ready(loss)
    rng = np.random.default_rng(1)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = rng.permutation(shape.samples)
        xs, ys = x[perm], y[perm]
        for i in range(steps):
            params, opt_state, loss = step(params, opt_state, xs[i * B:(i + 1) * B], ys[i * B:(i + 1) * B])
        loss = float(loss)
        times.append(time.perf_counter() - t0)
    return steps, times, loss


# -- jdense ---------------------------------------------------------------------------
def run_jdense(shape: Shape, x, y, epochs: int, between_epochs=None):
    """Time ``jdense.fit``'s epochs 2..epochs+1 (epoch 1 compiles).

    ``between_epochs``, if given, is called at every epoch end, outside jdense's timing:
    the benchmark runs the scan columns' epochs there, interleaved with jdense's.
    """
    import jax

    import jdense

    class EpochTimer(jdense.Callback):
        def on_train_begin(self):
            self.start, self.times = time.perf_counter(), []

        def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
            self.times.append(time.perf_counter() - self.start)
            self.loss = logs["loss"]
            if between_epochs is not None:
                between_epochs()
            self.start = time.perf_counter()

    net = jdense.mlp(list(shape.sizes), lambda_=WEIGHT_DECAY)
    timer = EpochTimer()
    jdense.fit(
        net, net.init(jax.random.key(0)), x, y, loss="cross_entropy",
        optimizer=jdense.optimizer(net, "adam", LEARNING_RATE), epochs=1 + epochs, batch_size=shape.batch,
        key=jax.random.key(1), verbose=0, metrics=[], callbacks=[timer],
    )
    # epoch 1 contains the compilation; fit also runs the padded last batch
    return math.ceil(shape.samples / shape.batch), timer.times[1:], timer.loss


# -- other libraries -------------------------------------------------------------------
def run_flax_nnx(shape: Shape, x, y, epochs: int):
    import jax
    import optax
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, sizes, rngs):
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

        def __call__(self, h):
            for layer in self.layers[:-1]:
                h = jax.nn.relu(layer(h))
            return self.layers[-1](h)

    def kernels_only(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) == "kernel", params)

    model = MLP(shape.sizes, nnx.Rngs(0))
    tx = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY, mask=kernels_only), optax.adam(LEARNING_RATE))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, opt, xb, yb):
        def loss_fn(model):
            return optax.losses.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    return _per_step_loop(shape, x, y, epochs, lambda xb, yb: train_step(model, opt, xb, yb))


def run_equinox(shape: Shape, x, y, epochs: int):
    import equinox as eqx
    import jax
    import optax

    class MLP(eqx.Module):
        layers: list

        def __init__(self, sizes, key):
            keys = jax.random.split(key, len(sizes) - 1)
            self.layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)]

        def __call__(self, h):
            for layer in self.layers[:-1]:
                h = jax.nn.relu(layer(h))
            return self.layers[-1](h)

    def weights_only(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "name", None) == "weight", params)

    tx = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY, mask=weights_only), optax.adam(LEARNING_RATE))
    state = {"model": MLP(shape.sizes, jax.random.key(0))}
    state["opt"] = tx.init(eqx.filter(state["model"], eqx.is_array))

    @eqx.filter_jit
    def train_step(model, opt_state, xb, yb):
        def loss_fn(model):
            return optax.losses.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(xb), yb).mean()

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    def step(xb, yb):
        state["model"], state["opt"], loss = train_step(state["model"], state["opt"], xb, yb)
        return loss

    return _per_step_loop(shape, x, y, epochs, step)


def _per_step_loop(shape: Shape, x, y, epochs: int, step):
    """Warm up, then per epoch: NumPy shuffle, one call of ``step`` per host-sliced batch."""
    B, steps = shape.batch, shape.samples // shape.batch
    loss = None
    for i in range(2):
        loss = step(x[i * B:(i + 1) * B], y[i * B:(i + 1) * B])
    float(loss)
    rng = np.random.default_rng(1)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = rng.permutation(shape.samples)
        xs, ys = x[perm], y[perm]
        for i in range(steps):
            loss = step(xs[i * B:(i + 1) * B], ys[i * B:(i + 1) * B])
        loss = float(loss)
        times.append(time.perf_counter() - t0)
    return steps, times, loss


def run_torch(shape: Shape, x, y, epochs: int):
    import torch
    from torch import nn

    torch.set_num_threads(2)
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(shape.sizes[:-1], shape.sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(shape.sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    biases = [m.bias for m in model if isinstance(m, nn.Linear)]
    # torch's Adam weight_decay is the coupled L2 term (grad += wd * w); biases get none.
    opt = torch.optim.Adam(
        [{"params": weights, "weight_decay": WEIGHT_DECAY}, {"params": biases, "weight_decay": 0.0}], lr=LEARNING_RATE
    )
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.detach()

    B, steps = shape.batch, shape.samples // shape.batch
    for i in range(2):
        step(xt[i * B:(i + 1) * B], yt[i * B:(i + 1) * B])
    g = torch.Generator().manual_seed(1)
    times, loss = [], None
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(shape.samples, generator=g)
        xs, ys = xt[perm], yt[perm]
        for i in range(steps):
            loss = step(xs[i * B:(i + 1) * B], ys[i * B:(i + 1) * B])
        loss = float(loss)
        times.append(time.perf_counter() - t0)
    return steps, times, loss


RUNNERS = {
    "jdense": run_jdense,
    "jax_scan:step_gather": partial(run_jax_scan, shuffle="step_gather"),
    "jax_scan:chunk_gather": partial(run_jax_scan, shuffle="chunk_gather"),
    "jax_scan:epoch_gather": partial(run_jax_scan, shuffle="epoch_gather"),
    "jax_scan_noshuffle": partial(run_jax_scan, shuffle="none"),
    "jax_loop": run_jax_loop,
    "flax_nnx": run_flax_nnx,
    "equinox": run_equinox,
    "torch": run_torch,
}


# -- reference matmul and memory -------------------------------------------------------
def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    jax, jnp, _ = _jax()
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _vm_hwm_mb() -> float | None:
    """This process's own peak RSS from /proc (VmHWM), a cross-check of ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_child(peer: str, shape: Shape, epochs: int) -> None:
    """Run in a fresh process: import what both peers import, train, print peak RSS (MB)."""
    import jdense  # noqa: F401 - jdense and jax_scan load the same modules

    x, y = make_data(shape)
    # jax_scan's memory is that of its lean shuffle (per-step gather, like fit's): the
    # epoch-gather variant holds a shuffled copy of the data set while an epoch runs.
    RUNNERS["jax_scan:step_gather" if peer == "jax_scan" else peer](shape, x, y, epochs)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss_mb": peak_kb / 1024, "vm_hwm_mb": _vm_hwm_mb()}))


def measure_peak_rss(shape: Shape, epochs: int) -> dict[str, dict]:
    """Peak RSS of jdense and jax_scan, each in its own fresh process.

    Call this while the parent is still small: on Linux a child's ru_maxrss starts from
    its parent's peak RSS at the time of the fork/exec, so a parent that has already
    trained would mask the children's own peaks.
    """
    out = {}
    for peer in ("jdense", "jax_scan"):
        cmd = [sys.executable, os.path.abspath(__file__), "--_rss-child", peer, "--_rss-shape", shape.key,
               "--_rss-epochs", str(epochs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"peak RSS child for {peer} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        out[peer] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# -- driver ----------------------------------------------------------------------------
def available_peers() -> list[str]:
    import importlib.util

    peers = []
    for peer in PEERS:
        if peer in OPTIONAL:
            module = OPTIONAL[peer]
            try:
                found = importlib.util.find_spec(module.split(".")[0]) is not None
                if found and "." in module:
                    importlib.import_module(module)
            except Exception:  # noqa: BLE001 - an unusable install counts as absent
                found = False
            if not found:
                continue
        peers.append(peer)
    return peers


def select_shapes(names, quick: bool) -> list[Shape]:
    pool = QUICK_SHAPES if quick else SHAPES
    if not names:
        return list(pool)
    chosen = []
    for name in names:
        matches = [s for s in (*SHAPES, *QUICK_SHAPES) if name in (s.name, s.key)]
        if not matches:
            raise SystemExit(f"unknown shape {name!r}; choose from {[s.key for s in SHAPES + QUICK_SHAPES]}")
        chosen.append(matches[0])
    return chosen


def _runs_of(peer: str, shape: Shape | None = None) -> list[str]:
    if peer != "jax_scan":
        return [peer]
    # chunk_gather with one step per chunk is step_gather: skip it then.
    return [f"jax_scan:{v}" for v in SCAN_SHUFFLES if not (v == "chunk_gather" and shape and chunk_steps(shape) == 1)]


def bench_shape(shape: Shape, peers, rounds: int, log) -> dict[str, dict]:
    """{run: {"steps_per_s", "epoch_s", "steps_per_epoch", "last_loss"}}; "jax_scan" is its best variant.

    The scan columns (jdense, the jax_scan variants, jax_scan_noshuffle) run interleaved,
    one epoch of each in turn (the others run inside a jdense callback, outside its
    timing), so that a change of load on the machine hits them alike. The per-step
    columns run one after the other.
    """
    x, y = make_data(shape)
    best: dict[str, dict] = {}

    def record(r, run, steps, times, loss):
        rate = steps / min(times)
        entry = best.setdefault(run, {"steps_per_s": 0.0, "epoch_s": [], "steps_per_epoch": steps})
        entry["epoch_s"] += [round(t, 6) for t in times]
        entry["steps_per_s"] = max(entry["steps_per_s"], rate)
        entry["last_loss"] = loss
        log(f"  round {r + 1} {shape.key:26s} {run:22s} {rate:10.1f} steps/s  "
            f"(epochs: {', '.join(f'{t * 1e3:.1f}' for t in times)} ms; loss {loss:.4f})")

    scans = [run for peer in peers if peer in FAST and peer != "jdense" for run in _runs_of(peer, shape)]
    for r in range(rounds):
        gc.collect()
        compiled = {run: make_jax_scan(shape, x, y, run.split(":")[1] if ":" in run else "none") for run in scans}
        for _, run_epoch in compiled.values():
            run_epoch()  # the first run of a compiled epoch is slower (allocation): untimed
        times = {run: [] for run in scans}
        losses = {}

        def scan_epochs():
            for run, (_, run_epoch) in compiled.items():
                t0 = time.perf_counter()
                losses[run] = run_epoch()
                times[run].append(time.perf_counter() - t0)

        if "jdense" in peers:
            record(r, "jdense", *run_jdense(shape, x, y, shape.fast_epochs, between_epochs=scan_epochs))
        else:
            for _ in range(shape.fast_epochs + 1):
                scan_epochs()
        for run in scans:
            record(r, run, compiled[run][0], times[run][1:], losses[run])  # as many timed epochs as jdense
        compiled.clear()  # free the scans' device copies of the data before the per-step columns
        for peer in peers:
            if peer not in FAST:
                gc.collect()
                record(r, peer, *RUNNERS[peer](shape, x, y, shape.slow_epochs))
    if "jax_scan" in peers:
        run = max(_runs_of("jax_scan", shape), key=lambda r: best[r]["steps_per_s"])
        best["jax_scan"] = {**best[run], "variant": run.split(":")[1]}
    return best


def format_table(results, shapes, peers, matmul) -> str:
    lines = []
    for shape in shapes:
        res = results[shape.key]
        ref = res["jdense"]["steps_per_s"] if "jdense" in res else None
        steps = res["jdense"]["steps_per_epoch"] if "jdense" in res else res[next(iter(res))]["steps_per_epoch"]
        lines.append(f"\n{shape.key}: {shape.samples} samples, {steps} steps/epoch (jdense; the others drop the "
                     f"partial batch), {shape.flops_per_step / 1e6:.3f} MFLOP/step = 6*batch*sum(in*out)")
        lines.append(f"| {'peer':24s} | {'steps/s':>10s} | {'jdense / peer':>13s} | {'GFLOP/s':>8s} | {'% of matmul':>11s} |")
        lines.append(f"|{'-' * 26}|{'-' * 11}:|{'-' * 14}:|{'-' * 9}:|{'-' * 12}:|")
        rows = []
        for peer in peers:
            if peer == "jax_scan" and peer in res:
                rows.append((f"jax_scan ({res[peer]['variant']})", res[peer]))
                rows += [(f"  {run}", res[run]) for run in _runs_of(peer, shape)]
            elif peer in res:
                rows.append((peer, res[peer]))
        for label, r in rows:
            rate = r["steps_per_s"]
            gflops = rate * shape.flops_per_step / 1e9
            ratio = f"{ref / rate:.2f}x" if ref else "-"
            lines.append(f"| {label:24s} | {rate:10.1f} | {ratio:>13s} | {gflops:8.2f} | {100 * gflops / matmul:10.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    parser.add_argument("--shapes", nargs="+", metavar="SHAPE",
                        help=f"shapes to run (default all): {', '.join(s.name for s in SHAPES)}")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one round: a smoke test (< 60 s)")
    parser.add_argument("--rounds", type=int, default=None, help="repeat every peer this many times, keep the best (default 2, quick 1)")
    parser.add_argument("--peers", nargs="+", choices=PEERS, help="only these peers (jdense is always run)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--_rss-child", dest="rss_child", help=argparse.SUPPRESS)
    parser.add_argument("--_rss-shape", dest="rss_shape", help=argparse.SUPPRESS)
    parser.add_argument("--_rss-epochs", dest="rss_epochs", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.rss_child:
        peak_rss_child(args.rss_child, select_shapes([args.rss_shape], False)[0], args.rss_epochs)
        return 0

    t_start = time.perf_counter()
    log = partial(print, flush=True)
    shapes = select_shapes(args.shapes, args.quick)
    rounds = args.rounds or (1 if args.quick else 2)
    load_before = os.getloadavg()

    # Peak memory first, while this process has imported nothing big (see measure_peak_rss).
    rss, rss_raw = {}, {}
    if not args.no_rss:
        rss_shape = next((s for s in shapes if s.name == RSS_SHAPE), shapes[0])
        rss_raw = measure_peak_rss(rss_shape, rss_shape.fast_epochs)
        rss = {peer: r["peak_rss_mb"] for peer, r in rss_raw.items()}
        log(f"peak RSS ({rss_shape.key}, {rss_shape.fast_epochs + 1} epochs, own subprocess each): "
            + ", ".join(f"{k} {v['peak_rss_mb']:.0f} MB (VmHWM {v['vm_hwm_mb']:.0f} MB)" for k, v in rss_raw.items()))

    peers = available_peers()
    if args.peers:
        peers = [p for p in peers if p in args.peers or p == "jdense"]
    import jax

    log(f"jdense benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"JAX {jax.__version__} on {jax.devices()[0].platform}; peers: {', '.join(peers)}; {rounds} round(s); "
        f"load average {load_before[0]:.2f}")
    matmul = matmul_gflops()
    log(f"2048x2048 float32 jnp.dot: {matmul:.1f} GFLOP/s")
    results = {}
    for shape in shapes:
        results[shape.key] = bench_shape(shape, peers, rounds, log)
    matmul = max(matmul, matmul_gflops())  # once more at the end: keep the better (less disturbed) one

    log(format_table(results, shapes, peers, matmul))
    log(f"\n2048x2048 float32 matmul: {matmul:.1f} GFLOP/s")
    if len(rss) == 2:
        log(f"peak RSS: jdense {rss['jdense']:.0f} MB, jax_scan {rss['jax_scan']:.0f} MB "
            f"(jdense / jax_scan = {rss['jdense'] / rss['jax_scan']:.3f})")
    load_after = os.getloadavg()
    log(f"total time {time.perf_counter() - t_start:.0f} s; load average (1 min) {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after: other processes on this machine slow every column")

    if args.json:
        doc = {
            "matmul_gflops": matmul,
            "shapes": {key: {peer: res[peer]["steps_per_s"] for peer in peers if peer in res} for key, res in results.items()},
            "peak_rss_mb": rss,
            "details": {
                "jax": jax.__version__,
                "cpus": os.cpu_count(),
                "rounds": rounds,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "jax_scan_variant": {key: res["jax_scan"]["variant"] for key, res in results.items() if "jax_scan" in res},
                "jax_scan_variants_steps_per_s": {
                    key: {run: res[run]["steps_per_s"] for run in RUNNERS if run.startswith("jax_scan:") and run in res}
                    for key, res in results.items()
                },
                "load_average_before_after": [load_before[0], load_after[0]],
                "peak_rss": rss_raw,
                "flops_per_step": "6 * batch * sum(in * out)",
                "shapes": {
                    s.key: {
                        "samples": s.samples,
                        "batch": s.batch,
                        "flops_per_step": s.flops_per_step,
                        "gflops": {p: r["steps_per_s"] * s.flops_per_step / 1e9 for p, r in results[s.key].items()},
                        "epoch_seconds": {p: r["epoch_s"] for p, r in results[s.key].items()},
                        "steps_per_epoch": {p: r["steps_per_epoch"] for p, r in results[s.key].items()},
                    }
                    for s in shapes
                },
            },
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
