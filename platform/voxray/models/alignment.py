"""Learned text-to-mel alignment for stores without durations (RAD-TTS / NeMo FastPitch style).

An alignment encoder scores every (mel frame, token) pair; a forward-sum (CTC) loss makes the
soft alignment monotonic; monotonic alignment search (MAS) turns it into a hard alignment whose
column sums are the token durations (they sum exactly to the mel length).
Shapes: B batch, T mel frames, N tokens.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class AlignmentEncoder(nn.Module):
    def __init__(self, n_mels: int, text_dim: int, attention_dim: int = 80, temperature: float = 0.0005) -> None:
        super().__init__()
        self.temperature = temperature
        self.key_proj = nn.Sequential(
            nn.Conv1d(text_dim, 2 * text_dim, 3, padding=1), nn.ReLU(),
            nn.Conv1d(2 * text_dim, attention_dim, 1))
        self.query_proj = nn.Sequential(
            nn.Conv1d(n_mels, 2 * n_mels, 3, padding=1), nn.ReLU(),
            nn.Conv1d(2 * n_mels, n_mels, 1), nn.ReLU(),
            nn.Conv1d(n_mels, attention_dim, 1))

    def forward(self, mels: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                log_prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mels [B, T, n_mels], text [B, N, D], text_mask [B, N] (True = pad)
        -> (log-probabilities [B, T, N], soft alignment [B, T, N])."""
        queries = self.query_proj(mels.transpose(1, 2)).transpose(1, 2)   # [B, T, A]
        keys = self.key_proj(text.transpose(1, 2)).transpose(1, 2)        # [B, N, A]
        distance = torch.cdist(queries, keys).pow(2)                       # [B, T, N]
        scores = -self.temperature * distance
        scores = scores.masked_fill(text_mask[:, None, :], -1e4)
        log_probs = F.log_softmax(scores, dim=-1)
        if log_prior is not None:
            log_probs = F.log_softmax(log_probs + log_prior, dim=-1)
        soft = log_probs.exp().masked_fill(text_mask[:, None, :], 0)
        return log_probs, soft


def beta_binomial_log_prior(n_tokens: int, n_frames: int, scale: float = 1.0) -> torch.Tensor:
    """[n_frames, n_tokens] log prior that favours the diagonal (RAD-TTS), via lgamma."""
    k = torch.arange(n_tokens, dtype=torch.float64)
    n = float(n_tokens - 1)
    frames = torch.arange(1, n_frames + 1, dtype=torch.float64)[:, None]
    a, b = scale * frames, scale * (n_frames + 1 - frames)

    def log_beta(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)

    log_choose = torch.lgamma(torch.tensor(n + 1)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    return (log_choose + log_beta(k + a, n - k + b) - log_beta(a, b)).float()


def batch_log_prior(token_lengths: torch.Tensor, mel_lengths: torch.Tensor, n_tokens: int,
                    n_frames: int) -> torch.Tensor:
    prior = torch.full((len(token_lengths), n_frames, n_tokens), -1e4)
    for i, (n, t) in enumerate(zip(token_lengths.tolist(), mel_lengths.tolist())):
        prior[i, :t, :n] = beta_binomial_log_prior(n, t)
    return prior.to(token_lengths.device)


def forward_sum_loss(log_probs: torch.Tensor, token_lengths: torch.Tensor, mel_lengths: torch.Tensor,
                     blank_log_prob: float = -1.0) -> torch.Tensor:
    """CTC over the alignment: every token must be visited, in order. Scalar, mean over batch."""
    padded = F.pad(log_probs, (1, 0), value=blank_log_prob)              # blank is class 0
    losses = []
    for i, (n, t) in enumerate(zip(token_lengths.tolist(), mel_lengths.tolist())):
        item = F.log_softmax(padded[i, :t, : n + 1], dim=-1)[:, None, :]  # [T, 1, N + 1]
        target = torch.arange(1, n + 1, device=log_probs.device)[None, :]
        losses.append(F.ctc_loss(item, target, torch.tensor([t]), torch.tensor([n]),
                                 blank=0, zero_infinity=True))
    return torch.stack(losses).mean()


def monotonic_alignment_search(log_probs: np.ndarray) -> np.ndarray:
    """[T, N] log-probabilities -> [T, N] 0/1 path: monotonic, each frame one token, every token
    at least one frame, starting at (0, 0) and ending at (T-1, N-1). Needs T >= N."""
    frames, tokens = log_probs.shape
    if frames < tokens:
        raise ValueError(f"cannot align {tokens} tokens to {frames} frames")
    value = np.full((frames, tokens), -np.inf)
    value[0, 0] = log_probs[0, 0]
    came_from_previous = np.zeros((frames, tokens), dtype=bool)
    for t in range(1, frames):
        stay = value[t - 1]
        advance = np.concatenate([[-np.inf], value[t - 1, :-1]])
        came_from_previous[t] = advance > stay
        value[t] = np.maximum(stay, advance) + log_probs[t]
    path = np.zeros((frames, tokens), dtype=np.int64)
    token = tokens - 1
    for t in range(frames - 1, -1, -1):
        path[t, token] = 1
        if t > 0 and came_from_previous[t, token]:
            token -= 1
    return path


def hard_alignment(log_probs: torch.Tensor, token_lengths: torch.Tensor,
                   mel_lengths: torch.Tensor) -> torch.Tensor:
    """Batched MAS: [B, T, N] -> [B, T, N] 0/1 (zero outside each item's lengths)."""
    hard = torch.zeros_like(log_probs)
    array = log_probs.detach().float().cpu().numpy()
    for i, (n, t) in enumerate(zip(token_lengths.tolist(), mel_lengths.tolist())):
        hard[i, :t, :n] = torch.from_numpy(monotonic_alignment_search(array[i, :t, :n])).to(hard)
    return hard


def binarization_loss(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Pulls the soft alignment towards the MAS path (RAD-TTS)."""
    return -(torch.log(soft.clamp(min=1e-12)) * hard).sum() / hard.sum().clamp(min=1)


def diagonality_sums(soft: torch.Tensor, hard: torch.Tensor, mel_lengths: torch.Tensor, width: int = 1
                     ) -> tuple[float, float]:
    """The alignment's health check (the TransformerTTS script's diagonality): (the soft attention
    mass within ``width`` tokens of the monotonic MAS path, summed over valid frames; the number of
    valid frames). Their ratio is 1 for an attention that follows one monotonic path, and falls
    towards (2 width + 1) / N as it spreads over the N tokens. soft, hard [B, T, N]."""
    path = hard.argmax(-1)                                                          # [B, T]
    tokens = torch.arange(soft.shape[-1], device=soft.device)
    near = (tokens[None, None, :] - path[..., None]).abs() <= width                 # [B, T, N]
    valid = torch.arange(soft.shape[1], device=soft.device)[None, :] < mel_lengths[:, None]
    mass = (soft * near).sum(-1)
    return float(mass[valid].sum()), float(valid.sum())
