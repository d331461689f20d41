#!/usr/bin/env bash
# Fetch the Debian package the PG-19 demo reads (Jane Austen's novels, r-cran-janeaustenr) once,
# into DEST (default: $VENV/share/repro-demo, VENV defaulting to .venv), where repro/data/demos/pg19.py
# looks for it. Idempotent: does nothing when a .deb is already there. Never fails the setup: without
# apt-get or a reachable Debian mirror it says so, and the PG-19 demo (and its test) is unavailable.
set -uo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-${VENV:-.venv}/share/repro-demo}"
PKG=r-cran-janeaustenr

if compgen -G "$DEST/${PKG}_*.deb" >/dev/null; then
  echo "demo sources: $(basename "$(compgen -G "$DEST/${PKG}_*.deb" | tail -1)") already in $DEST"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "demo sources: apt-get not found; the PG-19 demo needs Debian's $PKG .deb in $DEST (skipped)"
  exit 0
fi
mkdir -p "$DEST"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
download() { (cd "$tmp" && apt-get download -q "$PKG" >/dev/null 2>&1); }
if ! download; then
  # the package lists may be missing or stale: refresh them (needs root) and try once more
  apt-get update -qq >/dev/null 2>&1
  if ! download; then
    echo "demo sources: 'apt-get download $PKG' failed (run 'apt-get update' as root, or put the .deb in $DEST);" \
      "the PG-19 demo is unavailable"
    exit 0
  fi
fi
mv "$tmp"/${PKG}_*.deb "$DEST"/
echo "demo sources: fetched $(basename "$(compgen -G "$DEST/${PKG}_*.deb" | tail -1)") into $DEST"
