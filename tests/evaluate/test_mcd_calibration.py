"""The calibrated MCD on known degradations, on espeak-ng audio (the committed corpus) and on a
real person's recordings (alsa-utils' channel announcements, installed by scripts/setup.sh), and
an independent implementation (mel-cepstral-distance's pipeline) ranking them the same way.

The targets are the quality issue's: identical -> 0, WORLD analysis-synthesis <= 4.5 dB, + white
noise at 30 dB SNR <= 3.5 dB and at 20 dB SNR <= 7 dB, rising monotonically as the SNR falls.
(Griffin-Lim copy synthesis against a trained model: tests/evaluate/test_evaluate.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.conftest import SAMPLE
from voxray.audio import AudioSpec
from voxray.evaluate import calibration, metrics

SPEC = AudioSpec()
REAL = Path("/usr/share/sounds/alsa")
GRIFFIN_LIM = "Griffin-Lim copy synthesis"


def load(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="float32")
    return metrics.resample(audio, rate, SPEC.sample_rate).astype(np.float64)


def measured(recordings: list[np.ndarray]) -> tuple[dict[str, list[float]], dict[str, float]]:
    """({case: [our MCD per recording]}, {case: the independent MCD's mean})."""
    ours: dict[str, list[float]] = {}
    theirs: dict[str, list[float]] = {}
    for audio in recordings:
        reference = metrics.analyse(audio, SPEC.sample_rate)
        cases = calibration.degradations(audio, SPEC.sample_rate)
        cases[GRIFFIN_LIM] = calibration.griffin_lim_copy(audio, SPEC)
        for name, degraded in cases.items():
            ours.setdefault(name, []).append(
                metrics.compare(reference, metrics.analyse(degraded, SPEC.sample_rate))["mcd_db"])
            theirs.setdefault(name, []).append(calibration.independent_mcd(audio, degraded, SPEC.sample_rate))
    return ours, {name: float(np.mean(values)) for name, values in theirs.items()}


@pytest.fixture(scope="module", params=["espeak-ng", "real recordings"])
def calibrated(request) -> tuple[dict[str, list[float]], dict[str, float]]:
    if request.param == "espeak-ng":
        paths = [SAMPLE / "wavs" / f"{name}.wav" for name in ("en-us_spk_f_001", "en-us_spk_m_004", "ms_spk_f_002")]
    else:
        paths = [REAL / f"{name}.wav" for name in ("Front_Center", "Rear_Left", "Side_Right")]
        assert all(p.exists() for p in paths), "alsa-utils' recordings are missing: run scripts/setup.sh"
    return measured([load(p) for p in paths])


def test_known_degradations_meet_the_targets(calibrated):
    ours, _ = calibrated
    mean = {name: float(np.mean(values)) for name, values in ours.items()}
    assert ours["identical"] == [0.0] * len(ours["identical"])
    assert mean["WORLD analysis-synthesis"] <= 4.5, mean
    assert mean["white noise 30 dB SNR"] <= 3.5 and mean["white noise 20 dB SNR"] <= 7, mean
    for utterance in range(len(ours["identical"])):       # monotonic in every recording, not just on average
        rising = [ours[f"white noise {snr} dB SNR"][utterance] for snr in calibration.SNRS]
        assert rising == sorted(rising) and rising[0] > 0, rising
    assert mean["white noise 10 dB SNR"] > 2 * mean["white noise 30 dB SNR"], mean


def test_an_independent_implementation_ranks_the_cases_alike(calibrated):
    """mel-cepstral-distance's own pipeline (an STFT, not WORLD's envelope) orders every two cases
    that our meter puts more than 1 dB apart (about the spread between utterances) the same way,
    and rises with the noise too. (It sees fine structure that an envelope does not, and puts
    WORLD analysis-synthesis and Griffin-Lim, about 0.5-0.7 dB apart on ours, 0.3-0.5 dB the
    other way.)"""
    ours, theirs = calibrated
    mean = {name: float(np.mean(values)) for name, values in ours.items()}
    separated = [(a, b) for a in mean for b in mean if mean[b] - mean[a] > 1.0]
    assert len(separated) >= 10, mean
    assert all(theirs[a] < theirs[b] for a, b in separated), (mean, theirs)
    ladder = [theirs[f"white noise {snr} dB SNR"] for snr in calibration.SNRS]
    assert theirs["identical"] == 0 and ladder == sorted(ladder), theirs


def test_calibration_is_what_makes_noise_cheap():
    """Without the level match and the floor (the meter before), 20 dB SNR white noise on espeak-ng
    audio reads above 10 dB; a louder copy of the same audio reads 0 with them."""
    audio = load(SAMPLE / "wavs" / "en-us_spk_f_001.wav")
    reference = metrics.analyse(audio, SPEC.sample_rate)
    noisy = metrics.analyse(calibration.with_noise(audio, 20), SPEC.sample_rate)
    assert metrics.compare(reference, noisy, floor_db=None)["mcd_db"] > 10
    assert metrics.compare(reference, noisy)["mcd_db"] < 7
    louder = metrics.compare(reference, metrics.analyse(audio * 3, SPEC.sample_rate))["mcd_db"]
    assert louder == pytest.approx(0, abs=1e-6)
