"""A Vocos-style generator (Siuzdak 2023): ConvNeXt blocks at the mel frame rate predict an STFT
(magnitude and phase) that an inverse STFT turns into the waveform. No upsampling network: many
times cheaper per sample than HiFi-GAN, which matters on CPUs and in sweeps."""

from __future__ import annotations

import torch
from torch import nn

PRESETS: dict[str, dict] = {
    "v1": dict(dim=512, intermediate=1536, layers=8),
    "v2": dict(dim=384, intermediate=1152, layers=8),
    "v3": dict(dim=256, intermediate=768, layers=6),
    "tiny": dict(dim=32, intermediate=96, layers=2),
}


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate: int, layer_scale: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, intermediate)
        self.down = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, dim, T] -> same."""
        y = self.depthwise(x).transpose(1, 2)
        y = self.down(torch.nn.functional.gelu(self.up(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class Vocos(nn.Module):
    def __init__(self, *, n_mels: int, n_fft: int, hop_length: int, dim: int, intermediate: int,
                 layers: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.embed = nn.Conv1d(n_mels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, intermediate, 1.0 / layers) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, T] (natural log) -> waveform [B, 1, T * hop] in [-1, 1]."""
        frames = mel.shape[-1]
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2).float()   # [B, n_fft + 2, T]
        log_magnitude, phase = x.chunk(2, dim=1)
        magnitude = torch.exp(log_magnitude).clamp(max=1e2)
        spectrum = torch.polar(magnitude, phase)
        audio = torch.istft(spectrum, self.n_fft, self.hop_length, self.n_fft, self.window, center=True,
                            length=frames * self.hop_length)
        return audio.clamp(-1, 1).unsqueeze(1)
