"""ImageNet 64x64 raw data (paper Sec. 5.2): the official layouts and the official tokenization.

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

Elsewhere: the image / tar / npz readers (``repro/data/formats/images.py``), the demo
(``repro/data/demos/imagenet64.py``), the unigram and previous-pixel baselines
(``repro/eval/baselines.py``) and the sample grids (``repro/sample/writers.py``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repro.config import ConfigError
from repro.data.formats import images
from repro.data.formats.tfrecord import example_bytes_feature, find_tfds_dir, tfrecord_records
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
    """Encoded image bytes -> (64, 64, 3) uint8; DataError naming ``label`` for anything else
    (16-bit, palette, grayscale, alpha or other-size images are refused, never converted)."""
    return images.decode_rgb(data, label, SIZE, "ImageNet 64x64")


def _doc(image: np.ndarray, name: str, num_bytes: int) -> RawDoc:
    return RawDoc(content=np.ascontiguousarray(image, np.uint8).reshape(-1), name=name, num_bytes=num_bytes)


# ----------------------------------------------------------------------------------------- npz
def _npz_rows(path: Path) -> Iterator[np.ndarray]:
    """Rows of ``data`` (N, 12288) uint8 in a Chrabaszcz et al. 2017 npz batch, streamed."""
    return images.npz_rows(
        path,
        NUM_VALUES,
        not_npz="; of the Chrabaszcz et al. 2017 downloads only the npz version is supported",
        expected="Chrabaszcz et al. 2017 npz batches",
        row_layout="64x64x3 CHW",
    )


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
        images.check_tar(path)
        return SourceFile(split, path)

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
        for name, data in images.tar_pngs(path, member):
            yield _doc(decode_image(data, f"{path}:{name}"), name, len(data))

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
        """Write the demo images (``repro.data.demos.imagenet64``) under ``out`` in an official layout
        ("png", "tar" or "npz"); returns ``out``. Refuses to overwrite anything it did not write."""
        from repro.data.demos.imagenet64 import write_demo

        return write_demo(Path(out), layout=layout, limit=limit)


FORMAT = ImageNet64Format()
