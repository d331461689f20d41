"""A minimal reader of R's XDR serialization (RDS files, lazy-load databases), without R.

Enough for the data files of R packages (the PG-19 demo reads Jane Austen's novels from
``janeaustenr``'s lazy-load database): vectors (character, integer, logical, double, list),
their attributes, symbols and references to them, compressed with gzip, bzip2 or xz.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from repro.data.source import DataError


@dataclass
class RValue:
    """An R vector: ``kind`` (character, integer, logical, double, list), values, attributes."""

    kind: str
    values: list[Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str] | None:
        n = self.attributes.get("names")
        return n.values if isinstance(n, RValue) else None


_VECTOR_KINDS = {10: "logical", 13: "integer", 14: "double", 16: "character", 19: "list", 20: "list"}
_SINGLETONS = {254, 253, 252, 251, 250, 249, 248, 247, 242, 241}  # NILVALUE, envs, MISSINGARG, ...


class _RReader:
    """Reads the subset of R serialization format 2/3 (XDR) that data files use: vectors,
    character strings, pairlists (attributes), symbols and references to them."""

    def __init__(self, data: bytes, label: str):
        self.b, self.p, self.label, self.refs = data, 0, label, []

    def _int(self) -> int:
        if self.p + 4 > len(self.b):
            raise DataError(f"{self.label}: truncated R data")
        (v,) = struct.unpack_from(">i", self.b, self.p)
        self.p += 4
        return v

    def _bytes(self, n: int) -> bytes:
        if n < 0 or self.p + n > len(self.b):
            raise DataError(f"{self.label}: truncated R data")
        v = self.b[self.p : self.p + n]
        self.p += n
        return v

    def top(self) -> Any:
        if self._bytes(2) != b"X\n":
            raise DataError(f"{self.label}: not R XDR serialization data")
        version = self._int()
        self._int(), self._int()  # writer R version, minimal reader version
        if version == 3:
            self._bytes(self._int())  # native encoding name
        elif version != 2:
            raise DataError(f"{self.label}: unsupported R serialization version {version}")
        return self._item()

    def _item(self) -> Any:
        flags = self._int()
        t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if t in _SINGLETONS:
            return None
        if t == 255:  # REFSXP: index in the upper bits (or the next int when 0)
            i = flags >> 8 or self._int()
            return self.refs[i - 1]
        if t == 1:  # SYMSXP: its name (a CHARSXP), remembered for later references
            name = self._item()
            self.refs.append(name)
            return name
        if t in (2, 6):  # LISTSXP / LANGSXP: (attributes) (tag) car cdr
            if has_attr:
                self._item()
            tag = self._item() if has_tag else None
            out = [(tag, self._item())]
            rest = self._item()
            return out + (rest if isinstance(rest, list) else [])
        if t == 9:  # CHARSXP: length (-1 = NA) and bytes; encoding in the levels bits
            n = self._int()
            if n == -1:
                return None
            raw = self._bytes(n)
            return raw.decode("latin-1" if (flags >> 12) & 4 else "utf-8", errors="replace")
        if t in _VECTOR_KINDS:
            n = self._int()
            if n == -1:  # long vector: 64-bit length as two ints
                n = (self._int() << 32) + self._int()
            if t in (16, 19, 20):
                values = [self._item() for _ in range(n)]
            elif t == 14:
                values = list(struct.unpack(f">{n}d", self._bytes(8 * n)))
            else:
                values = list(struct.unpack(f">{n}i", self._bytes(4 * n)))
            attrs = {}
            if has_attr:
                for tag, value in self._item() or []:
                    attrs[str(tag)] = value
            return RValue(_VECTOR_KINDS[t], values, attrs)
        raise DataError(f"{self.label}: unsupported R object type {t} in serialized data")


def _decompress(data: bytes, label: str) -> bytes:
    """gzip / bzip2 / xz / uncompressed R data, by magic number."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def read_rds(data: bytes, label: str = "RDS data") -> Any:
    """The object of an ``.rds`` file's bytes (or of a plain serialization)."""
    try:
        return _RReader(_decompress(data, label), label).top()
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise DataError(f"{label}: cannot decompress R data ({e})") from None


def read_lazyload_db(rdx: bytes, rdb: bytes, label: str) -> dict[str, Any]:
    """Every object of an R lazy-load database (``<name>.rdx`` index + ``<name>.rdb`` blobs):
    the index lists each variable's (offset, length) in the .rdb; each blob is a 4-byte
    big-endian uncompressed length and the compressed serialization (zlib, or for compression
    types 2/3 a type byte: '0' none, 'Z' zlib, '2' bzip2, 'X' xz)."""
    index = read_rds(rdx, label + ".rdx")
    if not isinstance(index, RValue) or index.kind != "list" or not index.names:
        raise DataError(f"{label}.rdx: not a lazy-load index")
    parts = dict(zip(index.names, index.values, strict=True))
    variables, compressed = parts.get("variables"), parts.get("compressed")
    if not isinstance(variables, RValue) or not variables.names:
        raise DataError(f"{label}.rdx: lazy-load index without variables")
    ctype = int(compressed.values[0]) if isinstance(compressed, RValue) and compressed.values else 1
    out = {}
    for name, loc in zip(variables.names, variables.values, strict=True):
        off, length = (int(v) for v in loc.values)
        blob = rdb[off : off + length]
        if len(blob) != length or length < 5:
            raise DataError(f"{label}.rdb: entry '{name}' lies outside the file")
        (size,) = struct.unpack(">I", blob[:4])
        body = blob[4:]
        try:
            if ctype in (2, 3):
                kind, body = body[:1], body[1:]
                raw = {b"0": lambda x: x, b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress}[kind](
                    body
                )
            else:
                raw = zlib.decompress(body)
        except (KeyError, OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            raise DataError(f"{label}.rdb: cannot decompress entry '{name}' ({e})") from None
        if len(raw) != size:
            raise DataError(f"{label}.rdb: entry '{name}' has {len(raw)} bytes, expected {size}")
        out[name] = _RReader(raw, f"{label}.rdb:{name}").top()
    return out
