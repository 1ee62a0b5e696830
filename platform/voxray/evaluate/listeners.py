"""The machine listeners of an evaluation, all offline: a speech recogniser per language, a
speaker encoder and a MOS predictor. Nothing is downloaded: pocketsphinx ships its US-English
model inside its package, other languages need a local pocketsphinx model folder given by the
user (``--asr LANG=DIR``: ``acoustic-model/``, ``language-model.lm.bin``,
``pronounciation-dictionary.dict``, the layout of pocketsphinx's own model), Resemblyzer ships
its speaker encoder's weights (or ``--speaker-encoder FILE`` gives other weights), and
``speechmos`` ships DNSMOS's ONNX models.

Which MOS predictor, and why: both predictors whose weights ship in their packages were checked
on the demo's test split (recordings, their Griffin-Lim copies, the recordings + white noise at
10 dB SNR; a good predictor ranks them in that order). DNSMOS P.808 does (3.10 / 2.81 / 2.62).
DistillMOS does not (2.5 / 2.2 / 3.0: it scores espeak-ng audio higher once noise is added), and
neither does DNSMOS's OVRL head (it ranks the demo's mumbling tiny model above the recordings).
So voxray reports DNSMOS P.808 and names it. A predicted MOS is a proxy for a listening test,
not one: it was trained on human ratings of noisy and enhanced speech, not of TTS.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from voxray.evaluate.metrics import resample

BUILTIN = "pocketsphinx en-us (built in)"


class Recognisers:
    """Speech -> text, one decoder per language, made on first use."""

    def __init__(self, models: Optional[dict[str, str]] = None) -> None:
        self.models = dict(models or {})
        for language, folder in self.models.items():
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"--asr {language}={folder}: no such model folder")
        self.decoders: dict[str, object] = {}

    def name(self, language: str) -> Optional[str]:
        """What recognises ``language`` (None: nothing does)."""
        if language in self.models:
            return f"pocketsphinx {self.models[language]}"
        return BUILTIN if language.lower().startswith("en") else None

    def _decoder(self, language: str):
        if language not in self.decoders:
            from pocketsphinx import Decoder

            # cmn=batch: cepstral mean over each utterance alone; the default (live) carries it over
            # from the utterances decoded before, so a transcript would depend on the actor's order
            options = {"samprate": 16000, "logfn": os.devnull, "cmn": "batch"}
            folder = self.models.get(language)
            if folder:
                options.update(hmm=os.path.join(folder, "acoustic-model"),
                               lm=os.path.join(folder, "language-model.lm.bin"),
                               dict=os.path.join(folder, "pronounciation-dictionary.dict"))
            self.decoders[language] = Decoder(**options)
        return self.decoders[language]

    def transcribe(self, waveform: np.ndarray, sample_rate: int, language: str) -> Optional[str]:
        """The recogniser's words for ``waveform``, or None when no recogniser knows ``language``."""
        if self.name(language) is None:
            return None
        pcm = np.clip(resample(waveform, sample_rate, 16000), -1, 1)
        decoder = self._decoder(language)
        decoder.start_utt()
        decoder.process_raw((pcm * 32767).astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""


class MosPredictor:
    """DNSMOS P.808 (Microsoft's DNS Challenge; ``speechmos`` ships the ONNX model): a
    non-intrusive MOS (1-5) of a waveform alone, on 16 kHz audio, the mean over 9.01 s windows a
    second apart. Shorter audio is repeated to fill one window, as DNSMOS does, but end to end
    just long enough (DNSMOS doubles it until it fits: a 1.9 s utterance became 15 s, six windows
    of the same sound at 0.13 s of CPU each)."""

    NAME = "DNSMOS P.808 (speechmos, weights in the package)"
    RATE = 16000

    def __init__(self) -> None:
        from speechmos import dnsmos

        folder = os.path.join(os.path.dirname(dnsmos.__file__), "dnsmos_models")
        self.model = dnsmos.DNSMOS(os.path.join(folder, "sig_bak_ovr.onnx"), os.path.join(folder, "model_v8.onnx"))

    def predict(self, waveform: np.ndarray, sample_rate: int) -> float:
        from speechmos.dnsmos import INPUT_LENGTH

        audio = np.clip(resample(waveform, sample_rate, self.RATE), -1.0, 1.0).astype(np.float32)
        if not np.any(audio):
            return float("nan")
        window = int(INPUT_LENGTH * self.RATE)
        if len(audio) < window:
            audio = np.tile(audio, -(-window // len(audio)))
        return float(self.model(audio, self.RATE, False)["p808_mos"])


class SpeakerEncoder:
    """Resemblyzer's d-vector encoder (weights shipped in its package, or ``weights``)."""

    def __init__(self, weights: Optional[str] = None) -> None:
        from pathlib import Path

        from resemblyzer import VoiceEncoder

        if weights and not os.path.isfile(weights):
            raise FileNotFoundError(f"--speaker-encoder {weights}: no such file")
        self.name = self.describe(weights)
        self.encoder = VoiceEncoder("cpu", verbose=False, weights_fpath=Path(weights) if weights else None)

    @staticmethod
    def describe(weights: Optional[str] = None) -> str:
        return f"resemblyzer {weights or '(built-in weights)'}"

    def embed(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        from resemblyzer import preprocess_wav

        return self.encoder.embed_utterance(preprocess_wav(np.asarray(waveform, dtype=np.float32), sample_rate))

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """Cosine of two embeddings (Resemblyzer's are unit length)."""
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
