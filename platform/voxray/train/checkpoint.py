"""Checkpoints under Ray Train: every rank writes its own piece, Ray merges them into one folder.

A checkpoint folder holds
  ds/                     DeepSpeed's engine checkpoint: model states, every rank's ZeRO optimizer
                          shard (and ZeRO-3 parameter shard), the LR scheduler
  rng/rank_<r>.pt         each rank's Python, NumPy and torch RNG states (dropout resumes exactly)
  trainer_state.json      step, data position, early stopping, skipped-step counters (rank 0)
  ema.safetensors         the EMA weights (rank 0; every rank holds the same full copy)

Every rank reports its folder to ``ray.train.report``; Ray Train copies them all into the same
storage folder, so no rank's shard is lost (saving only rank 0's folder loses the others' ZeRO
shards and the run cannot resume).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from voxray.train.data import DataPosition
from voxray.train.schedules import EMA

DS_TAG = "ds"


@dataclass
class EarlyStopping:
    """Stop after ``patience`` validations without an improvement of at least ``min_delta``."""

    patience: int
    min_delta: float
    best: float = float("inf")
    bad_validations: int = 0

    def update(self, value: float) -> bool:
        """Record a validation loss; True when the run should stop."""
        if value < self.best - self.min_delta:
            self.best, self.bad_validations = value, 0
        else:
            self.bad_validations += 1
        return self.patience > 0 and self.bad_validations >= self.patience


@dataclass
class TrainerState:
    step: int = 0                       # optimizer steps applied or skipped (DeepSpeed's global_steps)
    position: DataPosition = field(default_factory=DataPosition)
    early_stopping: dict = field(default_factory=dict)
    skipped_steps: int = 0              # non-finite steps skipped, in total
    consecutive_skipped: int = 0
    mel_frames: int = 0                 # mel frames trained on, all workers
    restarts: int = 0                   # times this run resumed from a checkpoint
    stop_reason: str = ""               # set when early stopping or the non-finite guard ended the run

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        data = json.loads(text)
        data["position"] = DataPosition(**data["position"])
        return cls(**data)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save(folder: str, *, engine, rank: int, state: TrainerState, ema: EMA, trainable_only: bool) -> None:
    """Write this rank's part of a checkpoint into the local ``folder``."""
    os.makedirs(os.path.join(folder, "rng"), exist_ok=True)
    engine.save_checkpoint(folder, tag=DS_TAG, save_latest=False, exclude_frozen_parameters=trainable_only)
    torch.save(_rng_state(), os.path.join(folder, "rng", f"rank_{rank}.pt"))
    if rank == 0:
        with open(os.path.join(folder, "trainer_state.json"), "w") as handle:
            handle.write(state.to_json())
        save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, os.path.join(folder, "ema.safetensors"))


def load(folder: str, *, engine, rank: int, ema: EMA, trainable_only: bool) -> TrainerState:
    """Restore engine, optimizer, scheduler, EMA and RNG from a merged checkpoint folder."""
    path, _ = engine.load_checkpoint(folder, tag=DS_TAG, load_optimizer_states=True,
                                     load_lr_scheduler_states=True, load_module_strict=not trainable_only)
    if path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint under {folder}/{DS_TAG}")
    ema.load_state_dict(load_file(os.path.join(folder, "ema.safetensors")))
    rng_file = os.path.join(folder, "rng", f"rank_{rank}.pt")
    if os.path.exists(rng_file):          # absent when resuming with more workers than before
        _set_rng_state(torch.load(rng_file, weights_only=False))
    with open(os.path.join(folder, "trainer_state.json")) as handle:
        return TrainerState.from_json(handle.read())
