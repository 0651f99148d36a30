"""Run by tests/test_population_devices.py in subprocesses; each mode writes one ``.npz`` report.

``python _population_devices_worker.py devices OUT``: one process that calls
``jdense.cpu_devices(2)`` before JAX starts (2 CPU devices) and trains populations spread
over both devices and on one (``devices=1``), the reference.

``python _population_devices_worker.py distributed RANK NPROC PORT OUT``: one of NPROC
loopback processes (``jdense.parallel.initialize``, one CPU device each) training one
population spread over the devices of every process; gathered, and kept per process.
"""

import inspect
import sys

import numpy as np

import jdense
from jdense import parallel


def problem():
    """Tiny data (100 = 6·16 + 4 rows: the last batch is padded) and a net with dropout and per-member values."""
    import jax

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5)
    net = jdense.mlp([6, 8, 3], dropout=0.1)
    members = [{"seed": i, "learning_rate": lr, "dropout": d} for i, (lr, d) in
               enumerate([(1e-2, 0.0), (3e-2, 0.1), (0.0, 0.2), (2e-2, 0.0), (5e-3, 0.3)])]
    kw = dict(loss="cross_entropy", epochs=4, batch_size=16, key=jax.random.key(3), verbose=0,
              validation_data=(x[:30], y[:30]), callbacks=[jdense.EarlyStopping("loss", patience=1, restore_best=True)])
    return net, x, y, members, kw


def flat(prefix: str, tree) -> dict:
    import jax

    return {prefix + jax.tree_util.keystr(p): np.asarray(a) for p, a in jax.tree_util.tree_leaves_with_path(tree)}


def result(prefix: str, pop) -> dict:
    out = {**flat(prefix + "params", pop.params), **flat(prefix + "opt_state", pop.opt_state),
           **flat(prefix + "state", pop.state), prefix + "epochs": pop.epochs}
    out.update({f"{prefix}history_{k}": v for k, v in pop.history.items()})
    return out


class Seen:
    """A callback that records the leading (member) axis of what it is given."""

    def __init__(self):
        self.sizes = set()

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        import jax

        self.sizes |= {a.shape[0] for a in jax.tree.leaves((params, opt_state, state))} | {len(v) for v in logs.values()}


def devices(out: str) -> None:
    before = jdense.cpu_devices(2)  # before any JAX operation
    import jax

    net, x, y, members, kw = problem()
    report = {"devices": jax.device_count(), "before": before, "again": jdense.cpu_devices(2)}
    try:
        jdense.cpu_devices(3)
        report["after_error"] = ""
    except RuntimeError as err:
        report["after_error"] = str(err)
    one, five = parallel.member_layout(None, 1), parallel.member_layout(None, 5)
    report["layouts"] = np.asarray([one.padded, one.mesh is None, five.padded, five.mesh.shape[parallel.MEMBERS]])
    for name, m in (("odd", members), ("even", members[:4])):  # 5 members: one padding member on device 1
        seen = Seen()
        spread = jdense.fit_population(net, x, y, members=m, **{**kw, "callbacks": [*kw["callbacks"], seen]})
        one = jdense.fit_population(net, x, y, members=m, devices=1, **kw)
        report.update(result(f"{name}_spread_", spread))
        report.update(result(f"{name}_one_", one))
        report[f"{name}_seen"] = np.asarray(sorted(seen.sizes))
        report[f"{name}_on"] = np.asarray([str(d) for a in jax.tree.leaves(spread.params) for d in a.devices()])
        for tag, pop in (("spread", spread), ("one", one)):
            report[f"{name}_{tag}_predict"] = np.asarray(jdense.predict(net, pop.params, x[:30], state=pop.state, population=True))
            report[f"{name}_{tag}_evaluate"] = np.asarray(jdense.evaluate(
                net, pop.params, x[:30], y[:30], loss="cross_entropy", state=pop.state, population=True)["loss"])
            report[f"{name}_{tag}_ensemble"] = jdense.ensemble_predict(net, pop.params, x[:30], state=pop.state)
    if "sample_weight" in inspect.signature(jdense.fit_population).parameters:  # a row of weights per member (folds)
        rng = np.random.default_rng(1)
        w, wv = (rng.random((5, 100)) < 0.7).astype(np.float32), (rng.random((5, 30)) < 0.5).astype(np.float32)
        weighted = {**kw, "sample_weight": w, "validation_data": (x[:30], y[:30], wv)}
        report.update(result("weighted_spread_", jdense.fit_population(net, x, y, members=members, **weighted)))
        report.update(result("weighted_one_", jdense.fit_population(net, x, y, members=members, devices=1, **weighted)))
    spread = jdense.fit_population(net, x, y, members=members, **{**kw, "validation_data": None})
    path = jdense.save(f"{out}.safetensors", spread.params, spread.opt_state, state=spread.state)
    back = jdense.load(path, like={"params": spread.params, "opt_state": spread.opt_state, "state": spread.state})
    report["checkpoint_equal"] = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree.leaves((spread.params, spread.opt_state)), jax.tree.leaves((back.params, back.opt_state))))
    if "stream" in inspect.signature(jdense.fit_population).parameters:  # streamed chunks: the members stay on one device
        streamed = jdense.fit_population(net, x, y, members=members, stream=True, **kw)
        one = jdense.fit_population(net, x, y, members=members, stream=False, devices=1, **kw)
        report["streamed_loss"], report["streamed_one_loss"] = streamed.history["loss"], one.history["loss"]
    bad_args = [("both", dict(mesh=parallel.data_mesh(), devices=2)), ("many", dict(devices=3)), ("type", dict(devices="gpu"))]
    if "stream" in inspect.signature(jdense.fit_population).parameters:
        bad_args.append(("streamed", dict(stream=True, devices=2)))
    for name, bad in bad_args:
        try:
            jdense.fit_population(net, x, y, members=2, **{**kw, **bad})
            report[f"error_{name}"] = ""
        except (TypeError, ValueError) as err:
            report[f"error_{name}"] = f"{type(err).__name__}: {err}"
    np.savez(out, **report)


def distributed(rank: int, nproc: int, port: int, out: str) -> None:
    parallel.initialize(f"127.0.0.1:{port}", nproc, rank, local_cpu_devices=1, initialization_timeout=60)
    import jax

    net, x, y, members, kw = problem()
    gathered = jdense.fit_population(net, x, y, members=members, **kw)  # spread over every process's device
    mine = jdense.fit_population(net, x, y, members=members, gather=False, **kw)
    np.savez(f"{out}/rank{rank}.npz", **result("all_", gathered), **result("mine_", mine), mine_indices=mine.indices,
             devices=np.asarray([jax.process_count(), jax.device_count(), jax.local_device_count()]))
    jax.distributed.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices(sys.argv[2])
    else:
        distributed(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
