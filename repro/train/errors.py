"""How a training run can end early (importable without JAX, for the CLI)."""

from __future__ import annotations


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or parameter: the run stops, its last good checkpoint is kept."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM: a checkpoint was saved at ``step`` and the run exited (exit code 130)."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step

    def __str__(self) -> str:
        return str(self.args[0])
