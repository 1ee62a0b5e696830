"""voxray's own codec: a residual vector quantizer over the store's log-mel frames.

``stack_frames`` consecutive frames, normalised per mel channel with the store's statistics,
form one vector of ``stack_frames x n_mels``; level ``k`` of ``n_codebooks`` quantizes what the
levels before it left (nearest code by Euclidean distance), so one code frame is
``n_codebooks`` integers at ``sample_rate / (hop_length x stack_frames)`` Hz. Decoding sums the
chosen code vectors, unstacks and de-normalises: a mel for a vocoder of the vocoder family.

CODEC_URI holds ``codec.json`` (kind, description, shapes, the fit's report) and
``codec.safetensors`` (codebooks ``[n_codebooks, codebook_size, stack_frames x n_mels]``, the
per-channel mean and std).
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load, save

from voxray import uri
from voxray.audio import AudioSpec
from voxray.codec.base import Decoded

NAME = "voxray-mel-rvq"
WEIGHTS = "codec.safetensors"


class MelCodec:
    def __init__(self, codebooks: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, stack_frames: int,
                 spec: AudioSpec, report: Optional[dict[str, Any]] = None) -> None:
        self.codebooks = codebooks.float()              # [K, V, stack * n_mels]
        self.mean, self.std = mean.float(), std.float()  # [n_mels]
        self.stack_frames = stack_frames
        self.spec = spec
        self.report = report or {}
        n_codebooks, codebook_size, _ = self.codebooks.shape
        self.description = {"name": NAME, "n_codebooks": n_codebooks, "codebook_size": codebook_size,
                            "frame_rate": round(spec.sample_rate / (spec.hop_length * stack_frames), 4)}

    # --------------------------------------------------------------------------- vectors

    def vectors(self, mel: np.ndarray) -> torch.Tensor:
        """log-mel [frames, n_mels] -> normalised stacked vectors [ceil(frames / stack), stack * n_mels];
        the last vector is padded with silence (the log floor)."""
        mel = torch.as_tensor(np.asarray(mel, dtype=np.float32)).reshape(-1, self.spec.n_mels)
        frames = mel.shape[0]
        padded = math.ceil(frames / self.stack_frames) * self.stack_frames
        if padded > frames:
            mel = torch.cat([mel, mel.new_full((padded - frames, mel.shape[1]), math.log(self.spec.log_floor))])
        return ((mel - self.mean) / self.std).reshape(-1, self.stack_frames * self.spec.n_mels)

    def quantize(self, vectors: torch.Tensor) -> torch.Tensor:
        """Vectors [N, D] -> codes [N, K], level by level on the residual."""
        residual = vectors.clone()
        codes = []
        for codebook in self.codebooks:
            index = torch.cdist(residual, codebook).argmin(dim=1)
            residual -= codebook[index]
            codes.append(index)
        return torch.stack(codes, dim=1)

    def reconstruct(self, codes: torch.Tensor, levels: Optional[int] = None) -> torch.Tensor:
        """Codes [N, K] -> normalised vectors [N, D] from the first ``levels`` codebooks (all by default)."""
        levels = codes.shape[1] if levels is None else levels
        return sum(self.codebooks[k][codes[:, k].long()] for k in range(levels))

    def to_mel(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors.reshape(-1, self.spec.n_mels) * self.std + self.mean

    # ---------------------------------------------------------------------------- codec

    def encode(self, row: dict[str, Any]) -> np.ndarray:
        with torch.no_grad():
            return self.quantize(self.vectors(row["mel"])).numpy().astype(np.int32)

    def decode(self, codes: np.ndarray, levels: Optional[int] = None) -> Decoded:
        """Codes [T, K] -> log-mel [T * stack_frames, n_mels] (crop it to the utterance's frames)."""
        codes = np.array(codes, dtype=np.int64)            # a writable copy for torch
        if codes.ndim != 2 or codes.shape[1] != self.codebooks.shape[0]:
            raise ValueError(f"codes of shape {list(codes.shape)}: this codec makes [T, {self.codebooks.shape[0]}]")
        if codes.min() < 0 or codes.max() >= self.codebooks.shape[1]:
            raise ValueError(f"codes outside [0, {self.codebooks.shape[1]})")
        with torch.no_grad():
            return Decoded(mel=self.to_mel(self.reconstruct(torch.from_numpy(codes), levels)).numpy())

    # ------------------------------------------------------------------------ save/load

    def save(self, folder: str) -> None:
        uri.write_bytes(uri.join(folder, WEIGHTS), save({"codebooks": self.codebooks.contiguous(),
                                                         "mean": self.mean, "std": self.std}))
        uri.write_text(uri.join(folder, "codec.json"), json.dumps(
            {"kind": "mel", "description": self.description, "stack_frames": self.stack_frames,
             "audio_spec": self.spec.model_dump(), "report": self.report}, indent=1))

    @classmethod
    def load(cls, folder: str, saved: dict[str, Any]) -> "MelCodec":
        tensors = load(uri.read_bytes(uri.join(folder, WEIGHTS)))
        return cls(tensors["codebooks"], tensors["mean"], tensors["std"], saved["stack_frames"],
                   AudioSpec(**saved["audio_spec"]), saved.get("report"))
