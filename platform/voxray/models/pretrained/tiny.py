"""Tiny random models of the real pretrained classes, in their published folder layout, for the
tests and the CPU benchmarks (nothing can be downloaded here): each built from its own config class
with small sizes and written with ``save_pretrained``, with a small text tokenizer trained with
the ``tokenizers`` library on the given lines. The loading code is the one users' real folders go
through; only the sizes differ.

    csm_folder(folder, lines)   Sesame CSM: CsmForConditionalGeneration (with its Mimi codec),
                                its processor (tokenizer, feature extractor, chat template)
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

# Sesame's chat template for csm-1b, as transformers' conversion script writes it: a turn is
# <bos>[speaker]text<eos>, then <|AUDIO|> (one per code frame) and <|audio_eos|> when it has audio.
CSM_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- bos_token }}{{- '[' + message['role'] + ']' }}{{- message['content'][0]['text'] }}{{- eos_token }}"
    "{%- if message['content']|length > 1 %}{{- '<|AUDIO|><|audio_eos|>' }}{%- endif %}"
    "{%- endfor %}")
CSM_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>", "<|pad|>"]
MIMI_TINY = dict(hidden_size=32, num_filters=4, codebook_size=64, codebook_dim=16,
                 vector_quantization_hidden_dimension=16, num_hidden_layers=1, intermediate_size=32,
                 num_attention_heads=2, num_key_value_heads=2, head_dim=16, upsample_groups=32)


def text_tokenizer(lines: Iterable[str], special: list[str], vocab_size: int = 300, **names: str):
    """A byte-level BPE (the Llama 3 tokenizer's kind) trained on ``lines``, as transformers'
    ``PreTrainedTokenizerFast`` with ``special`` tokens first and ``names`` (bos_token=...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(list(lines), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **names)


def csm_folder(folder: str, lines: Iterable[str], n_codebooks: int = 4, seed: int = 0,
               mimi_folder: Optional[str] = None) -> str:
    """A tiny Sesame CSM in ``folder`` (config.json, model.safetensors, generation_config.json,
    tokenizer and processor files, chat template): backbone 2 layers x 64, depth decoder 1 x 32, a
    Mimi of ``n_codebooks`` x 64 codes at 12.5 Hz, 24 kHz, also written alone to ``mimi_folder``
    (the codec a store is encoded with, as kyutai/mimi is csm-1b's). Returns the folder."""
    import torch
    from transformers import (CsmConfig, CsmForConditionalGeneration, CsmProcessor, EncodecFeatureExtractor,
                              MimiConfig)

    tokenizer = text_tokenizer(lines, CSM_SPECIAL, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                               pad_token="<|pad|>")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in CSM_SPECIAL}
    codes = MIMI_TINY["codebook_size"]
    config = CsmConfig(
        num_codebooks=n_codebooks, vocab_size=codes + 3, codebook_pad_token_id=codes + 2, codebook_eos_token_id=0,
        text_vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=ids["<|begin_of_text|>"], pad_token_id=ids["<|pad|>"], audio_token_id=ids["<|AUDIO|>"],
        audio_eos_token_id=ids["<|audio_eos|>"],
        depth_decoder_config=dict(num_codebooks=n_codebooks, backbone_hidden_size=64, vocab_size=codes + 3,
                                  hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  num_key_value_heads=1, max_position_embeddings=n_codebooks + 1),
        codec_config=MimiConfig(num_quantizers=n_codebooks, **MIMI_TINY).to_dict())
    torch.manual_seed(seed)
    model = CsmForConditionalGeneration(config)
    model.generation_config.max_new_tokens = 64
    model.save_pretrained(folder)
    if mimi_folder:
        model.codec_model.save_pretrained(mimi_folder)
    processor = CsmProcessor(tokenizer=tokenizer, chat_template=CSM_CHAT_TEMPLATE,
                             feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=24000))
    processor.save_pretrained(folder)
    return os.path.abspath(folder)


# Qwen3-TTS's text tokenizer's special tokens (Qwen2's chat markers and the TTS channel's pad/bos/eos)
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|tts_pad|>", "<|tts_text_bos|>",
                "<|tts_text_eod|>"]


def qwen_tokenizer_folder(folder: str, n_codebooks: int = 4, seed: int = 0) -> str:
    """A tiny Qwen3-TTS 12 Hz speech tokenizer (its Mimi-style encoder keeps ``n_codebooks`` of 8
    quantizers of 64 codes; 12.5 Hz, 24 kHz) with its feature extractor, in ``folder``."""
    import torch
    from transformers import EncodecFeatureExtractor

    from voxray.models.pretrained.qwen3_tts_compat import import_qwen_tts

    import_qwen_tts()
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model

    decoder = dict(codebook_size=64, codebook_dim=16, hidden_size=32, latent_dim=32, num_attention_heads=2,
                   num_key_value_heads=2, intermediate_size=32, num_hidden_layers=1, num_quantizers=n_codebooks,
                   decoder_dim=16, sliding_window=8)
    torch.manual_seed(seed)
    model = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(
        encoder_config={**MIMI_TINY, "num_quantizers": 8}, decoder_config=decoder,
        encoder_valid_num_quantizers=n_codebooks))
    with torch.no_grad():
        # its decoder's EMA codebooks start at zero (every code would decode to silence), and at these
        # sizes the random decoder's output is ~1e-9: make codes distinct and the output audible
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name.startswith("decoder.") and name.endswith("embedding_sum"):
                tensor.normal_()
        codes = torch.randint(0, 64, (1, 12, n_codebooks))                 # [batch, frames, codebooks]
        peak = float(model.decode(codes).audio_values[0].abs().max())
        last = [module for module in model.decoder.modules() if isinstance(module, torch.nn.Conv1d)][-1]
        last.weight.mul_(0.3 / max(peak, 1e-12))
    model.save_pretrained(folder)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0,
                            return_attention_mask=True).save_pretrained(folder)
    return os.path.abspath(folder)


def qwen3_tts_folder(folder: str, lines: Iterable[str], n_codebooks: int = 4, seed: int = 0) -> str:
    """A tiny Qwen3-TTS-12Hz Base model in ``folder`` as Qwen publishes it: config.json,
    model.safetensors (talker 2 x 64 with a 1 x 32 code predictor, speaker encoder), the Qwen2 text
    tokenizer and processor files, generation_config.json, and ``speech_tokenizer/`` (the tiny
    12 Hz tokenizer). The codec channel's layout is the real one scaled down: codes [0, 64), the
    last 1024 ids of the codec vocabulary special (pad, bos, end, think markers, languages), custom
    speakers at vocab_size - 72 (3000 in the real 3072)."""
    import json

    import torch
    from transformers import Qwen2TokenizerFast

    from voxray.models.pretrained.qwen3_tts_compat import import_qwen_tts

    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration, Qwen3TTSProcessor

    base = text_tokenizer(lines, QWEN_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer = Qwen2TokenizerFast(tokenizer_object=base._tokenizer, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None, bos_token=None)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL}
    codes, specials = 64, 64
    talker = dict(vocab_size=codes + 1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, text_hidden_size=32,
                  text_vocab_size=len(tokenizer), num_code_groups=n_codebooks, max_position_embeddings=1024,
                  rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "interleaved": True},
                  codec_pad_id=specials + 100, codec_bos_id=specials + 101, codec_eos_token_id=specials + 102,
                  codec_think_id=specials + 106, codec_nothink_id=specials + 107, codec_think_bos_id=specials + 108,
                  codec_think_eos_id=specials + 109,
                  codec_language_id={"english": specials + 50, "chinese": specials + 55},
                  spk_id={}, spk_is_dialect={},
                  code_predictor_config=dict(vocab_size=codes, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                             head_dim=16, num_code_groups=n_codebooks, max_position_embeddings=64))
    config = Qwen3TTSConfig(
        talker_config=talker, tokenizer_type="qwen3_tts_tokenizer_12hz", tts_model_size="tiny", tts_model_type="base",
        speaker_encoder_config=dict(mel_dim=128, enc_dim=64, enc_channels=[32, 32, 32, 32, 96],
                                    enc_attention_channels=16, enc_se_channels=16, sample_rate=24000),
        im_start_token_id=ids["<|im_start|>"], im_end_token_id=ids["<|im_end|>"],
        tts_pad_token_id=ids["<|tts_pad|>"], tts_bos_token_id=ids["<|tts_text_bos|>"],
        tts_eos_token_id=ids["<|tts_text_eod|>"])
    torch.manual_seed(seed)
    Qwen3TTSForConditionalGeneration(config).save_pretrained(folder)
    # config.json as Qwen publishes it (saved by transformers 4): transformers 5 writes a model_type
    # into the speaker encoder's sub-config, whose class takes none (it skips PretrainedConfig's
    # __init__), and moves the talker's rope_scaling (multimodal RoPE sections) into rope_parameters,
    # which qwen_tts's attention does not read
    path = os.path.join(folder, "config.json")
    with open(path) as handle:
        written = json.load(handle)
    written["speaker_encoder_config"].pop("model_type", None)
    for part in (written["talker_config"], written["talker_config"]["code_predictor_config"]):
        rope = part.pop("rope_parameters", None) or {}
        part["rope_theta"] = rope.get("rope_theta", 10000)
        if set(rope) - {"rope_theta", "rope_type"}:
            part["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    with open(path, "w") as handle:
        json.dump(written, handle, indent=1)
    Qwen3TTSProcessor(tokenizer=tokenizer).save_pretrained(folder)
    with open(os.path.join(folder, "generation_config.json"), "w") as handle:
        json.dump({"do_sample": True, "top_k": 50, "top_p": 1.0, "temperature": 0.9, "repetition_penalty": 1.05,
                   "subtalker_dosample": True, "subtalker_top_k": 50, "subtalker_top_p": 1.0,
                   "subtalker_temperature": 0.9, "max_new_tokens": 256}, handle, indent=1)
    qwen_tokenizer_folder(os.path.join(folder, "speech_tokenizer"), n_codebooks, seed)
    return os.path.abspath(folder)
