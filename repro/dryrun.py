"""``repro run <section> --preset P --dry-run``: what a training step costs, without training.

Everything is abstract (``jax.eval_shape`` / ``ShapeDtypeStruct``), so paper-size presets never
allocate their parameters. Reported:

* parameters: from the abstract model, and from the analytic formula (``repro/flops.py``);
* FLOPs per step and per target token: analytic; with ``compile``, also XLA's count
  (``compiled.cost_analysis()``; XLA counts a loop body once, so it undercounts programs with
  scans: chunked attention, head groups, gradient accumulation);
* memory per device: analytic train state (f32 parameters + Adam moments, + gradients), and
  with ``compile`` the compiled program's own ``memory_analysis()`` (arguments, outputs, temporaries)
  for the train step jitted over the configured mesh.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

from repro.config import Experiment
from repro.flops import param_counts, train_step_flops
from repro.parallel import batch_sharding, describe


def abstract_batch(exp: Experiment, mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of one global training batch (as ``cut_windows`` produces it), batch-sharded."""
    m, B = exp.model, exp.train.batch_size
    sh = batch_sharding(mesh)
    L, M = m.max_context, min(m.num_latents, m.max_context)
    return {
        "inputs": jax.ShapeDtypeStruct((B, L), jnp.int32, sharding=sh),
        "targets": jax.ShapeDtypeStruct((B, M), jnp.int32, sharding=sh),
        "positions": jax.ShapeDtypeStruct((B, L, m.num_position_dims), jnp.int32, sharding=sh),
    }


def memory_stats(compiled) -> dict[str, int] | None:
    """The compiled program's memory per device, in bytes (None if the backend has no analysis)."""
    ma = compiled.memory_analysis()
    if ma is None:
        return None
    out = {
        k: int(getattr(ma, f"{k}_size_in_bytes"))
        for k in ("argument", "output", "alias", "temp", "generated_code")
        if hasattr(ma, f"{k}_size_in_bytes")
    }
    # Live at the peak: inputs, outputs not aliased to (donated) inputs, temporaries.
    out["peak_estimate"] = out["argument"] + out["output"] - out.get("alias", 0) + out["temp"]
    return out


def _resolved(configured: str, here: str, on_gpu: str) -> str:
    """``bfloat16`` for a fixed setting; ``float32 (auto here on cpu; bfloat16 on GPU / TPU)``."""
    if configured != "auto":
        return here
    return f"{here} (auto, {jax.default_backend()} here; {on_gpu} on a GPU)"


def cost_flops(compiled) -> float | None:
    ca = compiled.cost_analysis()
    if isinstance(ca, list | tuple):
        ca = ca[0] if ca else None
    return float(ca["flops"]) if ca and "flops" in ca else None


def dry_run(exp: Experiment, *, compile: bool = False) -> dict[str, Any]:
    from repro.train.state import build  # imports the model; keep `repro list` light

    t0 = time.perf_counter()
    run = build(exp, init=False)
    counts = param_counts(exp.model)
    fl = train_step_flops(exp)
    n_dev = run.mesh.devices.size
    state_bytes = 4 * run.num_params * 3  # f32 parameters + Adam mu and nu
    out: dict[str, Any] = {
        "section": exp.section,
        "preset": exp.preset,
        "scale": exp.scale,
        "mesh": describe(run.mesh),
        "devices": n_dev,
        "params": run.num_params,
        "params_analytic": counts["total"],
        "params_breakdown": counts,
        "flops_per_step": fl["step"],
        "flops_per_target_token": fl["per_target_token"],
        "target_tokens_per_step": fl["target_tokens_per_step"],
        "flops_breakdown_forward_per_example": fl["forward_breakdown"],
        "train_state_bytes": state_bytes,
        "train_state_bytes_per_device_if_fully_sharded": state_bytes // n_dev,
        "gradient_bytes": 4 * run.num_params,
        "backend": jax.default_backend(),
        "compute_dtype": _resolved(
            exp.model.compute_dtype, exp.model.resolved_dtype(), exp.model.resolved_dtype("gpu")
        ),
        "remat": exp.model.remat,
        "attention_impl": _resolved(
            exp.model.attention_impl, exp.model.resolved_attention(), exp.model.resolved_attention("gpu")
        ),
        "compiled": False,
    }
    if compile:
        step = jax.ShapeDtypeStruct((), jnp.int32)
        t1 = time.perf_counter()
        lowered = run.steps.train.lower(
            run.abstract["params"], run.abstract["opt_state"], abstract_batch(exp, run.mesh), step
        )
        compiled = lowered.compile()
        out.update(
            compiled=True,
            compile_seconds=time.perf_counter() - t1,
            xla_flops_per_step_per_device=cost_flops(compiled),
            memory_per_device=memory_stats(compiled),
        )
    out["seconds"] = time.perf_counter() - t0
    return out
