"""A user's own codec (a pretrained one whose weights they have on disk: EnCodec, DAC, Mimi,
Qwen3-TTS's tokenizer) as a class in a local Python file, named by a codec folder's codec.json:

    {"kind": "plugin", "file": "/models/qwen_tokenizer/voxray_codec.py", "class": "QwenCodec",
     "options": {"weights": "/models/qwen_tokenizer"}}

The class is built as ``Class(folder=CODEC_FOLDER, **options)`` and must have ``description``
(name, n_codebooks, codebook_size, frame_rate), ``encode(row)`` and ``decode(codes)``. voxray
loads it only from a local path and never downloads anything; the class must not either.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from voxray import uri
from voxray.codec.base import DESCRIPTION_KEYS


def load(folder: str, saved: dict[str, Any]):
    path = saved.get("file")
    if not path or uri.is_remote(path) or not os.path.isabs(path):
        raise ValueError(f"a codec plugin loads from an absolute local path, got {path!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"codec plugin file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"voxray_codec_plugin_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, saved.get("class", "")):
        raise ValueError(f"{path} has no class {saved.get('class')!r}")
    codec = getattr(module, saved["class"])(folder=folder, **saved.get("options", {}))
    missing = [k for k in DESCRIPTION_KEYS if k not in getattr(codec, "description", {})]
    if missing or not callable(getattr(codec, "encode", None)) or not callable(getattr(codec, "decode", None)):
        raise ValueError(f"{path}:{saved['class']} is not a codec: it needs description ({', '.join(missing) or 'ok'}),"
                         " encode(row) and decode(codes)")
    return codec
