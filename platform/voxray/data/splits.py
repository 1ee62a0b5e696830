"""Deterministic train/val/test splits by a hash of the utterance id."""

from __future__ import annotations

import hashlib

from voxray.config import SplitConfig

SPLITS = ("train", "val", "test")


def unit_interval(utt_id: str) -> float:
    """A stable number in [0, 1) for an id (sha1; independent of Python's hash seed)."""
    return int(hashlib.sha1(utt_id.encode("utf-8")).hexdigest()[:13], 16) / 16**13


def split_of(utt_id: str, fractions: SplitConfig) -> str:
    position = unit_interval(utt_id)
    if position < fractions.train:
        return "train"
    if position < fractions.train + fractions.val:
        return "val"
    return "test"


def rebalance(counts: dict[str, int], fractions: SplitConfig) -> list[tuple[str, str]]:
    """Moves (from_split, to_split) that leave every split with a non-zero fraction non-empty.

    Hash splits of a tiny corpus can leave val or test empty; each move takes one row from
    the largest split. Needs at least as many rows as splits wanting rows.
    """
    wanted = [s for s in SPLITS if getattr(fractions, s) > 0]
    counts = {s: counts.get(s, 0) for s in SPLITS}
    if sum(counts.values()) < len(wanted):
        return []
    moves = []
    for split in wanted:
        if counts[split] == 0:
            donor = max(wanted, key=lambda s: (counts[s], -SPLITS.index(s)))
            counts[donor] -= 1
            counts[split] += 1
            moves.append((donor, split))
    return moves
