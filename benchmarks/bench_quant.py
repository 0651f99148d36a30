#!/usr/bin/env python
"""Quantized inference side by side: float32, bfloat16, int8, int8 weight-only and float8.

For each shape, one network in five forms, timed in one run with interleaved repetitions
(one ``predict`` call of every form in turn, repeated; the best call counts), so that other
load on the machine hits every column alike:

- ``float32``: the network as trained;
- ``bfloat16``: params stored in bfloat16, computed in bfloat16 (``compute_dtype``);
- ``int8``: ``jdense.quantize(net, params, "int8")``: int8 weights and per-row int8
  activations, int8 × int8 → int32 dot;
- ``int8_weight_only``: int8 weights cast to float32 inside the matmul;
- ``float8``: ``float8_e4m3fn`` weights cast to float32 inside the matmul.

Per form: ``rows_per_s`` (``jdense.predict`` throughput on a batch of rows),
``batch1_rows_per_s`` (one row at a time through the compiled ``apply``, data already on
the device: the serving case), ``bytes_ratio`` (params bytes ÷ float32's), ``rel_error``
(``||y - y_f32|| / ||y_f32||`` of the outputs) and, for the network trained on digits,
``accuracy_change_pp`` (test accuracy minus float32's, in percentage points).

Shapes: ``784-128-64-10`` is trained on scikit-learn's digits upsampled to 28×28 (70%
train, 30% test); ``1024-4096-4096-1024`` has random He-normal weights (no accuracy).
``--quick``: ``64-32-10`` on the plain 8×8 digits and a random ``256-1024-1024-256``.

Usage::

    python benchmarks/bench_quant.py --json quant.json     # a few minutes on 2 cores
    python benchmarks/bench_quant.py --quick               # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jdense

FORMS = ("float32", "bfloat16", "int8", "int8_weight_only", "float8")
# shape -> (rows per predict call, predict batch size, trained on digits)
FULL = {"784-128-64-10": (8192, 1024, True), "1024-4096-4096-1024": (512, 256, False)}
QUICK = {"64-32-10": (2048, 512, True), "256-1024-1024-256": (256, 128, False)}
BATCH1_CALLS, BATCH1_SECONDS = 64, 0.25  # one-row calls per sample: up to 64, stopping after 0.25 s


def digits(width: int):
    """Digits split 70/30, images resized to ``width`` pixels (8×8 -> 28×28 for 784)."""
    x, y = jdense.data.digits()
    side = int(round(width**0.5))
    if side != 8:
        x = np.asarray(jax.image.resize(x.reshape(-1, 8, 8), (x.shape[0], side, side), "linear")).reshape(-1, side * side)
    (xtr, ytr), _, (xte, yte) = jdense.data.train_val_test_split(0, x, y, val=0.0, test=0.3)
    return xtr, ytr, xte, yte


def build(shape: str, rows: int):
    """``(net, params, x, y)``: trained on digits when the shape starts as an image, else random He."""
    sizes = [int(s) for s in shape.split("-")]
    net = jdense.mlp(sizes)
    if trained(shape):
        xtr, ytr, xte, yte = digits(sizes[0])
        result = jdense.fit(net, net.init(jax.random.key(0)), xtr, ytr, loss="cross_entropy",
                            optimizer=jdense.optimizer(net, "adam", 1e-3), epochs=20, batch_size=32,
                            key=jax.random.key(1), verbose=0)
        reps = -(-rows // len(xte))
        return net, result.params, np.tile(xte, (reps, 1))[:rows], yte
    rng = np.random.default_rng(0)
    params = {
        f"dense_{i}": {"w": (rng.standard_normal((m, n), np.float32) * np.float32((2 / m) ** 0.5)),
                       "b": np.zeros(n, np.float32)}
        for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:]))
    }
    return net, jax.tree.map(jnp.asarray, params), rng.standard_normal((rows, sizes[0]), np.float32), None


def trained(shape: str) -> bool:
    return (FULL | QUICK)[shape][2]


def forms(net, params) -> dict:
    out = {"float32": (net, params)}
    bf16 = [dataclasses.replace(layer, dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16) for layer in net.layers]
    out["bfloat16"] = (jdense.Sequential(bf16), jax.tree.map(lambda a: a.astype(jnp.bfloat16), params))
    for mode in ("int8", "int8_weight_only", "float8"):
        out[mode] = jdense.quantize(net, params, mode)
    return out


def nbytes(params) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params))


def measure(shape: str, reps: int) -> dict:
    rows, batch, _ = (FULL | QUICK)[shape]
    net, params, x, y = build(shape, rows)
    models = forms(net, params)
    apply = {name: jax.jit(n.apply) for name, (n, _) in models.items()}
    one = jnp.asarray(x[:1])
    outputs = {}
    for name, (n, p) in models.items():  # compile both paths, keep the outputs
        outputs[name] = np.asarray(jdense.predict(n, p, x, batch_size=batch).astype(jnp.float32))
        apply[name](p, one).block_until_ready()
    best = {name: float("inf") for name in models}
    best1 = {name: float("inf") for name in models}
    for _ in range(reps):  # interleaved: every form once per repetition
        for name, (n, p) in models.items():
            t = time.perf_counter()
            jdense.predict(n, p, x, batch_size=batch).block_until_ready()
            best[name] = min(best[name], time.perf_counter() - t)
            t, calls = time.perf_counter(), 0
            while calls < BATCH1_CALLS and time.perf_counter() - t < BATCH1_SECONDS:
                apply[name](p, one).block_until_ready()
                calls += 1
            best1[name] = min(best1[name], (time.perf_counter() - t) / calls)
    ref, f32_bytes = outputs["float32"], nbytes(params)
    result = {}
    for name, (_, p) in models.items():
        entry = {
            "rows_per_s": rows / best[name],
            "batch1_rows_per_s": 1.0 / best1[name],
            "bytes_ratio": nbytes(p) / f32_bytes,
            "rel_error": float(np.linalg.norm(outputs[name] - ref) / np.linalg.norm(ref)),
            "accuracy_change_pp": None,
        }
        if y is not None:
            acc = lambda out: float((out[: len(y)].argmax(-1) == y).mean())  # noqa: E731
            entry["accuracy"] = acc(outputs[name])
            entry["accuracy_change_pp"] = 100 * (acc(outputs[name]) - acc(ref))
        result[name] = entry
    result["_setup"] = {"rows": rows, "batch_size": batch, "model_bytes_float32": f32_bytes, "repetitions": reps,
                        "weights": "trained on digits" if y is not None else "random He normal"}
    return result


def table(results: dict) -> str:
    head = (f"{'shape':<20} {'form':<17} {'rows/s':>11} {'x f32':>6} {'batch-1 rows/s':>15} {'x f32':>6} "
            f"{'bytes':>6} {'rel err':>8} {'acc Δpp':>8}")
    lines = [head, "-" * len(head)]
    for shape, res in results.items():
        f32 = res["float32"]
        for form in FORMS:
            e = res[form]
            acc = "" if e["accuracy_change_pp"] is None else f"{e['accuracy_change_pp']:+.2f}"
            lines.append(
                f"{shape:<20} {form:<17} {e['rows_per_s']:>11,.0f} {e['rows_per_s'] / f32['rows_per_s']:>6.2f} "
                f"{e['batch1_rows_per_s']:>15,.0f} {e['batch1_rows_per_s'] / f32['batch1_rows_per_s']:>6.2f} "
                f"{e['bytes_ratio']:>6.3f} {e['rel_error']:>8.2%} {acc:>8}"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (64-32-10, 256-1024-1024-256), 3 repetitions")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 7, --quick 3)")
    ap.add_argument("--json", metavar="PATH", help="also write the results here")
    args = ap.parse_args()
    shapes = QUICK if args.quick else FULL
    reps = args.reps or (3 if args.quick else 7)
    results = {}
    for shape in shapes:
        t = time.perf_counter()
        results[shape] = measure(shape, reps)
        print(f"{shape}: {time.perf_counter() - t:.0f} s", flush=True)
    print(table(results))
    if args.json:
        meta = {"_machine": {"platform": platform.platform(), "backend": jax.default_backend(),
                             "devices": [str(d) for d in jax.devices()], "jax": jax.__version__}}
        with open(args.json, "w") as f:
            json.dump(results | meta, f, indent=2)


if __name__ == "__main__":
    main()
