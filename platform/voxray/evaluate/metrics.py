"""Objective measures of a synthesised utterance against its recording, on waveforms.

Mel-cepstral distortion (MCD) is the standard one: WORLD's spectral envelope (CheapTrick, on
DIO + StoneMask F0) every 5 ms (``FRAME_MS``, the usual period: at a store's 10-16 ms hop a
half-frame shift of the same audio alone costs several dB), turned into mel-cepstra of order 24
by SPTK's ``sp2mc`` (all-pass warping with the sample rate's ``mcepalpha``: 0.455 at 22.05 kHz),
c0 dropped (it is the level, not the timbre), the two sequences aligned by DTW on c1..c24 and

    MCD = 10 / ln 10 * sqrt(2) * mean over the aligned pairs of || c - c' ||     (dB)

Calibration (why MCD is not taken on the raw envelopes): espeak-ng audio and trimmed recordings
hold near-zero energy in silent frames *and in empty frequency bands inside speech frames*.
Their log-spectra reach -100 dB there and dominate the cepstra, so any sound in those bands (mild
noise, a vocoder's hiss, Griffin-Lim's phase noise) cost more than the speech itself: the
recording + white noise at 20 dB SNR scored 13.6 dB, Griffin-Lim copy synthesis of the true mel
within 9 % of a 300-step tiny model. So, before the cepstra:

1. the synthesis is **level-matched** to the recording: its envelope scaled by the ratio of the
   two signals' active speech power (mean power of their speech frames), so a louder or quieter
   synthesis is not a different timbre;
2. the **same floor is added to both envelopes**: ``FLOOR_DB`` (30 dB) below the recording's mean
   speech power spectral density. This is the envelope of white noise at 30 dB below the speech
   added to both signals, without the randomness: what lies far below the speech's level (where
   masking hides it from a listener) no longer moves the distance, what lies within 30 dB of it
   does. The value was chosen on known degradations of espeak-ng audio and of real recordings
   (``benchmarks/mcd_calibration.py``; the table, before and after, in ``benchmarks/RESULTS.md``;
   the targets are tests in ``tests/evaluate/test_mcd_calibration.py``).

Only *speech frames* enter the alignment: frames whose energy is within ``SPEECH_DB`` (40 dB) of
the signal's loudest frame, chosen in each signal on its own (digital silence would otherwise be
aligned with itself at no cost, or dominate).

F0, on the same aligned pairs, over those voiced in both: RMSE over all of them (Hz and cents),
the **gross pitch error** (share of pairs whose F0 differs by more than ``GPE_TOLERANCE``, 20 %:
octave jumps and tracking failures) and the **fine F0 RMSE** over the remaining pairs (pitch
accuracy without the gross errors); ``vuv_error`` is the share of aligned pairs whose voicing
decisions disagree.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from voxray import dsp

with warnings.catch_warnings():  # pysptk and pyworld import the deprecated pkg_resources
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import pysptk
    import pyworld

MCD_ORDER = 24
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)
SPEECH_DB = 40.0
FLOOR_DB = 30.0          # the floor under both envelopes, dB below the recording's mean speech PSD
GPE_TOLERANCE = 0.2      # a voiced pair whose F0 differs by more than this share is a gross error
F0_RANGE = (60.0, 600.0)
FRAME_MS = 5.0
NAN = float("nan")


@dataclass
class Analysis:
    """WORLD analysis of one waveform every ``FRAME_MS``."""
    f0: np.ndarray          # [T] Hz, 0 where unvoiced
    envelope: np.ndarray    # [T, n_fft // 2 + 1] CheapTrick's power spectral envelope
    speech: np.ndarray      # [T] bool: within SPEECH_DB of the loudest frame
    active_power: float     # mean power of the speech frames (the active speech level)
    sample_rate: int


def analyse(waveform: np.ndarray, sample_rate: int) -> Analysis:
    x = np.ascontiguousarray(waveform, dtype=np.float64)
    hop_length = int(round(sample_rate * FRAME_MS / 1000))
    if x.size < 4 * hop_length or not np.any(x):
        raise ValueError("the waveform is empty or silent")
    f0, times = pyworld.dio(x, sample_rate, f0_floor=F0_RANGE[0], f0_ceil=F0_RANGE[1],
                            frame_period=1000.0 * hop_length / sample_rate)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    envelope = pyworld.cheaptrick(x, f0, times, sample_rate)
    # frame i of DIO is centred on sample i * hop: the energy of the hop around it
    padded = np.pad(x, (hop_length // 2, len(f0) * hop_length))
    frames = padded[: len(f0) * hop_length].reshape(len(f0), hop_length)
    power = np.mean(frames ** 2, axis=1)
    level = 10 * np.log10(power + 1e-12)
    speech = level > level.max() - SPEECH_DB
    return Analysis(f0=f0.astype(np.float32), envelope=envelope, speech=speech,
                    active_power=float(power[speech].mean()), sample_rate=sample_rate)


def mel_cepstra(envelope: np.ndarray, sample_rate: int, order: int = MCD_ORDER) -> np.ndarray:
    """Power spectral envelopes [T, bins] -> mel-cepstra [T, order + 1] (c0 first), SPTK's sp2mc."""
    return pysptk.sp2mc(envelope, order=order, alpha=pysptk.util.mcepalpha(sample_rate))


def calibrated_cepstra(reference: Analysis, synthesis: Analysis, floor_db: Optional[float] = FLOOR_DB
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The two signals' mel-cepstra as MCD compares them: the synthesis level-matched to the
    recording and the same floor, ``floor_db`` below the recording's mean speech PSD, added to both
    envelopes (see the module's docstring). ``floor_db=None``: the raw envelopes (the meter before
    calibration, kept for the calibration benchmark's "before" column)."""
    if reference.sample_rate != synthesis.sample_rate:
        raise ValueError(f"sample rates differ: {reference.sample_rate} and {synthesis.sample_rate}")
    ours, theirs = reference.envelope, synthesis.envelope
    if floor_db is not None:
        theirs = theirs * (reference.active_power / synthesis.active_power)
        floor = float(ours[reference.speech].mean()) * 10 ** (-floor_db / 10)
        ours, theirs = ours + floor, theirs + floor
    return mel_cepstra(ours, reference.sample_rate), mel_cepstra(theirs, reference.sample_rate)


def dtw_path(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact DTW (Euclidean) between frame sequences [Ta, D] and [Tb, D]: [L, 2] index pairs, in order."""
    import librosa

    _, path = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean")
    return np.asarray(path[::-1])


COMPARED = ("mcd_db", "f0_rmse_hz", "f0_rmse_cents", "gross_pitch_error", "f0_fine_rmse_hz", "vuv_error")


def compare(reference: Analysis, synthesis: Analysis, floor_db: Optional[float] = FLOOR_DB) -> dict[str, float]:
    """MCD, F0 (RMSE in Hz and cents, gross pitch error, fine RMSE) and voicing disagreement of
    ``synthesis`` against ``reference``, on the DTW path of their speech frames."""
    ours, theirs = np.flatnonzero(reference.speech), np.flatnonzero(synthesis.speech)
    if not len(ours) or not len(theirs):
        return {**{name: NAN for name in COMPARED}, "aligned_frames": 0}
    cepstra, other = calibrated_cepstra(reference, synthesis, floor_db)
    path = dtw_path(cepstra[ours, 1:], other[theirs, 1:])
    a, b = ours[path[:, 0]], theirs[path[:, 1]]
    distance = np.linalg.norm(cepstra[a, 1:] - other[b, 1:], axis=1)
    return {"mcd_db": float(MCD_SCALE * distance.mean()), **pitch_errors(reference.f0[a], synthesis.f0[b]),
            "aligned_frames": int(len(path))}


def pitch_errors(f0: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """F0 of aligned frame pairs [L] (0 = unvoiced): RMSE over the pairs voiced in both (Hz,
    cents), the share of those off by more than ``GPE_TOLERANCE`` (gross pitch error), the RMSE
    over the rest (Hz), and the share of pairs whose voicing disagrees."""
    f0, other = np.asarray(f0, dtype=np.float64), np.asarray(other, dtype=np.float64)
    voiced = (f0 > 0) & (other > 0)
    out = {"f0_rmse_hz": NAN, "f0_rmse_cents": NAN, "gross_pitch_error": NAN, "f0_fine_rmse_hz": NAN,
           "vuv_error": float(np.mean((f0 > 0) != (other > 0))) if f0.size else NAN}
    if voiced.any():
        a, b = f0[voiced], other[voiced]
        gross = np.abs(b / a - 1) > GPE_TOLERANCE
        out.update(f0_rmse_hz=float(np.sqrt(np.mean((a - b) ** 2))),
                   f0_rmse_cents=float(np.sqrt(np.mean((1200 * np.log2(b / a)) ** 2))),
                   gross_pitch_error=float(gross.mean()))
        if (~gross).any():
            out["f0_fine_rmse_hz"] = float(np.sqrt(np.mean((a[~gross] - b[~gross]) ** 2)))
    return out


def resample(waveform: np.ndarray, rate: int, target: int) -> np.ndarray:
    return dsp.resample(np.asarray(waveform, dtype=np.float32), rate, target)


def pesq_stoi(reference: np.ndarray, synthesis: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Wide-band PESQ (at 16 kHz) and STOI of a time-aligned synthesis (copy synthesis): both
    signals cropped to the shorter one. NaN where PESQ finds no utterance."""
    from pesq import pesq
    from pesq.cypesq import PesqError
    from pystoi import stoi

    n = min(len(reference), len(synthesis))
    ref, syn = np.asarray(reference[:n], dtype=np.float64), np.asarray(synthesis[:n], dtype=np.float64)
    try:
        quality = float(pesq(16000, resample(ref, sample_rate, 16000), resample(syn, sample_rate, 16000), "wb"))
    except PesqError:
        quality = NAN
    return {"pesq": quality, "stoi": float(stoi(ref, syn, sample_rate, extended=False))}


def words(text: str) -> str:
    """Text as recognisers write it: lower case, words only (apostrophes kept), single spaces."""
    return " ".join(re.sub(r"[^\w']+", " ", text.lower()).split())


def error_rates(reference: str, hypothesis: str) -> dict[str, float]:
    """WER and CER (jiwer) of ``hypothesis`` against ``reference``, both normalised by ``words``."""
    import jiwer

    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return {"wer": NAN, "cer": NAN}
    return {"wer": float(jiwer.wer(ref, hyp)), "cer": float(jiwer.cer(ref, hyp))}


# --------------------------------------------------------- during training (teacher-forced, torch)

def mel_mcd_sums(predicted: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor,
                 order: int = MCD_ORDER) -> tuple[float, float]:
    """(sum over speech frames of the mel-cepstral distance in dB, the number of those frames)
    between frame-aligned natural-log mels ``[B, T, n_mels]`` (a teacher-forced prediction and
    its target): the cepstrum of each log-mel frame as the cosine series of the mel-warped log
    spectrum, ``c_n = 1/N sum_k L_k cos(pi n (k + 1/2) / N)`` over the N bands (the scale of a
    mel-cepstrum, not of an orthonormal DCT, which would read sqrt(2N) times larger), c1..c24
    compared, ``MCD_SCALE`` as above. A cheap validation-time measure of the same kind as
    ``compare``'s MCD but on the model's own mel (no vocoder, no WORLD envelope, no DTW): close in
    scale, not interchangeable."""
    n_mels = target.shape[-1]
    k = torch.arange(order + 1, dtype=torch.float32, device=target.device)[None]
    n = torch.arange(n_mels, dtype=torch.float32, device=target.device)[:, None]
    dct = torch.cos(math.pi / n_mels * (n + 0.5) * k) / n_mels                     # [n_mels, order + 1]
    distance = MCD_SCALE * torch.linalg.norm((predicted.float() - target.float()) @ dct[:, 1:], dim=-1)  # [B, T]
    frames = torch.arange(target.shape[1], device=target.device)[None] < lengths[:, None]
    level = 20 / math.log(10) * torch.logsumexp(target.float(), dim=-1)                  # dB of the mel's magnitude
    loudest = level.masked_fill(~frames, -math.inf).amax(dim=1, keepdim=True)
    speech = frames & (level > loudest - SPEECH_DB)
    return float(distance[speech].sum()), float(speech.sum())
