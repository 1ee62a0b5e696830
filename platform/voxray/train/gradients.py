"""Gradient health, the TransformerTTS script's checks: per-layer gradient norms (for TensorBoard),
a warning when one layer's norm jumps far above its own recent median, and clipping by a
percentile of the recent global norms (``train.clip=percentile``, AutoClip: Seetharaman et al.,
2020) instead of a fixed ``train.grad_clip``.

Norms are read between ``engine.backward`` and ``engine.step`` with DeepSpeed's
``safe_get_full_grad``, which assembles a ZeRO-partitioned gradient (a collective at ZeRO 1-3:
every rank reads the same parameters in the same order)."""

from __future__ import annotations

import math
import re
from collections import deque
from typing import Optional

import numpy as np
import torch

EXPLOSION_FACTOR = 10.0     # a layer's norm this many times its recent median is an explosion
EXPLOSION_HISTORY = 50      # log points a layer's median is taken over
_WRAPPERS = re.compile(r"^(module\.|base_model\.model\.|_orig_mod\.)+")


def layer_of(name: str) -> str:
    """A parameter's layer: its module path up to the first index below it (``encoder.layers.3``),
    else its module (``mel_out``); peft and DeepSpeed wrappers and LoRA's adapter names removed."""
    parts = _WRAPPERS.sub("", name).split(".")[:-1] or ["(root)"]
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(p for p in parts if p not in ("base_layer", "lora_A", "lora_B", "default"))


@torch.no_grad()
def layer_norms(module: torch.nn.Module) -> dict[str, float]:
    """Each layer's gradient L2 norm over its trainable parameters (before clipping)."""
    from deepspeed.utils import safe_get_full_grad

    squares: dict[str, float] = {}
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        grad = safe_get_full_grad(parameter)
        if grad is not None:
            layer = layer_of(name)
            squares[layer] = squares.get(layer, 0.0) + float(grad.float().pow(2).sum())
    return {layer: math.sqrt(value) for layer, value in squares.items()}


class ExplosionWatch:
    """Per layer, the norms of the last ``EXPLOSION_HISTORY`` log points; ``check`` names the
    layers whose new norm exceeds ``EXPLOSION_FACTOR`` x their median (after 5 points), once per
    episode: a layer named is named again only after a norm back under the factor (a GAN's
    discriminator whose norms grow for a while with the generator's progress was named at every
    log point: 23 lines in `make demo`'s vocoder run, 10 with this)."""

    def __init__(self) -> None:
        self.history: dict[str, deque] = {}
        self.above: set[str] = set()

    def check(self, norms: dict[str, float]) -> list[tuple[str, float, float]]:
        exploded = []
        for layer, norm in norms.items():
            past = self.history.setdefault(layer, deque(maxlen=EXPLOSION_HISTORY))
            if len(past) >= 5 and math.isfinite(norm):
                median = float(np.median(past))
                if median > 0 and norm > EXPLOSION_FACTOR * median:
                    if layer not in self.above:
                        exploded.append((layer, norm, median))
                    self.above.add(layer)
                else:
                    self.above.discard(layer)
            if math.isfinite(norm):
                past.append(norm)
        return exploded


class PercentileClip:
    """The clipping threshold of the next step: the ``percentile`` of the last ``window`` finite
    global norms, ``fallback`` (train.grad_clip) until 20 have been seen. The norms travel in the
    checkpoint (``state``/``load``), so a resumed run clips as the uninterrupted one would."""

    def __init__(self, percentile: float, window: int, fallback: float) -> None:
        self.percentile, self.fallback = percentile, fallback
        self.norms: deque = deque(maxlen=window)

    def add(self, norm: float) -> None:
        if math.isfinite(norm):
            self.norms.append(norm)

    def state(self) -> dict:
        return {"norms": list(self.norms)}

    def load(self, state: dict) -> None:
        self.norms.clear()
        self.norms.extend(state["norms"])          # a changed clip_window keeps the newest that fit

    def threshold(self) -> float:
        if len(self.norms) < 20:
            return self.fallback
        return float(np.percentile(self.norms, self.percentile))


def set_clip(engine, value: float) -> Optional[str]:
    """Make the engine's next step clip to ``value``: DeepSpeed's ZeRO / fp16 / bf16 optimizers
    keep it in ``clip_grad``, voxray's ZeRO-0 fp32 AdamW in ``clip``. Returns the attribute set."""
    optimizer = engine.optimizer
    for attribute in ("clip_grad", "clip"):
        if hasattr(optimizer, attribute):
            setattr(optimizer, attribute, value)
            return attribute
    return None
