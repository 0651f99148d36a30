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
    )
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
