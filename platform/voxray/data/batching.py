"""Store rows -> padded tensors, and length bucketing (less padding, same randomness).

Shapes: B batch, N tokens, T mel frames.
"""

from __future__ import annotations

import random
from typing import Any, Optional, Sequence

import numpy as np
import torch

from voxray.text import PAD_ID


def _pad(arrays: Sequence[np.ndarray], length: int, fill: float = 0) -> np.ndarray:
    first = np.asarray(arrays[0])
    out = np.full((len(arrays), length, *first.shape[1:]), fill, dtype=first.dtype)
    for i, array in enumerate(arrays):
        out[i, : len(array)] = array
    return out


def collate(rows: Sequence[dict[str, Any]]) -> dict[str, Optional[torch.Tensor]]:
    """Feature-store rows (dicts of lists/arrays) -> padded batch tensors.

    tokens [B, N] (PAD_ID padded), token_lengths [B], speakers [B], languages [B],
    mels [B, T, n_mels], mel_lengths [B], pitch [B, T], energy [B, T]; durations,
    token_languages, token_particles [B, N] or None when any row lacks them.
    """
    tokens = [np.asarray(r["token_ids"], dtype=np.int64) for r in rows]
    mels = [np.asarray(r["mel"], dtype=np.float32).reshape(len(r["f0"]), -1) for r in rows]
    token_lengths = np.array([len(t) for t in tokens])
    mel_lengths = np.array([len(m) for m in mels])
    batch: dict[str, Optional[torch.Tensor]] = {
        "tokens": torch.from_numpy(_pad(tokens, int(token_lengths.max()), PAD_ID)),
        "token_lengths": torch.from_numpy(token_lengths),
        "speakers": torch.tensor([int(r["speaker_index"]) for r in rows]),
        "languages": torch.tensor([int(r["language_index"]) for r in rows]),
        "mels": torch.from_numpy(_pad(mels, int(mel_lengths.max()))),
        "mel_lengths": torch.from_numpy(mel_lengths),
        "pitch": torch.from_numpy(_pad([np.asarray(r["f0"], np.float32) for r in rows], int(mel_lengths.max()))),
        "energy": torch.from_numpy(_pad([np.asarray(r["energy"], np.float32) for r in rows], int(mel_lengths.max()))),
        "durations": None,
    }
    for column, key in (("token_languages", "token_languages"), ("token_particles", "token_particles")):
        # per-token labels of code-switched stores (stores written before them lack the columns)
        batch[key] = torch.from_numpy(_pad([np.asarray(r[column], np.int64) for r in rows], int(token_lengths.max()))) \
            if all(r.get(column) is not None for r in rows) else None
    if all(r.get("durations") is not None for r in rows):
        batch["durations"] = torch.from_numpy(
            _pad([np.asarray(r["durations"], np.int64) for r in rows], int(token_lengths.max())))
    return batch


def bucket_batches(lengths: Sequence[int], batch_size: int, seed: int, pool: int = 32) -> list[list[int]]:
    """Indices grouped into batches of similar length.

    Shuffle, cut into pools of ``pool`` batches, sort each pool by length, cut batches, shuffle
    the batches: every epoch differs (by ``seed``) but each batch holds neighbours in length.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    step = batch_size * pool
    for start in range(0, len(order), step):
        chunk = sorted(order[start: start + step], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_fraction(lengths: Sequence[int]) -> float:
    """Share of a padded [B, max(lengths)] batch that is padding."""
    longest = max(lengths)
    return 1.0 - sum(lengths) / (longest * len(lengths)) if longest else 0.0


def references(rows: list[dict[str, Any]], rng: Optional[np.random.Generator]) -> list[Optional[int]]:
    """For each row, the batch row that gives its voice: the one whose source is the row's
    ``ref_audio``, else another utterance of the same speaker (drawn with ``rng``; without it, the
    next one), else None."""
    by_source = {row["source"]: i for i, row in enumerate(rows)}
    chosen: list[Optional[int]] = []
    for i, row in enumerate(rows):
        if row.get("ref_audio") in by_source and by_source[row["ref_audio"]] != i:
            chosen.append(by_source[row["ref_audio"]])
            continue
        same = [j for j, other in enumerate(rows) if j != i and other["speaker_index"] == row["speaker_index"]]
        if not same:
            chosen.append(None)
        elif rng is not None:
            chosen.append(same[int(rng.integers(len(same)))])
        else:
            chosen.append(next((j for j in same if j > i), same[0]))
    return chosen
