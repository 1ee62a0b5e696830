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
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from voxray import uri
from voxray.audio import AudioSpec
from voxray.config import Config, build_config, to_yaml
from voxray.data.text import Vocabulary

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
    with tempfile.TemporaryDirectory(prefix="voxray-final-") as local:
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                  os.path.join(local, "model.safetensors"))
        texts = {
            "model.json": json.dumps(manifest, indent=1, ensure_ascii=False),
            "config.yaml": to_yaml(config),
            "vocab.json": Vocabulary(vocabulary).to_json(),
            "audio_spec.json": json.dumps(config.audio.model_dump(), indent=1),
            "stats.json": json.dumps(stats, indent=1, ensure_ascii=False),
        }
        for name, text in texts.items():
            with open(os.path.join(local, name), "w", encoding="utf-8") as handle:
                handle.write(text)
        for name in FILES:
            with open(os.path.join(local, name), "rb") as handle:
                uri.write_bytes(uri.join(folder, name), handle.read())


def read_final(folder: str) -> FinalModel:
    missing = [name for name in FILES if not uri.exists(uri.join(folder, name))]
    if missing:
        raise FileNotFoundError(f"{folder} is not a voxray model export (missing {', '.join(missing)})")
    with tempfile.TemporaryDirectory(prefix="voxray-final-") as local:
        path = os.path.join(local, "model.safetensors")
        with open(path, "wb") as handle:
            handle.write(uri.read_bytes(uri.join(folder, "model.safetensors")))
        weights = load_file(path)
    config = build_config(yaml.safe_load(uri.read_text(uri.join(folder, "config.yaml"))))
    return FinalModel(
        weights=weights,
        manifest=json.loads(uri.read_text(uri.join(folder, "model.json"))),
        config=config,
        vocabulary=Vocabulary.from_json(uri.read_text(uri.join(folder, "vocab.json"))),
        audio_spec=AudioSpec(**json.loads(uri.read_text(uri.join(folder, "audio_spec.json")))),
        stats=json.loads(uri.read_text(uri.join(folder, "stats.json"))))
