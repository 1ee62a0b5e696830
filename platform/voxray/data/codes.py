"""Discrete audio codes ``[T, n_codebooks]`` in a manifest: the codec description they are
checked against (from the ``codec`` config section, or inferred from the rows), the checks, and
per-codebook usage statistics.

Lengths are checked against the audio's duration before trimming: a row that carries codes is
not trimmed (trimming would shift the audio against its codes), and its number of code frames
must lie within ``codec.length_tolerance`` frames of ``seconds x frame_rate``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np
import pyarrow.compute as pc

from voxray.config import CodecSection
from voxray.cleaning import Rejected

BAD_CODES = "bad_codes"          # the reason of rejected.jsonl rows whose codes do not fit the codec


@dataclass(frozen=True)
class CodecInfo:
    name: str
    n_codebooks: int
    codebook_size: int
    frame_rate: float
    length_tolerance: int
    inferred: tuple[str, ...] = ()           # the keys taken from the rows, not from the config

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "n_codebooks": self.n_codebooks, "codebook_size": self.codebook_size,
                "frame_rate": self.frame_rate, "length_tolerance": self.length_tolerance,
                "inferred": list(self.inferred)}


@dataclass(frozen=True)
class Observation:
    """What the scan pass learns of rows' codes: codebooks per frame, the largest code, code
    frames per second of audio (to 1 mHz; None when the duration could not be read), and how many
    rows share that width and rate (``summarise``)."""

    n_codebooks: int
    max_code: int
    rate: Optional[float]
    count: int = 1


def observe(codes: list[list[int]], seconds: Optional[float]) -> Observation:
    array = np.asarray(codes, dtype=np.int64)
    return Observation(array.shape[1], int(array.max()), round(array.shape[0] / seconds, 3) if seconds else None)


def summarise(observations: Iterable[Observation]) -> list[Observation]:
    """One observation per (width, rate), counts added and the largest code kept: what a scan
    task sends the driver, so that the driver holds a few hundred of them, not one per row."""
    merged: dict[tuple[int, Optional[float]], Observation] = {}
    for o in observations:
        seen = merged.get((o.n_codebooks, o.rate))
        merged[(o.n_codebooks, o.rate)] = o if seen is None else Observation(
            o.n_codebooks, max(o.max_code, seen.max_code), o.rate, o.count + seen.count)
    return list(merged.values())


def infer(section: CodecSection, observations: list[Observation]) -> Optional[CodecInfo]:
    """The codec description: the config's values, the rest from the rows (the most common number
    of codebooks; the smallest power of two above the largest code; the median frames per second).
    None when no row carries codes."""
    if not observations:
        return None
    inferred = []
    n_codebooks = section.n_codebooks
    if n_codebooks is None:
        counts: Counter = Counter()
        for o in observations:
            counts[o.n_codebooks] += o.count
        n_codebooks = max(sorted(counts), key=lambda width: counts[width])
        inferred.append("n_codebooks")
    agreeing = [o for o in observations if o.n_codebooks == n_codebooks] or observations
    codebook_size = section.codebook_size
    if codebook_size is None:
        codebook_size = max(2, 1 << math.ceil(math.log2(max(o.max_code for o in agreeing) + 1)))
        inferred.append("codebook_size")
    frame_rate = section.frame_rate
    if frame_rate is None:
        rates = sorted((o.rate, o.count) for o in agreeing if o.rate)
        if not rates:
            raise ValueError("codec.frame_rate is not set and no row's audio duration could be read to infer it")
        frame_rate = round(_weighted_median(rates), 3)
        inferred.append("frame_rate")
    return CodecInfo(name=section.name or ("unknown" if inferred else "unnamed"), n_codebooks=n_codebooks,
                     codebook_size=codebook_size, frame_rate=frame_rate,
                     length_tolerance=section.length_tolerance, inferred=tuple(inferred))


def _weighted_median(pairs: list[tuple[float, int]]) -> float:
    """The median of values given as sorted (value, count) pairs (the mean of the two middle
    values for an even total)."""
    total = sum(count for _, count in pairs)
    middle = [(total - 1) // 2, total // 2]
    found, seen = [], 0
    for value, count in pairs:
        while middle and middle[0] < seen + count:
            found.append(value)
            middle.pop(0)
        seen += count
    return (found[0] + found[1]) / 2


def check(codes: list[list[int]], info: CodecInfo, seconds: Optional[float]) -> np.ndarray:
    """The codes as int32 ``[T, n_codebooks]``; Rejected(BAD_CODES) naming the first problem
    (``seconds`` None: a row without its audio, whose length cannot be checked)."""
    array = np.asarray(codes, dtype=np.int64)
    if array.shape[1] != info.n_codebooks:
        raise Rejected(BAD_CODES, f"{array.shape[1]} codebooks per frame, the codec has {info.n_codebooks}")
    bad = np.argwhere((array < 0) | (array >= info.codebook_size))
    if len(bad):
        frame, codebook = (int(v) for v in bad[0])
        raise Rejected(BAD_CODES, f"code {int(array[frame, codebook])} at frame {frame}, codebook {codebook} is "
                                  f"outside [0, {info.codebook_size}) ({len(bad)} such codes)")
    expected = None if seconds is None else seconds * info.frame_rate
    if expected is not None and abs(array.shape[0] - expected) > info.length_tolerance:
        raise Rejected(BAD_CODES, f"{array.shape[0]} code frames for {seconds:.3f} s of audio at {info.frame_rate:g} "
                                  f"Hz: {expected:.1f} expected, +-{info.length_tolerance} "
                                  "(codec.length_tolerance)")
    return array.astype(np.int32)


def count(column, counts: np.ndarray) -> int:
    """Add the uses of each code of an ``audio_codes`` column (pyarrow, rows of [T, K]) to
    ``counts`` [K, codebook_size]; returns the code frames counted (rows without codes count 0)."""
    n_codebooks, size = counts.shape
    flat = pc.list_flatten(pc.list_flatten(column)).to_numpy(zero_copy_only=False).reshape(-1, n_codebooks)
    for k in range(n_codebooks):
        counts[k] += np.bincount(flat[:, k], minlength=size)[:size]
    return flat.shape[0]


def usage(counts: np.ndarray) -> list[dict[str, Any]]:
    """Per codebook: codes used at least once and the perplexity (exp of the code entropy; the
    codebook size when every code is equally frequent)."""
    out = []
    for k, row in enumerate(counts):
        total = row.sum()
        p = row[row > 0] / max(total, 1)
        out.append({"codebook": k, "used": int((row > 0).sum()),
                    "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 2) if total else 0.0})
    return out
