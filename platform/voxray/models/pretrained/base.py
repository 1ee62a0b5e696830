"""The interface a pretrained talker implements for the talker recipe (one file per architecture:
``csm.py``, ``qwen3_tts.py``; a third model is one more file that subclasses ``PretrainedTalker``
and one line in ``architectures``), and what is common: the folder check, loading under DeepSpeed ZeRO-3, freezing.

What the recipe asks of an architecture:

  codec()            the codes it speaks: name, n_codebooks, codebook_size, frame_rate, sample_rate
  layers()           its backbone's blocks (layer-wise learning-rate decay)
  model_class()      the upstream class ``from_pretrained`` loads
  collate(rows, ..)  store rows -> tensors (its tokenizer, its chat template)
  forward(model, b)  its own loss on a batch, and per-codebook logits/targets in the talker
                     family's form (``losses.talker.talker_losses`` reads them)
  save(model, dir, speakers, store)   the upstream folder layout, loadable by the upstream package
  generate(...)      codes for a text and a speaker
  lora_targets, feed_forward, embeddings, heads, block, frozen, keep_trainable: module-name
  patterns for LoRA, parameter groups and what stays frozen.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch
from torch import nn

from voxray import uri

class PretrainedTalker:
    architecture = ""
    model_type = ""
    codec_name = ""
    files: tuple[str, ...] = ("config.json",)
    lora_targets = ""
    feed_forward = r"mlp\.(gate|up|down)_proj"      # Llama-style MLPs (lora.ff_rank)
    embeddings: re.Pattern = re.compile("$^")
    heads: re.Pattern = re.compile("$^")
    block: re.Pattern = re.compile("$^")
    frozen: tuple[str, ...] = ()
    keep_trainable: tuple[str, ...] = ()
    columns = ["id", "text", "token_ids", "speaker_index", "n_frames", "audio_codes"]     # the store's, read
    adapter_export = ""      # why finetune.export=adapter cannot hold what this architecture exports ("": it can)

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        self.config = read_config(folder)

    def codec(self) -> dict[str, Any]:
        raise NotImplementedError

    def layers(self) -> int:
        raise NotImplementedError

    def model_class(self):
        raise NotImplementedError

    def load(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The model from the folder, its ``frozen`` parts frozen (at ZeRO-3 the caller holds the
        ``HfDeepSpeedConfig``: ``training.build``)."""
        import transformers

        transformers.utils.logging.disable_progress_bar()
        model = self.model_class().from_pretrained(self.folder, dtype=dtype)
        for name in self.frozen:
            for parameter in getattr(model, name).parameters():
                parameter.requires_grad_(False)
        return model


def read_config(folder: str) -> dict[str, Any]:
    """The folder's config.json, with clear errors for a folder that is not there or not a model."""
    if uri.is_remote(folder) or not os.path.isdir(folder):
        raise FileNotFoundError(f"the pretrained model folder {folder} does not exist (give a local folder in the "
                                "published layout: pretrained models load from disk, nothing is downloaded)")
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder} is not a pretrained model folder: config.json missing")
    with open(path) as handle:
        return json.load(handle)


def architectures() -> dict[str, type[PretrainedTalker]]:
    """config.json's ``model_type`` -> the class that fine-tunes it: the one place an architecture
    becomes a class (imported when a folder is read: each one imports its upstream package)."""
    from voxray.models.pretrained.csm import CsmTalker
    from voxray.models.pretrained.qwen3_tts import Qwen3TTSTalker

    return {cls.model_type: cls for cls in (CsmTalker, Qwen3TTSTalker)}


def talker_for(folder: str) -> PretrainedTalker:
    """The architecture of the model in ``folder`` (its config.json's ``model_type``), its files
    checked: an error naming what is missing, or what the folder holds when it is no talker voxray
    fine-tunes."""
    config = read_config(folder)
    kind, known = config.get("model_type"), architectures()
    if kind not in known:
        raise ValueError(f"{folder} holds a {kind!r} model; voxray fine-tunes pretrained talkers of the kinds "
                         f"{', '.join(sorted(known))}")
    cls = known[kind]
    missing = [name for name in cls.files if not os.path.exists(os.path.join(folder, name))]
    if not any(name.endswith(".safetensors") for name in os.listdir(folder)):
        missing.append("*.safetensors")
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete {cls.architecture} model folder: "
                                f"{', '.join(missing)} missing")
    return cls(folder)
