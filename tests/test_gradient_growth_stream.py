"""Gradient growth's streamed candidates: the threshold guessed from the first chunk, and the stream again
where the guess was too high; what grows is the top of every free candidate scored, either way."""
import numpy as np
import pytest

import set_cy.evolution as ev
from set_cy.patterns import draw_free_positions, random_row_counts, row_ids


def _g(rows, cols):
    return np.sin(rows * 12.9898 + cols * 78.233) * 43758.5453 % 1.0 - 0.5  # fixed, irregular


def _grow(monkeypatch, skew, dtype=np.int32):
    monkeypatch.setattr(ev.GradientGrowth, "CHUNK", 1 << 16)
    rng = np.random.default_rng(5)
    n_rows, n_cols, count = 600, 800, 8000  # 10 x 8000 candidates: two chunks, the first one guesses
    kept_indptr, kept_indices = draw_free_positions(rng, n_rows, n_cols, 20_000, index_dtype=dtype)
    asked = []

    def score(indptr, indices):
        rows = row_ids(indptr)
        asked.append((rows.astype(np.int64), indices.astype(np.int64)))
        return (_g(rows, indices) * skew(rows)).astype(np.float32)

    indptr, indices = ev.GradientGrowth(candidates=10).grow(rng, n_rows, n_cols, count, kept_indptr, kept_indices,
                                                            score=score)
    assert indptr.dtype == dtype and indices.dtype == dtype and indices.size == count
    kept = set((row_ids(kept_indptr).astype(np.int64) * n_cols + kept_indices).tolist())
    chosen = set((row_ids(indptr).astype(np.int64) * n_cols + indices).tolist())
    assert len(chosen) == count and not chosen & kept
    for r in range(n_rows):  # canonical
        assert np.all(np.diff(indices[indptr[r]:indptr[r + 1]]) > 0)
    return asked, chosen, kept, n_cols, count, skew


def _top_of(asked, kept, n_cols, count, skew):
    keys = np.unique(np.concatenate([r * n_cols + c for r, c in asked]))
    keys = np.array(sorted(set(keys.tolist()) - kept), np.int64)
    rows = keys // n_cols
    mag = np.abs((_g(rows, keys % n_cols) * skew(rows)).astype(np.float32))
    return set(keys[np.argsort(-mag, kind="stable")[:count]].tolist())


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_streamed_growth_with_a_guessed_threshold_is_the_top_of_every_candidate(monkeypatch, dtype):
    asked, chosen, kept, n_cols, count, skew = _grow(monkeypatch, lambda r: np.ones(r.shape), dtype)
    assert len(asked) == 2 and sum(c.size for _, c in asked) == 10 * count  # scored once each
    assert chosen == _top_of(asked, kept, n_cols, count, skew)


def test_streamed_growth_streams_again_where_the_guess_was_too_high(monkeypatch):
    # the first chunk holds the rows 0, 2, 4, ... (the stream is strided): much larger there, it guesses a
    # threshold that too few of all the candidates pass; the same candidates are then scored again
    asked, chosen, kept, n_cols, count, skew = _grow(monkeypatch, lambda r: np.where(r % 2 == 0, 100.0, 1.0))
    assert len(asked) == 4
    for (r1, c1), (r2, c2) in zip(asked[:2], asked[2:]):
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(c1, c2)
    assert chosen == _top_of(asked[2:], kept, n_cols, count, skew)


def test_random_row_counts_are_multinomial():
    rng = np.random.default_rng(0)
    for n_rows, count in [(50, 100_000), (50_000, 1000), (7, 0)]:  # one binomial a row / counted draws
        counts = random_row_counts(rng, n_rows, count)
        assert counts.shape == (n_rows,) and counts.dtype == np.int64 and counts.sum() == count
    counts = random_row_counts(rng, 50, 100_000)
    chi2 = ((counts - 2000.0) ** 2 / 2000.0).sum()
    assert chi2 < 100  # 49 degrees of freedom
