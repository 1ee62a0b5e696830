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


def weighted_mean(values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``masked_mean`` with a weight per position [B, L] (None: all 1), normalised by the weights'
    sum: a weight moves the emphasis between positions, not the term's overall scale."""
    if weights is None:
        return masked_mean(values, mask)
    keep = (~mask).to(values.dtype) * weights.to(values.dtype)
    while keep.dim() < values.dim():
        keep = keep.unsqueeze(-1)
    denominator = keep.sum() * (values[0, 0].numel() if values.dim() > 2 else 1)
    return (values * keep).sum() / denominator.clamp(min=1e-6)


def mel_loss(predicted: torch.Tensor, target: torch.Tensor, mel_mask: torch.Tensor,
             frame_weights: torch.Tensor | None = None) -> torch.Tensor:
    """L1 over valid frames: predicted, target [B, T, n_mels]."""
    return weighted_mean((predicted - target).abs(), mel_mask, frame_weights)


def duration_loss(log_duration: torch.Tensor, durations: torch.Tensor, text_mask: torch.Tensor,
                  token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE in the log domain: log_duration [B, N] predicts log(1 + frames)."""
    return weighted_mean((log_duration - torch.log1p(durations.to(log_duration.dtype))) ** 2, text_mask, token_weights)


def variance_loss(predicted: torch.Tensor, target: torch.Tensor, text_mask: torch.Tensor,
                  token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of token-level pitch or energy [B, N]."""
    return weighted_mean((predicted - target) ** 2, text_mask, token_weights)


def language_boundaries(token_languages: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """[B, N] True on the tokens either side of a language change (a token whose neighbour, inside
    the text, has another language)."""
    valid = ~text_mask
    change = (token_languages[:, 1:] != token_languages[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    boundary = torch.zeros_like(valid)
    boundary[:, 1:] |= change
    boundary[:, :-1] |= change
    return boundary


def frame_weights(token_weights: torch.Tensor, durations: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Token weights [B, N] spread over the frames each token lasts (``durations`` [B, N]) -> [B, T];
    frames past the durations' sum weigh 1."""
    rows = []
    for weights, lengths in zip(token_weights, durations.long().clamp(min=0)):
        row = torch.repeat_interleave(weights, lengths)[:n_frames]
        rows.append(torch.cat([row, row.new_ones(n_frames - row.shape[0])]))
    return torch.stack(rows)


def token_weights(out: dict[str, torch.Tensor], token_languages: torch.Tensor | None,
                  token_particles: torch.Tensor | None, *, transition: float, particle_pitch: float,
                  particle_duration: float) -> dict[str, torch.Tensor | None]:
    """Per-token weights of the mel (as frames), duration, pitch and energy errors: ``transition``
    on the tokens either side of a language change (the Malaysian plan's transition_smoothness),
    ``particle_pitch`` / ``particle_duration`` on particle tokens (its particle phase: x2.0, x1.5);
    None where every weight is 1."""
    text_mask = out["text_mask"]
    ones = torch.ones(text_mask.shape, dtype=torch.float32, device=text_mask.device)
    boundary = ones
    if transition != 1 and token_languages is not None:
        boundary = torch.where(language_boundaries(token_languages, text_mask), transition, 1.0)
    particle = token_particles is not None
    pitch = boundary * torch.where(token_particles > 0, particle_pitch, 1.0) if particle and particle_pitch != 1 \
        else boundary
    duration = boundary * torch.where(token_particles > 0, particle_duration, 1.0) \
        if particle and particle_duration != 1 else boundary
    weights = {"duration": duration, "pitch": pitch, "energy": boundary,
               "mel": frame_weights(boundary, out["durations"], out["mel"].shape[1]) if boundary is not ones else None}
    return {name: (None if w is ones else w) for name, w in weights.items()}


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
                    transition: float = 1.0, particle_pitch: float = 1.0, particle_duration: float = 1.0,
                    token_languages: torch.Tensor | None = None,
                    token_particles: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Weighted loss components and their sum under ``total``; the heads' accuracies
    (``language_acc``, ``particle_acc``) ride along unweighted. token_languages, token_particles
    [B, N] are needed by the language, particle and particle-prosody terms and by the per-token
    weights (``token_weights``)."""
    tw = token_weights(out, token_languages, token_particles, transition=transition,
                       particle_pitch=particle_pitch, particle_duration=particle_duration)
    parts = {
        "mel": mel_loss(out["mel"], mels, out["mel_mask"], tw["mel"]),
        "duration": duration_loss(out["log_duration"], out["durations"], out["text_mask"], tw["duration"]),
        "pitch": variance_loss(out["pitch"], out["token_pitch"], out["text_mask"], tw["pitch"]),
        "energy": variance_loss(out["energy"], out["token_energy"], out["text_mask"], tw["energy"]),
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
