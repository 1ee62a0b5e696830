"""The evaluation's measures on known signals, and against independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile

from tests.conftest import SAMPLE
from voxray.evaluate import metrics
from voxray.evaluate.listeners import Recognisers, SpeakerEncoder



def recording(name: str) -> tuple[np.ndarray, int]:
    audio, rate = soundfile.read(SAMPLE / "wavs" / f"{name}.wav", dtype="float64")
    return audio, rate


def noisy(audio: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(audio))
    return audio + noise * np.sqrt(np.mean(audio ** 2)) * 10 ** (-snr_db / 20)


def test_identical_audio_measures_zero_and_silence_does_not_count():
    audio, rate = recording("en-us_spk_f_001")
    same = metrics.compare(metrics.analyse(audio, rate), metrics.analyse(audio, rate))
    assert same["mcd_db"] == 0 and same["f0_rmse_hz"] == 0 and same["vuv_error"] == 0
    # a second of digital silence on one side changes nothing: only speech frames are aligned
    padded = np.concatenate([np.zeros(rate), audio, np.zeros(rate // 2)])
    shifted = metrics.compare(metrics.analyse(audio, rate), metrics.analyse(padded, rate))
    assert shifted["mcd_db"] < 0.01 and shifted["vuv_error"] == 0
    # the floor of the measure: the same audio half a frame (2.5 ms) off the analysis grid
    off_grid = metrics.compare(metrics.analyse(audio, rate), metrics.analyse(padded[rate * 5 // 2000:], rate))
    assert 0.5 < off_grid["mcd_db"] < 4
    with pytest.raises(ValueError, match="silent"):
        metrics.analyse(np.zeros(rate), rate)


def test_pesq_and_stoi_fall_as_noise_rises():
    """(MCD against noise: test_mcd_calibration.py.)"""
    audio, rate = recording("en-us_spk_m_004")
    pesq, stoi = [], []
    for snr in (30, 15, 5):
        quality = metrics.pesq_stoi(audio, noisy(audio, snr), rate)
        pesq.append(quality["pesq"])
        stoi.append(quality["stoi"])
    assert pesq == sorted(pesq, reverse=True) and stoi == sorted(stoi, reverse=True), (pesq, stoi)
    assert metrics.pesq_stoi(audio, audio, rate)["pesq"] > 4.4


def test_mcd_agrees_with_mel_cepstral_distance_on_the_same_cepstra():
    """The DTW and the distance, checked against the mel-cepstral-distance package (its own DTW,
    fastdtw) on our mel-cepstra of the speech frames: within 3 %."""
    from mel_cepstral_distance import compare_mfccs

    audio, rate = recording("en-us_spk_f_003")
    other, _ = recording("en-us_spk_m_003")                    # the same sentence, the other voice
    a, b = metrics.analyse(audio, rate), metrics.analyse(other, rate)
    ours = metrics.compare(a, b)["mcd_db"]
    cepstra, other_cepstra = metrics.calibrated_cepstra(a, b)
    theirs, _ = compare_mfccs(cepstra[a.speech].T, other_cepstra[b.speech].T, s=1, D=metrics.MCD_ORDER + 1,
                              aligning="dtw", dtw_radius=None)
    assert ours == pytest.approx(theirs * metrics.MCD_SCALE, rel=0.03)
    assert 4 < ours < 20


def test_f0_error_of_a_known_pitch_shift():
    """WORLD resynthesis with F0 x 2^(1/6) (two semitones up): F0 RMSE ~200 cents, the timbre
    (MCD) barely moves, voicing agrees."""
    import pyworld

    audio, rate = recording("en-us_spk_m_006")
    f0, envelope, aperiodicity = pyworld.wav2world(audio, rate, frame_period=metrics.FRAME_MS)
    plain = pyworld.synthesize(f0, envelope, aperiodicity, rate, frame_period=metrics.FRAME_MS)
    raised = pyworld.synthesize(f0 * 2 ** (1 / 6), envelope, aperiodicity, rate, frame_period=metrics.FRAME_MS)
    result = metrics.compare(metrics.analyse(plain, rate), metrics.analyse(raised, rate))
    assert result["f0_rmse_cents"] == pytest.approx(200, abs=40)
    voiced = f0[f0 > 0]
    assert result["f0_rmse_hz"] == pytest.approx(np.sqrt(np.mean((voiced * (2 ** (1 / 6) - 1)) ** 2)), rel=0.3)
    assert result["vuv_error"] < 0.1


def test_gross_pitch_errors_are_counted_apart_from_fine_pitch_error():
    """Octave jumps on a quarter of the voiced frames: GPE 0.25, the fine RMSE only the 2 %
    detuning of the rest; frames unvoiced in one signal count as voicing errors, not pitch errors."""
    f0 = np.full(100, 200.0)
    other = f0 * 1.02
    other[:25] = 400.0
    other[90:] = 0.0
    f0[80:85] = 0.0
    errors = metrics.pitch_errors(f0, other)
    voiced = 100 - 10 - 5
    assert errors["gross_pitch_error"] == pytest.approx(25 / voiced)
    assert errors["f0_fine_rmse_hz"] == pytest.approx(4.0)
    assert errors["f0_rmse_hz"] == pytest.approx(np.sqrt((25 * 200.0 ** 2 + 60 * 4.0 ** 2) / voiced))
    assert errors["vuv_error"] == pytest.approx(0.15)
    assert math.isnan(metrics.pitch_errors(np.zeros(5), np.zeros(5))["gross_pitch_error"])


def test_error_rates_and_text_normalisation():
    assert metrics.words("Hello, World! It's  me.") == "hello world it's me"
    assert metrics.error_rates("The cat sat.", "the cat sit") == {"wer": pytest.approx(1 / 3),
                                                                  "cer": pytest.approx(1 / 11)}
    assert metrics.error_rates("The cat sat.", "")["wer"] == 1.0
    assert math.isnan(metrics.error_rates("...", "a")["wer"])


def test_listeners_speaker_similarity_and_recognisers(tmp_path):
    """Resemblyzer (weights from its package): another sentence of the same voice is closer than
    the other voice. pocketsphinx's built-in model for English; no recogniser for Malay unless given."""
    encoder = SpeakerEncoder()
    f1, rate = recording("en-us_spk_f_001")
    f2, _ = recording("en-us_spk_f_002")
    m1, _ = recording("en-us_spk_m_001")
    a, b, c = (encoder.embed(x, rate) for x in (f1, f2, m1))
    assert encoder.similarity(a, a) == pytest.approx(1.0, abs=1e-5)
    assert encoder.similarity(a, b) > encoder.similarity(a, c) + 0.1

    recognisers = Recognisers()
    first = recognisers.transcribe(f1, rate, "en-us")
    assert isinstance(first, str) and first
    recognisers.transcribe(m1, rate, "en-us")
    assert recognisers.transcribe(f1, rate, "en-us") == first        # nothing carried over between utterances
    assert recognisers.transcribe(f1, rate, "ms") is None and recognisers.name("ms") is None
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        Recognisers({"ms": str(tmp_path / "missing")})


def test_predicted_mos_ranks_recordings_above_griffin_lim_above_noise():
    """DNSMOS P.808 (weights in speechmos) on the committed corpus: the recordings above their
    Griffin-Lim copies, both above the recordings with white noise at 10 dB SNR (means over six)."""
    from voxray.audio import AudioSpec
    from voxray.evaluate import calibration
    from voxray.evaluate.listeners import MosPredictor

    spec, predictor = AudioSpec(), MosPredictor()
    scores: dict[str, list[float]] = {"recording": [], "griffin-lim": [], "noise": []}
    for name in ("en-us_spk_f_001", "en-us_spk_m_002", "en-us_spk_f_005", "ms_spk_m_001", "ms_spk_f_003",
                 "en-us_spk_m_007"):
        audio, rate = recording(name)
        audio = metrics.resample(audio, rate, spec.sample_rate)
        for case, waveform in (("recording", audio), ("griffin-lim", calibration.griffin_lim_copy(audio, spec)),
                               ("noise", calibration.with_noise(audio, 10))):
            scores[case].append(predictor.predict(waveform, spec.sample_rate))
    mean = {case: float(np.mean(values)) for case, values in scores.items()}
    assert mean["recording"] > mean["griffin-lim"] > mean["noise"], mean
    assert all(1 <= value <= 5 for values in scores.values() for value in values)
    assert math.isnan(predictor.predict(np.zeros(spec.sample_rate), spec.sample_rate))
