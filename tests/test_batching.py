import numpy as np
import pytest

from etl.stages.batching import pad, plan_batches


@pytest.mark.parametrize("budget,max_rows", [(64, 8), (100, 3), (1000, 1000), (5, 4)])
def test_every_row_once_and_budget_held(budget, max_rows):
    rng = np.random.default_rng(1)
    lengths = rng.integers(2, 40, size=257).tolist()
    batches = plan_batches(lengths, budget, max_rows)
    seen = np.sort(np.concatenate(batches))
    assert seen.tolist() == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= max_rows
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * longest <= budget


def test_batches_hold_similar_lengths_short_ones_together():
    lengths = [30, 2, 30, 2, 2, 30]
    batches = plan_batches(lengths, 64, 10)
    assert [sorted(b.tolist()) for b in batches] == [[1, 3, 4], [0, 2], [5]]


def test_empty_window_gives_no_batches():
    assert plan_batches([], 100, 10) == []


def test_pad_to_own_longest_with_mask():
    ids, mask = pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == np.int64
