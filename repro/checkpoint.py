"""Orbax checkpoints of the train state, in ``<workdir>/checkpoints/<step>``.

The state is ``{"params", "opt_state"}`` plus the step (the checkpoint's name). Data streams are
pure functions of (seed, step) and dropout keys are fold_in(seed, step), so the step is the
whole data-iterator and RNG position: restoring it continues the run exactly.
Orbax writes each checkpoint to a temporary directory and renames it when complete, so a crash
mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, workdir: Path, keep: int = 2):
        self.dir = (Path(workdir) / "checkpoints").absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max(keep, 1), create=True)
        self.manager = ocp.CheckpointManager(self.dir, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state))
        self.manager.wait_until_finished()

    def restore(self, step: int, like: Any) -> Any:
        """Restore into the structure, shapes, dtypes and shardings of ``like``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.close()
