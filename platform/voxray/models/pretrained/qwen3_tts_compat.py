"""``qwen_tts`` (Qwen3-TTS's package) on the transformers voxray pins.

voxray installs ``qwen-tts-hf`` (the transformers-5 build of Qwen's ``qwen-tts``, the same
``qwen_tts`` module; ``qwen-tts`` itself pins transformers 4.57.3, which would take CSM, Mimi and
peft's transformers-5 code paths away from every other family). Its 0.1.1.post1 was built for
transformers 5.15 and two things moved in 5.23; ``import_qwen_tts`` adapts both before and after
importing it, without touching its modeling code:

1. its compatibility layer registers a ``"default"`` RoPE initializer (removed from transformers'
   registry in 5.x) that reads ``config.rope_theta``; 5.23's configs (Mimi's among them) keep it in
   ``config.rope_parameters``. voxray registers the initializer first, reading either (the
   package only ``setdefault``s its own), so building or loading any Mimi in the same process
   keeps working;
2. its 12 Hz tokenizer's encoder subclasses ``MimiModel`` and sets ``upsample``,
   ``decoder_transformer`` to None (it keeps only Mimi's encoder); in 5.23 those are read-only
   properties of ``MimiModel``. voxray shadows them with plain class attributes on the subclass;
3. its talker and code predictor declare ``_tied_weights_keys`` as a list (transformers 4's form:
   ``["lm_head.weight"]``); 5.23 reads a {target: source} dict and fails on save and load. Neither
   ties anything (``tie_word_embeddings`` is false and the talker's head is ``codec_head``), so
   voxray declares the empty dict.

``tests/codec/test_pretrained_codecs.py`` builds, saves, loads, encodes and decodes the tokenizer
with these; remove a shim when the package no longer needs it (the tests say when).
"""

from __future__ import annotations

from types import ModuleType

import torch

_READY = False


def default_rope_parameters(config, device=None, seq_len=None, layer_type=None) -> tuple[torch.Tensor, float]:
    """Unscaled RoPE inverse frequencies, from ``config.rope_parameters`` (transformers 5.23) or
    the older ``config.rope_theta`` / ``partial_rotary_factor`` attributes."""
    del seq_len, layer_type
    parameters = getattr(config, "rope_parameters", None) or {}
    base = parameters.get("rope_theta", getattr(config, "rope_theta", None))
    factor = parameters.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * factor)
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
    return 1.0 / (base ** exponents), 1.0


def import_qwen_tts() -> ModuleType:
    """The ``qwen_tts`` package, adapted to the pinned transformers; an ImportError saying how to
    install it when it is missing."""
    global _READY
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    ROPE_INIT_FUNCTIONS.setdefault("default", default_rope_parameters)
    try:
        import qwen_tts
        from qwen_tts.core.tokenizer_12hz import modeling_qwen3_tts_tokenizer_v2 as tokenizer_12hz
    except ImportError as exc:
        raise ImportError(f"Qwen3-TTS needs the qwen_tts package ({exc}): scripts/setup.sh installs qwen-tts-hf "
                          "(pip install --no-deps qwen-tts-hf sox, versions in constraints.txt)") from None
    if not _READY:
        for name in ("upsample", "decoder_transformer"):
            setattr(tokenizer_12hz.Qwen3TTSTokenizerV2Encoder, name, None)
        from qwen_tts.core.models import modeling_qwen3_tts as talker

        for cls in (talker.Qwen3TTSTalkerForConditionalGeneration,
                    talker.Qwen3TTSTalkerCodePredictorModelForConditionalGeneration):
            if isinstance(cls._tied_weights_keys, list):
                cls._tied_weights_keys = {}
        _READY = True
    return qwen_tts
