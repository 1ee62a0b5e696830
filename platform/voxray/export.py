"""``RUN_URI/final/``: everything needed to use a trained model without the run or the store.

  model.safetensors   weights (EMA when the run keeps one, LoRA merged); a vocoder's: the generator
  model.json          family, builder arguments (speaker and language names, G2P per language for
                      the acoustic model)
  config.yaml         the resolved config the run trained with (it names its family)
  audio_spec.json     the AudioSpec features were computed with
  vocab.json          the token vocabulary, for models that read text (the model's, including
                      tokens added by fine-tuning)
  stats.json          the store's statistics (mel, F0, energy normalisation; label tables)

A pretrained talker's export (``model.json``'s ``format``: ``transformers``) holds the upstream
layout instead of model.safetensors/vocab.json (``save_pretrained``'s config.json and weights, the
tokenizer and processor files; or peft's ``adapter/``), so its own package loads it, with the
voxray files above beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import torch
import yaml
from safetensors.torch import load, save

from voxray import uri
from voxray.audio import AudioSpec
from voxray.config import Config, build_config, to_yaml
from voxray.text import Vocabulary

FINAL_DIR = "final"
ADAPTER_DIR = "adapter"          # an adapter-only export: final/adapter/ (adapter.safetensors, adapter.json)
FILES = ("model.json", "config.yaml", "audio_spec.json")     # every export's (and model.safetensors, but:)
TRANSFORMERS = "transformers"          # model.json's format of a pretrained talker's export (upstream layout)


@dataclass
class FinalModel:
    weights: dict[str, torch.Tensor]
    manifest: dict[str, Any]
    config: Config
    audio_spec: AudioSpec
    vocabulary: Optional[Vocabulary] = None
    stats: Optional[dict[str, Any]] = None

    @property
    def family(self) -> str:
        return self.manifest.get("family", self.config.family)


def write_final(folder: str, *, weights: Optional[dict[str, torch.Tensor]], manifest: dict[str, Any], config: Config,
                vocabulary: Optional[list[str]] = None, stats: Optional[dict[str, Any]] = None) -> None:
    """Write the export into ``folder`` (local or s3://), replacing an older one file by file
    (``weights`` None: a pretrained talker's, whose weights are in the upstream layout)."""
    if weights is not None:
        uri.write_bytes(uri.join(folder, "model.safetensors"),
                        save({k: v.detach().cpu().contiguous() for k, v in weights.items()}))
    texts = {
        "model.json": json.dumps(manifest, indent=1, ensure_ascii=False),
        "config.yaml": to_yaml(config),
        "audio_spec.json": json.dumps(config.audio.model_dump(), indent=1),
    }
    if vocabulary is not None:
        texts["vocab.json"] = Vocabulary(vocabulary).to_json()
    if stats is not None:
        texts["stats.json"] = json.dumps(stats, indent=1, ensure_ascii=False)
    for name, text in texts.items():
        uri.write_text(uri.join(folder, name), text)


def write_adapter(final: str, state: dict, description: dict[str, Any]) -> str:
    """FINAL/adapter/ (FINAL: RUN/final, or a checkpoint's export): ``state``
    (``adapters.adapter_state``) and ``description`` (what a base model needs to take it: the
    manifest of the fine-tuned model, its vocabulary, the rows it added, the LoRA settings and
    targets). Returns the folder."""
    from safetensors.torch import save

    folder = uri.join(final, ADAPTER_DIR)
    uri.write_bytes(uri.join(folder, "adapter.safetensors"), save(state))
    uri.write_text(uri.join(folder, "adapter.json"), json.dumps(description, indent=1, ensure_ascii=False))
    return folder


def read_manifest(folder: str) -> Optional[dict[str, Any]]:
    """An export's model.json (its family, format, shape and labels) without its weights; None
    when ``folder`` has none."""
    path = uri.join(folder, "model.json")
    return json.loads(uri.read_text(path)) if uri.exists(path) else None


def read_final(folder: str, family: Optional[str] = None) -> FinalModel:
    """The export in ``folder``; with ``family``, an error unless it holds a model of that family."""
    missing = [name for name in FILES if not uri.exists(uri.join(folder, name))]
    if missing:
        raise FileNotFoundError(f"{folder} is not a voxray model export (missing {', '.join(missing)})")
    manifest = read_manifest(folder)
    upstream = manifest.get("format") == TRANSFORMERS
    if not upstream and not uri.exists(uri.join(folder, "model.safetensors")):
        raise FileNotFoundError(f"{folder} is not a voxray model export (missing model.safetensors)")
    if family and manifest.get("family") != family:
        raise ValueError(f"{folder} holds a model of the {manifest.get('family')!r} family; a {family!r} model "
                         "is needed here")
    optional = {name: uri.read_text(uri.join(folder, name)) for name in ("vocab.json", "stats.json")
                if uri.exists(uri.join(folder, name))}
    return FinalModel(
        weights={} if upstream else load(uri.read_bytes(uri.join(folder, "model.safetensors"))),
        manifest=manifest,
        config=build_config(yaml.safe_load(uri.read_text(uri.join(folder, "config.yaml"))), manifest.get("family")),
        audio_spec=AudioSpec(**json.loads(uri.read_text(uri.join(folder, "audio_spec.json")))),
        vocabulary=Vocabulary.from_json(optional["vocab.json"]) if "vocab.json" in optional else None,
        stats=json.loads(optional["stats.json"]) if "stats.json" in optional else None)
