"""A pretrained talker inside the talker recipe: the model as one ``nn.Module`` whose forward
takes a collated batch (what DeepSpeed wraps), built from the folder (under ZeRO-3 init at
stage 3), with peft LoRA/DoRA, and its export in the upstream layout.

The run validates on the engine's own module (no second copy of a 1-2B model on every rank), so
at ZeRO-3 every rank must make the same number of forward calls (``train.distributed.aligned_batches`` pads the
shorter ranks with repeats whose sums are dropped). The export gathers the trained weights
(``gathered_state``, every rank), and rank 0 builds the plain model from the base folder, loads
them, merges the adapters and writes ``save_pretrained``'s layout (or peft's adapter folder).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from typing import Any, Optional

import torch
from torch import nn

from voxray import uri
from voxray.models.adapters import apply_lora
from voxray.models.pretrained.base import PretrainedTalker, talker_for

ADAPTER_DIR = "adapter"              # finetune.export=adapter: peft's adapter folder, RUN/final/adapter


@functools.lru_cache(maxsize=4)
def talker(folder: str) -> PretrainedTalker:
    """The architecture of ``folder`` (its tokenizer loaded once per process)."""
    return talker_for(folder)


class TalkerModule(nn.Module):
    """The upstream model (``.model``; a peft model under LoRA) with the architecture's forward
    over a collated batch."""

    def __init__(self, architecture: PretrainedTalker, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.architecture = architecture

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return self.architecture.forward(self.model, batch)


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build(folder: str, lora: Any, *, precision: str = "fp32", checkpointing: bool = False,
          train_heads: bool = False, ds_config: Optional[dict[str, Any]] = None,
          total_steps: Optional[int] = None) -> TalkerModule:
    """The pretrained talker ready to train: loaded (partitioned as it loads at ZeRO-3), its
    codec frozen, activation checkpointing on request, adapters when ``lora.rank > 0`` (with the
    embeddings and output heads trained in full when ``train_heads``; else everything trains)."""
    arch = talker(folder)
    keep = _zero3_context(ds_config)
    try:
        model = arch.load(DTYPES[precision])
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if lora.rank > 0:
            model = apply_lora(model, lora, target_modules=arch.lora_targets, feed_forward=arch.feed_forward,
                               modules_to_save=list(arch.keep_trainable) if train_heads else None,
                               total_steps=total_steps)
            for name, parameter in model.named_parameters():       # peft unfreezes nothing of the codec; check
                if any(f".{part}." in f".{name}" for part in arch.frozen):
                    parameter.requires_grad_(False)
    finally:
        del keep
    return TalkerModule(arch, model)


def _zero3_context(ds_config: Optional[dict[str, Any]]):
    """transformers' ``HfDeepSpeedConfig`` while the model loads and peft wraps it at ZeRO-3
    (from_pretrained then builds each parameter partitioned under ``deepspeed.zero.Init``, so no
    rank holds the whole model; peft gathers a weight where it needs one whole, e.g. DoRA's norms).
    transformers keeps only a weak reference: the caller holds the returned object meanwhile."""
    if ds_config is None or ds_config["zero_optimization"]["stage"] != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_config)


def plain_model(module: nn.Module) -> nn.Module:
    """The upstream model with adapters merged (what the merged export saves)."""
    model = module.model if isinstance(module, TalkerModule) else module
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def write_export(module: nn.Module, folder: str, *, adapter_only: bool, speakers: list[str], store: str) -> None:
    """``folder`` (local or s3://): the upstream layout of the trained model (merged), or with
    ``adapter_only`` peft's adapter folder in ``folder/adapter`` (loads on the base with
    ``PeftModel.from_pretrained``). voxray's own files (``export.write_final``) go next to them."""
    arch: PretrainedTalker = module.architecture
    with tempfile.TemporaryDirectory() as local:
        if adapter_only:
            module.model.save_pretrained(os.path.join(local, ADAPTER_DIR))
        else:
            arch.save(plain_model(module), local, speakers, store)
        _upload(local, folder)


def _upload(local: str, folder: str) -> None:
    for root, _, names in os.walk(local):
        for name in names:
            path = os.path.join(root, name)
            target = uri.join(folder, *os.path.relpath(path, local).split(os.sep))
            if uri.is_remote(folder):
                with open(path, "rb") as handle:
                    uri.write_bytes(target, handle.read())
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(path, target)


def load_export(final: str, manifest: dict[str, Any]) -> tuple[PretrainedTalker, nn.Module]:
    """(architecture, model in eval mode) of a pretrained talker's export: the merged model in
    ``final``, or the base folder the manifest names with peft's ``final/adapter`` merged on it."""
    if uri.is_remote(final):
        raise FileNotFoundError(f"{final}: a pretrained talker's export loads from a local folder (copy it first)")
    if manifest.get("adapter_only"):
        from peft import PeftModel

        arch = talker(manifest["base"])
        base = arch.model_class().from_pretrained(arch.folder)
        model = PeftModel.from_pretrained(base, os.path.join(final, ADAPTER_DIR)).merge_and_unload()
        return arch, model.eval()
    arch = talker(final)
    return arch, arch.model_class().from_pretrained(arch.folder).eval()
