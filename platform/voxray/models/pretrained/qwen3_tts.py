"""Qwen3-TTS-12Hz (0.6B / 1.7B Base) as a pretrained talker, through the ``qwen_tts`` package
(``qwen-tts-hf``, the transformers-5 build; ``qwen3_tts_compat`` adapts it to the pinned
transformers), fine-tuned on codes of its own 12 Hz tokenizer (``voxray codec encode --codec
pretrained:qwen3-tts-12hz=...``).

The inputs are Qwen's fine-tuning recipe's (``finetuning/dataset.py`` and ``sft_12hz.py`` of
QwenLM/Qwen3-TTS), made explicit here. A row's text goes through the model's own tokenizer as
``<|im_start|>assistant\\n{text}<|im_end|>\\n<|im_start|>assistant\\n`` less its last five tokens,
and lays out two channels that are summed (position: text channel / codec channel)::

    0-2      <|im_start|> assistant \\n   /  -
    3-6      tts_pad                       /  nothink, think_bos, think_eos, [speaker embedding]
    7        tts_bos                       /  codec_pad
    8..      the text's tokens             /  codec_pad
    then     tts_eos                       /  codec_pad
    then     tts_pad                       /  codec_bos, frame 0 .. frame T-1 (codebook 0, plus the
                                              embeddings of codebooks 1..K-1 from the code predictor's
                                              tables), codec_eos

The speaker embedding is the model's own speaker encoder (frozen) over the reference recording:
the row's ``ref_audio`` when that is another row of the batch, else another utterance of the
speaker in the batch, else the row itself. It is computed on the data side (``collate``) with a
frozen copy of the encoder, so the training module is the talker alone and every rank makes the
same module calls at ZeRO-3.

Loss = codebook-0 cross-entropy from the talker (labels shifted once, by transformers' causal-LM
loss) + ``loss.sub_codebooks`` (0.3, the recipe's) x the code predictor's cross-entropy over
codebooks 1..K-1. **Departure, measured:** the recipe computes the second term with
``forward_sub_talker_finetune``, whose logits are already aligned with its labels and which then
hands them to the causal-LM loss, which shifts them again: position j learns codebook j+2 and the
last codebook is never learnt (``tests/train/test_pretrained_talker.py`` shows the recipe's term
equals that double-shifted cross-entropy). voxray shifts once; ``upstream_loss`` keeps the
recipe's value for comparison.

The export is Qwen's custom-voice export: the base folder's files, ``config.json`` with
``tts_model_type: custom_voice`` and each trained speaker in ``talker_config.spk_id`` (ids from
vocab_size - 72, 3000 in the real 3072-row codec table, as the recipe uses), the speaker's
embedding in that codec-embedding row, the speaker encoder's weights dropped, so
``Qwen3TTSModel.from_pretrained(RUN/final).generate_custom_voice(text, speaker=NAME)`` speaks.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from voxray import dsp
from voxray.data.batching import references
from voxray.models.pretrained.base import PretrainedTalker
from voxray.models.pretrained.qwen3_tts_compat import import_qwen_tts

SPEAKER_SLOT = 6             # the codec channel's position that carries the speaker embedding
PREFIX = 8                   # positions before the text's tokens
DROPPED = 5                  # <|im_end|> \n <|im_start|> assistant \n: the recipe drops them
SAMPLE_RATE = 24000          # the speaker encoder's mels


class Qwen3TTSTalker(PretrainedTalker):
    architecture = "qwen3-tts"
    model_type = "qwen3_tts"
    codec_name = "qwen3-tts-12hz"
    files = ("config.json", "tokenizer_config.json", "speech_tokenizer/config.json")
    lora_targets = (r".*talker\.(model|code_predictor\.model)\.layers\.\d+\."
                    r"(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)$")
    embeddings = re.compile(r"(^|\.)(text_embedding|codec_embedding|code_predictor\.model\.codec_embedding)(\.|$)")
    heads = re.compile(r"(^|\.)(codec_head|code_predictor)\.")
    block = re.compile(r"(^|\.)talker\.model\.layers\.(\d+)\.")
    frozen = ()
    keep_trainable = ("text_embedding", "text_projection", "codec_embedding", "codec_head", "lm_head")
    columns = ["id", "text", "token_ids", "speaker_index", "n_frames", "audio_codes", "source", "ref_audio",
               "audio", "sample_rate"]
    adapter_export = ("the custom-voice export writes each speaker into config.json and a row of the codec-embedding "
                      "table, which an adapter folder cannot carry: export merged (finetune.export=merged)")

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        import_qwen_tts()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.talker_config = self.config["talker_config"]

    def codec(self) -> dict[str, Any]:
        with open(os.path.join(self.folder, "speech_tokenizer", "config.json")) as handle:
            speech = json.load(handle)
        decoder = speech.get("decoder_config", {})
        return {"name": self.codec_name, "n_codebooks": int(self.talker_config["num_code_groups"]),
                "codebook_size": int(decoder.get("codebook_size", 2048)), "frame_rate": 12.5,
                "sample_rate": int(speech.get("output_sample_rate", SAMPLE_RATE))}

    def layers(self) -> int:
        return int(self.talker_config["num_hidden_layers"])

    def model_class(self):
        import_qwen_tts()
        from qwen_tts.core.models import Qwen3TTSForConditionalGeneration

        return Qwen3TTSForConditionalGeneration

    def load(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The model without its speaker encoder (``collate`` runs a frozen copy; the custom-voice
        export has none)."""
        model = super().load(dtype)
        model.speaker_encoder = None
        return model

    # ------------------------------------------------------------------------------- inputs

    def text_ids(self, text: str) -> list[int]:
        """The recipe's assistant turn through the model's tokenizer, its last five tokens dropped:
        <|im_start|> assistant \\n and the text's tokens."""
        turn = f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"
        return self.tokenizer(turn, add_special_tokens=False)["input_ids"][:-DROPPED]

    def speaker_embeddings(self, rows: list[dict[str, Any]], rng: Optional[np.random.Generator]) -> torch.Tensor:
        """[B, hidden] the speaker encoder's embedding of each row's reference recording."""
        heard = {i for i, row in enumerate(rows) if row.get("audio") is not None and len(row["audio"])}
        picks = references(rows, rng)
        encoder = speaker_encoder(self.folder)
        out = []
        for i, row in enumerate(rows):
            j = picks[i]
            if j not in heard:        # none, or a row kept for its codes alone: another recording of the speaker
                same = [k for k in sorted(heard) if rows[k]["speaker_index"] == row["speaker_index"]]
                j = next((k for k in same if k != i), i if i in heard else None)
            if j is None:
                raise ValueError(f"row {row['id']}: no recording of its speaker in the batch for the speaker "
                                 "embedding (Qwen3-TTS takes its voice from a reference recording; rows kept for "
                                 "their codes alone have none, and the store needs preprocess.store_audio)")
            ref = rows[j]
            out.append(embed_speaker(encoder, np.asarray(ref["audio"], dtype=np.float32), int(ref["sample_rate"])))
        return torch.stack(out)

    def collate(self, rows: list[dict[str, Any]], rng: Optional[np.random.Generator],
                depth_frames: float = 1.0) -> dict[str, torch.Tensor]:
        """Store rows -> the recipe's two channels and masks (module docstring), codes [B, L, K],
        codebook-0 labels [B, L], the code predictor's frames ``sub_mask`` (a ``depth_frames``
        share of the frames, drawn with ``rng``; all without it) and the speaker embeddings."""
        cfg, talker = self.config, self.talker_config
        books = int(talker["num_code_groups"])
        texts = [self.text_ids(row["text"]) for row in rows]
        codes = [np.asarray(row["audio_codes"], dtype=np.int64) for row in rows]
        length = max(len(t) + len(c) for t, c in zip(texts, codes)) + PREFIX
        batch = len(rows)
        input_ids = torch.zeros((batch, length, 2), dtype=torch.long)
        codec_ids = torch.zeros((batch, length, books), dtype=torch.long)
        text_mask, codec_embed_mask, codec_mask = (torch.zeros((batch, length), dtype=torch.bool) for _ in range(3))
        attention = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), -100, dtype=torch.long)
        for i, (text, frames) in enumerate(zip(texts, codes)):
            n, t = len(text), len(frames)
            audio = slice(PREFIX + n - 1, PREFIX + n - 1 + t)
            end = PREFIX + n - 1 + t
            input_ids[i, :3, 0] = torch.tensor(text[:3])
            input_ids[i, 3:7, 0] = cfg["tts_pad_token_id"]
            input_ids[i, 7, 0] = cfg["tts_bos_token_id"]
            input_ids[i, PREFIX: PREFIX + n - 3, 0] = torch.tensor(text[3:])
            input_ids[i, PREFIX + n - 3, 0] = cfg["tts_eos_token_id"]
            input_ids[i, PREFIX + n - 2: end + 1, 0] = cfg["tts_pad_token_id"]
            input_ids[i, 3:8, 1] = torch.tensor([talker["codec_nothink_id"], talker["codec_think_bos_id"],
                                                 talker["codec_think_eos_id"], 0, talker["codec_pad_id"]])
            input_ids[i, PREFIX: PREFIX + n - 2, 1] = talker["codec_pad_id"]
            input_ids[i, PREFIX + n - 2, 1] = talker["codec_bos_id"]
            input_ids[i, audio, 1] = torch.from_numpy(frames[:, 0])
            input_ids[i, end, 1] = talker["codec_eos_token_id"]
            labels[i, audio] = torch.from_numpy(frames[:, 0])
            labels[i, end] = talker["codec_eos_token_id"]
            codec_ids[i, audio] = torch.from_numpy(frames)
            text_mask[i, : end + 1] = True
            codec_embed_mask[i, 3: end + 1] = True
            codec_embed_mask[i, SPEAKER_SLOT] = False
            codec_mask[i, audio] = True
            attention[i, : end + 1] = 1
        sub_mask = codec_mask.clone()
        if depth_frames < 1.0 and rng is not None:
            for i, frames in enumerate(codes):
                positions = codec_mask[i].nonzero().squeeze(1)
                skip = rng.permutation(len(positions))[: int(len(positions) * (1 - depth_frames))]
                sub_mask[i, positions[skip]] = False
        return {"input_ids": input_ids, "codec_ids": codec_ids, "text_mask": text_mask,
                "codec_embed_mask": codec_embed_mask, "codec_mask": codec_mask, "sub_mask": sub_mask,
                "attention_mask": attention, "labels": labels,
                "speaker_embeddings": self.speaker_embeddings(rows, rng),
                "code_lengths": torch.tensor([len(c) for c in codes]),
                "token_lengths": torch.tensor([len(t) for t in texts])}

    # ------------------------------------------------------------------------------- forward

    def embed(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed channels [B, L, hidden]: projected text embeddings, codec embeddings with the
        speaker embedding in its slot, and codebooks 1..K-1's embeddings at the frames."""
        talker = model.talker
        ids = batch["input_ids"]
        text = talker.text_projection(talker.model.text_embedding(ids[..., 0])) * batch["text_mask"][..., None]
        codec = talker.model.codec_embedding(ids[..., 1]) * batch["codec_embed_mask"][..., None]
        slot = torch.zeros_like(codec)
        slot[:, SPEAKER_SLOT] = batch["speaker_embeddings"].to(codec.dtype)
        embeds = text + codec + slot
        tables = talker.code_predictor.get_input_embeddings()
        frames = batch["codec_mask"][..., None]
        for k in range(1, batch["codec_ids"].shape[-1]):
            embeds = embeds + tables[k - 1](batch["codec_ids"][..., k]) * frames
        return embeds

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The talker's forward with codebook-0 labels, then the code predictor on the frames of
        ``sub_mask`` from the talker's last hidden state one position before each frame; per
        codebook logits and targets in the talker family's form, each shifted once."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        talker = base.talker
        labels = batch["labels"]
        out = talker(inputs_embeds=self.embed(base, batch), attention_mask=batch["attention_mask"], labels=labels,
                     output_hidden_states=True)
        hidden = out.hidden_states[0][-1][:, :-1]
        sub = batch["sub_mask"]
        frames = batch["codec_ids"][sub]                                   # [N, K]
        sub_logits, sub_loss = talker.forward_sub_talker_finetune(frames, hidden[sub[:, 1:]])
        first = labels[:, 1:]
        keep = first != -100
        codebooks = [(out.logits[:, :-1][keep], first[keep], None)]
        for k in range(1, frames.shape[-1]):
            codebooks.append((sub_logits[:, k - 1], frames[:, k], None))
        empty = out.logits.new_zeros((0, 1))
        return {"codebooks": codebooks, "text": (empty, torch.zeros(0, dtype=torch.long, device=empty.device), None),
                "upstream_loss": out.loss + 0.3 * sub_loss, "upstream_sub_loss": sub_loss}

    # ------------------------------------------------------------------------------- export

    def speaker_rows(self, speakers: list[str]) -> dict[str, int]:
        """Codec-embedding rows for ``speakers`` (lower-cased: qwen_tts looks names up so) from
        vocab_size - 72 on (3000 in the real models, as Qwen's recipe writes)."""
        first = int(self.talker_config["vocab_size"]) - 72
        taken = set((self.talker_config.get("spk_id") or {}).values())
        rows, row = {}, first
        for name in speakers:
            while row in taken:
                row += 1
            rows[name.lower()] = row
            row += 1
        return rows

    def save(self, model: nn.Module, folder: str, speakers: list[str], store: str) -> None:
        """Qwen's custom-voice export (module docstring), each speaker's embedding that of its
        reference recording in the store (``reference_audio``)."""
        from safetensors.torch import save_file

        for name in os.listdir(self.folder):
            source = os.path.join(self.folder, name)
            if name == "config.json" or name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
                continue
            (shutil.copytree if os.path.isdir(source) else shutil.copyfile)(source, os.path.join(folder, name))
        rows = self.speaker_rows(speakers)
        config = json.loads(json.dumps(self.config))
        config["tts_model_type"] = "custom_voice"
        talker = config["talker_config"]
        talker["spk_id"] = {**(talker.get("spk_id") or {}), **rows}
        talker["spk_is_dialect"] = {**(talker.get("spk_is_dialect") or {}), **{name: False for name in rows}}
        with open(os.path.join(folder, "config.json"), "w") as handle:
            json.dump(config, handle, indent=2, ensure_ascii=False)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                 if not k.startswith("speaker_encoder.")}
        table = state["talker.model.codec_embedding.weight"]
        encoder = speaker_encoder(self.folder)
        for name, (audio, rate) in reference_audio(store, speakers).items():
            table[rows[name.lower()]] = embed_speaker(encoder, audio, rate).to(table.dtype)
        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})

    @torch.no_grad()
    def generate(self, model: nn.Module, text: str, speaker: tuple[int, str], max_frames: int,
                 temperature: float = 0.9, top_k: int = 50) -> np.ndarray:
        """Codes [T, K] for ``text`` as the export's custom speaker (``speaker``: index, name; by
        name), through qwen_tts's own ``generate``."""
        speaker = speaker[1]
        turn = f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"
        ids = self.tokenizer(turn, add_special_tokens=False, return_tensors="pt")["input_ids"]
        device = next(model.parameters()).device
        sample = temperature > 0
        codes, _ = model.generate(input_ids=[ids.to(device)], languages=["auto"], speakers=[speaker.lower()],
                                  non_streaming_mode=True, max_new_tokens=max_frames, do_sample=sample,
                                  temperature=temperature or 1.0, top_k=top_k, subtalker_dosample=sample,
                                  subtalker_temperature=temperature or 1.0, subtalker_top_k=top_k)
        return codes[0].cpu().numpy()


@functools.lru_cache(maxsize=2)
def speaker_encoder(folder: str) -> nn.Module:
    """The model's speaker encoder alone, frozen, on CPU (its weights read from the folder's
    safetensors under ``speaker_encoder.``)."""
    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSSpeakerEncoder
    from safetensors import safe_open

    config = Qwen3TTSConfig.from_pretrained(folder)
    encoder = Qwen3TTSSpeakerEncoder(config.speaker_encoder_config)
    state = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(folder, name), framework="pt") as handle:
                state.update({key[len("speaker_encoder."):]: handle.get_tensor(key) for key in handle.keys()
                              if key.startswith("speaker_encoder.")})
    if not state:
        raise ValueError(f"{folder}: no speaker encoder weights (a Base model has them; a CustomVoice one does not)")
    encoder.load_state_dict(state)
    return encoder.float().eval().requires_grad_(False)


@torch.no_grad()
def embed_speaker(encoder: nn.Module, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
    """[hidden] the speaker encoder's embedding of a recording (resampled to 24 kHz; its 128-band
    mel as qwen_tts computes it)."""
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    audio = dsp.resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
    mels = mel_spectrogram(torch.from_numpy(audio)[None], n_fft=1024, num_mels=128, sampling_rate=SAMPLE_RATE,
                           hop_size=256, win_size=1024, fmin=0, fmax=12000).transpose(1, 2)
    return encoder(mels)[0]


def reference_audio(store: str, speakers: list[str]) -> dict[str, tuple[np.ndarray, int]]:
    """Each speaker's reference recording in the store's train split: the ``ref_audio`` its rows
    name when that is a row of the split, else its first utterance."""
    from voxray.data.store import arrow_rows, read_split

    rows = list(arrow_rows(read_split(store, "train", ["id", "source", "speaker_index", "ref_audio", "audio",
                                                       "sample_rate", "augmented"])))
    rows = [row for row in rows if not row.get("augmented") and row.get("audio") is not None]
    by_source = {row["source"]: row for row in rows}
    chosen = {}
    for index, name in enumerate(speakers):
        own = [row for row in rows if int(row["speaker_index"]) == index]
        if not own:
            continue
        named = [by_source[row["ref_audio"]] for row in own if row.get("ref_audio") in by_source]
        ref = (named or own)[0]
        chosen[name] = (np.asarray(ref["audio"], dtype=np.float32), int(ref["sample_rate"]))
    return chosen
