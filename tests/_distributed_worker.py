"""One process of tests/test_distributed.py: ``python _distributed_worker.py RANK NPROC PORT OUT_DIR``.

Joins a loopback run with :func:`jdense.parallel.initialize` (gloo CPU collectives, 2 CPU
devices per process), trains data-parallel over the devices of every process, and saves
the params (gathered to the host) to ``OUT_DIR/rank{RANK}.npz``. :func:`problem` is also
imported by the test to train the single-process reference.
"""

import sys

import numpy as np

import jdense
from jdense import parallel


def problem():
    import jax  # after initialize: nothing here may start JAX's backend at import

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 20)).astype(np.float32)
    y = (x[:, :3] @ rng.normal(size=(3,)) > 0).astype(np.int32) + (x[:, 3] > 1)
    net = jdense.mlp([20, 32, 3], dropout=0.1, batch_norm=True)
    kwargs = dict(loss="cross_entropy", optimizer=jdense.optimizer(net, learning_rate=1e-2), epochs=3, batch_size=64,
                  key=jax.random.key(1), verbose=0, validation_data=(x[:200], y[:200]))
    return net, net.init(jax.random.key(0)), x, y, kwargs


SHARD_ROWS = 960  # 480 rows a process: 15 local batches of 32, none partial


def shard(x, y, rank: int, nproc: int):
    """Process ``rank``'s own rows for ``fit(..., data="per_process")``."""
    return x[:SHARD_ROWS][rank::nproc], y[:SHARD_ROWS][rank::nproc]


def shard_batches(x, y, key, epochs: int, nproc: int, batch: int):
    """The global batches of a per-process fit, for one process: each process's rows in its permutation, in process order."""
    import jax

    seed = np.asarray(jax.random.key_data(key)).ravel().astype(np.uint32).tolist()
    shards, local = [shard(x, y, p, nproc) for p in range(nproc)], batch // nproc
    n = len(shards[0][0])
    for epoch in range(epochs):
        orders = [np.random.default_rng([*seed, epoch, p]).permutation(n) for p in range(nproc)]
        for s in range(n // local):
            rows = [order[s * local:(s + 1) * local] for order in orders]
            yield tuple(np.concatenate([part[i] for (part, i) in zip(parts, rows)]) for parts in zip(*shards))


def flat(tree) -> dict:
    import jax

    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def main(rank: int, nproc: int, port: int, out_dir: str) -> None:
    parallel.initialize(f"127.0.0.1:{port}", nproc, rank, local_cpu_devices=2, initialization_timeout=60)
    import jax

    net, params, x, y, kw = problem()
    mesh = parallel.data_mesh()  # the devices of every process
    result = jdense.fit(net, params, x, y, mesh=mesh, **kw)
    pred = jdense.predict(net, result.params, x[:256], batch_size=128, state=result.state, mesh=mesh)
    streamed = jdense.fit(net, params, x, y, mesh=mesh, stream=True, **kw)  # every process streams the whole set
    own = jdense.fit(net, params, *shard(x, y, rank, nproc), mesh=mesh, data="per_process", **kw)  # its own rows only
    mismatch = ""
    try:  # a process that feeds other data is caught before training
        parallel.check_same_data(x + rank, what="test")
    except ValueError as err:
        mismatch = str(err)
    np.savez(
        f"{out_dir}/rank{rank}.npz",
        **flat(parallel.to_host({"params": result.params, "state": result.state})),
        pred=parallel.to_host(pred), loss=np.asarray(result.history["loss"]),
        devices=np.asarray([jax.process_count(), jax.device_count(), jax.local_device_count()]),
        mismatch=np.asarray(mismatch),
        **{f"streamed{k}": v for k, v in flat(parallel.to_host({"params": streamed.params, "state": streamed.state})).items()},
        **{f"own{k}": v for k, v in flat(parallel.to_host({"params": own.params, "state": own.state})).items()},
        own_loss=np.asarray(own.history["loss"]), own_val_loss=np.asarray(own.history["val_loss"]),
    )
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
