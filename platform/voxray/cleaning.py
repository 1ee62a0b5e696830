"""Decode, downmix, resample, loudness-normalise and trim one utterance.

Every failure raises ``Rejected`` with a stable reason string; the pipeline turns it into a
row of ``rejected.jsonl``. Sample-rate and channel mismatches are converted, never rejected.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soundfile
import torch
import torchaudio

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


@lru_cache(maxsize=16)
def _resampler(source_rate: int, target_rate: int) -> torchaudio.transforms.Resample:
    # The windowed-sinc kernel is built once per rate pair and reused for every file.
    return torchaudio.transforms.Resample(source_rate, target_rate)


def to_mono(channels: np.ndarray) -> np.ndarray:
    return channels.mean(axis=0) if channels.shape[0] > 1 else channels[0]


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return waveform
    with torch.inference_mode():
        out = _resampler(source_rate, target_rate)(torch.from_numpy(waveform)[None])[0]
    return out.numpy()


def peak_dbfs(waveform: np.ndarray) -> float:
    peak = float(np.max(np.abs(waveform)))
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def loudness(waveform: np.ndarray, sample_rate: int) -> float:
    """BS.1770-4 integrated loudness in LUFS; RMS level for clips under one 400 ms block."""
    if waveform.shape[0] >= int(0.4 * sample_rate):
        with torch.inference_mode():
            value = float(torchaudio.functional.loudness(torch.from_numpy(waveform)[None],
                                                         sample_rate))
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
          frame_length: int = 1024, hop_length: int = 256, trim: bool = True) -> CleanAudio:
    """``trim=False`` keeps the edges (a row whose codes are aligned with the whole file)."""
    channels, source_rate = decode(data)
    if not np.isfinite(channels).all():
        bad = int((~np.isfinite(channels)).sum())
        raise Rejected(NON_FINITE, f"{bad} non-finite samples")
    mono = resample(to_mono(channels), source_rate, sample_rate)
    peak = peak_dbfs(mono)
    if peak < silence_peak_dbfs:
        raise Rejected(SILENT, f"peak {peak:.1f} dBFS < {silence_peak_dbfs} dBFS")
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
                      channels.shape[0], measured)
