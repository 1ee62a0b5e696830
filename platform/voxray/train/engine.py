"""DeepSpeed engines: one per optimised module (a GAN has two), each with its own AdamW, LR
schedule and DeepSpeed config; the non-finite step guard; and ``frozen``, which keeps one
engine's parameters out of another engine's backward pass."""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import torch
from torch import nn

from voxray.config import TrainConfig
from voxray.train.schedules import scheduler


class NonFiniteError(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


class FiniteAdamW(torch.optim.AdamW):
    """AdamW that skips a step whose gradients are not all finite, and clips the rest.

    It sets ``overflow``, which is how DeepSpeed's own optimizers report a skipped step, so the
    engine counts it in ``skipped_steps`` and holds the LR schedule back. DeepSpeed's ZeRO and
    mixed-precision optimizers already skip such steps; this covers ZeRO stage 0 in fp32, where
    DeepSpeed hands the step straight to the torch optimizer. There it also clips (``clip``, the
    max norm; ``build_engine`` turns DeepSpeed's own clipping off): the norm it needs for the
    check is the clipping norm, so the gradients are read once, with torch's multi-tensor
    kernels, instead of once here and once more in DeepSpeed's per-parameter clipping.
    ``grad_norm`` is the norm before clipping.
    """

    overflow = False
    grad_norm = float("nan")

    def __init__(self, params, *, clip: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.clip = clip

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True) if params else torch.tensor(0.0)
        self.grad_norm = float(norm)
        self.overflow = not math.isfinite(self.grad_norm)
        if self.overflow:
            return None
        if self.clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.clip, norm, foreach=True)
        return super().step(closure)


@dataclass(frozen=True)
class OptimizerSettings:
    """One engine's AdamW and LR schedule (a family's second optimizer has its own section)."""

    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    schedule: str
    warmup_steps: int
    max_steps: int
    lr_decay: float = 0.999
    lr_decay_steps: int = 1000

    @classmethod
    def of(cls, train: TrainConfig, **replace: Any) -> "OptimizerSettings":
        """``train``'s optimizer and schedule; ``replace`` sets fields of a second optimizer (the
        discriminator's lr, betas, eps, weight decay)."""
        settings = cls(lr=train.lr, betas=tuple(train.betas), eps=train.eps, weight_decay=train.weight_decay,
                       schedule=train.schedule, warmup_steps=train.warmup_steps, max_steps=train.max_steps,
                       lr_decay=train.lr_decay, lr_decay_steps=train.lr_decay_steps)
        return dataclasses.replace(settings, **{k: (tuple(v) if k == "betas" else v) for k, v in replace.items()})


def build_engine(model: nn.Module, settings: OptimizerSettings, ds_config: dict[str, Any],
                 parameters: Optional[Iterable[nn.Parameter] | list[dict[str, Any]]] = None):
    """(DeepSpeed engine, LR scheduler) over ``parameters`` (default: the model's trainable ones;
    or parameter groups, dicts with their own ``lr`` and ``weight_decay``, which the schedule
    scales alike).

    At ZeRO-0 in fp32, where DeepSpeed steps our optimizer directly, the optimizer clips (see
    ``FiniteAdamW``), and with one worker the engine skips its gradient all-reduce (a flatten,
    a reduction over one rank and a copy back: ~5 % of a small model's step, for nothing)."""
    import deepspeed

    trainable = list(parameters) if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    plain = ds_config["zero_optimization"]["stage"] == 0 and not any(
        ds_config.get(kind, {}).get("enabled") for kind in ("fp16", "bf16"))
    clip = ds_config.get("gradient_clipping", 0.0) if plain else 0.0
    if plain:
        ds_config = {**ds_config, "gradient_clipping": 0.0}
    optimizer = FiniteAdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay,
                            betas=settings.betas, eps=settings.eps, clip=clip)
    lr_schedule = scheduler(optimizer, schedule=settings.schedule, warmup_steps=settings.warmup_steps,
                            max_steps=settings.max_steps, decay=settings.lr_decay, decay_steps=settings.lr_decay_steps)
    engine, _, _, lr_schedule = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=lr_schedule,
                                                     config=ds_config, dist_init_required=False)
    if plain and engine.dp_world_size == 1:
        engine.enable_backward_allreduce = False
    return engine, lr_schedule


def gathered(engine):
    """Full parameters on every rank for the duration (ZeRO-3 partitions them); a no-op below 3."""
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)
    return nullcontext()


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """``requires_grad`` off for the modules' parameters for the duration, then restored.

    A GAN's generator loss backpropagates through the discriminator; without this, a ZeRO-2
    discriminator engine's gradient hooks fire during the generator engine's backward and
    corrupt its partitioned gradients (DeepSpeed #4923). Nothing is accumulated for the frozen
    parameters either."""
    parameters = [p for module in modules for p in module.parameters()]
    before = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, before):
            p.requires_grad_(flag)


def grad_norm(engine) -> float:
    """The global gradient norm of the engine's last step (NaN when it was skipped)."""
    norm = engine.get_global_grad_norm()
    if norm is None:
        norm = getattr(engine.optimizer, "grad_norm", float("nan"))
    return float(norm.item() if torch.is_tensor(norm) else norm)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters (ZeRO-3 partitions report their full size as ``ds_numel``)."""
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    return total, trainable
