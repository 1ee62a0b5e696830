"""Objective measures of a synthesised utterance against its recording, on waveforms.

Mel-cepstral distortion (MCD) is the standard one: WORLD's spectral envelope (CheapTrick, on
DIO + StoneMask F0) every 5 ms (``FRAME_MS``, the usual period: at a store's 10-16 ms hop a
half-frame shift of the same audio alone costs several dB), turned into mel-cepstra of order 24 by SPTK's ``sp2mc``
(all-pass warping with the sample rate's ``mcepalpha``: 0.455 at 22.05 kHz), c0 dropped (it is
the level, not the timbre), the two sequences aligned by DTW on c1..c24 and

    MCD = 10 / ln 10 * sqrt(2) * mean over the aligned pairs of || c - c' ||     (dB)

Silence: espeak-ng and trimmed recordings hold digital silence, whose cepstra explode and would
dominate the mean, so only *speech frames* enter the alignment: frames whose energy is within
``SPEECH_DB`` (40 dB) of the utterance's loudest frame, chosen in each signal on its own. F0 RMSE
(Hz and cents) is taken on aligned pairs voiced in both and ``vuv_error`` is the share of aligned
pairs whose voicing decisions disagree, on the same path.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

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
F0_RANGE = (60.0, 600.0)
FRAME_MS = 5.0
NAN = float("nan")


@dataclass
class Analysis:
    """WORLD analysis of one waveform every ``FRAME_MS``."""
    f0: np.ndarray          # [T] Hz, 0 where unvoiced
    mcep: np.ndarray        # [T, MCD_ORDER + 1] mel-cepstra (c0 first)
    speech: np.ndarray      # [T] bool: within SPEECH_DB of the loudest frame


def analyse(waveform: np.ndarray, sample_rate: int, order: int = MCD_ORDER) -> Analysis:
    x = np.ascontiguousarray(waveform, dtype=np.float64)
    hop_length = int(round(sample_rate * FRAME_MS / 1000))
    if x.size < 4 * hop_length or not np.any(x):
        raise ValueError("the waveform is empty or silent")
    f0, times = pyworld.dio(x, sample_rate, f0_floor=F0_RANGE[0], f0_ceil=F0_RANGE[1],
                            frame_period=1000.0 * hop_length / sample_rate)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    envelope = pyworld.cheaptrick(x, f0, times, sample_rate)
    mcep = pysptk.sp2mc(envelope, order=order, alpha=pysptk.util.mcepalpha(sample_rate))
    # frame i of DIO is centred on sample i * hop: the energy of the hop around it
    padded = np.pad(x, (hop_length // 2, len(f0) * hop_length))
    frames = padded[: len(f0) * hop_length].reshape(len(f0), hop_length)
    level = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    return Analysis(f0=f0.astype(np.float32), mcep=mcep, speech=level > level.max() - SPEECH_DB)


def dtw_path(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact DTW (Euclidean) between frame sequences [Ta, D] and [Tb, D]: [L, 2] index pairs, in order."""
    import librosa

    _, path = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean")
    return np.asarray(path[::-1])


def compare(reference: Analysis, synthesis: Analysis) -> dict[str, float]:
    """MCD, F0 RMSE (Hz, cents) and voicing disagreement of ``synthesis`` against ``reference``."""
    ours, theirs = np.flatnonzero(reference.speech), np.flatnonzero(synthesis.speech)
    if not len(ours) or not len(theirs):
        return {"mcd_db": NAN, "f0_rmse_hz": NAN, "f0_rmse_cents": NAN, "vuv_error": NAN, "aligned_frames": 0}
    path = dtw_path(reference.mcep[ours, 1:], synthesis.mcep[theirs, 1:])
    a, b = ours[path[:, 0]], theirs[path[:, 1]]
    distance = np.linalg.norm(reference.mcep[a, 1:] - synthesis.mcep[b, 1:], axis=1)
    f0_a, f0_b = reference.f0[a].astype(np.float64), synthesis.f0[b].astype(np.float64)
    voiced = (f0_a > 0) & (f0_b > 0)
    f0_rmse = float(np.sqrt(np.mean((f0_a[voiced] - f0_b[voiced]) ** 2))) if voiced.any() else NAN
    cents = float(np.sqrt(np.mean((1200 * np.log2(f0_b[voiced] / f0_a[voiced])) ** 2))) if voiced.any() else NAN
    return {"mcd_db": float(MCD_SCALE * distance.mean()), "f0_rmse_hz": f0_rmse, "f0_rmse_cents": cents,
            "vuv_error": float(np.mean((f0_a > 0) != (f0_b > 0))), "aligned_frames": int(len(path))}


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
