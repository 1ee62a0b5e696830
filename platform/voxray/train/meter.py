"""Sums between two log points, reduced across workers when logged: the means of named values
per micro-batch, and the rate of whatever the family counts (mel frames, tokens, samples)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from voxray.train.distributed import all_reduce_sum


class Meter:
    """``add`` per micro-batch, ``reduce`` (every rank, it all-reduces) per log point."""

    def __init__(self, names: tuple[str, ...], unit: str) -> None:
        self.names = names
        self.unit = unit                        # e.g. "mel_frames": logged as mel_frames_per_s
        self.reset()

    def reset(self) -> None:
        """Start a new interval (after a log point, and after validation: not training time)."""
        self.sums = np.zeros(len(self.names) + 3)   # values, micro-batches, units, padding
        self.started = time.perf_counter()

    def add(self, values: dict[str, Union[torch.Tensor, float]], units: float, padding: float = 0.0) -> None:
        """One micro-batch: its values (absent names count 0), its units and padding fraction."""
        self.sums[: len(self.names)] += [float(values[name].detach() if torch.is_tensor(values[name])
                                               else values[name]) if name in values else 0.0
                                         for name in self.names]
        self.sums[len(self.names):] += [1, units, padding]

    def reduce(self, device: torch.device) -> "Reading":
        """Means over all workers' micro-batches, units per wall-second, and the units counted."""
        totals = all_reduce_sum(self.sums.tolist(), device)
        count, units, padding = totals[len(self.names):]
        seconds = time.perf_counter() - self.started
        return Reading(means={name: totals[i] / max(count, 1) for i, name in enumerate(self.names)}, unit=self.unit,
                       units=units, units_per_s=units / seconds, padding_fraction=padding / max(count, 1))


@dataclass(frozen=True)
class Reading:
    """A log point's reduced meter: the named means, and the throughput in the family's unit."""

    means: dict[str, float]
    unit: str                     # what the family counts: mel_frames, code_frames, samples
    units: float                  # counted since the last reset, all workers
    units_per_s: float
    padding_fraction: float

    def scalars(self) -> dict[str, float]:
        """What the run log records: the means, ``<unit>_per_s`` and ``padding_fraction``."""
        return {**self.means, f"{self.unit}_per_s": self.units_per_s, "padding_fraction": self.padding_fraction}
