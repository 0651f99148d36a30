"""A scikit-learn grid search that trains as populations: PopulationSearchCV beside GridSearchCV.

``jdense.sklearn.DenseClassifier`` is a scikit-learn estimator (Pipeline, cross_val_score,
GridSearchCV all work). ``PopulationSearchCV`` takes GridSearchCV's arguments, but trains
every candidate x fold of one network structure in a single ``jdense.fit_population``:
learning rate, L2 and dropout are values of each member, and each member's fold is its row
of sample weights. Both searches use the same folds, so their scores compare directly.

Data: scikit-learn's digits (1,797 8x8 images, bundled, no download), standardized on the
training rows.

Run::

    python examples/sklearn_search.py              # 12 candidates, 5 folds, 30 epochs, and GridSearchCV beside it
    python examples/sklearn_search.py --no-compare # PopulationSearchCV only
    python examples/sklearn_search.py --quick      # 4 candidates, 3 folds, 3 epochs (for CI)
"""

from __future__ import annotations

import argparse
import time

from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from jdense.sklearn import DenseClassifier, PopulationSearchCV


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-compare", dest="compare", action="store_false", help="skip GridSearchCV")
    parser.add_argument("--quick", action="store_true", help="a tiny grid, 3 folds, 3 epochs (for CI)")
    args = parser.parse_args(argv)
    args.grid = {"learning_rate": [1e-3, 3e-3, 1e-2], "lambda_": [0.0, 1e-3], "dropout": [0.0, 0.2]}
    if args.quick:
        args.epochs, args.folds = min(args.epochs, 3), 3
        args.grid = {"learning_rate": [1e-4, 1e-2], "lambda_": [0.0, 1e-3]}
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)

    estimator = DenseClassifier(hidden=(64,), epochs=args.epochs, random_state=0)
    cv = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    result = {}
    searches = [("PopulationSearchCV", PopulationSearchCV(estimator, args.grid, cv=cv))]
    if args.compare:
        searches.append(("GridSearchCV", GridSearchCV(estimator, args.grid, cv=cv)))
    for name, search in searches:
        start = time.perf_counter()
        search.fit(x_train, y_train)
        seconds = time.perf_counter() - start
        accuracy = search.score(x_test, y_test)
        result[name] = {"seconds": seconds, "best_params": search.best_params_, "best_score": search.best_score_,
                        "test_accuracy": accuracy}
        print(f"{name}: {len(search.cv_results_['params'])} candidates x {args.folds} folds in {seconds:.1f} s; "
              f"best {search.best_params_} (mean CV accuracy {search.best_score_:.4f})")
    best = result["PopulationSearchCV"]
    print(f"test accuracy {best['test_accuracy']:.4f} (PopulationSearchCV's best, refit on the training rows)")
    if args.compare:
        speedup = result["GridSearchCV"]["seconds"] / best["seconds"]
        print(f"GridSearchCV time / PopulationSearchCV time: {speedup:.1f}x")
    result["test_accuracy"] = best["test_accuracy"]
    return result


if __name__ == "__main__":
    main()
