"""HiFi-GAN's generator (Kong et al. 2020): a log-mel [B, n_mels, T] is upsampled by transposed
convolutions whose rates multiply to the hop length, each stage followed by multi-receptive-field
fusion (the mean of residual blocks with different kernels and dilations) -> waveform [B, 1, T * hop].

Presets: ``v1`` (512 channels), ``v2`` (128), ``v3`` (256, three stages, the lighter ResBlock2)
as published for 22.05 kHz / hop 256, and ``tiny`` for CPU tests and demos.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

LRELU_SLOPE = 0.1

PRESETS: dict[str, dict] = {
    "v1": dict(upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4), channels=512,
               resblock="1", resblock_kernel_sizes=(3, 7, 11), resblock_dilations=((1, 3, 5),) * 3),
    "v2": dict(upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4), channels=128,
               resblock="1", resblock_kernel_sizes=(3, 7, 11), resblock_dilations=((1, 3, 5),) * 3),
    "v3": dict(upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8), channels=256,
               resblock="2", resblock_kernel_sizes=(3, 5, 7), resblock_dilations=((1, 2), (2, 6), (3, 12))),
    "tiny": dict(upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8), channels=32,
                 resblock="2", resblock_kernel_sizes=(3, 5), resblock_dilations=((1, 2), (2, 6))),
}


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """ResBlock1 (two convolutions per dilation) or ResBlock2 (one), residual around each."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...], double: bool) -> None:
        super().__init__()
        self.first = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, dilation=d,
                                                         padding=_padding(kernel, d))) for d in dilations)
        self.second = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel)))
                                    for _ in dilations) if double else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.first):
            y = conv(F.leaky_relu(x, LRELU_SLOPE))
            if self.second is not None:
                y = self.second[i](F.leaky_relu(y, LRELU_SLOPE))
            x = x + y
        return x


class HiFiGAN(nn.Module):
    def __init__(self, *, n_mels: int, upsample_rates: tuple[int, ...], upsample_kernel_sizes: tuple[int, ...],
                 channels: int, resblock: str, resblock_kernel_sizes: tuple[int, ...],
                 resblock_dilations: tuple[tuple[int, ...], ...]) -> None:
        super().__init__()
        if len(upsample_rates) != len(upsample_kernel_sizes):
            raise ValueError(f"upsample_rates {list(upsample_rates)} and upsample_kernel_sizes "
                             f"{list(upsample_kernel_sizes)} must have the same length")
        if len(resblock_kernel_sizes) != len(resblock_dilations):
            raise ValueError(f"resblock_kernel_sizes {list(resblock_kernel_sizes)} and resblock_dilations "
                             f"{[list(d) for d in resblock_dilations]} must have the same length")
        if channels >> len(upsample_rates) < 1:
            raise ValueError(f"channels={channels} halves {len(upsample_rates)} times: too few channels")
        self.hop_length = math.prod(upsample_rates)
        self.pre = weight_norm(nn.Conv1d(n_mels, channels, 7, padding=3))
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            width = channels >> (i + 1)
            self.ups.append(weight_norm(nn.ConvTranspose1d(width * 2, width, kernel, rate,
                                                           padding=(kernel - rate) // 2)))
            self.blocks.append(nn.ModuleList(ResBlock(width, k, tuple(d), double=resblock == "1")
                                             for k, d in zip(resblock_kernel_sizes, resblock_dilations)))
        self.post = weight_norm(nn.Conv1d(channels >> len(upsample_rates), 1, 7, padding=3))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, T] (natural log) -> waveform [B, 1, T * hop] in [-1, 1]."""
        x = self.pre(mel)
        for up, blocks in zip(self.ups, self.blocks):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            x = sum(block(x) for block in blocks) / len(blocks)
        return torch.tanh(self.post(F.leaky_relu(x)))
