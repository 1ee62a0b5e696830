"""Vocoders: log-mel -> waveform. Builders take flat, typed arguments (never a config)."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from voxray.models.vocoder import discriminators, hifigan, vocos

GENERATORS = ("hifigan", "vocos")


def generator_args(generator: str, preset: str, *, n_mels: int, n_fft: int, hop_length: int,
                   **overrides: Any) -> dict[str, Any]:
    """The builder arguments of a generator: the preset's, with ``overrides`` (None = keep)."""
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r} (choose from {', '.join(GENERATORS)})")
    presets = hifigan.PRESETS if generator == "hifigan" else vocos.PRESETS
    if preset not in presets:
        raise ValueError(f"unknown vocoder preset {preset!r} (choose from {', '.join(presets)})")
    args = {**presets[preset], **{k: v for k, v in overrides.items() if v is not None and k in presets[preset]}}
    if generator == "hifigan":
        if math.prod(args["upsample_rates"]) != hop_length:
            raise ValueError(f"model.upsample_rates {list(args['upsample_rates'])} multiply to "
                             f"{math.prod(args['upsample_rates'])}, but audio.hop_length is {hop_length}: "
                             "their product must equal the hop length")
        return {"generator": "hifigan", "n_mels": n_mels, **args}
    return {"generator": "vocos", "n_mels": n_mels, "n_fft": n_fft, "hop_length": hop_length, **args}


def build_generator(args: dict[str, Any]) -> nn.Module:
    """From ``generator_args`` (as saved in an export's model.json)."""
    args = dict(args)
    kind = args.pop("generator")
    return hifigan.HiFiGAN(**args) if kind == "hifigan" else vocos.Vocos(**args)


def build_discriminators(preset: str, width: float | None = None) -> discriminators.Discriminators:
    return discriminators.Discriminators(width=width if width is not None else discriminators.PRESETS[preset]["width"])
