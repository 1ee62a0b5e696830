"""``voxray evaluate``: synthesise every utterance of a store's split and measure it against the
recording, with Ray Data batch inference (one model and listener load per actor).

What is synthesised depends on what is given:

  --model ACOUSTIC/final [--vocoder V/final]   text -> mel (predicted durations) -> vocoder
                                               (Griffin-Lim without one)
  --model TALKER/final [--vocoder V/final]     text -> codes -> the talker's codec (-> vocoder)
  --vocoder V/final | --vocoder griffin-lim    copy synthesis of the stored mel: the vocoder's own
                                               quality, time-aligned with the recording
  --audio DIR                                  any system's audio: DIR/<id>.wav for each row (another
                                               toolkit's output, a listening-test set), any rate

Per utterance (``utterances.parquet``) and averaged (``metrics.json``): the calibrated MCD, F0
RMSE (Hz, cents), gross pitch error and fine F0 RMSE, voicing error (see ``metrics``), duration
MAE (acoustic models), PESQ and STOI (copy synthesis), WER/CER of the recogniser on the synthesis
and on the recording, speaker similarity, and the predicted MOS (DNSMOS P.808) of the synthesis
and of the recording. ``metrics.json`` also holds each measure's verdict against the users'
targets (``targets``) and what does not mean much on this corpus. The audio lands in
``audio/<id>.wav`` and ``report.html`` shows it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from voxray import uri
from voxray.audio import AudioSpec
from voxray.data import store
from voxray.data.derive import actor_class, read_stats, split_dataset
from voxray.evaluate import metrics, particles, targets
from voxray.evaluate.listeners import MosPredictor, Recognisers, SpeakerEncoder

GRIFFIN_LIM = "griffin-lim"
COLUMNS = ["id", "speaker_id", "language", "text", "token_ids", "speaker_index", "language_index", "mel", "f0",
           "energy", "durations", "audio", "n_frames", "ref_audio", "ref_text"]
FLOAT_METRICS = ("mcd_db", "f0_rmse_hz", "f0_rmse_cents", "gross_pitch_error", "f0_fine_rmse_hz", "vuv_error",
                 "duration_mae_ms", "pesq", "stoi", "wer", "cer", "wer_recorded", "cer_recorded",
                 "speaker_similarity", "mos", "mos_recorded", "language_accuracy", "particle_accuracy")
SCHEMA = pa.schema([("id", pa.string()), ("speaker_id", pa.string()), ("language", pa.string()),
                    ("text", pa.string()), ("recording_seconds", pa.float32()), ("synthesis_seconds", pa.float32()),
                    *((name, pa.float64()) for name in FLOAT_METRICS), ("aligned_frames", pa.int32()),
                    ("transcript", pa.string()), ("transcript_recorded", pa.string()),
                    ("particles", pa.string()),         # JSON: each particle word's prosody, synthesis and recording
                    ("error", pa.string())])


class EvaluationError(ValueError):
    """The evaluation cannot run as asked; the message says what to change."""


@dataclass
class Plan:
    """What the actors need (plain data: it travels to them inside the actor class)."""
    data: str
    output: str
    spec: AudioSpec
    mode: str                                   # acoustic | talker | copy | audio
    model: Optional[str] = None
    vocoder: Optional[str] = None               # a vocoder export, or None: Griffin-Lim
    maps: dict[str, list[int]] = field(default_factory=dict)
    asr: dict[str, str] = field(default_factory=dict)
    speaker_encoder: Optional[str] = None
    seed: int = 0
    use_gpu: bool = False
    particles: list[str] = field(default_factory=list)   # the store's particle inventory, when code-switched
    audio: Optional[str] = None                 # --audio DIR: the folder of <id>.wav to score


def audio_name(utterance: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in utterance) + ".wav"


class Evaluator:
    """A Ray Data actor: synthesises each row of a batch and measures it."""

    def __init__(self, plan: Plan) -> None:
        from voxray.synthesize import load_talker, load_vocoder, load_voice

        torch.manual_seed(plan.seed)
        self.plan = plan
        self.vocoder = load_vocoder(plan.vocoder, plan.spec) if plan.vocoder else None
        self.voice = load_voice(plan.model) if plan.mode == "acoustic" else None
        self.talker = load_talker(plan.model) if plan.mode == "talker" else None
        self.maps = {column: np.asarray(lookup, dtype=np.int64) for column, lookup in plan.maps.items()}
        self.recognisers = Recognisers(plan.asr)
        self.speakers = SpeakerEncoder(plan.speaker_encoder)
        self.mos = MosPredictor()
        if self.voice is not None:             # which model tokens are phones (particle duration ratios)
            self.is_phone = np.array([particles.is_phone(token) for token in self.voice.final.vocabulary.tokens])

    def __call__(self, table: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.measure(row) for row in store.arrow_rows(table)], schema=SCHEMA)

    @torch.no_grad()
    def synthesise(self, row: dict[str, Any]) -> tuple[np.ndarray, dict[str, float]]:
        from voxray.dsp import griffin_lim
        from voxray.synthesize import speak

        spec = self.plan.spec
        if self.plan.mode == "audio":
            return read_audio(self.plan.audio, row["id"], spec.sample_rate), {}
        if self.plan.mode == "copy":
            mel = torch.from_numpy(np.asarray(row["mel"], dtype=np.float32))
            audio = self.vocoder(mel) if self.vocoder else griffin_lim(mel, spec, iterations=60)
            return audio.numpy(), {}
        if self.plan.mode == "talker":
            audio, _, _ = speak(self.talker, row["text"], speaker=row["speaker_id"], language=row["language"],
                                vocoder=self.vocoder, ref_audio=row.get("ref_audio"), ref_text=row.get("ref_text"),
                                seed=self.plan.seed)
            return audio, {}
        ids = self.maps["token_ids"][np.asarray(row["token_ids"], dtype=np.int64)]
        tokens = torch.from_numpy(ids)[None]
        speaker = torch.tensor([int(self.maps["speaker_index"][row["speaker_index"]])])
        language = torch.tensor([int(self.maps["language_index"][row["language_index"]])])
        per_token = {"token_languages": None, "token_particles": None}
        if row.get("token_languages") is not None:
            per_token = {"token_languages": torch.from_numpy(
                             self.maps["language_index"][np.asarray(row["token_languages"], dtype=np.int64)])[None],
                         "token_particles": torch.from_numpy(np.asarray(row["token_particles"], np.int64))[None]}
        model = self.voice.model
        mel, lengths, durations = model.infer_with_durations(tokens, torch.tensor([len(ids)]), speaker, language,
                                                             **per_token)
        mel = mel[0, : int(lengths[0])]
        audio = self.vocoder(mel) if self.vocoder else griffin_lim(mel, spec, iterations=60)
        reference = self.reference_durations(row, tokens, speaker, language, per_token)
        frame_ms = 1000.0 * spec.hop_length / spec.sample_rate
        extra: dict[str, Any] = {"duration_mae_ms": math.nan if reference is None else
                                 float(np.mean(np.abs(durations[0].numpy() - reference)) * frame_ms)}
        if per_token["token_languages"] is not None:
            extra.update(self.code_switch_measures(row, tokens, speaker, language, per_token, durations[0].numpy(),
                                                   reference, audio.numpy(), int(lengths[0])))
        return audio.numpy(), extra

    def reference_durations(self, row, tokens, speaker, language, per_token) -> Optional[np.ndarray]:
        """The recording's token durations: the store's, else the model's own alignment of it."""
        if row["durations"] is not None:
            return np.asarray(row["durations"])
        model = self.voice.model
        if model.aligner is None:
            return None
        mel = torch.from_numpy(np.asarray(row["mel"], dtype=np.float32))[None]
        f0 = torch.from_numpy(np.asarray(row["f0"], dtype=np.float32))[None]
        energy = torch.from_numpy(np.asarray(row["energy"], dtype=np.float32))[None]
        return model(tokens, torch.tensor([tokens.shape[1]]), speaker, language, mel, torch.tensor([mel.shape[1]]),
                     f0, energy, None, **per_token)["durations"][0].numpy()

    def code_switch_measures(self, row, tokens, speaker, language, per_token, predicted: np.ndarray,
                             reference: Optional[np.ndarray], synthesis: np.ndarray, frames: int) -> dict[str, Any]:
        """Accuracy of the language and particle heads on the row's tokens, and each particle
        word's duration ratio and F0 contour in the synthesis and in the recording."""
        from voxray.dsp import f0_contour

        out: dict[str, Any] = {}
        logits = self.voice.model.classify(tokens, torch.tensor([tokens.shape[1]]), speaker, language, **per_token)
        for head, target in (("language", per_token["token_languages"]), ("particle", per_token["token_particles"])):
            if f"{head}_logits" in logits:
                out[f"{head}_accuracy"] = float((logits[f"{head}_logits"].argmax(-1) == target).float().mean())
        marks = np.asarray(row["token_particles"])
        if marks.any() and self.plan.particles:
            spec, pre = self.plan.spec, self.voice.final.config.preprocess
            phones = self.is_phone[tokens[0].numpy()]
            heard = f0_contour(np.ascontiguousarray(synthesis[: frames * spec.hop_length], dtype=np.float32), spec,
                               frames, pre.f0_floor, pre.f0_ceil, pre.f0_rate)
            measured = {"synthesis": particles.measure(marks, phones, predicted, heard, spec.frame_seconds,
                                                       self.plan.particles)}
            if reference is not None:
                measured["recording"] = particles.measure(marks, phones, reference, np.asarray(row["f0"]),
                                                          spec.frame_seconds, self.plan.particles)
            out["particles"] = json.dumps(measured)
        return out

    def measure(self, row: dict[str, Any]) -> dict[str, Any]:
        from voxray.synthesize import SynthesisError, write_wav

        spec = self.plan.spec
        recording = np.asarray(row["audio"], dtype=np.float32)
        out: dict[str, Any] = {"id": row["id"], "speaker_id": row["speaker_id"], "language": row["language"],
                               "text": row["text"], "recording_seconds": len(recording) / spec.sample_rate,
                               **{name: math.nan for name in FLOAT_METRICS}}
        try:
            synthesis, extra = self.synthesise(row)
        except (SynthesisError, ValueError) as exc:
            return {**out, "error": f"{'audio' if self.plan.mode == 'audio' else 'synthesis'}: {exc}"}
        write_wav(uri.join(self.plan.output, "audio", audio_name(row["id"])), synthesis, spec.sample_rate)
        out.update(extra, synthesis_seconds=len(synthesis) / spec.sample_rate)
        try:
            out.update(metrics.compare(metrics.analyse(recording, spec.sample_rate),
                                       metrics.analyse(synthesis, spec.sample_rate)))
        except ValueError as exc:
            out["error"] = f"analysis: {exc}"
        if self.plan.mode == "copy":
            out.update(metrics.pesq_stoi(recording, synthesis, spec.sample_rate))
        heard = self.recognisers.transcribe(synthesis, spec.sample_rate, row["language"])
        if heard is not None:
            recorded = self.recognisers.transcribe(recording, spec.sample_rate, row["language"])
            rates, recorded_rates = metrics.error_rates(row["text"], heard), metrics.error_rates(row["text"], recorded)
            out.update(rates, transcript=heard, transcript_recorded=recorded,
                       wer_recorded=recorded_rates["wer"], cer_recorded=recorded_rates["cer"])
        if np.any(synthesis):
            out["speaker_similarity"] = self.speakers.similarity(self.speakers.embed(recording, spec.sample_rate),
                                                                 self.speakers.embed(synthesis, spec.sample_rate))
        out.update(mos=self.mos.predict(synthesis, spec.sample_rate),
                   mos_recorded=self.mos.predict(recording, spec.sample_rate))
        return out


def read_audio(folder: str, utterance: str, sample_rate: int) -> np.ndarray:
    """FOLDER/<id>.wav (or the file-system-safe name voxray writes) as mono float32 at
    ``sample_rate``; ValueError naming the file when it is missing or unreadable."""
    import io

    import soundfile

    names = [uri.join(folder, f"{utterance}.wav"), uri.join(folder, audio_name(utterance))]
    path = next((name for name in names if uri.exists(name)), None)
    if path is None:
        raise ValueError(f"no audio file {names[0]}")
    try:
        audio, rate = soundfile.read(io.BytesIO(uri.read_bytes(path)), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"{path} is not readable audio ({str(exc).rsplit(': ', 1)[-1]})") from None
    return metrics.resample(audio.mean(axis=1), rate, sample_rate)


def _plan(data: str, output: str, model: Optional[str], vocoder: Optional[str], asr: dict[str, str],
          speaker_encoder: Optional[str], seed: int, use_gpu: bool, audio: Optional[str] = None) -> Plan:
    """Check that the models fit the store (and each other) before any actor starts."""
    from voxray.export import read_final
    from voxray.labels import label_maps
    from voxray.synthesize import SynthesisError, load_vocoder

    if audio and (model or vocoder):
        raise EvaluationError("--audio scores audio that exists; give it without --model and --vocoder")
    if not model and not vocoder and not audio:
        raise EvaluationError("give --model (an acoustic model or talker), --vocoder, both, or --audio DIR")
    stats = read_stats(data)
    spec = AudioSpec(**stats["audio_spec"])
    plan = Plan(data=data, output=output, spec=spec, mode="copy", asr=asr, speaker_encoder=speaker_encoder,
                seed=seed, use_gpu=use_gpu, vocoder=None if vocoder in (None, GRIFFIN_LIM) else uri.absolute(vocoder))
    if audio:
        plan.mode, plan.audio = "audio", uri.absolute(audio)
        if not uri.exists(plan.audio):
            raise EvaluationError(f"--audio {audio}: no such folder")
    if model:
        plan.model = uri.absolute(model)
        final = read_final(plan.model)
        if final.family not in ("acoustic", "talker"):
            raise EvaluationError(f"--model {model} is a {final.family} model; give a vocoder as --vocoder")
        plan.mode = final.family
        if final.audio_spec != spec:
            raise EvaluationError(f"the store's AudioSpec {spec.model_dump()} differs from the model's "
                                  f"{final.audio_spec.model_dump()}")
        if final.family == "acoustic":
            plan.maps = label_maps(final.manifest, final.vocabulary.tokens, stats)
            plan.particles = list((stats.get("code_switch") or {}).get("particles", []))
    if plan.vocoder:
        try:
            load_vocoder(plan.vocoder, spec)
        except SynthesisError as exc:
            raise EvaluationError(str(exc)) from None
    Recognisers(asr)                                    # a missing model folder fails here, not in an actor
    return plan


def evaluate(data: str, output: str, *, model: Optional[str] = None, vocoder: Optional[str] = None,
             audio: Optional[str] = None, split: str = "test", limit: Optional[int] = None,
             asr: Optional[dict[str, str]] = None, speaker_encoder: Optional[str] = None, actors: int = 1,
             batch_size: int = 4, seed: int = 0, use_gpu: bool = False, overwrite: bool = False,
             report_utterances: int = 3, phase: Optional[str] = None,
             target_overrides: Optional[list[str]] = None, particle_table: Optional[str] = None) -> dict[str, Any]:
    """Evaluate on DATA's ``split``; writes OUTPUT/metrics.json, utterances.parquet, audio/ and
    report.html, and returns the metrics. ``phase`` and ``target_overrides`` choose the targets
    (``targets.resolve``); ``particle_table`` a file of particle rows over the plan's
    (``particles.load_table``)."""
    import ray

    from voxray.cluster import ensure_ray, settle
    from voxray.data.derive import prepare_output
    from voxray.evaluate.report import write_report

    started = time.time()
    data, output = uri.absolute(data), uri.absolute(output)
    try:
        goals = targets.resolve(phase, target_overrides)
    except targets.TargetError as exc:
        raise EvaluationError(str(exc)) from None
    expected = particles.load_table(particle_table) if particle_table else None
    plan = _plan(data, output, model, vocoder, asr or {}, speaker_encoder, seed, use_gpu, audio)
    table = store.read_split(data, split, ["id", "n_frames"]) if store.split_files(data, split) else None
    # rows kept for their codes alone (no recording: preprocess.codes_without_audio) have nothing to compare with
    ids = sorted(i for i, n in zip(table["id"].to_pylist(), table["n_frames"].to_pylist()) if n) if table else []
    if not ids:
        raise EvaluationError(f"the store {data} has no {split} rows")
    chosen = ids[:limit] if limit else ids
    if plan.audio and not any(uri.exists(uri.join(plan.audio, name)) for i in chosen
                              for name in (f"{i}.wav", audio_name(i))):
        raise EvaluationError(f"--audio {audio} holds no <id>.wav of the store's {split} split (e.g. "
                              f"{chosen[0]}.wav)")
    prepare_output(output, overwrite)
    ensure_ray(cpus=actors + 1)
    wanted = pa.array(chosen)
    dataset = split_dataset(data, split, COLUMNS + (store.PER_TOKEN_COLUMNS if "code_switch" in read_stats(data) else []))
    if limit:
        dataset = dataset.map_batches(lambda t: t.filter(pc.is_in(t["id"], value_set=wanted)), batch_format="pyarrow")
    measured = dataset.map_batches(actor_class(lambda: Evaluator(plan)), batch_size=batch_size, batch_format="pyarrow",
                                   compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=1 if use_gpu else 0)
    settle()
    # Blocks the id filter emptied skip the evaluator and keep the store's columns: leave them out.
    table = pa.concat_tables([t for t in map(ray.get, measured.to_arrow_refs()) if t.num_rows]).sort_by("id")
    summary = summarise(table, split=split, plan=plan, model=model or audio, vocoder=vocoder or None,
                        goals=goals, phase=phase, particle_table=expected)
    summary["wall_seconds"] = round(time.time() - started, 1)
    store.write_part(table, uri.join(output, "utterances.parquet"))
    uri.write_text(uri.join(output, "metrics.json"), json.dumps(summary, indent=1, ensure_ascii=False))
    write_report(output, data, split, table, summary, plan.spec, report_utterances)
    return summary


def particle_summary(table: pa.Table, expected: Optional[dict] = None) -> dict[str, Any]:
    """``particles.summarise`` of every particle word of the evaluated rows (empty without any),
    judged against ``expected`` (default: the plan's table)."""
    synthesis, recording = [], []
    for text in table["particles"].to_pylist():
        if text:
            measured = json.loads(text)
            synthesis += measured["synthesis"]
            recording += measured.get("recording", [])
    if not synthesis:
        return {}
    return {"particles": particles.summarise(synthesis, recording or None, expected)}


def summarise(table: pa.Table, *, split: str, plan: Plan, model: Optional[str], vocoder: Optional[str],
              goals: dict[str, targets.Target], phase: Optional[str] = None,
              particle_table: Optional[dict] = None) -> dict:
    """The means (NaN-free: an utterance without a value is not counted), with counts, what
    listened, and each target's verdict."""
    means, counts = {}, {}
    for name in FLOAT_METRICS:
        values = np.asarray(table[name].to_pylist(), dtype=np.float64)
        finite = values[np.isfinite(values)]
        counts[name] = int(finite.size)
        if finite.size:
            means[name] = float(finite.mean())
    recognisers = Recognisers(plan.asr)
    languages = sorted(set(table["language"].to_pylist()))
    errors = [e for e in table["error"].to_pylist() if e]
    heard_by = ", ".join(sorted({recognisers.name(lang) for lang in languages} - {None})) or "none"
    notes = targets.caveats(means, goals, heard_by, MosPredictor.NAME)
    return {"split": split, "mode": plan.mode, "model": model,
            "vocoder": None if plan.mode == "audio" else vocoder or GRIFFIN_LIM,
            "utterances": table.num_rows, "failed": len(errors), "errors": errors[:10],
            "metrics": means, "counts": counts,
            "recognisers": {lang: recognisers.name(lang) or "none (no recogniser for this language)"
                            for lang in languages},
            "speaker_encoder": SpeakerEncoder.describe(plan.speaker_encoder),
            **particle_summary(table, particle_table),
            "mos_predictor": MosPredictor.NAME,
            "mcd": {"order": metrics.MCD_ORDER, "alignment": "DTW", "silence": f"speech frames only (within "
                    f"{metrics.SPEECH_DB:g} dB of each signal's loudest frame)", "c0": "excluded",
                    "calibration": f"synthesis level-matched to the recording; the same floor, {metrics.FLOOR_DB:g} dB "
                                   f"below the recording's mean speech spectral density, added to both envelopes"},
            "f0": {"gross_pitch_error": f"share of frames voiced in both whose F0 differs by more than "
                                        f"{metrics.GPE_TOLERANCE:.0%}", "f0_fine_rmse_hz": "F0 RMSE over the others"},
            "phase": phase or "default (the plan's end-of-training targets)",
            "targets": {name: target.describe() for name, target in goals.items()},
            "verdicts": targets.verdicts(means, goals, notes), "notes": notes}
