"""Orbax checkpoints of the train state, in ``<workdir>/checkpoints/<step>``.

Each checkpoint holds two items:

    state   {"params", "opt_state"}: sharded arrays, written by every process (multi-host aware)
    meta    JSON: step, data-iterator position, RNG recipe, eval metric, config hash, time

Data streams are pure functions of (seed, step) and dropout keys are ``fold_in(key(seed), step)``,
so the step IS the data-iterator and RNG position; ``meta`` records that explicitly
(``data_position == step``) so a reader does not have to know it.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a crash
or SIGKILL mid-save leaves the previous checkpoints intact (leftover temporary directories are
removed when the next run opens the directory). Retention: the latest ``keep`` checkpoints AND
the ``keep_best`` best by eval nats/token (lower is better) are kept; the rest are deleted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

BEST_METRIC = "eval_nats_per_token"  # lower is better
FORMAT = "repro-ckpt-v2"


class _NoMetricsWarning(logging.Filter):
    """Orbax warns on every save without metrics (checkpoints between evaluations have none)
    and on every read-only open (what `repro eval` / `sample` ask for): neither is news."""

    _QUIET = ("did not provide metrics", "read_only=True, setting save_interval_steps", "directory is read only")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(q in record.getMessage() for q in self._QUIET)


logging.getLogger("absl").addFilter(_NoMetricsWarning())


def _best_metric(metrics: dict[str, Any]) -> float:
    return float(metrics[BEST_METRIC])


class Checkpointer:
    def __init__(self, workdir: Path, keep: int = 2, keep_best: int = 1, *, read_only: bool = False):
        self.dir = (Path(workdir) / "checkpoints").absolute()
        policies: list[Any] = [pp.LatestN(n=max(keep, 1))]
        if keep_best > 0:
            policies.append(
                pp.BestN(
                    get_metric_fn=_best_metric,
                    reverse=True,
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
            best_fn=_best_metric,  # makes the manager record per-step metrics
            best_mode="min",
            preservation_policy=pp.AnyPreservationPolicy(policies),
            enable_async_checkpointing=False,
        )
        self.manager = ocp.CheckpointManager(self.dir, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The kept checkpoint with the lowest eval nats/token (the latest if none has one)."""
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        meta: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ):
        """Save ``state`` at ``step`` (every process must call this). ``metrics`` (e.g.
        ``{"eval_nats_per_token": x}``) ranks the checkpoint for the keep-best policy."""
        meta = {
            "format": FORMAT,
            "step": int(step),
            # The data stream and dropout keys are pure functions of (seed, step).
            "data_position": int(step),
            **(meta or {}),
        }
        if metrics:
            meta["metrics"] = metrics
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics=metrics,
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, like: Any) -> Any:
        """Restore the state into the structure, shapes, dtypes and shardings of ``like``
        (arrays or ShapeDtypeStructs with ``.sharding``): a run can resume on another mesh."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return out["state"]

    def metadata(self, step: int) -> dict[str, Any]:
        return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def close(self) -> None:
        self.manager.close()
