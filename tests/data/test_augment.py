import numpy as np
import pytest

from voxray.config.sections import AugmentConfig, PreprocessConfig
from voxray.data import augment
from tests.conftest import tone

RATE = 22050


def test_transforms_do_what_they_say():
    wave = tone(1.0, RATE, 200.0)
    faster = augment.speed(wave, 1.1)
    assert len(faster) == pytest.approx(len(wave) / 1.1, abs=2)
    slower = augment.speed(wave, 0.9)
    assert len(slower) == pytest.approx(len(wave) / 0.9, abs=2)
    shifted = augment.pitch(wave, RATE, 2.0)
    assert len(shifted) == len(wave)
    spectrum = np.abs(np.fft.rfft(shifted * np.hanning(len(shifted))))
    assert np.fft.rfftfreq(len(shifted), 1 / RATE)[spectrum.argmax()] == pytest.approx(200 * 2 ** (2 / 12), rel=0.02)
    noisy = augment.noise(wave, 20.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(wave ** 2) / np.mean((noisy - wave) ** 2))
    assert snr == pytest.approx(20.0, abs=0.3)


def test_variants_are_seeded_by_the_row_and_say_what_was_done():
    wave = tone(1.0, RATE, 200.0)
    settings = AugmentConfig(copies=3, speed=0.5, pitch=0.5, noise=0.5)
    first = augment.variants("utt_1", wave, RATE, settings, max_peak=0.99)
    again = augment.variants("utt_1", wave, RATE, settings, max_peak=0.99)
    assert [v.suffix for v in first] == [v.suffix for v in again] and first
    assert all(np.array_equal(a.waveform, b.waveform) for a, b in zip(first, again))
    assert [v.suffix for v in augment.variants("utt_2", wave, RATE, settings, 0.99)] != [v.suffix for v in first]
    for variant in first:
        assert variant.suffix.endswith(tuple(f"#{i}" for i in range(3)))
        assert set(variant.kinds) <= {"speed", "pitch", "noise"} and variant.kinds
        assert np.abs(variant.waveform).max() <= 0.99 + 1e-6
    assert augment.variants("utt_1", wave, RATE, AugmentConfig(copies=0), 0.99) == []
    never = AugmentConfig(copies=5, speed=0, pitch=0, noise=0)
    assert augment.variants("utt_1", wave, RATE, never, 0.99) == []


def test_settings_are_checked():
    with pytest.raises(ValueError, match="speed_range"):
        AugmentConfig(speed_range=(1.2, 1.1))
    with pytest.raises(ValueError, match="preprocess.augment.speed with preprocess.alignments"):
        PreprocessConfig(alignments="tg", augment={"copies": 1})
    PreprocessConfig(alignments="tg", augment={"copies": 1, "speed": 0})
