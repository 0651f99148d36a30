"""The command line: ``jdense train`` (also ``python -m jdense train``).

With no arguments it trains a 64-128-64-10 network on scikit-learn's bundled digits and
prints the test metrics. Every option has a default; ``jdense train --help`` lists them.
Every failure is one line on stderr: status 2 for bad arguments (and data they name that cannot be read), 1 for a failed run
(``JDENSE_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from collections.abc import Sequence

from jdense.callbacks import ProgressBar, format_logs

_USAGE_ERROR = 2
_RUN_ERROR = 1
_PROG = "jdense train"
_EXPECTED = (ValueError, TypeError, OSError, ImportError, FloatingPointError)

_DESCRIPTION = """\
Train a dense network and print its test metrics.

The data set (for mnist:DIR, its training and test files together) is shuffled with
--seed and split 70/10/20 into training, validation and test sets, stratified by class
for classification. Each feature is standardized to mean 0 and standard deviation 1
with the training split's statistics (a constant feature is only centred). For
--task regression the target is standardized the same way for training, and every
reported loss and error is converted back to the target's units. Early stopping
(--patience) watches the validation loss and restores the best epoch's weights; the
test split is used once, at the end.
"""

_EPILOG = """\
environment:
  JDENSE_NO_COMPILATION_CACHE=1  same as --no-compilation-cache
  JDENSE_DEBUG=1                 show the Python traceback of a failure
  XDG_CACHE_HOME                 the compilation cache is $XDG_CACHE_HOME/jdense
                                 (default ~/.cache/jdense)
"""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: ``jdense train: error: ...``, a near miss with a suggestion."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(_USAGE_ERROR, _usage(self.prog, _suggest(message)))


_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>.*)\)$")


def _suggest(message: str) -> str:
    """argparse's "invalid choice" message, with the closest valid name (:func:`jdense.checks.closest`)."""
    from jdense import checks

    match = _INVALID_CHOICE.search(message)
    if match is None:
        return message
    choices = re.findall(r"'([^']*)'", match.group("choices"))
    best = checks.closest(match.group("value"), choices)
    return message if best is None else f"{message[:match.end('value') + 1]}; did you mean {best!r}? (choose from " \
        f"{match.group('choices')})"


class DataError(ValueError):
    """The data named on the command line cannot be used (exit status 2, as a bad argument)."""


# The data loaders' advice in Python keywords, as the command line spells it.
_CLI_SPELLINGS = {'task="regression"': "--task regression", 'task="classification"': "--task classification",
                  "task='regression'": "--task regression", "task='classification'": "--task classification"}


def _cli_spelling(text: str) -> str:
    for python, option in _CLI_SPELLINGS.items():
        text = text.replace(python, option)
    return text


def _usage(prog: str, message: str) -> str:
    return f"{prog}: error: {message} (see {prog} --help)\n"


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's paragraphs; shows every default that is a value."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _number(kind, *, low: float, low_ok: bool, high: float = math.inf):
    """An argparse type: a finite ``kind`` in ``[low, high)`` (``(low, high)`` when not ``low_ok``)."""

    def parse(text: str):
        value = kind(text)
        if not (math.isfinite(value) and (value >= low if low_ok else value > low) and value < high):
            bound = f"{'>=' if low_ok else '>'} {low:g}" + (f" and < {high:g}" if high < math.inf else "")
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()] if text.strip() else []
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths such as 128,64, got {text!r}") from None
    if any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def _source(text: str) -> str:
    if text == "digits" or (text.startswith(("mnist:", "csv:")) and text.partition(":")[2]):
        return text
    from jdense import checks

    kind = text.partition(":")[0] if ":" in text else text
    hint = checks.did_you_mean(kind, ("digits", "mnist", "csv"))
    raise argparse.ArgumentTypeError(f"must be digits, mnist:DIR or csv:FILE, got {text!r}{hint}")


def _metric_names(text: str) -> list[str]:
    """One ``--metrics`` word: names separated by commas (``f1,auc``); the words themselves may be separate (``f1 auc``)."""
    from jdense import checks
    from jdense.metrics import METRICS

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected metric names among {', '.join(METRICS)}, got {text!r}")
    for name in names:
        if name not in METRICS:
            raise argparse.ArgumentTypeError(f"unknown metric {name!r}{checks.did_you_mean(name, METRICS)} (names "
                                             f"among {', '.join(METRICS)}, separated by commas or spaces)")
    return names


def build_parser() -> argparse.ArgumentParser:
    from jdense.activations import ACTIVATIONS
    from jdense.initializers import INITIALIZERS
    from jdense.optim import OPTIMIZERS

    parser = _Parser(prog="jdense", description="jdense: dense neural networks on JAX.",
                     epilog="Each command has its own options: jdense train --help (jdense COMMAND --help).")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, title="commands", metavar="COMMAND")
    train = commands.add_parser("train", prog=_PROG, help="train a dense network and print its test metrics",
                                description=_DESCRIPTION, epilog=_EPILOG, formatter_class=_Formatter)
    add = train.add_argument
    add("--data", type=_source, default="digits", metavar="SOURCE",
        help="digits (bundled with scikit-learn), mnist:DIR (the four IDX files) or csv:FILE (with a header row)")
    add("--target", metavar="COLUMN", help="the column of a csv file to predict (required with csv:FILE)")
    add("--task", choices=("classification", "regression"), default="classification",
        help="for csv data: classification (integer labels 0..k-1) or regression")
    add("--hidden", type=_widths, default="128,64", metavar="WIDTHS", help="hidden layer widths, comma-separated")
    add("--activation", choices=sorted(ACTIVATIONS), default="relu", metavar="NAME",
        help=f"hidden activation: {', '.join(sorted(ACTIVATIONS))}")
    add("--initializer", choices=["auto", *sorted(INITIALIZERS)], default="auto", metavar="NAME",
        help=f"weight initializer: auto (He for ReLU-like, else Glorot), {', '.join(sorted(INITIALIZERS))}")
    add("--lambda", dest="lambda_", type=_number(float, low=0, low_ok=True), default="1e-4", metavar="LAMBDA",
        help="L2 strength of every layer's weights")
    add("--l1", type=_number(float, low=0, low_ok=True), default=0.0, metavar="L1",
        help="L1 strength of every layer's weights (the loss gains l1 * sum|w|)")
    add("--metrics", type=_metric_names, nargs="+", default=None, metavar="NAMES",
        help="metrics to log, separated by commas or spaces, e.g. accuracy,f1,auc or accuracy f1 auc; by default "
             "accuracy, or mse,mae for regression")
    add("--dropout", type=_number(float, low=0, low_ok=True, high=1), default=0.0, metavar="RATE",
        help="dropout rate after each hidden layer, in [0, 1)")
    add("--optimizer", choices=OPTIMIZERS, default="adam", help="the optax optimizer")
    add("--lr", type=_number(float, low=0, low_ok=False), default="1e-3", help="learning rate")
    add("--epochs", type=_number(int, low=0, low_ok=False), default=40, help="the most epochs to train")
    add("--batch-size", type=_number(int, low=0, low_ok=False), default=32, metavar="N",
        help="minibatch size (clamped to the training rows)")
    add("--seed", type=_number(int, low=0, low_ok=True), default=0, help="seed of the split, the init and the shuffles")
    add("--patience", type=_number(int, low=0, low_ok=True), default=10,
        help="early stopping: epochs without a better val_loss before stopping (0: off)")
    add("--save", metavar="PATH", help="write the best model (by val_loss) to this safetensors checkpoint")
    add("--csv-log", metavar="PATH", help="write one row of metrics per epoch to this CSV file (flushed each epoch)")
    add("--verbose", type=int, choices=(0, 1, 2), default=1,
        help="0: only the result line; 1: a progress bar and the result line; 2: a line per epoch and the result line")
    add("--cpu-devices", type=_number(int, low=0, low_ok=False), default=None, metavar="N",
        help="CPU devices JAX exposes (jdense.cpu_devices); default: one per core. Training runs on one of them")
    add("--no-compilation-cache", action="store_true",
        help="do not keep compiled programs in $XDG_CACHE_HOME/jdense (or ~/.cache/jdense) for the next run")
    _add_export(commands)
    return parser


# -- jdense export ----------------------------------------------------------------
_EXPORT_PROG = "jdense export"


def _dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive sizes such as 8,8, got {text!r}")
    return dims


def _add_export(commands) -> None:
    export = commands.add_parser(
        "export", prog=_EXPORT_PROG, help="write a checkpoint's network as an ONNX model or a jax.export file",
        description="Write the network of a jdense checkpoint (saved with its network, e.g. by jdense train --save) "
                    "for inference elsewhere: OUT's suffix picks the format, .onnx (ONNX, opset 17) or .jaxexport "
                    "(jax.export's StableHLO, run with jdense.load_exported). Prints the path and size written.")
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="a .safetensors checkpoint holding its network's config")
    export.add_argument("out", metavar="OUT", help="the file to write: *.onnx or *.jaxexport")
    export.add_argument("--input-shape", type=_dims, metavar="DIMS",
                        help="one example's shape, e.g. 8,8; needed only when the network does not start with Dense")


def _export(args) -> int:
    """Runs ``jdense export``: one line on stdout, or one line on stderr and status 1."""
    from jdense import checkpoint
    from jdense.export import FORMATS, export

    try:
        if not args.out.endswith(FORMATS):
            return _usage_exit(f"OUT must end in {' or '.join(FORMATS)} (the format), got {args.out!r}", _EXPORT_PROG)
        ckpt = checkpoint.load(args.checkpoint)
        if ckpt.net is None:
            raise ValueError(f"{args.checkpoint} holds no network config (saved without net=, or with a custom layer); "
                             "export it from Python with jdense.export(net, params, OUT)")
        path = export(ckpt.net, ckpt.params, args.out, state=ckpt.state, input_shape=args.input_shape)
    except Exception as err:
        if os.environ.get("JDENSE_DEBUG", "").strip() not in ("", "0"):
            raise
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"{_EXPORT_PROG}: error: {text}", file=sys.stderr)
        return _RUN_ERROR
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


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
    return data.csv(source[len("csv:"):], args.target, task=args.task)


def _in_target_units(logs: dict[str, float], y_std: float) -> dict[str, float]:
    """Regression logs computed on standardized targets, in the target's own units."""
    scale = {"loss": y_std**2, "mse": y_std**2, "mae": y_std, "rmse": y_std}
    return {k: v * scale.get(k.removeprefix("val_"), 1.0) for k, v in logs.items()}


class _Progress(ProgressBar):
    """The progress bar, with regression logs in the target's units."""

    def __init__(self, epochs: int, verbose: int, y_std: float):
        super().__init__(epochs, verbose)
        self.y_std = y_std

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        return super().on_epoch_end(epoch, _in_target_units(logs, self.y_std), params)


def _warn(message: str) -> None:
    print(f"{_PROG}: warning: {message}", file=sys.stderr, flush=True)


def _check_progress(losses: list[float], baseline: float, what: str) -> None:
    """Warns when training made the loss worse, or no better than a constant prediction."""
    first, last = losses[0], losses[-1]
    if last > first:
        _warn(f"the training loss rose from {first:.4g} (epoch 1) to {last:.4g} (epoch {len(losses)}); "
              "the run diverged: lower --lr")
    elif last >= baseline:
        _warn(f"the final training loss {last:.4g} is no better than {what} ({baseline:.4g}); "
              "the run diverged or learned nothing: lower --lr")


def _outputs(args) -> str | None:
    """A message when --save or --csv-log names a file that cannot be written (checked before any data are read)."""
    from jdense import checks

    for flag, path, example in (("--save", args.save, "model.safetensors"), ("--csv-log", args.csv_log, "history.csv")):
        if path:
            try:
                checks.output_file(path, flag, example, "write")
            except ValueError as err:
                return f"{flag}: {err}"
    return None


def _cpu_devices(n: int | None) -> str | None:
    """``jdense.cpu_devices(n)`` before JAX's backend starts (one CPU device per core by default); a message when
    ``--cpu-devices`` cannot be honoured because JAX already runs (``main`` called inside a program that used it)."""
    from jdense import parallel

    try:
        parallel.cpu_devices(n)
    except RuntimeError as err:  # JAX started before main was called: its device count is fixed
        if n is not None:
            return f"--cpu-devices {n}: {str(err).split('. ')[0]} (main was called after JAX started)"
    return None


def _compilation_cache(args) -> None:
    if args.no_compilation_cache or os.environ.get("JDENSE_NO_COMPILATION_CACHE", "").strip().lower() in (
            "1", "true", "yes", "on"):
        return
    import jax

    from jdense.compilation import enable_compilation_cache

    try:  # a JAX_COMPILATION_CACHE_DIR of the user's wins over ours
        enable_compilation_cache(jax.config.jax_compilation_cache_dir)
    except (ValueError, TypeError, OSError) as err:
        _warn(f"running without the compilation cache: {err}")


def train(args, start: float | None = None) -> dict[str, float]:
    """Runs ``jdense train`` from parsed arguments; prints and returns the test metrics."""
    import jax
    import numpy as np

    import jdense
    from jdense import data

    start = time.perf_counter() if start is None else start
    classification = args.task == "classification" or not args.data.startswith("csv:")
    try:
        x, y = _load(args)
    except (ValueError, TypeError, OSError) as err:  # the data the arguments name: a bad argument, status 2
        raise DataError(_cli_spelling(str(err).strip())) from err
    x = x.reshape(len(x), -1).astype(np.float32)
    (xtr, ytr), (xva, yva), (xte, yte) = data.train_val_test_split(
        args.seed, x, y, val=0.1, test=0.2, stratify=classification)
    scaler = data.Standardizer.fit(xtr)
    xtr, xva, xte = (scaler.transform(a).astype(np.float32) for a in (xtr, xva, xte))
    y_std = 1.0
    if classification:
        out, loss = int(y.max()) + 1, "cross_entropy"
    else:
        out, loss = 1, "mse"
        y_mean, y_std = float(ytr.mean()), float(ytr.std() or 1.0)
        ytr, yva, yte = ((a - y_mean) / y_std for a in (ytr, yva, yte))
    net = jdense.mlp([x.shape[1], *args.hidden, out], args.activation, initializer=args.initializer,
                     lambda_=args.lambda_, l1=args.l1, dropout=args.dropout)
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
    if args.csv_log:
        callbacks.append(jdense.CSVLogger(args.csv_log))
    bar = _Progress(args.epochs, args.verbose, y_std)
    callbacks.append(bar)
    fit_start = time.perf_counter()
    try:
        result = jdense.fit(net, net.init(key_init), xtr, ytr, loss=loss,
                            optimizer=jdense.optimizer(net, args.optimizer, args.lr),
                            epochs=args.epochs, batch_size=min(args.batch_size, len(xtr)), key=key_fit,
                            validation_data=(xva, yva), callbacks=callbacks, verbose=0, metrics=args.metrics)
    except FloatingPointError as err:  # fit's advice names its own arguments; on the command line it is --lr
        raise FloatingPointError(f"the run diverged ({str(err).split(';')[0].removeprefix('fit: ')}); lower --lr") from err
    finally:
        bar.on_train_end(None, None)  # closes the bar when fit raised, so an error starts its own line
    fit_seconds = time.perf_counter() - fit_start
    logs = _in_target_units(jdense.evaluate(net, result.params, xte, yte, loss=loss, state=result.state,
                                            metrics=args.metrics), y_std)
    units = "" if classification else ", loss and errors in target units"
    epochs = f"{result.epochs} epoch{'' if result.epochs == 1 else 's'}"
    print(f"test {format_logs(logs)}  ({epochs} in {fit_seconds:.1f} s training, "
          f"{time.perf_counter() - start:.1f} s total{units})", flush=True)
    if args.save:
        print(f"saved the best model (by val_loss) to {args.save}")
    if classification:  # the cross-entropy of the best constant prediction: the labels' entropy
        freq = np.unique(ytr, return_counts=True)[1] / len(ytr)
        baseline, what = float(-(freq * np.log(freq)).sum()), "predicting the class frequencies"
    else:  # the mse of predicting the mean: the variance
        baseline, what = y_std**2, "predicting the mean"
    _check_progress([v * y_std**2 for v in result.history["loss"]], baseline, what)  # y_std is 1 unless regression
    return logs


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jdense`` console script; returns the exit status."""
    start = time.perf_counter() - (_process_age() if argv is None else 0.0)  # "total" counts the imports too
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("name a command, e.g. jdense train (jdense --help lists them)")
    if getattr(args, "metrics", None) is not None:  # --metrics f1,auc and --metrics f1 auc alike
        args.metrics = [name for word in args.metrics for name in word]
    if args.command == "export":
        return _export(args)
    if args.command != "train":
        parser.error("unknown command; use: jdense train [options] or jdense export CHECKPOINT OUT")
    if args.data.startswith("csv:") and not args.target:
        return _usage_exit("--data csv:FILE needs --target COLUMN (the column to predict)")
    if not args.data.startswith("csv:") and (args.target or args.task != "classification"):
        return _usage_exit("--target and --task apply to --data csv:FILE only")
    debug = os.environ.get("JDENSE_DEBUG", "").strip() not in ("", "0")
    if (message := _outputs(args)) is not None or (message := _cpu_devices(args.cpu_devices)) is not None:
        return _usage_exit(message)
    try:
        _compilation_cache(args)
        train(args, start)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except DataError as err:
        if debug:  # the loader's own error, with its traceback
            raise (err.__cause__ or err) from None
        return _usage_exit(str(err).splitlines()[0] if str(err) else "the data cannot be read")
    except Exception as err:
        if debug:
            raise
        text = str(err).strip()
        text = text.splitlines()[0] if text else type(err).__name__
        if not isinstance(err, _EXPECTED):  # a bug or a device failure: name it, offer the traceback
            text = f"{type(err).__name__}: {text} (JDENSE_DEBUG=1 shows the traceback)"
        print(f"{_PROG}: error: {text}", file=sys.stderr)
        return _RUN_ERROR
    return 0


def _process_age() -> float:
    """Seconds since this program started: the kernel's process start (Linux), or the Python program's when
    later (a shell that ends with ``jdense train`` execs it in its own process, started with the shell)."""
    from jdense import clock

    program = time.perf_counter() - clock.STARTED
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rpartition(")")[2].split()[19])  # field 22: start time, in ticks since boot
        return min(max(time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"), 0.0), program)
    except (OSError, ValueError, IndexError, AttributeError):
        return program


def _usage_exit(message: str, prog: str = _PROG) -> int:
    sys.stderr.write(_usage(prog, message))
    return _USAGE_ERROR
