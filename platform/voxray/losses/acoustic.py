"""Acoustic-model losses: pure functions over the model's output dict and the batch.

Shapes: B batch, N tokens, T mel frames. Masks are True on padding.
"""

from __future__ import annotations

import torch

from voxray.models import alignment


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [B, L, ...] where ``mask`` [B, L] is False (not padding)."""
    keep = (~mask).to(values.dtype)
    while keep.dim() < values.dim():
        keep = keep.unsqueeze(-1)
    denominator = keep.sum() * (values[0, 0].numel() if values.dim() > 2 else 1)
    return (values * keep).sum() / denominator.clamp(min=1)


def mel_loss(predicted: torch.Tensor, target: torch.Tensor, mel_mask: torch.Tensor) -> torch.Tensor:
    """L1 over valid frames: predicted, target [B, T, n_mels]."""
    return masked_mean((predicted - target).abs(), mel_mask)


def duration_loss(log_duration: torch.Tensor, durations: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """MSE in the log domain: log_duration [B, N] predicts log(1 + frames)."""
    return masked_mean((log_duration - torch.log1p(durations.to(log_duration.dtype))) ** 2, text_mask)


def variance_loss(predicted: torch.Tensor, target: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """MSE of token-level pitch or energy [B, N]."""
    return masked_mean((predicted - target) ** 2, text_mask)


def acoustic_losses(out: dict[str, torch.Tensor], mels: torch.Tensor, token_lengths: torch.Tensor,
                    mel_lengths: torch.Tensor, *, mel: float, duration: float, pitch: float,
                    energy: float, alignment_weight: float, binarization_weight: float) -> dict[str, torch.Tensor]:
    """Weighted loss components and their sum under ``total``."""
    parts = {
        "mel": mel_loss(out["mel"], mels, out["mel_mask"]),
        "duration": duration_loss(out["log_duration"], out["durations"], out["text_mask"]),
        "pitch": variance_loss(out["pitch"], out["token_pitch"], out["text_mask"]),
        "energy": variance_loss(out["energy"], out["token_energy"], out["text_mask"]),
    }
    weights = {"mel": mel, "duration": duration, "pitch": pitch, "energy": energy}
    if "attn_log_probs" in out:
        parts["alignment"] = alignment.forward_sum_loss(out["attn_log_probs"], token_lengths, mel_lengths)
        parts["binarization"] = alignment.binarization_loss(out["attn_hard"], out["attn_soft"])
        weights.update(alignment=alignment_weight, binarization=binarization_weight)
    parts["total"] = sum(weights[name] * parts[name] for name in weights)
    return parts
