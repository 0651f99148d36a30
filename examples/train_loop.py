"""The core idea in a plain loop: pure ``jdense.init``/``jdense.apply``, ``jax.grad`` and optax.

No ``jdense.fit``: the network is a function of a params dict, its gradient is
``jax.grad`` of a loss written with ``jdense.apply``, and the update is an optax step
with ``jdense.optimizer`` (Adam plus the layers' L2 terms), all in one jitted function.

Run::

    python examples/train_loop.py            # digits, 20 epochs, a few seconds
    python examples/train_loop.py --quick    # 2 epochs (for CI)
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

import jdense
from jdense.data import digits, train_val_test_split


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs (for CI)")
    args = parser.parse_args(argv)
    epochs = min(args.epochs, 2) if args.quick else args.epochs
    x, y = digits()
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(args.seed, x, y, val=0.0, test=0.2)

    # --- the core: ~30 lines -------------------------------------------------------
    k0, k1 = jax.random.split(jax.random.key(args.seed))
    params = {"dense_0": jdense.init(k0, 64, 64), "dense_1": jdense.init(k1, 64, 10, activation=None)}

    def forward(params, x):  # 64 -> 64 (ReLU) -> 10 logits
        h = jdense.apply(params["dense_0"], x, "relu")
        return jdense.apply(params["dense_1"], h, activation=None)

    def loss_fn(params, x, y):
        return jdense.losses.cross_entropy(forward(params, x), y)  # softmax cross-entropy on logits, batch mean

    # jdense.optimizer reads each layer's lambda_ from a network spec with the same layer names.
    spec = jdense.mlp([64, 64, 10], lambda_=1e-4)
    tx = jdense.optimizer(spec, "adam", 1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(args.seed)
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):  # drop the last partial batch
            batch = order[i : i + args.batch_size]
            params, opt_state, loss = step(params, opt_state, x_train[batch], y_train[batch])
            losses.append(loss)
        print(f"epoch {epoch + 1}: train loss {float(np.mean(losses)):.4f}")
    # ---------------------------------------------------------------------------------

    accuracy = float(np.mean(np.asarray(forward(params, x_test).argmax(-1)) == y_test))
    print(f"test accuracy {accuracy:.4f}")
    return {"test_accuracy": accuracy}


if __name__ == "__main__":
    main()
