"""Learning-rate schedules: multipliers of the base learning rate, per optimizer step."""

from __future__ import annotations

import math

import torch


def lr_multiplier(step: int, *, schedule: str, warmup_steps: int, max_steps: int,
                  min_ratio: float = 0.1, decay: float = 0.999, decay_steps: int = 1000) -> float:
    """Linear warmup to 1, then cosine to ``min_ratio``, noam (1/sqrt) decay, constant, or
    exponential (``decay`` per ``decay_steps``, smoothly: HiFi-GAN's 0.999 per epoch)."""
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
        case "exponential":
            return decay ** ((step - warmup_steps) / decay_steps)
    raise ValueError(f"unknown schedule {schedule!r} (choose from cosine, noam, constant, exponential)")


def scheduler(optimizer: torch.optim.Optimizer, *, schedule: str, warmup_steps: int, max_steps: int,
              decay: float = 0.999, decay_steps: int = 1000) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(
        step, schedule=schedule, warmup_steps=warmup_steps, max_steps=max_steps, decay=decay,
        decay_steps=decay_steps))
