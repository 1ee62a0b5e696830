"""FastSpeech2-family acoustic model: tokens -> mel.

Phoneme encoder, variance adaptor (duration, token-level pitch and energy as in FastPitch),
length regulator, mel decoder; speaker and language embeddings; rotary attention and SwiGLU
feed-forward as options. Without store durations, an alignment encoder + MAS learn them.

Code-switched speech (``token_labels``): each token's language embedding and particle-type
embedding (type 0, no particle, adds nothing) are added to the encoder's output, before the
variance adaptor and the decoder; the encoder itself reads the tokens with the speaker and the
row's language, as for a monolingual store. Optional heads on the encoder's own output classify
each token's language and particle type from the text alone (a real task, since the labels enter
after it); they score against the embedding tables (``head @ table.T``), so they grow with them
when fine-tuning brings new languages.
Shapes: B batch, N tokens, T mel frames, D width. Masks are True on padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from voxray.models import alignment
from voxray.models.layers import TransformerStack, VariancePredictor, padding_mask


@dataclass(frozen=True)
class Preset:
    dim: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    ffn_hidden: int
    variance_hidden: int


PRESETS = {
    "tiny": Preset(dim=64, heads=2, encoder_layers=2, decoder_layers=2, ffn_hidden=128, variance_hidden=64),
    "small": Preset(dim=192, heads=2, encoder_layers=4, decoder_layers=4, ffn_hidden=768, variance_hidden=192),
    "base": Preset(dim=256, heads=2, encoder_layers=4, decoder_layers=6, ffn_hidden=1024, variance_hidden=256),
    # the Malaysian plan's model: hidden 256, 2 heads, 4 + 4 layers (its dropout 0.2: model.dropout)
    "fs2-ms": Preset(dim=256, heads=2, encoder_layers=4, decoder_layers=4, ffn_hidden=1024, variance_hidden=256),
}


def length_regulate(x: torch.Tensor, durations: torch.Tensor, max_frames: int) -> torch.Tensor:
    """Repeat token vectors by their durations: x [B, N, D], durations [B, N] -> [B, max_frames, D]."""
    ends = durations.long().cumsum(dim=1)                                        # [B, N]
    frames = torch.arange(max_frames, device=x.device)[None, :].expand(x.shape[0], -1).contiguous()
    token = torch.searchsorted(ends, frames, right=True).clamp(max=x.shape[1] - 1)
    out = torch.gather(x, 1, token[..., None].expand(-1, -1, x.shape[2]))
    return out.masked_fill((frames >= ends[:, -1:])[..., None], 0)


def average_by_durations(values: torch.Tensor, durations: torch.Tensor,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean of frame values [B, T] over each token's frames [B, N] -> [B, N].

    ``weights`` [B, T] (e.g. the voiced frames for pitch) default to ones; 0 where a token has
    no weighted frame."""
    weights = torch.ones_like(values) if weights is None else weights.to(values.dtype)
    zero = values.new_zeros(values.shape[0], 1)
    value_sums = torch.cat([zero, (values * weights).cumsum(1)], dim=1)
    weight_sums = torch.cat([zero, weights.cumsum(1)], dim=1)
    ends = durations.long().cumsum(1).clamp(max=values.shape[1])
    starts = (ends - durations.long()).clamp(min=0)
    total = value_sums.gather(1, ends) - value_sums.gather(1, starts)
    weight = weight_sums.gather(1, ends) - weight_sums.gather(1, starts)
    return torch.where(weight > 0, total / weight.clamp(min=1e-8), torch.zeros_like(total))


class FastSpeech2(nn.Module):
    def __init__(self, *, vocab_size: int, n_mels: int, n_speakers: int, n_languages: int,
                 dim: int, heads: int, encoder_layers: int, decoder_layers: int, ffn_hidden: int,
                 variance_hidden: int, kernel_size: int = 3, dropout: float = 0.1,
                 rotary: bool = True, swiglu: bool = True, learn_alignment: bool = True,
                 pitch_mean: float = 0.0, pitch_std: float = 1.0,
                 energy_mean: float = 0.0, energy_std: float = 1.0,
                 mel_mean: list[float] | None = None, mel_std: list[float] | None = None,
                 token_labels: bool = False, n_particles: int = 0, language_head: bool = False,
                 particle_head: bool = False) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.speaker_embedding = nn.Embedding(max(n_speakers, 1), dim)
        self.language_embedding = nn.Embedding(max(n_languages, 1), dim)
        if particle_head and not n_particles:
            raise ValueError("a particle head needs particle types (n_particles > 0)")
        self.token_labels = token_labels
        self.particle_embedding = nn.Embedding(n_particles + 1, dim, padding_idx=0) if n_particles else None
        self.language_head = nn.Linear(dim, dim) if language_head else None
        self.particle_head = nn.Linear(dim, dim) if particle_head else None
        stack = dict(dim=dim, heads=heads, ffn_hidden=ffn_hidden, kernel_size=kernel_size,
                     dropout=dropout, rotary=rotary, swiglu=swiglu)
        self.encoder = TransformerStack(encoder_layers, **stack)
        self.duration_predictor = VariancePredictor(dim, variance_hidden, kernel_size, dropout)
        self.pitch_predictor = VariancePredictor(dim, variance_hidden, kernel_size, dropout)
        self.energy_predictor = VariancePredictor(dim, variance_hidden, kernel_size, dropout)
        self.pitch_embedding = nn.Conv1d(1, dim, kernel_size, padding=kernel_size // 2)
        self.energy_embedding = nn.Conv1d(1, dim, kernel_size, padding=kernel_size // 2)
        self.decoder = TransformerStack(decoder_layers, **stack)
        self.mel_out = nn.Linear(dim, n_mels)
        self.aligner = alignment.AlignmentEncoder(n_mels, dim) if learn_alignment else None
        self.register_buffer("variance_stats", torch.tensor([pitch_mean, pitch_std, energy_mean, energy_std]))
        # Per-channel log-mel statistics of the store: the decoder predicts normalised mels.
        self.register_buffer("mel_stats", torch.stack([
            torch.tensor(mel_mean if mel_mean is not None else [0.0] * n_mels),
            torch.tensor(mel_std if mel_std is not None else [1.0] * n_mels)]).float())

    def _to_mel(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.mel_out(decoded) * self.mel_stats[1] + self.mel_stats[0]

    def _normalise(self, pitch: torch.Tensor, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p_mean, p_std, e_mean, e_std = self.variance_stats
        normalised = torch.where(pitch > 0, (pitch - p_mean) / p_std, torch.zeros_like(pitch))
        return normalised.to(pitch.dtype), ((energy - e_mean) / e_std).to(energy.dtype)

    def _encode(self, tokens, token_lengths, speakers, languages, token_languages=None, token_particles=None):
        """(token embeddings, encoder output with the per-token labels added, text mask, the heads'
        logits on the encoder's own output)."""
        text_mask = padding_mask(token_lengths, tokens.shape[1])
        embedded = self.token_embedding(tokens)
        conditioned = embedded + (self.speaker_embedding(speakers) + self.language_embedding(languages))[:, None]
        encoded = self.encoder(conditioned.masked_fill(text_mask[..., None], 0), text_mask)
        heads = self._classify(encoded)
        if self.token_labels and token_languages is not None:
            encoded = encoded + self.language_embedding(token_languages)
            if self.particle_embedding is not None and token_particles is not None:
                encoded = encoded + self.particle_embedding(token_particles)
            encoded = encoded.masked_fill(text_mask[..., None], 0)
        return embedded, encoded, text_mask, heads

    def _classify(self, encoded: torch.Tensor) -> dict[str, torch.Tensor]:
        """The multi-task heads' logits per token: language [B, N, n_languages], particle
        [B, N, n_particles + 1]."""
        out = {}
        if self.language_head is not None:
            out["language_logits"] = self.language_head(encoded) @ self.language_embedding.weight.t()
        if self.particle_head is not None:     # type 0 (no particle) scores 0: its embedding row stays zero
            scores = self.particle_head(encoded) @ self.particle_embedding.weight[1:].t()
            out["particle_logits"] = torch.cat([scores.new_zeros(*scores.shape[:-1], 1), scores], dim=-1)
        return out

    def _adapt(self, encoded, text_mask, token_pitch, token_energy):
        pitch = self.pitch_embedding(token_pitch[:, None]).transpose(1, 2)
        energy = self.energy_embedding(token_energy[:, None]).transpose(1, 2)
        return (encoded + pitch + energy).masked_fill(text_mask[..., None], 0)

    def forward(self, tokens: torch.Tensor, token_lengths: torch.Tensor, speakers: torch.Tensor,
                languages: torch.Tensor, mels: torch.Tensor, mel_lengths: torch.Tensor,
                pitch: torch.Tensor, energy: torch.Tensor,
                durations: torch.Tensor | None = None, token_languages: torch.Tensor | None = None,
                token_particles: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Teacher-forced pass. mels [B, T, n_mels]; pitch, energy [B, T]; durations,
        token_languages, token_particles [B, N] or None."""
        embedded, encoded, text_mask, out = self._encode(tokens, token_lengths, speakers, languages,
                                                         token_languages, token_particles)
        if durations is None:
            if self.aligner is None:
                raise ValueError("the store has no durations and learn_alignment is off")
            prior = alignment.batch_log_prior(token_lengths, mel_lengths, tokens.shape[1], mels.shape[1])
            # Statistics buffers may stay fp32 under mixed precision: keep the input's dtype.
            normalised = ((mels - self.mel_stats[0]) / self.mel_stats[1]).to(mels.dtype)
            log_probs, soft = self.aligner(normalised, embedded, text_mask, prior)
            hard = alignment.hard_alignment(log_probs, token_lengths, mel_lengths)
            durations = hard.sum(dim=1).long()
            out.update(attn_log_probs=log_probs, attn_soft=soft, attn_hard=hard)
        norm_pitch, norm_energy = self._normalise(pitch, energy)
        token_pitch = average_by_durations(norm_pitch, durations, weights=pitch > 0)
        token_energy = average_by_durations(norm_energy, durations)
        adapted = self._adapt(encoded, text_mask, token_pitch, token_energy)
        frames = length_regulate(adapted, durations, mels.shape[1])
        mel_mask = padding_mask(mel_lengths, mels.shape[1])
        decoded = self.decoder(frames, mel_mask)
        out.update(
            mel=self._to_mel(decoded).masked_fill(mel_mask[..., None], 0),
            log_duration=self.duration_predictor(encoded, text_mask),
            pitch=self.pitch_predictor(encoded, text_mask),
            energy=self.energy_predictor(encoded, text_mask),
            durations=durations, token_pitch=token_pitch, token_energy=token_energy,
            text_mask=text_mask, mel_mask=mel_mask)
        return out

    @torch.no_grad()
    def classify(self, tokens: torch.Tensor, token_lengths: torch.Tensor, speakers: torch.Tensor,
                 languages: torch.Tensor, token_languages: torch.Tensor | None = None,
                 token_particles: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The multi-task heads' logits for tokens [B, N] (empty without heads)."""
        return self._encode(tokens, token_lengths, speakers, languages, token_languages, token_particles)[3]

    @torch.no_grad()
    def infer(self, tokens: torch.Tensor, token_lengths: torch.Tensor, speakers: torch.Tensor,
              languages: torch.Tensor, pace: float = 1.0, token_languages: torch.Tensor | None = None,
              token_particles: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, N] -> (mel [B, T, n_mels], mel_lengths [B]) from predicted variances."""
        mel, mel_lengths, _ = self.infer_with_durations(tokens, token_lengths, speakers, languages, pace,
                                                        token_languages, token_particles)
        return mel, mel_lengths

    @torch.no_grad()
    def infer_with_durations(self, tokens: torch.Tensor, token_lengths: torch.Tensor, speakers: torch.Tensor,
                             languages: torch.Tensor, pace: float = 1.0, token_languages: torch.Tensor | None = None,
                             token_particles: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``infer`` and the frames it gave each token: (mel, mel_lengths, durations [B, N])."""
        _, encoded, text_mask, _ = self._encode(tokens, token_lengths, speakers, languages, token_languages,
                                             token_particles)
        durations = frames_per_token(self.duration_predictor(encoded, text_mask), text_mask, pace)
        pitch = self.pitch_predictor(encoded, text_mask)
        energy = self.energy_predictor(encoded, text_mask)
        adapted = self._adapt(encoded, text_mask, pitch, energy)
        mel_lengths = durations.sum(dim=1)
        frames = length_regulate(adapted, durations, int(mel_lengths.max()))
        mel_mask = padding_mask(mel_lengths, frames.shape[1])
        return self._to_mel(self.decoder(frames, mel_mask)).masked_fill(mel_mask[..., None], 0), mel_lengths, durations


def frames_per_token(log_duration: torch.Tensor, text_mask: torch.Tensor, pace: float = 1.0) -> torch.Tensor:
    """The duration predictor's log(1 + frames) -> whole frames per token (at least 1; 0 on padding)."""
    durations = torch.clamp(torch.round((torch.exp(log_duration) - 1) / pace), min=1)
    return durations.masked_fill(text_mask, 0).long()


def build(preset: str, *, vocab_size: int, n_mels: int, n_speakers: int, n_languages: int,
          rotary: bool, swiglu: bool, learn_alignment: bool, dropout: float = 0.1,
          pitch_stats: tuple[float, float] = (0.0, 1.0),
          energy_stats: tuple[float, float] = (0.0, 1.0),
          mel_stats: tuple[list[float], list[float]] | None = None, token_labels: bool = False,
          n_particles: int = 0, language_head: bool = False, particle_head: bool = False) -> FastSpeech2:
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r} (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset]
    return FastSpeech2(vocab_size=vocab_size, n_mels=n_mels, n_speakers=n_speakers,
                       n_languages=n_languages, dim=p.dim, heads=p.heads,
                       encoder_layers=p.encoder_layers, decoder_layers=p.decoder_layers,
                       ffn_hidden=p.ffn_hidden, variance_hidden=p.variance_hidden, dropout=dropout,
                       rotary=rotary, swiglu=swiglu, learn_alignment=learn_alignment,
                       pitch_mean=pitch_stats[0], pitch_std=pitch_stats[1],
                       energy_mean=energy_stats[0], energy_std=energy_stats[1],
                       mel_mean=mel_stats[0] if mel_stats else None, mel_std=mel_stats[1] if mel_stats else None,
                       token_labels=token_labels, n_particles=n_particles, language_head=language_head,
                       particle_head=particle_head)
