"""Per-worker helpers of the training loop, shared by every model family.

The DeepSpeed engine and its optimizer, the EMA update under ZeRO-3, cross-worker reductions,
and the ``Run`` facts a worker reads from Ray Train's context.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from voxray.config import Config
from voxray.train.deepspeed_config import deepspeed_config
from voxray.train.schedules import EMA, scheduler


class NonFiniteError(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


class FiniteAdamW(torch.optim.AdamW):
    """AdamW that skips a step whose gradients are not all finite.

    It sets ``overflow``, which is how DeepSpeed's own optimizers report a skipped step, so the
    engine counts it in ``skipped_steps`` and holds the LR schedule back. DeepSpeed's ZeRO and
    mixed-precision optimizers already skip such steps; this covers ZeRO stage 0 in fp32, where
    DeepSpeed hands the step straight to the torch optimizer.
    """

    overflow = False
    grad_norm = float("nan")

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])) \
            if grads else torch.tensor(0.0)
        self.grad_norm = float(norm)
        self.overflow = not torch.isfinite(norm).item()
        if self.overflow:
            return None
        return super().step(closure)


@dataclass(frozen=True)
class WorkerInfo:
    rank: int
    world_size: int
    device: torch.device


def worker_info(use_gpu: bool) -> WorkerInfo:
    import ray.train

    context = ray.train.get_context()
    device = torch.device("cpu")
    if use_gpu and torch.cuda.is_available():
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    return WorkerInfo(context.get_world_rank(), context.get_world_size(), device)


def build_engine(model: nn.Module, config: Config, world_size: int):
    """A DeepSpeed engine over the trainable parameters, with AdamW and our LR schedule."""
    import deepspeed

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = FiniteAdamW(trainable, lr=config.train.lr, weight_decay=config.train.weight_decay,
                            betas=(0.9, 0.98), eps=1e-9)
    lr_schedule = scheduler(optimizer, schedule=config.train.schedule,
                            warmup_steps=config.train.warmup_steps, max_steps=config.train.max_steps)
    engine, optimizer, _, lr_schedule = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=lr_schedule,
        config=deepspeed_config(config.train, config.deepspeed, world_size),
        dist_init_required=False)
    return engine, lr_schedule


def init_deepspeed_distributed() -> None:
    """Ray Train already set up torch.distributed; DeepSpeed adopts that process group."""
    import deepspeed
    import ray.train

    context = ray.train.get_context()
    os.environ["LOCAL_RANK"] = str(context.get_local_rank())
    os.environ["RANK"] = str(context.get_world_rank())
    os.environ["WORLD_SIZE"] = str(context.get_world_size())
    deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)


def gathered(engine):
    """Full parameters on every rank for the duration (ZeRO-3 partitions them); a no-op below 3."""
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)
    return nullcontext()


def update_ema(ema: EMA, engine, step: int) -> None:
    with gathered(engine):
        ema.update(engine.module, step)


def grad_norm(engine) -> float:
    norm = engine.get_global_grad_norm()
    if norm is None:
        norm = getattr(engine.optimizer, "grad_norm", float("nan"))
    return float(norm.item() if torch.is_tensor(norm) else norm)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum across workers (identity when not distributed)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()
