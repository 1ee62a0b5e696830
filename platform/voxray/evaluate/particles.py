"""Discourse-particle prosody of an utterance, measured against the users' table.

A particle word is a run of tokens of one particle type (``token_particles``). Its duration
ratio is the mean frames per phone inside it over the mean frames per phone of the utterance's
other words (a speaking-rate-free "how stretched"); its contour is the F0 of its voiced frames in
semitones: the slope of a least-squares line (semitones per second) and a shape, from the means
of its first, middle and last thirds: ``rise-fall`` (the middle above both ends by
``CONTOUR_SEMITONES``), ``rise``, ``fall`` or ``flat`` (end against start), ``unvoiced`` (fewer
than 3 voiced frames).

``EXPECTED`` holds the users' plan's six rows as it writes them: lah rise-fall 1.2-1.5x, leh
rising 1.0-1.2x, lor flat or falling 1.0x (judged as 0.9-1.1: a point needs a tolerance), meh
high rising 0.9-1.1x, mah quick fall 0.8-1.0x, loh falling 1.0-1.2x; and, for the other particles
of the Malaysian inventory, which the plan does not describe, voxray's defaults from their usual
description (hor, ah, kan: rising, as questions and softeners are; wor: rise-fall) at 1.0-1.3x.
A particle outside the table is measured, not judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

CONTOUR_SEMITONES = 1.0
MIN_VOICED = 3


def is_phone(token: str) -> bool:
    """A token that is a sound: not a word boundary, a stress mark, punctuation or a special token."""
    import unicodedata

    from voxray.text import SPECIAL_TOKENS, STRESS_MARKS, WORD_BOUNDARY

    if token in SPECIAL_TOKENS or token in STRESS_MARKS or token == WORD_BOUNDARY:
        return False
    return not all(unicodedata.category(ch).startswith("P") for ch in token)


@dataclass(frozen=True)
class Expectation:
    contours: tuple[str, ...]
    duration_ratio: tuple[float, float]


EXPECTED = {
    # the plan's table
    "lah": Expectation(("rise-fall",), (1.2, 1.5)), "leh": Expectation(("rise",), (1.0, 1.2)),
    "lor": Expectation(("flat", "fall"), (0.9, 1.1)), "meh": Expectation(("rise",), (0.9, 1.1)),
    "mah": Expectation(("fall",), (0.8, 1.0)), "loh": Expectation(("fall",), (1.0, 1.2)),
    # voxray's defaults for the rest of the inventory
    "hor": Expectation(("rise",), (1.0, 1.3)), "ah": Expectation(("rise",), (1.0, 1.3)),
    "kan": Expectation(("rise",), (1.0, 1.3)), "wor": Expectation(("rise-fall",), (1.0, 1.3)),
}


CONTOURS = ("rise-fall", "rise", "fall", "flat")


def load_table(path: str) -> dict[str, Expectation]:
    """A user's particle table (YAML or JSON, path or s3://) over ``EXPECTED``: each row
    ``name: {contours: [rise-fall | rise | fall | flat, ...], duration_ratio: [low, high]}``
    replaces that particle's row or adds one. A malformed row is a ValueError naming it."""
    import yaml

    from voxray import uri

    rows = yaml.safe_load(uri.read_text(path)) or {}
    if not isinstance(rows, dict):
        raise ValueError(f"{path}: a particle table maps particle names to rows, got {type(rows).__name__}")
    table = dict(EXPECTED)
    for name, row in rows.items():
        try:
            contours, (low, high) = tuple(row["contours"]), row["duration_ratio"]
            unknown = [c for c in contours if c not in CONTOURS]
            if unknown or not contours or not 0 < float(low) <= float(high):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: particle {name!r}: expected {{contours: [one or more of "
                             f"{', '.join(CONTOURS)}], duration_ratio: [low, high]}} with 0 < low <= high, "
                             f"got {row!r}") from None
        table[str(name).lower()] = Expectation(contours, (float(low), float(high)))
    return table


def spans(token_particles: Sequence[int]) -> list[tuple[int, int, int]]:
    """(particle type, first token, end token) of each particle word."""
    out: list[tuple[int, int, int]] = []
    for i, kind in enumerate(token_particles):
        if kind and out and out[-1][0] == kind and out[-1][2] == i:
            out[-1] = (kind, out[-1][1], i + 1)
        elif kind:
            out.append((kind, i, i + 1))
    return out


def contour(f0: np.ndarray, frame_seconds: float) -> tuple[float, str]:
    """(slope in semitones per second, shape) of an F0 stretch [frames] Hz, 0 where unvoiced."""
    voiced = np.flatnonzero(f0 > 0)
    if voiced.size < MIN_VOICED:
        return float("nan"), "unvoiced"
    semitones = 12 * np.log2(f0[voiced] / np.median(f0[voiced]))
    slope = float(np.polyfit(voiced * frame_seconds, semitones, 1)[0])
    first, middle, last = (float(part.mean()) for part in np.array_split(semitones, 3))
    if middle - first > CONTOUR_SEMITONES and middle - last > CONTOUR_SEMITONES:
        return slope, "rise-fall"
    if last - first > CONTOUR_SEMITONES:
        return slope, "rise"
    if first - last > CONTOUR_SEMITONES:
        return slope, "fall"
    return slope, "flat"


def measure(token_particles: Sequence[int], is_phone: Sequence[bool], durations: Sequence[int],
            f0: np.ndarray, frame_seconds: float, inventory: Sequence[str]) -> list[dict[str, Any]]:
    """Each particle word of an utterance: its name, duration ratio, F0 slope and shape.
    ``durations`` [tokens] frames per token; ``f0`` [frames] Hz of the same utterance."""
    phones = np.asarray(is_phone, dtype=bool)
    frames = np.asarray(durations, dtype=np.float64)
    in_particle = np.asarray(token_particles) > 0
    others = phones & ~in_particle
    base = frames[others].mean() if others.any() else float("nan")
    ends = np.concatenate([[0], np.cumsum(frames)]).astype(int)
    out = []
    for kind, start, end in spans(token_particles):
        own = phones[start:end]
        ratio = float(frames[start:end][own].mean() / base) if own.any() and base > 0 else float("nan")
        slope, shape = contour(np.asarray(f0)[ends[start]: ends[end]], frame_seconds)
        out.append({"particle": inventory[kind - 1], "duration_ratio": ratio, "pitch_slope_st_per_s": slope,
                    "contour": shape})
    return out


def summarise(records: list[dict[str, Any]], recorded: Optional[list[dict[str, Any]]] = None,
              table: Optional[dict[str, Expectation]] = None) -> dict[str, Any]:
    """Per particle: count, mean duration ratio and slope, the contours seen, and whether the
    synthesis meets ``table`` (default ``EXPECTED``; its mean ratio in range, its most common
    contour allowed); the recordings' same measures beside them when given."""
    table = EXPECTED if table is None else table
    out: dict[str, Any] = {}
    for name in sorted({r["particle"] for r in records}):
        mine = [r for r in records if r["particle"] == name]
        entry = _means(mine)
        if recorded is not None:
            entry["recorded"] = _means([r for r in recorded if r["particle"] == name])
        expected = table.get(name)
        if expected is not None:
            low, high = expected.duration_ratio
            shape = max(entry["contours"], key=entry["contours"].get)
            ratio = entry["duration_ratio"]
            entry["expected"] = {"contours": list(expected.contours), "duration_ratio": [low, high]}
            entry["meets"] = {"duration_ratio": ratio is not None and low <= ratio <= high,
                              "contour": shape in expected.contours}
        out[name] = entry
    return out


def _means(records: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> Optional[float]:          # None, not NaN: metrics.json stays strict JSON
        values = [r[key] for r in records if np.isfinite(r[key])]
        return float(np.mean(values)) if values else None

    contours: dict[str, int] = {}
    for r in records:
        contours[r["contour"]] = contours.get(r["contour"], 0) + 1
    return {"count": len(records), "duration_ratio": mean("duration_ratio"),
            "pitch_slope_st_per_s": mean("pitch_slope_st_per_s"), "contours": contours}
