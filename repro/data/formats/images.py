"""Readers of image files and arrays of images (the ImageNet 64x64 layouts), without conversion.

* :func:`decode_rgb`: encoded image bytes (PNG, or any format Pillow reads) -> a square 8-bit RGB
  array of the expected size; anything else (16-bit, palette, grayscale, alpha, another size,
  truncated data) is a DataError, never converted;
* :func:`check_tar` / :func:`tar_pngs`: the ``*.png`` members of a tar, streamed in archive order;
* :func:`npz_rows`: the rows of a 2-D uint8 array in an ``.npz``, streamed from the zip member.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from repro.data.source import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
NPZ_ROWS_PER_READ = 256


# ----------------------------------------------------------------------------------------- decoding
def decode_rgb(data: bytes, label: str, size: int, dataset: str) -> np.ndarray:
    """Encoded image bytes -> (size, size, 3) uint8; DataError naming ``label`` for anything else
    (``dataset`` names whose images these are, e.g. "ImageNet 64x64").

    PNGs are checked from their header first (8-bit RGB, size x size), so 16-bit, palette,
    grayscale and alpha images are refused rather than silently converted by Pillow."""
    if data[:8] == PNG_SIGNATURE:
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise DataError(f"{label}: truncated or corrupt PNG (no IHDR header)")
        w, h, depth, ctype = *struct.unpack(">II", data[16:24]), data[24], data[25]
        if (w, h, depth, ctype) != (size, size, 8, 2):
            kind = PNG_COLOR_TYPES.get(ctype, f"color-type-{ctype}")
            raise DataError(
                f"{label}: {w}x{h} {depth}-bit {kind} PNG; {dataset} images are {size}x{size} 8-bit RGB (not converted)"
            )
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (size, size) or im.mode != "RGB":
                raise DataError(
                    f"{label}: {im.size[0]}x{im.size[1]} {im.mode} {im.format} image; {dataset} images are "
                    f"{size}x{size} RGB (not converted)"
                )
            im.load()  # decodes everything: truncated data raises here
            a = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{label}: not an image file (no image format recognised)") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is bad input, reported in one line
        raise DataError(f"{label}: not a readable image ({type(e).__name__}: {e})") from None
    if a.shape != (size, size, 3):
        raise DataError(f"{label}: decoded to shape {a.shape}, expected {(size, size, 3)}")
    return a


# ----------------------------------------------------------------------------------------- tar
def check_tar(path: Path) -> None:
    """DataError unless ``path`` is a readable tar holding a ``*.png`` file (read up to the first)."""
    try:
        with tarfile.open(path, "r|*") as tf:
            while (m := tf.next()) is not None:
                if m.isfile() and m.name.lower().endswith(".png"):
                    return
                tf.members.clear()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable tar ({type(e).__name__}: {e})") from None
    raise DataError(f"{path}: tar holds no *.png images")


def tar_pngs(path: Path, member: str | None = None) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of every ``*.png`` file of a tar (only ``member`` when given), in
    archive order, streamed; DataError for an unreadable tar or one without such a file."""
    n = 0
    try:
        with tarfile.open(path, "r|*") as tf:
            while (m := tf.next()) is not None:
                tf.members.clear()  # stream mode keeps every header otherwise (1.28M of them)
                if not m.isfile() or not m.name.lower().endswith(".png") or member not in (None, m.name):
                    continue
                fobj = tf.extractfile(m)
                data = fobj.read() if fobj is not None else b""
                n += 1
                yield m.name, data
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable tar ({type(e).__name__}: {e})") from None
    if n == 0:
        raise DataError(f"{path}: tar holds no *.png images" + (f" named {member}" if member else ""))


# ----------------------------------------------------------------------------------------- npz
def npz_rows(path: Path, width: int, *, not_npz: str, expected: str, row_layout: str) -> Iterator[np.ndarray]:
    """Rows of ``data`` (N, ``width``) uint8 in an npz, streamed from the zip member in chunks.
    The DataErrors say what was expected: ``not_npz`` follows "not an npz (zip) file (...)",
    ``expected`` names the files that hold such arrays and ``row_layout`` (e.g. "64x64x3 CHW")
    describes a row."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not an npz (zip) file ({e}){not_npz}") from None
    with z:
        if "data.npy" not in z.namelist():
            keys = sorted(n.removesuffix(".npy") for n in z.namelist())
            raise DataError(f"{path}: no 'data' array (has {keys}); expected {expected}")
        try:
            with z.open("data.npy") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                if len(shape) != 2 or shape[1] != width:
                    raise DataError(f"{path}: 'data' has shape {shape}, expected (N, {width}) ({row_layout})")
                if dtype != np.uint8 or fortran:
                    raise DataError(f"{path}: 'data' is {dtype}{' fortran-order' if fortran else ''}, expected uint8")
                left = shape[0]
                while left:
                    k = min(left, NPZ_ROWS_PER_READ)
                    buf = f.read(k * width)
                    if len(buf) < k * width:
                        raise DataError(f"{path}: truncated 'data' array")
                    yield from np.frombuffer(buf, np.uint8).reshape(k, width)
                    left -= k
        except DataError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"{path}: unreadable 'data' array ({type(e).__name__}: {e})") from None
