"""HiFi-GAN's losses, pure functions. Scores and features are per sub-discriminator lists, each
entry holding real and generated examples concatenated along the batch (real first), as one
discriminator call on ``cat([real, fake])`` returns them.

Shapes: B real (= generated) examples; a score map [2B, ...]; feature maps [2B, ...]."""

from __future__ import annotations

from typing import Optional

import torch

from voxray.losses.acoustic import masked_mean
from voxray.models.layers import padding_mask


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = x.chunk(2, dim=0)
    return real, fake


def discriminator_loss(scores: list[torch.Tensor]) -> torch.Tensor:
    """Least squares: real towards 1, generated towards 0, summed over sub-discriminators."""
    total = scores[0].new_zeros(())
    for score in scores:
        real, fake = _halves(score.float())
        total = total + ((1 - real) ** 2).mean() + (fake ** 2).mean()
    return total


def adversarial_loss(scores: list[torch.Tensor]) -> torch.Tensor:
    """The generator's least-squares term: generated towards 1."""
    total = scores[0].new_zeros(())
    for score in scores:
        _, fake = _halves(score.float())
        total = total + ((1 - fake) ** 2).mean()
    return total


def feature_matching_loss(features: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminators' feature maps of real (held fixed) and generated audio,
    summed over layers and sub-discriminators."""
    total = features[0][0].new_zeros((), dtype=torch.float32)
    for maps in features:
        for fmap in maps:
            real, fake = _halves(fmap.float())
            total = total + (real.detach() - fake).abs().mean()
    return total


def mel_l1(generated_mel: torch.Tensor, target_mel: torch.Tensor, frames: Optional[torch.Tensor] = None
           ) -> torch.Tensor:
    """Mean |log-mel difference| over [B, T, n_mels]; with ``frames`` [B], over valid frames only."""
    difference = (generated_mel.float() - target_mel.float()).abs()
    if frames is None:
        return difference.mean()
    return masked_mean(difference, padding_mask(frames, difference.shape[1]))
