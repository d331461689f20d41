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
the ``keep_best`` best (:class:`BestBy`: by the section's headline metric and its direction;
eval nats/token for a lower-is-better headline) are kept; the rest are deleted.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

BEST_METRIC = "eval_nats_per_token"  # lower is better; recorded by every evaluated checkpoint
FORMAT = "repro-ckpt-v2"


@dataclass(frozen=True)
class BestBy:
    """What the best checkpoint of a run is: by its section's headline metric, in its direction.

    A lower-is-better headline (bits/dim, perplexity, nats/event) ranks by eval nats/token, as
    every checkpoint has always recorded: on one evaluation set those headlines increase with
    nats/token, so the choice is the same and earlier runs' best checkpoints stay the best. A
    higher-is-better headline (copy's mirrored-half accuracy) ranks by that metric, recorded as
    ``eval_<key>`` beside nats/token; ties (two checkpoints at 100 %) go to the lower nats/token,
    and a checkpoint recorded without it (by earlier code) ranks below every one with it."""

    key: str = "nats_per_token"  # the evaluation metric (a Metric.key) ranked when higher is better
    higher_is_better: bool = False

    @classmethod
    def headline(cls, metric) -> BestBy:
        """The rule of a section's headline :class:`repro.section.Metric`."""
        return cls(metric.key, True) if metric.higher_is_better else cls()

    @property
    def recorded_key(self) -> str:
        return f"eval_{self.key}"

    def metrics(self, eval_metrics: dict[str, Any]) -> dict[str, float]:
        """What a checkpoint saved after an evaluation records to be ranked by."""
        out = {BEST_METRIC: float(eval_metrics["nats_per_token"])}
        value = eval_metrics.get(self.key)
        if self.higher_is_better and value is not None and math.isfinite(value):
            out[self.recorded_key] = float(value)
        return out

    def rank(self, metrics: dict[str, Any]) -> tuple[float, ...]:
        """A checkpoint's recorded metrics as a sort key, lower = better (the manager keeps the
        lowest): (nats/token,), or (-headline, nats/token) when higher is better."""
        nats = float(metrics[BEST_METRIC])
        if not self.higher_is_better:
            return (nats,)
        value = metrics.get(self.recorded_key)
        return (-float(value) if value is not None else math.inf, nats)


class _NoMetricsWarning(logging.Filter):
    """Orbax warns on every save without metrics (checkpoints between evaluations have none)
    and on every read-only open (what `repro eval` / `sample` ask for): neither is news."""

    _QUIET = (
        "did not provide metrics",
        "read_only=True, setting save_interval_steps",
        "directory is read only",
        "_SignalingThread.run() raised an exception",  # the same error, raised again in the caller
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(q in record.getMessage() for q in self._QUIET)


_NO_METRICS_WARNING = _NoMetricsWarning()


def _quiet_orbax_warnings() -> None:
    """Install the filter on absl's logger (idempotent), when the first Checkpointer is made, not
    on import: importing a repro module changes nothing process-wide."""
    log = logging.getLogger("absl")
    if _NO_METRICS_WARNING not in log.filters:
        log.addFilter(_NO_METRICS_WARNING)


def _quiet_unraisable(unraisable) -> None:
    pass


def _drop_closed_loop_echoes(hook):
    """An unraisable hook that drops "Event loop is closed" (tensorstore's callbacks into Orbax's
    event loop after a failed write) and passes everything else to ``hook``."""

    def drop(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            return
        hook(unraisable)

    return drop


def _quiet_background_threads() -> None:
    """After a failed save Orbax's writer threads die one by one, each printing the same error
    (or "Event loop is closed") as a traceback; the caller reports the error once and the process
    is about to stop, so their echoes are silenced."""
    import sys
    import threading

    threading.excepthook = lambda args: None
    sys.unraisablehook = _quiet_unraisable
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


class Checkpointer:
    def __init__(
        self, workdir: Path, keep: int = 2, keep_best: int = 1, *, read_only: bool = False, best: BestBy = BestBy()
    ):
        """``best``: how checkpoints are ranked for ``keep_best`` and :meth:`best_step` (a run's
        writer and its readers pass its section's, ``BestBy.headline(section.headline)``)."""
        _quiet_orbax_warnings()
        self.dir = (Path(workdir) / "checkpoints").absolute()
        self.read_only = read_only
        self.best = best
        policies: list[Any] = [pp.LatestN(n=max(keep, 1))]
        if keep_best > 0:
            policies.append(
                pp.BestN(
                    get_metric_fn=best.rank,
                    reverse=True,  # descending rank: the lowest (best) ones last, where BestN keeps
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
            best_fn=best.rank,  # makes the manager record per-step metrics
            best_mode="min",
            preservation_policy=pp.AnyPreservationPolicy(policies),
            enable_async_checkpointing=False,
        )
        self.manager = ocp.CheckpointManager(self.dir, options=options, item_names=("state", "meta"))

    def reload(self) -> None:
        """Re-read the checkpoint directory (after a checkpoint was moved aside)."""
        self.manager.reload()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The best kept checkpoint by ``self.best`` (None if none has an eval score)."""
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
        ``{"eval_nats_per_token": x}``, :meth:`BestBy.metrics`) ranks the checkpoint for the
        keep-best policy."""
        meta = {
            "format": FORMAT,
            "step": int(step),
            # The data stream and dropout keys are pure functions of (seed, step).
            "data_position": int(step),
            **(meta or {}),
        }
        if metrics:
            meta["metrics"] = metrics
        import sys

        prev_hook = sys.unraisablehook
        sys.unraisablehook = _drop_closed_loop_echoes(prev_hook)
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                metrics=metrics,
                force=True,
            )
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - Orbax / tensorstore wrap filesystem errors in ValueError
            msg = str(e)
            fs_errors = (("No space left", errno.ENOSPC), ("Read-only file system", errno.EROFS),
                         ("Permission denied", errno.EACCES), ("RESOURCE_EXHAUSTED", errno.ENOSPC))  # fmt: skip
            for needle, code in fs_errors:
                if needle in msg:
                    _quiet_background_threads()
                    last = self.latest_step()
                    kept = f"the checkpoint at step {last} is kept" if last else "no earlier checkpoint"
                    raise OSError(code, f"cannot write the checkpoint of step {step} ({os.strerror(code)}); {kept}",
                                  str(self.dir)) from None  # fmt: skip
            raise
        finally:
            if sys.unraisablehook is not _quiet_unraisable:
                sys.unraisablehook = prev_hook

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


def state_checksum(state: Any) -> list[list[float]]:
    """Per array of the train state (parameters and optimiser state): [sum, sum of |x|]
    (computed on device: a few numbers per array), recorded in each checkpoint's metadata and
    compared after a restore, so damaged bytes that still decode are caught (a decode failure
    is caught by the restore itself)."""
    import jax.numpy as jnp

    leaves = jax.tree.leaves(state)
    sums = jax.jit(lambda xs: [jnp.stack([jnp.sum(x, dtype=jnp.float32), jnp.sum(jnp.abs(x), dtype=jnp.float32)])
                               for x in xs])(leaves)  # fmt: skip
    return [[float(a), float(b)] for a, b in (jax.device_get(s) for s in sums)]


def _checksum_ok(recorded, actual) -> bool:
    if recorded is None:
        return True  # checkpoints written before checksums were recorded
    if len(recorded) != len(actual):
        return False
    for (s0, a0), (s1, a1) in zip(recorded, actual, strict=True):
        tol = 1e-5 * max(a0, 1e-30) + 1e-12
        if not (abs(s0 - s1) <= tol and abs(a0 - a1) <= tol):
            return False
    return True


def restore_step(ckpt: Checkpointer, step: int, like: Any, fingerprint: str | None):
    """(state, meta, None) when checkpoint ``step`` restores, matches ``fingerprint`` and its
    recorded checksum; (None, meta or None, error) when it is damaged. A checkpoint written by
    another config is an error (ConfigError), not damage."""
    from repro.config import ConfigError

    try:
        meta = ckpt.metadata(step)
    except Exception as e:  # noqa: BLE001 - any failure to read is damage
        return None, None, e
    fp = meta.get("config_sha256")
    if fingerprint and fp and fp != fingerprint:
        raise ConfigError(f"the checkpoint at step {step} in {ckpt.dir} was written by a different config; "
                          "pass another --workdir")  # fmt: skip
    try:
        state = ckpt.restore(step, like)
        if _checksum_ok(meta.get("state_checksum"), state_checksum(state)):
            return state, meta, None
        return None, meta, ValueError("array checksums do not match the recorded ones")
    except ValueError as e:
        if "structure" in str(e).lower() or "shape" in str(e).lower():
            raise ConfigError(f"the checkpoint at step {step} in {ckpt.dir} does not match this config's "
                              "model; pass another --workdir") from None  # fmt: skip
        return None, meta, e
    except Exception as e:  # noqa: BLE001
        return None, meta, e


def restore_verified(ckpt: Checkpointer, like: Any, fingerprint: str | None, warn=None):
    """(step, state, meta) of the newest checkpoint that restores, matches ``fingerprint`` (the
    config's, ``repro.train.loop.config_fingerprint``) and its recorded checksum; (0, None, {})
    when there is none. A damaged checkpoint is moved aside to ``checkpoints.damaged/<step>``
    (never deleted) with a warning, and the next older one is tried. A checkpoint written by
    another config is an error (ConfigError), not damage."""
    import shutil

    for step in sorted(ckpt.all_steps(), reverse=True):
        state, meta, err = restore_step(ckpt, step, like, fingerprint)
        if state is not None:
            return step, state, meta
        if ckpt.read_only:
            if warn:
                warn(f"checkpoint {step} in {ckpt.dir} is damaged ({type(err).__name__}: {str(err)[:120]}); "
                     "trying an older one")  # fmt: skip
            continue
        dest = ckpt.dir.parent / "checkpoints.damaged" / str(step)
        dest.parent.mkdir(exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(ckpt.dir / str(step)), dest)
        ckpt.reload()
        if warn:
            warn(f"checkpoint {step} is damaged ({type(err).__name__}: {str(err)[:120]}); moved to {dest}, "
                 "resuming from an older one")  # fmt: skip
    return 0, None, {}
