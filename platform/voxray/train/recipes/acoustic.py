"""``voxray train acoustic``: a FastSpeech2-family model on Ray Train workers, each one running a
DeepSpeed ZeRO engine. Reads top to bottom: plan (driver) -> model (worker) -> loop -> validate
-> checkpoint -> export.

Re-running the same command on the same RUN_URI resumes from the latest checkpoint (Ray Train
finds it in RUN_URI), with the same step, optimizer, scheduler, EMA, early stopping and data
position. ``finetune.init_from=RUN/final`` starts from a trained model; with ``lora.rank > 0``
only LoRA adapters and the embedding rows of tokens/speakers/languages new to that model train.
"""

from __future__ import annotations

import json
import os
import random
import signal
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from voxray import uri
from voxray.audio import AudioSpec
from voxray.config import Config, ConfigError, save_config
from voxray.data import batching
from voxray.losses.acoustic import acoustic_losses
from voxray.models.acoustic import fastspeech2
from voxray.models.griffin_lim import mel_to_audio
from voxray.train import checkpoint as ckpt
from voxray.train.data import BatchStream, PrefetchedShard, ShardConfig, pyarrow_filesystem, store_datasets
from voxray.train.export import FINAL_DIR, read_final, write_final
from voxray.train.finetune import apply_lora, grow_embedding, merge_lora, union_names
from voxray.train.loop import (NonFiniteError, all_reduce_sum, build_engine, grad_norm,
                               init_deepspeed_distributed, update_ema, worker_info)
from voxray.train.schedules import EMA

FAMILY = "acoustic"
COLUMNS = ["id", "token_ids", "speaker_index", "language_index", "n_frames", "mel", "f0", "energy",
           "durations"]
LORA_TARGETS = r".*\.(attn\.(qkv|out)|ffn\.(up|down))$"      # attention and feed-forward projections
LOSS_NAMES = ("total", "mel", "duration", "pitch", "energy", "alignment", "binarization")
# Keys that must not change when a run resumes: they change the model, its shards or its labels.
# Fault injection for recovery drills: "RANK:STEP" makes that rank's process die (SIGKILL) after
# that optimizer step, once per run folder; Ray Train must then recover the run.
KILL_ENV = "VOXRAY_FAULT_KILL_RANK_AT_STEP"
ABORTED_FILE = "aborted.json"        # written by rank 0 when the non-finite guard stops the run
SCHEDULER_STOP = "stopped by the sweep's scheduler"
RESUME_FIXED = ("model", "lora", "finetune", "deepspeed.zero_stage", "train.num_workers", "audio")


class TrainingError(RuntimeError):
    """The run failed; the message says why and where to look."""


def _inject_fault(run: str) -> None:
    """KILL_ENV's drill, once per run folder (a marker file there): wait until the controller has
    surely taken the last checkpoint's reports (Ray Train collects them asynchronously; a worker
    that dies right after reporting can take its checkpoint with it), then die like a lost node."""
    marker = uri.join(run, "fault-injected")
    if uri.exists(marker):
        return
    uri.write_text(marker, "")
    time.sleep(5)
    os.kill(os.getpid(), signal.SIGKILL)


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
    storage_env: dict[str, str] = field(default_factory=dict)


def _names_by_index(table: dict[str, dict]) -> list[str]:
    return [name for name, _ in sorted(table.items(), key=lambda item: item[1]["index"])]


def _g2p_modes(languages: dict[str, dict]) -> dict[str, str]:
    return {name: ("espeak" if info["g2p"].startswith("espeak") else info["g2p"])
            for name, info in languages.items()}


def _differences(old: dict, new: dict, keys: tuple[str, ...]) -> list[str]:
    """Dotted leaf keys under ``keys`` whose values differ between two config dicts."""
    changed = []

    def compare(key: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                compare(f"{key}.{name}", a.get(name), b.get(name))
        elif a != b:
            changed.append(f"{key}: {a!r} -> {b!r}")

    for key in keys:
        a, b = old, new
        for part in key.split("."):
            a, b = (a or {}).get(part), (b or {}).get(part)
        compare(key, a, b)
    return changed


def _check_resume(run: str, config: Config) -> None:
    saved = uri.join(run, "config.yaml")
    fs, inner = uri.filesystem(run)
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(inner, detail=False)] if fs.isdir(inner) else []
    if not (any(name.startswith("checkpoint_") for name in names) and uri.exists(saved)):
        return
    import yaml

    changed = _differences(yaml.safe_load(uri.read_text(saved)), config.model_dump(mode="json"), RESUME_FIXED)
    if changed:
        raise ConfigError(f"{run} holds checkpoints of a run with a different setup; resuming would "
                          f"not fit them ({'; '.join(changed)}). Use a new --output.")


def prepare(store: str, run: str, config: Config) -> Plan:
    """Read the store's stats (and the base model when fine-tuning), fix labels and sizes, check a
    resumed run still fits its checkpoints, and save the resolved config to RUN_URI."""
    store, run = uri.absolute(store), uri.absolute(run)      # workers run in another directory
    if config.finetune.init_from:
        config = config.model_copy(update={"finetune": config.finetune.model_copy(
            update={"init_from": uri.absolute(config.finetune.init_from)})})
    stats_path = uri.join(store, "stats.json")
    if not uri.exists(stats_path):
        raise FileNotFoundError(f"{store} is not a feature store (no stats.json); run voxray preprocess first")
    stats = json.loads(uri.read_text(stats_path))
    for split in ("train", "val"):
        if not stats["splits"].get(split, {}).get("utterances"):
            raise ValueError(f"the feature store {store} has no {split} utterances")
    spec = AudioSpec(**stats["audio_spec"])
    config = config.model_copy(update={"audio": spec})   # the store decides the audio constants
    vocabulary, speakers = list(stats["vocabulary"]), _names_by_index(stats["speakers"])
    languages, g2p = _names_by_index(stats["languages"]), _g2p_modes(stats["languages"])
    features = stats["features"]
    build_args = dict(preset=config.model.preset, vocab_size=len(vocabulary), n_mels=spec.n_mels,
                      n_speakers=len(speakers), n_languages=len(languages), rotary=config.model.rotary,
                      swiglu=config.model.swiglu, learn_alignment=not stats["has_durations"],
                      dropout=config.model.dropout,
                      pitch_stats=(features["f0_voiced"]["mean"], features["f0_voiced"]["std"] or 1.0),
                      energy_stats=(features["energy"]["mean"], features["energy"]["std"] or 1.0),
                      mel_stats=(features["mel"]["mean_per_channel"],
                                 [max(s, 1e-3) for s in features["mel"]["std_per_channel"]]))
    plan = dict(store=store, run=run, store_stats=stats, vocabulary=vocabulary, speakers=speakers,
                languages=languages, g2p=g2p, storage_env=uri.storage_env())
    if config.finetune.init_from:
        base = read_final(config.finetune.init_from)
        if base.manifest.get("family") != FAMILY:
            raise ValueError(f"{config.finetune.init_from} holds a {base.manifest.get('family')!r} model, "
                             f"not an {FAMILY} model")
        if base.audio_spec != spec:
            raise ValueError(f"the base model's AudioSpec {base.audio_spec} differs from the store's {spec}")
        config = config.model_copy(update={"model": base.config.model})
        vocabulary, token_map, new_tokens = union_names(base.vocabulary.tokens, vocabulary)
        speakers, speaker_map, new_speakers = union_names(base.manifest["speakers"], speakers)
        languages, language_map, new_languages = union_names(base.manifest["languages"], languages)
        build_args = {**base.manifest["build"], "vocab_size": len(vocabulary),
                      "n_speakers": len(speakers), "n_languages": len(languages)}
        plan.update(vocabulary=vocabulary, speakers=speakers, languages=languages,
                    g2p={**base.manifest["g2p"], **g2p}, init_from=config.finetune.init_from,
                    base_build_args=base.manifest["build"],
                    maps={"token_ids": token_map, "speaker_index": speaker_map,
                          "language_index": language_map},
                    added={"token_embedding": new_tokens, "speaker_embedding": new_speakers,
                           "language_embedding": new_languages})
    _check_resume(run, config)
    save_config(config, uri.join(run, "config.yaml"))
    if uri.exists(uri.join(run, ABORTED_FILE)):
        uri.remove_tree(uri.join(run, ABORTED_FILE))    # a re-run tries again from the latest checkpoint
    return Plan(config=config, build_args=build_args, **plan)


# ------------------------------------------------------------------------------------- model

def build_model(plan: Plan, load_base: bool = True) -> torch.nn.Module:
    """The model a worker trains: built fresh, or the base model grown to the new label sets,
    wrapped with LoRA adapters when ``lora.rank > 0``."""
    if plan.init_from is None:
        return fastspeech2.build(**plan.build_args)
    model = fastspeech2.build(**plan.base_build_args)
    if load_base:
        model.load_state_dict(read_final(plan.init_from).weights)
    model.token_embedding = grow_embedding(model.token_embedding, plan.build_args["vocab_size"])
    model.speaker_embedding = grow_embedding(model.speaker_embedding, plan.build_args["n_speakers"])
    model.language_embedding = grow_embedding(model.language_embedding, plan.build_args["n_languages"])
    lora = plan.config.lora
    if lora.rank > 0:
        model = apply_lora(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                           target_modules=LORA_TARGETS, trainable_tokens=plan.added)
    return model


def collate(plan: Plan, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Store rows -> tensors; when fine-tuning, store label indices become the model's."""
    if plan.maps:
        rows = [{**row, **{column: lookup[np.asarray(row[column], dtype=np.int64)]
                           for column, lookup in plan.maps.items()}} for row in rows]
    return batching.collate(rows)


def losses(model, batch: dict[str, Any], config: Config, device: torch.device,
           dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Teacher-forced forward pass and the weighted loss components (fp32)."""
    moved = {k: (None if v is None else v.to(device)) for k, v in batch.items()}
    floats = {k: moved[k].to(dtype) for k in ("mels", "pitch", "energy")}
    out = model(moved["tokens"], moved["token_lengths"], moved["speakers"], moved["languages"],
                floats["mels"], moved["mel_lengths"], floats["pitch"], floats["energy"], moved["durations"])
    out = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}
    weights = config.loss
    return acoustic_losses(out, moved["mels"].float(), moved["token_lengths"], moved["mel_lengths"],
                           mel=weights.mel, duration=weights.duration, pitch=weights.pitch,
                           energy=weights.energy, alignment_weight=weights.alignment,
                           binarization_weight=weights.binarization)


# ------------------------------------------------------------------------------- validation

@torch.no_grad()
def validate(plan: Plan, val_shard: PrefetchedShard, eval_model, ema: EMA, device, runlog,
             step: int) -> dict[str, float]:
    """EMA weights on every worker's share of the val split; frame-weighted means over all."""
    ema.copy_to(eval_model)
    eval_model.eval()
    sums = np.zeros(len(LOSS_NAMES) + 1)
    first = None
    for rows in val_shard.batches(plan.config.train.batch_size):
        batch = collate(plan, rows)
        parts = losses(eval_model, batch, plan.config, device, torch.float32)
        frames = float(batch["mel_lengths"].sum())
        sums[:-1] += [frames * float(parts.get(name, torch.tensor(0.0))) for name in LOSS_NAMES]
        sums[-1] += frames
        first = first or batch
    totals = all_reduce_sum(sums.tolist(), device)
    metrics = {f"val_{name}": totals[i] / max(totals[-1], 1) for i, name in enumerate(LOSS_NAMES)}
    if runlog is not None and first is not None:
        tokens = first["tokens"][:1].to(device)
        mel, mel_lengths = eval_model.infer(tokens, first["token_lengths"][:1].to(device),
                                            first["speakers"][:1].to(device), first["languages"][:1].to(device))
        predicted, target = mel[0, : int(mel_lengths[0])], first["mels"][0, : int(first["mel_lengths"][0])]
        runlog.mel(step, "val/mel_predicted_vs_target", predicted, target)
        runlog.audio(step, "val/audio_griffin_lim", mel_to_audio(predicted.cpu(), plan.config.audio),
                     plan.config.audio.sample_rate)
    return metrics


# -------------------------------------------------------------------------------- the loop

class Interval:
    """Sums between two log points, reduced across workers when logged."""

    def __init__(self) -> None:
        self.sums = np.zeros(len(LOSS_NAMES) + 3)   # losses, micro-batches, mel frames, padding
        self.started = time.perf_counter()

    def add(self, parts: dict[str, torch.Tensor], mel_frames: int, padding: float) -> None:
        self.sums[: len(LOSS_NAMES)] += [float(parts.get(name, torch.tensor(0.0)).detach()) for name in LOSS_NAMES]
        self.sums[len(LOSS_NAMES):] += [1, mel_frames, padding]

    def reduce(self, device) -> dict[str, float]:
        totals = all_reduce_sum(self.sums.tolist(), device)
        count, frames, padding = totals[len(LOSS_NAMES):]
        seconds = time.perf_counter() - self.started
        means = {name: totals[i] / max(count, 1) for i, name in enumerate(LOSS_NAMES)}
        return {**means, "mel_frames_per_s": frames / seconds, "padding_fraction": padding / max(count, 1),
                "mel_frames": frames}


def save_and_report(metrics: dict[str, Any], state: ckpt.TrainerState, engine, ema: EMA, rank: int,
                    trainable_only: bool) -> None:
    """Every rank writes its part and reports it; Ray Train merges the parts into one folder."""
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory(prefix="voxray-ckpt-") as folder:
        ckpt.save(folder, engine=engine, rank=rank, state=state, ema=ema, trainable_only=trainable_only)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder),
                         checkpoint_dir_name=f"checkpoint_{state.step:08d}")


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker. Setup -> restore -> loop (step, log, validate, checkpoint) -> export."""
    import ray.train

    from voxray.train.metrics import RunLog

    plan: Plan = loop_config["plan"]
    gate = loop_config.get("gate")                     # a sweep's SchedulerGate, else None
    config, train = plan.config, plan.config.train
    os.environ.update(plan.storage_env)
    init_deepspeed_distributed()
    info = worker_info(train.use_gpu)
    torch.manual_seed(train.seed)                      # the same initial weights on every rank
    model = build_model(plan).to(info.device)
    ema = EMA(model, train.ema_decay)
    eval_model = build_model(plan, load_base=False).to(info.device)
    engine, lr_schedule = build_engine(model, config, info.world_size)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.deepspeed.precision]
    trainable_only = config.lora.rank > 0

    state = ckpt.TrainerState()
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            state = ckpt.load(folder, engine=engine, rank=info.rank, ema=ema, trainable_only=trainable_only)
        state.restarts += 1
    else:
        random.seed(train.seed + info.rank)
        np.random.seed(train.seed + info.rank)
        torch.manual_seed(train.seed + info.rank)      # different dropout masks per rank
    stopper = ckpt.EarlyStopping(train.patience, train.min_delta, **state.early_stopping)
    stream = BatchStream(lambda: ray.train.get_dataset_shard("train"), lambda rows: collate(plan, rows),
                         batch_size=train.batch_size, seed=train.seed, rank=info.rank, position=state.position,
                         cache_bytes=train.shard_cache_mb << 20)
    val_shard = PrefetchedShard(lambda: ray.train.get_dataset_shard("val"), train.shard_cache_mb << 20)
    runlog = RunLog(plan.run, resumed_step=state.step) if info.rank == 0 else None
    if runlog is not None and restored is not None:
        runlog.event(state.step, "resumed", restarts=state.restarts, epoch=state.position.epoch)

    interval = Interval()
    while state.step < train.max_steps and not state.stop_reason:
        model.train()
        batch = stream.next()
        parts = losses(engine, batch, config, info.device, dtype)
        boundary = engine.is_gradient_accumulation_boundary()
        skipped_before = engine.skipped_steps
        engine.backward(parts["total"])
        engine.step()
        interval.add(parts, int(batch["mel_lengths"].sum()), stream.last_padding)
        if not boundary:
            continue
        state.step += 1
        if engine.skipped_steps > skipped_before:
            state.skipped_steps += 1
            state.consecutive_skipped += 1
            if state.consecutive_skipped >= train.max_nonfinite_steps:
                state.stop_reason = (f"non-finite: {state.consecutive_skipped} optimizer steps in a row had a "
                                     f"non-finite loss or gradient (last at step {state.step}; "
                                     f"train.max_nonfinite_steps={train.max_nonfinite_steps})")
                break
        else:
            state.consecutive_skipped = 0
            update_ema(ema, engine, state.step)
        if os.environ.get(KILL_ENV) == f"{info.rank}:{state.step}":
            _inject_fault(plan.run)
        if state.step % train.log_every == 0:
            logged = interval.reduce(info.device)
            state.mel_frames += int(logged.pop("mel_frames"))
            if runlog is not None:
                runlog.scalars(state.step, {**logged, "lr": lr_schedule.get_last_lr()[0],
                                            "grad_norm": grad_norm(engine), "epoch": state.position.epoch,
                                            "skipped_steps": state.skipped_steps})
            interval = Interval()
        if state.step % train.val_every == 0 or state.step == train.max_steps:
            metrics = validate(plan, val_shard, eval_model, ema, info.device, runlog, state.step)
            if stopper.update(metrics["val_mel"]):
                state.stop_reason = (f"early stopping: val_mel did not improve by {train.min_delta} for "
                                     f"{train.patience} validations (best {stopper.best:.4f})")
            state.position, state.early_stopping = stream.position, {"best": stopper.best,
                                                                     "bad_validations": stopper.bad_validations}
            if runlog is not None:
                runlog.scalars(state.step, metrics, kind="val")
                runlog.sync()
            save_and_report({**metrics, "step": state.step, "epoch": state.position.epoch,
                             "skipped_steps": state.skipped_steps, "restarts": state.restarts},
                            state, engine, ema, info.rank, trainable_only)
            if gate is not None and state.step < train.max_steps and not state.stop_reason:
                # In a sweep, wait for the scheduler's decision on this validation: a trial it
                # stops halts here, at the rung, instead of training on until the stop lands.
                stop = gate.should_stop(state.step) if info.rank == 0 else False
                if all_reduce_sum([float(stop)], info.device)[0] > 0:
                    state.stop_reason = f"{SCHEDULER_STOP} at step {state.step}"
            interval = Interval()                      # validation time is not training throughput

    if state.stop_reason.startswith("non-finite"):
        if runlog is not None:                         # the driver raises NonFiniteError from this
            runlog.event(state.step, "aborted", reason=state.stop_reason)
            runlog.close()
            uri.write_text(uri.join(plan.run, ABORTED_FILE),
                           json.dumps({"step": state.step, "reason": state.stop_reason}))
        return
    if state.stop_reason.startswith(SCHEDULER_STOP):
        if runlog is not None:                         # no export: the sweep keeps the trial's checkpoint
            runlog.event(state.step, "stopped", reason=state.stop_reason)
            runlog.close()
        return
    if runlog is not None:
        runlog.event(state.step, "finished", reason=state.stop_reason or "max_steps",
                     skipped_steps=state.skipped_steps)
        export(plan, eval_model, ema, state.step)
        runlog.close()


def export(plan: Plan, eval_model, ema: EMA, step: int) -> None:
    """RUN_URI/final from the EMA weights, LoRA merged."""
    ema.copy_to(eval_model)
    merged = merge_lora(eval_model)
    manifest = {"family": FAMILY, "build": plan.build_args, "speakers": plan.speakers,
                "languages": plan.languages, "g2p": plan.g2p, "step": step,
                "init_from": plan.init_from, "lora_rank": plan.config.lora.rank}
    write_final(uri.join(plan.run, FINAL_DIR), weights=merged.state_dict(), manifest=manifest,
                config=plan.config, vocabulary=plan.vocabulary, stats=plan.store_stats)


# -------------------------------------------------------------------------------- driver

def train(store: str, run: str, config: Config, callbacks: Optional[list] = None,
          gate: Any = None) -> dict[str, Any]:
    """Train (or resume) on Ray; returns a summary. Raises TrainingError / NonFiniteError.
    ``callbacks`` are Ray Train user callbacks and ``gate`` a ``voxray.tune.gate.SchedulerGate``
    (a sweep passes Tune's report callback and its trial's gate)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.exceptions import TrainingFailedError

    from voxray.cluster import ensure_ray

    plan = prepare(store, run, config)
    store, run, train_config = plan.store, plan.run, plan.config.train
    ensure_ray()
    fs_run = uri.filesystem(run)[1] if uri.is_remote(run) else run
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"plan": plan, "gate": gate},
        scaling_config=ScalingConfig(num_workers=train_config.num_workers, use_gpu=train_config.use_gpu,
                                     resources_per_worker={"CPU": train_config.cpus_per_worker,
                                                           **({"GPU": 1} if train_config.use_gpu else {}),
                                                           **train_config.worker_resources}),
        run_config=RunConfig(
            name=os.path.basename(fs_run.rstrip("/")), storage_path=os.path.dirname(fs_run.rstrip("/")),
            storage_filesystem=pyarrow_filesystem(run),
            checkpoint_config=CheckpointConfig(num_to_keep=train_config.keep_best,
                                               checkpoint_score_attribute="val_mel",
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=train_config.max_failures),
            worker_runtime_env={"env_vars": plan.storage_env} if plan.storage_env else None,
            callbacks=callbacks),
        datasets=store_datasets(store, COLUMNS),
        dataset_config=ShardConfig(),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise TrainingError(f"training failed after {train_config.max_failures} restarts: {exc}") from exc
    aborted = uri.join(run, ABORTED_FILE)
    if uri.exists(aborted):
        raise NonFiniteError(json.loads(uri.read_text(aborted))["reason"])
    best = result.best_checkpoints or []
    return {
        "run": run,
        "final": uri.join(run, FINAL_DIR),
        "step": (result.metrics or {}).get("step"),
        "val_mel": (result.metrics or {}).get("val_mel"),
        "best": [(c.path, m.get("val_mel"), m.get("step")) for c, m in best],
    }
