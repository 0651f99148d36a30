"""jdense: dense neural networks as pure JAX functions.

The core is two pure functions, :func:`init` and :func:`apply`; around them, layer
specs, networks, losses, an optax optimizer with per-layer L2, compiled training,
checkpoints, loggers and data helpers.
"""

from jdense import activations, data, initializers, losses, metrics, parallel
from jdense import clock as clock  # first: it notes when this program started (`jdense train`'s total time)
from jdense.callbacks import BestCheckpoint, Callback, EarlyStopping, ProgressBar, ReduceLROnPlateau
from jdense.checkpoint import Checkpoint, checkpoint_callback, load, save
from jdense.compilation import enable_compilation_cache
from jdense.dense import apply, init
from jdense.export import export, from_torch, load_exported, to_torch
from jdense.layers import Activation, BatchNorm, Dense, Dropout, Flatten, FunctionLayer, Layer
from jdense.loggers import CSVLogger, TensorBoard, plot_history
from jdense.lora import LoRADense, load_adapters, lora, lora_init, merge_lora, save_adapters
from jdense.network import Sequential, mlp, register_layer, summary
from jdense.optim import hyperparams, optimizer, set_hyperparams
from jdense.parallel import cpu_devices
from jdense.population import PopulationResult, ensemble_evaluate, ensemble_predict, fit_population, grid
from jdense.programs import clear_cache
from jdense.quantize import QuantizedDense, quantize
from jdense.train import FitResult, evaluate, fit, predict
from jdense.uncertainty import Temperature, mc_predict, plot_calibration, temperature_scale, uncertainty
from jdense.version import VERSION as __version__  # noqa: F401 - the package version

__all__ = [
    "Activation",
    "BatchNorm",
    "BestCheckpoint",
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "FitResult",
    "PopulationResult",
    "ProgressBar",
    "ReduceLROnPlateau",
    "TensorBoard",
    "ensemble_evaluate",
    "ensemble_predict",
    "evaluate",
    "export",
    "from_torch",
    "load_exported",
    "to_torch",
    "fit",
    "fit_population",
    "grid",
    "predict",
    "save",
    "set_hyperparams",
    "Dense",
    "Dropout",
    "Flatten",
    "FunctionLayer",
    "Layer",
    "LoRADense",
    "QuantizedDense",
    "Sequential",
    "activations",
    "checkpoint_callback",
    "clear_cache",
    "cpu_devices",
    "data",
    "enable_compilation_cache",
    "apply",
    "hyperparams",
    "init",
    "initializers",
    "load",
    "load_adapters",
    "lora",
    "lora_init",
    "losses",
    "merge_lora",
    "metrics",
    "mlp",
    "optimizer",
    "parallel",
    "plot_history",
    "quantize",
    "register_layer",
    "save_adapters",
    "summary",
    "Temperature",
    "mc_predict",
    "plot_calibration",
    "temperature_scale",
    "uncertainty",
]
