"""Pretrained talkers and their codecs, used through the upstream packages' own classes: one file
per upstream architecture builds inputs and losses around the upstream class, never a copy of it.

    qwen3_tts_compat.py   what makes the Qwen3-TTS package (the transformers-5 build, qwen-tts-hf)
                          run on the transformers voxray pins
"""
