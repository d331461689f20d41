"""TensorBoard event files of a run, in ``<workdir>/tb/`` (``tensorboard --logdir runs/``).

Written through tensorboardX (no TensorFlow needed; the optional ``tensorboard`` extra), on by
default when it is installed; ``--set train.tensorboard=false`` turns it off. Tags:

    train/loss  train/lr  train/grad_norm  train/tokens_per_second  train/accuracy   every logged step
    eval/<protocol>/<metric>      every evaluation of the training loop (``blocked:16`` -> ``blocked_16``)
    samples/<name>                the PNGs ``repro sample`` writes (image grids, piano rolls), at the
                                  sampled checkpoint's step

Resume: each session writes its own event file; a resumed session's file starts with TensorBoard's
purge marker (``SessionLog.START`` at step ``start + 1``), so readers (TensorBoard itself, its
``EventAccumulator``) drop the steps the interrupted session logged after the checkpoint it resumes
from: the stream reads as if the run had never stopped, with no step twice, the same rule as
``metrics.jsonl``. Nothing on disk is rewritten.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

TB_DIR = "tb"


def available() -> bool:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


def tag(name: str) -> str:
    """A TensorBoard tag: characters other than letters, digits, ``_ - . /`` become ``_``."""
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in name)


class TBLog:
    """Scalars and images of one session of a run (a no-op when off or tensorboardX is missing)."""

    def __init__(self, workdir: Path, enabled: bool = True, resume_step: int = 0):
        self.writer = None
        if not (enabled and available()):
            return
        from tensorboardX import SummaryWriter

        # Each session its own file (tensorboardX names files by the second; two sessions in
        # one second would otherwise share one).
        self.writer = SummaryWriter(
            logdir=str(Path(workdir) / TB_DIR),
            purge_step=resume_step + 1 if resume_step else None,
            flush_secs=30,
            filename_suffix=f".{os.getpid()}.{time.time_ns() % 10**9:09d}",
        )

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                continue  # strings (the protocol), and non-finite values TensorBoard cannot plot
            self.writer.add_scalar(tag(f"{prefix}/{k}"), float(v), int(step))
        self.writer.flush()

    def images(self, prefix: str, paths: list[Path], step: int) -> None:
        if self.writer is None or not paths:
            return
        import numpy as np
        from PIL import Image

        for p in paths:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
            self.writer.add_image(tag(f"{prefix}/{Path(p).stem}"), arr, int(step), dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
