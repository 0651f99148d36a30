"""jdense: dense neural networks as pure JAX functions.

The core is two pure functions, :func:`init` and :func:`apply`; around them, layer
specs, networks, losses, an optax optimizer with per-layer L2, compiled training,
checkpoints, loggers and data helpers.
"""

from jdense import activations, data, initializers, losses, metrics, parallel
from jdense.callbacks import BestCheckpoint, Callback, EarlyStopping, ProgressBar
from jdense.checkpoint import Checkpoint, checkpoint_callback, load, save
from jdense.dense import apply, init
from jdense.layers import BatchNorm, Dense, Dropout, Flatten, FunctionLayer, Layer
from jdense.loggers import CSVLogger, TensorBoard, plot_history
from jdense.network import Sequential, mlp, summary
from jdense.optim import optimizer
from jdense.train import FitResult, evaluate, fit, predict

__version__ = "0.1.0"

__all__ = [
    "BatchNorm",
    "BestCheckpoint",
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "FitResult",
    "ProgressBar",
    "TensorBoard",
    "evaluate",
    "fit",
    "predict",
    "save",
    "Dense",
    "Dropout",
    "Flatten",
    "FunctionLayer",
    "Layer",
    "Sequential",
    "activations",
    "checkpoint_callback",
    "data",
    "apply",
    "init",
    "initializers",
    "load",
    "losses",
    "metrics",
    "mlp",
    "optimizer",
    "parallel",
    "plot_history",
    "summary",
]
