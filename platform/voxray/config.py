"""Typed configs: frozen pydantic models, YAML files, dotted ``key=value`` overrides.

Unknown keys are errors that name the key; bad values are errors that name the field and the
value. The resolved config is saved beside every output (``save_config``).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from voxray import uri
from voxray.audio import AudioSpec


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_resources(field: str, resources: dict[str, float], instead: str) -> None:
    for name, amount in resources.items():
        if name in ("CPU", "GPU"):
            raise ValueError(f"{field}: set {name} with {instead}")
        if not amount > 0:
            raise ValueError(f"{field}[{name!r}]={amount} must be > 0")


class SplitConfig(_Strict):
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    @model_validator(mode="after")
    def _check(self) -> "SplitConfig":
        fractions = {"train": self.train, "val": self.val, "test": self.test}
        bad = {k: v for k, v in fractions.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"split fractions must lie in [0, 1], got {bad}")
        if abs(sum(fractions.values()) - 1) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {fractions}")
        return self


class PreprocessConfig(_Strict):
    format: Literal["auto", "ljspeech", "jsonl", "hf-parquet"] = "auto"
    # Cleaning.
    loudness_lufs: float = -23.0        # BS.1770 integrated loudness target (EBU R128)
    max_peak: float = 0.99              # after the loudness gain, scale down to this peak
    silence_peak_dbfs: float = -50.0    # a file whose peak is below this is "silent"
    trim_top_db: float = 40.0           # trim edges quieter than peak - top_db
    min_seconds: float = 0.5            # duration bounds after trimming
    max_seconds: float = 20.0
    # Features.
    f0_floor: float = 65.0
    f0_ceil: float = 800.0
    store_audio: bool = True            # keep the processed waveform (vocoder/codec training)
    # Text and labels.
    g2p: Literal["espeak", "char"] = "espeak"
    default_speaker: str = "speaker0"
    default_language: str = "en-us"
    alignments: Optional[str] = None    # folder (or s3:// prefix) of MFA TextGrids
    # Output and execution.
    split: SplitConfig = SplitConfig()
    rows_per_task: int = 128            # target rows per Ray task (fewer on small corpora)
    num_cpus: float = 1.0               # CPUs reserved by each Ray Data task
    # Further Ray resources each task asks for, to keep preprocessing on one node type: a custom
    # resource only that type declares (cluster.yaml's CPU nodes declare cpu_node).
    task_resources: dict[str, float] = {}
    overwrite: bool = False

    @model_validator(mode="after")
    def _check(self) -> "PreprocessConfig":
        if not 0 < self.min_seconds < self.max_seconds:
            raise ValueError(
                f"need 0 < min_seconds ({self.min_seconds}) < max_seconds ({self.max_seconds})"
            )
        if not 0 < self.f0_floor < self.f0_ceil:
            raise ValueError(f"need 0 < f0_floor ({self.f0_floor}) < f0_ceil ({self.f0_ceil})")
        if not 0 < self.max_peak <= 1:
            raise ValueError(f"max_peak={self.max_peak} must lie in (0, 1]")
        if self.rows_per_task < 1:
            raise ValueError(f"rows_per_task={self.rows_per_task} must be >= 1")
        if self.num_cpus <= 0:
            raise ValueError(f"num_cpus={self.num_cpus} must be > 0")
        _check_resources("task_resources", self.task_resources, "num_cpus")
        if self.trim_top_db <= 0:
            raise ValueError(f"trim_top_db={self.trim_top_db} must be > 0")
        return self


class TrainConfig(_Strict):
    max_steps: int = 2000
    batch_size: int = 16               # per worker, per micro-step
    grad_accum: int = 1
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0       # CPUs Ray reserves for each training worker
    # Further Ray resources each training worker asks for, to pin workers to a node type: a custom
    # resource the node type declares ({train_node: 1}) or an accelerator ({"accelerator_type:H100": 0.001}).
    worker_resources: dict[str, float] = {}
    max_failures: int = 3              # worker failures Ray Train recovers from (latest checkpoint)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    schedule: Literal["cosine", "noam", "constant"] = "cosine"
    grad_clip: float = 1.0
    val_every: int = 200
    log_every: int = 10
    shard_cache_mb: int = 1024         # keep a worker's shard in memory after epoch 0 when it fits
    ema_decay: float = 0.999
    keep_best: int = 3
    patience: int = 0                  # validations without improvement before stopping; 0 = off
    min_delta: float = 0.0
    max_nonfinite_steps: int = 20      # consecutive skipped steps before the run stops
    seed: int = 1234

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        for name in ("max_steps", "batch_size", "grad_accum", "num_workers", "val_every",
                     "log_every", "keep_best", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if not self.cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker={self.cpus_per_worker} must be > 0")
        _check_resources("worker_resources", self.worker_resources, "cpus_per_worker / use_gpu")
        if self.max_failures < -1:
            raise ValueError(f"max_failures={self.max_failures} must be >= -1 (-1 = retry forever)")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay} must lie in [0, 1)")
        for name in ("shard_cache_mb", "warmup_steps", "patience", "grad_clip", "min_delta", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        return self


class DeepSpeedSection(_Strict):
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    offload_optimizer: bool = False    # ZeRO-Offload of optimizer state to CPU memory

    @model_validator(mode="after")
    def _check(self) -> "DeepSpeedSection":
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1")
        return self


class ModelConfig(_Strict):
    preset: Literal["tiny", "small", "base"] = "tiny"
    rotary: bool = True
    swiglu: bool = True
    dropout: float = 0.1


class LossConfig(_Strict):
    mel: float = 1.0
    duration: float = 0.1
    pitch: float = 0.1
    energy: float = 0.1
    alignment: float = 1.0             # forward-sum, when the model learns its own alignment
    binarization: float = 0.1

    @model_validator(mode="after")
    def _check(self) -> "LossConfig":
        negative = {k: v for k, v in self.model_dump().items() if v < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0, got {negative}")
        return self


class LoraConfig(_Strict):
    rank: int = 0                      # 0 = full fine-tuning
    alpha: float = 16.0
    dropout: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> "LoraConfig":
        if self.rank < 0:
            raise ValueError(f"rank={self.rank} must be >= 0")
        return self


class FinetuneConfig(_Strict):
    init_from: Optional[str] = None    # RUN_URI/final of a trained model


class TuneSection(_Strict):
    concurrent_trials: int = 1         # trials running at once (each is a multi-worker training run)
    search: Literal["tpe", "random"] = "tpe"     # Optuna sampler
    startup_trials: int = 3            # TPE: random trials before it models the space (Optuna's default is 10)
    scheduler: Literal["asha", "fifo"] = "asha"  # asha: stop poor trials early; fifo: run every trial to the end
    grace_period: int = 2              # ASHA: validations every trial gets before it may be stopped
    reduction_factor: int = 2          # ASHA: keep 1/reduction_factor at each rung
    seed: int = 0                      # Optuna sampler seed

    @model_validator(mode="after")
    def _check(self) -> "TuneSection":
        for name in ("concurrent_trials", "grace_period", "startup_trials"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor={self.reduction_factor} must be >= 2")
        return self


class Config(_Strict):
    audio: AudioSpec = AudioSpec()
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    deepspeed: DeepSpeedSection = DeepSpeedSection()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    lora: LoraConfig = LoraConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    tune: TuneSection = TuneSection()


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict; values are parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from exc
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part!r} is set both as a value and a section")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_keys(model: type[BaseModel], data: Any, prefix: str = "") -> None:
    """Raise on the first unknown key, naming its full dotted path and the known ones."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        path = f"{prefix}{key}"
        field = model.model_fields.get(key)
        if field is None:
            known = ", ".join(sorted(model.model_fields))
            raise ConfigError(f"unknown config key {path!r} (known here: {known})")
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} is a section; got the value {value!r}")
            _check_keys(sub, value, path + ".")


def build_config(data: dict[str, Any]) -> Config:
    _check_keys(Config, data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(root)"
            bad = err.get("input")
            shown = "" if isinstance(bad, dict) else f" = {bad!r}"
            lines.append(f"{where}{shown}: {err['msg']}")
        raise ConfigError("invalid config: " + "; ".join(lines)) from None


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None) -> Config:
    data: dict[str, Any] = {}
    if path:
        try:
            text = uri.read_text(path)
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path!r} must hold a mapping, got {type(data).__name__}")
    return build_config(_merge(data, parse_overrides(overrides or [])))


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """``config`` with dotted keys set to (already typed) values, validated like any config."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        node = nested
        *sections, leaf = key.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return build_config(_merge(config.model_dump(mode="json"), nested))


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: Config, path: str) -> None:
    uri.write_text(path, to_yaml(config))
