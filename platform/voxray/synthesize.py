"""Text -> phonemes -> mel -> waveform with an exported acoustic model (``RUN_URI/final``) and,
when given, an exported vocoder (``VOCODER_RUN/final``); Griffin-Lim turns the mel into audio
without one. A talker export goes text -> phonemes -> codes -> its codec -> (vocoder) waveform. The text goes through the same
normalisation and G2P as the feature store did for that language.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import soundfile
import torch
from safetensors.torch import load

from voxray import codeswitch, uri
from voxray.audio import AudioSpec
from voxray.cleaning import Rejected, clean
from voxray.dsp import griffin_lim, log_mel, resample
from voxray.export import TRANSFORMERS, FinalModel, read_final
from voxray.models import talker
from voxray.models.adapters import grow_and_adapt, load_adapter_state, merge_lora
from voxray.models.acoustic import fastspeech2
from voxray.models.vocoder import build_generator
from voxray.text import G2P, Vocabulary, normalize_text

SIZES = ("vocab_size", "n_speakers", "n_languages")          # what an adapter may grow
ADAPTER_MAY_CHANGE = SIZES + ("language_head", "particle_head")   # heads train (or not) per fine-tune


class SynthesisError(ValueError):
    """The request cannot be spoken by this model; the message says what to change."""


@dataclass
class Voice:
    model: fastspeech2.FastSpeech2
    final: FinalModel


@dataclass
class Vocoder:
    generator: torch.nn.Module
    final: FinalModel

    @torch.no_grad()
    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log-mel [frames, n_mels] -> waveform [frames * hop]."""
        return self.generator(log_mel.float().T[None])[0, 0]


def _read(final_uri: str, family: str) -> FinalModel:
    try:
        return read_final(final_uri, family=family)
    except ValueError as exc:
        raise SynthesisError(str(exc)) from None


def load_voice(final_uri: str, adapter: Optional[str] = None) -> Voice:
    """An acoustic export (with an adapter-only export on top when ``adapter`` is given)."""
    final = _read(final_uri, "acoustic")
    model = fastspeech2.build(**final.manifest["build"])
    model.load_state_dict(final.weights)
    if adapter:
        final, model = _with_adapter(final, model, adapter)
    return Voice(model.eval(), final)


def load_vocoder(final_uri: str, spec: Optional[AudioSpec] = None) -> Vocoder:
    """A vocoder export; with ``spec`` (the acoustic model's), an error unless the vocoder's
    AudioSpec is the same, naming the values that differ."""
    final = _read(final_uri, "vocoder")
    if spec is not None and final.audio_spec != spec:
        theirs, ours = final.audio_spec.model_dump(), spec.model_dump()
        differ = ", ".join(f"audio.{k}: acoustic model {ours[k]}, vocoder {theirs[k]}" for k in ours if ours[k] != theirs[k])
        raise SynthesisError(f"the vocoder {final_uri} does not fit the acoustic model's mels ({differ})")
    generator = build_generator(final.manifest["build"])
    generator.load_state_dict(final.weights)
    return Vocoder(generator.eval(), final)


@dataclass
class TalkerVoice:
    model: talker.Talker | torch.nn.Module
    final: FinalModel
    codec: Any                              # decodes the talker's codes (voxray.codec.Codec)
    pretrained: Any = None                  # a pretrained talker's architecture (models/pretrained), else None


def _with_adapter(final: FinalModel, model: torch.nn.Module, adapter: str) -> tuple[FinalModel, torch.nn.Module]:
    """The base model (acoustic or talker) with an adapter-only export (``RUN/final/adapter``) on
    top: embeddings grown to the adapter's label sets, adapters loaded and merged; the labels (and
    a code-switched store's front end) are the adapter's."""
    path = uri.join(adapter, "adapter.json")
    if not uri.exists(path):
        raise SynthesisError(f"{adapter} is not an adapter export (no adapter.json); train with "
                             "finetune.export=adapter")
    saved = json.loads(uri.read_text(path))
    kept = lambda build: {k: v for k, v in build.items() if k not in ADAPTER_MAY_CHANGE}  # noqa: E731
    if saved.get("family") != final.family or kept(saved["build"]) != kept(final.manifest["build"]) or \
            (final.family == "talker" and saved["codec"]["n_codebooks"] != final.manifest["codec"]["n_codebooks"]):
        raise SynthesisError(f"the adapter {adapter} was trained on another base {final.family} model "
                             f"({saved.get('init_from')})")
    lora = SimpleNamespace(**saved["lora"])
    model = grow_and_adapt(model, {key: saved["build"][key] for key in SIZES}, lora, saved["targets"], saved["added"],
                           saved.get("modules_to_save"))
    try:
        load_adapter_state(model, load(uri.read_bytes(uri.join(adapter, "adapter.safetensors"))))
    except ValueError as exc:
        raise SynthesisError(f"{adapter}: {exc}") from None
    labels = ("build", "speakers", "languages", "g2p") + (("frames_per_token",) if final.family == "talker" else ())
    manifest = {**final.manifest, **{key: saved[key] for key in labels}}
    stats = {**(final.stats or {}), "code_switch": saved["code_switch"]} if saved.get("code_switch") else final.stats
    return (dataclasses.replace(final, manifest=manifest, vocabulary=Vocabulary(saved["vocabulary"]), stats=stats),
            merge_lora(model))


def load_talker(final_uri: str, codec: Optional[str] = None, adapter: Optional[str] = None) -> TalkerVoice:
    """A talker export (with an adapter-only export on top when ``adapter`` is given) and the
    codec its codes decode with: ``codec`` (a codec folder, e.g. a plugin wrapping the decoder of
    precomputed codes), else the voxray codec the export records."""
    from voxray.codec import PrecomputedCodec, load_codec

    final = _read(final_uri, "talker")
    architecture = None
    if final.manifest.get("format") == TRANSFORMERS:
        from voxray.models.pretrained.training import load_export

        if adapter:
            raise SynthesisError(f"{final_uri} is a pretrained talker's export: its adapter export is "
                                 "RUN/final itself (finetune.export=adapter), give it as --model")
        try:
            architecture, model = load_export(final_uri, final.manifest)
        except (FileNotFoundError, ValueError) as exc:
            raise SynthesisError(str(exc)) from None
    else:
        model = talker.build(**final.manifest["build"])
        model.load_state_dict(final.weights)
    if adapter:
        final, model = _with_adapter(final, model, adapter)
    described = final.manifest["codec"]
    folder = codec or described.get("codec")
    try:
        decoder = load_codec(folder) if folder else PrecomputedCodec(described)
    except (FileNotFoundError, ValueError) as exc:
        raise SynthesisError(f"the talker's codec: {exc}") from None
    made = {key: decoder.description.get(key) for key in ("n_codebooks", "codebook_size")}
    if made != {key: described[key] for key in made}:
        raise SynthesisError(f"the codec {folder} makes {made} codes; the talker speaks "
                             f"{ {key: described[key] for key in made} }")
    return TalkerVoice(model.eval(), final, decoder, architecture)


def _pick(kind: str, name: Optional[str], known: list[str]) -> int:
    if name is None:
        return 0
    if name not in known:
        raise SynthesisError(f"unknown {kind} {name!r}; this model knows: {', '.join(known)}")
    return known.index(name)


@dataclass(frozen=True)
class Tokens:
    ids: list[int]
    languages: list[int]         # the model's language index of each token
    particles: list[int]         # particle type of each token (0: none)


def tagged_tokens(voice: Voice | TalkerVoice, text: str, language: str) -> Tokens:
    """The text's tokens as the model's store made them: normalisation + G2P of ``language``, or,
    for a model trained on a code-switched store (``preprocess.code_switch``), each word's
    language detected and the word phonemised in it, with particle types."""
    normalized = normalize_text(text)
    if not normalized:
        raise SynthesisError("the text is empty after normalisation")
    manifest = voice.final.manifest
    mode = manifest["g2p"].get(language, "char")
    if mode == "textgrid":
        raise SynthesisError(f"this model learned {language!r} from MFA TextGrid phones; it has no "
                             "text front end for that language")
    switch = (voice.final.stats or {}).get("code_switch") or {}
    if switch.get("languages"):
        words = codeswitch.CodeSwitch(tuple(switch["languages"]), tuple(switch["particles"]),
                                      switch["margin"]).tag(normalized, language)
        strange = sorted({w.language for w in words} - set(manifest["languages"]))
        if strange:
            raise SynthesisError(f"words of {normalized!r} are in {strange}, which this model never learned "
                                 f"(it knows {', '.join(manifest['languages'])})")
        tagged = codeswitch.phonemize(normalized, words, language, G2P(mode))
    else:
        phonemes = G2P(mode)(normalized, language)
        tagged = codeswitch.Tagged.monolingual(phonemes, language)
    unknown = voice.final.vocabulary.unknown(tagged.tokens)
    if unknown:
        raise SynthesisError(f"the text has symbols this model never saw in training: {' '.join(unknown)} "
                             f"(from {language!r} G2P '{mode}' of {normalized!r})")
    return Tokens(voice.final.vocabulary.encode(tagged.tokens),
                  [manifest["languages"].index(name) for name in tagged.languages], tagged.particles)


def tokens_for(voice: Voice | TalkerVoice, text: str, language: str) -> list[int]:
    """The text's token ids (``tagged_tokens``)."""
    return tagged_tokens(voice, text, language).ids


@torch.no_grad()
def synthesize(voice: Voice, text: str, speaker: Optional[str] = None, language: Optional[str] = None,
               pace: float = 1.0, vocoder: Optional[Vocoder] = None,
               griffin_lim_iterations: int = 60) -> tuple[np.ndarray, torch.Tensor]:
    """(waveform float32 [samples], log-mel [frames, n_mels]): through ``vocoder``, else Griffin-Lim."""
    manifest = voice.final.manifest
    speaker_index = _pick("speaker", speaker, manifest["speakers"])
    language_index = _pick("language", language, manifest["languages"])
    language_name = manifest["languages"][language_index]
    tagged = tagged_tokens(voice, text, language_name)
    mel, lengths = voice.model.infer(torch.tensor([tagged.ids]), torch.tensor([len(tagged.ids)]),
                                     torch.tensor([speaker_index]), torch.tensor([language_index]), pace=pace,
                                     token_languages=torch.tensor([tagged.languages]),
                                     token_particles=torch.tensor([tagged.particles]))
    log_mel = mel[0, : int(lengths[0])]
    if vocoder is not None:
        audio = vocoder(log_mel)
    else:
        audio = griffin_lim(log_mel, voice.final.audio_spec, iterations=griffin_lim_iterations)
    return audio.numpy().astype(np.float32), log_mel


def reference_recording(path: str, voice: TalkerVoice) -> tuple[np.ndarray, torch.Tensor]:
    """A reference recording cleaned as the training config's preprocess section says (resampled,
    loudness-normalised, trimmed): (waveform, log-mel [frames, n_mels])."""
    spec, pre = voice.final.audio_spec, voice.final.config.preprocess
    try:
        cleaned = clean(uri.read_bytes(path), sample_rate=spec.sample_rate, loudness_lufs=pre.loudness_lufs,
                        max_peak=pre.max_peak, silence_peak_dbfs=pre.silence_peak_dbfs, trim_top_db=pre.trim_top_db,
                        min_seconds=min(pre.min_seconds, 0.2), max_seconds=max(pre.max_seconds, 60.0),
                        hop_length=spec.hop_length)
    except FileNotFoundError:
        raise SynthesisError(f"the reference recording {path} does not exist") from None
    except Rejected as exc:
        raise SynthesisError(f"the reference recording {path} cannot be used: {exc}") from None
    waveform = cleaned.waveform.astype(np.float32)
    return waveform, log_mel(torch.from_numpy(waveform), spec).T


def _voice_inputs(voice: TalkerVoice, ids: list[int], language: str, ref_audio: Optional[str],
                  ref_text: Optional[str]) -> tuple[list[int], dict[str, Any]]:
    """The token ids and the generate() arguments that carry the voice, per the talker's way."""
    conditioning = voice.model.conditioning
    if conditioning == "table":
        if ref_audio:
            raise SynthesisError("this talker knows its speakers by id (model.conditioning=table): use --speaker")
        return ids, {}
    if not ref_audio:
        raise SynthesisError(f"this talker takes its voice from a reference recording "
                             f"(model.conditioning={conditioning}): give --ref-audio"
                             + (" and --ref-text" if conditioning == "prompt" else ""))
    waveform, mel = reference_recording(ref_audio, voice)
    limit = voice.final.config.model.reference_frames
    if conditioning == "reference":
        return ids, {"reference": mel[:limit]}
    if not ref_text:
        raise SynthesisError("in-context prompting needs the reference's words: give --ref-text")
    try:
        prompt = voice.codec.encode({"mel": mel.numpy(), "audio": waveform,
                                     "sample_rate": voice.final.audio_spec.sample_rate})
    except ValueError as exc:
        raise SynthesisError(f"the reference recording cannot be encoded: {exc}") from None
    return tokens_for(voice, ref_text, language) + ids, {"prompt": torch.from_numpy(np.asarray(prompt))[:limit].long()}


@torch.no_grad()
def speak(voice: TalkerVoice, text: str, speaker: Optional[str] = None, language: Optional[str] = None,
          vocoder: Optional[Vocoder] = None, *, ref_audio: Optional[str] = None, ref_text: Optional[str] = None,
          temperature: float = 0.8, top_k: int = 50, top_p: float = 0.95, max_length_factor: float = 3.0,
          seed: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(waveform, codes [T, K], whether it ended with the end of speech) from a talker: codes
    sampled with a KV cache, at most ``max_length_factor`` x the training data's code frames per
    text token (+ 10), decoded by the talker's codec (through ``vocoder`` when it gives a mel).
    The voice: ``speaker`` (a talker with a speaker table), or ``ref_audio`` (and ``ref_text``
    for in-context prompting)."""
    manifest = voice.final.manifest
    speaker_index = _pick("speaker", speaker, manifest["speakers"])
    language_index = _pick("language", language, manifest["languages"])
    language_name = manifest["languages"][language_index]
    per_token = manifest.get("frames_per_token") or 4.0
    if voice.pretrained is not None:
        codes, ended = _speak_pretrained(voice, text, speaker_index, per_token * max_length_factor, ref_audio,
                                         temperature=temperature, top_k=top_k, seed=seed)
    else:
        ids = tokens_for(voice, text, language_name)
        max_frames = int(math.ceil(max_length_factor * per_token * len(ids))) + 10
        ids, voice_args = _voice_inputs(voice, ids, language_name, ref_audio, ref_text)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        codes, ended = voice.model.generate(torch.tensor(ids), speaker_index, language_index, max_frames=max_frames,
                                            temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                                            **voice_args)
    if len(codes) == 0:
        raise SynthesisError("the talker ended the utterance before its first code frame")
    codes = codes.numpy().astype(np.int32)
    try:
        audio = codes_to_audio(voice.codec, codes, vocoder, voice.final.audio_spec)
    except ValueError as exc:
        raise SynthesisError(str(exc)) from None
    return audio, codes, ended


def _speak_pretrained(voice: TalkerVoice, text: str, speaker_index: int, frames_per_token: float,
                      ref_audio: Optional[str], *, temperature: float, top_k: int,
                      seed: Optional[int]) -> tuple[torch.Tensor, bool]:
    """Codes from a pretrained talker's own ``generate``: its tokenizer and chat template, the
    speaker as the architecture knows it (CSM: the store's speaker i as ``[i]``; Qwen3-TTS: the
    export's custom speaker by name)."""
    if ref_audio:
        raise SynthesisError("this pretrained talker knows its speakers by id: use --speaker")
    arch = voice.pretrained
    if not text.strip():
        raise SynthesisError("the text is empty")
    tokens = len(arch.tokenizer(text, add_special_tokens=False)["input_ids"])
    if seed is not None:
        torch.manual_seed(seed)
    max_frames = int(math.ceil(frames_per_token * tokens)) + 10
    name = voice.final.manifest["speakers"][speaker_index]
    codes = arch.generate(voice.model, text, (speaker_index, name), max_frames, temperature=temperature, top_k=top_k)
    return torch.from_numpy(codes), len(codes) < max_frames


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sample_rate, subtype="PCM_16", format="WAV")
    uri.write_bytes(path, buffer.getvalue())


def codes_to_audio(codec, codes: np.ndarray, vocoder: Optional[Vocoder] = None, spec: Optional[AudioSpec] = None,
                   frames: Optional[int] = None) -> np.ndarray:
    """Codes [T, n_codebooks] -> waveform: the codec's own waveform, or its mel (cropped to
    ``frames``) through ``vocoder``, else Griffin-Lim with ``spec``."""
    decoded = codec.decode(codes)
    if decoded.audio is not None:
        audio = np.asarray(decoded.audio, dtype=np.float32)
        if decoded.sample_rate and spec is not None and decoded.sample_rate != spec.sample_rate:
            audio = resample(audio, decoded.sample_rate, spec.sample_rate)      # the codec's own rate -> the store's
        return audio
    mel = torch.from_numpy(np.asarray(decoded.mel, dtype=np.float32))[:frames]
    if vocoder is not None:
        return vocoder(mel).numpy().astype(np.float32)
    if spec is None:
        raise SynthesisError("Griffin-Lim needs the codec's AudioSpec")
    return griffin_lim(mel, spec, iterations=60).numpy().astype(np.float32)
