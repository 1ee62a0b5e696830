import numpy as np
import pytest
import torch

from voxray.audio import AudioSpec
from voxray.data.features import extract
from voxray.dsp import log_mel
from tests.conftest import tone


def test_frames_are_aligned_across_features():
    spec = AudioSpec()
    feats = extract(tone(1.0, 22050) , spec)
    n = 22050 // 256
    assert feats.mel.shape == (n, 80) and feats.f0.shape == (n,) and feats.energy.shape == (n,)
    assert feats.waveform.shape == (n * 256,)
    assert feats.mel.dtype == np.float32 and np.isfinite(feats.mel).all()


@pytest.mark.parametrize("freq", [110.0, 220.0, 330.0])
def test_f0_tracks_the_fundamental(freq):
    feats = extract(tone(1.0, 22050, freq=freq), AudioSpec())
    voiced = feats.f0[feats.f0 > 0]
    assert len(voiced) > 0.8 * len(feats.f0)
    assert np.median(voiced) == pytest.approx(freq, rel=0.03)


def test_f0_is_zero_in_silence_and_energy_follows_level():
    rate = 22050
    signal = np.concatenate([tone(0.5, rate), np.zeros(rate // 2, np.float32)])
    feats = extract(signal, AudioSpec())
    half = feats.n_frames // 2
    assert (feats.f0[half + 5:] == 0).all()
    assert feats.energy[: half - 5].min() > 100 * max(feats.energy[half + 5:].max(), 1e-9)


def test_mel_peak_sits_at_the_tone():
    spec = AudioSpec()
    t = np.arange(22050) / 22050
    feats = extract((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), spec)
    import torchaudio

    centres = torchaudio.functional.melscale_fbanks(513, 0, 8000, 80, 22050, "slaney", "slaney").argmax(0)
    peak_bin = int(np.median(feats.mel.argmax(axis=1)))
    assert abs(centres[peak_bin].item() * 22050 / 1024 - 1000) < 120


def test_log_mel_matches_the_store_mel():
    spec = AudioSpec()
    feats = extract(tone(0.7, 22050), spec)
    mel = log_mel(torch.from_numpy(feats.waveform), spec).T.numpy()
    assert np.allclose(mel, feats.mel, atol=1e-5)
