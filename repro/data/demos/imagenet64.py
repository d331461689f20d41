"""The ImageNet 64x64 demo: real photos scikit-image ships, cut into 64x64 images and written in
ImageNet 64x64's official layouts (``repro data demo imagenet64``; ``ImageNet64Format.demo``).

Each photo is box-downsampled by 1, 2, 4, ... and cut into non-overlapping 64x64 tiles while it is
at least 64 px, plus the whole photo box-resized to 64x64; two photos are held out whole as the
validation split. Written as the "png" (default), "tar" or Chrabaszcz "npz" layout, with a
marker file so that a real dataset is never overwritten.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from repro.config import ConfigError
from repro.data.imagenet64 import PNG_FOLDERS, SIZE, TARS, VARIANT_PNG, box_downsample
from repro.data.source import DataError

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
