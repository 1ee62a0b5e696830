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
        return self
