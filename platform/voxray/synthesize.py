"""Text -> phonemes -> mel -> waveform with an exported acoustic model (``RUN_URI/final``).

Griffin-Lim turns the mel into audio until a vocoder is trained. The text goes through the same
normalisation and G2P as the feature store did for that language.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
import soundfile
import torch

from voxray import uri
from voxray.dsp import griffin_lim
from voxray.export import FinalModel, read_final
from voxray.models.acoustic import fastspeech2
from voxray.text import G2P, normalize_text


class SynthesisError(ValueError):
    """The request cannot be spoken by this model; the message says what to change."""


@dataclass
class Voice:
    model: fastspeech2.FastSpeech2
    final: FinalModel


def load_voice(final_uri: str) -> Voice:
    final = read_final(final_uri)
    if final.manifest.get("family") != "acoustic":
        raise SynthesisError(f"{final_uri} holds a {final.manifest.get('family')!r} model, not an acoustic model")
    build_args = dict(final.manifest["build"])
    model = fastspeech2.build(**build_args)
    model.load_state_dict(final.weights)
    return Voice(model.eval(), final)


def _pick(kind: str, name: Optional[str], known: list[str]) -> int:
    if name is None:
        return 0
    if name not in known:
        raise SynthesisError(f"unknown {kind} {name!r}; this model knows: {', '.join(known)}")
    return known.index(name)


def tokens_for(voice: Voice, text: str, language: str) -> list[int]:
    normalized = normalize_text(text)
    if not normalized:
        raise SynthesisError("the text is empty after normalisation")
    mode = voice.final.manifest["g2p"].get(language, "char")
    if mode == "textgrid":
        raise SynthesisError(f"this model learned {language!r} from MFA TextGrid phones; it has no "
                             "text front end for that language")
    phonemes = G2P(mode)(normalized, language)
    unknown = voice.final.vocabulary.unknown(phonemes)
    if unknown:
        raise SynthesisError(f"the text has symbols this model never saw in training: {' '.join(unknown)} "
                             f"(from {language!r} G2P '{mode}' of {normalized!r})")
    return voice.final.vocabulary.encode(phonemes)


@torch.no_grad()
def synthesize(voice: Voice, text: str, speaker: Optional[str] = None, language: Optional[str] = None,
               pace: float = 1.0, griffin_lim_iterations: int = 60) -> tuple[np.ndarray, torch.Tensor]:
    """(waveform float32 [samples], log-mel [frames, n_mels])."""
    manifest = voice.final.manifest
    speaker_index = _pick("speaker", speaker, manifest["speakers"])
    language_index = _pick("language", language, manifest["languages"])
    language_name = manifest["languages"][language_index]
    ids = tokens_for(voice, text, language_name)
    tokens = torch.tensor([ids])
    mel, lengths = voice.model.infer(tokens, torch.tensor([len(ids)]), torch.tensor([speaker_index]),
                                     torch.tensor([language_index]), pace=pace)
    log_mel = mel[0, : int(lengths[0])]
    audio = griffin_lim(log_mel, voice.final.audio_spec, iterations=griffin_lim_iterations)
    return audio.numpy().astype(np.float32), log_mel


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sample_rate, subtype="PCM_16", format="WAV")
    uri.write_bytes(path, buffer.getvalue())
