"""Transformer building blocks shared by the model families.

Shapes: B batch, T time, D model width, H heads. Masks are bool with True on padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def padding_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """[B] lengths -> [B, T] bool, True where padded."""
    max_length = int(lengths.max()) if max_length is None else max_length
    return torch.arange(max_length, device=lengths.device)[None, :] >= lengths[:, None]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer): rotates query/key channel pairs by position."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: [B, H, T, head_dim] at positions offset .. offset + T - 1 -> same shape, rotated."""
        positions = torch.arange(offset, offset + x.shape[-2], device=x.device, dtype=self.inv_freq.dtype)
        angles = positions[:, None] * self.inv_freq[None, :]          # [T, head_dim / 2]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
        return rotated.flatten(-2)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """[T, D] absolute sinusoidal positions (used when rotary is off)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    scale = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * scale)
    table[:, 1::2] = torch.cos(position * scale[: dim // 2])
    return table


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, rotary: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout
        self.rotary = RotaryEmbedding(dim // heads) if rotary else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D], mask: [B, T] (True = padding) -> [B, T, D]."""
        batch, time, dim = x.shape
        q, k, v = self.qkv(x).view(batch, time, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        attend = ~mask[:, None, None, :]                                # [B, 1, 1, T]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attend,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, time, dim))


class ConvFeedForward(nn.Module):
    """FastSpeech's position-wise FFN with 1-D convolutions; optionally SwiGLU-gated."""

    def __init__(self, dim: int, hidden: int, kernel_size: int, dropout: float, swiglu: bool) -> None:
        super().__init__()
        self.swiglu = swiglu
        self.up = nn.Conv1d(dim, 2 * hidden if swiglu else hidden, kernel_size, padding=kernel_size // 2)
        self.down = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.up(x.masked_fill(mask[..., None], 0).transpose(1, 2)).transpose(1, 2)
        if self.swiglu:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.relu(h)
        return self.down(self.dropout(h))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + conv feed-forward, padding kept at zero."""

    def __init__(self, dim: int, heads: int, ffn_hidden: int, kernel_size: int, dropout: float,
                 rotary: bool, swiglu: bool) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout, rotary)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = ConvFeedForward(dim, ffn_hidden, kernel_size, dropout, swiglu)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask))
        x = x + self.dropout(self.ffn(self.ffn_norm(x), mask))
        return x.masked_fill(mask[..., None], 0)


class TransformerStack(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int, ffn_hidden: int, kernel_size: int,
                 dropout: float, rotary: bool, swiglu: bool) -> None:
        super().__init__()
        self.rotary = rotary
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, ffn_hidden, kernel_size, dropout, rotary, swiglu)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.rotary:
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x).masked_fill(mask[..., None], 0)


class VariancePredictor(nn.Module):
    """Two conv layers + linear: one scalar per position (duration, pitch or energy)."""

    def __init__(self, dim: int, hidden: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv1d(dim, hidden, kernel_size, padding=kernel_size // 2),
            nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden), nn.LayerNorm(hidden)])
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D] -> [B, T]; zero on padding."""
        h = x.masked_fill(mask[..., None], 0)
        for conv, norm in zip(self.convs, self.norms):
            h = self.dropout(norm(F.relu(conv(h.transpose(1, 2)).transpose(1, 2))))
        return self.proj(h).squeeze(-1).masked_fill(mask, 0)
