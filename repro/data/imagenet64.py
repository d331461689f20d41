"""ImageNet 64x64 raw data (paper Sec. 5.2): the official layouts, the official tokenization, baselines.

What is stored per image (the content ids of the contract in ``repro/data/source.py``) is the image
as it is on disk: 64x64 RGB, HWC, flattened to 12,288 uint8 sub-pixel values (R, G, B interleaved,
raster order). Everything the model sees is derived from that at load time by :meth:`tokens` and
:meth:`positions`, as the official ``DownsampledImagenetWithPositionsDataset`` (perceiver-ar
``dataset.py``) does:

* ``ordering="pixel_raster"`` (official default): R, G, B interleaved in raster order;
  ``ordering="r->g->b"`` (official name; ``"planar"`` is accepted as an alias): all R values in
  raster order, then all G, then all B.
* sub-pixel value v -> token v + 3 (PAD 0, EOS 1, SOS 2; vocabulary 259), SOS first. We also end the
  sequence with EOS (the contract's default); the official image loader has no EOS. EOS is never
  evaluated by the section, so it only adds one (unscored) token.
* positions from the data, one (x, y, channel) triple per token: x = column + 1, y = row + 1,
  channel 1..3 ("start at 1 to prevent confusion with padding"), each shifted by +1 because SOS is
  used; SOS itself is (1, 1, 1) (official). EOS, which the official code does not have, gets
  (0, 0, 0), the index padding positions get. Table sizes (resolution + 2, resolution + 2, 5),
  the official ``event_idx_size``: (66, 66, 5) at 64.
* ``resolution`` r < 64 (r divides 64): the stored image is box-downsampled at load time (mean of
  each (64/r)x(64/r) block, rounded half up), for CPU-scale presets. The official code has r = 32
  only through TFDS's own 32x32 version, which is a different downsampling of the originals.

Raw layouts (:meth:`ImageNet64Format.variant`):

* ``png``: ``train_64x64/*.png``, ``valid_64x64/*.png`` (van den Oord et al. 2016, the paper's data,
  unpacked); any file name, sorted.
* ``tar``: ``train_64x64.tar``, ``valid_64x64.tar`` (the same, as downloaded); members ``*.png`` in
  archive order, streamed.
* ``npz-chrabaszcz2017``: ``train_data_batch_*.npz``, ``val_data.npz`` with ``data`` (N, 12288)
  uint8 in CHW order: Chrabaszcz et al. 2017's *different* downsampling (not the paper's pixels).
* ``tfds``: TFRecord shards that tensorflow-datasets wrote for ``downsampled_imagenet/64x64``
  (``downsampled_imagenet-{train,validation}.tfrecord-*``), read without TensorFlow.

The official ``valid`` split is our ``validation`` split. Images must be 64x64 8-bit RGB: grayscale,
RGBA, palette, 16-bit or other-size images are refused (never converted), as are truncated files.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import re
import shutil
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from repro.config import ConfigError
from repro.data.formats.tfrecord import (  # noqa: F401 - crc32c / masked_crc32c: re-exported
    crc32c,
    example_bytes_feature,
    find_tfds_dir,
    masked_crc32c,
    tfrecord_records,
)
from repro.data.source import ByteValues, DataError, RawDoc, RawFormat, SourceFile, Tokenizer
from repro.data.tokens import EOS_ID, NUM_RESERVED, SOS_ID

SIZE = 64  # stored images are SIZE x SIZE x CHANNELS
CHANNELS = 3
NUM_VALUES = SIZE * SIZE * CHANNELS  # 12,288 stored sub-pixel values per image
VALUE_RANGE = 256

PNG_FOLDERS = {"train": "train_64x64", "validation": "valid_64x64"}
TARS = {"train": "train_64x64.tar", "validation": "valid_64x64.tar"}
NPZ_TRAIN_GLOB = "train_data_batch_*"
NPZ_VALIDATION = ("val_data.npz", "val_data")
TFDS_PREFIX = "downsampled_imagenet-"
TFDS_SPLITS = {"train": "train", "validation": "validation"}

VARIANT_PNG = "png"
VARIANT_TAR = "tar"
VARIANT_NPZ = "npz-chrabaszcz2017"
VARIANT_TFDS = "tfds"

PIXEL_RASTER = "pixel_raster"
PLANAR = "r->g->b"
ORDERINGS = {PIXEL_RASTER: PIXEL_RASTER, PLANAR: PLANAR, "planar": PLANAR}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
_NPZ_ROWS_PER_READ = 256


# ----------------------------------------------------------------------------------------- config
def resolution_of(data_cfg: Any) -> int:
    """``data_cfg.resolution`` (default 64), checked: a positive integer dividing 64."""
    r = getattr(data_cfg, "resolution", SIZE) if data_cfg is not None else SIZE
    if isinstance(r, bool) or not isinstance(r, int | np.integer) or r < 1 or SIZE % int(r):
        raise ConfigError(f"data.resolution={r!r}: must be an integer dividing {SIZE} (64, 32, 16, 8, 4, 2, 1)")
    return int(r)


def ordering_of(data_cfg: Any) -> str:
    """``data_cfg.ordering`` (default "pixel_raster"), normalised: "pixel_raster" or "r->g->b"."""
    o = getattr(data_cfg, "ordering", PIXEL_RASTER) if data_cfg is not None else PIXEL_RASTER
    if o not in ORDERINGS:
        raise ConfigError(f"data.ordering={o!r}: must be one of {', '.join(repr(k) for k in ORDERINGS)}")
    return ORDERINGS[o]


def position_table_sizes(resolution: int = SIZE) -> tuple[int, int, int]:
    """Learned position table sizes for (x, y, channel), the official ``event_idx_size``:
    values are 1-based (+1) and shifted by one more for SOS (+1), so (r + 2, r + 2, 3 + 2)."""
    r = resolution_of(ImageOptions(resolution))
    return (r + 2, r + 2, CHANNELS + 2)


def sequence_length(data_cfg: Any = None) -> int:
    """Tokens per image as :meth:`ImageNet64Format.tokens` makes them: SOS + r*r*3 values + EOS."""
    r = resolution_of(data_cfg)
    return r * r * CHANNELS + 2


@dataclass(frozen=True)
class ImageOptions:
    """The two data options this module reads (any object with these attributes works, e.g. the
    preset's DataConfig; a missing attribute takes its default here)."""

    resolution: int = SIZE
    ordering: str = PIXEL_RASTER


# ----------------------------------------------------------------------------------------- pixels
def content_image(content: np.ndarray) -> np.ndarray:
    """Stored content (12,288 HWC values, or a (64, 64, 3) array) -> (64, 64, 3) uint8 image."""
    a = np.asarray(content)
    if a.size != NUM_VALUES:
        raise DataError(f"image content has {a.size} values, expected {NUM_VALUES} (64x64x3)")
    return a.reshape(SIZE, SIZE, CHANNELS).astype(np.uint8, copy=False)


def box_downsample(image_HxWx3: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block, rounded half up (exact, in integers); rows and
    columns past a multiple of ``factor`` are dropped. ``factor`` 1 returns the image as is."""
    if factor == 1:
        return np.asarray(image_HxWx3, np.uint8)
    h, w, c = image_HxWx3.shape
    h, w = (h // factor) * factor, (w // factor) * factor
    s = image_HxWx3[:h, :w].reshape(h // factor, factor, w // factor, factor, c).astype(np.int64).sum(axis=(1, 3))
    n = factor * factor
    return ((s + n // 2) // n).astype(np.uint8)


def downsample(image_HxWx3: np.ndarray, resolution: int) -> np.ndarray:
    """A square image box-downsampled to ``resolution`` (which must divide its size)."""
    h = image_HxWx3.shape[0]
    if h % resolution or image_HxWx3.shape[1] != h:
        raise ConfigError(f"resolution {resolution} does not divide the image size {h}x{image_HxWx3.shape[1]}")
    return box_downsample(image_HxWx3, h // resolution)


def image_at(content: np.ndarray, data_cfg: Any = None) -> np.ndarray:
    """The stored image at the config's resolution: (r, r, 3) uint8."""
    return downsample(content_image(content), resolution_of(data_cfg))


def order_values(image_RxRx3: np.ndarray, ordering: str = PIXEL_RASTER) -> np.ndarray:
    """Image -> 1-D sub-pixel values in the model's order (see the module docstring)."""
    o = ORDERINGS[ordering]
    if o == PLANAR:
        return np.ascontiguousarray(np.moveaxis(image_RxRx3, -1, 0)).reshape(-1)
    return np.asarray(image_RxRx3).reshape(-1)


def unorder_values(values: np.ndarray, resolution: int, ordering: str = PIXEL_RASTER) -> np.ndarray:
    """Inverse of :func:`order_values`: r*r*3 values -> (r, r, 3)."""
    r = resolution
    if ORDERINGS[ordering] == PLANAR:
        return np.ascontiguousarray(np.moveaxis(np.asarray(values).reshape(CHANNELS, r, r), 0, -1))
    return np.asarray(values).reshape(r, r, CHANNELS)


@functools.lru_cache(maxsize=16)
def _position_table(resolution: int, ordering: str) -> np.ndarray:
    """[SOS + r*r*3 + EOS, 3] (x, y, channel) of every token; read-only (cached)."""
    r = resolution
    y, x, c = np.meshgrid(np.arange(r), np.arange(r), np.arange(CHANNELS), indexing="ij")
    xyc = np.stack([x + 1, y + 1, c + 1], axis=-1).reshape(-1, 3)  # 1-based, HWC raster order
    if ordering == PLANAR:
        xyc = xyc.reshape(-1, CHANNELS, 3).transpose(1, 0, 2).reshape(-1, 3)
    table = np.concatenate([[[1, 1, 1]], xyc + 1, [[0, 0, 0]]]).astype(np.int32)
    table.flags.writeable = False
    return table


def tokens_to_image(tokens_1d: np.ndarray, data_cfg: Any = None) -> np.ndarray:
    """A (possibly partial) token sequence -> (r, r, 3) uint8 image, for looking at samples.

    A leading SOS is dropped; a reserved id (PAD, EOS, SOS) or an id past the vocabulary where a
    value should be becomes 0; a short sequence is zero-filled; tokens past the image are ignored."""
    r, o = resolution_of(data_cfg), ordering_of(data_cfg)
    t = np.asarray(tokens_1d).reshape(-1).astype(np.int64)
    if t.size and t[0] == SOS_ID:
        t = t[1:]
    n = r * r * CHANNELS
    t = t[:n] - NUM_RESERVED
    values = np.zeros(n, np.uint8)
    values[: t.size] = np.where((t >= 0) & (t < VALUE_RANGE), t, 0)
    return unorder_values(values, r, o)


# ----------------------------------------------------------------------------------------- decoding
def decode_image(data: bytes, label: str) -> np.ndarray:
    """Encoded image bytes -> (64, 64, 3) uint8; DataError naming ``label`` for anything else.

    PNGs are checked from their header first (8-bit RGB, 64x64), so 16-bit, palette, grayscale
    and alpha images are refused rather than silently converted by Pillow."""
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise DataError(f"{label}: truncated or corrupt PNG (no IHDR header)")
        w, h, depth, ctype = *struct.unpack(">II", data[16:24]), data[24], data[25]
        if (w, h, depth, ctype) != (SIZE, SIZE, 8, 2):
            kind = _PNG_COLOR_TYPES.get(ctype, f"color-type-{ctype}")
            raise DataError(
                f"{label}: {w}x{h} {depth}-bit {kind} PNG; ImageNet 64x64 images are 64x64 8-bit RGB (not converted)"
            )
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (SIZE, SIZE) or im.mode != "RGB":
                raise DataError(
                    f"{label}: {im.size[0]}x{im.size[1]} {im.mode} {im.format} image; ImageNet 64x64 images are "
                    "64x64 RGB (not converted)"
                )
            im.load()  # decodes everything: truncated data raises here
            a = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{label}: not an image file (no image format recognised)") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is bad input, reported in one line
        raise DataError(f"{label}: not a readable image ({type(e).__name__}: {e})") from None
    if a.shape != (SIZE, SIZE, CHANNELS):
        raise DataError(f"{label}: decoded to shape {a.shape}, expected (64, 64, 3)")
    return a


def _doc(image: np.ndarray, name: str, num_bytes: int) -> RawDoc:
    return RawDoc(content=np.ascontiguousarray(image, np.uint8).reshape(-1), name=name, num_bytes=num_bytes)


# ----------------------------------------------------------------------------------------- npz
def _npz_rows(path: Path) -> Iterator[np.ndarray]:
    """Rows of ``data`` (N, 12288) uint8 in an npz, streamed from the zip member in chunks."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(
            f"{path}: not an npz (zip) file ({e}); of the Chrabaszcz et al. 2017 downloads only the npz version "
            "is supported"
        ) from None
    with z:
        if "data.npy" not in z.namelist():
            keys = sorted(n.removesuffix(".npy") for n in z.namelist())
            raise DataError(f"{path}: no 'data' array (has {keys}); expected Chrabaszcz et al. 2017 npz batches")
        try:
            with z.open("data.npy") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                if len(shape) != 2 or shape[1] != NUM_VALUES:
                    raise DataError(f"{path}: 'data' has shape {shape}, expected (N, {NUM_VALUES}) (64x64x3 CHW)")
                if dtype != np.uint8 or fortran:
                    raise DataError(f"{path}: 'data' is {dtype}{' fortran-order' if fortran else ''}, expected uint8")
                left = shape[0]
                while left:
                    k = min(left, _NPZ_ROWS_PER_READ)
                    buf = f.read(k * NUM_VALUES)
                    if len(buf) < k * NUM_VALUES:
                        raise DataError(f"{path}: truncated 'data' array")
                    yield from np.frombuffer(buf, np.uint8).reshape(k, NUM_VALUES)
                    left -= k
        except DataError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"{path}: unreadable 'data' array ({type(e).__name__}: {e})") from None


def chw_to_hwc(row_CHW: np.ndarray) -> np.ndarray:
    """A Chrabaszcz row (12,288 values, all R then all G then all B) -> (64, 64, 3)."""
    return np.ascontiguousarray(np.asarray(row_CHW, np.uint8).reshape(CHANNELS, SIZE, SIZE).transpose(1, 2, 0))


def _natural_key(p: Path) -> list[Any]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


# ----------------------------------------------------------------------------------------- the format
class ImageNet64Format(RawFormat):
    """Reader of the ImageNet 64x64 raw layouts (see the module docstring)."""

    section = "imagenet64"
    evaluate_eos = False  # bits/dim are over the 12,288 sub-pixels only (EOS is not an official image token)

    # -------------------------------------------------------------------- layout
    def variant(self, source: Path) -> str:
        source = Path(source)
        if not source.is_dir():
            raise DataError(f"{source}: not a directory (expected an ImageNet 64x64 source folder)")
        if any((source / d).exists() for d in PNG_FOLDERS.values()):
            return VARIANT_PNG
        if any((source / t).exists() for t in TARS.values()):
            return VARIANT_TAR
        if any(source.glob(NPZ_TRAIN_GLOB)) or any((source / v).exists() for v in NPZ_VALIDATION):
            return VARIANT_NPZ
        if self._tfds_dir(source) is not None:
            return VARIANT_TFDS
        raise DataError(
            f"{source}: no ImageNet 64x64 layout found; expected train_64x64/ + valid_64x64/ (PNG folders), "
            "train_64x64.tar + valid_64x64.tar, train_data_batch_*.npz + val_data.npz (Chrabaszcz et al. 2017), "
            f"or tensorflow-datasets shards {TFDS_PREFIX}{{train,validation}}.tfrecord-*"
        )

    def scan(self, source: Path) -> dict[str, list[SourceFile]]:
        source = Path(source)
        v = self.variant(source)
        if v == VARIANT_PNG:
            return {s: self._scan_png(s, source / d) for s, d in PNG_FOLDERS.items()}
        if v == VARIANT_TAR:
            return {s: [self._scan_tar(s, source / t)] for s, t in TARS.items()}
        if v == VARIANT_NPZ:
            return self._scan_npz(source)
        return self._scan_tfds(source)

    @staticmethod
    def _scan_png(split: str, folder: Path) -> list[SourceFile]:
        if not folder.is_dir():
            raise DataError(f"{folder}: missing folder (the {split} split of the PNG layout)")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
        if not files:
            raise DataError(f"{folder}: no *.png images (empty {split} folder)")
        return [SourceFile(split, p) for p in files]

    @staticmethod
    def _scan_tar(split: str, path: Path) -> SourceFile:
        if not path.is_file():
            raise DataError(f"{path}: missing tar (the {split} split of the tar layout)")
        try:
            with tarfile.open(path, "r|*") as tf:
                while (m := tf.next()) is not None:
                    if m.isfile() and m.name.lower().endswith(".png"):
                        return SourceFile(split, path)
                    tf.members.clear()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable tar ({type(e).__name__}: {e})") from None
        raise DataError(f"{path}: tar holds no *.png images")

    @staticmethod
    def _scan_npz(source: Path) -> dict[str, list[SourceFile]]:
        train = sorted((p for p in source.glob(NPZ_TRAIN_GLOB) if p.is_file()), key=_natural_key)
        if not train:
            raise DataError(f"{source / 'train_data_batch_1.npz'}: missing (no {NPZ_TRAIN_GLOB} in the npz layout)")
        val = [source / n for n in NPZ_VALIDATION if (source / n).is_file()][:1]
        if not val:
            raise DataError(f"{source / NPZ_VALIDATION[0]}: missing (the validation split of the npz layout)")
        return {"train": [SourceFile("train", p) for p in train], "validation": [SourceFile("validation", val[0])]}

    @staticmethod
    def _tfds_dir(source: Path) -> Path | None:
        """The folder holding the TFDS shards: ``source`` or up to three levels below it
        (``downsampled_imagenet/64x64/<version>/``); the last in sorted order if several."""
        return find_tfds_dir(source, f"{TFDS_PREFIX}train.tfrecord-*")

    def _scan_tfds(self, source: Path) -> dict[str, list[SourceFile]]:
        d = self._tfds_dir(source)
        assert d is not None
        out = {}
        for split, name in TFDS_SPLITS.items():
            files = sorted(p for p in d.glob(f"{TFDS_PREFIX}{name}.tfrecord-*") if p.is_file())
            if not files:
                raise DataError(f"{d}: no {TFDS_PREFIX}{name}.tfrecord-* shards (the {split} split)")
            out[split] = [SourceFile(split, p) for p in files]
        return out

    # -------------------------------------------------------------------- reading
    def fit_tokenizer(self, train_files: list[SourceFile], out_dir: Path, options: dict[str, Any]) -> Tokenizer:
        return ByteValues()

    def load_tokenizer(self, corpus_dir: Path, manifest: dict[str, Any]) -> Tokenizer:
        return ByteValues()

    def read(self, f: SourceFile, tokenizer: Tokenizer) -> Iterator[RawDoc]:
        """One RawDoc per image (content: 12,288 HWC uint8 values), streamed."""
        path = Path(f.path)
        if path.suffix.lower() == ".png" and f.member is None:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise DataError(f"{path}: unreadable ({e.strerror or e})") from None
            yield _doc(decode_image(data, str(path)), path.name, len(data))
        elif ".tar" in path.name.lower():
            yield from self._read_tar(path, f.member)
        elif ".tfrecord" in path.name:
            yield from self._read_tfrecord(path)
        else:
            for i, row in enumerate(_npz_rows(path)):
                yield _doc(chw_to_hwc(row), f"{path.name}[{i}]", NUM_VALUES)

    @staticmethod
    def _read_tar(path: Path, member: str | None) -> Iterator[RawDoc]:
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
                    yield _doc(decode_image(data, f"{path}:{m.name}"), m.name, len(data))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable tar ({type(e).__name__}: {e})") from None
        if n == 0:
            raise DataError(f"{path}: tar holds no *.png images" + (f" named {member}" if member else ""))

    @staticmethod
    def _read_tfrecord(path: Path) -> Iterator[RawDoc]:
        for i, rec in enumerate(tfrecord_records(path)):
            label = f"{path}#{i}"
            try:
                images = example_bytes_feature(rec, "image")
            except ValueError as e:
                raise DataError(f"{label}: not a tf.train.Example ({e})") from None
            if len(images) != 1:
                raise DataError(f"{label}: expected one PNG-encoded 'image' feature, found {len(images)}")
            yield _doc(decode_image(images[0], label), f"{path.name}#{i}", len(images[0]))

    # -------------------------------------------------------------------- the model's sequence
    def num_tokens(self, num_content: np.ndarray, data_cfg: Any) -> np.ndarray:
        """Every image has ``sequence_length`` tokens (no need to build 1.28M sequences to count)."""
        return np.full(len(num_content), sequence_length(data_cfg), np.int64)

    def tokens(self, content: np.ndarray, data_cfg: Any) -> np.ndarray:
        """SOS, the image's sub-pixel values (at the config's resolution and ordering) + 3, EOS."""
        values = order_values(image_at(content, data_cfg), ordering_of(data_cfg)).astype(np.int32) + NUM_RESERVED
        return np.concatenate([[SOS_ID], values, [EOS_ID]]).astype(np.int32)

    def positions(self, num_tokens: int, data_cfg: Any) -> np.ndarray:
        """[num_tokens, 3] (x, y, channel) of the first ``num_tokens`` tokens of an image's
        sequence (official values; see the module docstring). A prefix is allowed (samples)."""
        table = _position_table(resolution_of(data_cfg), ordering_of(data_cfg))
        if not 0 <= num_tokens <= len(table):
            raise ValueError(f"an image sequence has at most {len(table)} tokens, asked for {num_tokens}")
        return table[:num_tokens].copy()

    # -------------------------------------------------------------------- demo data
    def demo(self, out: Path, layout: str = VARIANT_PNG, limit: int | None = None) -> Path:
        """Write the demo images (:func:`demo_images`) under ``out`` in an official layout
        ("png", "tar" or "npz"); returns ``out``. Refuses to overwrite anything it did not write."""
        return write_demo(Path(out), layout=layout, limit=limit)


FORMAT = ImageNet64Format()


# ----------------------------------------------------------------------------------------- demo data
# Real photos scikit-image ships in its wheel (no downloads), with their licenses (shared/docs/data.md §2.3).
DEMO_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "astronaut.png", "public domain (NASA)"),
    ("chelsea", "chelsea.png", "CC0"),
    ("coffee", "coffee.png", "CC0"),
    ("hubble_deep_field", "hubble_deep_field.jpg", "public domain (NASA)"),
    ("immunohistochemistry", "ihc.png", "no known copyright restrictions"),
    ("retina", "retina.jpg", "CC0"),
    ("rocket", "rocket.jpg", "public domain (SpaceX)"),
)
# Held out entirely (all their tiles and their whole-photo downsample): validation never shares a
# photo with training.
DEMO_VALIDATION_PHOTOS = ("chelsea", "coffee")
DEMO_MIN_STD = 2.0  # tiles flatter than this (e.g. the retina photo's black surround) are dropped
DEMO_MARKER = "imagenet64-demo.txt"


def _skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise DataError("scikit-image is not installed: the ImageNet 64x64 demo is cut from the photos it ships")
    return Path(spec.origin).parent / "data"


def _photo_images(name: str, photo_HxWx3: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Non-overlapping 64x64 tiles (grid centred) of the photo box-downsampled by 1, 2, 4, ...
    while it is at least 64 px, then the whole photo box-resized to 64x64 (as ImageNet 64x64
    was made: the whole image, area filter, aspect not kept)."""
    f = 1
    while min(photo_HxWx3.shape[:2]) // f >= SIZE:
        img = box_downsample(photo_HxWx3, f)
        rows, cols = img.shape[0] // SIZE, img.shape[1] // SIZE
        y0, x0 = (img.shape[0] - rows * SIZE) // 2, (img.shape[1] - cols * SIZE) // 2
        for i in range(rows):
            for j in range(cols):
                tile = img[y0 + i * SIZE : y0 + (i + 1) * SIZE, x0 + j * SIZE : x0 + (j + 1) * SIZE]
                if tile.std() >= DEMO_MIN_STD:
                    yield f"{name}_s{f}_{i:02d}_{j:02d}.png", np.ascontiguousarray(tile)
        f *= 2
    whole = Image.fromarray(photo_HxWx3).resize((SIZE, SIZE), Image.Resampling.BOX)
    yield f"{name}_whole.png", np.asarray(whole, np.uint8)


def demo_images(limit: int | None = None) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{"train": [(file name, 64x64x3 uint8)], "validation": [...]} from scikit-image's photos,
    names sorted; ``limit``: at most that many per split (the first in sorted photo order)."""
    d = _skimage_data_dir()
    out: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "validation": []}
    for name, file, _ in DEMO_PHOTOS:
        split = "validation" if name in DEMO_VALIDATION_PHOTOS else "train"
        if limit is not None and len(out[split]) >= limit:
            continue
        try:
            with Image.open(d / file) as im:
                photo = np.asarray(im.convert("RGB"), np.uint8)
        except OSError as e:
            raise DataError(f"{d / file}: cannot read scikit-image's photo ({e})") from None
        for item in _photo_images(name, photo):
            if limit is not None and len(out[split]) >= limit:
                break
            out[split].append(item)
    for split in out:
        out[split].sort(key=lambda t: t[0])
    return out


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _demo_targets(out: Path) -> list[Path]:
    return [out / n for n in (*PNG_FOLDERS.values(), *TARS.values(), "train_data_batch_1.npz", "val_data.npz")]


def write_demo(out: Path, layout: str = VARIANT_PNG, limit: int | None = None) -> Path:
    """Write :func:`demo_images` under ``out`` as the "png", "tar" or "npz" (Chrabaszcz) layout.

    A folder that already holds ImageNet layout files is only overwritten when this function
    wrote them (its marker file ``imagenet64-demo.txt`` is there), so a real dataset is never
    touched."""
    layout = {"npz-chrabaszcz2017": "npz"}.get(layout, layout)
    if layout not in ("png", "tar", "npz"):
        raise ConfigError(f"demo layout {layout!r}: must be 'png', 'tar' or 'npz'")
    out = Path(out)
    existing = [p for p in _demo_targets(out) if p.exists()]
    if existing and not (out / DEMO_MARKER).exists():
        raise DataError(f"{existing[0]}: exists and was not written by the demo; refusing to overwrite")
    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    images = demo_images(limit)
    for split, items in images.items():
        if layout == "png":
            folder = out / PNG_FOLDERS[split]
            folder.mkdir()
            for name, img in items:
                (folder / name).write_bytes(_png_bytes(img))
        elif layout == "tar":
            with tarfile.open(out / TARS[split], "w") as tf:
                for name, img in items:
                    data = _png_bytes(img)
                    info = tarfile.TarInfo(f"{PNG_FOLDERS[split]}/{name}")
                    info.size, info.mode, info.mtime = len(data), 0o644, 0
                    tf.addfile(info, io.BytesIO(data))
        else:
            data = np.stack([img.transpose(2, 0, 1).reshape(-1) for _, img in items]).astype(np.uint8)
            arrays: dict[str, np.ndarray] = {"data": data, "labels": np.ones(len(items), np.int64)}
            if split == "train":
                arrays["mean"] = data.mean(axis=0)
            np.savez(out / ("train_data_batch_1.npz" if split == "train" else "val_data.npz"), **arrays)
    counts = {s: len(v) for s, v in images.items()}
    lines = [
        "ImageNet 64x64 demo data (not ImageNet): 64x64 tiles of real photos shipped in scikit-image,",
        f"box-downsampled by 1, 2, 4, ... then tiled, plus each whole photo box-resized to 64x64. Layout: {layout}.",
        f"train: {counts['train']} images; validation: {counts['validation']} images "
        f"(all of {', '.join(DEMO_VALIDATION_PHOTOS)}, never seen in training).",
        "Photos and licenses:",
        *(f"  {n} ({f}): {lic}" for n, f, lic in DEMO_PHOTOS),
    ]
    (out / DEMO_MARKER).write_text("\n".join(lines) + "\n")
    return out


def demo_tar(out: Path, limit: int | None = None) -> Path:
    """The demo images as ``train_64x64.tar`` / ``valid_64x64.tar``."""
    return write_demo(out, layout="tar", limit=limit)


def demo_npz(out: Path, limit: int | None = None) -> Path:
    """The demo images as Chrabaszcz-style ``train_data_batch_1.npz`` / ``val_data.npz`` (CHW)."""
    return write_demo(out, layout="npz", limit=limit)
