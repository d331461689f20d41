"""repro/allocator.py: large blocks stay in the heap, so a repeated large allocation does not page-fault."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc mallopt")

# A child process allocates and frees a 256 MB block 5 times, touching every page, and prints the
# minor page faults of the last 4 rounds. With glibc's defaults each round is a fresh mmap (~65,000
# faults a round); with the tuning the block is reused from the heap (next to none).
PROBE = textwrap.dedent(
    """
    import ctypes, resource, sys
    import repro  # changes nothing process-wide: the tuning is the program's
    from repro.allocator import tune_allocator
    tune_allocator()  # what cli.main does first
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    n = 256 << 20
    def round_():
        p = libc.malloc(n)
        ctypes.memset(p, 1, n)
        libc.free(p)
    round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        round_()
    print(tune_allocator(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _probe(env_value: str) -> tuple[str, int]:
    env = dict(os.environ, REPRO_MALLOC_TUNING=env_value)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@glibc_only
def test_tuned_heap_reuses_large_blocks():
    applied, faults = _probe("1")
    assert applied == "True"
    assert faults < 2_000, faults  # 4 rounds x 65,536 pages untuned


@glibc_only
def test_tuning_can_be_turned_off_and_then_large_blocks_fault():
    applied, faults = _probe("0")
    assert applied == "False"
    assert faults > 4 * 50_000, faults  # the probe really measures what the tuning removes
