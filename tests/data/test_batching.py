import random

import pytest

from voxray.data.batching import bucket_batches, padding_fraction


def test_buckets_cover_every_index_once_and_cut_padding():
    rng = random.Random(0)
    lengths = [rng.randint(50, 800) for _ in range(1000)]
    batches = bucket_batches(lengths, batch_size=16, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(len(b) <= 16 for b in batches)
    bucketed = sum(padding_fraction([lengths[i] for i in b]) for b in batches) / len(batches)
    plain = [list(range(i, min(i + 16, 1000))) for i in range(0, 1000, 16)]
    unbucketed = sum(padding_fraction([lengths[i] for i in b]) for b in plain) / len(plain)
    assert bucketed < 0.2 * unbucketed


def test_buckets_are_seeded():
    lengths = list(range(100))
    assert bucket_batches(lengths, 8, seed=3) == bucket_batches(lengths, 8, seed=3)
    assert bucket_batches(lengths, 8, seed=3) != bucket_batches(lengths, 8, seed=4)
    with pytest.raises(ValueError, match="batch_size"):
        bucket_batches(lengths, 0, seed=0)


def test_padding_fraction():
    assert padding_fraction([10, 10]) == 0
    assert padding_fraction([10, 5]) == pytest.approx(0.25)
