#!/usr/bin/env python
"""Grid searches side by side: scikit-learn's MLPClassifier, GridSearchCV over DenseClassifier, PopulationSearchCV.

One grid of 24 candidates (4 learning rates x 3 L2 strengths x 2 dropout rates), 5-fold
stratified cross-validation (the same folds for every search), 64-hidden-unit networks
(ReLU, Adam, batch 32), the same number of epochs everywhere, on scikit-learn's digits and
breast cancer sets (standardized). Each column is the wall time of ``search.fit`` with
``refit=False`` (the search itself), compilation included, in this process:

- ``sklearn_mlp_s``: ``GridSearchCV(MLPClassifier)`` over ``learning_rate_init`` x ``alpha``
  (MLP has no dropout: 12 candidates; ``alpha = lambda_ * training rows``, the same L2
  penalty as jdense's ``lambda_`` on a mean loss; ``n_iter_no_change=epochs`` so every
  fit runs all its epochs, as the jdense fits do).
- ``gridsearch_jdense_s``: ``GridSearchCV(DenseClassifier)``, one ``jdense.fit`` per
  candidate x fold.
- ``population_search_s``: ``PopulationSearchCV(DenseClassifier)``: one ``fit_population``
  per structure (dropout 0 and 0.2 share one).
- ``hand_written_jax_s``: the same search as one hand-written JAX program, without jdense
  (:func:`hand_written`): every candidate x fold a member of one ``jax.vmap``-ed epoch
  (its own training rows, batch 32, He-normal init, Adam with its learning rate, L2 and
  dropout), compiled in this process like the others, then the test folds' accuracy. A
  reference for what a compiled search costs here, compilation included.

``speedup_vs_*`` divide the other column's time by ``population_search_s``; ``*_best_score``
is each search's best mean CV accuracy. The process first calls ``jdense.cpu_devices()``
(one CPU device per core, as the docs advise for populations): the population's members
are spread over those devices, while every single fit (scikit-learn's and jdense's) runs
on one core as before; ``--devices 1`` keeps one device, ``devices`` in the JSON says which.
``--compilation-cache DIR`` turns on :func:`jdense.enable_compilation_cache` there: run twice,
the second run shows a search whose programs an earlier process compiled.

Usage::

    python benchmarks/bench_search.py [--json PATH] [--epochs N] [--devices N] [--compilation-cache DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

LEARNING_RATES = [3e-4, 1e-3, 3e-3, 1e-2]
LAMBDAS = [0.0, 1e-4, 1e-3]
DROPOUTS = [0.0, 0.2]


def hand_written(x, y, splits, grid: dict, *, epochs: int, hidden: int = 64, batch: int = 32) -> np.ndarray:
    """The grid x folds trained as one vmapped JAX program per epoch; returns the mean CV accuracy per candidate."""
    import itertools

    import jax
    import jax.numpy as jnp
    import optax

    candidates = list(itertools.product(grid["learning_rate"], grid["lambda_"], grid["dropout"]))
    members = [(c, k) for c in range(len(candidates)) for k in range(len(splits))]
    lr, lam, rate = (jnp.asarray([candidates[c][i] for c, _ in members], jnp.float32) for i in range(3))
    classes = int(y.max()) + 1
    x, y = jnp.asarray(x), jnp.asarray(y, jnp.int32)
    steps = min(len(train) for train, _ in splits) // batch

    def init(key):
        k1, k2 = jax.random.split(key)
        he = jax.nn.initializers.he_normal()
        return {"w1": he(k1, (x.shape[1], hidden)), "b1": jnp.zeros(hidden),
                "w2": he(k2, (hidden, classes)), "b2": jnp.zeros(classes)}

    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)

    def start(params, lr):
        state = tx.init(params)
        return state._replace(hyperparams={**state.hyperparams, "learning_rate": lr})

    def forward(p, xb, key, rate):
        h = jax.nn.relu(xb @ p["w1"] + p["b1"])
        if key is not None:
            h = jnp.where(jax.random.bernoulli(key, 1.0 - rate, h.shape), h / (1.0 - rate), 0.0)
        return h @ p["w2"] + p["b2"]

    def epoch(params, state, idx, lam, rate, key):
        def step(carry, batch):
            params, state = carry
            rows, k = batch
            def loss(p):
                ce = optax.softmax_cross_entropy_with_integer_labels(forward(p, x[rows], k, rate), y[rows]).mean()
                return ce + 0.5 * lam * (jnp.sum(p["w1"] ** 2) + jnp.sum(p["w2"] ** 2))
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            return (optax.apply_updates(params, updates), state), None
        return jax.lax.scan(step, (params, state), (idx, jax.random.split(key, idx.shape[0])))[0]

    train_epoch = jax.jit(jax.vmap(epoch), donate_argnums=(0, 1))
    params = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(0), len(members)))
    state = jax.jit(jax.vmap(start))(params, lr)
    rng = np.random.default_rng(0)
    for e in range(epochs):
        idx = np.stack([rng.permutation(splits[k][0])[:steps * batch].reshape(steps, batch) for _, k in members])
        keys = jax.random.split(jax.random.key(e + 1), len(members))
        params, state = train_epoch(params, state, idx, lam, rate, keys)
    outputs = np.asarray(jax.jit(jax.vmap(lambda p: forward(p, x, None, 0.0)))(params))
    y_host = np.asarray(y)
    scores = np.zeros((len(candidates), len(splits)))
    for m, (c, k) in enumerate(members):
        test = splits[k][1]
        scores[c, k] = np.mean(np.argmax(outputs[m, test], axis=-1) == y_host[test])
    return scores.mean(axis=1)


def run(name: str, x, y, *, epochs: int, folds: int, grid: dict) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.neural_network import MLPClassifier

    from jdense.sklearn import DenseClassifier, PopulationSearchCV

    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    n_train = len(x) * (folds - 1) // folds
    mlp = MLPClassifier(hidden_layer_sizes=(64,), batch_size=32, max_iter=epochs, n_iter_no_change=epochs,
                        random_state=0)
    mlp_grid = {"learning_rate_init": grid["learning_rate"], "alpha": [lam * n_train for lam in grid["lambda_"]]}
    dense = DenseClassifier(hidden=(64,), batch_size=32, epochs=epochs, random_state=0)
    searches = {
        "sklearn_mlp": GridSearchCV(mlp, mlp_grid, cv=cv, refit=False),
        "gridsearch_jdense": GridSearchCV(dense, grid, cv=cv, refit=False),
        "population_search": PopulationSearchCV(dense, grid, cv=cv, refit=False),
    }
    out = {"grid_size": len(grid["learning_rate"]) * len(grid["lambda_"]) * len(grid["dropout"]), "folds": folds,
           "epochs": epochs, "rows": len(x)}
    for key, search in searches.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            search.fit(x, y)
        out[f"{key}_s"] = time.perf_counter() - start
        out[f"{key}_best_score"] = float(search.best_score_)
        print(f"{name:14s} {key:18s} {out[f'{key}_s']:8.1f} s   best mean CV accuracy {search.best_score_:.4f}  "
              f"{search.best_params_}", flush=True)
    start = time.perf_counter()
    means = hand_written(x, y, list(cv.split(x, y)), grid, epochs=epochs)
    out["hand_written_jax_s"] = time.perf_counter() - start
    out["hand_written_jax_best_score"] = float(means.max())
    print(f"{name:14s} {'hand_written_jax':18s} {out['hand_written_jax_s']:8.1f} s   best mean CV accuracy "
          f"{means.max():.4f}", flush=True)
    out["speedup_vs_sklearn"] = out["sklearn_mlp_s"] / out["population_search_s"]
    out["speedup_vs_gridsearch"] = out["gridsearch_jdense_s"] / out["population_search_s"]
    print(f"{name:14s} population search: {out['speedup_vs_sklearn']:.1f}x faster than sklearn's MLP, "
          f"{out['speedup_vs_gridsearch']:.1f}x faster than GridSearchCV over DenseClassifier", flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the results here")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every fit (default 30)")
    parser.add_argument("--devices", type=int, default=None,
                        help="CPU devices for the population (default: one per core, jdense.cpu_devices())")
    parser.add_argument("--compilation-cache", metavar="DIR", help="JAX's persistent compilation cache in DIR")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 2x1x2 grid, 3 folds, 2 epochs, 300 rows")
    args = parser.parse_args(argv)

    import jax

    import jdense

    jdense.cpu_devices(args.devices)  # before anything starts JAX's backend
    if args.compilation_cache:
        jdense.enable_compilation_cache(args.compilation_cache)

    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.preprocessing import StandardScaler

    grid = {"learning_rate": LEARNING_RATES, "lambda_": LAMBDAS, "dropout": DROPOUTS}
    folds, epochs, rows = 5, args.epochs, None
    if args.quick:
        grid = {"learning_rate": LEARNING_RATES[1:3], "lambda_": LAMBDAS[:1], "dropout": DROPOUTS}
        folds, epochs, rows = 3, 2, 300
    results = {}
    for name, load in (("digits", load_digits), ("breast_cancer", load_breast_cancer)):
        x, y = load(return_X_y=True)
        x, y = x[:rows], y[:rows]
        x = StandardScaler().fit_transform(x).astype(np.float32)
        results[name] = run(name, x, y, epochs=epochs, folds=folds, grid=grid)
        results[name]["devices"] = jax.device_count()
        results[name]["compilation_cache"] = args.compilation_cache
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
