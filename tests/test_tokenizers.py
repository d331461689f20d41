"""The tokenizer contract (repro/data/source.py): every tokenizer in ``repro/data`` encodes and
decodes, and decode(encode(x)) gives x back; the base class says which tokenizer lacks a direction."""

import importlib
import pkgutil

import numpy as np
import pytest

import repro.data
from repro.data.maestro_audio import AudioCodes
from repro.data.midi_events import Note, PerformanceEncoding
from repro.data.source import ByteValues, Tokenizer
from repro.data.text import EOS_WORD, UNK_WORD, ByteTokenizer, WordTokenizer


def _all_tokenizer_classes() -> set[type]:
    for info in pkgutil.iter_modules(repro.data.__path__):
        importlib.import_module(f"repro.data.{info.name}")  # a tokenizer defined anywhere in repro/data
    found, todo = set(), [Tokenizer]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("repro.data") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_tokenizer_in_repro_data_encodes_and_decodes():
    classes = _all_tokenizer_classes()
    assert {ByteValues, ByteTokenizer, WordTokenizer, AudioCodes, PerformanceEncoding} <= classes
    for cls in classes:
        assert cls.encode is not Tokenizer.encode and cls.decode is not Tokenizer.decode, cls.__name__


def test_the_base_tokenizer_names_itself_when_a_direction_is_missing():
    with pytest.raises(NotImplementedError, match="Tokenizer \\(identity\\) does not encode"):
        Tokenizer().encode("x")
    with pytest.raises(NotImplementedError, match="does not decode"):
        Tokenizer().decode(np.zeros(1, np.int32))


def test_round_trips():
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(ByteValues().decode(ByteValues().encode(image)), image.ravel())
    assert ByteValues().encode(b"\x00\xff").tolist() == [0, 255]
    with pytest.raises(ValueError, match="0..255"):
        ByteValues().encode([256])
    assert ByteTokenizer().decode(ByteTokenizer().encode("héllo\n")) == "héllo\n"
    words = WordTokenizer([EOS_WORD, "a", "b", UNK_WORD])
    assert words.decode(words.encode("a b\nb a")) == "a b\nb a\n"
    codes = AudioCodes(levels=2, codes_per_level=4)
    codes_FxL = np.array([[0, 3], [2, 1]])
    np.testing.assert_array_equal(codes.decode(codes.encode(codes_FxL)), codes_FxL)
    with pytest.raises(ValueError, match="codes must be"):
        codes.encode(np.array([[0, 4]]))
    perf = PerformanceEncoding()
    ids = perf.encode_notes([Note(0.0, 0.5, 60, 80), Note(0.25, 1.0, 64, 90)])
    np.testing.assert_array_equal(perf.encode(perf.decode(ids)), ids)
