"""Helper for tests/test_engine.py, run in a subprocess with 8 simulated CPU devices.

Trains the smoke copy model for a few steps on several meshes (one device; data x fsdp;
data x fsdp x tensor) and prints, as JSON, the largest differences of losses and parameters
from the single-device run, and how each parameter was sharded.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402

from experiments import SECTIONS  # noqa: E402
from repro.config import MeshConfig  # noqa: E402
from repro.parallel import batch_sharding, make_mesh, process_batch_block  # noqa: E402
from repro.train.state import build  # noqa: E402

STEPS = 3


def run(exp, dataset):
    r = build(exp)
    sh = batch_sharding(r.mesh)
    assert process_batch_block(sh, exp.train.batch_size) == (0, 1)
    losses = []
    for step in range(STEPS):
        local = dataset.train_batch(step, exp.train.batch_size)
        batch = {k: jax.make_array_from_process_local_data(sh, v) for k, v in local.items()}
        r.params, r.opt_state, m = r.steps.train(r.params, r.opt_state, batch, np.int32(step))
        losses.append(float(m["loss"]))
        assert bool(m["finite"])
    specs = {
        jax.tree_util.keystr(p): str(leaf.sharding.spec)
        for p, leaf in jax.tree_util.tree_flatten_with_path(r.params)[0]
        if any(s is not None for s in leaf.sharding.spec)
    }
    params = [np.asarray(x) for x in jax.tree.leaves(r.params)]
    # Evaluation on a host batch (the eval wrapper assembles it over the mesh).
    ev = dataset.eval_batches("validation", exp.train.batch_size, exp.train.batch_size, "blocked:16")
    first = next(iter(ev))
    nll = np.asarray(r.steps.eval(r.params, {k: first[k] for k in ("inputs", "targets", "positions")})[0])
    return losses, params, nll, specs, str(r.mesh.shape)


def main():
    mod = SECTIONS["copy"]
    base = mod.presets["smoke"]  # dropout on: masks must not depend on the sharding
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, grad_accum=int(sys.argv[1])))
    ds = mod.make_dataset(base)
    assert jax.device_count() == 8
    meshes = {
        "single": MeshConfig(data=1, fsdp=1, tensor=1),
        "data2_fsdp4": MeshConfig(data=2, fsdp=-1),
        "data2_fsdp2_tensor2": MeshConfig(data=2, fsdp=2, tensor=2),
    }
    out = {}
    ref = None
    for name, mesh in meshes.items():
        assert make_mesh(mesh).devices.size == (1 if name == "single" else 8)
        losses, params, nll, specs, shape = run(dataclasses.replace(base, mesh=mesh), ds)
        if ref is None:
            ref = (losses, params, nll)
        out[name] = {
            "mesh": shape,
            "losses": losses,
            "max_loss_rel_diff": max(abs(a - b) / abs(b) for a, b in zip(losses, ref[0], strict=True)),
            "max_param_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(params, ref[1], strict=True)),
            "max_eval_nll_abs_diff": float(np.abs(nll - ref[2]).max()),
            "sharded_params": specs,
        }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
