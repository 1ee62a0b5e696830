"""``RUN_URI/final/``: everything needed to use a trained model without the run or the store.

  model.safetensors   weights (EMA, LoRA merged)
  model.json          family, builder arguments, speaker and language names, G2P per language
  config.yaml         the resolved config the run trained with
  vocab.json          the token vocabulary (the model's, including tokens added by fine-tuning)
  audio_spec.json     the AudioSpec features were computed with
  stats.json          the store's normalisation statistics (mel, F0, energy) and label tables
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
import yaml
from safetensors.torch import load, save

from voxray import uri
from voxray.audio import AudioSpec
from voxray.config import Config, build_config, to_yaml
from voxray.text import Vocabulary

FINAL_DIR = "final"
FILES = ("model.safetensors", "model.json", "config.yaml", "vocab.json", "audio_spec.json", "stats.json")


@dataclass
class FinalModel:
    weights: dict[str, torch.Tensor]
    manifest: dict[str, Any]
    config: Config
    vocabulary: Vocabulary
    audio_spec: AudioSpec
    stats: dict[str, Any]


def write_final(folder: str, *, weights: dict[str, torch.Tensor], manifest: dict[str, Any],
                config: Config, vocabulary: list[str], stats: dict[str, Any]) -> None:
    """Write the export into ``folder`` (local or s3://), replacing an older one file by file."""
    uri.write_bytes(uri.join(folder, "model.safetensors"),
                    save({k: v.detach().cpu().contiguous() for k, v in weights.items()}))
    texts = {
        "model.json": json.dumps(manifest, indent=1, ensure_ascii=False),
        "config.yaml": to_yaml(config),
        "vocab.json": Vocabulary(vocabulary).to_json(),
        "audio_spec.json": json.dumps(config.audio.model_dump(), indent=1),
        "stats.json": json.dumps(stats, indent=1, ensure_ascii=False),
    }
    for name, text in texts.items():
        uri.write_text(uri.join(folder, name), text)


def read_final(folder: str) -> FinalModel:
    missing = [name for name in FILES if not uri.exists(uri.join(folder, name))]
    if missing:
        raise FileNotFoundError(f"{folder} is not a voxray model export (missing {', '.join(missing)})")
    config = build_config(yaml.safe_load(uri.read_text(uri.join(folder, "config.yaml"))))
    return FinalModel(
        weights=load(uri.read_bytes(uri.join(folder, "model.safetensors"))),
        manifest=json.loads(uri.read_text(uri.join(folder, "model.json"))),
        config=config,
        vocabulary=Vocabulary.from_json(uri.read_text(uri.join(folder, "vocab.json"))),
        audio_spec=AudioSpec(**json.loads(uri.read_text(uri.join(folder, "audio_spec.json")))),
        stats=json.loads(uri.read_text(uri.join(folder, "stats.json"))))
