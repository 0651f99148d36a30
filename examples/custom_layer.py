"""A user-written layer in a jdense network: a 2-D convolution on the 8x8 digits.

A layer is any pair of pure functions ``(init_fn, apply_fn)`` with
``init_fn(key) -> params`` and ``apply_fn(params, x) -> y`` (the ``jax.example_libraries.stax``
convention). ``conv2d`` below writes one with ``jax.lax.conv_general_dilated``; the pair
goes straight into ``jdense.Sequential`` next to ``jdense.Flatten`` and ``jdense.Dense``,
its params sit in the same dict as the dense layers' (under ``layer_0``, ``layer_1``),
``jdense.summary`` shows its output shape and parameter count, and ``jdense.fit`` trains
it with everything else.

Run::

    python examples/custom_layer.py            # about 20 s on a laptop CPU
    python examples/custom_layer.py --quick    # 2 epochs on 500 samples (for CI)
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import jdense
from jdense.data import digits, train_val_test_split


def conv2d(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, activation=jax.nn.relu):
    """A 2-D convolution layer ``activation(conv(x, w) + b)`` on NHWC images, 'SAME' padding.

    Returns:
      ``(init_fn, apply_fn)``: params ``{"w": (kernel, kernel, in, out), "b": (out,)}``
      with He-normal weights (``jax.nn.initializers.he_normal`` takes the fan-in of a
      conv kernel as ``kernel * kernel * in_channels``).
    """

    def init_fn(key):
        w = jax.nn.initializers.he_normal()(key, (kernel, kernel, in_channels, out_channels), jnp.float32)
        return {"w": w, "b": jnp.zeros((out_channels,), jnp.float32)}

    def apply_fn(params, x):
        y = jax.lax.conv_general_dilated(
            x, params["w"], window_strides=(stride, stride), padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return activation(y + params["b"])

    return init_fn, apply_fn


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="maximum number of epochs (default 30)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=None, help="use at most this many training samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs on at most 500 training samples (for CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 2)
        args.samples = min(args.samples or 500, 500)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    x, y = digits()
    x = x.reshape(-1, 8, 8, 1)  # NHWC images with one channel
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train_val_test_split(
        args.seed, x, y, val=0.1, test=0.2, stratify=True
    )
    if args.samples is not None:
        x_train, y_train = x_train[: args.samples], y_train[: args.samples]

    net = jdense.Sequential([
        conv2d(1, 16),                         # (8, 8, 1) -> (8, 8, 16)
        conv2d(16, 32, stride=2),              # -> (4, 4, 32)
        jdense.Flatten(),                      # -> (512,)
        jdense.Dense(4 * 4 * 32, 64),          # ReLU, He init
        jdense.Dense(64, 10, activation=None), # logits
    ])
    jdense.summary(net, input_shape=(8, 8, 1))

    stop = jdense.EarlyStopping("val_loss", patience=5)
    result = jdense.fit(
        net, net.init(jax.random.key(args.seed)), x_train, y_train,
        loss="cross_entropy", optimizer=jdense.optimizer(net, "adam", args.lr),
        epochs=args.epochs, batch_size=args.batch_size, key=jax.random.key(args.seed + 1),
        validation_data=(x_val, y_val), callbacks=[stop], verbose=0,
    )
    test = jdense.evaluate(net, result.params, x_test, y_test, loss="cross_entropy")
    print(f"trained {result.epochs} epochs on {len(x_train)} images; "
          f"val accuracy {max(result.history['val_accuracy']):.4f} (best epoch)")
    print(f"test accuracy {test['accuracy']:.4f}  (test loss {test['loss']:.4f})")
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "epochs": result.epochs}


if __name__ == "__main__":
    main()
