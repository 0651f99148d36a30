#!/usr/bin/env python
"""Populations against one network at a time, side by side in one run.

- ``ensemble64``: 64 seeds of 64-32-10, batch 32, 16,000 random samples (Adam): member-steps
  per second of ``fit_population`` divided by steps per second of one ``fit``. Both are
  the best epoch after compilation; they alternate (a few epochs each, several rounds)
  so that load on the machine hits them alike. ``devices`` is how many devices the
  population spread its members over (every device: on CPU one per core, see below);
  ``ratio_one_device`` is the same population kept on one device (``devices=1``).
- ``sweep32``: 32 learning rates x 50 epochs on scikit-learn's digits (64-128-64-10, batch
  32, validation each epoch): wall time of 32 ``fit`` calls (compile cache warm after the
  first) and of 32 calls with ``jdense.clear_cache()`` before each (every call compiles),
  divided by the wall time of one ``fit_population``; and the best validation accuracy of each.
- ``rss``: peak RSS (``ru_maxrss``) of one fit and of the 64-member population, each in a
  fresh process, against the bound 1.5 x single + 64 x (params + optimizer state).

The script calls ``jdense.cpu_devices()`` first, as a user with a multi-core CPU should
(one JAX device per core; ``--cpu-devices 1`` leaves JAX's single CPU device). On a GPU
that call changes nothing and the population uses the GPU(s). ``--members`` sets the
ensemble's size (``ensemble64`` keeps its name; e.g. 1024 on a GPU).

Usage::

    python benchmarks/bench_population.py [--json PATH] [--quick] [--members N] [--cpu-devices N] [--skip-rss]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


class _Clock:
    """A callback that records the wall time at each epoch's end."""

    def __init__(self):
        self.times = [time.perf_counter()]

    def on_epoch_end(self, epoch, logs, params, **kw):
        self.times.append(time.perf_counter())

    def best(self) -> float:
        return float(np.min(np.diff(self.times)[1:])) if len(self.times) > 2 else float(np.diff(self.times)[-1])


def ensemble64(quick: bool, members: int | None = None) -> dict:
    import jax

    import jdense

    default, samples, rounds, epochs = (8, 2000, 2, 3) if quick else (64, 16000, 3, 4)
    members = members or default
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 64)).astype(np.float32)
    y = rng.integers(0, 10, samples).astype(np.int32)
    net = jdense.mlp([64, 32, 10])
    steps = -(-samples // 32)
    kw = dict(loss="cross_entropy", batch_size=32, key=jax.random.key(1), verbose=0, epochs=epochs)
    single, population, one_device = [], [], []
    devices = jax.device_count()
    for _ in range(rounds):
        clock = _Clock()
        jdense.fit(net, net.init(jax.random.key(0)), x, y, optimizer=jdense.optimizer(net), callbacks=[clock], **kw)
        single.append(clock.best())
        clock = _Clock()
        jdense.fit_population(net, x, y, members=members, callbacks=[clock], **kw)  # every device
        population.append(clock.best())
        if devices > 1:
            clock = _Clock()
            jdense.fit_population(net, x, y, members=members, devices=1, callbacks=[clock], **kw)
            one_device.append(clock.best())
    one = steps / min(single)
    pop = members * steps / min(population)
    pop1 = members * steps / min(one_device) if one_device else pop
    return {"members": members, "samples": samples, "fit_steps_per_s": one, "population_member_steps_per_s": pop,
            "ratio": pop / one, "devices": devices, "population_member_steps_per_s_one_device": pop1,
            "ratio_one_device": pop1 / one, "platform": jax.devices()[0].platform}


def sweep32(quick: bool) -> dict:
    import jax

    import jdense
    from jdense.data import digits, standardize, train_val_test_split

    n, epochs = (4, 5) if quick else (32, 50)
    x, y = digits()
    (xtr, ytr), (xva, yva), _ = train_val_test_split(0, x, y, stratify=True)
    xtr, xva = standardize(xtr, xva)
    net = jdense.mlp([64, 128, 64, 10])
    lrs = [float(v) for v in np.geomspace(1e-4, 3e-2, n)]
    kw = dict(loss="cross_entropy", batch_size=32, key=jax.random.key(1), verbose=0, epochs=epochs,
              validation_data=(xva, yva))

    def calls(clear: bool):
        t, best = time.perf_counter(), 0.0
        for lr in lrs:
            if clear:
                jdense.clear_cache()
            r = jdense.fit(net, net.init(jax.random.key(0)), xtr, ytr, optimizer=jdense.optimizer(net, "adam", lr), **kw)
            best = max(best, r.history["val_accuracy"][-1])
        return time.perf_counter() - t, best

    uncached, best_uncached = calls(clear=True)
    jdense.clear_cache()
    cached, best_cached = calls(clear=False)
    jdense.clear_cache()
    t = time.perf_counter()
    pop = jdense.fit_population(net, xtr, ytr, members=[{"learning_rate": lr, "seed": 0} for lr in lrs], **kw)
    population = time.perf_counter() - t
    return {"members": n, "epochs": epochs, "fit_calls_s": cached, "fit_calls_uncached_s": uncached,
            "population_s": population, "speedup": cached / population, "speedup_uncached": uncached / population,
            "best_val_accuracy_fit": best_cached, "best_val_accuracy_population": float(pop.history["val_accuracy"][-1].max()),
            "best_val_accuracy_uncached": best_uncached}


_RSS_CHILD = """
import resource, sys, jax, numpy as np, jdense
members, samples = int(sys.argv[1]), int(sys.argv[2])
jdense.cpu_devices()  # as the user runs it: one CPU device per core
rng = np.random.default_rng(0)
x = rng.normal(size=(samples, 64)).astype(np.float32); y = rng.integers(0, 10, samples).astype(np.int32)
net = jdense.mlp([64, 32, 10])
kw = dict(loss="cross_entropy", batch_size=32, key=jax.random.key(1), verbose=0, epochs=2)
if members == 0:
    r = jdense.fit(net, net.init(jax.random.key(0)), x, y, optimizer=jdense.optimizer(net), **kw)
    state = (r.params, r.opt_state)
else:
    r = jdense.fit_population(net, x, y, members=members, **kw)
    state = (r.params, r.opt_state)
nbytes = sum(a.nbytes for a in jax.tree.leaves(state))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, nbytes)
"""


def rss(quick: bool) -> dict:
    members, samples = (8, 2000) if quick else (64, 16000)
    out = {}
    for name, m in (("single", 0), ("population", members)):
        res = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(m), str(samples)], capture_output=True, text=True,
                             check=True)
        peak, nbytes = map(int, res.stdout.split()[-2:])
        out[f"{name}_peak_mb"], out[f"{name}_state_mb"] = peak / 2**20, nbytes / 2**20
    out["bound_mb"] = 1.5 * out["single_peak_mb"] + out["population_state_mb"]
    out["within_bound"] = out["population_peak_mb"] <= out["bound_mb"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--members", type=int, help="ensemble size (default 64; e.g. 1024 on a GPU)")
    parser.add_argument("--cpu-devices", type=int, help="CPU devices for JAX (default: one per core)")
    parser.add_argument("--skip-rss", action="store_true", help="leave out the peak-memory subprocesses")
    args = parser.parse_args()
    import jdense

    jdense.cpu_devices(args.cpu_devices)  # before any JAX operation: one CPU device per core (GPUs unaffected)
    out = {"ensemble64": ensemble64(args.quick, args.members), "sweep32": sweep32(args.quick)}
    if not args.skip_rss:
        out["rss"] = rss(args.quick)
    out["self_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
