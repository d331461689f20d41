"""ImageNet 64x64 raw data: layouts, official tokenization and positions, demo data, baselines."""

from __future__ import annotations

import io
import math
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ld, varint, write_tfrecord
from PIL import Image

from repro.config import ConfigError
from repro.data import imagenet64
from repro.data.demos.imagenet64 import DEMO_VALIDATION_PHOTOS, demo_images, demo_tar, write_demo
from repro.data.formats.images import PNG_SIGNATURE
from repro.data.formats.tfrecord import crc32c
from repro.data.source import DataError, SourceFile
from repro.data.tokens import EOS_ID, PAD_ID, SOS_ID
from repro.eval import baselines
from repro.sample import writers

FMT = imagenet64.FORMAT
RNG = np.random.default_rng(0)


def cfg(resolution: int = 64, ordering: str = "pixel_raster") -> imagenet64.ImageOptions:
    return imagenet64.ImageOptions(resolution, ordering)


def random_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def png_bytes(img: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, mode).save(buf, format="PNG")
    return buf.getvalue()


def read_all(files: list[SourceFile]) -> list:
    return [d for f in files for d in FMT.read(f, FMT.load_tokenizer(Path("."), {}))]


# ----------------------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("ordering", ["pixel_raster", "r->g->b", "planar"])
@pytest.mark.parametrize("resolution", [64, 32])
def test_tokens_round_trip(ordering, resolution):
    img = random_image(1)
    c = cfg(resolution, ordering)
    toks = FMT.tokens(img.reshape(-1), c)
    n = resolution * resolution * 3
    assert toks.dtype == np.int32 and toks.shape == (n + 2,) == (imagenet64.sequence_length(c),)
    assert toks[0] == SOS_ID and toks[-1] == EOS_ID
    assert toks[1:-1].min() >= 3 and toks[1:-1].max() <= 258
    expected = img if resolution == 64 else imagenet64.downsample(img, resolution)
    np.testing.assert_array_equal(imagenet64.tokens_to_image(toks, c), expected)


def test_orderings_match_official_layout():
    img = random_image(2)
    raster = FMT.tokens(img.reshape(-1), cfg()) - 3
    planar = FMT.tokens(img.reshape(-1), cfg(ordering="r->g->b")) - 3
    # pixel_raster: tf.reshape(image, [-1]) (R, G, B interleaved)
    assert list(raster[1:7]) == [*img[0, 0], *img[0, 1]]
    # r->g->b: all R in raster order, then all G, then all B
    np.testing.assert_array_equal(planar[1:-1], np.concatenate([img[..., k].reshape(-1) for k in range(3)]))
    np.testing.assert_array_equal(FMT.tokens(img, cfg(ordering="planar")), planar + 3)


def test_downsample_rounds_half_up():
    img = np.zeros((64, 64, 3), np.uint8)
    img[0:2, 0:2, 0] = [[0, 1], [1, 1]]  # mean 0.75 -> 1
    img[0:2, 2:4, 0] = [[0, 0], [0, 1]]  # mean 0.25 -> 0
    img[0:2, 4:6, 0] = [[0, 1], [0, 1]]  # mean 0.5  -> 1 (half up)
    img[0:2, 6:8, 1] = [[255, 254], [254, 254]]  # 254.25 -> 254
    d = imagenet64.downsample(img, 32)
    assert d.shape == (32, 32, 3) and d.dtype == np.uint8
    assert [d[0, 0, 0], d[0, 1, 0], d[0, 2, 0], d[0, 3, 1]] == [1, 0, 1, 254]
    assert imagenet64.downsample(np.full((64, 64, 3), 7, np.uint8), 1).tolist() == [[[7, 7, 7]]]


def test_tokens_to_image_is_tolerant():
    img = random_image(3)
    toks = FMT.tokens(img.reshape(-1), cfg())
    partial = toks[:100].copy()
    partial[10] = PAD_ID
    partial[11] = EOS_ID
    out = imagenet64.tokens_to_image(partial, cfg())
    flat = out.reshape(-1)
    assert out.shape == (64, 64, 3)
    np.testing.assert_array_equal(flat[:9], img.reshape(-1)[:9])
    assert flat[9] == 0 and flat[10] == 0 and flat[11] == img.reshape(-1)[11]
    assert not flat[99:].any()
    # without SOS: the first token is the first value
    np.testing.assert_array_equal(imagenet64.tokens_to_image(toks[1:], cfg()), img)
    assert not imagenet64.tokens_to_image(np.array([], np.int32), cfg()).any()


def test_config_errors():
    with pytest.raises(ConfigError, match="resolution=48"):
        FMT.tokens(random_image().reshape(-1), cfg(48))
    with pytest.raises(ConfigError, match="ordering='bogus'"):
        FMT.positions(10, cfg(ordering="bogus"))
    with pytest.raises(DataError, match="12288"):
        FMT.tokens(np.zeros(100, np.uint8), cfg())


# ----------------------------------------------------------------------------------------- positions
def test_position_table_sizes_match_official_config():
    assert imagenet64.position_table_sizes(64) == (66, 66, 5)  # official event_idx_size, tests/test_model.py IMAGENET
    assert imagenet64.position_table_sizes(32) == (34, 34, 5)


def test_positions_hand_checked_raster():
    p = FMT.positions(12290, cfg())
    assert p.shape == (12290, 3) and p.dtype == np.int32
    assert p[0].tolist() == [1, 1, 1]  # SOS (official)
    assert p[1:4].tolist() == [[2, 2, 2], [2, 2, 3], [2, 2, 4]]  # first pixel's R, G, B: (x+1, y+1, c) + 1
    assert p[4].tolist() == [3, 2, 2]  # second pixel (x = 1) R
    assert p[1 + 63 * 3].tolist() == [65, 2, 2]  # last pixel of row 0
    assert p[1 + 64 * 3].tolist() == [2, 3, 2]  # first pixel of row 1
    assert p[12288].tolist() == [65, 65, 4]  # last pixel's B
    assert p[12289].tolist() == [0, 0, 0]  # EOS (ours)
    assert (p.max(axis=0) < np.array(imagenet64.position_table_sizes(64))).all()
    np.testing.assert_array_equal(FMT.positions(10, cfg()), p[:10])
    with pytest.raises(ValueError):
        FMT.positions(12291, cfg())


def test_positions_hand_checked_planar_and_32():
    p = FMT.positions(12290, cfg(ordering="r->g->b"))
    assert p[1].tolist() == [2, 2, 2] and p[2].tolist() == [3, 2, 2]  # R of pixels 0 and 1
    assert p[1 + 4096].tolist() == [2, 2, 3]  # first pixel's G
    assert p[1 + 2 * 4096].tolist() == [2, 2, 4]  # first pixel's B
    assert p[12288].tolist() == [65, 65, 4]
    p32 = FMT.positions(imagenet64.sequence_length(cfg(32)), cfg(32))
    assert p32.shape == (3074, 3) and p32[-2].tolist() == [33, 33, 4]
    assert (p32.max(axis=0) < np.array(imagenet64.position_table_sizes(32))).all()


@pytest.mark.parametrize("ordering", ["pixel_raster", "r->g->b"])
@pytest.mark.parametrize("resolution", [64, 16])
def test_positions_name_each_tokens_subpixel(ordering, resolution):
    """Every token's (x, y, channel) points at the sub-pixel its value came from."""
    c = cfg(resolution, ordering)
    img = imagenet64.downsample(random_image(4), resolution)
    content = np.repeat(np.repeat(img, 64 // resolution, 0), 64 // resolution, 1).reshape(-1)
    toks = FMT.tokens(content, c)
    pos = FMT.positions(len(toks), c)
    x, y, ch = pos[1:-1].T - 2
    np.testing.assert_array_equal(toks[1:-1] - 3, img[y, x, ch])


# ----------------------------------------------------------------------------------------- layouts
LIMIT = 5


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet64")
    out = {}
    for layout in ("png", "tar", "npz"):
        out[layout] = write_demo(root / layout, layout=layout, limit=LIMIT)
    return out


def test_demo_layouts_scan_and_read_identically(layouts):
    expected = demo_images(LIMIT)
    contents = {}
    for layout, src in layouts.items():
        v = FMT.variant(src)
        assert v == {"png": "png", "tar": "tar", "npz": "npz-chrabaszcz2017"}[layout]
        files = FMT.scan(src)
        assert set(files) == {"train", "validation"}
        contents[layout] = {s: [d.content for d in read_all(fs)] for s, fs in files.items()}
        for split in ("train", "validation"):
            got = contents[layout][split]
            assert len(got) == LIMIT and all(c.dtype == np.uint8 and c.shape == (12288,) for c in got)
            for c, (_, img) in zip(got, expected[split], strict=True):
                np.testing.assert_array_equal(c, img.reshape(-1))
    png_files = FMT.scan(layouts["png"])["train"]
    assert [f.path.name for f in png_files] == sorted(n for n, _ in expected["train"])
    docs = read_all(png_files[:1])
    assert docs[0].name == png_files[0].path.name and docs[0].num_bytes == png_files[0].path.stat().st_size
    tar_docs = read_all(FMT.scan(layouts["tar"])["validation"])
    assert tar_docs[0].name == f"valid_64x64/{expected['validation'][0][0]}"
    assert FMT.scan(layouts["npz"])["validation"][0].path.name == "val_data.npz"


def test_demo_full_counts_and_holdout():
    images = demo_images()
    assert 1000 <= len(images["train"]) <= 1500 and 50 <= len(images["validation"]) <= 150
    photo = {s: {n.rsplit("_s", 1)[0].removesuffix("_whole.png") for n, _ in v} for s, v in images.items()}
    assert photo["validation"] == set(DEMO_VALIDATION_PHOTOS)
    assert not photo["train"] & photo["validation"]
    assert {"astronaut_whole.png", "retina_whole.png"} <= {n for n, _ in images["train"]}
    assert all(img.shape == (64, 64, 3) and img.dtype == np.uint8 for _, img in images["validation"])
    again = demo_images()
    assert [n for n, _ in again["train"]] == [n for n, _ in images["train"]]
    np.testing.assert_array_equal(again["train"][-1][1], images["train"][-1][1])


def test_demo_refuses_to_overwrite_real_data(tmp_path):
    (tmp_path / "train_64x64").mkdir()
    (tmp_path / "train_64x64" / "real.png").write_bytes(png_bytes(random_image()))
    with pytest.raises(DataError, match="train_64x64"):
        write_demo(tmp_path, limit=2)
    assert (tmp_path / "train_64x64" / "real.png").exists()
    out = tmp_path / "demo"
    write_demo(out, limit=2)
    demo_tar(out, limit=2)  # its own output is replaced, with the other layout
    assert FMT.variant(out) == "tar" and not (out / "train_64x64").exists()


def test_npz_streams_in_chunks_and_converts_chw(tmp_path, monkeypatch):
    imgs = [random_image(s) for s in range(5)]
    data = np.stack([im.transpose(2, 0, 1).reshape(-1) for im in imgs])
    np.savez_compressed(tmp_path / "train_data_batch_10.npz", data=data, labels=np.arange(5))
    np.savez(tmp_path / "train_data_batch_2.npz", data=data[:1])
    np.savez(tmp_path / "val_data.npz", data=data[:2])
    monkeypatch.setattr("repro.data.formats.images.NPZ_ROWS_PER_READ", 2)
    files = FMT.scan(tmp_path)
    assert [f.path.name for f in files["train"]] == ["train_data_batch_2.npz", "train_data_batch_10.npz"]
    docs = read_all(files["train"][1:])
    assert [d.name for d in docs] == [f"train_data_batch_10.npz[{i}]" for i in range(5)]
    for d, im in zip(docs, imgs, strict=True):
        np.testing.assert_array_equal(d.content, im.reshape(-1))


# ----------------------------------------------------------------------------------------- tfds
def tf_example(png: bytes) -> bytes:
    """tf.train.Example{features{feature{"label": int64_list[5]}, feature{"image": bytes_list[png]}}}."""
    label = ld(1, b"label") + ld(2, ld(3, ld(1, varint(5))))
    image = ld(1, b"image") + ld(2, ld(1, ld(1, png)))
    return ld(1, ld(1, label) + ld(1, image))


def test_crc32c_known_value():
    assert crc32c(b"123456789") == 0xE3069283


def test_tfds_tfrecords_read_without_tensorflow(tmp_path):
    d = tmp_path / "downsampled_imagenet" / "64x64" / "2.0.0"
    d.mkdir(parents=True)
    imgs = [random_image(s) for s in range(4)]
    write_tfrecord(
        d / "downsampled_imagenet-train.tfrecord-00000-of-00002", [tf_example(png_bytes(i)) for i in imgs[:2]]
    )
    write_tfrecord(d / "downsampled_imagenet-train.tfrecord-00001-of-00002", [tf_example(png_bytes(imgs[2]))])
    write_tfrecord(d / "downsampled_imagenet-validation.tfrecord-00000-of-00001", [tf_example(png_bytes(imgs[3]))])
    assert FMT.variant(tmp_path) == "tfds"
    files = FMT.scan(tmp_path)
    assert [len(files["train"]), len(files["validation"])] == [2, 1]
    docs = read_all(files["train"])
    assert [d.name for d in docs][0] == "downsampled_imagenet-train.tfrecord-00000-of-00002#0"
    for doc, im in zip(docs + read_all(files["validation"]), imgs, strict=True):
        np.testing.assert_array_equal(doc.content, im.reshape(-1))
    bad = d / "downsampled_imagenet-train.tfrecord-00000-of-00002"
    raw = bytearray(bad.read_bytes())
    raw[8] ^= 0xFF  # the length's CRC
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="tfrecord-00000-of-00002.*length CRC"):
        read_all(files["train"][:1])
    write_tfrecord(bad, [ld(1, ld(1, ld(1, b"label")))])
    with pytest.raises(DataError, match=r"tfrecord-00000-of-00002#0.*found 0"):
        read_all(files["train"][:1])


# ----------------------------------------------------------------------------------------- bad input
def _png_layout(root: Path, train_files: dict[str, bytes]) -> Path:
    for folder in ("train_64x64", "valid_64x64"):
        (root / folder).mkdir(parents=True)
    (root / "valid_64x64" / "ok.png").write_bytes(png_bytes(random_image()))
    for name, data in train_files.items():
        (root / "train_64x64" / name).write_bytes(data)
    return root


BAD_IMAGES = {
    "small.png": (lambda: png_bytes(random_image()[:32, :32]), "32x32"),
    "gray.png": (lambda: png_bytes(random_image()[..., 0]), "grayscale"),
    "rgba.png": (lambda: png_bytes(np.dstack([random_image(), random_image(1)[..., :1]])), "RGBA"),
    "palette.png": (lambda: _palette_png(), "palette"),
    "truncated.png": (lambda: png_bytes(random_image())[:-400], "not a readable image"),
    "text.png": (lambda: b"this is not an image\n" * 10, "not an image file"),
    "rgb16.png": (lambda: _rgb16_png(), "16-bit"),
}


def _palette_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(random_image()).convert("P").save(buf, format="PNG")
    return buf.getvalue()


def _rgb16_png() -> bytes:
    """A 64x64 16-bit RGB PNG, which Pillow would silently reduce to 8 bits: written by hand."""
    import zlib

    raw = b"".join(b"\x00" + bytes(64 * 6) for _ in range(64))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 64, 64, 16, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_is_a_dataerror_naming_the_file(tmp_path, name):
    make, why = BAD_IMAGES[name]
    src = _png_layout(tmp_path, {"a_ok.png": png_bytes(random_image()), name: make()})
    files = FMT.scan(src)["train"]
    assert len(read_all([f for f in files if f.path.name == "a_ok.png"])) == 1
    with pytest.raises(DataError, match=why) as e:
        read_all([f for f in files if f.path.name == name])
    assert str(tmp_path / "train_64x64" / name) in str(e.value) and "\n" not in str(e.value)


def test_bad_image_inside_tar_names_the_member(tmp_path):
    with tarfile.open(tmp_path / "train_64x64.tar", "w") as tf:
        for name, data in [
            ("train_64x64/ok.png", png_bytes(random_image())),
            ("train_64x64/gray.png", png_bytes(random_image()[..., 0])),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with tarfile.open(tmp_path / "valid_64x64.tar", "w") as tf:
        info = tarfile.TarInfo("valid_64x64/ok.png")
        data = png_bytes(random_image())
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    files = FMT.scan(tmp_path)
    with pytest.raises(DataError, match=r"train_64x64\.tar:train_64x64/gray\.png: 64x64 8-bit grayscale"):
        read_all(files["train"])


def test_bad_layouts_name_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        FMT.variant(tmp_path)  # nothing recognisable
    with pytest.raises(DataError, match="not a directory"):
        FMT.scan(tmp_path / "missing")
    (tmp_path / "train_64x64").mkdir()
    (tmp_path / "train_64x64" / "notes.txt").write_text("x")
    (tmp_path / "valid_64x64").mkdir()
    with pytest.raises(DataError, match=r"train_64x64: no \*\.png images \(empty train folder\)"):
        FMT.scan(tmp_path)
    (tmp_path / "train_64x64" / "a.png").write_bytes(png_bytes(random_image()))
    with pytest.raises(DataError, match=r"valid_64x64: no \*\.png"):
        FMT.scan(tmp_path)
    (tmp_path / "valid_64x64").rmdir()
    with pytest.raises(DataError, match=r"valid_64x64: missing folder"):
        FMT.scan(tmp_path)


def test_tar_without_images(tmp_path):
    for name in ("train_64x64.tar", "valid_64x64.tar"):
        with tarfile.open(tmp_path / name, "w") as tf:
            info = tarfile.TarInfo("README.txt")
            info.size = 2
            tf.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match=r"train_64x64\.tar: tar holds no \*\.png images"):
        FMT.scan(tmp_path)
    (tmp_path / "train_64x64.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match=r"train_64x64\.tar: not a readable tar"):
        FMT.scan(tmp_path)


def test_bad_npz(tmp_path):
    np.savez(tmp_path / "train_data_batch_1.npz", labels=np.arange(3))
    np.savez(tmp_path / "val_data.npz", data=np.zeros((2, 64 * 64), np.uint8))
    files = FMT.scan(tmp_path)
    with pytest.raises(DataError, match=r"train_data_batch_1\.npz: no 'data' array"):
        read_all(files["train"])
    with pytest.raises(DataError, match=r"val_data\.npz: 'data' has shape \(2, 4096\)"):
        read_all(files["validation"])
    np.savez(tmp_path / "val_data.npz", data=np.zeros((2, 12288), np.int64))
    with pytest.raises(DataError, match=r"val_data\.npz: 'data' is int64"):
        read_all(files["validation"])
    (tmp_path / "train_data_batch_1.npz").write_bytes(b"pickle-ish")
    with pytest.raises(DataError, match=r"train_data_batch_1\.npz: not an npz"):
        read_all(files["train"])
    (tmp_path / "val_data.npz").unlink()
    with pytest.raises(DataError, match=r"val_data\.npz: missing"):
        FMT.scan(tmp_path)


# ----------------------------------------------------------------------------------------- baselines
def _blocks(img_2x2x3: np.ndarray) -> np.ndarray:
    """A 2x2 image stored at 64x64 (32x32 constant blocks): resolution 2 recovers it exactly."""
    return np.repeat(np.repeat(np.asarray(img_2x2x3, np.uint8), 32, 0), 32, 1).reshape(-1)


def test_unigram_baseline_hand_computed():
    train = [np.broadcast_to(np.array([10, 20, 30], np.uint8), (64, 64, 3)).reshape(-1)]
    val = [np.broadcast_to(np.array([10, 20, 40], np.uint8), (64, 64, 3)).reshape(-1)]
    got = baselines.unigram_bits_per_dim(iter(train), iter(val), cfg(1))
    expected = -(2 * math.log2(2 / 259) + math.log2(1 / 259)) / 3
    assert got == pytest.approx(expected, rel=1e-12)
    # at 64: counts 4096 of each of 10/20/30 (N = 12288)
    got64 = baselines.unigram_bits_per_dim(train, val)
    expected64 = -(2 * math.log2(4097 / 12544) + math.log2(1 / 12544)) / 3
    assert got64 == pytest.approx(expected64, rel=1e-12)


def test_previous_pixel_baseline_hand_computed():
    t = [[[0, 0, 0], [1, 1, 1]], [[0, 0, 0], [1, 1, 1]]]  # raster pixels 0, 1, 0, 1
    v = [[[0, 0, 0], [1, 1, 1]], [[1, 1, 1], [0, 0, 0]]]  # raster pixels 0, 1, 1, 0
    got = baselines.previous_pixel_bits_per_dim([_blocks(t)], [_blocks(v)], cfg(2))
    # unigram: 6 zeros, 6 ones of 12; pairs per channel 0->1 x2, 1->0 x1 (x3 channels)
    first = -math.log2(7 / 268)
    per_channel = -math.log2(7 / 262) - math.log2(1 / 259) - math.log2(4 / 259)
    assert got == pytest.approx((3 * first + 3 * per_channel) / 12, rel=1e-12)


def test_baselines_on_real_images(layouts):
    files = FMT.scan(layouts["png"])
    train = lambda: (d.content for d in read_all(files["train"]))  # noqa: E731
    val = lambda: (d.content for d in read_all(files["validation"]))  # noqa: E731
    uni, prev = baselines.unigram_bits_per_dim(train(), val()), baselines.previous_pixel_bits_per_dim(train(), val())
    assert 0 < prev < uni - 1  # neighbouring pixels of real photos are alike
    assert 0 < baselines.unigram_bits_per_dim(val(), val()) < 8  # fit on itself: below the uniform 8 bits
    uni16 = baselines.unigram_bits_per_dim(train(), val(), cfg(16))
    assert uni16 > 0 and uni16 != pytest.approx(uni)


# ----------------------------------------------------------------------------------------- grids
def test_write_grid(tmp_path):
    imgs = [np.full((8, 8, 3), 40 * k, np.uint8) for k in range(5)]
    imgs[0][0, 0] = [255, 0, 0]
    p = writers.write_grid(tmp_path / "g" / "grid.png", imgs, ncols=3, scale=4)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size == (3 * 32 + 4 * 2, 2 * 32 + 3 * 2)
        a = np.asarray(im)
    assert a[2:6, 2:6].tolist() == [[[255, 0, 0]] * 4] * 4  # nearest-neighbour: a 4x4 red block
    assert a[6, 6].tolist() == [0, 0, 0] and a[2 + 34 + 5, 2 + 34 + 5].tolist() == [160, 160, 160]
    p2 = writers.write_grid(tmp_path / "cap.png", imgs, ncols=5, scale=2, captions=[f"img {k}" for k in range(5)])
    with Image.open(p2) as im:
        assert im.size[0] == 5 * 16 + 6 * 2 and im.size[1] > 16 + 4
        a2 = np.asarray(im)
    assert (a2[2 + 16 :, : 16 + 2] > 200).any()  # caption text below the first image
    assert sorted(x.name for x in tmp_path.iterdir()) == ["cap.png", "g"]  # no temp files left
    with pytest.raises(ValueError):
        writers.write_grid(tmp_path / "x.png", [], ncols=2)
