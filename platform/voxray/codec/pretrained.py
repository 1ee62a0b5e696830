"""Pretrained neural codecs, loaded from a local folder in the layout their publishers ship
(``config.json`` and ``model.safetensors``, as ``save_pretrained`` writes them) by their own
packages' classes: transformers' Mimi (Sesame CSM's codec; 32 codebooks of 2048 at 12.5 Hz,
24 kHz), DAC and EnCodec here, and Qwen3-TTS's 12 Hz tokenizer (``qwen3_tts.py``, through the
``qwen_tts`` package). Nothing is downloaded: the user gives the folder.

    voxray codec encode --codec pretrained:mimi=/models/mimi --data STORE --output CODES

A codec spec is ``pretrained:KIND=FOLDER``; ``KINDS`` is the one place a kind becomes a class.
Audio is resampled from the store's rate to the codec's on the fly (each row's ``sample_rate``),
and decoding gives the codec's waveform at its own rate (``Decoded.sample_rate``). The store
records the codec (kind, folder, books, size, frame rate, sample rate) in its stats, so a talker
trained on the codes decodes through the same codec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from voxray import dsp, uri
from voxray.codec.base import Decoded

PREFIX = "pretrained:"


@dataclass(frozen=True)
class Kind:
    model_type: str                          # config.json's model_type
    files: tuple[str, ...] = ()              # what the folder needs besides config.json and weights


KINDS = {"mimi": Kind("mimi"), "dac": Kind("dac"), "encodec": Kind("encodec"),
         "qwen3-tts-12hz": Kind("qwen3_tts_tokenizer_12hz", ("preprocessor_config.json",))}
TRANSFORMERS_CLASSES = {"mimi": "MimiModel", "dac": "DacModel", "encodec": "EncodecModel"}


def parse(spec: str) -> Optional[tuple[str, str]]:
    """(kind, folder) of a ``pretrained:KIND=FOLDER`` spec; None for anything else."""
    if not spec.startswith(PREFIX):
        return None
    kind, _, folder = spec[len(PREFIX):].partition("=")
    if kind not in KINDS or not folder:
        raise ValueError(f"--codec {spec}: write pretrained:KIND=FOLDER with KIND one of {', '.join(KINDS)}")
    return kind, folder


def describe_folder(kind: str, folder: str) -> dict[str, Any]:
    """The folder's config, checked: it exists locally, holds config.json and weights, and is a
    ``kind`` model; an error naming what is missing or what the folder holds instead."""
    import json

    if uri.is_remote(folder) or not os.path.isdir(folder):
        raise FileNotFoundError(f"the {kind} codec folder {folder} does not exist (give a local folder: "
                                "pretrained codecs load from disk, nothing is downloaded)")
    missing = [name for name in ("config.json", *KINDS[kind].files) if not os.path.exists(os.path.join(folder, name))]
    if not any(name.endswith(".safetensors") for name in os.listdir(folder)):
        missing.append("*.safetensors")
    if missing:
        raise FileNotFoundError(f"{folder} is not a {kind} model folder: {', '.join(missing)} missing")
    with open(os.path.join(folder, "config.json")) as handle:
        config = json.load(handle)
    if config.get("model_type") != KINDS[kind].model_type:
        raise ValueError(f"{folder} holds a {config.get('model_type')!r} model, not {kind}")
    return config


class TransformersCodec:
    """A transformers audio codec as a voxray ``Codec``: codes [T, n_codebooks] int32."""

    def __init__(self, kind: str, folder: str, device: str = "cpu") -> None:
        import transformers

        self.kind, self.folder = kind, os.path.abspath(folder)
        self.device = torch.device(device)
        self.model = getattr(transformers, TRANSFORMERS_CLASSES[kind]).from_pretrained(self.folder).to(self.device).eval()
        config = self.model.config
        if kind == "encodec" and (config.chunk_length_s or config.normalize):
            raise ValueError(f"{folder}: an EnCodec that chunks or normalises its input (the 48 kHz model) needs "
                             "per-chunk scales voxray's codes do not keep; use the 24 kHz EnCodec")
        self.sample_rate = int(config.sampling_rate)
        self.bandwidth = None
        match kind:
            case "mimi":
                books = config.num_quantizers
            case "dac":
                books = config.n_codebooks
            case "encodec":           # the codebooks its highest bandwidth uses
                self.bandwidth = max(config.target_bandwidths)
                books = int(1000 * self.bandwidth // (config.frame_rate * config.codebook_nbits))
        self.description = {"name": kind, "n_codebooks": int(books), "codebook_size": int(config.codebook_size),
                            "frame_rate": self.frame_rate(config), "sample_rate": self.sample_rate,
                            "kind": "pretrained", "folder": self.folder}

    def frame_rate(self, config) -> float:
        """Code frames per second: Mimi's own (12.5 Hz, after its downsampling); the sample rate over
        the hop for DAC and EnCodec (their configs round it up: DAC at 44.1 kHz is 86.13 Hz, not 87)."""
        return float(config.frame_rate) if self.kind == "mimi" else self.sample_rate / float(config.hop_length)

    @torch.no_grad()
    def encode(self, row: dict[str, Any]) -> np.ndarray:
        """A store row's ``audio`` (at ``row["sample_rate"]``) -> int32 codes [T, n_codebooks]."""
        audio = np.asarray(row["audio"], dtype=np.float32)
        audio = dsp.resample(audio, int(row["sample_rate"]), self.sample_rate)
        values = torch.from_numpy(np.ascontiguousarray(audio))[None, None].to(self.device)
        if self.kind == "mimi":
            codes = self.model.encode(values).audio_codes                  # [1, K, T]
        elif self.kind == "dac":
            codes = self.model.encode(values).audio_codes                  # [1, K, T]
        else:
            codes = self.model.encode(values, bandwidth=self.bandwidth).audio_codes[0]   # [chunks=1, 1, K, T]
        return codes[0].T.to(torch.int32).cpu().numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> Decoded:
        """int32 codes [T, n_codebooks] -> the codec's waveform at its own rate."""
        books = self.description["n_codebooks"]
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != books:
            raise ValueError(f"the {self.kind} codec decodes [T, {books}] codes, got {list(codes.shape)}")
        tensor = torch.from_numpy(codes.T.astype(np.int64))[None].to(self.device)     # [1, K, T]
        if self.kind == "mimi":
            audio = self.model.decode(tensor).audio_values
        elif self.kind == "dac":
            audio = self.model.decode(audio_codes=tensor).audio_values
        else:
            audio = self.model.decode(tensor[None], [None]).audio_values
        return Decoded(audio=audio.reshape(-1).float().cpu().numpy(), sample_rate=self.sample_rate)


def load(spec: str, device: str = "cpu"):
    """The codec a ``pretrained:KIND=FOLDER`` spec names, its folder checked first."""
    import transformers

    kind, folder = parse(spec)
    describe_folder(kind, folder)
    transformers.utils.logging.disable_progress_bar()        # no loading bars in actors' logs
    if kind == "qwen3-tts-12hz":
        from voxray.codec.qwen3_tts import Qwen3TTSTokenizerCodec

        return Qwen3TTSTokenizerCodec(folder, device)
    return TransformersCodec(kind, folder, device)
