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

``speedup_vs_*`` divide the other column's time by ``population_search_s``; ``*_best_score``
is each search's best mean CV accuracy.

Usage::

    python benchmarks/bench_search.py [--json PATH] [--epochs N] [--quick]
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
    out["speedup_vs_sklearn"] = out["sklearn_mlp_s"] / out["population_search_s"]
    out["speedup_vs_gridsearch"] = out["gridsearch_jdense_s"] / out["population_search_s"]
    print(f"{name:14s} population search: {out['speedup_vs_sklearn']:.1f}x faster than sklearn's MLP, "
          f"{out['speedup_vs_gridsearch']:.1f}x faster than GridSearchCV over DenseClassifier", flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the results here")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every fit (default 30)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 2x1x2 grid, 3 folds, 2 epochs, 300 rows")
    args = parser.parse_args(argv)

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
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
