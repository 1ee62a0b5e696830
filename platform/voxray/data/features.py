"""The per-utterance features of the store: log-mel, F0 and energy, frame-aligned (the signal
processing itself is ``voxray.dsp``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from voxray.audio import AudioSpec
from voxray.dsp import f0_contour, magnitude, mel_from_magnitude


@dataclass(frozen=True)
class Features:
    waveform: np.ndarray  # [n_frames * hop] float32
    mel: np.ndarray       # [n_frames, n_mels] float32, natural log
    f0: np.ndarray        # [n_frames] float32 Hz, 0 where unvoiced
    energy: np.ndarray    # [n_frames] float32, L2 norm of the magnitude spectrum

    @property
    def n_frames(self) -> int:
        return self.mel.shape[0]


def extract(waveform: np.ndarray, spec: AudioSpec, f0_floor: float = 65.0,
            f0_ceil: float = 800.0, f0_rate: int = 0, f0_speed: int = 1) -> Features:
    n_frames = spec.frames_for(waveform.shape[0])
    cropped = np.ascontiguousarray(waveform[: n_frames * spec.hop_length], dtype=np.float32)
    with torch.inference_mode():
        signal = torch.from_numpy(cropped)
        spectrum = magnitude(signal, spec)                       # [n_freqs, n_frames]
        mel = mel_from_magnitude(spectrum, spec).T
        energy = torch.linalg.vector_norm(spectrum, dim=0)
    f0 = f0_contour(cropped, spec, n_frames, f0_floor, f0_ceil, f0_rate, f0_speed)
    return Features(cropped, mel.numpy().astype(np.float32, copy=False),
                    f0, energy.numpy().astype(np.float32, copy=False))


def empty(spec: AudioSpec) -> Features:
    """No frames: a row kept for its audio codes alone (its audio file is missing)."""
    return Features(np.zeros(0, np.float32), np.zeros((0, spec.n_mels), np.float32), np.zeros(0, np.float32),
                    np.zeros(0, np.float32))
