"""Shared pytest setup and the helpers several test files use.

* the repository root is importable (``import repro``) without installing;
* ``cli_env``: the environment for CLI subprocesses (CPU, one persistent JAX compilation cache
  for the whole session, so each subprocess does not recompile what another already compiled);
* ``repro_cmd(*args)``: the command line that runs ``repro`` (the venv's entry point, else cli.py);
* ``repro``: a fixture that runs ``repro ARGS`` as a subprocess and returns the CompletedProcess;
* ``one_error_line(code, err)``: the one line of a CLI run that failed as a user error should;
* ``varint`` / ``ld`` / ``write_tfrecord``: protobuf fields and TFRecord files written by hand
  (the tf.train.Example shards of the TFDS layouts), without TensorFlow.
"""

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The allocator tuning `repro` commands apply in cli.main (``import repro`` changes nothing
# process-wide): the in-process tests train and evaluate as a command does.
from repro.allocator import tune_allocator  # noqa: E402

tune_allocator()


def repro_cmd(*args) -> list[str]:
    exe = shutil.which("repro", path=str(Path(sys.executable).parent))
    return [exe, *args] if exe else [sys.executable, str(ROOT / "cli.py"), *args]


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "REPRO_DATA_DIR": str(tmp_path_factory.mktemp("data")),
    }


@pytest.fixture
def cli_inproc(monkeypatch, capsys):
    """``cli_inproc(*args) -> (exit code, stdout, stderr)``: ``repro ARGS`` run in this process
    (cli.main, its one-line error handling included), with the test suite's toy section
    (tests/toy_section.py) added to the discovered sections."""
    import toy_section

    import cli
    from experiments import SECTIONS

    def run(*args):
        monkeypatch.setattr(cli, "_HARD_EXIT", False)  # os._exit would end the test process
        monkeypatch.setitem(SECTIONS, "toy", toy_section.SECTION)
        monkeypatch.setattr(sys, "argv", ["repro", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as e:
            code = e.code or 0
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


@pytest.fixture(scope="session")
def repro(cli_env):
    """``repro(*args, cwd=None, timeout=600, env=None)``: run the CLI, capture its output."""

    def run(*args, cwd=None, timeout=600, env=None):
        return subprocess.run(repro_cmd(*args), capture_output=True, text=True, cwd=cwd or ROOT,
                              env=env or cli_env, timeout=timeout)  # fmt: skip

    return run


def one_error_line(code: int, err: str) -> str:
    """The error of a ``repro`` run that failed as a user error should (exit code 2, exactly one
    line on stderr (not even an empty one before it), starting "error:", no traceback): that line,
    else ""."""
    lines = err.rstrip("\n").splitlines()
    ok = code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err
    return lines[0] if ok else ""


# ----------------------------------------------------------------------------- protobuf / TFRecord


def varint(n: int) -> bytes:
    """``n`` as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2): bytes, a string, a message, packed values."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def write_tfrecord(path: Path, records: list[bytes]) -> None:
    """A TFRecord file: per record its uint64 length, the length's masked CRC-32C, the record and
    the record's masked CRC-32C (the folder is made if needed)."""
    from repro.data.formats.tfrecord import masked_crc32c

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for r in records:
            n = struct.pack("<Q", len(r))
            f.write(n + struct.pack("<I", masked_crc32c(n)) + r + struct.pack("<I", masked_crc32c(r)))
