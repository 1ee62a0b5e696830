"""Counts and feature moments, accumulated per write task and merged on the driver.

Counts reconcile exactly: ``kept + rejected + malformed == input_rows``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from voxray.data import codes
from voxray.data.splits import SPLITS


@dataclass
class Moments:
    """Running count / sum / sum of squares / min / max over rows of ``[N, channels]``."""

    channels: int
    count: int = 0
    total: np.ndarray = field(default=None)  # type: ignore[assignment]
    squares: np.ndarray = field(default=None)  # type: ignore[assignment]
    low: np.ndarray = field(default=None)  # type: ignore[assignment]
    high: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = np.zeros(self.channels)
            self.squares = np.zeros(self.channels)
            self.low = np.full(self.channels, np.inf)
            self.high = np.full(self.channels, -np.inf)

    def add(self, values: np.ndarray) -> None:
        values = values.reshape(-1, self.channels).astype(np.float64)
        if values.shape[0] == 0:
            return
        self.count += values.shape[0]
        self.total += values.sum(axis=0)
        self.squares += np.square(values).sum(axis=0)
        self.low = np.minimum(self.low, values.min(axis=0))
        self.high = np.maximum(self.high, values.max(axis=0))

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total.tolist(), "squares": self.squares.tolist(),
                "low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "Moments":
        arrays = {k: np.asarray(value[k], dtype=np.float64) for k in ("total", "squares", "low", "high")}
        return cls(len(arrays["total"]), value["count"], **arrays)

    def merge(self, other: "Moments") -> None:
        self.count += other.count
        self.total += other.total
        self.squares += other.squares
        self.low = np.minimum(self.low, other.low)
        self.high = np.maximum(self.high, other.high)

    def summary(self) -> dict[str, Any]:
        if self.count == 0:
            return {"count": 0}
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - np.square(mean), 0.0))
        overall_mean = self.total.sum() / (self.count * self.channels)
        overall_std = float(np.sqrt(max(
            self.squares.sum() / (self.count * self.channels) - overall_mean**2, 0.0)))
        out: dict[str, Any] = {"count": self.count, "mean": float(overall_mean), "std": overall_std,
                               "min": float(self.low.min()), "max": float(self.high.max())}
        if self.channels > 1:
            out["mean_per_channel"] = [round(float(v), 6) for v in mean]
            out["std_per_channel"] = [round(float(v), 6) for v in std]
        return out


@dataclass
class PartialStats:
    n_mels: int
    codebooks: Optional[tuple[int, int]] = None     # (n_codebooks, codebook_size) when rows carry codes
    input_rows: int = 0
    kept: int = 0
    rejected: int = 0
    malformed: int = 0
    reasons: Counter = field(default_factory=Counter)
    split_utterances: Counter = field(default_factory=Counter)
    split_seconds: Counter = field(default_factory=Counter)
    speakers: Counter = field(default_factory=Counter)
    languages: Counter = field(default_factory=Counter)
    mel: Moments = None  # type: ignore[assignment]
    f0: Moments = field(default_factory=lambda: Moments(1))  # voiced frames only
    energy: Moments = field(default_factory=lambda: Moments(1))
    code_counts: Optional[np.ndarray] = None        # [n_codebooks, codebook_size] uses of each code
    code_frames: int = 0
    code_switched: int = 0                          # kept rows whose words are in more than one language
    particles: Counter = field(default_factory=Counter)   # particle words by type id (str: JSON keys)
    augmented: int = 0                              # augmented train rows (not input rows: counted apart)
    augmented_seconds: float = 0.0
    transforms: Counter = field(default_factory=Counter)  # augmented rows by transform (speed, pitch, noise)
    codes_only: Counter = field(default_factory=Counter)  # kept rows without audio, by split (talker only)
    denoised: int = 0                               # kept rows preprocess.denoise cleaned
    denoise_db: float = 0.0                         # their noise floors lowered by, summed (dB)

    def __post_init__(self) -> None:
        if self.mel is None:
            self.mel = Moments(self.n_mels)
        if self.codebooks and self.code_counts is None:
            self.code_counts = np.zeros(self.codebooks, dtype=np.int64)

    def add_rejects(self, rejects: list[dict]) -> None:
        self.input_rows += len(rejects)
        for reject in rejects:
            if reject["status"] == "malformed":
                self.malformed += 1
            else:
                self.rejected += 1
            self.reasons[reject["reason"]] += 1

    def add_kept(self, table: pa.Table) -> None:
        """Kept rows: a recording's counts and feature moments; augmented rows only their own counts."""
        if "augmented" in table.column_names and table.num_rows:
            made = pc.is_valid(table["augmented"])
            extra = table.filter(made)
            self.augmented += extra.num_rows
            self.augmented_seconds += float(pc.sum(extra["audio_seconds"]).as_py() or 0)
            for suffix in extra["augmented"].to_pylist():
                self.transforms.update(re.findall(r"speed|pitch|noise", suffix))
            table = table.filter(pc.invert(made))
        self.input_rows += table.num_rows
        self.kept += table.num_rows
        for split, seconds, speaker, language, n_frames in zip(
            table["split"].to_pylist(), table["audio_seconds"].to_pylist(),
            table["speaker_id"].to_pylist(), table["language"].to_pylist(), table["n_frames"].to_pylist(),
        ):
            if n_frames == 0:
                self.codes_only[split] += 1
            self.split_utterances[split] += 1
            self.split_seconds[split] += seconds
            self.speakers[speaker] += 1
            self.languages[language] += 1
        self.code_switched += int(pc.sum(table["code_switched"]).as_py() or 0)
        if "denoise_db" in table.column_names:
            lowered = pc.drop_null(table["denoise_db"])
            self.denoised += len(lowered)
            self.denoise_db += float(pc.sum(lowered).as_py() or 0)
        for particles in table["token_particles"].to_pylist():
            # a particle word is a run of tokens of one type (words are separated by boundary tokens)
            self.particles.update(str(p) for i, p in enumerate(particles) if p and (i == 0 or particles[i - 1] != p))
        if table.num_rows:
            mel = pc.list_flatten(pc.list_flatten(table["mel"])).to_numpy()
            self.mel.add(mel)
            f0 = pc.list_flatten(table["f0"]).to_numpy()
            self.f0.add(f0[f0 > 0])
            self.energy.add(pc.list_flatten(table["energy"]).to_numpy())
        if self.code_counts is not None and table.num_rows:
            self.code_frames += codes.count(table["audio_codes"], self.code_counts)

    def merge(self, other: "PartialStats") -> "PartialStats":
        for name in ("input_rows", "kept", "rejected", "malformed", "code_switched", "augmented", "augmented_seconds",
                     "denoised", "denoise_db"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("reasons", "split_utterances", "split_seconds", "speakers", "languages", "particles",
                     "transforms", "codes_only"):
            getattr(self, name).update(getattr(other, name))
        self.mel.merge(other.mel)
        self.f0.merge(other.f0)
        self.energy.merge(other.energy)
        if other.code_counts is not None:
            self.code_counts = other.code_counts.copy() if self.code_counts is None else self.code_counts + other.code_counts
            self.code_frames += other.code_frames
        return self

    def to_json(self) -> dict[str, Any]:
        """A task's partial stats as JSON (its marker in ``_progress/done``)."""
        return {**{name: getattr(self, name) for name in ("input_rows", "kept", "rejected", "malformed", "code_frames",
                                                          "code_switched", "augmented", "augmented_seconds",
                                                          "denoised", "denoise_db")},
                **{name: dict(getattr(self, name)) for name in ("reasons", "split_utterances", "split_seconds",
                                                               "speakers", "languages", "particles", "transforms",
                                                               "codes_only")},
                "mel": self.mel.to_json(), "f0": self.f0.to_json(), "energy": self.energy.to_json(),
                "code_counts": None if self.code_counts is None else self.code_counts.tolist()}

    @classmethod
    def from_json(cls, value: dict[str, Any], n_mels: int, codebooks: Optional[tuple[int, int]]) -> "PartialStats":
        stats = cls(n_mels, codebooks, mel=Moments.from_json(value["mel"]), f0=Moments.from_json(value["f0"]),
                    energy=Moments.from_json(value["energy"]),
                    code_counts=None if value["code_counts"] is None else np.asarray(value["code_counts"], np.int64))
        for name in ("input_rows", "kept", "rejected", "malformed", "code_frames", "code_switched", "augmented",
                     "augmented_seconds"):
            setattr(stats, name, value[name])
        stats.denoised, stats.denoise_db = value.get("denoised", 0), value.get("denoise_db", 0.0)   # older markers
        for name in ("reasons", "split_utterances", "split_seconds", "speakers", "languages", "particles",
                     "transforms", "codes_only"):
            setattr(stats, name, Counter(value.get(name, {})))       # codes_only: markers of older runs lack it
        return stats

    def move(self, from_split: str, to_split: str, seconds: float) -> None:
        self.split_utterances[from_split] -= 1
        self.split_utterances[to_split] += 1
        self.split_seconds[from_split] -= seconds
        self.split_seconds[to_split] += seconds

    def counts(self) -> dict[str, Any]:
        return {
            "input_rows": self.input_rows, "kept": self.kept, "rejected": self.rejected,
            "malformed": self.malformed,
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "reconciles": self.kept + self.rejected + self.malformed == self.input_rows,
        }

    def splits(self) -> dict[str, dict[str, float]]:
        return {s: {"utterances": self.split_utterances.get(s, 0),
                    "audio_seconds": round(self.split_seconds.get(s, 0.0), 3),
                    **({"codes_only": self.codes_only[s]} if self.codes_only.get(s) else {})} for s in SPLITS}

    def features(self) -> dict[str, Any]:
        return {"mel": self.mel.summary(), "f0_voiced": self.f0.summary(),
                "energy": self.energy.summary()}
