"""Log-mel, F0 and energy, frame-aligned: frame ``i`` of each is centred on sample
``i * hop + hop / 2`` of the waveform (cropped to ``n_frames * hop`` samples)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torchaudio

from voxray.audio import AudioSpec

with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import pyworld


@dataclass(frozen=True)
class Features:
    waveform: np.ndarray  # [n_frames * hop] float32
    mel: np.ndarray       # [n_frames, n_mels] float32, natural log
    f0: np.ndarray        # [n_frames] float32 Hz, 0 where unvoiced
    energy: np.ndarray    # [n_frames] float32, L2 norm of the magnitude spectrum

    @property
    def n_frames(self) -> int:
        return self.mel.shape[0]


@lru_cache(maxsize=4)
def mel_basis(spec: AudioSpec) -> tuple[torch.Tensor, torch.Tensor]:
    filters = torchaudio.functional.melscale_fbanks(
        spec.n_fft // 2 + 1, spec.fmin, spec.fmax, spec.n_mels, spec.sample_rate,
        norm="slaney", mel_scale="slaney",
    )  # [n_freqs, n_mels]
    return filters.T.contiguous(), torch.hann_window(spec.win_length)


def magnitude(waveform: torch.Tensor, spec: AudioSpec) -> torch.Tensor:
    """[..., samples] -> [..., n_freqs, samples // hop] magnitude STFT (HiFi-GAN padding)."""
    _, window = mel_basis(spec)
    padded = torch.nn.functional.pad(waveform.unsqueeze(-2), (spec.pad, spec.pad),
                                     mode="reflect").squeeze(-2)
    stft = torch.stft(padded, spec.n_fft, spec.hop_length, spec.win_length,
                      window.to(waveform.device), center=False, return_complex=True)
    return stft.abs()


def mel_from_magnitude(spectrum: torch.Tensor, spec: AudioSpec) -> torch.Tensor:
    """[..., n_freqs, frames] magnitude -> [..., n_mels, frames] natural-log mel."""
    filters, _ = mel_basis(spec)
    return torch.log(torch.clamp(filters.to(spectrum.device) @ spectrum, min=spec.log_floor))


def log_mel(waveform: torch.Tensor, spec: AudioSpec) -> torch.Tensor:
    """[..., samples] -> [..., n_mels, frames]. Shared by preprocessing and vocoder losses."""
    return mel_from_magnitude(magnitude(waveform, spec), spec)


def f0_contour(waveform: np.ndarray, spec: AudioSpec, n_frames: int, floor: float,
               ceil: float) -> np.ndarray:
    """WORLD DIO + StoneMask, sampled at the mel frame centres."""
    shifted = waveform[spec.hop_length // 2:].astype(np.float64)
    period_ms = 1000 * spec.hop_length / spec.sample_rate
    f0, times = pyworld.dio(shifted, spec.sample_rate, f0_floor=floor, f0_ceil=ceil,
                            frame_period=period_ms)
    f0 = pyworld.stonemask(shifted, f0, times, spec.sample_rate)
    out = np.zeros(n_frames, dtype=np.float32)
    out[: min(n_frames, f0.shape[0])] = f0[:n_frames]
    return out


def extract(waveform: np.ndarray, spec: AudioSpec, f0_floor: float = 65.0,
            f0_ceil: float = 800.0) -> Features:
    n_frames = spec.frames_for(waveform.shape[0])
    cropped = np.ascontiguousarray(waveform[: n_frames * spec.hop_length], dtype=np.float32)
    with torch.inference_mode():
        signal = torch.from_numpy(cropped)
        spectrum = magnitude(signal, spec)                       # [n_freqs, n_frames]
        mel = mel_from_magnitude(spectrum, spec).T
        energy = torch.linalg.vector_norm(spectrum, dim=0)
    f0 = f0_contour(cropped, spec, n_frames, f0_floor, f0_ceil)
    return Features(cropped, mel.numpy().astype(np.float32, copy=False),
                    f0, energy.numpy().astype(np.float32, copy=False))
