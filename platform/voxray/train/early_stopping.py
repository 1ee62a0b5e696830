"""Early stopping on the run's metric (``train.patience``, ``train.min_delta``): its state is two
numbers, kept in the trainer state of every checkpoint, so a resumed run stops where the
uninterrupted one would have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStopping:
    """Stop after ``patience`` validations without an improvement of at least ``min_delta``
    (``patience`` 0: never)."""

    patience: int
    min_delta: float
    best: float = float("inf")
    bad_validations: int = 0

    def update(self, value: float) -> bool:
        """Record a validation's value (lower is better); True when the run should stop."""
        if value < self.best - self.min_delta:
            self.best, self.bad_validations = value, 0
        else:
            self.bad_validations += 1
        return self.patience > 0 and self.bad_validations >= self.patience

    def improves(self, value: float) -> bool:
        """Whether ``value`` would count as an improvement (before ``update``)."""
        return value < self.best - self.min_delta

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (``TrainerState.early_stopping``); the settings come from the config."""
        return {"best": self.best, "bad_validations": self.bad_validations}
