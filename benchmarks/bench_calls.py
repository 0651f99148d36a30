#!/usr/bin/env python
"""The cost of a call, not of an epoch: repeated fit / evaluate / predict, sweeps, the CLI.

Measures on scikit-learn's digits (64-128-64-10, batch 32, Adam), side by side in one run:

- ``fit_first_s``: the first ``fit(epochs=1)`` of the process, compilation included;
- ``fit_repeat_ms``: median whole-call wall time of 10 further ``fit(epochs=1)`` calls, each
  with a new learning rate (a new ``jdense.optimizer``);
- ``evaluate_repeat_ms`` / ``predict_repeat_ms``: median of 10 calls on the test split;
- ``keras_fit_repeat_ms``: the same repeated one-epoch ``model.fit`` in Keras 3 on JAX (if keras imports);
- ``sweep32_s``: 32 learning rates x 20 epochs as 32 ``fit`` calls (``sweep32_uncached_s``: the
  same with ``jdense.clear_cache()`` before each call, i.e. every call compiles as before the cache);
- ``cli_first_s`` / ``cli_second_s``: two ``jdense train --verbose 0`` runs in fresh processes with
  the persistent compilation cache in an empty temporary directory;
- ``first_cell_compiles``: XLA compilations in a fresh process for ``jax.random.key`` + build +
  init + fit with validation (the key's own two compilations included);
- ``iris_fit30_ms``: a repeated 30-epoch fit on iris (batch 32, 4-16-3), with
  ``sklearn_iris_fit30_ms`` (MLPClassifier, 30 epochs of the same batch size and width) and
  ``torch_iris_fit30_ms`` (an eager loop, one thread) when they import.

Usage::

    python benchmarks/bench_calls.py [--json PATH] [--quick] [--no-cli] [--no-sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import numpy as np

REPEATS = 10


def _median_ms(fn, repeats=REPEATS) -> float:
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _digits():
    from jdense.data import digits, standardize, train_val_test_split

    x, y = digits()
    (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(0, x, y, stratify=True)
    xtr, xva, xte = standardize(xtr, xva, xte)
    return xtr, ytr, xva, yva, xte, yte


def bench_jdense(out: dict, quick: bool, sweep: bool) -> None:
    import jax

    import jdense

    xtr, ytr, xva, yva, xte, yte = _digits()
    net = jdense.mlp([64, 128, 64, 10])
    params = net.init(jax.random.key(0))
    kw = dict(loss="cross_entropy", batch_size=32, key=jax.random.key(1), verbose=0)

    t = time.perf_counter()
    r = jdense.fit(net, params, xtr, ytr, optimizer=jdense.optimizer(net, "adam", 1e-3), epochs=1, **kw)
    out["fit_first_s"] = time.perf_counter() - t
    lrs = np.geomspace(1e-4, 1e-2, REPEATS)
    out["fit_repeat_ms"] = _median_ms(
        lambda i: jdense.fit(net, params, xtr, ytr, optimizer=jdense.optimizer(net, "adam", float(lrs[i])), epochs=1, **kw))
    jdense.evaluate(net, r.params, xte, yte, loss="cross_entropy")
    out["evaluate_repeat_ms"] = _median_ms(lambda i: jdense.evaluate(net, r.params, xte, yte, loss="cross_entropy"))
    jdense.predict(net, r.params, xte).block_until_ready()
    out["predict_repeat_ms"] = _median_ms(lambda i: jdense.predict(net, r.params, xte).block_until_ready())
    if not sweep:
        return
    n, epochs = (4, 3) if quick else (32, 20)
    sweep_lrs = np.geomspace(1e-4, 3e-2, n)

    def run_sweep(clear: bool) -> tuple[float, float]:
        best = 0.0
        t = time.perf_counter()
        for lr in sweep_lrs:
            if clear:
                jdense.clear_cache()
            res = jdense.fit(net, params, xtr, ytr, optimizer=jdense.optimizer(net, "adam", float(lr)), epochs=epochs,
                             validation_data=(xva, yva), **kw)
            best = max(best, res.history["val_accuracy"][-1])
        return time.perf_counter() - t, best

    out["sweep32_s"], out["sweep32_best_val_accuracy"] = run_sweep(clear=False)
    out["sweep32_uncached_s"], _ = run_sweep(clear=True)
    out["sweep32_members"], out["sweep32_epochs"] = n, epochs


def bench_keras(out: dict) -> None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        return
    xtr, ytr, *_ = _digits()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(xtr, ytr, batch_size=32, epochs=1, verbose=0)
    out["keras_fit_repeat_ms"] = _median_ms(lambda i: model.fit(xtr, ytr, batch_size=32, epochs=1, verbose=0))


def bench_iris(out: dict) -> None:
    import jax
    from sklearn.datasets import load_iris

    import jdense

    x, y = load_iris(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = y.astype(np.int32)
    net = jdense.mlp([4, 16, 3])
    params = net.init(jax.random.key(0))
    fit = lambda i: jdense.fit(net, params, x, y, loss="cross_entropy", optimizer=jdense.optimizer(net, "adam", 1e-2),  # noqa: E731
                               epochs=30, batch_size=32, key=jax.random.key(i), verbose=0)
    fit(0)
    out["iris_fit30_ms"] = _median_ms(fit)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def sk(i):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            MLPClassifier((16,), batch_size=32, max_iter=30, learning_rate_init=1e-2, random_state=i).fit(x, y)

    out["sklearn_iris_fit30_ms"] = _median_ms(sk)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()

    def tfit(i):
        torch.manual_seed(i)
        model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(30):
            for b in torch.randperm(len(xt)).split(32):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
                opt.step()

    tfit(0)
    out["torch_iris_fit30_ms"] = _median_ms(tfit)


FIRST_CELL = textwrap.dedent("""
    import jax, numpy as np
    names = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda e, d, **k: names.append(k.get("fun_name", "?")) if e == "/jax/core/compile/backend_compile_duration" else None)
    import jdense
    from jdense.data import digits
    x, y = digits()
    net = jdense.mlp([64, 128, 64, 10])
    params = net.init(jax.random.key(0))
    jdense.fit(net, params, x[:1400], y[:1400], loss="cross_entropy", optimizer=jdense.optimizer(net), epochs=3,
               batch_size=32, key=jax.random.key(1), validation_data=(x[1400:], y[1400:]), verbose=0)
    print(len(names), " ".join(names))
""")


def bench_processes(out: dict, cli: bool) -> None:
    res = subprocess.run([sys.executable, "-c", FIRST_CELL], capture_output=True, text=True, check=True)
    count, *names = res.stdout.split()
    out["first_cell_compiles"], out["first_cell_programs"] = int(count), names
    if not cli:
        return
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        env.pop("JDENSE_NO_COMPILATION_CACHE", None)
        for name in ("cli_first_s", "cli_second_s"):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "jdense", "train", "--verbose", "0"], env=env, check=True,
                           capture_output=True)
            out[name] = time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true", help="a 4 x 3-epoch sweep instead of 32 x 20")
    parser.add_argument("--no-cli", action="store_true", help="skip the two command-line runs")
    parser.add_argument("--no-sweep", action="store_true", help="skip the learning-rate sweeps")
    args = parser.parse_args()
    out: dict = {}
    bench_processes(out, cli=not args.no_cli)
    bench_jdense(out, args.quick, sweep=not args.no_sweep)
    bench_keras(out)
    bench_iris(out)
    for k, v in out.items():
        print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    if "sweep32_s" in out:
        print(f"{'sweep speed-up from cache':28s} {out['sweep32_uncached_s'] / out['sweep32_s']:.1f}x")
    peers = [out[k] for k in ("sklearn_iris_fit30_ms", "torch_iris_fit30_ms") if k in out]
    if peers:
        print(f"{'iris vs fastest peer':28s} {out['iris_fit30_ms'] / min(peers):.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
