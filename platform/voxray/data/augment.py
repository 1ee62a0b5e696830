"""Augmented copies of training utterances (``preprocess.augment``): speed perturbation, pitch
shift and additive noise, each applied with its own probability.

For each kept train row, ``augment.copies`` draws are made from a generator seeded by the row's
id and the copy number (the same corpus gives the same augmented rows on every run and on a
resumed one). A draw where no transform fired adds nothing; otherwise the transformed audio
becomes an extra train row whose id says what was done (``ID@speed0.93+pitch-1.2st+noise21dB``)
and whose ``augmented`` column says it again. Validation and test rows are never augmented.

audiomentations is the library we would use, but its releases that run on numpy 2 pin
``soxr<1`` against the ``soxr==1.1.0`` librosa needs here; the three transforms are short on
what the platform already has: speed by resampling (tempo and pitch together, as Kaldi's and
ESPnet's speed perturbation), pitch by ``librosa.effects.pitch_shift`` (phase vocoder +
resampling, duration kept), white noise at a signal-to-noise ratio over the whole utterance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from voxray.dsp import resample

SPEED_STEP = 0.01          # speed factors on a 1 % grid: the resampler's ratio stays small (e.g. 107/100)


@dataclass(frozen=True)
class Augmented:
    suffix: str            # what was done, as the row's id and ``augmented`` column say it
    waveform: np.ndarray
    kinds: tuple[str, ...]  # "speed", "pitch", "noise"


def _rng(utt_id: str, copy: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{utt_id}/{copy}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def speed(waveform: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (and higher): ``len / factor`` samples."""
    ratio = Fraction(factor).limit_denominator(100)
    return resample(waveform, ratio.numerator, ratio.denominator)


def pitch(waveform: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    import librosa

    return librosa.effects.pitch_shift(waveform, sr=sample_rate, n_steps=semitones).astype(np.float32)


def noise(waveform: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    rms = float(np.sqrt(np.mean(waveform.astype(np.float64) ** 2)))
    scale = rms / 10 ** (snr_db / 20)
    return (waveform + rng.standard_normal(waveform.shape[0]) * scale).astype(np.float32)


def variants(utt_id: str, waveform: np.ndarray, sample_rate: int, settings, max_peak: float) -> list[Augmented]:
    """The augmented copies of one train utterance (``settings``: the ``preprocess.augment``
    section); peaks above ``max_peak`` after a transform are scaled down to it."""
    out = []
    for copy in range(settings.copies):
        rng = _rng(utt_id, copy)
        fire = rng.random(3) < (settings.speed, settings.pitch, settings.noise)
        factor = round(rng.uniform(*settings.speed_range) / SPEED_STEP) * SPEED_STEP
        semitones = round(float(rng.uniform(*settings.pitch_semitones)), 1)
        snr = round(float(rng.uniform(*settings.noise_snr_db)))
        if not fire.any():
            continue
        audio, parts, kinds = waveform, [], []
        if fire[0] and abs(factor - 1) > 1e-9:
            audio = speed(audio, factor)
            parts.append(f"speed{factor:.2f}")
            kinds.append("speed")
        if fire[1] and semitones != 0:
            audio = pitch(audio, sample_rate, semitones)
            parts.append(f"pitch{semitones:+.1f}st")
            kinds.append("pitch")
        if fire[2]:
            audio = noise(audio, snr, rng)
            parts.append(f"noise{snr}dB")
            kinds.append("noise")
        if not parts:
            continue
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > max_peak:
            audio = (audio * (max_peak / peak)).astype(np.float32)
        suffix = "+".join(parts) + (f"#{copy}" if settings.copies > 1 else "")
        out.append(Augmented(suffix, np.ascontiguousarray(audio, dtype=np.float32), tuple(kinds)))
    return out
