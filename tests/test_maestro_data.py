"""MAESTRO data: Magenta's performance events (hand-checked event lists), the MAESTRO layouts,
augmentation, audio codes, the music21 demo and the MIDI / piano-roll outputs."""

import csv
import json
import os

import numpy as np
import pretty_midi
import pytest

from repro.config import ConfigError
from repro.data.demos.maestro import build_demo, demo_split
from repro.data.demos.maestro_audio import synthetic_codes
from repro.data.maestro import FORMAT
from repro.data.maestro_audio import FORMAT as AUDIO_FORMAT
from repro.data.maestro_audio import AudioCodes
from repro.data.midi_events import (
    Note,
    PerformanceEncoding,
    apply_sustain,
    augment,
    augment_events,
)
from repro.data.source import DataError, SkipFile, SourceFile
from repro.data.tokens import NUM_RESERVED
from repro.sample.writers import piano_roll_png, write_midi

ENC = PerformanceEncoding()


def midi(*instruments) -> pretty_midi.PrettyMIDI:
    """instruments: (notes [(pitch, velocity, start, end)], pedals [(time, value)], is_drum)."""
    pm = pretty_midi.PrettyMIDI()
    for notes, pedals, *drum in instruments:
        inst = pretty_midi.Instrument(0, is_drum=bool(drum and drum[0]))
        inst.notes = [pretty_midi.Note(v, p, s, e) for p, v, s, e in notes]
        inst.control_changes = [pretty_midi.ControlChange(64, val, t) for t, val in pedals]
        pm.instruments.append(inst)
    return pm


def names(pm, enc=ENC):
    return enc.event_names(enc.encode_midi(pm))


# -- the encoding, event by event ---------------------------------------------------------------


def test_vocabulary_sizes_and_layout():
    assert ENC.num_events == ENC.vocab_size == 88 * 2 + 100 + 32 == 308
    assert ENC.identity == "performance:21-108:100sps:32vel"
    full = PerformanceEncoding(0, 127)
    assert full.num_events == 388 and full.identity == "performance:0-127:100sps:32vel"
    assert ENC.event_names([0, 87, 88, 175, 176, 275, 276, 307]) == [
        "NOTE_ON(21)", "NOTE_ON(108)", "NOTE_OFF(21)", "NOTE_OFF(108)",
        "TIME_SHIFT(1)", "TIME_SHIFT(100)", "VELOCITY(1)", "VELOCITY(32)",
    ]  # fmt: skip
    for e in (ENC, full, PerformanceEncoding(21, 108, 50, 200, 16)):
        assert PerformanceEncoding.from_identity(e.identity) == e
    with pytest.raises(ValueError):
        ENC.event(308)


def test_velocity_bins_as_note_seq():
    assert [ENC.velocity_to_bin(v) for v in (1, 4, 5, 80, 100, 127)] == [1, 1, 2, 20, 25, 32]
    assert [ENC.bin_to_velocity(b) for b in (1, 20, 32)] == [1, 77, 125]


def test_chords_velocity_changes_and_long_gap():
    pm = midi(([(60, 80, 0.0, 0.5), (64, 80, 0.0, 0.5), (67, 40, 0.5, 1.0), (72, 100, 3.5, 4.0)], []))
    assert names(pm) == [
        "VELOCITY(20)", "NOTE_ON(60)", "NOTE_ON(64)", "TIME_SHIFT(50)",
        "NOTE_OFF(60)", "NOTE_OFF(64)", "VELOCITY(10)", "NOTE_ON(67)", "TIME_SHIFT(50)",
        "NOTE_OFF(67)", "TIME_SHIFT(100)", "TIME_SHIFT(100)", "TIME_SHIFT(50)",  # 2.5 s of silence
        "VELOCITY(25)", "NOTE_ON(72)", "TIME_SHIFT(50)", "NOTE_OFF(72)",
    ]  # fmt: skip


def test_order_at_equal_steps_follows_note_index_not_pitch():
    # Onsets in one 10 ms step: by start time (70 at 1 ms before 60 at 3 ms), then pitch; the
    # offsets at one step: by the notes' order (72 started first), not by pitch.
    pm = midi(([(70, 80, 0.001, 0.5), (60, 80, 0.003, 0.3), (72, 80, 0.3, 1.0), (55, 80, 0.5, 1.0)], []))
    assert names(pm) == [
        "VELOCITY(20)", "NOTE_ON(70)", "NOTE_ON(60)", "TIME_SHIFT(30)",
        "NOTE_OFF(60)", "NOTE_ON(72)", "TIME_SHIFT(20)", "NOTE_OFF(70)", "NOTE_ON(55)",
        "TIME_SHIFT(50)", "NOTE_OFF(72)", "NOTE_OFF(55)",
    ]  # fmt: skip


def test_quantisation_rounds_and_gives_short_notes_a_step():
    # 0.004 s -> step 0, 0.005 s -> step 1 (int(t * 100 + 0.5)); a 2 ms note keeps one step.
    pm = midi(([(60, 80, 0.004, 0.005), (62, 80, 0.2, 0.202)], []))
    assert names(pm) == [
        "VELOCITY(20)", "NOTE_ON(60)", "TIME_SHIFT(1)", "NOTE_OFF(60)", "TIME_SHIFT(19)",
        "NOTE_ON(62)", "TIME_SHIFT(1)", "NOTE_OFF(62)",
    ]  # fmt: skip


def test_sustain_pedal_extends_and_restrike_ends_notes():
    # Pedal down 0.2-1.0. 60 released at 0.3 under the pedal, re-struck at 0.7: the first 60
    # ends at 0.7; 64 (released at 0.6) and the second 60 last to the pedal release at 1.0; 67 is
    # still held at the release and keeps its own end.
    notes = [(60, 64, 0.0, 0.3), (64, 64, 0.4, 0.6), (67, 64, 0.5, 1.5), (60, 64, 0.7, 0.8)]
    pm = midi((notes, [(0.2, 100), (1.0, 0)]))
    assert names(pm) == [
        "VELOCITY(16)", "NOTE_ON(60)", "TIME_SHIFT(40)", "NOTE_ON(64)", "TIME_SHIFT(10)",
        "NOTE_ON(67)", "TIME_SHIFT(20)", "NOTE_OFF(60)", "NOTE_ON(60)", "TIME_SHIFT(30)",
        "NOTE_OFF(64)", "NOTE_OFF(60)", "TIME_SHIFT(50)", "NOTE_OFF(67)",
    ]  # fmt: skip
    # Without the pedal: the notes as played.
    assert names(midi((notes, []))) == [
        "VELOCITY(16)", "NOTE_ON(60)", "TIME_SHIFT(30)", "NOTE_OFF(60)", "TIME_SHIFT(10)",
        "NOTE_ON(64)", "TIME_SHIFT(10)", "NOTE_ON(67)", "TIME_SHIFT(10)", "NOTE_OFF(64)",
        "TIME_SHIFT(10)", "NOTE_ON(60)", "TIME_SHIFT(10)", "NOTE_OFF(60)", "TIME_SHIFT(70)", "NOTE_OFF(67)",
    ]  # fmt: skip


def test_sustain_same_pitch_struck_twice_at_once_keeps_the_later_note():
    # Under the pedal, the second 72 at 0.3 ends the first at 0.3: zero length, deleted (its
    # velocity 20 never appears); the survivor (velocity 100) is held to the release at 1.0.
    pm = midi(([(72, 20, 0.3, 0.35), (72, 100, 0.3, 0.9)], [(0.2, 127), (1.0, 0)]))
    assert names(pm) == ["TIME_SHIFT(30)", "VELOCITY(25)", "NOTE_ON(72)", "TIME_SHIFT(70)", "NOTE_OFF(72)"]


def test_sustain_never_released_holds_to_the_last_event_and_is_per_instrument():
    # Pedal down at 0.1, never up: both notes last to the last event (2.0 s).
    pm = midi(([(60, 80, 0.0, 0.5), (65, 80, 1.0, 2.0)], [(0.1, 100)]))
    assert names(pm) == ["VELOCITY(20)", "NOTE_ON(60)", "TIME_SHIFT(100)", "NOTE_ON(65)", "TIME_SHIFT(100)",
                         "NOTE_OFF(60)", "NOTE_OFF(65)"]  # fmt: skip
    # Instrument 1's pedal holds only instrument 1's note.
    pm = midi(([(60, 80, 0.0, 0.5)], []), ([(62, 80, 0.0, 0.5)], [(0.1, 100), (1.0, 0)]))
    assert names(pm) == ["VELOCITY(20)", "NOTE_ON(60)", "NOTE_ON(62)", "TIME_SHIFT(50)", "NOTE_OFF(60)",
                         "TIME_SHIFT(50)", "NOTE_OFF(62)"]  # fmt: skip


def test_apply_sustain_on_notes():
    out = apply_sustain([Note(0.0, 0.3, 60, 80), Note(0.5, 2.0, 62, 80)], [(0.2, 0, 64), (1.0, 0, 63)])
    assert [(n.start, n.end) for n in out] == [(0.0, 1.0), (0.5, 2.0)]  # 63 < 64: pedal up


def test_out_of_range_and_drum_notes_are_dropped():
    pm = midi(([(10, 80, 0.0, 0.5), (60, 80, 0.0, 0.5), (120, 80, 0.2, 0.4)], []), ([(36, 80, 0.0, 0.1)], [], True))
    assert names(pm) == ["VELOCITY(20)", "NOTE_ON(60)", "TIME_SHIFT(50)", "NOTE_OFF(60)"]
    full = PerformanceEncoding(0, 127)
    assert names(pm, full) == [
        "VELOCITY(20)", "NOTE_ON(10)", "NOTE_ON(60)", "TIME_SHIFT(20)", "NOTE_ON(120)",
        "TIME_SHIFT(20)", "NOTE_OFF(120)", "TIME_SHIFT(10)", "NOTE_OFF(10)", "NOTE_OFF(60)",
    ]  # fmt: skip


# -- decoding and round trips -------------------------------------------------------------------


def _random_midi(seed: int, n: int = 120) -> pretty_midi.PrettyMIDI:
    """Random notes (no same-pitch overlaps) with pedal changes and some long silences."""
    rng = np.random.default_rng(seed)
    notes, t, busy = [], 0.0, {}
    for _ in range(n):
        t += float(rng.choice([0.0, 0.003, 0.05, 0.2, 1.7]))
        p = int(rng.integers(15, 115))
        if busy.get(p, -1) > t:
            continue
        e = t + float(rng.uniform(0.001, 2.5))
        busy[p] = e
        notes.append((p, int(rng.integers(1, 128)), t, e))
    pedals = [(float(x), int(rng.choice([0, 127]))) for x in np.sort(rng.uniform(0, t + 1, 12))]
    return midi((notes, pedals))


@pytest.mark.parametrize("enc", [ENC, PerformanceEncoding(0, 127)], ids=["21-108", "0-127"])
def test_encode_decode_encode_round_trip(enc, tmp_path):
    for seed in range(4):
        ids = enc.encode_midi(_random_midi(seed))
        assert len(ids) > 100 and ids.min() >= 0 and ids.max() < enc.num_events
        pm = enc.decode(ids)
        np.testing.assert_array_equal(enc.encode_midi(pm), ids)
        path = write_midi(tmp_path / f"r{seed}.mid", ids, enc)  # through a MIDI file as well
        np.testing.assert_array_equal(enc.encode_midi(path), ids)


def test_decode_rules():
    ids = ENC.ids_from_names([
        "NOTE_ON(60)", "TIME_SHIFT(10)", "VELOCITY(20)", "NOTE_ON(62)", "NOTE_OFF(64)",
        "TIME_SHIFT(5)", "NOTE_OFF(60)", "NOTE_ON(65)", "NOTE_OFF(65)", "TIME_SHIFT(20)",
    ])  # fmt: skip
    notes = sorted((n.pitch, n.start, n.end, n.velocity) for n in ENC.decode_notes(ids))
    # 60 before any VELOCITY: velocity 100; 62 never ended: ends at the last step; the orphan
    # NOTE_OFF(64) and the zero-length 65 give nothing.
    assert notes == [(60, 0.0, 0.15, 100), (62, 0.1, 0.35, 77)]


def test_overlapping_same_pitch_notes_decode_to_extra_tracks(tmp_path):
    # A model can sample a pitch struck again before it is released; one MIDI channel cannot hold
    # both notes, so the second goes to a second piano track and the file keeps the events.
    ids = ENC.ids_from_names(["VELOCITY(20)", "NOTE_ON(60)", "TIME_SHIFT(10)", "NOTE_ON(60)", "TIME_SHIFT(10)",
                              "NOTE_OFF(60)", "TIME_SHIFT(10)", "NOTE_OFF(60)"])  # fmt: skip
    pm = ENC.decode(ids)
    assert [[(n.start, n.end) for n in inst.notes] for inst in pm.instruments] == [[(0.0, 0.2)], [(0.1, 0.3)]]
    np.testing.assert_array_equal(ENC.encode_midi(write_midi(tmp_path / "o.mid", ids, ENC)), ids)


# -- augmentation -------------------------------------------------------------------------------


def test_augment_events_on_every_crop_without_change_is_identity():
    ids = ENC.encode_midi(_random_midi(7, 40))
    for a in range(0, len(ids), 3):
        for b in range(a + 1, len(ids) + 1, 5):
            np.testing.assert_array_equal(augment_events(ids[a:b], ENC, transpose=0, stretch=1.0), ids[a:b])


def test_augment_events_transposes_pitches():
    ids = ENC.encode_midi(midi(([(60, 80, 0.0, 0.5), (107, 40, 0.2, 0.6)], [])))
    up = augment_events(ids, ENC, transpose=2, stretch=1.0)
    assert ENC.event_names(up) == ["VELOCITY(20)", "NOTE_ON(62)", "TIME_SHIFT(50)", "NOTE_OFF(62)"]  # 109: dropped
    down = augment_events(ids, ENC, transpose=-3, stretch=1.0)
    assert ENC.event_names(down) == ["VELOCITY(20)", "NOTE_ON(57)", "TIME_SHIFT(20)", "VELOCITY(10)", "NOTE_ON(104)",
                                     "TIME_SHIFT(30)", "NOTE_OFF(57)", "TIME_SHIFT(10)", "NOTE_OFF(104)"]  # fmt: skip
    # Sampled transpositions keep every note in range (107 + k <= 108): k in -3..1, all seen.
    seen = set()
    for s in range(60):
        out = augment_events(ids, ENC, np.random.default_rng(s), stretch=1.0)
        assert len(out) == len(ids)
        seen.add(int(ENC.decode_notes(out)[0].pitch) - 60)
    assert seen == {-3, -2, -1, 0, 1}


def test_augment_events_stretch_scales_time():
    pm = _random_midi(3)
    ids = ENC.encode_midi(pm)
    total = ENC.total_steps(ids)
    for f in (0.95, 1.05):
        out = augment_events(ids, ENC, transpose=0, stretch=f)
        assert abs(ENC.total_steps(out) - f * total) <= 1
        ref = ENC.encode_notes(augment(pm, np.random.default_rng(0), transpose=0, stretch=f))
        assert abs(ENC.total_steps(ref) - ENC.total_steps(out)) <= 1
    grid = {ENC.total_steps(augment_events(ids, ENC, np.random.default_rng(s), transpose=0)) for s in range(40)}
    assert len(grid) == 5  # stretches drawn from Magenta's 5-point grid


def test_augment_notes():
    notes = [Note(0.0, 1.0, 60, 80), Note(0.5, 2.0, 100, 80)]
    out = augment(notes, np.random.default_rng(0), transpose=3, stretch=1.05)
    assert [(n.start, n.end, n.pitch) for n in out] == [(0.0, 1.05, 63), (0.525, 2.1, 103)]
    for s in range(30):
        ks = {n.pitch - o.pitch for n, o in zip(augment(notes, np.random.default_rng(s)), notes, strict=True)}
        assert len(ks) == 1 and -3 <= ks.pop() <= 3


# -- the MAESTRO layout -------------------------------------------------------------------------


def _maestro(tmp_path, version="v3.0.0", kinds=("csv", "json"), rows=None, json_layout=None):
    src = tmp_path / f"maestro-{version}"
    (src / "2004").mkdir(parents=True)
    rows = rows or [("train", "2004/a.midi"), ("test", "2004/b.midi"), ("validation", "2004/c.midi"),
                    ("train", "2004/d.midi")]  # fmt: skip
    for i, (_, name) in enumerate(rows):
        midi(([(60 + i, 80, 0.0, 0.5 + i)], [])).write(str(src / name))
    table = [
        {"canonical_composer": "X", "canonical_title": f"T{i}", "split": s, "year": 2004, "midi_filename": n,
         "audio_filename": n.replace(".midi", ".wav"), "duration": 1.0}
        for i, (s, n) in enumerate(rows)
    ]  # fmt: skip
    if "csv" in kinds:
        with open(src / f"maestro-{version}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
    if "json" in kinds:
        layout = json_layout or ("columns" if version.startswith("v3") else "records")
        data = table if layout == "records" else {c: {str(i): r[c] for i, r in enumerate(table)} for c in table[0]}
        (src / f"maestro-{version}.json").write_text(json.dumps(data))
    return src


TABLES = [("v1.0.0", ("csv",)), ("v1.0.0", ("json",)), ("v2.0.0", ("json",)), ("v3.0.0", ("json",))]


@pytest.mark.parametrize("version,kinds", [*TABLES, ("v3.0.0", ("csv", "json"))])
def test_scan_tables_of_every_version(tmp_path, version, kinds):
    src = _maestro(tmp_path, version, kinds)
    assert FORMAT.variant(src) == version[:2]
    splits = FORMAT.scan(src)
    assert {s: [f.path.name for f in fs] for s, fs in splits.items()} == {
        "train": ["a.midi", "d.midi"], "validation": ["c.midi"], "test": ["b.midi"]}  # fmt: skip
    assert all(f.split == s for s, fs in splits.items() for f in fs)


def test_read_gives_events_name_and_bytes(tmp_path):
    src = _maestro(tmp_path)
    f = FORMAT.scan(src)["validation"][0]
    (doc,) = FORMAT.read(f, ENC)
    assert doc.name == "2004/c.midi" and doc.num_bytes == os.path.getsize(src / "2004/c.midi")
    assert ENC.event_names(doc.content) == ["VELOCITY(20)", "NOTE_ON(62)", "TIME_SHIFT(100)", "TIME_SHIFT(100)",
                                            "TIME_SHIFT(50)", "NOTE_OFF(62)"]  # fmt: skip
    tokens = FORMAT.tokens(doc.content, None)
    assert tokens[1] == doc.content[0] + NUM_RESERVED and len(tokens) == len(doc.content) + 2


def test_missing_midi_file_names_it(tmp_path):
    src = _maestro(tmp_path)
    (src / "2004/b.midi").unlink()
    with pytest.raises(DataError, match="2004/b.midi"):
        FORMAT.scan(src)


@pytest.mark.parametrize(
    "rows,match",
    [
        ([("train", "2004/a.midi"), ("dev", "2004/b.midi")], "split 'dev'"),
        ([("train", "2004/a.midi"), ("test", "2004/a.midi")], "listed twice"),
        ([("train", "../a.midi")], "not inside"),
    ],
)
def test_bad_table_rows(tmp_path, rows, match):
    src = tmp_path / "maestro-v3.0.0"
    src.mkdir()
    with open(src / "maestro-v3.0.0.csv", "w") as f:
        f.write("split,midi_filename\n" + "".join(f"{s},{n}\n" for s, n in rows))
    (tmp_path / "a.midi").write_bytes(b"x")
    (src / "2004").mkdir()
    (src / "2004/a.midi").write_bytes(b"x")
    (src / "2004/b.midi").write_bytes(b"x")
    with pytest.raises(DataError, match=match):
        FORMAT.scan(src)


def test_bad_layouts(tmp_path):
    src = _maestro(tmp_path, kinds=("csv",))
    with pytest.raises(DataError, match="did you mean"):
        FORMAT.scan(tmp_path)
    (src / "maestro-v2.0.0.json").write_text("[]")
    with pytest.raises(DataError, match="several MAESTRO versions"):
        FORMAT.variant(src)
    (src / "maestro-v2.0.0.json").unlink()
    (src / "maestro-v3.0.0.csv").write_text("canonical_title,split\nA,train\n")
    with pytest.raises(DataError, match="missing column.*midi_filename"):
        FORMAT.scan(src)


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"MThd garbage, not a MIDI file", "unreadable MIDI"),
        (None, "no notes"),
        ("drums", "drums only"),
        ("out", "no notes in the pitch range"),
    ],
)
def test_bad_midi_files_are_skipped(tmp_path, content, reason):
    p = tmp_path / "x.midi"
    if content == "drums":
        midi(([(36, 100, 0.0, 0.1), (38, 100, 0.5, 0.6)], [], True)).write(str(p))
    elif content == "out":
        midi(([(12, 100, 0.0, 0.1)], [])).write(str(p))
    elif content is None:
        midi(([], [])).write(str(p))
    else:
        p.write_bytes(content)
    with pytest.raises(SkipFile, match=reason):
        list(FORMAT.read(SourceFile("train", p), ENC))


def test_tokenizer_from_options_and_manifest(tmp_path):
    assert FORMAT.fit_tokenizer([], tmp_path, {}) == ENC
    full = FORMAT.fit_tokenizer([], tmp_path, {"min_pitch": 0, "max_pitch": 127})
    assert full.vocab_size == 388 and full.files() == []
    assert FORMAT.load_tokenizer(tmp_path, {"tokenizer": {"identity": full.identity}}) == full
    with pytest.raises(ConfigError, match="min_pich"):
        FORMAT.fit_tokenizer([], tmp_path, {"min_pich": 0})
    with pytest.raises(ConfigError):
        FORMAT.fit_tokenizer([], tmp_path, {"min_pitch": 90, "max_pitch": 80})
    with pytest.raises(DataError, match="tokenizer.identity"):
        FORMAT.load_tokenizer(tmp_path, {})


# -- audio codes --------------------------------------------------------------------------------


def test_audio_codes_interleave_matches_the_sampler_constraint():
    from repro.sample.sampler import codebook_constraint

    tok = AudioCodes(3, 1024)
    codes = np.array([[1, 2, 3], [1023, 0, 5]])
    content = tok.interleave(codes)
    np.testing.assert_array_equal(content, [1, 1026, 2051, 1023, 1024, 2053])
    np.testing.assert_array_equal(tok.decode(content), codes)
    tokens = AUDIO_FORMAT.tokens(content, None)  # SOS, content + 3, EOS
    allowed = codebook_constraint(3, 1024)
    for o in range(1, len(tokens)):  # every data token (and EOS) is allowed at its offset
        assert bool(np.asarray(allowed(np.array([o])))[0, tokens[o]]), o
    assert not bool(np.asarray(allowed(np.array([1])))[0, tokens[2]])  # a level-1 code at a level-0 slot
    with pytest.raises(ValueError, match="level"):
        tok.decode(content[1:])


def test_audio_codes_corpus(tmp_path):
    src = synthetic_codes(tmp_path / "codes", levels=4, frames=50, n_files=10, seed=1)
    assert AUDIO_FORMAT.variant(src) == "csv"
    splits = AUDIO_FORMAT.scan(src)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [8, 1, 1]
    tok = AUDIO_FORMAT.fit_tokenizer(splits["train"], tmp_path, {})
    assert tok.identity == "rvq-codes:4x1024" and tok.vocab_size == 4096
    assert AUDIO_FORMAT.load_tokenizer(tmp_path, {"tokenizer": {"identity": tok.identity}}) == tok
    (doc,) = AUDIO_FORMAT.read(splits["test"][0], tok)
    raw = np.load(splits["test"][0].path)
    assert raw.shape == (50, 4) and len(doc.content) == 200
    np.testing.assert_array_equal(tok.decode(doc.content), raw)
    assert (doc.content.reshape(50, 4) // 1024 == np.arange(4)).all()
    # the split-folder layout
    folders = tmp_path / "f"
    (folders / "train").mkdir(parents=True)
    np.save(folders / "train" / "x.npy", raw)
    assert AUDIO_FORMAT.variant(folders) == "folders"
    assert [f.path.name for f in AUDIO_FORMAT.scan(folders)["train"]] == ["x.npy"]


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros(8, np.int16), "shape"),
        (np.zeros((5, 3), np.int16), "3 levels"),
        (np.full((5, 4), 1024, np.int16), "outside 0..1023"),
        (np.full((5, 4), -1, np.int16), "outside"),
        (np.zeros((5, 4), np.float32), "integers"),
    ],
)
def test_audio_codes_bad_files_name_the_file(tmp_path, array, match):
    p = tmp_path / "bad.npy"
    np.save(p, array)
    with pytest.raises(DataError, match=f"bad.npy.*{match}"):
        list(AUDIO_FORMAT.read(SourceFile("train", p), AudioCodes(4)))
    p.write_bytes(b"not npy")
    with pytest.raises(DataError, match="bad.npy"):
        list(AUDIO_FORMAT.read(SourceFile("train", p), AudioCodes(4)))


def test_audio_codes_table_naming_a_missing_file(tmp_path):
    (tmp_path / "codes.csv").write_text("codes_filename,split\ngone.npy,train\n")
    with pytest.raises(DataError, match="gone.npy"):
        AUDIO_FORMAT.scan(tmp_path)


# -- outputs ------------------------------------------------------------------------------------


def test_write_midi_and_piano_roll_are_atomic(tmp_path):
    from PIL import Image

    ids = ENC.encode_midi(_random_midi(2, 60))
    mid = write_midi(tmp_path / "out" / "s.mid", ids, ENC)
    np.testing.assert_array_equal(ENC.encode_midi(mid), ids)
    png = piano_roll_png(tmp_path / "out" / "s.png", ids, ENC, title="random")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 500
    piano_roll_png(tmp_path / "out" / "s.png", ENC.decode(ids))  # overwrite, from a PrettyMIDI
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s.mid", "s.png"]  # no temp files left


# -- the music21 demo ---------------------------------------------------------------------------


def test_demo_small(tmp_path):
    pytest.importorskip("music21")
    r = build_demo(tmp_path, limit=5)
    assert r.pieces == {"train": 3, "validation": 1, "test": 1} and not r.skipped
    assert FORMAT.variant(r.source) == "v3"
    splits = FORMAT.scan(r.source)
    for s, fs in splits.items():
        for f in fs:
            assert demo_split(f.path.stem.removeprefix("bach-")) == s
            (doc,) = FORMAT.read(f, ENC)
            assert doc.name.startswith("2004/bach-") and len(doc.content) > 100
    cols = json.loads((r.source / "maestro-v3.0.0.json").read_text())
    listed = [f.path.relative_to(r.source).as_posix() for s in ("train", "validation", "test") for f in splits[s]]
    assert list(cols["midi_filename"].values()) == listed
    assert build_demo(tmp_path, limit=5).reused


def test_matches_note_seq_when_installed(tmp_path):
    """Optional cross-check against Magenta's own code (note-seq is not a dependency: it pulls in
    librosa, bokeh, ...). Run by hand it gave identical ids on 710/710 files (300 random files
    with random pedal values, re-strikes, two instruments, sub-step timing; 410 demo chorales)."""
    note_seq = pytest.importorskip("note_seq")
    from note_seq import performance_lib, sequences_lib
    from note_seq.performance_encoder_decoder import PerformanceOneHotEncoding

    one_hot = PerformanceOneHotEncoding(num_velocity_bins=32, max_shift_steps=100, min_pitch=21, max_pitch=108)
    for seed in range(10):
        path = tmp_path / f"r{seed}.mid"
        _random_midi(seed).write(str(path))
        ns = note_seq.midi_file_to_note_sequence(str(path))
        valid = [n for n in ns.notes if 21 <= n.pitch <= 108]  # datagen_beam.filter_invalid_notes
        del ns.notes[:]
        ns.notes.extend(valid)
        ns = sequences_lib.apply_sustain_control_changes(ns)
        q = sequences_lib.quantize_note_sequence_absolute(ns, 100)
        ref = [one_hot.encode_event(e) for e in performance_lib.Performance(q, num_velocity_bins=32)]
        assert ENC.encode_midi(path).tolist() == ref
