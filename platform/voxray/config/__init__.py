"""Typed configs: frozen pydantic models, one schema per model family sharing common sections,
loaded from YAML files and dotted ``key=value`` overrides.

    sections.py   audio, preprocess, train, deepspeed, lora, finetune, tune, codec
    root.py       Config: the shared sections and the family's name
    acoustic.py   the acoustic family's model and loss sections
    vocoder.py    the vocoder family's: GAN training, model, losses, the discriminator's optimizer
    talker.py     the talker family's: codec language model, codebook head, loss weights
    loading.py    files, overrides, key checks, the family -> config type table, --help-config
"""

from voxray.audio import AudioSpec
from voxray.config.acoustic import AcousticConfig
from voxray.config.loading import (FAMILIES, ConfigError, build_config, config_class, describe, leaf_keys,
                                   load_config, parse_overrides, save_config, to_yaml, with_values)
from voxray.config.root import Config
from voxray.config.sections import (CodecSection, DeepSpeedSection, FinetuneConfig, LoraConfig, PreprocessConfig, SplitConfig,
                                    TrainConfig, TuneSection)
from voxray.config.talker import TalkerConfig
from voxray.config.vocoder import VocoderConfig

__all__ = ["AcousticConfig", "AudioSpec", "CodecSection", "Config", "ConfigError", "DeepSpeedSection", "FAMILIES", "FinetuneConfig",
           "LoraConfig", "PreprocessConfig", "SplitConfig", "TalkerConfig", "TrainConfig", "TuneSection", "VocoderConfig", "build_config",
           "config_class", "describe", "leaf_keys", "load_config", "parse_overrides", "save_config", "to_yaml",
           "with_values"]
