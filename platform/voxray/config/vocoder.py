"""The vocoder family's config: HiFi-GAN (or a Vocos-style generator) against HiFi-GAN's
discriminators, on two DeepSpeed engines. Its ``train`` section keeps the shared keys with
HiFi-GAN's defaults (AdamW 2e-4, betas 0.8/0.99, exponential decay, no EMA) and adds the
segment length; ``discriminator.*`` is the second optimizer."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from voxray.config.root import Config
from voxray.config.sections import FinetuneConfig, Strict, TrainConfig


class VocoderTrain(TrainConfig):
    lr: float = Field(2e-4, gt=0, description="generator AdamW learning rate")
    betas: tuple[float, float] = Field((0.8, 0.99), description="generator AdamW betas")
    eps: float = Field(1e-9, gt=0, description="generator AdamW epsilon")
    schedule: Literal["cosine", "noam", "constant", "exponential"] = Field(
        "exponential", description="LR after the warm-up, both engines (exponential: lr_decay every lr_decay_steps)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    grad_clip: float = Field(0.0, ge=0, description="gradient norm clip of both engines (0: off, as HiFi-GAN)")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="EMA of the generator's weights (0: off, validate "
                                                          "and export the trained weights)")
    segment_frames: int = Field(32, ge=1, description="mel frames per training segment (x hop_length samples: "
                                                      "32 x 256 = 8192)")


class VocoderModel(Strict):
    preset: Literal["tiny", "v3", "v2", "v1"] = Field("tiny", description="size: tiny (CPU, tests), v3, v2, v1 "
                                                                         "(HiFi-GAN's published shapes)")
    generator: Literal["hifigan", "vocos"] = Field("hifigan", description="HiFi-GAN, or Vocos-style (ConvNeXt + "
                                                                         "inverse STFT, many times cheaper)")
    upsample_rates: Optional[tuple[int, ...]] = Field(None, description="HiFi-GAN upsampling rates (their product "
                                                                        "must equal audio.hop_length; null: preset)")
    upsample_kernel_sizes: Optional[tuple[int, ...]] = Field(None, description="HiFi-GAN upsampling kernels "
                                                                               "(null: preset)")
    channels: Optional[int] = Field(None, ge=2, description="HiFi-GAN channels after the input conv (null: preset)")
    discriminator_width: Optional[float] = Field(None, gt=0, description="discriminator channel scale, 1 = "
                                                                         "HiFi-GAN's (null: preset)")


class VocoderLoss(Strict):
    mel: float = Field(45.0, ge=0, description="L1 log-mel weight")
    feature: float = Field(2.0, ge=0, description="feature-matching weight")
    adversarial: float = Field(1.0, ge=0, description="least-squares generator weight")
    mel_warmup_steps: int = Field(0, ge=0, description="steps of mel loss only before the adversarial and "
                                                       "feature terms start (the discriminator trains throughout)")


class DiscriminatorOptimizer(Strict):
    lr: float = Field(2e-4, gt=0, description="discriminator AdamW learning rate")
    betas: tuple[float, float] = Field((0.8, 0.99), description="discriminator AdamW betas")
    eps: float = Field(1e-9, gt=0, description="discriminator AdamW epsilon")
    weight_decay: float = Field(0.01, ge=0, description="discriminator AdamW weight decay")


class VocoderFinetune(FinetuneConfig):
    init_from: Optional[str] = Field(None, description="RUN_URI/final of a trained vocoder to start from")
    discriminator: Literal["restore", "fresh"] = Field(
        "restore", description="restore: the discriminator of init_from's run (its latest checkpoint) when "
                               "there is one; fresh: a new one")


class VocoderConfig(Config):
    family: Literal["vocoder"] = Field("vocoder", description="model family: vocoder")
    train: VocoderTrain = VocoderTrain()
    finetune: VocoderFinetune = VocoderFinetune()
    model: VocoderModel = VocoderModel()
    loss: VocoderLoss = VocoderLoss()
    discriminator: DiscriminatorOptimizer = DiscriminatorOptimizer()

    @model_validator(mode="after")
    def _gan(self) -> "VocoderConfig":
        if self.train.grad_accum != 1:
            raise ValueError(f"train.grad_accum={self.train.grad_accum}: the vocoder is a GAN, one backward per "
                             "engine per step, so it must be 1")
        if self.deepspeed.zero_stage == 3:
            raise ValueError("deepspeed.zero_stage=3: the vocoder's discriminator runs twice in the generator's "
                             "backward and ZeRO-3 partitions its parameters; use 0, 1 or 2")
        if self.deepspeed.precision == "fp16":
            raise ValueError("deepspeed.precision=fp16: two engines cannot share fp16 loss scaling; use fp32 or bf16")
        if self.lora.rank or self.lora.train_heads:
            raise ValueError(f"lora.rank={self.lora.rank}: the vocoder fine-tunes all weights (lora.rank=0)")
        return self
