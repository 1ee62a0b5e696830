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


def f0_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How a cheaper F0 compares with the full-rate one: RMSE (Hz) and fine error (cents, within
    200 cents) on frames voiced in both, the share of gross (octave-like) errors, and voicing
    disagreement."""
    both = (reference > 0) & (other > 0)
    cents = 1200 * np.log2(other[both] / reference[both])
    fine = np.abs(cents) < 200
    return {"rmse_hz": float(np.sqrt(np.mean((other[both] - reference[both]) ** 2))),
            "fine_cents": float(np.sqrt(np.mean(cents[fine] ** 2))), "gross": float(np.mean(~fine)),
            "voicing": float(np.mean((reference > 0) != (other > 0)))}


def test_f0_at_the_default_rate_agrees_with_the_full_rate():
    """preprocess.f0_rate (11025 Hz) against WORLD at the audio's own rate on sample speech of
    both speakers: voicing decisions and the fine contour agree; F0 still tracks a tone."""
    from voxray import dsp
    from voxray.config import load_config
    from voxray.data.process import clean_audio
    from tests.conftest import SAMPLE

    config = load_config()
    spec, pre = config.audio, config.preprocess
    assert pre.f0_rate == 11025
    full, cheap = [], []
    for path in sorted((SAMPLE / "wavs").glob("*.wav"))[::8]:
        wave = clean_audio(path.read_bytes(), config).waveform
        n = spec.frames_for(wave.shape[0])
        full.append(dsp.f0_contour(wave[: n * spec.hop_length], spec, n, pre.f0_floor, pre.f0_ceil))
        cheap.append(dsp.f0_contour(wave[: n * spec.hop_length], spec, n, pre.f0_floor, pre.f0_ceil, pre.f0_rate))
    agreement = f0_agreement(np.concatenate(full), np.concatenate(cheap))
    assert agreement["fine_cents"] < 10 and agreement["gross"] < 0.02 and agreement["voicing"] < 0.02, agreement
    f0 = extract(tone(1.0, 22050, 180.0), AudioSpec(), f0_rate=pre.f0_rate).f0
    assert np.median(f0[f0 > 0]) == pytest.approx(180.0, rel=0.01)
