"""Files of a Debian package (``.deb``) read without dpkg: the ``ar`` container's
``data.tar.{xz,gz,bz2}`` member, then the wanted files in it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from repro.data.source import DataError


def deb_members(deb: Path, wanted: set[str]) -> dict[str, bytes]:
    """Files of a Debian package's data archive (``ar`` container, ``data.tar.{xz,gz,bz2}``)."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise DataError(f"{deb}: not a Debian package (no ar header)")
    p, data = 8, None
    while p + 60 <= len(blob):
        name = blob[p : p + 16].decode("ascii", "replace").strip().rstrip("/")
        size = int(blob[p + 48 : p + 58].decode("ascii").strip())
        if name.startswith("data.tar"):
            data = blob[p + 60 : p + 60 + size]
            break
        p += 60 + size + (size & 1)
    if data is None:
        raise DataError(f"{deb}: no data.tar member")
    found = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for m in tar.getmembers():
                n = m.name.lstrip("./")
                if n in wanted and m.isfile():
                    found[n] = tar.extractfile(m).read()  # type: ignore[union-attr]
    except tarfile.TarError as e:
        raise DataError(f"{deb}: cannot read its data archive ({e})") from None
    missing = wanted - set(found)
    if missing:
        raise DataError(f"{deb}: missing {', '.join(sorted(missing))}")
    return found
