"""Learning-rate schedules (multipliers of the base lr) and EMA weights."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_multiplier(step: int, *, schedule: str, warmup_steps: int, max_steps: int,
                  min_ratio: float = 0.1) -> float:
    """Linear warmup to 1, then cosine to ``min_ratio``, noam (1/sqrt) decay, or constant."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    match schedule:
        case "constant":
            return 1.0
        case "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        case "noam":
            return math.sqrt(max(warmup_steps, 1) / max(step + 1, 1))
    raise ValueError(f"unknown schedule {schedule!r} (choose from cosine, noam, constant)")


def scheduler(optimizer: torch.optim.Optimizer, *, schedule: str, warmup_steps: int,
              max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(
        step, schedule=schedule, warmup_steps=warmup_steps, max_steps=max_steps))


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        """The decay used at optimizer step ``step``: warmed up as (1 + step) / (10 + step), so that
        early validations see trained weights rather than the initial ones."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        decay = self.decay if step is None else self.decay_at(step)
        for name, value in model.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(value.detach().to(self.shadow[name].dtype), 1 - decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"decay": torch.tensor(self.decay), **{f"shadow.{k}": v for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.decay = float(state["decay"])
        self.shadow = {k[len("shadow."):]: v.clone() for k, v in state.items() if k.startswith("shadow.")}

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (for validation and export)."""
        model.load_state_dict({**model.state_dict(), **self.shadow})
