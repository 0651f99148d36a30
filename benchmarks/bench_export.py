#!/usr/bin/env python
"""Inference latency of one network four ways, side by side in one run.

Columns, all on the same float32 network and the same inputs (NumPy in, NumPy out):

- ``predict``: ``jdense.predict(net, params, x)`` (compiled once and cached);
- ``jaxexport``: ``jdense.load_exported`` of the ``.jaxexport`` file (the stored StableHLO);
- ``onnxruntime``: an ``onnxruntime.InferenceSession`` on the ``.onnx`` file (CPU provider,
  default graph optimizations);
- ``torch``: ``jdense.to_torch(net, params)`` under ``torch.inference_mode()``.

Threads: by default every library gets ONE thread (``--threads 1``): XLA with
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, onnxruntime with
``intra_op_num_threads=1, inter_op_num_threads=1``, torch with ``torch.set_num_threads(1)``.
``--threads 0`` leaves each library its default thread pool.

Timing: rounds interleave the columns (a block of calls of each column in turn); a column's
figure is its best round's mean time per call, so that other load on the machine hits every
column alike. Each column's outputs are checked against ``predict``'s.

Usage::

    python benchmarks/bench_export.py --json export.json     # 784-256-256-10, batches 1 and 1024
    python benchmarks/bench_export.py --quick                # smoke test: a tiny network, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="a tiny network and few calls (smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="threads for every library (0: each library's default)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, --quick 2)")
    args = parser.parse_args()
    if args.threads == 1:  # before jax starts its backend
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    elif args.threads > 1:
        sys.exit("--threads takes 1 (every library single-threaded) or 0 (each library's default).")

    import jax
    import numpy as np
    import onnxruntime
    import torch

    import jdense

    widths, batches, seconds = ([32, 16, 4], (1, 64), 0.02) if args.quick else ([784, 256, 256, 10], (1, 1024), 0.25)
    rounds = args.rounds or (2 if args.quick else 7)
    if args.threads == 1:
        torch.set_num_threads(1)
    options = onnxruntime.SessionOptions()
    if args.threads == 1:
        options.intra_op_num_threads = options.inter_op_num_threads = 1

    net = jdense.mlp(widths, "relu")
    params = net.init(jax.random.key(0))
    folder = tempfile.mkdtemp()
    onnx_path = jdense.export(net, params, os.path.join(folder, "model.onnx"))
    jax_path = jdense.export(net, params, os.path.join(folder, "model.jaxexport"))
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    exported = jdense.load_exported(jax_path)
    module = jdense.to_torch(net, params)

    def run_torch(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    columns = {
        "predict": lambda x: np.asarray(jdense.predict(net, params, x)),
        "jaxexport": lambda x: np.asarray(exported(x)),
        "onnxruntime": lambda x: session.run(None, {"input": x})[0],
        "torch": run_torch,
    }
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        x = rng.normal(size=(batch, widths[0])).astype(np.float32)
        reference = columns["predict"](x)
        calls = {}
        for name, fn in columns.items():  # warm up (compiles), check, and size a block to ~`seconds`
            y = fn(x)
            error = float(np.max(np.abs(y - reference)) / np.max(np.abs(reference)))
            start = time.perf_counter()
            fn(x)
            calls[name] = (max(1, int(seconds / max(time.perf_counter() - start, 1e-6))), error)
        best = {name: float("inf") for name in columns}
        for _ in range(rounds):
            for name, fn in columns.items():
                n = calls[name][0]
                start = time.perf_counter()
                for _ in range(n):
                    fn(x)
                best[name] = min(best[name], (time.perf_counter() - start) / n)
        for name in columns:
            results.append({"batch": batch, "column": name, "ms_per_call": best[name] * 1e3,
                            "vs_predict": best["predict"] / best[name], "max_error_vs_predict": calls[name][1]})

    print(f"network {'-'.join(map(str, widths))} relu, float32; threads: {'1 for every library' if args.threads == 1 else 'defaults'}")
    print(f"{'batch':>6} {'column':<12} {'ms/call':>10} {'speed vs predict':>17} {'max rel. error':>15}")
    for r in results:
        print(f"{r['batch']:>6} {r['column']:<12} {r['ms_per_call']:>10.4f} {r['vs_predict']:>16.2f}x {r['max_error_vs_predict']:>15.1e}")
    if args.json:
        info = {"network": "-".join(map(str, widths)), "threads": args.threads, "rounds": rounds, "machine": platform.platform(),
                "processor": platform.processor(), "cpus": os.cpu_count(), "jax": jax.__version__,
                "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "results": results}
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
