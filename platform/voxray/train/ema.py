"""EMA weights: an exponential moving average of a model's parameters and buffers, updated
after every applied optimizer step (gathered first under ZeRO-3), used for validation and export."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from voxray.train.engine import gathered


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
    def restart(self, model: nn.Module) -> None:
        """Start averaging again from ``model``'s current weights (a resumed run that turned the
        EMA on, from a checkpoint that kept none)."""
        state = model.state_dict()
        self.shadow = {k: state[k].detach().to(v.dtype).clone() for k, v in self.shadow.items()}

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (for validation and export)."""
        model.load_state_dict({**model.state_dict(), **self.shadow})


def make_ema(model: nn.Module, decay: float) -> Optional[EMA]:
    """An EMA of ``model`` when ``decay`` > 0; None (no copy, no per-step update) when off."""
    return EMA(model, decay) if decay > 0 else None


def update_ema(ema: Optional[EMA], engine, step: int) -> None:
    """Average the engine's current weights in (full weights on every rank at ZeRO-3); nothing
    without an EMA."""
    if ema is None:
        return
    with gathered(engine):
        ema.update(engine.module, step)


@torch.no_grad()
def load_eval_weights(eval_model: nn.Module, engine, ema: Optional[EMA]) -> None:
    """The weights validation and export use: the EMA's when one is kept, else the trained ones.
    Without an EMA at ZeRO-3 this gathers the partitioned parameters: call it on every rank."""
    if ema is not None:
        ema.copy_to(eval_model)
        return
    with gathered(engine):
        eval_model.load_state_dict(engine.module.state_dict())
