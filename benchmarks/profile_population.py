#!/usr/bin/env python
"""Where a population's training step spends its time: XLA operations per step, from a profile.

Trains a population (default: 64 seeds of 64-32-10 on 16,000 random rows, batch 32, as
``bench_population.py``'s ``ensemble64``) for two epochs under ``jax.profiler.trace`` and
sums the profile's events by name, divided by the number of steps. The names are those of
the compiled program's operations (``ynn_fusion.3``, ``dot.25``, ...); with ``--hlo DIR``
the script also asks XLA to dump the optimized program there and prints each operation's
output shape next to it. Profiling adds a little time to every operation: read the column
as shares of the step, not as absolute times. ``--members 0`` profiles one ``fit`` instead.

Usage::

    python benchmarks/profile_population.py [--members 64] [--sizes 64-32-10] [--rows 16000] [--top 25] [--hlo DIR]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=64, help="population size; 0 profiles one fit")
    parser.add_argument("--sizes", default="64-32-10", help="layer widths, e.g. 64-128-64-10")
    parser.add_argument("--rows", type=int, default=16000, help="random training rows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top", type=int, default=25, help="how many operations to list")
    parser.add_argument("--hlo", help="dump the optimized programs to this directory and show output shapes")
    args = parser.parse_args()
    if args.hlo:  # must be set before JAX starts its backend
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_dump_to={args.hlo} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*epoch.*")

    import jax
    import numpy as np

    import jdense

    sizes = [int(v) for v in args.sizes.split("-")]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], args.rows).astype(np.int32)
    net = jdense.mlp(sizes)
    kw = dict(loss="cross_entropy", batch_size=args.batch_size, key=jax.random.key(1), verbose=0, epochs=2)

    def run():
        if args.members:
            return jdense.fit_population(net, x, y, members=args.members, **kw)
        return jdense.fit(net, net.init(jax.random.key(0)), x, y, optimizer=jdense.optimizer(net), **kw)

    run()  # compile outside the profile
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            run()
        trace = json.load(gzip.open(glob.glob(f"{trace_dir}/**/*perfetto_trace.json.gz", recursive=True)[0]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_op = collections.Counter()
    for event in events:  # XLA's operations; not Python frames ($...), executors or thread pools
        name = event.get("name", "")
        if event.get("ph") == "X" and not name.startswith(("$", "Pjit")) and not re.search(r"Thunk|Pool|Execute|while", name):
            per_op[name] += event.get("dur", 0)
    steps = kw["epochs"] * -(-args.rows // args.batch_size)
    hlo = ""
    if args.hlo:
        dumps = sorted(glob.glob(f"{args.hlo}/*epoch*.cpu_after_optimizations.txt"))
        hlo = open(dumps[-1]).read() if dumps else ""
    total = sum(per_op.values()) / steps
    print(f"{'members' if args.members else 'fit'} {args.members or 1} x {args.sizes}, batch {args.batch_size}: "
          f"{total:.0f} us of XLA operations per step (profiled)")
    for name, micros in per_op.most_common(args.top):
        shape = re.search(r"%" + re.escape(name) + r" = (\S+) ", hlo)
        print(f"{micros / steps:9.1f} us  {100 * micros / steps / total:5.1f}%  {name:36s} {shape.group(1) if shape else ''}")


if __name__ == "__main__":
    sys.exit(main())
