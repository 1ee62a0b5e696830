"""Checkpoints under Ray Train: every rank writes its own piece, Ray merges them into one folder.

A checkpoint folder holds
  ds/<engine>/            DeepSpeed's checkpoint of each named engine (``model``; ``generator`` and
                          ``discriminator`` for a GAN): model states, every rank's ZeRO optimizer
                          shard (and ZeRO-3 parameter shard), its LR scheduler. One folder per
                          engine: DeepSpeed's file names would collide otherwise.
  rng/rank_<r>.pt         each rank's Python, NumPy, torch (and CUDA) RNG states and its data
                          stream's collate generator (crops and masks resume exactly)
  trainer_state.json      step, data position, early stopping, skipped-step counters (rank 0)
  ema/<engine>.safetensors  EMA weights of the engines that keep one (rank 0; every rank holds the
                          same full copy)

Every rank reports its folder to ``ray.train.report``; Ray Train copies them all into the same
storage folder, so no rank's shard is lost (saving only rank 0's folder loses the others' ZeRO
shards and the run cannot resume).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from voxray.train.data import DataPosition
from voxray.train.ema import EMA

DS_DIR = "ds"
EMA_DIR = "ema"


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
    units: float = 0                    # what the family counts as throughput (mel frames, tokens), all workers
    restarts: int = 0                   # times this run resumed from a checkpoint
    stop_reason: str = ""               # set when early stopping, the guard or a sweep ended the run

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        data = json.loads(text)
        data["position"] = DataPosition(**data["position"])
        return cls(**data)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(folder: str, *, engines: dict[str, Any], rank: int, state: TrainerState, emas: dict[str, EMA],
         collate_rng: Optional[dict[str, Any]], trainable_only: bool) -> None:
    """Write this rank's part of a checkpoint into the local ``folder``."""
    os.makedirs(os.path.join(folder, "rng"), exist_ok=True)
    for name, engine in engines.items():
        engine.save_checkpoint(os.path.join(folder, DS_DIR), tag=name, save_latest=False,
                               exclude_frozen_parameters=trainable_only)
    torch.save({**_rng_state(), "collate": collate_rng}, os.path.join(folder, "rng", f"rank_{rank}.pt"))
    if rank == 0:
        with open(os.path.join(folder, "trainer_state.json"), "w") as handle:
            handle.write(state.to_json())
        os.makedirs(os.path.join(folder, EMA_DIR), exist_ok=True)
        for name, ema in emas.items():
            save_file({k: v.contiguous() for k, v in ema.state_dict().items()},
                      os.path.join(folder, EMA_DIR, f"{name}.safetensors"))


def load(folder: str, *, engines: dict[str, Any], rank: int, emas: dict[str, EMA],
         trainable_only: bool) -> tuple[TrainerState, Optional[dict[str, Any]]]:
    """Restore engines (optimizers, schedulers), EMAs and RNG from a merged checkpoint folder;
    returns the trainer state and the collate generator's state (None if absent). An EMA keeps
    the run's own decay (``train.ema_decay`` may change on resume); an EMA the checkpoint does not
    hold (turned on at resume) starts from the restored weights (``fresh_emas`` names them)."""
    for name, engine in engines.items():
        path, _ = engine.load_checkpoint(os.path.join(folder, DS_DIR), tag=name, load_optimizer_states=True,
                                         load_lr_scheduler_states=True, load_module_strict=not trainable_only)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint of the engine {name!r} under {folder}/{DS_DIR}/{name}")
    for name, ema in emas.items():
        if name in fresh_emas(folder, emas):
            from voxray.train.engine import gathered

            with gathered(engines[name]):
                ema.restart(engines[name].module)
            continue
        decay = ema.decay
        ema.load_state_dict(load_file(os.path.join(folder, EMA_DIR, f"{name}.safetensors")))
        ema.decay = decay
    collate_rng = None
    rng_file = os.path.join(folder, "rng", f"rank_{rank}.pt")
    if os.path.exists(rng_file):          # absent when resuming with more workers than before
        states = torch.load(rng_file, weights_only=False)
        _set_rng_state(states)
        collate_rng = states.get("collate")
    with open(os.path.join(folder, "trainer_state.json")) as handle:
        return TrainerState.from_json(handle.read()), collate_rng


def fresh_emas(folder: str, emas: dict[str, EMA]) -> list[str]:
    """The engines whose EMA the checkpoint in ``folder`` does not hold."""
    return [name for name in emas if not os.path.exists(os.path.join(folder, EMA_DIR, f"{name}.safetensors"))]


def evaluation_weights(folder: str, engine: str, zero_stage: int, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The weights a run validated and would export at a merged checkpoint ``folder`` (local):
    the EMA's when it kept one (every floating-point entry of the model), else the engine's
    module weights: DeepSpeed's module states at ZeRO 0-2, its partitioned fp32 shards gathered at
    ZeRO-3 (``zero_to_fp32``; no rank's file holds them whole). With ``trainable_only`` (LoRA)
    the engine saved only the trainable parameters: load them over the base weights."""
    ema_file = os.path.join(folder, EMA_DIR, f"{engine}.safetensors")
    if os.path.exists(ema_file):
        state = load_file(ema_file)
        return {k[len("shadow."):]: v for k, v in state.items() if k.startswith("shadow.")}
    if zero_stage == 3:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(os.path.join(folder, DS_DIR), tag=engine,
                                                        exclude_frozen_parameters=trainable_only)
    states = os.path.join(folder, DS_DIR, engine, "mp_rank_00_model_states.pt")
    if not os.path.exists(states):
        raise FileNotFoundError(f"{folder} holds no weights of the engine {engine!r} ({states} is missing)")
    return torch.load(states, map_location="cpu", weights_only=False)["module"]


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """``weights`` (``evaluation_weights``) into ``model``; entries it lacks (the frozen base of a
    LoRA checkpoint, integer buffers an EMA does not average) keep the model's own."""
    own = model.state_dict()
    unknown = sorted(set(weights) - set(own))
    if unknown:
        raise ValueError(f"the checkpoint's weights do not fit the run's model: {unknown[:5]}")
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in weights.items()}})
