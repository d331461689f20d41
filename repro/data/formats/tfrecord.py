"""TFRecord files and tf.train.Example protos, read without TensorFlow (stdlib only).

What tensorflow-datasets writes (``<name>-<split>.tfrecord-NNNNN-of-NNNNN``): TFRecord framing
(uint64 length, its masked CRC-32C, the record, the record's masked CRC-32C) around serialized
``tf.train.Example`` messages. Used by ImageNet 64x64 (``downsampled_imagenet``) and PG-19 (``pg19``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from repro.data.source import DataError


@functools.lru_cache(maxsize=1)
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord framing uses; pure Python (used on 8-byte lengths)."""
    t, c = _crc32c_table(), 0xFFFFFFFF
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file (uint64 length, uint32 masked CRC of the length, data,
    uint32 masked CRC of the data), streamed. The length CRC is checked; the data CRC is not (a
    pure-Python CRC of every 12 kB record would be slow, and the PNG inside carries its own CRCs
    and zlib checksum, which the decoder checks)."""
    with open(path, "rb") as f:
        i = 0
        while head := f.read(12):
            if len(head) < 12:
                raise DataError(f"{path}: truncated TFRecord file (record {i} header)")
            (length,), len_crc = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])[0]
            if masked_crc32c(head[:8]) != len_crc:
                raise DataError(f"{path}: not a TFRecord file or corrupt (bad length CRC at record {i})")
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                raise DataError(f"{path}: truncated TFRecord file (record {i})")
            yield data
            i += 1


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a serialized protobuf message; length-delimited
    values are bytes, varints ints; fixed 32/64-bit values are returned as bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 1:
            v, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            v, i = buf[i : i + n], i + n
        elif wire == 5:
            v, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, v


def _feature_values(feature: bytes) -> list[Any]:
    """The values of a serialized tf.train.Feature: bytes (bytes_list = 1), floats (float_list =
    2, packed or not) or ints (int64_list = 3, packed or not; two's complement for negatives)."""
    out: list[Any] = []
    for kind, wire, lst in _proto_fields(feature):
        if wire != 2:
            continue
        for f, w, v in _proto_fields(lst):
            if f != 1:
                continue
            if kind == 1 and w == 2:
                out.append(v)
            elif kind == 2:
                raw = v if w == 2 else v if w == 5 else b""
                out += list(struct.unpack(f"<{len(raw) // 4}f", raw))
            elif kind == 3:
                if w == 0:
                    ints = [v]
                elif w == 2:
                    ints, j = [], 0
                    while j < len(v):
                        x, j = _varint(v, j)
                        ints.append(x)
                else:
                    continue
                out += [x - (1 << 64) if x >= 1 << 63 else x for x in ints]
    return out


def example_features(example: bytes) -> dict[str, list[Any]]:
    """Every feature of a serialized tf.train.Example: name -> values (bytes, floats or ints).

    Example{features=1: Features{feature=1: map<string, Feature>}}; Feature{bytes_list=1 |
    float_list=2 | int64_list=3: {value=1: repeated}}. ValueError for a malformed message."""
    out: dict[str, list[Any]] = {}
    for f1, w1, features in _proto_fields(example):
        if f1 != 1 or w1 != 2:
            continue
        for f2, w2, entry in _proto_fields(features):
            if f2 != 1 or w2 != 2:
                continue
            name, feature = None, b""
            for f3, w3, v in _proto_fields(entry):
                if w3 == 2 and f3 == 1:
                    name = v
                elif w3 == 2 and f3 == 2:
                    feature = v
            if name is not None:
                out[name.decode("utf-8", "replace")] = _feature_values(feature)
    return out


def example_bytes_feature(example: bytes, key: str) -> list[bytes]:
    """The bytes_list values of feature ``key`` of a serialized tf.train.Example ([] if absent)."""
    return [v for v in example_features(example).get(key, []) if isinstance(v, bytes)]


def find_tfds_dir(source: Path, pattern: str, depth: int = 3) -> Path | None:
    """The folder holding TFDS shards matching ``pattern`` (e.g. ``pg19-train.tfrecord-*``):
    ``source`` or up to ``depth`` levels below it (``<name>/<config>/<version>/``); the last in
    sorted order (the newest version) if several."""
    for d in range(depth + 1):
        hits = sorted({p.parent for p in Path(source).glob("/".join(["*"] * d + [pattern]))})
        if hits:
            return hits[-1]
    return None
