"""The root every family's config extends: the shared sections, and the family's name (saved
with every config so that a run, an export or ``best.yaml`` rebuilds the right type)."""

from __future__ import annotations

from pydantic import Field, model_validator

from voxray.audio import AudioSpec
from voxray.config.sections import (CodecSection, DeepSpeedSection, FinetuneConfig, LoraConfig, PreprocessConfig,
                                    Strict, TrainConfig, TuneSection)


class Config(Strict):
    family: str = Field(description="model family")
    audio: AudioSpec = AudioSpec()
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    deepspeed: DeepSpeedSection = DeepSpeedSection()
    lora: LoraConfig = LoraConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    tune: TuneSection = TuneSection()
    codec: CodecSection = CodecSection()

    @model_validator(mode="after")
    def _gpu_only(self) -> "Config":
        if self.deepspeed.precision == "fp16" and not self.train.use_gpu:
            raise ValueError("deepspeed.precision=fp16 with train.use_gpu=false: DeepSpeed's fp16 (loss-scaled "
                             "mixed precision) runs on GPUs only; use fp32 or bf16 on CPU")
        check_adalora(self)
        return self


def check_adalora(config: "Config", steps_known: bool = False) -> None:
    """What AdaLoRA needs of the rest of the config; its schedule against ``train.max_steps`` once
    that is known (``train.epochs`` sets it when the store is read: ``steps_known``)."""
    lora = config.lora
    if not lora.adalora:
        return
    if config.deepspeed.zero_stage == 3:
        raise ValueError("lora.adalora at deepspeed.zero_stage=3: its rank allocator scores and masks each adapter's "
                         "whole weights, which ZeRO-3 partitions across ranks; use zero_stage 0-2 (the base model's "
                         "frozen weights are not in the optimizer at any stage)")
    if getattr(config.finetune, "export", "merged") == "adapter":
        raise ValueError("finetune.export=adapter with lora.adalora: an AdaLoRA adapter's ranks differ per module "
                         "(peft resizes it to its rank pattern); export merged (the pruned ranks are zero, so the "
                         "merged weights are exact)")
    steps = config.train.max_steps
    if (steps_known or not config.train.epochs) and lora.adalora_warmup + lora.adalora_final >= steps:
        raise ValueError(f"lora.adalora_warmup={lora.adalora_warmup} + lora.adalora_final={lora.adalora_final} leave "
                         f"no steps of train.max_steps={steps} to prune ranks in: lower them or raise max_steps")
