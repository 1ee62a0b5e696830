"""``voxray train acoustic``: a FastSpeech2-family model (phonemes -> mel) on Ray Train workers,
each running a DeepSpeed ZeRO engine. Reads top to bottom: plan (driver) -> model -> loop ->
validate -> export -> train (driver). The shared core does the rest: ``launch`` (driver side),
``worker`` (checkpoints, resume, early stopping, the sweep gate, the console).

``finetune.init_from=RUN/final`` starts from a trained model; with ``lora.rank > 0`` only LoRA
adapters and the embedding rows of tokens/speakers/languages new to that model train.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np
import torch

from voxray import uri
from voxray.audio import AudioSpec
from voxray.config import Config
from voxray.data import batching, store as feature_store
from voxray.dsp import griffin_lim
from voxray.export import FINAL_DIR, read_final, write_adapter, write_final
from voxray.losses.acoustic import acoustic_losses
from voxray.models import alignment
from voxray.models.acoustic import fastspeech2
from voxray.synthesize import Vocoder, load_vocoder
from voxray.train import launch
from voxray.train.checkpoint import evaluation_weights, load_weights
from voxray.train.data import PrefetchedShard
from voxray.train.deepspeed_config import deepspeed_config
from voxray.train.distributed import Sums
from voxray.train.ema import load_eval_weights, make_ema, update_ema
from voxray.train.engine import OptimizerSettings, build_engine, grad_norm, parameter_counts
from voxray.models.adapters import adapter_state, grow_and_adapt, merge_lora, rank_space
from voxray.labels import map_labels, merge_labels, store_labels
from voxray.train.meter import Meter
from voxray.train.contract import Recipe, WorkerSettings
from voxray.train.worker import Worker, start

FAMILY = "acoustic"
METRIC = "val_mel"                      # best-k checkpoints, early stopping, sweeps
METRIC_LABEL = "val mel L1"             # the metric, as the console names it
METRICS = ("val_mel", "val_total", "val_duration", "val_pitch", "val_energy", "val_mcd_mel_db",
           "val_f0_rmse_hz", "val_duration_mae_ms")   # what train.checkpoint_metric may name
COLUMNS = ["id", "token_ids", "speaker_index", "language_index", "n_frames", "mel", "f0", "energy",
           "durations"]
LORA_TARGETS = r".*\.(attn\.(qkv|out)|ffn\.(up|down))$"      # attention and feed-forward projections
LOSS_NAMES = ("total", "mel", "duration", "pitch", "energy", "alignment", "binarization")
FRESH = ("language_head.", "particle_head.", "particle_embedding.")     # may be missing from a base model
FROZEN_BY_FREEZE_ENCODER = re.compile(r"(^|\.)(token_embedding|encoder)\.")
SEARCH_SPACE = {"train.lr": {"loguniform": [1.0e-4, 3.0e-3]}, "loss.mel": {"uniform": [0.5, 2.0]},
                "loss.duration": {"loguniform": [0.01, 1.0]}, "loss.pitch": {"loguniform": [0.01, 1.0]},
                "loss.energy": {"loguniform": [0.01, 1.0]}}


def search_space(config: Config) -> dict[str, Any]:
    """The sweep's default: learning rate and loss weights (the code-switching ones the config
    turns on too); LoRA rank when fine-tuning."""
    switched = {f"loss.{name}": {"loguniform": [0.02, 2.0]} for name in ("language", "particle", "particle_prosody")
                if getattr(config.loss, name) > 0}
    return {**SEARCH_SPACE, **switched,
            **(rank_space(config.lora) if config.finetune.init_from else {})}


# ---------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Plan:
    """Everything a worker needs, decided once on the driver."""

    store: str
    run: str
    config: Config
    store_stats: dict[str, Any]
    build_args: dict[str, Any]                       # fastspeech2.build arguments of the trained model
    vocabulary: list[str]
    speakers: list[str]
    languages: list[str]
    g2p: dict[str, str]                              # language -> espeak | char | textgrid
    init_from: Optional[str] = None
    base_build_args: Optional[dict[str, Any]] = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)   # store index -> model index
    added: dict[str, list[int]] = field(default_factory=dict)   # embedding rows new to the base


def prepare(store: str, run: str, config: Config, open_run: bool = True) -> Plan:
    """Read the store's stats (and the base model when fine-tuning), fix labels and sizes, and
    open the run folder (a resume must still fit its checkpoints)."""
    store, run = uri.absolute(store), uri.absolute(run)      # workers run in another directory
    config = _absolute_paths(config)
    stats = launch.store_stats(store)
    config = launch.steps_of_epochs(config, stats)
    spec = AudioSpec(**stats["audio_spec"])
    config = config.model_copy(update={"audio": spec})   # the store decides the audio constants
    labels = store_labels(stats)
    build_args = {**model_args(stats, config, labels), **code_switch_args(stats, config)}
    plan = Plan(store=store, run=run, config=config, store_stats=stats, build_args=build_args, **labels)
    if config.finetune.init_from:
        plan = _from_base(plan, read_final(config.finetune.init_from, family=FAMILY))
    if config.train.vocoder:
        load_vocoder(config.train.vocoder, spec)        # an export of the vocoder family, for these mels
    if open_run:            # not when exporting a checkpoint of the run (train.export_checkpoint)
        launch.open_run(run, plan.config, store)
    return plan


def _absolute_paths(config: Config) -> Config:
    """The config's paths made absolute (workers run in another directory)."""
    if config.finetune.init_from:
        config = config.model_copy(update={"finetune": config.finetune.model_copy(
            update={"init_from": uri.absolute(config.finetune.init_from)})})
    if config.train.vocoder:
        config = config.model_copy(update={"train": config.train.model_copy(
            update={"vocoder": uri.absolute(config.train.vocoder)})})
    return config


def model_args(stats: dict[str, Any], config: Config, labels: dict[str, Any]) -> dict[str, Any]:
    """``fastspeech2.build``'s arguments for a model of this store (code-switching's apart:
    ``code_switch_args``): the config's architecture, the label sets' sizes, the store's
    normalisation statistics, and a learnt alignment when the store has no durations."""
    features, model = stats["features"], config.model
    return dict(preset=model.preset, vocab_size=len(labels["vocabulary"]), n_mels=config.audio.n_mels,
                n_speakers=len(labels["speakers"]), n_languages=len(labels["languages"]), rotary=model.rotary,
                swiglu=model.swiglu, learn_alignment=not stats["has_durations"], dropout=model.dropout,
                pitch_stats=(features["f0_voiced"]["mean"], features["f0_voiced"]["std"] or 1.0),
                energy_stats=(features["energy"]["mean"], features["energy"]["std"] or 1.0),
                mel_stats=(features["mel"]["mean_per_channel"],
                           [max(s, 1e-3) for s in features["mel"]["std_per_channel"]]))


def _from_base(plan: Plan, base: Any) -> Plan:
    """Fine-tuning ``base`` (a FinalModel of this family): the base's architecture grown to the
    merged label sets, checked against what this run asks of it."""
    config, fresh = plan.config, plan.build_args
    if base.audio_spec != config.audio:
        raise ValueError(f"the base model's AudioSpec {base.audio_spec} differs from the store's {config.audio}")
    _check_base(base.manifest["build"], fresh, config.lora.rank)
    config = config.model_copy(update={"model": base.config.model.model_copy(
        update={"freeze_encoder": config.model.freeze_encoder})})
    merged = merge_labels(base, {"vocabulary": plan.vocabulary, "speakers": plan.speakers,
                                 "languages": plan.languages, "g2p": plan.g2p})
    if "token_languages" in columns_of(plan.store_stats):
        merged["maps"]["token_languages"] = merged["maps"]["language_index"]
    return replace(plan, config=config, build_args=_grown_args(base.manifest["build"], merged["sizes"], fresh),
                   vocabulary=merged["vocabulary"], speakers=merged["speakers"], languages=merged["languages"],
                   g2p=merged["g2p"], maps=merged["maps"], added=merged["added"],
                   init_from=config.finetune.init_from, base_build_args=base.manifest["build"])


def _check_base(base: dict[str, Any], fresh: dict[str, Any], lora_rank: int) -> None:
    """What a base model cannot be fine-tuned into on this store, by name."""
    base_particles = base.get("n_particles", 0)
    if fresh["n_particles"] and base_particles not in (0, fresh["n_particles"]):
        raise ValueError(f"the store has {fresh['n_particles']} particle types, the base model "
                         f"{base_particles}: preprocess with the base's preprocess.particles")
    fresh_heads = [key for key in ("language_head", "particle_head") if fresh[key] and not base.get(key)]
    if fresh_heads and lora_rank:
        raise ValueError(f"the base model has no {' or '.join(fresh_heads)}: LoRA would train the adapters "
                         "against a head frozen at its random start; set its loss weight to 0, or fine-tune "
                         "all weights (lora.rank=0)")
    if fresh["token_labels"] and not base.get("token_labels") and lora_rank:
        raise ValueError("the base model has no per-token languages and particles, and LoRA would keep the new "
                         "particle embedding at its random start: fine-tune all weights once (lora.rank=0)")


def _grown_args(base: dict[str, Any], sizes: dict[str, int], fresh: dict[str, Any]) -> dict[str, Any]:
    """The fine-tuned model's build arguments: the base's architecture; the merged label sets'
    sizes; the heads this run's losses train; per-token labels kept once a model has them, or
    brought by the store; the base's particle types, else the store's."""
    return {**base, **sizes, "language_head": fresh["language_head"], "particle_head": fresh["particle_head"],
            "token_labels": bool(base.get("token_labels") or fresh["token_labels"]),
            "n_particles": base.get("n_particles", 0) or fresh["n_particles"]}


def columns_of(stats: dict[str, Any]) -> list[str]:
    """The store columns training reads: per-token languages and particles when the store has them."""
    return COLUMNS + (feature_store.PER_TOKEN_COLUMNS if "code_switch" in stats else [])


def code_switch_args(stats: dict[str, Any], config: Config) -> dict[str, Any]:
    """Per-token labels (a store preprocessed with ``preprocess.code_switch`` or with per-word tags),
    particle types and the multi-task heads of a model on this store (``fastspeech2.build``)."""
    code_switch = stats.get("code_switch") or {}
    token_labels = bool(code_switch.get("languages") or code_switch.get("code_switched_utterances")
                        or any(code_switch.get("particle_words", {}).values()))
    n_particles = len(code_switch.get("particles", [])) if token_labels else 0
    if config.loss.particle > 0 and not n_particles:
        raise ValueError(f"loss.particle={config.loss.particle} needs a store with particle types "
                         "(preprocessed with preprocess.code_switch, or with particle_tags)")
    loss = config.loss
    per_token = [f"loss.{name}={getattr(loss, name)}" for name, off in (
        ("language", 0), ("particle_prosody", 0), ("transition", 1), ("particle_pitch", 1), ("particle_duration", 1))
        if getattr(loss, name) != off]
    if per_token and "code_switch" not in stats:
        raise ValueError(f"{', '.join(per_token)} need per-token labels: this store was written before voxray kept "
                         "them; preprocess it again")
    return {"token_labels": token_labels, "n_particles": n_particles, "language_head": config.loss.language > 0,
            "particle_head": config.loss.particle > 0}


def loss_names(plan: "Plan") -> tuple[str, ...]:
    """What the loop logs and validation reports: LOSS_NAMES, and the code-switching terms this
    run trains (with the heads' accuracies)."""
    loss, build = plan.config.loss, plan.build_args
    return LOSS_NAMES + tuple(name for name, on in (
        ("mel_mse", loss.mel_mse > 0), ("particle_prosody", loss.particle_prosody > 0),
        ("language", build["language_head"]), ("language_acc", build["language_head"]),
        ("particle", build["particle_head"]), ("particle_acc", build["particle_head"])) if on)


# ------------------------------------------------------------------------------------- model

def build_model(plan: Plan, load_base: bool = True) -> torch.nn.Module:
    """The model a worker trains: built fresh, or the base model grown to the new label sets,
    wrapped with LoRA adapters when ``lora.rank > 0``."""
    if plan.init_from is None:
        model = fastspeech2.build(**plan.build_args)
    else:
        fresh = {key: plan.build_args[key] for key in ("language_head", "particle_head", "token_labels", "n_particles")}
        model = fastspeech2.build(**{**plan.base_build_args, **fresh})
        if load_base:     # a head or particle table the base lacks starts fresh; a head not trained is left out
            missing, unexpected = model.load_state_dict(read_final(plan.init_from).weights, strict=False)
            misfit = [name for name in missing + unexpected if not name.startswith(FRESH)]
            if misfit:
                raise ValueError(f"the base model's weights do not fit this model: {misfit[:5]}")
        sizes = {key: plan.build_args[key] for key in ("vocab_size", "n_speakers", "n_languages")}
        model = grow_and_adapt(model, sizes, plan.config.lora, LORA_TARGETS, plan.added,
                               total_steps=plan.config.train.max_steps)
    if plan.config.model.freeze_encoder:
        for name, parameter in model.named_parameters():
            if FROZEN_BY_FREEZE_ENCODER.search(name):
                parameter.requires_grad_(False)
    return model


def collate(plan: Plan, rows: list[dict[str, Any]], rng: Optional[np.random.Generator] = None) -> dict[str, Any]:
    """Store rows -> tensors; when fine-tuning, store label indices become the model's."""
    rows = map_labels(rows, plan.maps)
    return batching.collate(rows)


def forward(model, batch: dict[str, Any], device: torch.device, dtype: torch.dtype
            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Teacher-forced forward pass: (the model's outputs in fp32, the batch on ``device``)."""
    moved = {k: (None if v is None else v.to(device)) for k, v in batch.items()}
    floats = {k: moved[k].to(dtype) for k in ("mels", "pitch", "energy")}
    out = model(moved["tokens"], moved["token_lengths"], moved["speakers"], moved["languages"],
                floats["mels"], moved["mel_lengths"], floats["pitch"], floats["energy"], moved["durations"],
                moved["token_languages"], moved["token_particles"])
    return {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}, moved


def losses(model, batch: dict[str, Any], config: Config, device: torch.device,
           dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Teacher-forced forward pass and the weighted loss components (fp32)."""
    return weighted_losses(*forward(model, batch, device, dtype), config)


def weighted_losses(out: dict[str, torch.Tensor], moved: dict[str, Any], config: Config) -> dict[str, torch.Tensor]:
    weights = config.loss
    return acoustic_losses(out, moved["mels"].float(), moved["token_lengths"], moved["mel_lengths"],
                           mel=weights.mel, duration=weights.duration, pitch=weights.pitch,
                           energy=weights.energy, alignment_weight=weights.alignment,
                           binarization_weight=weights.binarization, mel_mse=weights.mel_mse,
                           language=weights.language, particle=weights.particle,
                           particle_prosody=weights.particle_prosody, transition=weights.transition,
                           particle_pitch=weights.particle_pitch, particle_duration=weights.particle_duration,
                           token_languages=moved["token_languages"],
                           token_particles=moved["token_particles"])


# ------------------------------------------------------------------------------------ worker

QUALITY_SUMS = ("duration_error_frames", "tokens", "f0_squared_error", "voiced_tokens", "mcd_db_sum", "speech_frames",
                "attention_near_path", "attention_mass")


def quality_sums(model, out: dict[str, torch.Tensor], moved: dict[str, Any]) -> dict[str, float]:
    """Sums behind the cheap quality measures of a teacher-forced batch, to be added over ranks
    (``QUALITY_SUMS``): |predicted - reference| token durations (frames) and the token count;
    squared token F0 error of the pitch predictor (Hz) and the count of tokens with voiced frames;
    the mel MCD over speech frames (``metrics.mel_mcd_sums``) and their count; the soft attention's
    mass near the hard path and its total (``alignment.diagonality_sums``; 0 without a learnt
    alignment)."""
    from voxray.evaluate.metrics import mel_mcd_sums

    tokens = ~out["text_mask"]
    predicted = fastspeech2.frames_per_token(out["log_duration"], out["text_mask"])
    duration = float(((predicted - out["durations"]).abs() * tokens).sum())
    pitch_std = float(model.variance_stats[1])
    voiced = fastspeech2.average_by_durations((moved["pitch"] > 0).float(), out["durations"]) > 0
    voiced &= tokens
    f0_squares = float((((out["pitch"] - out["token_pitch"]) * pitch_std) ** 2)[voiced].sum())
    mcd, speech = mel_mcd_sums(out["mel"], moved["mels"], moved["mel_lengths"])
    attention = (alignment.diagonality_sums(out["attn_soft"], out["attn_hard"], moved["mel_lengths"])
                 if "attn_soft" in out else (0.0, 0.0))
    return dict(zip(QUALITY_SUMS, (duration, float(tokens.sum()), f0_squares, float(voiced.sum()), mcd, speech,
                                   *attention)))


@torch.no_grad()
def validate(plan: Plan, worker: Worker, val_shard: PrefetchedShard, eval_model,
             vocoder: Optional[Vocoder]) -> dict[str, float]:
    """``eval_model`` (the EMA's weights when kept) on every worker's share of the val split;
    frame-weighted means over all; rank 0 logs a predicted-vs-target mel and its audio (through ``vocoder``, else
    Griffin-Lim), and, when the model learns its alignment, the first utterance's attention
    (``val_attention_diagonality``: ``alignment.diagonality_sums``)."""
    eval_model.eval()
    names = loss_names(plan)
    sums = Sums([*(f"loss_{name}" for name in names), "mel_frames", *QUALITY_SUMS])     # frame-weighted losses
    first, first_attention = None, None
    for rows in val_shard.batches(plan.config.train.batch_size):
        batch = collate(plan, rows)
        out, moved = forward(eval_model, batch, worker.device, torch.float32)
        parts = weighted_losses(out, moved, plan.config)
        frames = float(batch["mel_lengths"].sum())
        sums.add({f"loss_{name}": frames * float(parts.get(name, torch.tensor(0.0))) for name in names})
        sums.add({"mel_frames": frames, **quality_sums(eval_model, out, moved)})
        if first is None and "attn_soft" in out:
            first_attention = out["attn_soft"][0, : int(batch["mel_lengths"][0]), : int(batch["token_lengths"][0])]
        first = first or batch
    totals = sums.reduce(worker.device)
    metrics = {f"val_{name}": totals[f"loss_{name}"] / max(totals["mel_frames"], 1) for name in names}
    spec = plan.config.audio
    metrics.update(
        val_duration_mae_ms=totals["duration_error_frames"] / max(totals["tokens"], 1) * 1000 * spec.hop_length
        / spec.sample_rate,
        val_f0_rmse_hz=math.sqrt(totals["f0_squared_error"] / max(totals["voiced_tokens"], 1)),
        val_mcd_mel_db=totals["mcd_db_sum"] / max(totals["speech_frames"], 1))
    if totals["attention_mass"]:
        metrics["val_attention_diagonality"] = totals["attention_near_path"] / totals["attention_mass"]
    if worker.runlog is not None and first_attention is not None:
        worker.runlog.attention(worker.state.step, "val/attention", first_attention)
    if worker.runlog is not None and first is not None:
        device = worker.device
        per_token = {key: None if first[key] is None else first[key][:1].to(device)
                     for key in ("token_languages", "token_particles")}
        mel, mel_lengths = eval_model.infer(first["tokens"][:1].to(device), first["token_lengths"][:1].to(device),
                                            first["speakers"][:1].to(device), first["languages"][:1].to(device),
                                            **per_token)
        predicted, target = mel[0, : int(mel_lengths[0])], first["mels"][0, : int(first["mel_lengths"][0])]
        worker.runlog.mel(worker.state.step, "val/mel_predicted_vs_target", predicted, target)
        spec = plan.config.audio
        if vocoder is not None:
            worker.runlog.audio(worker.state.step, "val/audio_vocoder", vocoder(predicted.cpu()), spec.sample_rate)
        else:
            worker.runlog.audio(worker.state.step, "val/audio_griffin_lim", griffin_lim(predicted.cpu(), spec),
                                spec.sample_rate)
    return metrics


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: setup -> restore -> loop (step, log, validate + checkpoint) -> export."""
    settings = WorkerSettings.of(loop_config)
    plan: Plan = settings.plan
    config, train = plan.config, plan.config.train
    worker = start(settings)
    model = build_model(plan).to(worker.device)
    ema = make_ema(model, train.ema_decay)
    eval_model = build_model(plan, load_base=False).to(worker.device)
    vocoder = load_vocoder(train.vocoder, config.audio) if train.vocoder and worker.rank == 0 else None
    engine, lr_schedule = build_engine(model, OptimizerSettings.of(train),
                                       deepspeed_config(train, config.deepspeed, worker.world_size))
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.deepspeed.precision]
    trainable_only = config.lora.rank > 0
    emas = {"model": ema} if ema is not None else {}
    worker.restore({"model": engine}, emas, trainable_only=trainable_only)
    stream = worker.train_stream(lambda rows, rng: collate(plan, rows, rng), batch_size=train.batch_size)
    val_shard = worker.val_shard()
    worker.started({"model": parameter_counts(model)}, progress=("total", "mel"))

    meter = Meter(loss_names(plan), unit="mel_frames")
    while worker.training():                          # one optimizer step per iteration
        model.train()
        skipped_before = engine.skipped_steps
        for _ in range(train.grad_accum):             # DeepSpeed sums the micro-batches' gradients and
            batch = stream.next()                     # its step() applies them after the last one
            parts = losses(engine, batch, config, worker.device, dtype)
            engine.backward(worker.regularised(parts["total"]))       # + AdaLoRA's orthogonality term
            if engine.is_gradient_accumulation_boundary():
                worker.before_step(engine)            # percentile clip, per-layer gradient norms, AdaLoRA
            engine.step()
            meter.add(parts, units=int(batch["mel_lengths"].sum()), padding=stream.last_padding)
        worker.after_step(engine)
        if worker.count_step(skipped=engine.skipped_steps > skipped_before):
            update_ema(ema, engine, worker.state.step)
        if worker.due(train.log_every):
            worker.log(meter.reduce(worker.device), lr=lr_schedule.get_last_lr()[0], grad_norm=grad_norm(engine))
            meter.reset()
        if worker.validation_due():
            load_eval_weights(eval_model, engine, ema)
            metrics = validate(plan, worker, val_shard, eval_model, vocoder)
            worker.checkpoint(metrics, engines={"model": engine}, emas=emas, stream=stream,
                              trainable_only=trainable_only)
            meter.reset()                              # validation time is not training throughput
    load_eval_weights(eval_model, engine, ema)          # every rank (gathers at ZeRO-3 without an EMA)
    worker.finish(lambda: export(plan, eval_model, worker.state.step))


def export(plan: Plan, eval_model, step: int, folder: Optional[str] = None) -> None:
    """RUN_URI/final (or ``folder``) from the evaluation weights (EMA when kept), LoRA merged; with
    ``finetune.export=adapter`` only RUN_URI/final/adapter/ (a voice to load on its base model:
    ``voxray synthesize --model BASE/final --adapter RUN/final/adapter``)."""
    folder = folder or uri.join(plan.run, FINAL_DIR)
    manifest = {"family": FAMILY, "build": plan.build_args, "speakers": plan.speakers,
                "languages": plan.languages, "g2p": plan.g2p, "step": step,
                "init_from": plan.init_from, "lora_rank": plan.config.lora.rank}
    if plan.config.finetune.export == "adapter":
        write_adapter(folder, adapter_state(eval_model), {
            **manifest, "vocabulary": plan.vocabulary, "added": plan.added, "lora": plan.config.lora.model_dump(),
            "targets": LORA_TARGETS, "code_switch": plan.store_stats.get("code_switch")})
        return
    merged = merge_lora(eval_model)
    write_final(folder, weights=merged.state_dict(), manifest=manifest,
                config=plan.config, vocabulary=plan.vocabulary, stats=plan.store_stats)


def export_checkpoint(plan: Plan, checkpoint: str, step: int, metrics: dict[str, float], output: str) -> None:
    """``export`` of the weights in a merged checkpoint folder (local) into ``output``
    (``voxray export RUN --checkpoint``)."""
    lora = plan.config.lora.rank > 0
    model = build_model(plan, load_base=lora)
    load_weights(model, evaluation_weights(checkpoint, "model", plan.config.deepspeed.zero_stage, lora))
    export(plan, model, step, output)


# ------------------------------------------------------------------------------------ driver

RECIPE = Recipe(family=FAMILY, metric=METRIC, metric_label=METRIC_LABEL, metrics=METRICS, prepare=prepare,
                columns=lambda plan: columns_of(plan.store_stats), train_loop=train_loop, search_space=search_space,
                export_checkpoint=export_checkpoint)
train = RECIPE.train            # the family's entry point: train(store, run, config, callbacks, gate, console)
