"""The talker: a causal Transformer language model over discrete audio codes.

One sequence per utterance::

    [speaker] [language] [text tokens ...] [bos] [code frame 0] ... [code frame T-1]
                                  outputs:  -> frame 0    -> frame 1   ...  -> end of speech

A frame's input is the sum of its codebooks' embeddings. Codebook 0 has one extra class, the end
of speech (index ``codebook_size``); the same index is the "no code" input of every codebook.
How the K codebooks of a frame are predicted is ``codebook_head``:

    depth     codebook 0 from the frame's hidden state; codebooks 1..K-1 from a small causal
              Transformer over [hidden, code 0, ..., code K-2] (Qwen3-TTS's sub-talker, Moshi's
              depformer): codebook k sees the past frames and the codebooks before k
    delay     codebook k shifted k steps (MusicGen): one step predicts codebook 0 of frame t,
              codebook 1 of frame t-1, ...; K heads on the hidden state
    parallel  K heads on the hidden state, all codebooks of a frame at once

``frame_grid`` is the one place where targets are shifted against inputs: the model returns
logits already aligned with their targets. With one codebook the three heads are the same model.

Shapes: B batch, L text tokens, T code frames, K codebooks, V codebook size, S sequence, D width.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from voxray.models.layers import ConvFeedForward, SelfAttention

IGNORE = -100            # a target nothing is learnt from
HEADS = ("depth", "delay", "parallel")
CONDITIONING = ("table", "reference", "prompt")
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(dim=64, layers=2, heads=2, ffn_hidden=128, depth_dim=32, depth_layers=1, depth_heads=2),
    "small": dict(dim=512, layers=8, heads=8, ffn_hidden=1408, depth_dim=256, depth_layers=2, depth_heads=4),
    "base": dict(dim=1024, layers=16, heads=16, ffn_hidden=2816, depth_dim=512, depth_layers=4, depth_heads=8),
}


def frame_grid(codes: torch.Tensor, codebook_size: int, delay: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [T, K] -> (inputs [N - 1, K], targets [N, K]): the frames fed after ``bos`` and what
    each output position (``bos`` and every input frame) must predict.

    Without delay N = T + 1: targets are frames 0..T-1 then end of speech on codebook 0. With delay
    N = T + max(K - 1, 1): step s holds codebook k of frame s - k; end of speech is codebook 0 at
    step T; slots outside the utterance are ``IGNORE`` targets and "no code" inputs."""
    frames, k_books = codes.shape
    end = codebook_size
    if not delay:
        targets = codes.new_full((frames + 1, k_books), IGNORE)
        targets[:frames] = codes
        targets[frames, 0] = end
        return codes, targets
    steps = frames + max(k_books - 1, 1)
    targets = codes.new_full((steps, k_books), IGNORE)
    for k in range(k_books):
        targets[k: k + frames, k] = codes[:, k]
    targets[frames, 0] = end
    inputs = targets[:-1].clone()
    inputs[inputs == IGNORE] = end
    return inputs, targets


def undelay(grid: torch.Tensor, frames: int) -> torch.Tensor:
    """Generated delayed steps [N, K] -> codes [frames, K] (codebook k of frame t at step t + k)."""
    return torch.stack([grid[k: k + frames, k] for k in range(grid.shape[1])], dim=1)


def sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
           generator: Optional[torch.Generator] = None) -> int:
    """One index from logits [V]: greedy at temperature 0, else from the top-k / top-p nucleus."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) > top_p          # keep the smallest set reaching top_p
        logits[order[drop]] = -math.inf
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


class CausalAttention(SelfAttention):
    """Causal self-attention with rotary positions and an optional key/value cache."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__(dim, heads, dropout, rotary=True)

    def forward(self, x: torch.Tensor, cache: Optional[list] = None, offset: int = 0) -> torch.Tensor:
        """x [B, T, D] at positions offset.. ; ``cache`` (a list, filled in place) holds the keys
        and values of the positions before."""
        batch, time, dim = x.shape
        q, k, v = self.qkv(x).view(batch, time, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.rotary(q, offset), self.rotary(k, offset)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        dropout = self.dropout if self.training else 0.0
        if k.shape[2] == time:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            sees = torch.arange(k.shape[2], device=x.device)[None, :] <= (offset + torch.arange(time, device=x.device))[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=sees, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(batch, time, dim))


class CausalBlock(nn.Module):
    """Pre-norm causal attention + SwiGLU feed-forward (position-wise)."""

    def __init__(self, dim: int, heads: int, ffn_hidden: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = CausalAttention(dim, heads, dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = ConvFeedForward(dim, ffn_hidden, 1, dropout, swiglu=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: Optional[list] = None, offset: int = 0) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), cache, offset))
        no_padding = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        return x + self.dropout(self.ffn(self.ffn_norm(x), no_padding))


class CausalDecoder(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int, ffn_hidden: int, dropout: float,
                 checkpointing: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(CausalBlock(dim, heads, ffn_hidden, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor, caches: Optional[list[list]] = None, offset: int = 0) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            if caches is None and self.checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)       # activations recomputed in backward
            else:
                x = block(x, None if caches is None else caches[i], offset)
        return self.norm(x)


class ReferenceEncoder(nn.Module):
    """A reference log-mel [B, T, n_mels] -> one vector [B, D]: two convolutions, the mean over
    the real frames, a projection."""

    def __init__(self, n_mels: int, dim: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv1d(n_mels, dim, 3, padding=1), nn.GELU(),
                                   nn.Conv1d(dim, dim, 3, padding=1), nn.GELU())
        self.out = nn.Linear(dim, dim)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.convs(mel.transpose(1, 2)).transpose(1, 2)
        real = (torch.arange(mel.shape[1], device=mel.device)[None, :] < lengths[:, None]).to(hidden.dtype)[..., None]
        return self.out((hidden * real).sum(1) / real.sum(1).clamp(min=1))


class Talker(nn.Module):
    def __init__(self, *, vocab_size: int, n_speakers: int, n_languages: int, n_codebooks: int,
                 codebook_size: int, codebook_head: str = "depth", dim: int, layers: int, heads: int,
                 ffn_hidden: int, depth_dim: int, depth_layers: int, depth_heads: int, dropout: float = 0.1,
                 checkpointing: bool = False, conditioning: str = "table", n_mels: int = 80) -> None:
        super().__init__()
        if codebook_head not in HEADS:
            raise ValueError(f"codebook_head={codebook_head!r}: choose from {', '.join(HEADS)}")
        if conditioning not in CONDITIONING:
            raise ValueError(f"conditioning={conditioning!r}: choose from {', '.join(CONDITIONING)}")
        self.n_codebooks, self.codebook_size, self.codebook_head = n_codebooks, codebook_size, codebook_head
        self.conditioning = conditioning
        self.token_embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.speaker_embedding = nn.Embedding(n_speakers, dim)
        if conditioning == "reference":
            self.reference = ReferenceEncoder(n_mels, dim)
        if conditioning == "prompt":
            self.prompted = nn.Parameter(torch.randn(dim) * 0.02)      # the voice is in the prompt, not a slot
        self.language_embedding = nn.Embedding(n_languages, dim)
        self.bos = nn.Parameter(torch.randn(dim) * 0.02)
        self.code_embeddings = nn.ModuleList(nn.Embedding(codebook_size + 1, dim) for _ in range(n_codebooks))
        self.decoder = CausalDecoder(layers, dim, heads, ffn_hidden, dropout, checkpointing)
        self.text_head = nn.Linear(dim, vocab_size)
        self.uses_depth = codebook_head == "depth" and n_codebooks > 1
        sub_width = depth_dim if self.uses_depth else dim
        self.heads = nn.ModuleList([nn.Linear(dim, codebook_size + 1)] +
                                   [nn.Linear(sub_width, codebook_size) for _ in range(n_codebooks - 1)])
        if self.uses_depth:
            self.depth_in = nn.Linear(dim, depth_dim)
            self.depth_embeddings = nn.ModuleList(nn.Embedding(codebook_size + 1, depth_dim)
                                                  for _ in range(n_codebooks - 1))
            self.depth = CausalDecoder(depth_layers, depth_dim, depth_heads, 2 * depth_dim, dropout)

    @property
    def delay(self) -> bool:
        return self.codebook_head == "delay"

    # ------------------------------------------------------------------------ teacher forcing

    def embed_frames(self, inputs: torch.Tensor) -> torch.Tensor:
        """[..., K] codes (index V: none) -> [..., D], the sum of the codebooks' embeddings."""
        return sum(table(inputs[..., k]) for k, table in enumerate(self.code_embeddings))

    def frame_index(self, n_frames: int, device: torch.device) -> torch.Tensor:
        """[N, K] aligned with ``frame_grid``'s targets: the frame each target belongs to (the end
        of speech: n_frames; empty slots: IGNORE)."""
        index = torch.arange(n_frames, device=device)[:, None].expand(n_frames, self.n_codebooks)
        _, frame_of = frame_grid(index.contiguous(), n_frames, self.delay)
        return frame_of

    def voices(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The first slot [B, D]: the speaker's embedding (``table``), the reference encoder's
        vector of ``ref_mels`` (``reference``), or one learnt vector (``prompt``: the voice comes
        from the prompt's codes)."""
        if self.conditioning == "reference":
            return self.reference(batch["ref_mels"], batch["ref_mel_lengths"])
        if self.conditioning == "prompt":
            return self.prompted.expand(batch["speakers"].shape[0], -1)
        return self.speaker_embedding(batch["speakers"])

    def sequences(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs [B, S, D], code targets [B, S, K], text targets [B, S]), right-padded; the
        output at position p is trained to predict the targets at p. Every embedding runs once
        on the whole batch: under ZeRO-3 each module call gathers its weights, and ranks with
        batches of different sizes must still make the same calls."""
        grids = [frame_grid(batch["codes"][b, : int(n)], self.codebook_size, self.delay)
                 for b, n in enumerate(batch["code_lengths"])]
        pad = nn.utils.rnn.pad_sequence
        frame_inputs = pad([inputs for inputs, _ in grids], batch_first=True, padding_value=self.codebook_size)
        frames = self.embed_frames(frame_inputs)                          # [B, N - 1, D]
        tokens = self.token_embedding(batch["tokens"])                    # [B, L, D]
        speakers, languages = self.voices(batch), self.language_embedding(batch["languages"])
        prompts = batch.get("prompt_frames")
        rows, code_targets, text_targets = [], [], []
        for b, (inputs, targets) in enumerate(grids):
            n_tokens = int(batch["token_lengths"][b])
            rows.append(torch.cat([speakers[b, None], languages[b, None], tokens[b, :n_tokens], self.bos[None],
                                   frames[b, : len(inputs)]]))
            if prompts is not None and int(prompts[b]) > 0:                # the prompt's frames are given, not learnt
                frame_of = self.frame_index(int(batch["code_lengths"][b]), targets.device)
                targets = targets.masked_fill(frame_of < int(prompts[b]), IGNORE)
            start = 2 + n_tokens                                           # bos predicts the first step
            full = targets.new_full((len(rows[-1]), self.n_codebooks), IGNORE)
            full[start: start + len(targets)] = targets
            code_targets.append(full)
            text = targets.new_full((len(rows[-1]),), IGNORE)
            text[1: 1 + n_tokens] = batch["tokens"][b, :n_tokens]          # language slot -> token 0, ...
            text_targets.append(text)
        return (pad(rows, batch_first=True), pad(code_targets, batch_first=True, padding_value=IGNORE),
                pad(text_targets, batch_first=True, padding_value=IGNORE))

    def depth_logits(self, hidden: torch.Tensor, codes: torch.Tensor) -> list[torch.Tensor]:
        """hidden [N, D] and the frame's codes of codebooks 0..K-2 [N, K-1] (teacher forcing, or
        sampled so far) -> logits of codebooks 1..K-1, each [N, V]. Position k of the depth
        Transformer sees the hidden state and codes 0..k-1 and predicts codebook k."""
        inputs = torch.cat([self.depth_in(hidden)[:, None],
                            torch.stack([table(codes[:, k]) for k, table in enumerate(self.depth_embeddings)], 1)], 1)
        out = self.depth(inputs)
        return [self.heads[k](out[:, k]) for k in range(1, self.n_codebooks)]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Teacher-forced logits aligned with their targets: ``codebooks`` is one (logits [N_k, V_k],
        targets [N_k], positions [B, S] bool) per codebook, only where that codebook has a target;
        ``text`` the same for the text tokens."""
        x, targets, text_targets = self.sequences(batch)
        hidden = self.decoder(x)
        out = []
        for k in range(self.n_codebooks):
            where = targets[..., k] != IGNORE
            if k == 0 or not self.uses_depth:
                logits = self.heads[k](hidden[where])
            else:
                logits = None                                   # filled below, all sub-codebooks at once
            out.append([logits, targets[..., k][where], where])
        if self.uses_depth:
            where = targets[..., 1] != IGNORE                   # every frame (not the end-of-speech step)
            codes = targets[where][:, :-1]
            for k, logits in enumerate(self.depth_logits(hidden[where], codes), start=1):
                out[k][0] = logits
        text_where = text_targets != IGNORE
        return {"codebooks": [tuple(item) for item in out],
                "text": (self.text_head(hidden[text_where]), text_targets[text_where], text_where)}

    # -------------------------------------------------------------------------------- generation

    def prefill(self, tokens: torch.Tensor, speaker: int = 0, language: int = 0, *,
                reference: Optional[torch.Tensor] = None, prompt: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, list[list], int]:
        """The prefix (voice slot, language, text, bos; then the prompt's frames [Tp, K] unless the
        head delays codebooks) through the decoder with an empty cache: (last hidden [D], caches,
        next position). ``reference`` is a log-mel [T, n_mels] for the reference encoder."""
        device = self.bos.device
        if self.conditioning == "reference" and reference is None:
            raise ValueError("this talker is conditioned on a reference recording: give one")
        voice_of = {"speakers": torch.tensor([speaker], device=device)}
        if reference is not None and self.conditioning == "reference":
            voice_of.update(ref_mels=reference.float().to(device)[None],
                            ref_mel_lengths=torch.tensor([len(reference)], device=device))
        x = torch.cat([self.voices(voice_of), self.language_embedding(torch.tensor([language], device=device)),
                       self.token_embedding(tokens.to(device)), self.bos[None]])
        if prompt is not None and len(prompt) and not self.delay:
            x = torch.cat([x, self.embed_frames(prompt.to(device))])
        caches: list[list] = [[] for _ in self.decoder.blocks]
        hidden = self.decoder(x[None], caches, 0)
        return hidden[0, -1], caches, len(x)

    def advance(self, frame: torch.Tensor, caches: list[list], position: int) -> torch.Tensor:
        """Feed one frame's inputs [K] at ``position``: the next hidden state [D]."""
        return self.decoder(self.embed_frames(frame.to(self.bos.device))[None, None], caches, position)[0, -1]

    def _frame(self, hidden: torch.Tensor, pick) -> Optional[list[int]]:
        """One frame's codes from the hidden state (None: end of speech), not delayed."""
        first = pick(self.heads[0](hidden), 0)
        if first == self.codebook_size:
            return None
        codes = [first]
        for k in range(1, self.n_codebooks):
            if self.uses_depth:
                known = torch.tensor(codes + [0] * (self.n_codebooks - 1 - len(codes)), device=hidden.device)
                logits = self.depth_logits(hidden[None], known[None])[k - 1][0]
            else:
                logits = self.heads[k](hidden)
            codes.append(pick(logits, k))
        return codes

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, speaker: int = 0, language: int = 0, *, max_frames: int,
                 temperature: float = 0.8, top_k: int = 50, top_p: float = 0.95,
                 generator: Optional[torch.Generator] = None, reference: Optional[torch.Tensor] = None,
                 prompt: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, bool]:
        """Codes [T, K] for one utterance with a key/value cache, and whether it ended with the end
        of speech (else it stopped at ``max_frames``). With ``prompt`` (codes [Tp, K] of a
        reference whose text leads ``tokens``) the new frames continue it; they come back alone."""
        pick = lambda logits, k: sample(logits, temperature, top_k, top_p, generator)      # noqa: E731
        hidden, caches, position = self.prefill(tokens, speaker, language, reference=reference, prompt=prompt)
        given = 0 if prompt is None else len(prompt)
        none = self.codebook_size
        if not self.delay:
            frames: list[list[int]] = []
            while len(frames) < max_frames:
                frame = self._frame(hidden, pick)
                if frame is None:
                    return torch.tensor(frames, dtype=torch.long).reshape(-1, self.n_codebooks), True
                frames.append(frame)
                hidden = self.advance(torch.tensor(frame), caches, position)
                position += 1
            return torch.tensor(frames, dtype=torch.long).reshape(-1, self.n_codebooks), False
        steps: list[list[int]] = []
        end: Optional[int] = None
        ended = True
        k_books = self.n_codebooks
        while True:
            s = len(steps)
            if end is None and s >= max_frames + given:
                end, ended = s, False                  # cut: the later codebooks of the last frames still come
            step = []
            for k in range(k_books):
                if s - k < 0 or (end is not None and s - k >= end):
                    step.append(none)
                elif s - k < given:
                    step.append(int(prompt[s - k, k]))                        # the prompt's codes, delayed
                else:
                    step.append(pick(self.heads[k](hidden), k))
            if end is None and s >= given and step[0] == none:
                end = s
            steps.append(step)
            if end is not None and s >= end + k_books - 2:
                break
            hidden = self.advance(torch.tensor(step), caches, position)
            position += 1
        grid = torch.tensor(steps, dtype=torch.long).reshape(-1, k_books)
        grid = torch.cat([grid, grid.new_full((k_books, k_books), none)])            # room to un-delay
        return undelay(grid, end)[given:], ended


def build(preset: str = "tiny", **args: Any) -> Talker:
    """A talker from a preset's sizes and the data's sizes (``vocab_size``, ``n_speakers``, ...)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown talker preset {preset!r} (choose from {', '.join(PRESETS)})")
    return Talker(**{**PRESETS[preset], **args})


def layers(args: dict[str, Any]) -> int:
    """Decoder blocks of a talker built from ``args`` (``build``'s arguments)."""
    return int(args.get("layers", PRESETS[args.get("preset", "tiny")]["layers"]))
