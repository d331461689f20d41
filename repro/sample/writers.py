"""Sample writers: what a section's ``write_samples`` turns generated tokens into.

* :func:`write_grid`: images (H x W x 3 uint8) as one PNG grid, with optional captions (ImageNet 64x64);
* :func:`write_midi`: performance events (``repro.data.midi_events.PerformanceEncoding``) as a .mid file;
* :func:`piano_roll_png`: notes or events as a piano-roll PNG (MAESTRO).

Every file is written atomically (a temporary file in the target folder, then a rename).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pretty_midi
from PIL import Image, ImageDraw, ImageFont

from repro.data.midi_events import PerformanceEncoding

CHANNELS = 3  # RGB


# -- image grids --------------------------------------------------------------------------------


def write_grid(
    path: Path,
    images: list[np.ndarray],
    ncols: int,
    scale: int = 4,
    captions: list[str] | None = None,
    pad: int = 2,
) -> Path:
    """Write images (H x W x 3 uint8, any sizes) as one PNG grid, each nearest-neighbour upscaled
    by ``scale``, with an optional caption under each; atomically (temp file + os.replace)."""
    if not images:
        raise ValueError("write_grid: no images")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"write_grid: {len(captions)} captions for {len(images)} images")
    imgs = [np.asarray(im, np.uint8) for im in images]
    for im in imgs:
        if im.ndim != 3 or im.shape[2] != CHANNELS:
            raise ValueError(f"write_grid: image of shape {im.shape}, expected (H, W, 3)")
    ncols = max(1, min(ncols, len(imgs)))
    nrows = math.ceil(len(imgs) / ncols)
    cell_h = max(im.shape[0] for im in imgs) * scale
    cell_w = max(im.shape[1] for im in imgs) * scale
    font = ImageFont.load_default() if captions else None
    cap_h = 0
    if captions:
        box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "Ag", font=font)
        cap_h = box[3] - box[1] + 4
    W = ncols * cell_w + (ncols + 1) * pad
    H = nrows * (cell_h + cap_h) + (nrows + 1) * pad
    grid = Image.new("RGB", (W, H), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    for k, im in enumerate(imgs):
        r, c = divmod(k, ncols)
        x, y = pad + c * (cell_w + pad), pad + r * (cell_h + cap_h + pad)
        big = np.repeat(np.repeat(im, scale, axis=0), scale, axis=1)
        grid.paste(Image.fromarray(big, "RGB"), (x, y))
        if captions:
            text = str(captions[k])
            while text and draw.textlength(text, font=font) > cell_w:
                text = text[:-1]
            draw.text((x, y + cell_h + 1), text, fill=(230, 230, 230), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        grid.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- MIDI and piano rolls -----------------------------------------------------------------------


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    """Write through a temporary file in the target folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is for the temporary file, not the result
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _as_midi(ids_or_midi, encoding: PerformanceEncoding | None) -> pretty_midi.PrettyMIDI:
    if isinstance(ids_or_midi, pretty_midi.PrettyMIDI):
        return ids_or_midi
    if encoding is None:
        raise ValueError("event ids need their PerformanceEncoding")
    return encoding.decode(ids_or_midi)


def write_midi(path, ids, encoding: PerformanceEncoding) -> Path:
    """Decode content ids (or take a PrettyMIDI) and write a .mid file atomically."""
    pm = _as_midi(ids, encoding)
    return _atomic(Path(path), lambda tmp: pm.write(tmp))


_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def piano_roll_png(path, ids_or_midi, encoding: PerformanceEncoding | None = None, title: str | None = None) -> Path:
    """A piano roll (pitch vs seconds, one bar per note, velocity as colour) as a PNG, written
    atomically. Uses matplotlib's Agg canvas directly (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    pm = _as_midi(ids_or_midi, encoding)
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    end = max((n.end for n in notes), default=1.0)
    lo = min((n.pitch for n in notes), default=60) - 2
    hi = max((n.pitch for n in notes), default=72) + 2
    fig = Figure(figsize=(min(max(6.0, end / 4), 24.0), 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    norm = Normalize(1, 127)
    rects = [Rectangle((n.start, n.pitch - 0.4), n.end - n.start, 0.8) for n in notes]
    coll = PatchCollection(rects, cmap="viridis", norm=norm, edgecolor="none")
    coll.set_array(np.array([n.velocity for n in notes], float))
    ax.add_collection(coll)
    ax.set_xlim(0, end * 1.01)
    ax.set_ylim(lo, hi)
    cs = [p for p in range(lo, hi + 1) if p % 12 == 0]
    ax.set_yticks(cs, [f"C{p // 12 - 1}" for p in cs])
    ax.set_yticks(range(lo, hi + 1), minor=True)
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch (C4 = MIDI 60)")
    ax.set_title(title or f"{len(notes)} notes, {end:.1f} s")
    fig.colorbar(coll, ax=ax, label="velocity", pad=0.01)
    fig.tight_layout()
    return _atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
