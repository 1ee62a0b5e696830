import numpy as np
import torch

from voxray.audio import AudioSpec
from voxray.data.features import extract
from voxray.dsp import log_mel
from voxray.dsp import griffin_lim
from tests.conftest import tone


def test_mel_round_trip_gives_finite_audio_with_the_same_spectrum():
    spec = AudioSpec()
    feats = extract(tone(1.0, 22050, freq=200.0), spec)
    audio = griffin_lim(torch.from_numpy(feats.mel), spec)
    assert audio.shape == (feats.n_frames * spec.hop_length,)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 0.95 + 1e-6
    again = log_mel(audio, spec).T.numpy()
    # Compare spectral shapes (level is renormalised): the loud bins stay the loud bins.
    original = feats.mel - feats.mel.mean()
    rebuilt = again - again.mean()
    assert np.corrcoef(original.ravel(), rebuilt.ravel())[0, 1] > 0.9
