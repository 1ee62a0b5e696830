"""Our config -> a DeepSpeed config. The batch arithmetic lives here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxray.config import DeepSpeedSection, TrainConfig


@dataclass(frozen=True)
class BatchMath:
    micro_batch: int      # utterances per worker per forward/backward
    grad_accum: int       # micro-steps per optimizer step
    world_size: int       # data-parallel workers

    @property
    def global_batch(self) -> int:
        """Utterances per optimizer step across all workers."""
        return self.micro_batch * self.grad_accum * self.world_size


def batch_math(train: TrainConfig, world_size: int) -> BatchMath:
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return BatchMath(train.batch_size, train.grad_accum, world_size)


def deepspeed_config(train: TrainConfig, section: DeepSpeedSection, world_size: int) -> dict[str, Any]:
    math = batch_math(train, world_size)
    zero: dict[str, Any] = {"stage": section.zero_stage}
    if section.zero_stage == 3:
        # Gather full weights on save so that rank 0 can export a plain state dict.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": math.micro_batch,
        "gradient_accumulation_steps": math.grad_accum,
        "train_batch_size": math.global_batch,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "fp16": {"enabled": section.precision == "fp16", "loss_scale": 0,
                 "initial_scale_power": 16, "loss_scale_window": 500, "hysteresis": 2},
        "bf16": {"enabled": section.precision == "bf16"},
        # Our optimizer is an AdamW subclass that skips non-finite steps (train/engine.py).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,          # we log ourselves
        "wall_clock_breakdown": False,
    }
    if section.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": train.use_gpu}
        # We hand DeepSpeed a torch AdamW; allow it with offload instead of DeepSpeedCPUAdam.
        config["zero_force_ds_cpu_optimizer"] = False
    return config
