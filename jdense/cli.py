"""The command line: ``jdense train`` (also ``python -m jdense train``).

With no arguments it trains a 64-128-64-10 network on scikit-learn's bundled digits and
prints the test metrics. Every option has a default; ``jdense train --help`` lists them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

_USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: ``jdense train: error: ...``."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(_USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()] if text.strip() else []
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths such as 128,64, got {text!r}") from None
    if any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def build_parser() -> argparse.ArgumentParser:
    from jdense.activations import ACTIVATIONS
    from jdense.initializers import INITIALIZERS
    from jdense.optim import OPTIMIZERS

    parser = _Parser(prog="jdense", description="jdense: dense neural networks on JAX.")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    train = commands.add_parser("train", help="train a dense network and print its test metrics",
                                description="Train a dense network and print its test metrics.")
    train.add_argument("--data", default="digits",
                       help="digits (bundled with scikit-learn), mnist:DIR (IDX files) or csv:FILE (default digits)")
    train.add_argument("--target", help="the target column of a csv file")
    train.add_argument("--task", choices=("classification", "regression"), default="classification",
                       help="for csv data: classification (integer labels) or regression")
    train.add_argument("--hidden", type=_widths, default=[128, 64], help="hidden widths, e.g. 128,64 (default)")
    train.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    train.add_argument("--initializer", choices=["auto", *sorted(INITIALIZERS)], default="auto")
    train.add_argument("--lambda", dest="lambda_", type=_non_negative, default=1e-4, help="L2 strength (default 1e-4)")
    train.add_argument("--dropout", type=float, default=0.0, help="dropout rate after each hidden layer")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    train.add_argument("--lr", type=_positive(float), default=1e-3, help="learning rate (default 1e-3)")
    train.add_argument("--epochs", type=_positive(int), default=40)
    train.add_argument("--batch-size", type=_positive(int), default=32)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--patience", type=int, default=10, help="early-stopping patience on val_loss (0: off)")
    train.add_argument("--save", metavar="PATH", help="write the best model to this safetensors checkpoint")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    return parser


def _load(args):
    import numpy as np

    from jdense import data

    source = args.data
    if source == "digits":
        return data.digits()
    if source.startswith("mnist:"):
        (xtr, ytr), (xte, yte) = data.mnist(source[len("mnist:"):])
        x, y = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
        return x.reshape(len(x), -1), y
    if source.startswith("csv:"):
        if not args.target:
            raise ValueError("--data csv:FILE needs --target COLUMN (the column to predict)")
        return data.csv(source[len("csv:"):], args.target, task=args.task)
    raise ValueError(f"--data must be digits, mnist:DIR or csv:FILE, got {source!r}")


def train(args) -> dict[str, float]:
    import jax
    import numpy as np

    import jdense
    from jdense import data

    if not 0.0 <= args.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
    classification = args.task == "classification" or not args.data.startswith("csv:")
    x, y = _load(args)
    x = x.reshape(len(x), -1).astype(np.float32)
    (xtr, ytr), (xva, yva), (xte, yte) = data.train_val_test_split(
        args.seed, x, y, val=0.1, test=0.2, stratify=classification)
    scaler = data.Standardizer.fit(xtr)
    xtr, xva, xte = (scaler.transform(a).astype(np.float32) for a in (xtr, xva, xte))
    if classification:
        out, loss = int(y.max()) + 1, "cross_entropy"
    else:
        out, loss = 1, "mse"
        y_mean, y_std = float(ytr.mean()), float(ytr.std() or 1.0)
        ytr, yva, yte = ((a - y_mean) / y_std for a in (ytr, yva, yte))
    net = jdense.mlp([x.shape[1], *args.hidden, out], args.activation, initializer=args.initializer,
                     lambda_=args.lambda_, dropout=args.dropout)
    key_init, key_fit = jax.random.split(jax.random.key(args.seed))
    callbacks = []
    if args.patience > 0:
        callbacks.append(jdense.EarlyStopping("val_loss", patience=args.patience, restore_best=True))
    if args.save:
        from jdense import checkpoint

        metadata = {"data": args.data, "standardizer": scaler.to_dict(), "task": "classification" if classification
                    else "regression"}
        if not classification:
            metadata["target_scale"] = {"mean": y_mean, "std": y_std}
        callbacks.append(jdense.BestCheckpoint(checkpoint.checkpoint_callback(args.save, net=net, metadata=metadata)))
    start = time.perf_counter()
    result = jdense.fit(net, net.init(key_init), xtr, ytr, loss=loss,
                        optimizer=jdense.optimizer(net, args.optimizer, args.lr),
                        epochs=args.epochs, batch_size=min(args.batch_size, len(xtr)), key=key_fit,
                        validation_data=(xva, yva), callbacks=callbacks, verbose=args.verbose)
    seconds = time.perf_counter() - start
    logs = jdense.evaluate(net, result.params, xte, yte, loss=loss, state=result.state)
    if not classification:  # report errors in the target's own units
        logs = {"mse": logs["mse"] * y_std**2, "mae": logs["mae"] * y_std, "loss": logs["loss"]}
    print("test " + "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
          + f"  ({result.epochs} epochs, {seconds:.1f} s)")
    if args.save:
        print(f"saved the best model (by val_loss) to {args.save}")
    return logs


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jdense`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "train":
        parser.error("unknown command; use: jdense train [options]")
    try:
        train(args)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"jdense train: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return _USAGE_ERROR
    return 0
