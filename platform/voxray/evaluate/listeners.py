"""The machine listeners of an evaluation, all offline: a speech recogniser per language and a
speaker encoder. Nothing is downloaded: pocketsphinx ships its US-English model inside its
package, other languages need a local pocketsphinx model folder given by the user
(``--asr LANG=DIR``: ``acoustic-model/``, ``language-model.lm.bin``,
``pronounciation-dictionary.dict``, the layout of pocketsphinx's own model), and Resemblyzer ships
its speaker encoder's weights (or ``--speaker-encoder FILE`` gives other weights).
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
