"""``voxray train vocoder``: HiFi-GAN (or a Vocos-style generator) against HiFi-GAN's multi-period
and multi-scale discriminators, each on its own DeepSpeed engine. Reads top to bottom: plan
(driver) -> models -> segments -> the discriminator step, then the generator step with the
discriminator frozen -> validate -> export -> train (driver).

``finetune.init_from=VOCODER_RUN/final`` starts from a trained generator (and, by default, the
discriminator of that run's latest checkpoint); train it on a store of predicted mels
(``voxray predict-mels``) to fit the vocoder to an acoustic model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import yaml

from voxray import uri
from voxray.audio import AudioSpec
from voxray.cluster import say
from voxray.config import Config
from voxray.dsp import log_mel
from voxray.evaluate.metrics import mel_mcd_sums
from voxray.export import FINAL_DIR, read_final, write_final
from voxray.losses.vocoder import adversarial_loss, discriminator_loss, feature_matching_loss, mel_l1
from voxray.models.vocoder import build_discriminators, build_generator, generator_args
from voxray.train import launch
from voxray.train.checkpoint import evaluation_weights, latest_with_engine, load_weights, module_weights
from voxray.train.data import PrefetchedShard
from voxray.train.deepspeed_config import deepspeed_config
from voxray.train.distributed import all_reduce_sum
from voxray.train.ema import load_eval_weights, make_ema, update_ema
from voxray.train.engine import OptimizerSettings, build_engine, frozen, grad_norm, parameter_counts
from voxray.train.meter import Meter
from voxray.train.contract import Recipe, WorkerSettings
from voxray.train.worker import Worker, start

FAMILY = "vocoder"
METRIC = "val_mel"                      # mel L1 of the generated audio against the target mel
METRIC_LABEL = "val mel L1 of the generated audio"
METRICS = ("val_mel", "val_mcd_mel_db")   # what train.checkpoint_metric may name
COLUMNS = ["id", "n_frames", "mel", "audio"]
LOSS_NAMES = ("generator", "discriminator", "mel", "adversarial", "feature")
VAL_SAMPLES = 2                         # val utterances logged as audio and mel images
SEARCH_SPACE = {"train.lr": {"loguniform": [5.0e-5, 1.0e-3]}, "discriminator.lr": {"loguniform": [5.0e-5, 1.0e-3]},
                "loss.mel": {"uniform": [20.0, 60.0]}, "loss.feature": {"uniform": [1.0, 4.0]}}


def search_space(config: Config) -> dict[str, Any]:
    """The sweep's default: both learning rates and the mel and feature-matching weights."""
    return dict(SEARCH_SPACE)


# ---------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Plan:
    store: str
    run: str
    config: Config
    generator: dict[str, Any]                  # build_generator arguments
    init_from: Optional[str] = None            # a vocoder export to start from
    discriminator_from: Optional[str] = None   # a checkpoint folder whose discriminator to restore


def _store_has_audio(store: str) -> None:
    saved = uri.join(store, "config.yaml")
    if uri.exists(saved) and not (yaml.safe_load(uri.read_text(saved)) or {}).get("preprocess", {}).get(
            "store_audio", True):
        raise ValueError(f"the feature store {store} was written with preprocess.store_audio=false: the vocoder "
                         "trains on the stored audio; preprocess again with preprocess.store_audio=true")


def _latest_discriminator(final: str) -> Optional[str]:
    """The latest checkpoint of the run that exported ``final`` holding a discriminator (local runs)."""
    run = os.path.dirname(final.rstrip("/"))
    if uri.is_remote(final) or not os.path.isdir(run):
        return None
    return latest_with_engine(run, "discriminator")


def prepare(store: str, run: str, config: Config, open_run: bool = True) -> Plan:
    """The store's AudioSpec, the generator's shape (checked against the hop length), the model
    to start from, and the run folder."""
    store, run = uri.absolute(store), uri.absolute(run)
    stats = launch.store_stats(store)
    config = launch.steps_of_epochs(config, stats)
    _store_has_audio(store)
    spec = AudioSpec(**stats["audio_spec"])
    config = config.model_copy(update={"audio": spec})
    model = config.model
    args = generator_args(model.generator, model.preset, n_mels=spec.n_mels, n_fft=spec.n_fft,
                          hop_length=spec.hop_length, upsample_rates=model.upsample_rates,
                          upsample_kernel_sizes=model.upsample_kernel_sizes, channels=model.channels)
    init_from = discriminator_from = None
    if config.finetune.init_from:
        init_from = uri.absolute(config.finetune.init_from)
        base = read_final(init_from, family=FAMILY)
        if base.audio_spec != spec:
            raise ValueError(f"the base vocoder's AudioSpec {base.audio_spec} differs from the store's {spec}")
        args = base.manifest["build"]
        config = config.model_copy(update={"model": base.config.model,
                                           "finetune": config.finetune.model_copy(update={"init_from": init_from})})
        if config.finetune.discriminator == "restore":
            discriminator_from = _latest_discriminator(init_from)
            if discriminator_from is None:
                say(f"no checkpoint with a discriminator next to {init_from}: the discriminator starts fresh")
    if open_run:            # not when exporting a checkpoint of the run (train.export_checkpoint)
        launch.open_run(run, config, store)
    return Plan(store=store, run=run, config=config, generator=args, init_from=init_from,
                discriminator_from=discriminator_from)


# ------------------------------------------------------------------------------------ models

def build_models(plan: Plan) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(generator, discriminators), restored from the base run when fine-tuning."""
    generator = build_generator(plan.generator)
    discriminator = build_discriminators(plan.config.model.preset, plan.config.model.discriminator_width)
    if plan.init_from:
        generator.load_state_dict(read_final(plan.init_from).weights)
    if plan.discriminator_from:
        # ZeRO 0-2 keep the module states whole (the vocoder refuses ZeRO-3)
        discriminator.load_state_dict(module_weights(plan.discriminator_from, "discriminator", zero_stage=0))
    return generator, discriminator


def build_engines(config: Config, generator: torch.nn.Module, discriminator: torch.nn.Module, world_size: int):
    """((generator engine, its LR schedule), (discriminator engine, its schedule)): each its own
    AdamW (``train.*``, ``discriminator.*``) and DeepSpeed config."""
    ds = deepspeed_config(config.train, config.deepspeed, world_size)
    if config.deepspeed.precision == "bf16":
        discriminator.to(torch.bfloat16)     # spectral norm's power-iteration vectors are buffers DeepSpeed keeps fp32
    return (build_engine(generator, OptimizerSettings.of(config.train), ds),
            build_engine(discriminator, OptimizerSettings.of(config.train, **config.discriminator.model_dump()), ds))


def segments(rows: list[dict[str, Any]], rng: Optional[np.random.Generator], frames: int, spec: AudioSpec
             ) -> dict[str, torch.Tensor]:
    """Aligned random crops of ``frames`` mel frames and ``frames * hop`` samples (the start drawn
    from ``rng``; None: from the start). Shorter utterances are padded: silence in the mel (the
    log floor), zeros in the audio, and ``frames`` [B] says how many frames are real.

    mel [B, n_mels, frames], audio [B, 1, frames * hop], frames [B]."""
    hop = spec.hop_length
    mels = np.full((len(rows), spec.n_mels, frames), np.log(spec.log_floor), dtype=np.float32)
    audio = np.zeros((len(rows), 1, frames * hop), dtype=np.float32)
    valid = np.zeros(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        if row["audio"] is None:
            raise ValueError(f"row {row['id']} has no stored audio (preprocess.store_audio=false)")
        n = int(row["n_frames"])
        begin = int(rng.integers(0, n - frames + 1)) if rng is not None and n > frames else 0
        take = min(frames, n - begin)
        mel = np.asarray(row["mel"], dtype=np.float32).reshape(n, -1)
        mels[i, :, :take] = mel[begin: begin + take].T
        audio[i, 0, : take * hop] = np.asarray(row["audio"], dtype=np.float32)[begin * hop: (begin + take) * hop]
        valid[i] = take
    return {"mel": torch.from_numpy(mels), "audio": torch.from_numpy(audio), "frames": torch.from_numpy(valid)}


def generated_mel_l1(fake: torch.Tensor, batch: dict[str, torch.Tensor], spec: AudioSpec) -> torch.Tensor:
    """L1 between the generated audio's log-mel and the target mel, over real frames."""
    fake_mel = log_mel(fake.squeeze(1).float(), spec)                      # [B, n_mels, frames]
    return mel_l1(fake_mel.transpose(1, 2), batch["mel"].to(fake.device).transpose(1, 2), batch["frames"].to(fake.device))


def discriminator_step_loss(discriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Real and generated (detached) through the discriminators in one call; least squares."""
    scores, _ = discriminator(torch.cat([real, fake.detach()]))
    return discriminator_loss(scores)


def generator_step_losses(discriminator, real: torch.Tensor, fake: torch.Tensor, batch: dict[str, torch.Tensor],
                          config: Config, adversarial: bool) -> dict[str, torch.Tensor]:
    """Mel L1, and (after the mel-only warm-up) the adversarial and feature-matching terms through
    the discriminators; call it with the discriminator frozen."""
    weights = config.loss
    parts = {"mel": generated_mel_l1(fake, batch, config.audio)}
    if adversarial:
        scores, features = discriminator(torch.cat([real, fake]))
        parts.update(adversarial=adversarial_loss(scores), feature=feature_matching_loss(features))
    parts["generator"] = (weights.mel * parts["mel"] + weights.adversarial * parts.get("adversarial", 0.0)
                          + weights.feature * parts.get("feature", 0.0))
    return parts


# ------------------------------------------------------------------------------------ worker

@torch.no_grad()
def validate(plan: Plan, worker: Worker, val_shard: PrefetchedShard, generator: torch.nn.Module) -> dict[str, float]:
    """Whole val utterances through the generator: frame-weighted mel L1 over every worker's rows;
    rank 0 logs the first utterances' audio and generated-vs-target mels."""
    config, spec = plan.config, plan.config.audio
    generator.eval()
    total = frames = mcd = speech = 0.0
    logged = 0
    for rows in val_shard.batches(config.train.batch_size):
        batch = segments(rows, None, max(int(r["n_frames"]) for r in rows), spec)
        fake = generator(batch["mel"].to(worker.device)).float()
        count = float(batch["frames"].sum())
        fake_mel = log_mel(fake[:, 0], spec).transpose(1, 2)                  # [B, frames, n_mels], once
        target, lengths = batch["mel"].to(worker.device).transpose(1, 2), batch["frames"].to(worker.device)
        total += float(mel_l1(fake_mel, target, lengths)) * count
        frames += count
        distance, counted = mel_mcd_sums(fake_mel[:, : target.shape[1]], target, lengths)
        mcd, speech = mcd + distance, speech + counted
        while worker.runlog is not None and logged < min(VAL_SAMPLES, len(rows)):
            n = int(batch["frames"][logged])
            audio = fake[logged, 0, : n * spec.hop_length].cpu()
            worker.runlog.audio(worker.state.step, f"val/audio_{logged}", audio, spec.sample_rate)
            worker.runlog.mel(worker.state.step, f"val/mel_{logged}_generated_vs_target",
                              log_mel(audio, spec).T, batch["mel"][logged, :, :n].T)
            logged += 1
    total, frames, mcd, speech = all_reduce_sum([total, frames, mcd, speech], worker.device)
    generator.train()
    return {METRIC: total / max(frames, 1), "val_mcd_mel_db": mcd / max(speech, 1)}


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: setup -> restore -> loop (discriminator step, generator step, log,
    validate + checkpoint) -> export."""
    settings = WorkerSettings.of(loop_config)
    plan: Plan = settings.plan
    config, train, spec = plan.config, plan.config.train, plan.config.audio
    worker = start(settings)
    generator, discriminator = build_models(plan)
    generator, discriminator = generator.to(worker.device), discriminator.to(worker.device)
    ema = make_ema(generator, train.ema_decay)
    eval_generator = build_generator(plan.generator).to(worker.device)
    (g_engine, g_schedule), (d_engine, d_schedule) = build_engines(config, generator, discriminator,
                                                                   worker.world_size)
    engines, emas = {"generator": g_engine, "discriminator": d_engine}, ({"generator": ema} if ema else {})
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[config.deepspeed.precision]
    worker.restore(engines, emas)
    stream = worker.train_stream(lambda rows, rng: segments(rows, rng, train.segment_frames, spec),
                                 batch_size=train.batch_size)
    val_shard = worker.val_shard()
    worker.started({"generator": parameter_counts(generator), "discriminator": parameter_counts(discriminator)},
                   progress=("generator", "discriminator", "mel"))

    meter = Meter(LOSS_NAMES, unit="samples")
    # One optimizer step per engine per iteration, on one micro-batch: no gradient accumulation
    # (train.grad_accum > 1 is refused: a GAN steps each engine on every batch, the other frozen
    # during its backward).
    while worker.training():
        batch = stream.next()
        mel, real = batch["mel"].to(worker.device, dtype), batch["audio"].to(worker.device, dtype)
        fake = g_engine(mel)
        # The discriminator's step: real against the generated audio, detached.
        d_loss = discriminator_step_loss(d_engine, real, fake)
        d_skipped = d_engine.skipped_steps
        d_engine.backward(d_loss)
        worker.before_step(d_engine, "discriminator")     # percentile clip, per-layer gradient norms
        d_engine.step()
        worker.after_step(d_engine, "discriminator")
        # The generator's step through the frozen discriminator (DeepSpeed #4923: a ZeRO-2
        # engine's gradient hooks must not fire in another engine's backward).
        with frozen(d_engine.module):
            parts = generator_step_losses(d_engine.module, real, fake, batch, config,
                                          adversarial=worker.state.step >= config.loss.mel_warmup_steps)
            g_skipped = g_engine.skipped_steps
            g_engine.backward(parts["generator"])
        worker.before_step(g_engine, "generator")
        g_engine.step()
        worker.after_step(g_engine, "generator")
        meter.add({**parts, "discriminator": d_loss}, units=real.shape[0] * real.shape[-1])
        if worker.count_step(skipped=g_engine.skipped_steps > g_skipped or d_engine.skipped_steps > d_skipped):
            update_ema(ema, g_engine, worker.state.step)
        if worker.due(train.log_every):
            worker.log(meter.reduce(worker.device), lr=g_schedule.get_last_lr()[0],
                       discriminator_lr=d_schedule.get_last_lr()[0], grad_norm=grad_norm(g_engine),
                       discriminator_grad_norm=grad_norm(d_engine))
            meter.reset()
        if worker.validation_due():
            load_eval_weights(eval_generator, g_engine, ema)
            metrics = validate(plan, worker, val_shard, eval_generator)
            worker.checkpoint(metrics, engines=engines, emas=emas, stream=stream)
            meter.reset()
    load_eval_weights(eval_generator, g_engine, ema)
    worker.finish(lambda: export(plan, eval_generator, worker.state.step))


def export(plan: Plan, eval_generator: torch.nn.Module, step: int, folder: Optional[str] = None) -> None:
    """RUN_URI/final (or ``folder``): the generator (no discriminator), its shape, config and AudioSpec."""
    manifest = {"family": FAMILY, "build": plan.generator, "step": step, "init_from": plan.init_from}
    write_final(folder or uri.join(plan.run, FINAL_DIR), weights=eval_generator.state_dict(), manifest=manifest,
                config=plan.config)


def export_checkpoint(plan: Plan, checkpoint: str, step: int, metrics: dict[str, float], output: str) -> None:
    """``export`` of the generator in a merged checkpoint folder (local) into ``output``
    (``voxray export RUN --checkpoint``)."""
    generator = build_generator(plan.generator)
    load_weights(generator, evaluation_weights(checkpoint, "generator", plan.config.deepspeed.zero_stage, False))
    export(plan, generator, step, output)


# ------------------------------------------------------------------------------------ driver

RECIPE = Recipe(family=FAMILY, metric=METRIC, metric_label=METRIC_LABEL, metrics=METRICS, prepare=prepare,
                columns=lambda plan: COLUMNS, train_loop=train_loop, search_space=search_space,
                export_checkpoint=export_checkpoint)
train = RECIPE.train            # the family's entry point: train(store, run, config, callbacks, gate, console)
