"""The config sections every model family shares: audio (the AudioSpec), preprocess, train,
deepspeed, lora, finetune, tune. Each field carries its default, its bounds and a one-line
meaning (``voxray train FAMILY --help-config`` prints them).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

import yaml

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voxray.codeswitch import MALAYSIAN_PARTICLES, check_languages, primary


class Strict(BaseModel):
    """Frozen, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_resources(field: str, resources: dict[str, float], instead: str) -> None:
    for name, amount in resources.items():
        if name in ("CPU", "GPU"):
            raise ValueError(f"{field}: set {name} with {instead}")
        if not amount > 0:
            raise ValueError(f"{field}[{name!r}]={amount} must be > 0")


class SplitConfig(Strict):
    train: float = Field(0.8, ge=0, le=1, description="share of utterances in the train split")
    val: float = Field(0.1, ge=0, le=1, description="share in the validation split")
    test: float = Field(0.1, ge=0, le=1, description="share in the test split")

    @model_validator(mode="after")
    def _check(self) -> "SplitConfig":
        fractions = {"train": self.train, "val": self.val, "test": self.test}
        if abs(sum(fractions.values()) - 1) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {fractions}")
        return self


class AugmentConfig(Strict):
    copies: int = Field(0, ge=0, description="augmented draws per train utterance (0: no augmentation); a "
                                             "draw where no transform fires adds nothing")
    speed: float = Field(0.3, ge=0, le=1, description="probability of speed perturbation (tempo and pitch)")
    pitch: float = Field(0.2, ge=0, le=1, description="probability of a pitch shift (duration kept)")
    noise: float = Field(0.1, ge=0, le=1, description="probability of additive white noise")
    speed_range: tuple[float, float] = Field((0.9, 1.1), description="speed factors drawn from (1 % steps)")
    pitch_semitones: tuple[float, float] = Field((-2.0, 2.0), description="pitch shifts drawn from, semitones")
    noise_snr_db: tuple[float, float] = Field((15.0, 30.0), description="signal-to-noise ratios drawn from, dB")

    @model_validator(mode="after")
    def _check(self) -> "AugmentConfig":
        for name in ("speed_range", "pitch_semitones", "noise_snr_db"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"preprocess.augment.{name}: {low} > {high}")
        if not 0.5 <= self.speed_range[0] <= self.speed_range[1] <= 2.0:
            raise ValueError(f"preprocess.augment.speed_range {list(self.speed_range)} must lie in [0.5, 2]")
        return self


class PreprocessConfig(Strict):
    format: Literal["auto", "ljspeech", "jsonl", "hf-parquet"] = Field("auto", description="input layout")
    # Cleaning.
    loudness_lufs: float = Field(-23.0, description="BS.1770 integrated loudness target (EBU R128)")
    max_peak: float = Field(0.99, gt=0, le=1, description="after the loudness gain, scale down to this peak")
    silence_peak_dbfs: float = Field(-50.0, description="a file whose peak is below this is rejected as silent")
    trim_top_db: float = Field(40.0, gt=0, description="trim edges quieter than peak - top_db")
    denoise: float = Field(0.0, ge=0, le=1, description="noise reduction (noisereduce's spectral gating) before "
                                                       "trimming: the share of the estimated noise removed (its "
                                                       "prop_decrease; 0: off, 0.8 gentle, 1 all); counted in stats "
                                                       "(denoise: rows, noise floor lowered by, dB)")
    denoise_stationary: bool = Field(True, description="denoise: one noise profile per file (a steady hiss or hum); "
                                                       "false: noisereduce's non-stationary mode (changing noise, "
                                                       "~3x slower)")
    min_seconds: float = Field(0.5, description="shortest utterance kept, after trimming")
    max_seconds: float = Field(20.0, description="longest utterance kept, after trimming")
    # Features.
    f0_floor: float = Field(65.0, description="lowest F0 searched, Hz")
    f0_ceil: float = Field(800.0, description="highest F0 searched, Hz")
    f0_rate: int = Field(11025, ge=0, description="F0 (WORLD DIO + StoneMask) on the audio resampled to this "
                         "rate: 2.7x cheaper than at 22050 Hz; 0: at the audio's own rate")
    f0_speed: int = Field(1, ge=1, le=12, description="WORLD DIO's own decimation (1: none; 2 halves its cost "
                          "again, with more voicing disagreement: benchmarks/RESULTS.md)")
    store_audio: bool = Field(True, description="keep the processed waveform (vocoder/codec training)")
    codes_without_audio: bool = Field(
        True, description="a row whose audio file is missing but whose audio_codes are valid is kept for talker "
                          "training as codes only (no mel, no audio; acoustic and vocoder training and evaluation "
                          "skip it), counted apart in stats (codes_only), as Qwen3-TTS's data tool writes such "
                          "manifests; false: rejected as missing_file")
    # Text and labels.
    g2p: Literal["espeak", "char"] = Field("espeak", description="phonemes from espeak-ng, or characters")
    default_speaker: str = Field("speaker0", description="speaker of rows that name none")
    default_language: str = Field("en-us", description="language of rows that name none")
    alignments: Optional[str] = Field(None, description="folder (or s3:// prefix) of MFA TextGrids")
    code_switch: tuple[str, ...] = Field(
        (), description="languages a row's words switch between, e.g. ms,en: each word gets one (the "
                        "manifest's word_langs, else detected by lingua) and is phonemised in it")
    code_switch_margin: float = Field(
        0.2, ge=0, lt=1, description="a word whose two likeliest languages are closer than this is "
                                     "undecided: its neighbours' language, else the row's")
    particles: tuple[str, ...] = Field(
        MALAYSIAN_PARTICLES, description="discourse particles (token_particles: 1 + index here; 0 none), found by word "
                    "or from the manifest's particle_tags")
    augment: AugmentConfig = Field(AugmentConfig(), description="extra rows for the train split: speed, pitch, "
                                                                "noise (voxray.data.augment)")
    # Output and execution.
    split: SplitConfig = SplitConfig()
    rows_per_task: int = Field(128, ge=1, description="target rows per Ray task (fewer on small corpora)")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved by each Ray Data task")
    task_resources: dict[str, float] = Field(
        {}, description="further Ray resources each task asks for, e.g. {cpu_node: 0.001} to keep "
                        "preprocessing on CPU nodes")
    overwrite: bool = Field(False, description="replace an output folder that is not empty")
    val_input: Optional[str] = Field(
        None, description="a manifest (or folder, any input format) whose rows are the val split (the Qwen3-TTS "
                          "guide's validation file; voxray preprocess --val-input); the input's rows then split "
                          "into train and test only, preprocess.split.val's share going to train")
    max_rows: int = Field(0, ge=0, description="only the input's first N rows, in manifest order (quick runs; the "
                                                "Qwen3-TTS guide's --max-rows; voxray preprocess --max-rows N) "
                                                "(0: all)")

    @field_validator("code_switch", "particles", mode="before")
    @classmethod
    def _comma_list(cls, value):
        if isinstance(value, str):        # code_switch=ms,en on the command line
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _check(self) -> "PreprocessConfig":
        if self.code_switch:
            if len(set(self.code_switch)) < 2:
                raise ValueError(f"preprocess.code_switch needs two or more languages, got {list(self.code_switch)}")
            check_languages(self.code_switch)
            primaries = [primary(name) for name in self.code_switch]
            if len(set(primaries)) < len(primaries):
                raise ValueError(f"preprocess.code_switch {list(self.code_switch)}: two entries of one "
                                 "language (per-word detection tells languages, not accents, apart)")
        if self.augment.copies and self.augment.speed and self.alignments:
            raise ValueError("preprocess.augment.speed with preprocess.alignments: the TextGrids' durations would "
                             "not fit the faster or slower audio (set preprocess.augment.speed=0)")
        if len(set(self.particles)) < len(self.particles) or any(p != p.lower() or not p for p in self.particles):
            raise ValueError(f"preprocess.particles must be distinct lower-case words, got {list(self.particles)}")
        if not 0 < self.min_seconds < self.max_seconds:
            raise ValueError(
                f"need 0 < min_seconds ({self.min_seconds}) < max_seconds ({self.max_seconds})"
            )
        if not 0 < self.f0_floor < self.f0_ceil:
            raise ValueError(f"need 0 < f0_floor ({self.f0_floor}) < f0_ceil ({self.f0_ceil})")
        if self.f0_rate and self.f0_rate < 4 * self.f0_ceil:
            raise ValueError(f"preprocess.f0_rate {self.f0_rate} is too low for f0_ceil {self.f0_ceil} "
                             f"(need at least {4 * self.f0_ceil:.0f} Hz, or 0 for the audio's own rate)")
        _check_resources("task_resources", self.task_resources, "num_cpus")
        return self


# Store columns a curriculum stage may filter on (one value per row).
CURRICULUM_COLUMNS = ("n_languages", "code_switched", "n_particles", "n_frames", "audio_seconds", "speaker_id", "language",
                      "accent", "speaker_index", "language_index")
_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|==|!=|<|>)\s*(\S.*?)\s*$")


def parse_condition(text: str) -> tuple[str, str, Any]:
    """``"n_languages <= 1"`` -> ("n_languages", "<=", 1): a store column, an operator, a YAML value."""
    match = _CONDITION.match(text)
    if not match:
        raise ValueError(f"curriculum condition {text!r}: expected 'column op value', op one of <= >= == != < >")
    column, op, raw = match.groups()
    if column not in CURRICULUM_COLUMNS:
        raise ValueError(f"curriculum condition {text!r}: {column!r} is not a column a stage can filter on "
                         f"({', '.join(CURRICULUM_COLUMNS)})")
    value = yaml.safe_load(raw)
    if not isinstance(value, (int, float, str, bool)):
        raise ValueError(f"curriculum condition {text!r}: the value must be a number, a string or true/false")
    return column, op, value


class CurriculumStage(Strict):
    name: str = Field("", description="what the console and TensorBoard call the stage")
    until_step: int = Field(..., ge=1, description="the stage trains the steps before this one")
    where: tuple[str, ...] = Field((), description="conditions on store columns, all of them true for a row "
                                                   "to train in the stage, e.g. 'n_languages <= 1'")

    @field_validator("where")
    @classmethod
    def _parse(cls, conditions):
        for condition in conditions:
            parse_condition(condition)
        return conditions


class TrainConfig(Strict):
    max_steps: int = Field(2000, ge=1, description="optimizer steps (replaced by epochs when that is set)")
    epochs: int = Field(0, ge=0, description="train this many passes over the train split instead: max_steps becomes "
                                             "epochs x ceil(train rows / (batch_size x num_workers x grad_accum)), "
                                             "the number the console and config.yaml then show (0: use max_steps)")
    batch_size: int = Field(16, ge=1, description="utterances per worker per micro-step")
    grad_accum: int = Field(1, ge=1, description="micro-steps per optimizer step")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each training worker")
    data_cpus: float = Field(
        1.0, ge=0, description="CPUs kept free for Ray Data's reads of the store; a cluster without them "
                               "is refused before training")
    worker_resources: dict[str, float] = Field(
        {}, description="further Ray resources per worker, to pin workers to a node type: "
                        "{train_node: 1} or {\"accelerator_type:H100\": 0.001}")
    max_failures: int = Field(3, ge=-1, description="worker failures Ray Train recovers from (-1: forever)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (peak, after warm-up)")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas")
    eps: float = Field(1e-9, gt=0, description="AdamW epsilon")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(200, ge=0, description="linear warm-up steps")
    schedule: Literal["cosine", "noam", "constant", "exponential"] = Field(
        "cosine", description="LR after the warm-up (exponential: lr_decay every lr_decay_steps)")
    lr_decay: float = Field(0.999, gt=0, le=1, description="exponential schedule: factor per lr_decay_steps")
    lr_decay_steps: int = Field(1000, ge=1, description="exponential schedule: steps per lr_decay factor")
    grad_clip: float = Field(1.0, ge=0, description="gradient norm clip (0: off)")
    clip: Literal["norm", "percentile"] = Field(
        "norm", description="norm: clip the global gradient norm to grad_clip; percentile: to clip_percentile of the "
                            "last clip_window steps' norms (AutoClip; grad_clip until 20 are seen; the norms are "
                            "kept in the checkpoint, so a resumed run clips as an uninterrupted one)")
    clip_percentile: float = Field(90.0, gt=0, le=100, description="clip=percentile: the percentile of recent norms "
                                                                   "(AutoClip's paper used 10: clips most steps)")
    clip_window: int = Field(1000, ge=20, description="clip=percentile: the steps whose norms it is taken over")
    layer_grad_norms: bool = Field(True, description="at each log step, every layer's gradient norm to TensorBoard "
                                                     "(grad_norm/<layer>) and a warning when one exceeds 10x its "
                                                     "recent median (once until it is back under); at ZeRO 1-3 one "
                                                     "gather per parameter: turn off for a large model")
    val_every: int = Field(200, ge=1, description="steps between validations (and checkpoints)")
    log_every: int = Field(10, ge=1, description="steps between logged scalars and console lines")
    shard_cache_mb: int = Field(1024, ge=0, description="keep a worker's shard in memory after epoch 0 when it fits")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of the weights (warmed up)")
    keep_best: int = Field(3, ge=1, description="best checkpoints kept (by checkpoint_metric), plus the latest")
    checkpoint_metric: str = Field(
        "", description="validation metric that ranks best-k checkpoints and early stopping, lower is better "
                        "(empty: the family's: acoustic val_mel, vocoder val_mel, talker val_ce; acoustic also "
                        "val_mcd_mel_db, val_f0_rmse_hz, val_duration_mae_ms; vocoder val_mcd_mel_db)")
    export_best: bool = Field(False, description="at the end also write RUN/best/, a final/-style export of the best "
                                                 "checkpoint by checkpoint_metric (the Qwen3-TTS guide's best/; "
                                                 "any kept checkpoint: voxray export RUN --checkpoint)")
    evaluate_at_end: bool = Field(False, description="evaluate the final model on the test split into RUN/eval/ "
                                                     "(voxray evaluate's metrics.json, report.html)")
    evaluate_vocoder: str = Field("", description="evaluate_at_end: the vocoder export that speaks an acoustic "
                                                  "model's or talker's mels (empty: Griffin-Lim)")
    evaluate_limit: int = Field(0, ge=0, description="evaluate_at_end: only the first N test utterances (0: all)")
    patience: int = Field(0, ge=0, description="validations without improvement before stopping (0: off)")
    min_delta: float = Field(0.0, ge=0, description="smallest improvement that counts, for patience")
    max_nonfinite_steps: int = Field(20, ge=1, description="consecutive non-finite steps before the run stops")
    stall_seconds: float = Field(300.0, gt=0, description="no step for this long: say on the console what the run waits "
                                                          "for, and each rank's stack (where its training thread is)")
    checkpoint_tmp: str = Field("", description="local folder where each rank writes its part of a checkpoint before "
                                              "Ray Train copies it to the run (empty: the system's temp folder, "
                                              "TMPDIR); a full device there fails the checkpoint with the free space")
    hang_timeout: int = Field(
        900, ge=10, description="seconds a collective (all-reduce, barrier) waits for the other ranks before the run "
                                "fails, naming each rank's last stack: the process group's timeout (gloo raises; on "
                                "GPU NCCL's watchdog aborts, TORCH_NCCL_ASYNC_ERROR_HANDLING=1). A failure then "
                                "restarts per max_failures. Covers model loading and checkpoint writes between "
                                "collectives: raise it for a model that loads longer")
    seed: int = Field(1234, description="initial weights, dropout, data order")
    curriculum: tuple[CurriculumStage, ...] = Field(
        (), description="stages by step, each training on the rows its conditions keep (then all rows), e.g. "
                        "[{until_step: 50000, where: ['n_languages <= 1']}, {until_step: 100000, where: "
                        "['n_languages <= 2']}]")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        _check_resources("worker_resources", self.worker_resources, "cpus_per_worker / use_gpu")
        ends = [stage.until_step for stage in self.curriculum]
        if ends != sorted(set(ends)):
            raise ValueError(f"train.curriculum: until_step must increase from stage to stage, got {ends}")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas={list(self.betas)} must lie in [0, 1)")
        return self


class DeepSpeedSection(Strict):
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage")
    precision: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="training precision")
    offload_optimizer: bool = Field(False, description="ZeRO-Offload of optimizer state to CPU memory")

    @model_validator(mode="after")
    def _check(self) -> "DeepSpeedSection":
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1")
        return self


class LoraConfig(Strict):
    rank: int = Field(0, ge=0, description="LoRA rank of the attention projections (0: full fine-tuning)")
    ff_rank: Optional[int] = Field(None, ge=1, description="LoRA rank of the feed-forward projections (null: rank)")
    alpha: float = Field(16.0, description="LoRA scaling numerator")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    dora: bool = Field(False, description="DoRA: weight-decomposed adapters (magnitude + LoRA direction)")
    train_heads: bool = Field(False, description="talkers: also train the embeddings and output heads in full under "
                                                  "LoRA (peft modules_to_save; the IndexTTS2 recipe), at train.head_lr "
                                                  "/ embedding_lr. voxray's talker: its code embeddings and heads (text "
                                                  "and speaker tables train their new rows); a pretrained one: its "
                                                  "text embeddings and heads")
    adalora: bool = Field(False, description="AdaLoRA (peft): adapters start at lora.rank and their ranks are pruned "
                                             "by importance to lora.target_rank per adapted module on average, "
                                             "spent where the loss needs them; the third adapter kind of the "
                                             "IndexTTS2 recipe. deepspeed.zero_stage <= 2 (its allocator reads and "
                                             "masks whole adapter weights), merged export. peft's AdaLoRA adapts "
                                             "linear layers only: voxray's own models (whose feed-forward layers are "
                                             "kernel-1 Conv1d) adapt their attention projections")
    target_rank: int = Field(8, ge=1, description="AdaLoRA: the mean rank per adapted module at the end (peft "
                                                   "target_r; lora.rank is its init_r)")
    adalora_warmup: int = Field(200, ge=0, description="AdaLoRA: steps at full rank before pruning starts (peft tinit)")
    adalora_final: int = Field(500, ge=0, description="AdaLoRA: last steps at the final ranks, no more pruning (peft "
                                                      "tfinal); pruning runs between, the budget falling as a cube")
    adalora_interval: int = Field(10, ge=1, description="AdaLoRA: steps between two rank allocations (peft deltaT)")
    orthogonality: float = Field(0.5, ge=0, description="AdaLoRA: weight of the regulariser keeping each adapter's "
                                                       "A and B orthogonal (peft orth_reg_weight), added to the loss")

    @model_validator(mode="after")
    def _adalora(self) -> "LoraConfig":
        if not self.adalora:
            return self
        if not self.rank:
            raise ValueError("lora.adalora needs lora.rank > 0 (its starting rank)")
        if self.dora or self.ff_rank:
            raise ValueError("lora.adalora sets each module's rank itself: unset lora.dora and lora.ff_rank")
        if self.target_rank > self.rank:
            raise ValueError(f"lora.target_rank={self.target_rank} is above lora.rank={self.rank}: AdaLoRA prunes "
                             "from lora.rank down to lora.target_rank")
        return self


class FinetuneConfig(Strict):
    init_from: Optional[str] = Field(None, description="RUN_URI/final of a trained model to start from")


class AdapterFinetune(FinetuneConfig):
    """Fine-tuning of a family that can export adapters alone (acoustic, talker)."""

    export: Literal["merged", "adapter"] = Field(
        "merged", description="merged: final/ holds the plain model with the adapters merged; adapter: only "
                              "final/adapter/ (the adapters and new embedding rows, for synthesize --adapter)")


def check_adapter_export(finetune: AdapterFinetune, lora_rank: int) -> None:
    if finetune.export == "adapter" and not (finetune.init_from and lora_rank):
        raise ValueError("finetune.export=adapter needs adapters: set finetune.init_from and lora.rank > 0")


class CodecSection(Strict):
    """What discrete audio codes are: checked against every manifest row that carries
    ``audio_codes``; where a value is null it is inferred from the rows and recorded. The built-in
    mel codec (``voxray codec fit``) reads its shape from here too."""

    name: Optional[str] = Field(None, description="the codec that made the codes (free text, recorded)")
    n_codebooks: Optional[int] = Field(None, ge=1, description="codebooks per code frame (null: inferred from "
                                                               "the rows; the built-in codec: 8)")
    codebook_size: Optional[int] = Field(None, ge=2, description="codes per codebook, [0, size) (null: the "
                                                                 "smallest power of two above the largest code; "
                                                                 "the built-in codec: 1024)")
    frame_rate: Optional[float] = Field(None, gt=0, description="code frames per second (null: the median over "
                                                                "the rows of frames / audio seconds)")
    length_tolerance: int = Field(2, ge=0, description="code frames a row's length may differ from its audio's "
                                                       "duration (before trimming) x frame_rate")
    stack_frames: int = Field(4, ge=1, description="built-in codec: mel frames per code frame (4: ~21.5 Hz at "
                                                   "22.05 kHz / hop 256)")
    fit_vectors: int = Field(100_000, ge=100, description="built-in codec: stacked frames sampled from the train "
                                                          "split to fit on")
    fit_steps: int = Field(300, ge=1, description="built-in codec: training passes over batches of vectors")
    batch_vectors: int = Field(4096, ge=16, description="built-in codec: vectors per training batch")
    dead_code_threshold: float = Field(2.0, ge=0, description="built-in codec: a code used less (EMA count) is "
                                                              "restarted from a random vector (0: off)")
    seed: int = Field(0, description="built-in codec: sampling and initialisation")


class TuneSection(Strict):
    concurrent_trials: int = Field(1, ge=1, description="trials at once (each a multi-worker training run)")
    search: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler")
    startup_trials: int = Field(3, ge=1, description="TPE: random trials before it models the space")
    scheduler: Literal["asha", "fifo"] = Field("asha", description="asha: stop poor trials early; fifo: run all")
    grace_period: int = Field(2, ge=1, description="ASHA: validations every trial gets before it may be stopped")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1 in reduction_factor at each rung")
    seed: int = Field(0, description="sampler seed")
    metric: str = Field("", description="what the sweep minimises (empty: train.checkpoint_metric, else the "
                                        "family's metric); trials rank their checkpoints by it too")
