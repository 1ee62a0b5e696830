"""Signal processing shared by preprocessing, losses, evaluation and synthesis: the log-mel,
the magnitude STFT, F0, and Griffin-Lim (mel -> waveform without a vocoder).

Frame ``i`` of every frame-rate feature is centred on sample ``i * hop + hop / 2`` of the
waveform (cropped to ``n_frames * hop`` samples): HiFi-GAN's padding convention.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import torch
import torchaudio

from voxray.audio import AudioSpec

with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import pyworld


@lru_cache(maxsize=4)
def mel_basis(spec: AudioSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(mel filters [n_mels, n_freqs], Hann window [win_length])."""
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
    """[..., samples] -> [..., n_mels, frames]: the store's mel, and the vocoder's mel loss."""
    return mel_from_magnitude(magnitude(waveform, spec), spec)


@lru_cache(maxsize=16)
def _resampler(source_rate: int, target_rate: int) -> torchaudio.transforms.Resample:
    # The windowed-sinc kernel is built once per rate pair and reused for every file.
    return torchaudio.transforms.Resample(source_rate, target_rate)


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """[samples] float32 at ``source_rate`` -> at ``target_rate`` (windowed sinc)."""
    if source_rate == target_rate:
        return waveform
    with torch.inference_mode():
        out = _resampler(source_rate, target_rate)(torch.from_numpy(np.ascontiguousarray(waveform))[None])[0]
    return out.numpy()


def f0_contour(waveform: np.ndarray, spec: AudioSpec, n_frames: int, floor: float,
               ceil: float, rate: int = 0, speed: int = 1) -> np.ndarray:
    """WORLD DIO + StoneMask, sampled at the mel frame centres: [n_frames] Hz, 0 where unvoiced.

    ``rate``: estimate on the audio resampled to this rate first (0, or not below the audio's
    rate: on the audio itself). F0 lives far below Nyquist at 11025 Hz, and DIO and StoneMask
    cost in proportion to the samples (see ``preprocess.f0_rate``). ``speed``: DIO's own
    decimation (1: none)."""
    shifted = waveform[spec.hop_length // 2:]
    fs = spec.sample_rate
    if 0 < rate < fs:
        shifted, fs = resample(shifted, fs, rate), rate
    shifted = shifted.astype(np.float64)
    period_ms = 1000 * spec.hop_length / spec.sample_rate
    f0, times = pyworld.dio(shifted, fs, f0_floor=floor, f0_ceil=ceil, frame_period=period_ms, speed=speed)
    f0 = pyworld.stonemask(shifted, f0, times, fs)
    out = np.zeros(n_frames, dtype=np.float32)
    out[: min(n_frames, f0.shape[0])] = f0[:n_frames]
    return out


def griffin_lim(log_mel_frames: torch.Tensor, spec: AudioSpec, iterations: int = 32) -> torch.Tensor:
    """log-mel [frames, n_mels] (store convention) -> waveform [frames * hop], float32 peaking at
    0.95: audible output before a vocoder is trained (it buzzes)."""
    filters, _ = mel_basis(spec)                                              # [n_mels, n_freqs]
    mel = torch.exp(log_mel_frames.float()).T                                 # [n_mels, frames]
    spectrum = torch.linalg.lstsq(filters, mel).solution.clamp(min=0)        # [n_freqs, frames]
    transform = torchaudio.transforms.GriffinLim(
        n_fft=spec.n_fft, n_iter=iterations, win_length=spec.win_length, hop_length=spec.hop_length,
        power=1.0)
    samples = log_mel_frames.shape[0] * spec.hop_length
    audio = transform(spectrum)[:samples]
    audio = torch.nn.functional.pad(audio, (0, samples - audio.shape[0]))
    peak = audio.abs().max()
    return audio / peak * 0.95 if peak > 0 else audio
