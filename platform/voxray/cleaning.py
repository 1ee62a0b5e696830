"""Decode, downmix, resample, loudness-normalise and trim one utterance.

Every failure raises ``Rejected`` with a stable reason string; the pipeline turns it into a
row of ``rejected.jsonl``. Sample-rate and channel mismatches are converted, never rejected.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache

from typing import Optional

import numpy as np
import soundfile

from voxray.dsp import resample  # noqa: F401  (cleaning.resample: decoded audio to the target rate)

# Reasons, as they appear in rejected.jsonl and stats.json.
MISSING_FILE = "missing_file"
EMPTY_FILE = "empty_file"
UNDECODABLE = "undecodable"
NON_FINITE = "non_finite"
SILENT = "silent"
EMPTY_TEXT = "empty_text"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
MALFORMED_ROW = "malformed_row"
MISSING_ALIGNMENT = "missing_alignment"
BAD_ALIGNMENT = "bad_alignment"
PROCESSING_ERROR = "processing_error"


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CleanAudio:
    waveform: np.ndarray        # float32 mono at the target rate, trimmed
    sample_rate: int
    trim_start_seconds: float   # where the kept audio starts in the decoded file
    source_sample_rate: int
    source_channels: int
    loudness_lufs: float        # of the trimmed speech, measured before normalisation
    denoise_db: Optional[float] = None   # noise floor lowered by (dB) when denoised


def noise_floor_db(waveform: np.ndarray, frame: int = 1024) -> float:
    """A waveform's noise floor relative to its speech: the 10th percentile of its frames' RMS
    level minus their 95th percentile, dB (gain-independent: a gain changes neither)."""
    usable = waveform[: len(waveform) // frame * frame].reshape(-1, frame) if len(waveform) >= frame else waveform[None]
    level = 20 * np.log10(np.maximum(np.sqrt(np.mean(np.square(usable, dtype=np.float64), axis=1)), 1e-10))
    return float(np.percentile(level, 10) - np.percentile(level, 95))


def denoise(waveform: np.ndarray, sample_rate: int, strength: float, stationary: bool) -> tuple[np.ndarray, float]:
    """noisereduce's spectral gating, removing ``strength`` of the estimated noise; and by how many
    dB it lowered the noise floor below the speech (``noise_floor_db``)."""
    import noisereduce

    cleaned = noisereduce.reduce_noise(y=waveform, sr=sample_rate, stationary=stationary, prop_decrease=strength,
                                       n_jobs=1).astype(np.float32)
    return cleaned, noise_floor_db(waveform) - noise_floor_db(cleaned)


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Bytes of a wav/flac/ogg/mp3 file -> (float32 [channels, samples], sample rate)."""
    if not data:
        raise Rejected(EMPTY_FILE, "0 bytes")
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise Rejected(UNDECODABLE, f"{type(exc).__name__}: {exc}") from None
    if samples.size == 0:
        raise Rejected(EMPTY_FILE, "no samples")
    return np.ascontiguousarray(samples.T), int(rate)


def to_mono(channels: np.ndarray) -> np.ndarray:
    return channels.mean(axis=0) if channels.shape[0] > 1 else channels[0]


def peak_dbfs(waveform: np.ndarray) -> float:
    peak = float(np.max(np.abs(waveform)))
    return 20 * math.log10(peak) if peak > 0 else -math.inf


@lru_cache(maxsize=16)
def _k_weighting(sample_rate: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The two biquads (b, a) of ``torchaudio.functional.loudness``: a +4 dB high shelf at 1500 Hz
    (Q 1/sqrt 2) and a 38 Hz high-pass (Q 0.5), with torchaudio's coefficient formulas."""
    w0, gain = 2 * math.pi * 1500.0 / sample_rate, 10 ** (4.0 / 40)
    alpha = math.sin(w0) / 2 / (1 / math.sqrt(2))
    t1, t2, t3 = 2 * math.sqrt(gain) * alpha, (gain - 1) * math.cos(w0), (gain + 1) * math.cos(w0)
    shelf = (np.array([gain * ((gain + 1) + t2 + t1), -2 * gain * ((gain - 1) + t3), gain * ((gain + 1) + t2 - t1)]),
             np.array([(gain + 1) - t2 + t1, 2 * ((gain - 1) - t3), (gain + 1) - t2 - t1]))
    w1 = 2 * math.pi * 38.0 / sample_rate
    alpha = math.sin(w1) / 2 / 0.5
    high = (np.array([(1 + math.cos(w1)) / 2, -1 - math.cos(w1), (1 + math.cos(w1)) / 2]),
            np.array([1 + alpha, -2 * math.cos(w1), 1 - alpha]))
    return shelf, high


def loudness(waveform: np.ndarray, sample_rate: int) -> float:
    """BS.1770-4 integrated loudness in LUFS; RMS level for clips under one 400 ms block.

    ``torchaudio.functional.loudness``'s computation (its filters, the clamp of its ``lfilter``,
    400 ms blocks at 75 % overlap, -70 LUFS absolute and -10 LU relative gates) run with scipy's
    ``lfilter`` and a cumulative sum: 5x faster here, and within 1e-3 LU of torchaudio (tested)."""
    from scipy.signal import lfilter

    block = int(round(0.4 * sample_rate))
    if waveform.shape[0] >= block:
        weighted = waveform.astype(np.float64)
        for b, a in _k_weighting(sample_rate):
            weighted = np.clip(lfilter(b, a, weighted), -1.0, 1.0)
        step = int(round(block * 0.25))
        cumulative = np.concatenate([[0.0], np.cumsum(np.square(weighted))])
        starts = np.arange(0, weighted.shape[0] - block + 1, step)
        energy = (cumulative[starts + block] - cumulative[starts]) / block
        with np.errstate(divide="ignore"):
            level = -0.691 + 10 * np.log10(energy)
            absolute = energy[level > -70.0]
            if absolute.size:
                relative = -0.691 + 10 * np.log10(absolute.mean()) - 10.0
                gated = energy[(level > -70.0) & (level > relative)]
                value = -0.691 + 10 * math.log10(gated.mean()) if gated.size and gated.mean() > 0 else -math.inf
                if math.isfinite(value):
                    return value
    rms = float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64))))
    return 20 * math.log10(rms) - 0.691 if rms > 0 else -math.inf


def normalize_loudness(waveform: np.ndarray, measured_lufs: float, target_lufs: float,
                       max_peak: float) -> np.ndarray:
    gained = waveform * np.float32(10 ** ((target_lufs - measured_lufs) / 20))
    peak = float(np.max(np.abs(gained)))
    if peak > max_peak:  # never clip: give up some loudness instead
        gained *= np.float32(max_peak / peak)
    return gained


def trim_bounds(waveform: np.ndarray, top_db: float, frame_length: int, hop_length: int
                ) -> tuple[int, int]:
    """[start, end) of the audio whose frame RMS is within ``top_db`` of the loudest frame."""
    if waveform.shape[0] < frame_length:
        return 0, waveform.shape[0]
    frames = np.lib.stride_tricks.sliding_window_view(waveform, frame_length)[::hop_length]
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    loud = np.flatnonzero(level > level.max() - top_db)
    return int(loud[0] * hop_length), int(min(waveform.shape[0], loud[-1] * hop_length + frame_length))


def clean(data: bytes, *, sample_rate: int, loudness_lufs: float, max_peak: float,
          silence_peak_dbfs: float, trim_top_db: float, min_seconds: float, max_seconds: float,
          frame_length: int = 1024, hop_length: int = 256, trim: bool = True, denoise_strength: float = 0.0,
          denoise_stationary: bool = True) -> CleanAudio:
    """``trim=False`` keeps the edges (a row whose codes are aligned with the whole file);
    ``denoise_strength`` > 0 reduces noise (``denoise``) before trimming."""
    channels, source_rate = decode(data)
    if not np.isfinite(channels).all():
        bad = int((~np.isfinite(channels)).sum())
        raise Rejected(NON_FINITE, f"{bad} non-finite samples")
    mono = resample(to_mono(channels), source_rate, sample_rate)
    peak = peak_dbfs(mono)
    if peak < silence_peak_dbfs:
        raise Rejected(SILENT, f"peak {peak:.1f} dBFS < {silence_peak_dbfs} dBFS")
    lowered = None
    if denoise_strength > 0:
        mono, lowered = denoise(mono, sample_rate, denoise_strength, denoise_stationary)
    # Trimming is relative to the loudest frame, so it does not depend on the gain: find the
    # speech first and measure its loudness without the edge silences pulling it around.
    start, end = trim_bounds(mono, trim_top_db, frame_length, hop_length) if trim else (0, mono.shape[0])
    speech = np.ascontiguousarray(mono[start:end], dtype=np.float32)
    measured = loudness(speech, sample_rate)
    trimmed = normalize_loudness(speech, measured, loudness_lufs, max_peak)
    seconds = trimmed.shape[0] / sample_rate
    after = "after trimming" if trim else "(not trimmed)"
    if seconds < min_seconds:
        raise Rejected(TOO_SHORT, f"{seconds:.3f} s {after} < {min_seconds} s")
    if seconds > max_seconds:
        raise Rejected(TOO_LONG, f"{seconds:.3f} s {after} > {max_seconds} s")
    return CleanAudio(trimmed, sample_rate, start / sample_rate, source_rate,
                      channels.shape[0], measured, lowered)
