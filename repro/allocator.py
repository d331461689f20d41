"""Keep XLA's per-step working memory in the heap (glibc only): no page faults per train step.

XLA's CPU runtime takes each execution's temporary buffer (hundreds of MB for a train step) from
``malloc``. glibc serves blocks that large with a fresh ``mmap`` and gives them back with
``munmap`` on free, so every step first-touches its whole working set again. Recorded for the
bench's Perceiver AR at batch 8 (``results/bench/step_ablation.md``): 42,000 minor faults and
~0.1 s of kernel time per step at N=1024, 185,000 and ~0.5 s at N=8192; with the settings below,
~0 of both, and steps 1.04-1.06x (N=1024) and 1.16-1.31x (N=8192) faster.

The settings, from ``mallopt(3)``: one arena (XLA's worker threads allocate from the main heap,
which can grow past the 64 MB limit of a thread arena), no ``mmap`` for large blocks, and no
trimming of the heap's top (``M_TRIM_THRESHOLD = -1``). The cost: the process keeps its peak
heap until it exits, which is what a training process does anyway. A preloaded jemalloc or
tcmalloc would do the same, but neither installs from PyPI; ``mallopt`` is in every glibc.

Applied once per process, before JAX starts its threads, by the programs: ``cli.main`` (every
``repro`` command), ``tests/conftest.py`` and each benchmark's ``main`` (never on ``import repro``,
which changes nothing process-wide). ``REPRO_MALLOC_TUNING=0`` turns it off. A no-op on non-glibc
platforms (macOS, musl).
"""

from __future__ import annotations

import ctypes
import os
import platform

# <malloc.h>
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8

_applied: bool | None = None


def tune_allocator() -> bool:
    """Apply the settings (idempotent). True when glibc accepted all three."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("REPRO_MALLOC_TUNING", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return _applied
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return _applied
    ok = [libc.mallopt(opt, value) == 1 for opt, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))]
    _applied = all(ok)
    return _applied
