"""Curriculum: training stages by step, each on the rows its conditions keep (``train.curriculum``).

Stage i trains the steps from the previous stage's ``until_step`` up to its own; after the last,
every row trains. Each stage is a Ray Data dataset of its own (the train split filtered by the
stage's conditions, ``stage_datasets``), split across workers like the train split; a worker
streams the shard of the stage its step is in (``CurriculumStream``). The stage and the position
inside its shard are part of the checkpoint (``DataPosition.stage``): a resumed run lands in the
stage its step belongs to, at the batch it had reached. Validation always uses the whole val split.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from voxray.config.sections import CurriculumStage, parse_condition
from voxray.train.data import BatchStream, DataPosition

_OPS = {"<=": pc.less_equal, ">=": pc.greater_equal, "==": pc.equal, "!=": pc.not_equal, "<": pc.less,
        ">": pc.greater}
EVERYTHING = -1           # the stage index after the last stage: every row


def stage_at(stages: Sequence[CurriculumStage], step: int) -> int:
    """The stage that trains step ``step + 1`` (after ``step`` steps): an index, or EVERYTHING."""
    return next((i for i, stage in enumerate(stages) if step < stage.until_step), EVERYTHING)


def describe(stages: Sequence[CurriculumStage], index: int) -> str:
    if index == EVERYTHING:
        return f"stage {len(stages) + 1}/{len(stages) + 1} (all rows)"
    stage = stages[index]
    name = f" {stage.name!r}" if stage.name else ""
    where = " and ".join(stage.where) or "all rows"
    return f"stage {index + 1}/{len(stages) + 1}{name} ({where}) until step {stage.until_step}"


def dataset_name(index: int) -> str:
    return "train" if index == EVERYTHING else f"train_stage{index}"


def columns(stages: Sequence[CurriculumStage]) -> list[str]:
    """The store columns the stages' conditions read."""
    return sorted({parse_condition(c)[0] for stage in stages for c in stage.where})


def keep(table: pa.Table, conditions: Sequence[str]) -> pa.Table:
    """The rows of ``table`` for which every condition holds (a null value never does)."""
    mask = None
    for condition in conditions:
        column, op, value = parse_condition(condition)
        result = pc.fill_null(_OPS[op](table[column], pa.scalar(value)), False)
        mask = result if mask is None else pc.and_(mask, result)
    return table if mask is None else table.filter(mask)


def stage_datasets(train: Any, stages: Sequence[CurriculumStage]) -> dict[str, Any]:
    """One Ray Data dataset per stage: the train split through the stage's filter."""
    def stage_filter(conditions):
        return lambda table: keep(table, conditions)

    return {dataset_name(i): train.map_batches(stage_filter(tuple(stage.where)), batch_format="pyarrow")
            for i, stage in enumerate(stages)}


class CurriculumStream:
    """A ``BatchStream`` over the current stage's shard; at a stage's first step it opens the next
    stage's shard at its beginning (and says so through ``on_stage``). Same interface as
    ``BatchStream`` for the loop and the checkpoint (``next``, ``position``, ``last_padding``,
    ``rng_state``)."""

    def __init__(self, stages: Sequence[CurriculumStage], step: Callable[[], int],
                 open_stream: Callable[[str, DataPosition], BatchStream], position: DataPosition,
                 on_stage: Callable[[int], None]) -> None:
        self.stages, self.step, self.open_stream, self.on_stage = stages, step, open_stream, on_stage
        self.stage: Optional[int] = None
        self._resume_at = position
        self.stream: Optional[BatchStream] = None
        self._rng_state: Optional[dict] = None

    @property
    def position(self) -> DataPosition:
        return self.stream.position if self.stream is not None else self._resume_at

    @property
    def last_padding(self) -> float:
        return self.stream.last_padding if self.stream is not None else 0.0

    def rng_state(self) -> dict[str, Any]:
        return self.stream.rng_state() if self.stream is not None else self._rng_state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._rng_state = state
        if self.stream is not None:
            self.stream.set_rng_state(state)

    def next(self) -> dict[str, Any]:
        stage = stage_at(self.stages, self.step())
        if stage != self.stage:
            if self.stream is not None:
                self._rng_state = self.stream.rng_state()
            resumed = self._resume_at.stage == stage and self.stream is None
            position = self._resume_at if resumed else DataPosition(stage=stage)
            self.stream = self.open_stream(dataset_name(stage), position)
            if self._rng_state is not None:
                self.stream.set_rng_state(self._rng_state)
            self.stage = stage
            self.on_stage(stage)
        try:
            return self.stream.next()
        except RuntimeError as exc:
            raise RuntimeError(f"curriculum {describe(self.stages, stage)}: {exc}") from None
