"""The codec interface every kind implements, and what decoding gives back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np

DESCRIPTION_KEYS = ("name", "n_codebooks", "codebook_size", "frame_rate")


@dataclass
class Decoded:
    """What a codec gives back: a log-mel ``[frames, n_mels]`` for a vocoder, or a waveform (at
    ``sample_rate`` when the codec has a rate of its own, else at the store's)."""

    mel: Optional[np.ndarray] = None
    audio: Optional[np.ndarray] = None
    sample_rate: Optional[int] = None


class Codec(Protocol):
    description: dict[str, Any]          # name, n_codebooks, codebook_size, frame_rate (Hz)

    def encode(self, row: dict[str, Any]) -> np.ndarray:
        """A store row (``mel`` [frames, n_mels], ``audio`` at ``sample_rate``) -> int32 codes
        [T, n_codebooks]."""

    def decode(self, codes: np.ndarray) -> Decoded:
        """int32 codes [T, n_codebooks] -> a mel or a waveform."""


class PrecomputedCodec:
    """Codes that came with the manifest (Qwen3-TTS's tokenizer, ...): described by the store's
    stats; no encoder; a decoder only when the user supplies one (any object with
    ``decode(codes) -> Decoded``, e.g. a plugin)."""

    def __init__(self, description: dict[str, Any], decoder: Any = None) -> None:
        self.description = {key: description[key] for key in DESCRIPTION_KEYS}
        self.decoder = decoder

    def encode(self, row: dict[str, Any]) -> np.ndarray:
        raise ValueError(f"the {self.description['name']!r} codes came with the manifest; voxray cannot make "
                         "more of them (use the codec that made them)")

    def decode(self, codes: np.ndarray) -> Decoded:
        if self.decoder is None:
            raise ValueError(f"decoding {self.description['name']!r} codes needs their codec's decoder: give a "
                             "local plugin (voxray.codec.plugin)")
        return self.decoder.decode(codes)
