"""Early stopping (``train.patience``) across a resume: the stopper's state goes through the
trainer state's JSON at every validation, and a run resumed from any checkpoint stops at the
same validation, with the same best, as the uninterrupted one."""

from __future__ import annotations

import math

from voxray.train.checkpoint import TrainerState
from voxray.train.early_stopping import EarlyStopping

VALUES = [1.0, 0.8, 0.79, 0.85, 0.7, 0.71, 0.705, 0.72, 0.69, 0.75]   # val metric, lower is better


def run(resume_after: int | None, patience: int = 3, min_delta: float = 0.02) -> tuple[int, float]:
    """(the validation it stops at, the best) with a resume from the checkpoint after validation
    ``resume_after`` (None: uninterrupted)."""
    stopper = EarlyStopping(patience, min_delta)
    for i, value in enumerate(VALUES):
        if stopper.update(value):
            return i, stopper.best
        if i == resume_after:       # checkpoint, process gone, restore from the file's text
            saved = TrainerState(step=i, early_stopping=stopper.state()).to_json()
            stopper = EarlyStopping(patience, min_delta, **TrainerState.from_json(saved).early_stopping)
    return len(VALUES), stopper.best


def test_a_resumed_run_stops_where_the_uninterrupted_one_does():
    straight = run(None)
    assert straight == (7, 0.7)         # 0.71, 0.705, 0.72 do not beat 0.7 by 0.02: third bad validation
    for resume_after in range(len(VALUES)):
        assert run(resume_after) == straight, resume_after


def test_patience_zero_never_stops_and_the_first_value_always_improves():
    stopper = EarlyStopping(0, 0.0)
    assert not any(stopper.update(v) for v in VALUES) and stopper.best == min(VALUES)
    fresh = EarlyStopping(2, 0.0, **TrainerState.from_json(TrainerState().to_json()).early_stopping)
    assert math.isinf(fresh.best) and fresh.improves(1e9)
