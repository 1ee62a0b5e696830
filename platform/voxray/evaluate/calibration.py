"""Known degradations of a recording, to check that a quality meter orders them as it should,
and a second, independent MCD to check ``metrics.compare`` against.

    degradations(audio, rate)      identical, WORLD analysis-synthesis, + white noise at 40/30/20/10 dB SNR
    griffin_lim_copy(audio, spec)  Griffin-Lim (60 iterations) of the recording's own log-mel
    independent_mcd(ref, other)    the ``mel-cepstral-distance`` package's pipeline (its own STFT, mel
                                   filterbank, MFCC and DTW), with the same calibration applied in the
                                   time domain: ``other`` level-matched to ``ref`` and the same white
                                   noise, ``FLOOR_DB`` below ``ref``'s speech level, added to both

Used by ``tests/evaluate/test_mcd_calibration.py`` (the targets) and
``benchmarks/mcd_calibration.py`` (the table in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import soundfile
import torch

from voxray import dsp
from voxray.audio import AudioSpec
from voxray.evaluate import metrics

SNRS = (40, 30, 20, 10)


def with_noise(audio: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """``audio`` + white noise ``snr_db`` below its mean power (seeded)."""
    noise = np.random.default_rng(seed).standard_normal(len(audio))
    return audio + noise * np.sqrt(np.mean(np.square(audio))) * 10 ** (-snr_db / 20)


def world_resynthesis(audio: np.ndarray, rate: int) -> np.ndarray:
    """WORLD analysis-synthesis (Harvest + CheapTrick + D4C): the vocoder-free upper bound."""
    f0, envelope, aperiodicity = metrics.pyworld.wav2world(np.ascontiguousarray(audio, dtype=np.float64), rate)
    return metrics.pyworld.synthesize(f0, envelope, aperiodicity, rate)


def griffin_lim_copy(audio: np.ndarray, spec: AudioSpec, iterations: int = 60) -> np.ndarray:
    """Griffin-Lim of the recording's own log-mel (what ``evaluate --vocoder griffin-lim`` does
    with a store's mel)."""
    mel = dsp.log_mel(torch.from_numpy(np.asarray(audio, dtype=np.float32)), spec).T
    return dsp.griffin_lim(mel, spec, iterations=iterations).numpy().astype(np.float64)


def degradations(audio: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    """The recording itself, its WORLD analysis-synthesis and its noisy copies, best first."""
    cases = {"identical": np.asarray(audio, dtype=np.float64), "WORLD analysis-synthesis": world_resynthesis(audio, rate)}
    cases.update({f"white noise {snr} dB SNR": with_noise(audio, snr) for snr in SNRS})
    return cases


def active_power(audio: np.ndarray, rate: int) -> float:
    """Mean power of the 5 ms frames within ``metrics.SPEECH_DB`` of the loudest (no WORLD)."""
    hop = int(rate * metrics.FRAME_MS / 1000)
    frames = np.asarray(audio[: len(audio) // hop * hop], dtype=np.float64).reshape(-1, hop)
    power = np.mean(frames ** 2, axis=1)
    return float(power[power > power.max() * 10 ** (-metrics.SPEECH_DB / 10)].mean())


def independent_mcd(reference: np.ndarray, other: np.ndarray, rate: int,
                    floor_db: float = metrics.FLOOR_DB, seed: int = 0) -> float:
    """MCD (dB) by ``mel_cepstral_distance.compare_audio_files`` at its defaults (c1..c15 of 20 mel
    bands of a 32 ms STFT every 8 ms, exact DTW), after the time-domain form of the calibration:
    ``other`` scaled to ``reference``'s active speech power and the same seeded white noise,
    ``floor_db`` below that power, added to both. Its own silence removal is left off: the noise
    floor is what keeps silence from dominating."""
    from mel_cepstral_distance import compare_audio_files

    level = active_power(reference, rate)
    n = max(len(reference), len(other))
    floor = np.random.default_rng(seed).standard_normal(n) * np.sqrt(level * 10 ** (-floor_db / 10))
    ours = np.asarray(reference, dtype=np.float64) + floor[: len(reference)]
    theirs = np.asarray(other, dtype=np.float64) * np.sqrt(level / active_power(other, rate)) + floor[: len(other)]
    with tempfile.TemporaryDirectory(prefix="voxray-mcd-") as folder:
        paths = [os.path.join(folder, f"{name}.wav") for name in ("reference", "other")]
        for path, audio in zip(paths, (ours, theirs)):
            soundfile.write(path, audio.astype(np.float32), rate, subtype="FLOAT")
        distance, _ = compare_audio_files(*paths, norm_audio=False, dtw_radius=None)
    return float(distance)
