"""Rank 0's run log: TensorBoard event files and ``metrics.jsonl`` under RUN_URI.

Written to a local folder (RUN_URI itself when it is local) and copied to RUN_URI at every
checkpoint and at the end when RUN_URI is remote. On resume, ``metrics.jsonl`` is cut back to
the resumed step so that steps repeated after a crash are not logged twice.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Optional

import numpy as np
import torch

from voxray import uri

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def mel_image(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Two log-mels [frames, n_mels] -> one RGB image [3, 2*n_mels + 2, frames]: predicted on top
    of target, low frequencies at the bottom of each, both on the target's colour scale."""
    import matplotlib

    low, high = float(target.min()), float(target.max())
    frames = max(len(predicted), len(target))

    def panel(mel: np.ndarray) -> np.ndarray:
        padded = np.full((frames, mel.shape[1]), low, dtype=np.float32)
        padded[: len(mel)] = mel
        return np.clip((padded.T[::-1] - low) / max(high - low, 1e-6), 0, 1)

    gap = np.ones((2, frames), dtype=np.float32)
    stacked = np.concatenate([panel(predicted), gap, panel(target)])
    rgb = matplotlib.colormaps["magma"](stacked)[..., :3]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


def attention_image(soft: np.ndarray) -> np.ndarray:
    """A soft alignment [frames, tokens] -> an RGB image [3, tokens, frames], the first token at
    the bottom (a healthy alignment is one rising, monotonic line)."""
    import matplotlib

    scaled = np.clip(soft.T[::-1] / max(float(soft.max()), 1e-6), 0, 1)
    rgb = matplotlib.colormaps["viridis"](scaled)[..., :3]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


class RunLog:
    """Scalars, images and audio for TensorBoard, and one JSON line per logged step."""

    def __init__(self, run_uri: str, resumed_step: Optional[int]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_uri = run_uri
        self.remote = uri.is_remote(run_uri)
        self.local = tempfile.mkdtemp(prefix="voxray-runlog-") if self.remote else run_uri
        os.makedirs(self.local, exist_ok=True)
        if self.remote:
            self._download()
        self._cut_metrics(resumed_step or 0)
        self.writer = SummaryWriter(os.path.join(self.local, TENSORBOARD_DIR), purge_step=resumed_step)
        self.metrics = open(os.path.join(self.local, METRICS_FILE), "a", encoding="utf-8")

    def _download(self) -> None:
        for name in (METRICS_FILE, TENSORBOARD_DIR):
            source = uri.join(self.run_uri, name)
            if uri.exists(source):
                fs, inner = uri.filesystem(source)
                fs.get(inner, os.path.join(self.local, name), recursive=True)

    def _cut_metrics(self, step: int) -> None:
        path = os.path.join(self.local, METRICS_FILE)
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as handle:
            kept = [line for line in handle if line.strip() and json.loads(line).get("step", 0) <= step]
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(kept)

    def scalars(self, step: int, values: dict[str, float], kind: str = "train") -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{kind}/{name}", value, step)
        record = {"step": step, "kind": kind, "time": round(time.time(), 3),
                  **{k: (None if not np.isfinite(v) else float(v)) for k, v in values.items()}}
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()

    def event(self, step: int, kind: str, **fields: Any) -> None:
        self.metrics.write(json.dumps({"step": step, "kind": kind, "time": round(time.time(), 3), **fields}) + "\n")
        self.metrics.flush()

    def mel(self, step: int, tag: str, predicted: torch.Tensor, target: torch.Tensor) -> None:
        self.writer.add_image(tag, mel_image(predicted.float().cpu().numpy(), target.float().cpu().numpy()), step)

    def layer_norms(self, step: int, norms: dict[str, dict[str, float]]) -> None:
        """Each engine's per-layer gradient norms, to TensorBoard only (grad_norm/<engine>/<layer>)."""
        for engine, layers in norms.items():
            for layer, value in layers.items():
                self.writer.add_scalar(f"grad_norm/{engine}/{layer}", value, step)

    def attention(self, step: int, tag: str, soft: torch.Tensor) -> None:
        self.writer.add_image(tag, attention_image(soft.float().cpu().numpy()), step)

    def audio(self, step: int, tag: str, waveform: torch.Tensor, sample_rate: int) -> None:
        self.writer.add_audio(tag, waveform.float().cpu()[None], step, sample_rate=sample_rate)

    def sync(self) -> None:
        """Flush, and copy the log to RUN_URI when it is remote."""
        self.writer.flush()
        self.metrics.flush()
        if self.remote:
            fs, inner = uri.filesystem(self.run_uri)
            fs.put(os.path.join(self.local, METRICS_FILE), f"{inner}/{METRICS_FILE}")
            fs.put(os.path.join(self.local, TENSORBOARD_DIR), f"{inner}/", recursive=True)

    def close(self) -> None:
        self.sync()
        self.writer.close()
        self.metrics.close()
