"""The talker family's config: a codec language model over the store's audio codes."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from voxray.config.root import Config
from voxray.config.sections import AdapterFinetune, Strict, TrainConfig, check_adapter_export


class TalkerTrain(TrainConfig):
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate (peak, after warm-up)")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="EMA of the weights (0: off, validate and export the "
                                                          "trained weights)")
    embedding_lr: Optional[float] = Field(None, gt=0, description="learning rate of the embeddings (text, speaker, "
                                                                  "language, codes) (null: train.lr)")
    embedding_weight_decay: float = Field(0.0, ge=0, description="weight decay of the embeddings")
    head_lr: Optional[float] = Field(None, gt=0, description="learning rate of the output heads and the depth "
                                                             "Transformer (null: train.lr)")
    head_weight_decay: Optional[float] = Field(None, ge=0, description="weight decay of the heads (null: "
                                                                       "train.weight_decay)")
    adapter_lr: Optional[float] = Field(None, gt=0, description="learning rate of LoRA/DoRA adapters (null: train.lr)")
    adapter_weight_decay: Optional[float] = Field(None, ge=0, description="weight decay of the adapters (null: "
                                                                          "train.weight_decay)")
    layer_decay: float = Field(1.0, gt=0, le=1, description="layer-wise learning-rate decay: decoder block i of N "
                                                            "trains at lr x layer_decay^(N - 1 - i) (1: off)")


class TalkerModel(Strict):
    pretrained: Optional[str] = Field(
        None, description="a pretrained talker's local folder in its published layout (Sesame CSM: config.json, "
                          "model.safetensors, tokenizer files; Qwen3-TTS-12Hz Base: also speech_tokenizer/): "
                          "fine-tune it instead of building voxray's own "
                          "talker (preset, codebook_head, conditioning, reference_frames, dropout then do not apply)")
    preset: Literal["tiny", "small", "base"] = Field("tiny", description="size: tiny (CPU, tests), small, base")
    codebook_head: Literal["depth", "delay", "parallel"] = Field(
        "depth", description="how a frame's codebooks are predicted: depth (a small Transformer per frame over "
                             "the codebooks before), delay (codebook k shifted k steps), parallel (K heads)")
    conditioning: Literal["table", "reference", "prompt"] = Field(
        "table", description="how the voice is given: table (a speaker-id embedding), reference (a reference "
                             "encoder over another recording of the speaker), prompt (in-context: a reference's "
                             "text and codes lead the sequence, their targets masked)")
    reference_frames: int = Field(400, ge=8, description="reference and prompt: the longest reference used, in "
                                                         "mel frames (reference) or code frames (prompt)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the decoder")
    checkpointing: bool = Field(False, description="activation checkpointing of the decoder blocks (memory for "
                                                   "compute)")


class TalkerLoss(Strict):
    first_codebook: float = Field(1.0, ge=0, description="weight of codebook 0's cross-entropy (with the end of "
                                                         "speech)")
    sub_codebooks: Optional[float] = Field(
        None, ge=0, description="weight of the mean cross-entropy of codebooks 1..K-1 (null: the model's own: 0.3 "
                                "for voxray's talker and Qwen3-TTS, as Qwen's fine-tuning script; 1.0 for CSM, whose "
                                "forward adds the depth decoder's loss unweighted)")
    depth_frames: float = Field(1.0, gt=0, le=1, description="pretrained talkers: the share of audio frames (drawn "
                                                              "per batch) the depth decoder / code predictor learns, "
                                                              "codebook 0 learning every frame (Sesame trained CSM "
                                                              "on 1/16: 0.0625)")
    text: float = Field(0.0, ge=0, description="weight of the text tokens' cross-entropy (IndexTTS2's dual loss)")


class TalkerFinetune(AdapterFinetune):
    init_from: Optional[str] = Field(None, description="TALKER_RUN/final of a trained talker to start from (codes "
                                                       "of the same codec)")


class TalkerConfig(Config):
    family: Literal["talker"] = Field("talker", description="model family: talker")
    train: TalkerTrain = TalkerTrain()
    finetune: TalkerFinetune = TalkerFinetune()
    model: TalkerModel = TalkerModel()
    loss: TalkerLoss = TalkerLoss()

    @model_validator(mode="after")
    def _adapter_export(self) -> "TalkerConfig":
        model = self.model
        if model.pretrained is None:
            check_adapter_export(self.finetune, self.lora.rank)
            if self.lora.train_heads and not self.lora.rank:
                raise ValueError("lora.train_heads trains the heads in full next to LoRA adapters: set lora.rank > 0 "
                                 "(without adapters every weight trains already)")
            if self.loss.depth_frames != 1.0:
                raise ValueError("loss.depth_frames applies to a pretrained talker (model.pretrained)")
            return self
        if self.finetune.init_from:
            raise ValueError("model.pretrained and finetune.init_from both set: give one model to start from")
        if self.finetune.export == "adapter" and not self.lora.rank:
            raise ValueError("finetune.export=adapter needs adapters: set lora.rank > 0")
        if self.train.ema_decay > 0:
            raise ValueError("train.ema_decay > 0 with model.pretrained: an EMA keeps a second full copy of the "
                             "pretrained model on every rank; fine-tune without one (train.ema_decay: 0)")
        if self.lora.dora and model.checkpointing and self.deepspeed.zero_stage == 3:
            raise ValueError("lora.dora with model.checkpointing at deepspeed.zero_stage=3: peft's DoRA reads its "
                             "adapter weights outside their forward, and in activation checkpointing's recompute "
                             "ZeRO-3 has released them (IndexError in peft's dora.get_lora_weight); use LoRA "
                             "(lora.dora=false), ZeRO-2, or model.checkpointing=false")
        defaults = TalkerModel.model_fields
        own = [name for name in ("codebook_head", "conditioning") if getattr(model, name) != defaults[name].default]
        if own:
            raise ValueError(f"model.{', model.'.join(own)} set with model.pretrained: they shape voxray's own "
                             "talker; a pretrained one has its architecture's")
        return self
