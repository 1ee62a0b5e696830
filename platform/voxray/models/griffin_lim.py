"""Log-mel -> waveform with Griffin-Lim: audible output before a vocoder is trained."""

from __future__ import annotations

import torch
import torchaudio

from voxray.audio import AudioSpec
from voxray.data.features import mel_basis


def mel_to_audio(log_mel: torch.Tensor, spec: AudioSpec, iterations: int = 32) -> torch.Tensor:
    """log_mel [frames, n_mels] (store convention) -> waveform [frames * hop], float32 in [-1, 1]."""
    filters, _ = mel_basis(spec)                                   # [n_mels, n_freqs]
    mel = torch.exp(log_mel.float()).T                              # [n_mels, frames]
    magnitude = torch.linalg.lstsq(filters, mel).solution.clamp(min=0)   # [n_freqs, frames]
    griffin_lim = torchaudio.transforms.GriffinLim(
        n_fft=spec.n_fft, n_iter=iterations, win_length=spec.win_length, hop_length=spec.hop_length,
        power=1.0)
    audio = griffin_lim(magnitude)
    audio = audio[: log_mel.shape[0] * spec.hop_length]
    audio = torch.nn.functional.pad(audio, (0, log_mel.shape[0] * spec.hop_length - audio.shape[0]))
    peak = audio.abs().max()
    return audio / peak * 0.95 if peak > 0 else audio
