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


def token_classification(logits: torch.Tensor, targets: torch.Tensor, text_mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, top-1 accuracy) of per-token logits [B, N, C] against targets [B, N]."""
    keep = ~text_mask
    ce = torch.nn.functional.cross_entropy(logits[keep], targets[keep].long()) if keep.any() else logits.sum() * 0
    accuracy = (logits[keep].argmax(-1) == targets[keep]).float().mean() if keep.any() else logits.new_zeros(())
    return ce, accuracy.detach()


def particle_prosody_loss(out: dict[str, torch.Tensor], token_particles: torch.Tensor) -> torch.Tensor:
    """Token pitch and log-duration squared error on particle tokens only (0 when a batch has none):
    the prosody that marks a particle, weighted on its own."""
    not_particle = out["text_mask"] | (token_particles == 0)
    pitch = masked_mean((out["pitch"] - out["token_pitch"]) ** 2, not_particle)
    duration = duration_loss(out["log_duration"], out["durations"], not_particle)
    return pitch + duration


def acoustic_losses(out: dict[str, torch.Tensor], mels: torch.Tensor, token_lengths: torch.Tensor,
                    mel_lengths: torch.Tensor, *, mel: float, duration: float, pitch: float,
                    energy: float, alignment_weight: float, binarization_weight: float, mel_mse: float = 0.0,
                    language: float = 0.0, particle: float = 0.0, particle_prosody: float = 0.0,
                    token_languages: torch.Tensor | None = None,
                    token_particles: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Weighted loss components and their sum under ``total``; the heads' accuracies
    (``language_acc``, ``particle_acc``) ride along unweighted. token_languages, token_particles
    [B, N] are needed by the language, particle and particle-prosody terms."""
    parts = {
        "mel": mel_loss(out["mel"], mels, out["mel_mask"]),
        "duration": duration_loss(out["log_duration"], out["durations"], out["text_mask"]),
        "pitch": variance_loss(out["pitch"], out["token_pitch"], out["text_mask"]),
        "energy": variance_loss(out["energy"], out["token_energy"], out["text_mask"]),
    }
    weights = {"mel": mel, "duration": duration, "pitch": pitch, "energy": energy}
    if mel_mse:
        parts["mel_mse"] = masked_mean((out["mel"] - mels) ** 2, out["mel_mask"])
        weights["mel_mse"] = mel_mse
    if "attn_log_probs" in out:
        parts["alignment"] = alignment.forward_sum_loss(out["attn_log_probs"], token_lengths, mel_lengths)
        parts["binarization"] = alignment.binarization_loss(out["attn_hard"], out["attn_soft"])
        weights.update(alignment=alignment_weight, binarization=binarization_weight)
    if "language_logits" in out and token_languages is not None:
        parts["language"], parts["language_acc"] = token_classification(
            out["language_logits"], token_languages, out["text_mask"])
        weights["language"] = language
    if "particle_logits" in out and token_particles is not None:
        parts["particle"], parts["particle_acc"] = token_classification(
            out["particle_logits"], token_particles, out["text_mask"])
        weights["particle"] = particle
    if particle_prosody and token_particles is not None:
        parts["particle_prosody"] = particle_prosody_loss(out, token_particles)
        weights["particle_prosody"] = particle_prosody
    parts["total"] = sum(weights[name] * parts[name] for name in weights)
    return parts
