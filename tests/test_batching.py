import numpy as np
import pytest

from etl.stages.read.batching import pad, plan_batches


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


def _greedy(lengths, budget, max_rows):
    """The rule, one sequence at a time: close a batch when the next would break it."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches, current = [], []
    for i in order:
        rows = len(current) + 1
        if current and (rows > max_rows or rows * lengths[i] > budget):
            batches.append(current)
            current = []
        current.append(int(i))
    return [*batches, current]


@pytest.mark.parametrize("seed", range(5))
def test_the_batches_are_those_the_rule_gives_one_sequence_at_a_time(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, size=int(rng.integers(1, 3000))).tolist()
    budget, max_rows = int(rng.integers(256, 40_000)), int(rng.integers(1, 300))
    got = [b.tolist() for b in plan_batches(lengths, budget, max_rows)]
    assert got == _greedy(lengths, budget, max_rows)


def test_sequences_pad_truncate_and_take_as_lists_would():
    from etl.stages.read.sequences import Sequences

    rng = np.random.default_rng(7)
    lists = [rng.integers(5, 99, size=int(n)).tolist() for n in rng.integers(0, 40, size=60)]
    seqs = Sequences.from_lists(lists)
    members = rng.permutation(60)[:25]
    ids, mask = seqs.padded(members, pad_id=0, left=True)
    longest = max(len(lists[m]) for m in members)
    for row, m in enumerate(members):
        n = len(lists[m])
        assert ids[row].tolist() == [0] * (longest - n) + lists[m]
        assert mask[row].tolist() == [0] * (longest - n) + [1] * n
    assert [s.tolist() for s in map(seqs.take(members).row, range(25))] == [
        lists[m] for m in members
    ]
    cut = seqs.truncated(10, keep_head=9)  # right: the first 9, then the last one
    for i, ids_i in enumerate(lists):
        assert cut.row(i).tolist() == (ids_i if len(ids_i) <= 10 else ids_i[:9] + ids_i[-1:])
    cut = seqs.truncated(10, keep_head=1)  # left: the first one, then the last 9
    for i, ids_i in enumerate(lists):
        assert cut.row(i).tolist() == (ids_i if len(ids_i) <= 10 else ids_i[:1] + ids_i[-9:])
