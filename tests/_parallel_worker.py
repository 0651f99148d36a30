"""Run by tests/test_parallel.py in a subprocess with 4 forced CPU devices; prints one JSON line.

The device count is fixed when JAX starts, so these checks cannot run in the pytest process.
Each check compares data-parallel training on a mesh against plain single-device ``fit``.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np

import jdense
from jdense import arguments, losses, parallel, programs
from jdense.data import feed


def problem():
    """A small classification problem whose last batch is padded (1000 = 15·64 + 40)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 20)).astype(np.float32)
    y = (x[:, :3] @ rng.normal(size=(3,)) > 0).astype(np.int32) + (x[:, 3] > 1)
    net = jdense.mlp([20, 32, 3], dropout=0.1, batch_norm=True)
    kwargs = dict(
        loss="cross_entropy", optimizer=jdense.optimizer(net), epochs=3, batch_size=64,
        key=jax.random.key(1), verbose=0, validation_data=(x[:200], y[:200]), class_weight={2: 2.0},
    )
    return net, net.init(jax.random.key(0)), x, y, kwargs


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(u, np.float32) - np.asarray(v, np.float32)))) for u, v in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def specs(tree) -> list[str]:
    return [str(leaf.sharding.spec) for leaf in jax.tree.leaves(tree)]


def main():
    out = {"devices": jax.device_count()}
    net, params, x, y, kw = problem()
    plain = jdense.fit(net, params, x, y, **kw)
    ref_eval = jdense.evaluate(net, plain.params, x, y, loss="cross_entropy", state=plain.state)
    ref_pred = jdense.predict(net, plain.params, x, batch_size=200, state=plain.state)
    mesh = parallel.data_mesh()
    r = jdense.fit(net, params, x, y, mesh=mesh, **kw)
    out["mesh4"] = {
        "params": max_diff(r.params, plain.params),
        "opt_state": max_diff(r.opt_state, plain.opt_state),
        "state": max_diff(r.state, plain.state),
        "history": max(abs(a - b) for k in plain.history for a, b in zip(r.history[k], plain.history[k])),
        "replicated": all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
                          for leaf in jax.tree.leaves((r.params, r.opt_state))),
        "evaluate": max(abs(v - ref_eval[k]) for k, v in jdense.evaluate(
            net, r.params, x, y, loss="cross_entropy", state=r.state, mesh=mesh).items()),
        "predict": max_diff(jdense.predict(net, r.params, x, batch_size=200, state=r.state, mesh=mesh), ref_pred),
    }

    # The rest on a plain MLP (cheaper to compile): 2 devices, FSDP-style sharding, bfloat16.
    net, params = jdense.mlp([20, 32, 3]), jdense.mlp([20, 32, 3]).init(jax.random.key(0))
    kw = {**kw, "optimizer": jdense.optimizer(net), "validation_data": None}
    plain = jdense.fit(net, params, x, y, **kw)
    r = jdense.fit(net, params, x, y, mesh=parallel.data_mesh(jax.devices()[:2]), **kw)
    out["mesh2"] = {"params": max_diff(r.params, plain.params), "devices": len(jax.tree.leaves(r.params)[0].sharding.device_set)}

    # The compiled epoch splits each batch of 64 rows into 4 × 16 and all-reduces the gradient.
    fn = programs.training(arguments.training_spec(net, losses.per_sample("cross_entropy"), {}, kw["optimizer"], mesh=mesh))
    idx, mask = feed.padded_indices(np.arange(1000), 64)
    p = parallel.place(params, mesh)
    args = parallel.place((p, kw["optimizer"].init(p), {}, x, y, idx, mask, jax.random.key(0)), mesh)
    args = (*args, np.uint32(0), None, np.bool_(False), None)
    hlo = fn.lower(*args).compile().as_text()
    out["hlo"] = {"all_reduce": "all-reduce" in hlo, "local_rows": bool(re.search(r"f32\[16,32\]", hlo)),
                  "global_rows": bool(re.search(r"f32\[64,32\]", hlo))}

    try:
        jdense.fit(net, params, x, y, **{**kw, "batch_size": 30}, mesh=mesh)
        out["indivisible"] = None
    except ValueError as err:
        out["indivisible"] = str(err)

    # FSDP-style: both weight matrices split over the 4 devices; same numbers, same layout after.
    sharded = parallel.shard_params(params, mesh, min_size=64)
    r = jdense.fit(net, sharded, x, y, mesh=mesh, **kw)
    out["fsdp"] = {
        "params": max_diff(r.params, plain.params),
        "specs": specs(sharded),
        "same_layout": all(a.sharding.is_equivalent_to(b.sharding, a.ndim)
                           for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(r.params))),
        "opt_state_sharded": sum(not a.sharding.is_fully_replicated for a in jax.tree.leaves(r.opt_state)),
    }

    # Mixed precision on the mesh: bfloat16 compute, float32 master params.
    mp = jdense.fit(net, params, x, y, **{**kw, "epochs": 5}, mesh=mesh, compute_dtype=jnp.bfloat16)
    out["bf16_mesh"] = {"loss": mp.history["loss"],
                        "dtypes": sorted({str(a.dtype) for a in jax.tree.leaves((mp.params, mp.opt_state))})}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
