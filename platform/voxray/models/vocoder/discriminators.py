"""HiFi-GAN's discriminators: multi-period (the waveform folded into [T / p, p] for periods
2, 3, 5, 7, 11, 2-D convolutions along time) and multi-scale (1-D convolutions on the waveform
and on two average-pooled copies, the first with spectral norm). Each returns, per
sub-discriminator, its score map and its feature maps (for the feature-matching loss).

Channel widths scale with ``width`` (HiFi-GAN's are ``width=1``); ``tiny`` for CPU tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from voxray.models.vocoder.hifigan import LRELU_SLOPE

PRESETS: dict[str, dict] = {
    "v1": dict(width=1.0), "v2": dict(width=1.0), "v3": dict(width=1.0), "tiny": dict(width=1 / 16),
}
PERIODS = (2, 3, 5, 7, 11)

Scores = list[torch.Tensor]
Features = list[list[torch.Tensor]]


def _channels(base: tuple[int, ...], width: float) -> list[int]:
    return [max(4, int(c * width)) for c in base]


def _through(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The convolution stack with leaky ReLUs, then the score head: (score [B, -1], feature maps)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = post(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, width: float) -> None:
        super().__init__()
        self.period = period
        c = [1, *_channels((32, 128, 512, 1024), width)]
        self.convs = nn.ModuleList(weight_norm(nn.Conv2d(c[i], c[i + 1], (5, 1), (3, 1), padding=(2, 0)))
                                   for i in range(4))
        self.convs.append(weight_norm(nn.Conv2d(c[4], c[4], (5, 1), 1, padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(c[4], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, channels, samples = audio.shape
        if samples % self.period:
            audio = F.pad(audio, (0, self.period - samples % self.period), "reflect")
        return _through(self.convs, self.post, audio.view(batch, channels, -1, self.period))


class ScaleDiscriminator(nn.Module):
    def __init__(self, width: float, spectral: bool) -> None:
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        c = [1, *_channels((128, 128, 256, 512, 1024, 1024, 1024), width)]
        specs = [(15, 1, 1, 7), (41, 2, 4, 20), (41, 2, 16, 20), (41, 4, 16, 20), (41, 4, 16, 20),
                 (41, 1, 16, 20), (5, 1, 1, 2)]                     # kernel, stride, groups, padding
        self.convs = nn.ModuleList(
            norm(nn.Conv1d(c[i], c[i + 1], k, s, groups=math.gcd(g, c[i], c[i + 1]), padding=p))
            for i, (k, s, g, p) in enumerate(specs))
        self.post = norm(nn.Conv1d(c[-1], 1, 3, 1, padding=1))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _through(self.convs, self.post, audio)


class Discriminators(nn.Module):
    """Multi-period + multi-scale: ``forward(audio [B, 1, S]) -> (scores, features)``, one entry
    per sub-discriminator. Call it once on real and fake concatenated along the batch."""

    def __init__(self, *, width: float, periods: tuple[int, ...] = PERIODS, scales: int = 3) -> None:
        super().__init__()
        self.periods = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)
        self.scales = nn.ModuleList(ScaleDiscriminator(width, spectral=i == 0) for i in range(scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, audio: torch.Tensor) -> tuple[Scores, Features]:
        scores, features = [], []
        for discriminator in self.periods:
            score, feats = discriminator(audio)
            scores.append(score)
            features.append(feats)
        x = audio
        for i, discriminator in enumerate(self.scales):
            if i:
                x = self.pool(x)
            score, feats = discriminator(x)
            scores.append(score)
            features.append(feats)
        return scores, features
