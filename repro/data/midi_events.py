"""Magenta's performance-event encoding of piano MIDI (Music Transformer; magenta ``score2perf``).

What ``score2perf_maestro_language_uncropped_aug`` + note-seq do to a MIDI file, replicated on
``pretty_midi`` (no note-seq / TensorFlow dependency):

1. Read every instrument's notes and CC64 (sustain) changes, in file order (``midi_io``).
2. Drop notes outside ``[min_pitch, max_pitch]`` (``datagen_beam.filter_invalid_notes``).
3. Apply the sustain pedal per instrument (``sequences_lib.apply_sustain_control_changes``, see
   :func:`apply_sustain`): a note released while the pedal is down (CC64 >= 64) lasts until the
   pedal is released, or until the same pitch is struck again under the pedal; a re-struck note
   whose shortened length is zero is deleted.
4. Quantise absolute times at ``steps_per_second`` (100: 10 ms): ``step = int(t * sps + 0.5)``; a
   note whose end step equals its start step gets one step (``quantize_note_sequence_absolute``).
5. Events (``performance_lib.BasePerformance._from_quantized_sequence``): notes sorted by
   (start time, pitch) give note indices; onsets and offsets are sorted by (step, note index,
   is_offset) -- so at equal steps the order is by note index, *not* "offsets first"; a note's
   onset precedes its own offset. Before an event at a later step: TIME_SHIFT events of at most
   ``max_shift_steps`` (longer gaps: several, the last one the remainder). Before a NOTE_ON whose
   velocity bin differs from the current one: VELOCITY(bin), bin = (velocity - 1) // 4 + 1 for
   32 bins (the current bin starts unset, so the first NOTE_ON always gets one).
6. Ids (``PerformanceOneHotEncoding``): NOTE_ON(min..max pitch), NOTE_OFF(min..max),
   TIME_SHIFT(1..max_shift_steps), VELOCITY(1..bins). Pitches 21-108: 88 + 88 + 100 + 32 = 308
   events (Magenta's code; it adds PAD and EOS: 310); 0-127: 388 events (the Music Transformer
   paper). On MAESTRO, whose notes all lie in 21-108, both give the same events up to an id
   offset. Perceiver AR adds its own reserved ids (PAD, EOS, SOS): 311 / 391 tokens.

Decoding (``Performance.to_sequence``): NOTE_OFF ends the earliest open NOTE_ON of its pitch,
zero-length notes are dropped, notes still open at the end end at the last step, a NOTE_ON before
any VELOCITY gets velocity 100, and bin b decodes to velocity ``1 + (b - 1) * 4``. One addition:
onsets that share a step are spread by 0.25 ms in event order, so that re-encoding (which orders
them by exact start time) gives the same events: encode(decode(ids)) == ids for encoder output.

Deviations: drum-channel notes are dropped (note-seq keeps them in the performance; MAESTRO has
none, and a drum "pitch" is not a piano key); note identity in the sustain pass is by object
(note-seq compares protobufs by value, which differs only for exact duplicate notes).

Augmentation (Music Transformer; train split only, off by default): transposition by up to +-3
semitones and time stretch 0.95-1.05 (Magenta: the 5 x 7 grid {0.95, 0.975, 1, 1.025, 1.05} x
{-3..3}; an example that a transposition pushes out of the pitch range is dropped). :func:`augment`
works on notes before encoding, :func:`augment_events` on a stored event sequence (or a training
crop of one), so a batch can stay a pure function of (seed, step).
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pretty_midi

from repro.data.source import Tokenizer

SUSTAIN_CC = 64
_SUSTAIN_ON, _SUSTAIN_OFF, _NOTE_ON, _NOTE_OFF = 0, 1, 2, 3  # note-seq's processing order at equal times
DEFAULT_VELOCITY = 100  # note-seq Performance.to_sequence(velocity=100) before any VELOCITY event
ONSET_SPACING, ONSET_SPACED = 0.025, 16  # decoding: onset k of a step is min(k, 16) * 0.025 steps late
DECODE_RESOLUTION = 3840  # ticks per quarter of decoded MIDI (120 bpm)


@dataclass(frozen=True)
class Note:
    """One note, times in seconds. ``instrument``: index of its pretty_midi instrument (sustain is
    applied per instrument)."""

    start: float
    end: float
    pitch: int
    velocity: int
    instrument: int = 0
    is_drum: bool = False


def load_midi(src) -> pretty_midi.PrettyMIDI:
    """A PrettyMIDI from a path, raw bytes or a PrettyMIDI (returned as is). pretty_midi's errors
    propagate (callers turn them into a skip or a one-line error)."""
    if isinstance(src, pretty_midi.PrettyMIDI):
        return src
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "tempo events on non-zero tracks": harmless here
        if isinstance(src, bytes | bytearray):
            return pretty_midi.PrettyMIDI(io.BytesIO(bytes(src)))
        return pretty_midi.PrettyMIDI(str(src))


def midi_notes_and_pedals(pm) -> tuple[list[Note], list[tuple[float, int, int]]]:
    """All notes (instrument by instrument, each in pretty_midi's order, as note-seq's ``midi_io``)
    and all CC64 changes as (time, instrument, value)."""
    notes, pedals = [], []
    for i, inst in enumerate(pm.instruments):
        notes += [
            Note(float(n.start), float(n.end), int(n.pitch), int(n.velocity), i, inst.is_drum) for n in inst.notes
        ]
        pedals += [(float(c.time), i, int(c.value)) for c in inst.control_changes if c.number == SUSTAIN_CC]
    return notes, pedals


def apply_sustain(notes: Sequence[Note], pedals: Iterable[tuple[float, int, int]]) -> list[Note]:
    """note-seq's ``apply_sustain_control_changes``, step for step.

    Events (note onsets, note offsets, pedal changes) are processed in (time, kind) order with
    pedal-down < pedal-up < note-on < note-off at equal times (ties keep note order). Per
    instrument: pedal down (CC64 >= 64) marks it sustained; a note-off while sustained leaves the
    note active; a note-on while sustained ends every active note of the same pitch at this time
    (deleting one whose length becomes zero); pedal up ends every active note whose own end has
    passed at this time (notes still held keep sounding). Notes still active after the last event
    end at the time of the last event. Drum notes take no part.
    """
    ends = [n.end for n in notes]
    alive = [True] * len(notes)
    events = [(n.start, _NOTE_ON, i) for i, n in enumerate(notes) if not n.is_drum]
    events += [(n.end, _NOTE_OFF, i) for i, n in enumerate(notes) if not n.is_drum]
    events += [(t, _SUSTAIN_ON if v >= 64 else _SUSTAIN_OFF, inst) for t, inst, v in pedals]
    events.sort(key=lambda e: (e[0], e[1]))  # stable: ties keep the insertion order, as note-seq
    active: dict[int, list[int]] = defaultdict(list)
    sustained: dict[int, bool] = defaultdict(bool)
    time = 0.0
    for time, kind, x in events:
        if kind == _SUSTAIN_ON:
            sustained[x] = True
        elif kind == _SUSTAIN_OFF:
            sustained[x] = False
            still = []
            for i in active[x]:
                if ends[i] < time:  # released earlier, held by the pedal until now
                    ends[i] = time
                else:  # the key itself is still down
                    still.append(i)
            active[x] = still
        elif kind == _NOTE_ON:
            inst = notes[x].instrument
            if sustained[inst]:
                still = []
                for i in active[inst]:
                    if notes[i].pitch == notes[x].pitch:
                        ends[i] = time
                        if notes[i].start == ends[i]:
                            alive[i] = False
                    else:
                        still.append(i)
                active[inst] = still
            active[inst].append(x)
        else:  # _NOTE_OFF
            inst = notes[x].instrument
            if not sustained[inst] and x in active[inst]:
                active[inst].remove(x)
    for held in active.values():
        for i in held:
            ends[i] = time
    return [replace(n, end=ends[i]) for i, n in enumerate(notes) if alive[i]]


def _step(seconds: float, steps_per_second: int) -> int:
    """note-seq ``quantize_to_step`` with its cutoff 0.5."""
    return int(seconds * steps_per_second + 0.5)


_NAME_RE = re.compile(r"^(NOTE_ON|NOTE_OFF|TIME_SHIFT|VELOCITY)\((\d+)\)$")


class PerformanceEncoding(Tokenizer):
    """Magenta's performance events as content ids 0..num_events-1 (see the module docstring).

    Layout: NOTE_ON pitches [0, P), NOTE_OFF [P, 2P), TIME_SHIFT(1..S) [2P, 2P+S),
    VELOCITY(1..B) [2P+S, 2P+S+B), with P = max_pitch - min_pitch + 1, S = max_shift_steps,
    B = velocity_bins. ``identity`` e.g. "performance:21-108:100sps:32vel" (":<S>shift" appended
    when S differs from steps_per_second), parsed back by :meth:`from_identity`.
    """

    def __init__(
        self,
        min_pitch: int = 21,
        max_pitch: int = 108,
        steps_per_second: int = 100,
        max_shift_steps: int | None = None,
        velocity_bins: int = 32,
    ):
        max_shift_steps = steps_per_second if max_shift_steps is None else max_shift_steps
        if not 0 <= min_pitch <= max_pitch <= 127:
            raise ValueError(f"pitch range {min_pitch}-{max_pitch} must satisfy 0 <= min_pitch <= max_pitch <= 127")
        if steps_per_second < 1 or max_shift_steps < 1:
            raise ValueError(f"steps_per_second={steps_per_second} and max_shift_steps={max_shift_steps} must be >= 1")
        if not 1 <= velocity_bins <= 127:
            raise ValueError(f"velocity_bins={velocity_bins} must be in 1..127")
        self.min_pitch, self.max_pitch = int(min_pitch), int(max_pitch)
        self.steps_per_second, self.max_shift_steps = int(steps_per_second), int(max_shift_steps)
        self.velocity_bins = int(velocity_bins)
        self.num_pitches = self.max_pitch - self.min_pitch + 1
        self.note_off_offset = self.num_pitches
        self.time_shift_offset = 2 * self.num_pitches
        self.velocity_offset = self.time_shift_offset + self.max_shift_steps
        self.num_events = self.velocity_offset + self.velocity_bins
        self.vocab_size = self.num_events
        self.bin_size = math.ceil(127 / self.velocity_bins)  # note-seq _velocity_bin_size
        shift = "" if self.max_shift_steps == self.steps_per_second else f":{self.max_shift_steps}shift"
        sps = f"{self.min_pitch}-{self.max_pitch}:{self.steps_per_second}sps:{self.velocity_bins}vel"
        self.identity = f"performance:{sps}{shift}"

    _IDENTITY_RE = re.compile(r"^performance:(\d+)-(\d+):(\d+)sps:(\d+)vel(?::(\d+)shift)?$")

    @classmethod
    def from_identity(cls, identity: str) -> PerformanceEncoding:
        m = cls._IDENTITY_RE.match(identity)
        if not m:
            raise ValueError(
                f"'{identity}' is not a performance-encoding identity (e.g. performance:21-108:100sps:32vel)"
            )
        lo, hi, sps, vel, shift = m.groups()
        return cls(int(lo), int(hi), int(sps), int(shift) if shift else None, int(vel))

    def __eq__(self, other) -> bool:
        return isinstance(other, PerformanceEncoding) and other.identity == self.identity

    def __hash__(self) -> int:
        return hash(self.identity)

    def __repr__(self) -> str:
        return f"PerformanceEncoding('{self.identity}', {self.num_events} events)"

    # -- single events ------------------------------------------------------------------------

    def velocity_to_bin(self, velocity: int) -> int:
        return (int(velocity) - 1) // self.bin_size + 1

    def bin_to_velocity(self, b: int) -> int:
        return 1 + (int(b) - 1) * self.bin_size

    def note_on(self, pitch: int) -> int:
        return pitch - self.min_pitch

    def note_off(self, pitch: int) -> int:
        return self.note_off_offset + pitch - self.min_pitch

    def time_shift(self, steps: int) -> int:
        return self.time_shift_offset + steps - 1

    def velocity(self, b: int) -> int:
        return self.velocity_offset + b - 1

    def event(self, i: int) -> tuple[str, int]:
        """(kind, value) of content id ``i``; ValueError outside the vocabulary."""
        i = int(i)
        if not 0 <= i < self.num_events:
            raise ValueError(f"event id {i} is outside 0..{self.num_events - 1} ({self.identity})")
        if i < self.note_off_offset:
            return "NOTE_ON", i + self.min_pitch
        if i < self.time_shift_offset:
            return "NOTE_OFF", i - self.note_off_offset + self.min_pitch
        if i < self.velocity_offset:
            return "TIME_SHIFT", i - self.time_shift_offset + 1
        return "VELOCITY", i - self.velocity_offset + 1

    def event_names(self, ids: Iterable[int]) -> list[str]:
        """Readable names, e.g. ["VELOCITY(23)", "NOTE_ON(60)", "TIME_SHIFT(50)", "NOTE_OFF(60)"]."""
        return ["{}({})".format(*self.event(i)) for i in ids]

    def ids_from_names(self, names: Iterable[str]) -> np.ndarray:
        """Inverse of :meth:`event_names` (tests write expected events by name)."""
        make = {"NOTE_ON": self.note_on, "NOTE_OFF": self.note_off, "TIME_SHIFT": self.time_shift}
        make["VELOCITY"] = self.velocity
        out = []
        for name in names:
            m = _NAME_RE.match(name.strip())
            if not m:
                raise ValueError(f"'{name}' is not an event name like NOTE_ON(60)")
            i = make[m.group(1)](int(m.group(2)))
            if self.event(i) != (m.group(1), int(m.group(2))):
                raise ValueError(f"event {name} is outside {self.identity}")
            out.append(i)
        return np.asarray(out, np.int32)

    # -- MIDI -> events -----------------------------------------------------------------------

    def notes_from_midi(self, src) -> list[Note]:
        """Steps 1-3: the notes the encoder sees (in range, sustain applied, no drums), in file
        order. ``src``: path, bytes or PrettyMIDI."""
        notes, pedals = midi_notes_and_pedals(load_midi(src))
        notes = [n for n in notes if self.min_pitch <= n.pitch <= self.max_pitch]
        return [n for n in apply_sustain(notes, pedals) if not n.is_drum]

    def encode_midi(self, src) -> np.ndarray:
        """A MIDI file (path, bytes or PrettyMIDI) -> int32 content ids."""
        return self.encode_notes(self.notes_from_midi(src))

    def encode(self, data) -> np.ndarray:
        """The tokenizer interface's encode: a MIDI file (path, bytes or PrettyMIDI, what
        :meth:`decode` returns) -> int32 content ids (:meth:`encode_midi`)."""
        return self.encode_midi(data)

    def encode_notes(self, notes: Sequence[Note]) -> np.ndarray:
        """Steps 4-6 on notes (already in range and sustained; order breaks exact ties)."""
        bad = [n.pitch for n in notes if not self.min_pitch <= n.pitch <= self.max_pitch]
        if bad:
            raise ValueError(f"pitch {bad[0]} is outside {self.min_pitch}-{self.max_pitch}")
        order = sorted(range(len(notes)), key=lambda i: (notes[i].start, notes[i].pitch))  # stable
        sps = self.steps_per_second
        on = np.empty(len(notes), np.int64)
        off = np.empty(len(notes), np.int64)
        for k, i in enumerate(order):
            s, e = _step(notes[i].start, sps), _step(notes[i].end, sps)
            if s < 0 or e < 0:
                raise ValueError(f"note at {notes[i].start:.3f}s has a negative time")
            on[k], off[k] = s, (e + 1 if e == s else e)
        pitches = np.array([notes[i].pitch for i in order], np.int64)
        bins = np.array([self.velocity_to_bin(notes[i].velocity) for i in order], np.int64)
        return self._emit(on, off, pitches, bins)

    def _emit(self, on, off, pitches, bins, end_step: int | None = None, trailing_bin: int | None = None) -> np.ndarray:
        """Events of notes given in note-index order: ``on``/``off`` steps (-1: no such event, for a
        crop's notes cut at its edges), velocity ``bins`` (0: unknown, no VELOCITY event)."""
        evs = [(int(s), k, 0) for k, s in enumerate(on) if s >= 0] + [
            (int(s), k, 1) for k, s in enumerate(off) if s >= 0
        ]
        evs.sort()
        out: list[int] = []
        cur_step, cur_bin = 0, 0

        def shift_to(step: int) -> None:
            nonlocal cur_step
            while step > cur_step + self.max_shift_steps:
                out.append(self.time_shift(self.max_shift_steps))
                cur_step += self.max_shift_steps
            if step > cur_step:
                out.append(self.time_shift(step - cur_step))
                cur_step = step

        for step, k, is_off in evs:
            shift_to(step)
            if is_off:
                out.append(self.note_off(int(pitches[k])))
                continue
            if bins[k] and bins[k] != cur_bin:
                cur_bin = int(bins[k])
                out.append(self.velocity(cur_bin))
            out.append(self.note_on(int(pitches[k])))
        if end_step is not None:
            shift_to(end_step)
        if trailing_bin and trailing_bin != cur_bin:
            out.append(self.velocity(trailing_bin))
        return np.asarray(out, np.int32)

    # -- events -> notes / MIDI ---------------------------------------------------------------

    def decode_notes(self, ids: Iterable[int]) -> list[Note]:
        """Events -> notes as note-seq ``Performance.to_sequence``, times = steps / sps, except
        that the k-th onset within one step starts k * 0.025 steps (0.25 ms) late (k <= 16):
        the encoder orders the onsets of a step by their exact start times, which quantised
        times would lose (it would fall back to pitch order), so with this encode(decode(ids))
        == ids for every encoder output, also through a MIDI file written by ``repro.sample.writers.write_midi``."""
        sps = self.steps_per_second
        open_: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
        notes: list[Note] = []
        step, vel, k = 0, DEFAULT_VELOCITY, 0
        for i in ids:
            kind, v = self.event(i)
            if kind == "NOTE_ON":
                open_[v].append(((step + min(k, ONSET_SPACED) * ONSET_SPACING) / sps, step, vel))
                k += 1
            elif kind == "NOTE_OFF":
                if open_[v]:
                    t, s, ve = open_[v].pop(0)
                    if step > s:
                        notes.append(Note(t, step / sps, v, ve))
            elif kind == "TIME_SHIFT":
                step, k = step + v, 0
            else:
                vel = self.bin_to_velocity(v)
        for p, starts in open_.items():
            notes += [Note(t, step / sps, p, ve) for t, s, ve in starts if step > s]
        return notes

    def decode(self, content: Iterable[int]) -> pretty_midi.PrettyMIDI:
        """Content ids -> a ``pretty_midi.PrettyMIDI`` of piano (program 0) notes.

        One track, plus an extra piano track for each level of overlapping same-pitch notes
        (which one MIDI channel cannot hold; a solo piano never has them, a model sample or a
        multi-voice score can). 3840 ticks/quarter at 120 bpm = 130 us ticks, fine enough to keep
        the onset order of :meth:`decode_notes` in a file; files up to 21 minutes stay under
        pretty_midi's 1e7-tick read limit.
        """
        pm = pretty_midi.PrettyMIDI(resolution=DECODE_RESOLUTION, initial_tempo=120.0)
        ends: list[dict[int, float]] = []
        for n in sorted(self.decode_notes(content), key=lambda n: (n.start, n.pitch)):
            j = next((j for j, e in enumerate(ends) if e.get(n.pitch, -1.0) <= n.start), len(ends))
            if j == len(ends):
                ends.append({})
                pm.instruments.append(pretty_midi.Instrument(program=0, name="piano" if j == 0 else f"piano {j + 1}"))
            ends[j][n.pitch] = n.end
            pm.instruments[j].notes.append(pretty_midi.Note(n.velocity, n.pitch, n.start, n.end))
        if not pm.instruments:
            pm.instruments.append(pretty_midi.Instrument(program=0, name="piano"))
        return pm

    def total_steps(self, ids: Iterable[int]) -> int:
        """Sum of the TIME_SHIFT steps."""
        ids = np.asarray(list(ids), np.int64)
        ts = (ids >= self.time_shift_offset) & (ids < self.velocity_offset)
        return int((ids[ts] - self.time_shift_offset + 1).sum())


# -- augmentation -------------------------------------------------------------------------------


def _stretch_choices(stretch_range: tuple[float, float], stretch_steps: int) -> np.ndarray | None:
    lo, hi = stretch_range
    if not 0 < lo <= hi:
        raise ValueError(f"stretch_range {stretch_range} must satisfy 0 < low <= high")
    return np.linspace(lo, hi, stretch_steps) if stretch_steps > 1 else None


def _sample(
    rng: np.random.Generator,
    pitches: np.ndarray,
    enc: PerformanceEncoding,
    transpose_range: int,
    stretch_range: tuple[float, float],
    stretch_steps: int,
) -> tuple[int, float]:
    """A transposition uniform over those in [-R, R] keeping every pitch in range (Magenta drops
    an example pushed out of range, so only these occur), and a stretch uniform over the grid
    (``stretch_steps`` > 1; 5 = Magenta's {0.95, 0.975, 1, 1.025, 1.05}) or the interval."""
    ks = np.arange(-transpose_range, transpose_range + 1)
    if len(pitches):
        ks = ks[(pitches.min() + ks >= enc.min_pitch) & (pitches.max() + ks <= enc.max_pitch)]
    k = int(ks[rng.integers(len(ks))]) if len(ks) else 0
    grid = _stretch_choices(stretch_range, stretch_steps)
    f = float(grid[rng.integers(len(grid))]) if grid is not None else float(rng.uniform(*stretch_range))
    return k, f


def augment(
    midi_or_notes,
    rng: np.random.Generator,
    transpose_range: int = 3,
    stretch_range: tuple[float, float] = (0.95, 1.05),
    *,
    stretch_steps: int = 5,
    encoding: PerformanceEncoding | None = None,
    transpose: int | None = None,
    stretch: float | None = None,
) -> list[Note]:
    """Music Transformer augmentation on notes, before encoding (as Magenta: after the sustain
    pass, stretch then transpose): times x ``stretch``, pitches + ``transpose``; either is drawn
    from ``rng`` when not given (see :func:`_sample`). An explicit transposition drops the notes
    it pushes out of the pitch range. ``midi_or_notes``: notes, or a MIDI path / bytes / PrettyMIDI
    (read with ``encoding.notes_from_midi``). Encode the result with ``encoding.encode_notes``."""
    enc = encoding or PerformanceEncoding()
    notes = list(midi_or_notes) if isinstance(midi_or_notes, list | tuple) else enc.notes_from_midi(midi_or_notes)
    k, f = _sample(rng, np.array([n.pitch for n in notes]), enc, transpose_range, stretch_range, stretch_steps)
    k = k if transpose is None else int(transpose)
    f = f if stretch is None else float(stretch)
    out = [replace(n, start=n.start * f, end=n.end * f, pitch=n.pitch + k) for n in notes]
    return [n for n in out if enc.min_pitch <= n.pitch <= enc.max_pitch]


def _parse_crop(ids: np.ndarray, enc: PerformanceEncoding):
    """An event sequence (or any crop of one) -> notes in note-index order with on/off steps
    (-1 where the crop cut the event off), pitches, velocity bins (0 = unknown), the end step
    when the crop ends with a time shift or a VELOCITY (else None) and a trailing VELOCITY bin.
    Offsets pair with the earliest open onset of their pitch (as decoding); offsets with no onset
    in the crop belong to notes that started before it, so they come first in note order."""
    orphans, notes = [], []  # orphans: (off step, pitch); notes: [on, off, pitch, bin]
    open_: dict[int, list[int]] = defaultdict(list)
    step, cur_bin, trailing, ends_after_notes = 0, 0, 0, False
    for i in ids:
        kind, v = enc.event(i)
        trailing, ends_after_notes = 0, kind in ("TIME_SHIFT", "VELOCITY")
        if kind == "TIME_SHIFT":
            step += v
        elif kind == "VELOCITY":
            cur_bin = trailing = v
        elif kind == "NOTE_ON":
            open_[v].append(len(notes))
            notes.append([step, -1, v, cur_bin])
        elif open_[v]:
            notes[open_[v].pop(0)][1] = step
        else:
            orphans.append((step, v))
    rows = [[-1, s, p, 0] for s, p in orphans] + notes
    arr = np.array(rows, np.int64).reshape(-1, 4)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], (step if ends_after_notes else None), trailing


def augment_events(
    ids,
    encoding: PerformanceEncoding,
    rng: np.random.Generator | None = None,
    *,
    transpose: int | None = None,
    stretch: float | None = None,
    transpose_range: int = 3,
    stretch_range: tuple[float, float] = (0.95, 1.05),
    stretch_steps: int = 5,
) -> np.ndarray:
    """Transpose / time-stretch an encoded event sequence, or a training crop of one, directly.

    The events are read back into notes (keeping notes cut at the crop's edges: an offset with no
    onset, an onset with no offset), pitches shifted by ``transpose`` (notes leaving the range are
    dropped), steps scaled by ``stretch`` (``int(step * f + 0.5)``, a note squeezed to zero steps
    gets one, as the quantiser), and re-emitted with the encoder's ordering and VELOCITY rule.
    With no change it returns the input unchanged (tested), and on a whole document it equals
    encoding the augmented notes up to the rounding of already-quantised times. Values left as
    None are drawn from ``rng`` as :func:`augment` does.
    """
    enc = encoding
    ids = np.asarray(ids, np.int64).ravel()
    on, off, pitches, bins, end, trailing = _parse_crop(ids, enc)
    if transpose is None or stretch is None:
        if rng is None:
            raise ValueError("augment_events needs rng when transpose or stretch is not given")
        k, f = _sample(rng, pitches, enc, transpose_range, stretch_range, stretch_steps)
        transpose = k if transpose is None else transpose
        stretch = f if stretch is None else stretch
    k, f = int(transpose), float(stretch)
    if f <= 0:
        raise ValueError(f"stretch {f} must be > 0")
    pitches = pitches + k
    keep = (pitches >= enc.min_pitch) & (pitches <= enc.max_pitch)
    on, off, pitches, bins = on[keep], off[keep], pitches[keep], bins[keep]
    if f != 1.0:
        scale = lambda s: np.where(s >= 0, (s * f + 0.5).astype(np.int64), -1)
        on2, off2 = scale(on), scale(off)
        squeezed = (on2 >= 0) & (off2 == on2)
        off2[squeezed] += 1
        on, off = on2, off2
        end = None if end is None else int(end * f + 0.5)
    if end is not None:  # a crop ending in silence keeps it (at least up to its last event)
        end = max(end, int(on.max(initial=0)), int(off.max(initial=0)))
    return enc._emit(on, off, pitches, bins, end_step=end, trailing_bin=trailing)
