#!/usr/bin/env python
"""Data-parallel ``jdense.fit`` on 1, 2 and 4 forced CPU devices, against the plain path.

Every row trains the same network (784-128-64-10, ReLU, logits; batch 128; softmax
cross-entropy, Adam 1e-3) on the same random data (16,384 samples: 128 steps an epoch,
reshuffled every epoch). Each device count runs in its own subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (JAX fixes the count at start) and
times, side by side and alternating over rounds:

- ``plain``: ``fit(...)`` without a mesh (one device, the default path);
- ``mesh``: ``fit(..., mesh=jdense.parallel.data_mesh())``: each batch split over the N
  devices, params replicated, the gradient all-reduced.

On 1 device the ``mesh / plain`` ratio is the overhead of the sharded path itself. The
forced CPU "devices" share this machine's cores (two here), so 2 and 4 devices show
correctness and overhead, not speed-up.

Two ways of timing, both after compilation:

- ``fit``: whole ``fit`` calls, alternating plain and mesh; a callback takes
  ``time.perf_counter()`` and ``time.process_time()`` at each epoch end (the first epoch,
  with the compilation, is not timed).
- ``interleaved``: the two compiled epochs, built as ``fit`` builds them, called in turn
  one epoch at a time exactly as ``fit``'s loop calls them (shuffle, place the indices,
  run, read the sums). Alternating every ~0.1 s makes other load on the machine hit both
  paths alike: this is the number for the overhead.

steps/s is the best epoch (the median is shown beside it); CPU ms/step is the median
process CPU time (all threads) per step. GFLOP/s counts ``6 * batch * sum(in * out)`` per
step.

Usage::

    python benchmarks/bench_scale.py                    # about 1-2 min on 2 cores
    python benchmarks/bench_scale.py --quick            # smoke test
    python benchmarks/bench_scale.py --devices 1 4 --json scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

SIZES = (784, 128, 64, 10)
BATCH = 128
SAMPLES = 16_384
FLOPS_PER_STEP = 6 * BATCH * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))


def child(devices: int, rounds: int, epochs: int, interleaved: int) -> dict:
    """Runs inside the subprocess with ``devices`` forced CPU devices."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jdense
    from jdense import parallel

    assert jax.device_count() == devices, (jax.device_count(), devices)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], SAMPLES).astype(np.int32)
    net = jdense.mlp(list(SIZES))
    params = net.init(jax.random.key(0))
    steps = SAMPLES // BATCH

    class Clock:
        def __init__(self):
            self.wall, self.cpu = [], []

        def on_epoch_end(self, epoch, logs, params, **_):
            jax.block_until_ready(params)
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())

    def epoch_times(mesh) -> tuple[list[float], list[float]]:
        clock = Clock()
        jdense.fit(net, params, x, y, loss="cross_entropy", optimizer=jdense.optimizer(net), epochs=1 + epochs,
                   batch_size=BATCH, key=jax.random.key(1), verbose=0, callbacks=[clock], mesh=mesh)
        return list(np.diff(clock.wall)), list(np.diff(clock.cpu))  # epoch 0 (compilation) is not timed

    paths = {"plain": None, "mesh": parallel.data_mesh()}
    wall = {name: [] for name in paths}
    cpu = {name: [] for name in paths}
    for _ in range(rounds):
        for name, mesh in paths.items():
            w, c = epoch_times(mesh)
            wall[name] += w
            cpu[name] += c
    out = {"fit": summary(wall, cpu, steps)}

    # Interleaved epochs: both compiled epochs built as fit builds them, then called in
    # turn, one epoch each, exactly as fit's loop does (shuffle, place, run, read sums).
    from jdense import arguments, loop, losses, metrics, programs
    from jdense.data import feed

    opt = jdense.optimizer(net)
    accuracy = (metrics.get_metric("accuracy"),)
    runs = {}
    for name, mesh in paths.items():
        p = parallel.place(jax.tree.map(jnp.array, params), mesh)
        carry = [*parallel.place((p, opt.init(p), {}), mesh)]
        data = parallel.device_data((x, y), mesh)
        fn = programs.training(arguments.training_spec(net, losses.per_sample("cross_entropy"), accuracy, opt, mesh=mesh))
        runs[name] = (mesh, carry, data, fn)

    def one_epoch(name, epoch):
        mesh, carry, data, fn = runs[name]
        order = np.random.default_rng([1, epoch]).permutation(SAMPLES)
        idx, mask, key = parallel.place((*feed.padded_indices(order, BATCH), jax.random.key(1)),
                                        mesh)
        *carry[:], sums, _ = fn(*carry, *data, idx, mask, key, np.uint32(epoch), None, np.bool_(False), None)
        loop.logs_of(sums, accuracy, 10)  # params, opt_state, state donated and replaced

    for name in paths:
        one_epoch(name, 0)  # compile
    wall = {name: [] for name in paths}
    cpu = {name: [] for name in paths}
    for epoch in range(1, 1 + interleaved):
        for name in paths:
            w, c = time.perf_counter(), time.process_time()
            one_epoch(name, epoch)
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    out["interleaved"] = summary(wall, cpu, steps)
    return out


def summary(wall: dict, cpu: dict, steps: int) -> dict:
    return {
        name: {"steps_per_s": steps / min(wall[name]), "median_steps_per_s": steps / statistics.median(wall[name]),
               "cpu_ms_per_step": 1e3 * statistics.median(cpu[name]) / steps, "epochs": len(wall[name])}
        for name in wall
    }


def run_child(devices: int, rounds: int, epochs: int, interleaved: int) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    cmd = [sys.executable, __file__, "--child", str(devices), "--rounds", str(rounds), "--epochs", str(epochs),
           "--interleaved", str(interleaved)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"{devices}-device run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rounds", type=int, default=3, help="alternating plain/mesh fit calls per device count")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per fit call")
    ap.add_argument("--interleaved", type=int, default=30, help="interleaved plain/mesh epochs per device count")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 epochs, 4 interleaved epochs")
    ap.add_argument("--json", metavar="PATH", help="also write the results here")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.epochs, args.interleaved = 1, 2, 4
    if args.child:
        print(json.dumps(child(args.child, args.rounds, args.epochs, args.interleaved)))
        return

    results = {n: run_child(n, args.rounds, args.epochs, args.interleaved) for n in args.devices}
    name = "-".join(map(str, SIZES))
    print(f"{name}, batch {BATCH}, {SAMPLES} samples ({SAMPLES // BATCH} steps/epoch), {os.cpu_count()} CPU cores; "
          f"{FLOPS_PER_STEP / 1e6:.1f} MFLOP/step")
    header = (f"{'devices':>7} | {'how':<11} | {'path':<5} | {'steps/s':>7} | {'median':>7} | {'GFLOP/s':>7} | "
              f"{'CPU ms/step':>11} | {'mesh/plain steps/s':>18} | {'mesh/plain CPU':>14}")
    print(header)
    print("-" * len(header))
    for n, res in results.items():
        for how in ("fit", "interleaved"):
            for path in ("plain", "mesh"):
                r, p = res[how][path], res[how]["plain"]
                print(f"{n:>7} | {how:<11} | {path:<5} | {r['steps_per_s']:>7,.0f} | {r['median_steps_per_s']:>7,.0f} | "
                      f"{r['steps_per_s'] * FLOPS_PER_STEP / 1e9:>7.1f} | {r['cpu_ms_per_step']:>11.3f} | "
                      f"{r['steps_per_s'] / p['steps_per_s']:>18.2f} | "
                      f"{r['cpu_ms_per_step'] / p['cpu_ms_per_step']:>14.2f}")
    if 1 in results:
        for how in ("fit", "interleaved"):
            r, p = results[1][how]["mesh"], results[1][how]["plain"]
            print(f"sharded path on one device vs plain ({how}): {r['steps_per_s'] / p['steps_per_s']:.3f}x the steps/s "
                  f"(best epoch), {r['median_steps_per_s'] / p['median_steps_per_s']:.3f}x (median), "
                  f"{r['cpu_ms_per_step'] / p['cpu_ms_per_step']:.3f}x the CPU time per step")
    if args.json:
        meta = {"network": name, "batch": BATCH, "samples": SAMPLES, "flops_per_step": FLOPS_PER_STEP,
                "cpu_count": os.cpu_count(), "platform": platform.platform(), "rounds": args.rounds,
                "epochs_per_round": args.epochs, "interleaved_epochs": args.interleaved}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": {str(n): r for n, r in results.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
