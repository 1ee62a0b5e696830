"""Sesame CSM as a pretrained talker: transformers' ``CsmForConditionalGeneration`` (a Llama
backbone that predicts codebook 0 of each Mimi frame, a depth decoder that predicts the others),
fine-tuned on codes a store already holds (``voxray codec encode --codec pretrained:mimi=...``).

A row becomes one CSM turn exactly as CSM's processor and chat template write it::

    <|begin_of_text|>[SPEAKER]text<|end_of_text|> <|AUDIO|> x frames <|audio_eos|>

and the inputs CSM's ``forward`` builds from audio (``_merge_input_ids_with_input_values``) are
built here from the store's codes instead: text positions embed the text, each ``<|AUDIO|>``
position embeds its frame (the sum of its codebooks' embeddings), ``<|audio_eos|>`` the
all-``codebook_eos_token_id`` frame; the labels [B, L, K] hold the frame's codes there and -100
elsewhere, and a frame left out of the depth decoder's loss (``loss.depth_frames`` < 1, CSM's
training amortisation) has -100 in codebooks 1..K-1. The loss is CSM's own ``forward(labels=)``:
backbone cross-entropy on codebook 0 (every frame and the end) + depth-decoder cross-entropy
on the others (``tests/models/test_pretrained_talkers.py`` checks it equals the processor path's
on audio, and its gradients).

The speaker is CSM's ``[id]`` prefix: the store's speaker i is ``[i]`` (the export's
``voxray.json`` keeps the names). Exported with ``save_pretrained`` next to the base folder's
processor files, so ``CsmForConditionalGeneration.from_pretrained(RUN/final)`` and
``AutoProcessor.from_pretrained(RUN/final)`` load it.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from voxray.models.pretrained.base import PretrainedTalker

TEXT_PAD = -1          # a padded text position (replaced before the embedding)


class CsmTalker(PretrainedTalker):
    architecture = "csm"
    model_type = "csm"
    codec_name = "mimi"
    files = ("config.json", "tokenizer_config.json", "tokenizer.json")
    lora_targets = (r".*(backbone_model|depth_decoder\.model)\.layers\.\d+\."
                    r"(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)$")
    embeddings = re.compile(r"(^|\.)(embed_text_tokens|embed_tokens)(\.|$)")
    heads = re.compile(r"(^|\.)(lm_head|depth_decoder)\.")
    block = re.compile(r"(^|\.)backbone_model\.layers\.(\d+)\.")
    frozen = ("codec_model",)            # Mimi inside the model: codes come from the store
    keep_trainable = ("embed_text_tokens", "lm_head", "codebooks_head")     # lora.train_heads: peft modules_to_save

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        template = os.path.join(self.folder, "chat_template.jinja")
        self.chat_template = open(template).read() if os.path.exists(template) else None
        cfg = self.config
        self.audio_token, self.audio_eos_token = "<|AUDIO|>", "<|audio_eos|>"
        self.audio_token_id, self.audio_eos_token_id = cfg["audio_token_id"], cfg["audio_eos_token_id"]

    def codec(self) -> dict[str, Any]:
        from transformers import MimiConfig

        codec = MimiConfig.from_dict(self.config["codec_config"])        # frame_rate is derived, not stored
        return {"name": self.codec_name, "n_codebooks": int(self.config["num_codebooks"]),
                "codebook_size": int(codec.codebook_size), "frame_rate": float(codec.frame_rate),
                "sample_rate": int(codec.sampling_rate)}

    def layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    def model_class(self):
        from transformers import CsmForConditionalGeneration

        return CsmForConditionalGeneration

    # ------------------------------------------------------------------------------- inputs

    def prompt(self, text: str, speaker: int, with_audio: bool) -> str:
        """The turn's text as the model's chat template writes it (the template in the folder when
        it has one, else the model's known layout)."""
        content = [{"type": "text", "text": text}] + ([{"type": "audio"}] if with_audio else [])
        conversation = [{"role": str(speaker), "content": content}]
        if self.chat_template is not None:
            return self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template, tokenize=False)
        tok = self.tokenizer
        return (f"{tok.bos_token}[{speaker}]{text}{tok.eos_token}"
                + (self.audio_token + self.audio_eos_token if with_audio else ""))

    def text_ids(self, text: str, speaker: int, n_frames: int) -> list[int]:
        """Token ids of one turn with ``n_frames`` ``<|AUDIO|>`` positions (the processor's way)."""
        prompt = self.prompt(text, speaker, with_audio=True).replace(self.audio_token, self.audio_token * n_frames, 1)
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def collate(self, rows: list[dict[str, Any]], rng: Optional[np.random.Generator],
                depth_frames: float = 1.0) -> dict[str, torch.Tensor]:
        """Store rows -> input_ids [B, L] (right-padded with ``TEXT_PAD``), codes [B, L, K] at the
        ``<|AUDIO|>`` positions, labels [B, L, K], attention_mask, and the lengths the recipe
        counts (``code_lengths``, ``token_lengths``). The store's speaker i speaks as ``[i]``;
        ``depth_frames``: the share of frames the depth decoder learns (drawn with ``rng``; without
        it, every frame)."""
        books, eos = int(self.config["num_codebooks"]), int(self.config["codebook_eos_token_id"])
        sequences, frames = [], []
        for row in rows:
            codes = np.asarray(row["audio_codes"], dtype=np.int64)
            ids = self.text_ids(row["text"], int(row["speaker_index"]), len(codes))
            sequences.append(ids)
            frames.append(codes)
        longest = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(rows), longest), TEXT_PAD, dtype=torch.long)
        codes = torch.zeros((len(rows), longest, books), dtype=torch.long)
        labels = torch.full((len(rows), longest, books), -100, dtype=torch.long)
        for i, (ids, frame) in enumerate(zip(sequences, frames)):
            ids_t = torch.tensor(ids)
            input_ids[i, : len(ids)] = ids_t
            audio = (ids_t == self.audio_token_id).nonzero().squeeze(1)
            codes[i, audio] = torch.from_numpy(frame)
            labels[i, audio] = torch.from_numpy(frame)
            labels[i, (ids_t == self.audio_eos_token_id).nonzero().squeeze(1)] = eos
            if depth_frames < 1.0 and rng is not None:        # the processor's -101: codebook 0 only
                skip = rng.permutation(len(audio))[: int(len(audio) * (1 - depth_frames))]
                labels[i, audio[skip], 1:] = -100
        return {"input_ids": input_ids, "codes": codes, "labels": labels,
                "attention_mask": (input_ids != TEXT_PAD).long(),
                "code_lengths": torch.tensor([len(f) for f in frames]),
                "token_lengths": torch.tensor([len(s) - len(f) for s, f in zip(sequences, frames)])}

    def embed(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """inputs_embeds [B, L, H]: text embeddings, frames' summed codebook embeddings at
        ``<|AUDIO|>``, the end frame's at ``<|audio_eos|>`` (what CSM's forward does with audio)."""
        ids = batch["input_ids"]
        text = model.embed_text_tokens(ids.clamp(min=0))
        audio = model.backbone_model.embed_tokens(batch["codes"])
        end = torch.full_like(batch["codes"][:, :1], int(self.config["codebook_eos_token_id"]))
        end = model.backbone_model.embed_tokens(end)
        is_audio = (ids == self.audio_token_id)[..., None]
        is_end = (ids == self.audio_eos_token_id)[..., None]
        return torch.where(is_audio, audio, torch.where(is_end, end, text))

    # ------------------------------------------------------------------------------- forward

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """CSM's forward with labels; its loss (``upstream_loss``) and, in the talker family's
        form, the logits and targets of each codebook (codebook 0 from the backbone, shifted once
        by CSM's loss; the others from the depth decoder) for per-codebook cross-entropy and
        accuracy."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        labels = batch["labels"]
        out = model(inputs_embeds=self.embed(base, batch), attention_mask=batch["attention_mask"], labels=labels)
        first = labels[:, 1:, 0]
        keep = first != -100
        codebooks = [(out.logits[:, :-1][keep], first[keep], None)]
        depth = ~(labels[:, :, 1:] == -100).all(dim=-1)
        targets = labels[depth]                                    # [N, K]
        for k in range(1, labels.shape[-1]):
            codebooks.append((out.depth_decoder_logits[:, k - 1], targets[:, k], None))
        empty = out.logits.new_zeros((0, 1))
        return {"codebooks": codebooks, "text": (empty, torch.zeros(0, dtype=torch.long, device=empty.device), None),
                "upstream_loss": out.loss}

    # ------------------------------------------------------------------------------- export

    def save(self, model: nn.Module, folder: str, speakers: list[str], store: str) -> None:
        """``save_pretrained`` of the (merged) model, with the base folder's tokenizer, processor
        and chat template files (the speakers are CSM's ids: nothing to add)."""
        model.save_pretrained(folder)
        for name in os.listdir(self.folder):
            if name.startswith(("tokenizer", "processor", "preprocessor", "chat_template", "special_tokens")):
                shutil.copyfile(os.path.join(self.folder, name), os.path.join(folder, name))

    @torch.no_grad()
    def generate(self, model: nn.Module, text: str, speaker: tuple[int, str], max_frames: int,
                 temperature: float = 0.9, top_k: int = 50) -> np.ndarray:
        """Codes [T, K] for ``text`` in voice ``[index]`` (``speaker``: index, name), through CSM's
        own ``generate``, the ids past the codec's codebook (CSM's pad and spare rows) suppressed in
        both decoders: Mimi cannot decode them."""
        speaker = speaker[0]
        ids = self.tokenizer(self.prompt(text, speaker, with_audio=False), add_special_tokens=False,
                             return_tensors="pt")
        device = next(model.parameters()).device
        spare = list(range(self.codec()["codebook_size"], int(self.config["vocab_size"])))
        codes = model.generate(input_ids=ids["input_ids"].to(device), attention_mask=ids["attention_mask"].to(device),
                               max_new_tokens=max_frames, do_sample=temperature > 0, temperature=temperature or None,
                               top_k=top_k, suppress_tokens=spare, depth_decoder_do_sample=temperature > 0,
                               depth_decoder_temperature=temperature or None, depth_decoder_top_k=top_k,
                               depth_decoder_suppress_tokens=spare)
        codes = codes[0].cpu().numpy()
        ended = np.flatnonzero((codes == int(self.config["codebook_eos_token_id"])).all(axis=-1))
        return codes[: ended[0]] if len(ended) else codes
