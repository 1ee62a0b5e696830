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
