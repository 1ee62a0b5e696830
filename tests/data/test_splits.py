from collections import Counter

from voxray.config import SplitConfig
from voxray.data.splits import rebalance, split_of


def test_splits_are_deterministic_and_near_the_fractions():
    fractions = SplitConfig()
    ids = [f"utt{i:05d}" for i in range(5000)]
    first = [split_of(i, fractions) for i in ids]
    assert first == [split_of(i, fractions) for i in ids]
    counts = Counter(first)
    assert abs(counts["train"] / 5000 - 0.8) < 0.03
    assert abs(counts["val"] / 5000 - 0.1) < 0.02


def test_rebalance_fills_empty_splits_from_the_largest():
    fractions = SplitConfig()
    assert rebalance({"train": 5, "val": 1, "test": 1}, fractions) == []
    assert rebalance({"train": 3}, fractions) == [("train", "val"), ("train", "test")]
    assert rebalance({"train": 1, "val": 1}, fractions) == []  # too few rows to fill all
    assert rebalance({"train": 4}, SplitConfig(train=0.9, val=0.1, test=0.0)) == [("train", "val")]
