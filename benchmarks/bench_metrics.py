#!/usr/bin/env python
"""The cost of statistics metrics in the compiled epoch: ``metrics=["accuracy", "f1", "auc"]``
against ``metrics=["accuracy"]`` on 784-128-64-10, batch 128, 16,000 random samples (Adam).

Both runs alternate epoch by epoch (two fits driven a few epochs at a time, several
rounds) and keep the best epoch time after compilation; the ratio is steps/s with the
extra metrics divided by steps/s without.

Usage::

    python benchmarks/bench_metrics.py [--json PATH] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


class _Clock:
    def __init__(self):
        self.times = [time.perf_counter()]

    def on_epoch_end(self, epoch, logs, params, **kw):
        self.times.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    import jax

    import jdense

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16000, 784)).astype(np.float32)
    y = rng.integers(0, 10, 16000).astype(np.int32)
    net = jdense.mlp([784, 128, 64, 10])
    params = net.init(jax.random.key(0))
    steps = -(-len(x) // 128)
    best = {}
    for _ in range(args.rounds):
        for name, metrics in (("accuracy", ["accuracy"]), ("accuracy+f1+auc", ["accuracy", "f1", "auc"])):
            clock = _Clock()
            jdense.fit(net, params, x, y, loss="cross_entropy", optimizer=jdense.optimizer(net), epochs=3, batch_size=128,
                       key=jax.random.key(1), verbose=0, metrics=metrics, callbacks=[clock])
            epoch = float(np.min(np.diff(clock.times)[1:]))
            best[name] = min(best.get(name, np.inf), epoch)
    out = {name: {"steps_per_s": steps / t} for name, t in best.items()}
    out["ratio"] = best["accuracy"] / best["accuracy+f1+auc"]
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
