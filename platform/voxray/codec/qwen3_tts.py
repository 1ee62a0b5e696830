"""Qwen3-TTS's 12 Hz speech tokenizer (``Qwen3-TTS-Tokenizer-12Hz``: 16 codebooks of 2048 at 12.5
Hz, 24 kHz audio) as a voxray codec, through the ``qwen_tts`` package's own
``Qwen3TTSTokenizer.from_pretrained`` (its model and its feature extractor) from a local folder in
the published layout: ``config.json``, ``model.safetensors``, ``preprocessor_config.json``.

    voxray codec encode --codec pretrained:qwen3-tts-12hz=/models/Qwen3-TTS-Tokenizer-12Hz --data STORE --output CODES
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from voxray import dsp
from voxray.codec.base import Decoded

MODEL_TYPE = "qwen3_tts_tokenizer_12hz"
FILES = ("config.json", "preprocessor_config.json")


class Qwen3TTSTokenizerCodec:
    """codes [T, n_codebooks] int32 <-> 24 kHz audio, with the tokenizer's own encode and decode."""

    def __init__(self, folder: str, device: str = "cpu") -> None:
        from voxray.models.pretrained.qwen3_tts_compat import import_qwen_tts

        qwen_tts = import_qwen_tts()
        self.kind, self.folder = "qwen3-tts-12hz", os.path.abspath(folder)
        self.tokenizer = qwen_tts.Qwen3TTSTokenizer.from_pretrained(self.folder, device_map=device)
        if self.tokenizer.model.get_model_type() != MODEL_TYPE:
            raise ValueError(f"{folder} holds a {self.tokenizer.model.get_model_type()!r} tokenizer; voxray speaks "
                             f"the 12 Hz one ({MODEL_TYPE})")
        config = self.tokenizer.model.config
        self.input_rate = int(self.tokenizer.feature_extractor.sampling_rate)
        self.sample_rate = int(config.output_sample_rate)
        self.description = {"name": self.kind, "n_codebooks": int(config.encoder_valid_num_quantizers),
                            "codebook_size": int(config.decoder_config.codebook_size),
                            "frame_rate": config.input_sample_rate / config.encode_downsample_rate,
                            "sample_rate": self.sample_rate, "kind": "pretrained", "folder": self.folder}

    def encode(self, row: dict[str, Any]) -> np.ndarray:
        """A store row's ``audio`` (at ``row["sample_rate"]``) -> int32 codes [T, n_codebooks]."""
        audio = dsp.resample(np.asarray(row["audio"], dtype=np.float32), int(row["sample_rate"]), self.input_rate)
        codes = self.tokenizer.encode(audio, sr=self.input_rate).audio_codes[0]          # [T, n_codebooks]
        return codes.cpu().numpy().astype(np.int32)

    def decode(self, codes: np.ndarray) -> Decoded:
        books = self.description["n_codebooks"]
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != books:
            raise ValueError(f"the {self.kind} codec decodes [T, {books}] codes, got {list(codes.shape)}")
        import torch

        # a tensor: the tokenizer reads a [T, K] tensor as one utterance (an array as a list of frames)
        waveforms, rate = self.tokenizer.decode({"audio_codes": torch.from_numpy(codes.astype(np.int64))})
        return Decoded(audio=np.asarray(waveforms[0], dtype=np.float32), sample_rate=int(rate))
