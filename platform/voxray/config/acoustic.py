"""The acoustic family's config: FastSpeech2-family model and its loss weights."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from voxray.config.root import Config
from voxray.config.sections import AdapterFinetune, Strict, TrainConfig, check_adapter_export


class AcousticTrain(TrainConfig):
    vocoder: Optional[str] = Field(None, description="VOCODER_RUN/final: validation audio samples through this "
                                                     "vocoder (null: Griffin-Lim)")


class AcousticModel(Strict):
    preset: Literal["tiny", "small", "base", "fs2-ms"] = Field(
        "tiny", description="size: tiny (CPU, tests), small, base, fs2-ms (the Malaysian plan's: 256 wide, 4 + 4 layers)")
    rotary: bool = Field(True, description="rotary position embeddings in attention")
    swiglu: bool = Field(True, description="SwiGLU feed-forward (else ReLU)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in encoder, decoder and predictors")
    freeze_encoder: bool = Field(False, description="train without the text encoder and token embeddings "
                                                    "(a later stage of a fine-tuning chain)")


class AcousticLoss(Strict):
    mel: float = Field(1.0, ge=0, description="mel L1 weight")
    duration: float = Field(0.1, ge=0, description="log-duration MSE weight")
    pitch: float = Field(0.1, ge=0, description="token pitch MSE weight")
    energy: float = Field(0.1, ge=0, description="token energy MSE weight")
    alignment: float = Field(1.0, ge=0, description="forward-sum weight, when the model learns its alignment")
    binarization: float = Field(0.1, ge=0, description="hard/soft alignment KL weight")
    mel_mse: float = Field(0.0, ge=0, description="weight of a mel MSE term next to the L1 (the plan's L1 + MSE)")
    language: float = Field(0.0, ge=0, description="per-token language classifier on the encoder output "
                                                   "(cross-entropy weight; 0: no head)")
    particle: float = Field(0.0, ge=0, description="per-token particle-type classifier (weight; 0: no head; "
                                                   "needs a store with particle types)")
    particle_prosody: float = Field(0.0, ge=0, description="pitch + log-duration error on particle tokens only")
    transition: float = Field(1.0, ge=0, description="weight of the mel, duration, pitch and energy errors on the "
                                                     "tokens either side of a language change (and their frames), "
                                                     "relative to the others' 1 (the Malaysian plan's "
                                                     "transition_smoothness, 1.5 in its code-switching phase)")
    particle_pitch: float = Field(1.0, ge=0, description="weight of the pitch error on particle tokens relative to the "
                                                         "others' 1 (the plan's particle phase: 2.0)")
    particle_duration: float = Field(1.0, ge=0, description="weight of the duration error on particle tokens "
                                                            "relative to the others' 1 (the plan's particle phase: 1.5)")


class AcousticConfig(Config):
    family: Literal["acoustic"] = Field("acoustic", description="model family: acoustic")
    train: AcousticTrain = AcousticTrain()
    finetune: AdapterFinetune = AdapterFinetune()
    model: AcousticModel = AcousticModel()
    loss: AcousticLoss = AcousticLoss()

    @model_validator(mode="after")
    def _adapter_export(self) -> "AcousticConfig":
        check_adapter_export(self.finetune, self.lora.rank)
        if self.lora.train_heads:
            raise ValueError("lora.train_heads applies to a pretrained talker (model.pretrained); the acoustic model "
                             "trains its new embedding rows under LoRA")
        return self
