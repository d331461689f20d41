"""Copy-task data, window cutting and the two kinds of document source."""

import numpy as np
import pytest

from repro.data.copy_task import CopySource, mirrored_half_mask, mirrored_sequences
from repro.data.pipeline import Pipeline
from repro.data.source import CorpusSource, DocumentSource, SyntheticSource
from repro.data.store import Corpus
from repro.data.tokens import EOS_ID, NUM_RESERVED, PAD_ID, SOS_ID
from repro.data.windows import cut_windows, random_crop_ends


def test_mirrored_sequences_layout():
    s = mirrored_sequences(np.random.default_rng(0), 4, 32)
    assert s.shape == (4, 32) and s.dtype == np.int32
    n = 15
    assert (s[:, 0] == SOS_ID).all() and (s[:, -1] == EOS_ID).all()
    np.testing.assert_array_equal(s[:, 1 : 1 + n], s[:, 1 + n : 1 + 2 * n][:, ::-1])
    assert s[:, 1:-1].min() >= NUM_RESERVED and s[:, 1:-1].max() <= 255 + NUM_RESERVED


def test_mirrored_half_mask_marks_reversed_tokens_only():
    s = mirrored_sequences(np.random.default_rng(1), 1, 10)[0]  # n = 4
    targets, m = s[1:], mirrored_half_mask(10)
    assert m.sum() == 4
    np.testing.assert_array_equal(targets[m], s[1:5][::-1])
    assert targets[-1] == EOS_ID and not m[-1]


def test_a_source_is_synthetic_or_a_corpus_by_its_kind():
    """The two kinds are explicit base classes; a source that subclasses neither is refused
    when it is defined (no guessing the kind from which methods it overrides)."""
    assert issubclass(CopySource, SyntheticSource) and CopySource.synthetic
    assert issubclass(Corpus, CorpusSource) and not Corpus.synthetic
    with pytest.raises(TypeError, match="a DocumentSource is a SyntheticSource or a CorpusSource"):

        class Neither(DocumentSource):
            def generate(self, rng, n):
                return np.zeros((n, 4), np.int32), None


def test_cut_windows_left_pads_and_aligns_targets():
    seq = np.arange(10, 20)[None]  # inputs 10..18, targets 11..19
    w = cut_windows(seq, np.array([5]), L=8, M=3)
    np.testing.assert_array_equal(w["inputs"][0], [PAD_ID] * 3 + [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(w["targets"][0], [13, 14, 15])
    np.testing.assert_array_equal(w["positions"][0, :, 0], [0, 0, 0, 1, 2, 3, 4, 5])
    # The latent at the last window position (input 14) predicts the next token (15).
    w2 = cut_windows(seq, np.array([2]), L=4, M=3)
    np.testing.assert_array_equal(w2["targets"][0], [PAD_ID, 11, 12])


def test_cut_windows_rejects_bad_ends():
    with pytest.raises(ValueError):
        cut_windows(np.zeros((1, 5), np.int32), np.array([5]), 4, 2)


def test_crop_ends_respect_minimum():
    ends = random_crop_ends(np.random.default_rng(0), np.full(1000, 32), 16)
    assert ends.min() >= 16 and ends.max() <= 31 and len(set(ends.tolist())) == 16


def test_train_batches_are_deterministic_per_step_and_process_sharded():
    ds = Pipeline(CopySource(32, 32, eval_seed=1, train_seed=0), 32, 16, 16, train_seed=0)
    a, b = ds.train_batch(3, 8), ds.train_batch(3, 8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(ds.train_batch(4, 8)["inputs"], a["inputs"])
    halves = [ds.train_batch(3, 8, i, 2) for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["inputs"] for h in halves]).sum(), a["inputs"].sum())
    assert halves[0]["inputs"].shape == (4, 32)


def test_eval_windows_cover_the_mirrored_half_exactly_once():
    for seq_len, M in [(32, 16), (64, 8), (64, 40)]:
        ds = Pipeline(CopySource(seq_len, seq_len, eval_seed=1, train_seed=0), seq_len, M, 0, 0)
        n = (seq_len - 2) // 2
        scored = sum(int(b["score_mask"].sum()) for b in ds.eval_batches("validation", 3, 4, f"blocked:{M}"))
        assert scored == 3 * n, (seq_len, M)


def test_eval_and_train_streams_differ():
    ds = CopySource(32, 32, eval_seed=0, train_seed=0)
    ev = ds.eval_sequences(4)
    tr = mirrored_sequences(np.random.default_rng([0, 0]), 4, 32)
    assert not np.array_equal(ev, tr)


def test_prefetch_keeps_order_raises_in_order_and_stops_early():
    from repro.data.pipeline import prefetch

    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in prefetch(broken()):
            got.append(x)
    assert got == [1, 2]
    produced = []

    def counting():
        for i in range(10_000):
            produced.append(i)
            yield i

    it = prefetch(counting(), depth=2)
    assert next(it) == 0
    it.close()  # the consumer leaves: the producer stops soon after, not at the end
    import time

    time.sleep(0.3)
    assert len(produced) < 100
