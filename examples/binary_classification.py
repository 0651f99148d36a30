"""Binary classification with one output unit and binary cross-entropy on logits.

The network ends in a single linear unit (a logit); ``loss="binary_cross_entropy"``
applies the sigmoid inside the loss (``optax.losses.sigmoid_binary_cross_entropy``),
which is exact where ``log(sigmoid(z))`` would round to ``log(0)``. Labels are 0/1 of
shape ``(N,)``; the accuracy metric counts ``logit > 0`` (probability above 1/2) as
class 1. ``jax.nn.sigmoid`` of ``jdense.predict``'s output gives probabilities.

Data: scikit-learn's breast cancer set (569 tumours, 30 features, bundled, no download)
or ``--dataset moons`` (two interleaved half circles in 2-D, ``make_moons``).

Run::

    python examples/binary_classification.py                   # breast cancer
    python examples/binary_classification.py --dataset moons   # a non-linear boundary
    python examples/binary_classification.py --quick           # 5 epochs (for CI)
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from sklearn.datasets import load_breast_cancer, make_moons

import jdense
from jdense.data import standardize, train_val_test_split


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("breast_cancer", "moons"), default="breast_cancer")
    parser.add_argument("--epochs", type=int, default=100, help="maximum number of epochs (default 100)")
    parser.add_argument("--samples", type=int, default=1000, help="moons: how many points to draw (default 1000)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience on val_loss (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5 epochs (for CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 5)
    return args


def load(args):
    if args.dataset == "moons":
        return make_moons(n_samples=args.samples, noise=0.2, random_state=args.seed)
    return load_breast_cancer(return_X_y=True)  # 1 = benign, 0 = malignant


def main(argv=None) -> dict:
    args = parse_args(argv)
    x, y = load(args)
    y = y.astype(np.int32)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train_val_test_split(
        args.seed, x, y, val=0.15, test=0.2, stratify=True
    )
    x_train, x_val, x_test = (a.astype(np.float32) for a in standardize(x_train, x_val, x_test))
    majority = float(max(np.mean(y_test), 1 - np.mean(y_test)))
    print(f"{args.dataset}: train {len(x_train)}, validation {len(x_val)}, test {len(x_test)} samples, "
          f"{x_train.shape[1]} features; majority class {majority:.3f} of the test set")

    net = jdense.mlp([x_train.shape[1], 32, 16, 1])  # the last layer is linear: one logit per sample
    stop = jdense.EarlyStopping("val_loss", patience=args.patience)
    result = jdense.fit(
        net, net.init(jax.random.key(args.seed)), x_train, y_train,
        loss="binary_cross_entropy", optimizer=jdense.optimizer(net, "adam", args.lr),
        epochs=args.epochs, batch_size=args.batch_size, key=jax.random.key(args.seed + 1),
        validation_data=(x_val, y_val), callbacks=[stop], verbose=0,
    )
    test = jdense.evaluate(net, result.params, x_test, y_test, loss="binary_cross_entropy")

    probabilities = np.asarray(jax.nn.sigmoid(jdense.predict(net, result.params, x_test))).ravel()
    predicted = (probabilities > 0.5).astype(np.int32)
    confusion = np.zeros((2, 2), np.int64)
    np.add.at(confusion, (y_test, predicted), 1)
    first = " ".join(f"{p:.3f}" for p in probabilities[:5])
    print(f"trained {result.epochs} epochs; probability of class 1 for the first test samples: {first}")
    print(f"confusion matrix (rows: true 0/1, columns: predicted 0/1): {confusion.tolist()}")
    print(f"test accuracy {test['accuracy']:.4f}  (test loss {test['loss']:.4f}, majority baseline {majority:.4f})")
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "majority": majority, "epochs": result.epochs}


if __name__ == "__main__":
    main()
