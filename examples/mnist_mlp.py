"""A classic MNIST classifier: a 784-128-64-10 ReLU network trained with Adam.

Shows the high-level path: ``jdense.mlp`` builds the network, ``jdense.optimizer``
the optax update, ``jdense.fit`` trains it (with validation data and early stopping)
and ``jdense.evaluate`` measures the test accuracy.

MNIST is never downloaded: pass a folder holding the four IDX files
(``train-images-idx3-ubyte`` ..., plain or ``.gz``) with ``--mnist DIR``. Without it the
example uses scikit-learn's bundled 8x8 digits and the same network shape on 64 inputs
(64-128-64-10).

Run::

    python examples/mnist_mlp.py                      # digits, about 10 s on a laptop CPU
    python examples/mnist_mlp.py --mnist ~/data/mnist # MNIST, 784-128-64-10
    python examples/mnist_mlp.py --quick              # a few epochs on a subset (CI)
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import jdense
from jdense.data import digits, mnist, train_val_test_split


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", metavar="DIR", help="folder with the four MNIST IDX files (default: use digits)")
    parser.add_argument("--epochs", type=int, default=30, help="maximum number of epochs (default 30)")
    parser.add_argument("--batch-size", type=int, default=None, help="minibatch size (default 32 on digits, 128 on MNIST)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience on val_loss (default 5)")
    parser.add_argument("--samples", type=int, default=None, help="use at most this many training samples")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, the init and the shuffle")
    parser.add_argument("--quick", action="store_true", help="3 epochs on at most 500 training samples (for CI)")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="fit's verbosity (default 0)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 3)
        args.samples = min(args.samples or 500, 500)
    return args


def load(args):
    """((x_train, y_train), (x_val, y_val), (x_test, y_test)) with flat float32 features."""
    if args.mnist:
        (x_train, y_train), (x_test, y_test) = mnist(args.mnist)
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
        # MNIST has its own test set; hold out 1/12 of the training set (5,000 images) for validation.
        train, val, _ = train_val_test_split(args.seed, x_train, y_train, val=1 / 12, test=0.0, stratify=True)
        test = (x_test, y_test)
    else:
        x, y = digits()
        train, val, test = train_val_test_split(args.seed, x, y, val=0.1, test=0.2, stratify=True)
    if args.samples is not None:
        train = (train[0][: args.samples], train[1][: args.samples])
    return train, val, test


def main(argv=None) -> dict:
    args = parse_args(argv)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load(args)
    n_in = x_train.shape[1]
    sizes = [n_in, 128, 64, 10]
    source = f"MNIST from {args.mnist}" if args.mnist else "scikit-learn's 8x8 digits (no --mnist DIR given)"
    print(f"data: {source}; network {'-'.join(map(str, sizes))}")
    print(f"train {len(x_train)}, validation {len(x_val)}, test {len(x_test)} samples")

    net = jdense.mlp(sizes, activation="relu")  # logits out; "auto" gives every ReLU layer He init
    params = net.init(jax.random.key(args.seed))
    batch_size = min(args.batch_size or (128 if args.mnist else 32), len(x_train))
    stop = jdense.EarlyStopping("val_loss", patience=args.patience)  # restores the best epoch's params

    start = time.perf_counter()
    result = jdense.fit(
        net, params, x_train, y_train,
        loss="cross_entropy",
        optimizer=jdense.optimizer(net, "adam", args.lr),
        epochs=args.epochs, batch_size=batch_size,
        key=jax.random.key(args.seed + 1),
        validation_data=(x_val, y_val),
        callbacks=[stop],
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    best = stop.best_epoch + 1 if stop.best_epoch is not None else result.epochs
    print(f"trained {result.epochs} epochs in {seconds:.1f} s (best val_loss at epoch {best}); "
          f"train accuracy {result.history['accuracy'][-1]:.4f}, val accuracy {result.history['val_accuracy'][best - 1]:.4f}")

    test = jdense.evaluate(net, result.params, x_test, y_test, loss="cross_entropy")
    predicted = np.asarray(jdense.predict(net, result.params, x_test[:10]).argmax(-1))
    print(f"first test labels {y_test[:10].tolist()}, predicted {predicted.tolist()}")
    print(f"test accuracy {test['accuracy']:.4f}  (test loss {test['loss']:.4f})")
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "epochs": result.epochs, "sizes": sizes}


if __name__ == "__main__":
    main()
