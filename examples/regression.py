"""Regression with MSE and MAE on scikit-learn's diabetes data (442 patients, 10 features).

Shows ``loss="mse"`` and ``loss="mae"`` on one network shape, with features *and* target
standardized on the training split (``jdense.data.Standardizer``), L2 on the weights
(``lambda_``) and early stopping on the validation loss. It prints the test MSE and MAE
of each network next to the mean predictor (always predicting the training mean), in
standardized units, where the baseline's MSE is about 1, and in the target's own units.

Run::

    python examples/regression.py            # a few seconds
    python examples/regression.py --quick    # 5 epochs (for CI)
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from sklearn.datasets import load_diabetes

import jdense
from jdense.data import Standardizer, train_val_test_split


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="maximum number of epochs (default 200)")
    parser.add_argument("--hidden", type=int, default=32, help="width of the two hidden layers (default 32)")
    parser.add_argument("--lambda", dest="lambda_", type=float, default=1e-2, help="L2 strength (default 1e-2)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=20, help="early-stopping patience on val_loss (default 20)")
    parser.add_argument("--samples", type=int, default=None, help="use at most this many training samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5 epochs (for CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 5)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    x, y = load_diabetes(return_X_y=True)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train_val_test_split(args.seed, x, y, val=0.2, test=0.2)
    if args.samples is not None:
        x_train, y_train = x_train[: args.samples], y_train[: args.samples]
    # Statistics from the training split only; targets as (N, 1) columns like the network's output.
    x_scaler, y_scaler = Standardizer.fit(x_train), Standardizer.fit(y_train[:, None])
    x_train, x_val, x_test = (x_scaler.transform(a).astype(np.float32) for a in (x_train, x_val, x_test))
    y_train, y_val, y_test = (y_scaler.transform(a[:, None]).astype(np.float32) for a in (y_train, y_val, y_test))
    y_std = float(np.ravel(y_scaler.std)[0])
    print(f"diabetes: train {len(x_train)}, validation {len(x_val)}, test {len(x_test)} samples, "
          f"{x_train.shape[1]} features; target std {y_std:.1f}")

    # The mean predictor outputs the training mean: 0 in standardized units.
    base_mse, base_mae = float(np.mean(y_test**2)), float(np.mean(np.abs(y_test)))
    print(f"{'model':<22}{'test MSE':>10}{'test MAE':>10}{'MAE (units)':>13}")
    print(f"{'mean predictor':<22}{base_mse:>10.4f}{base_mae:>10.4f}{base_mae * y_std:>13.1f}")

    net = jdense.mlp([x_train.shape[1], args.hidden, args.hidden, 1], lambda_=args.lambda_)
    results = {"baseline": {"mse": base_mse, "mae": base_mae}}
    for loss in ("mse", "mae"):
        stop = jdense.EarlyStopping("val_loss", patience=args.patience)
        fit = jdense.fit(
            net, net.init(jax.random.key(args.seed)), x_train, y_train,
            loss=loss, optimizer=jdense.optimizer(net, "adam", args.lr),
            epochs=args.epochs, batch_size=min(args.batch_size, len(x_train)), key=jax.random.key(args.seed + 1),
            validation_data=(x_val, y_val), callbacks=[stop], verbose=0,
        )
        # evaluate's default regression metrics are mse and mae, whatever the training loss.
        test = jdense.evaluate(net, fit.params, x_test, y_test, loss=loss)
        results[loss] = {"mse": test["mse"], "mae": test["mae"], "epochs": fit.epochs}
        label = f"network, {loss} loss"
        print(f"{label:<22}{test['mse']:>10.4f}{test['mae']:>10.4f}{test['mae'] * y_std:>13.1f}"
              f"   ({fit.epochs} epochs)")

    for loss in ("mse", "mae"):
        r = results[loss]
        print(f"{loss} network: test MSE {r['mse'] / base_mse:.2f}x and test MAE {r['mae'] / base_mae:.2f}x the mean predictor's")
    return results


if __name__ == "__main__":
    main()
