"""Montreal Forced Aligner TextGrids -> phone tokens and per-token durations in mel frames.

Both Praat text formats (long and short) reduce to the same stream of values once the
``[n]`` indices and ``<exists>`` markers are dropped, so one tokenizer reads both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# Labels MFA uses for silence; interior ones become the "sp" (short pause) token.
SILENCE_LABELS = {"", "sil", "sp", "spn", "<eps>"}
PAUSE_TOKEN = "sp"

_VALUE = re.compile(r'\[\s*\d*\s*\]|<exists>|"((?:[^"]|"")*)"|(?<![\w.])(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)')


class TextGridError(ValueError):
    pass


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    label: str


def _values(text: str) -> list[object]:
    values: list[object] = []
    for match in _VALUE.finditer(text):
        string, number = match.group(1), match.group(2)
        if string is not None:
            values.append(string.replace('""', '"'))
        elif number is not None:
            values.append(float(number))
    return values


def parse_textgrid(text: str) -> dict[str, list[Interval]]:
    """Interval tiers by name. Point tiers are skipped."""
    values = _values(text.lstrip("\ufeff"))
    if len(values) < 5 or values[0] != "ooTextFile" or values[1] != "TextGrid":
        raise TextGridError("not a Praat TextGrid (expected 'ooTextFile' / 'TextGrid' header)")
    position = 5  # type, class, xmin, xmax, size
    tiers: dict[str, list[Interval]] = {}
    try:
        for _ in range(int(values[4])):
            tier_class, name = values[position], values[position + 1]
            count = int(values[position + 4])
            position += 5
            if tier_class == "IntervalTier":
                tiers[str(name)] = [
                    Interval(float(values[i]), float(values[i + 1]), str(values[i + 2]).strip())
                    for i in range(position, position + 3 * count, 3)
                ]
                position += 3 * count
            else:  # TextTier: (time, mark) pairs
                position += 2 * count
    except (IndexError, ValueError, TypeError) as exc:
        raise TextGridError(f"truncated or malformed TextGrid: {exc}") from exc
    return tiers


def _tier(tiers: dict[str, list[Interval]], kind: str) -> list[Interval]:
    """The tier of ``kind`` ("phones", "words"): by its name, its singular or capitalised, or
    MFA's multi-speaker "<speaker> - phones"."""
    for name in (kind, kind.rstrip("s"), kind.capitalize()):
        if name in tiers:
            return tiers[name]
    for name, intervals in tiers.items():
        if name.endswith(kind):
            return intervals
    raise TextGridError(f"no {kind.rstrip('s')} tier (tiers: {sorted(tiers)})")


def phone_tier(tiers: dict[str, list[Interval]]) -> list[Interval]:
    return _tier(tiers, "phones")


def spoken_span(intervals: list[Interval]) -> list[Interval]:
    """The intervals from the first to the last spoken phone (edge silences dropped)."""
    spoken = [i for i, iv in enumerate(intervals) if iv.label.lower() not in SILENCE_LABELS]
    if not spoken:
        raise TextGridError("the phone tier has no spoken interval")
    return intervals[spoken[0]: spoken[-1] + 1]


def phone_labels(intervals: list[Interval]) -> list[str]:
    return [PAUSE_TOKEN if iv.label.lower() in SILENCE_LABELS else iv.label for iv in intervals]


def phones_and_durations(
    intervals: list[Interval], trim_start_seconds: float, n_frames: int, frame_seconds: float
) -> tuple[list[str], list[int]]:
    """Tokens and frame counts summing exactly to ``n_frames``.

    Leading and trailing silences are dropped (the audio was trimmed); interior silences
    become ``sp``. Boundaries are rounded once, on the cumulative time axis, so rounding
    errors never accumulate; the last boundary is pinned to ``n_frames``.
    """
    kept = spoken_span(intervals)
    tokens = phone_labels(kept)
    ends = np.array([iv.end for iv in kept]) - trim_start_seconds
    bounds = np.clip(np.rint(ends / frame_seconds), 0, n_frames).astype(np.int64)
    bounds[-1] = n_frames
    bounds = np.maximum.accumulate(bounds)
    durations = np.diff(np.concatenate([[0], bounds]))
    return tokens, durations.astype(int).tolist()


def word_tier(tiers: dict[str, list[Interval]]) -> list[Interval]:
    """The words tier (code-switching needs MFA's words to give each phone its word's tags)."""
    return _tier(tiers, "words")


def phone_words(phones: list[Interval], words: list[Interval]) -> tuple[list[int], int]:
    """For each phone, the index of the spoken word it lies in (by its midpoint; -1 for a pause
    or a phone outside every word), and the number of spoken words."""
    spoken = [w for w in words if w.label.lower() not in SILENCE_LABELS]
    owners = []
    for phone in phones:
        middle = (phone.start + phone.end) / 2
        owner = next((i for i, w in enumerate(spoken) if w.start <= middle < w.end), -1)
        owners.append(-1 if phone.label.lower() in SILENCE_LABELS else owner)
    return owners, len(spoken)
