#!/usr/bin/env python
"""Calibration before and after temperature scaling, and the cost of MC dropout against repeated predict calls.

Part 1, calibration: on scikit-learn's digits (64-128-64-10, softmax) and breast cancer
(30-32-16-1, sigmoid), one stratified split (60% train, 20% validation, 20% test, features
standardized with the training statistics) and ``--seeds`` networks trained from different
seeds in one ``jdense.fit_population`` (Adam 1e-3, batch 32, no regularization, ``--epochs``
epochs: long enough to over-fit the training loss). For each seed, ``jdense.temperature_scale``
fits T on the validation split; the test ECE (15 bins), NLL and accuracy are measured before
and after.

Part 2, MC dropout: 64-128-64-10 with Dropout(0.2) on every digit (1,797 rows), untrained
params. ``mc_predict(samples=32)`` (one compiled program, vmapped over the sample keys)
against 32 calls of ``jdense.predict`` (the deterministic forward pass, cached) and 32 calls of
a hand-written jitted ``net.apply(params, x, train=True, key=k)`` (the usual MC loop). Each is
timed after its first call (the first call's time, compile included, is reported too); best of
``--rounds``.

Usage::

    python benchmarks/bench_uncertainty.py                       # 5 seeds, 100 epochs, 5 rounds
    python benchmarks/bench_uncertainty.py --quick               # a smoke test: 2 seeds, 2 epochs, 1 round
    python benchmarks/bench_uncertainty.py --seeds 10 --json uncertainty.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

import jdense
from jdense.data import standardize, train_val_test_split

DATASETS = {"digits": ("load_digits", [64, 128, 64, 10], "cross_entropy"),
            "breast_cancer": ("load_breast_cancer", [30, 32, 16, 1], "binary_cross_entropy")}
METRICS = ["accuracy", "nll", "ece"]


def calibration(name: str, seeds: int, epochs: int) -> dict:
    import sklearn.datasets

    loader, sizes, loss = DATASETS[name]
    x, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(0, x.astype(np.float32), y.astype(np.int32),
                                                              val=0.2, test=0.2, stratify=True)
    xtr, xva, xte = standardize(xtr, xva, xte)
    net = jdense.mlp(sizes)
    pop = jdense.fit_population(net, xtr, ytr, members=seeds, loss=loss, epochs=epochs, batch_size=32,
                                key=jax.random.key(0), verbose=0)
    rows = []
    for i in range(seeds):
        params = pop.member(i).params
        before = jdense.evaluate(net, params, xte, yte, loss=loss, metrics=METRICS)
        net_t, params_t = jdense.temperature_scale(net, params, xva, yva)
        after = jdense.evaluate(net_t, params_t, xte, yte, loss=loss, metrics=METRICS)
        rows.append({"seed": i, "t": float(params_t["temperature_0"]["t"]),
                     **{f"{k}_before": before[k] for k in METRICS}, **{f"{k}_after": after[k] for k in METRICS}})
    print(f"\n{name}: {len(xtr)} train / {len(xva)} val / {len(xte)} test, {'-'.join(map(str, sizes))}, {epochs} epochs")
    print(f"{'seed':>4} {'T':>7} {'ECE before':>11} {'after':>8} {'NLL before':>11} {'after':>8} {'acc before':>11} {'after':>8}")
    for r in rows:
        print(f"{r['seed']:>4} {r['t']:>7.3f} {r['ece_before']:>11.4f} {r['ece_after']:>8.4f} {r['nll_before']:>11.4f} "
              f"{r['nll_after']:>8.4f} {r['accuracy_before']:>11.4f} {r['accuracy_after']:>8.4f}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    std = {k: float(np.std([r[k] for r in rows])) for k in mean}
    print(f"mean ECE {mean['ece_before']:.4f} +- {std['ece_before']:.4f} -> {mean['ece_after']:.4f} +- {std['ece_after']:.4f} "
          f"({mean['ece_after'] / mean['ece_before']:.2f}x); NLL {mean['nll_before']:.4f} -> {mean['nll_after']:.4f}")
    return {"sizes": sizes, "epochs": epochs, "seeds": rows, "mean": mean, "std": std}


def _best(fn, rounds: int) -> tuple[float, float]:
    """(first call's seconds, best later call's seconds) of ``fn``, which must block until done."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, min(times)


def mc_cost(samples: int, rounds: int) -> dict:
    import sklearn.datasets

    (x,) = standardize(sklearn.datasets.load_digits().data.astype(np.float32))
    net = jdense.mlp([64, 128, 64, 10], dropout=0.2)
    params = net.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), samples)
    apply = jax.jit(lambda p, xb, k: net.apply(p, xb, train=True, key=k))
    columns = {
        "mc_predict": lambda: jdense.mc_predict(net, params, x, samples=samples, key=jax.random.key(1)).block_until_ready(),
        "predict x32": lambda: [jdense.predict(net, params, x) for _ in range(samples)][-1].block_until_ready(),
        "jit apply(train=True) x32": lambda: [apply(params, x, k) for k in keys][-1].block_until_ready(),
    }
    out = {}
    print(f"\nMC dropout on {x.shape[0]} digits, 64-128-64-10 with Dropout(0.2), {samples} samples (best of {rounds})")
    for name, fn in columns.items():
        first, best = _best(fn, rounds)
        out[name] = {"first_s": first, "best_s": best}
    base = out["mc_predict"]["best_s"]
    for name, r in out.items():
        print(f"{name:28s} first call {r['first_s'] * 1e3:9.1f} ms   then {r['best_s'] * 1e3:8.2f} ms   "
              f"{r['best_s'] / base:5.2f}x mc_predict's time")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs, 1 round: a smoke test")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.rounds = 2, 2, 1
    results = {"machine": {"platform": platform.platform(), "device": str(jax.devices()[0]), "jax": jax.__version__},
               "args": vars(args),
               "calibration": {name: calibration(name, args.seeds, args.epochs) for name in DATASETS},
               "mc_dropout": mc_cost(args.samples, args.rounds)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
