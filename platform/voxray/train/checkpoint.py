"""Checkpoints under Ray Train: every rank writes its own piece, Ray merges them into one folder.

A checkpoint folder holds
  ds/<engine>/            DeepSpeed's checkpoint of each named engine (``model``; ``generator`` and
                          ``discriminator`` for a GAN): model states, every rank's ZeRO optimizer
                          shard (and ZeRO-3 parameter shard), its LR scheduler. One folder per
                          engine: DeepSpeed's file names would collide otherwise.
  rng/rank_<r>.pt         each rank's Python, NumPy, torch (and CUDA) RNG states and its data
                          stream's collate generator (crops and masks resume exactly)
  trainer_state.json      step, data position, early stopping, skipped-step counters (rank 0)
  ema/<engine>.safetensors  EMA weights of the engines that keep one (rank 0; every rank holds the
                          same full copy)
  extra/<name>.pt         state outside the engines that a resume needs: AdaLoRA's rank
                          allocator, the percentile clip's recent norms (rank 0; the same on
                          every rank)
  manifest/rank_<r>.json  written last by each rank: the files of its part and their sizes

Every rank reports its folder to ``ray.train.report``; Ray Train copies them all into the same
storage folder, so no rank's shard is lost (saving only rank 0's folder loses the others' ZeRO
shards and the run cannot resume). Ray registers a checkpoint only when every rank reported it
(a run killed while writing one resumes from the one before); the manifests catch what happens
to a registered one later (a truncated or deleted file): ``complete`` skips it, naming the file,
and resume takes the newest complete checkpoint before it.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from voxray.train.contract import StopReason
from voxray.train.data import DataPosition
from voxray.train.ema import EMA

DS_DIR = "ds"
EMA_DIR = "ema"
EXTRA_DIR = "extra"
MANIFEST_DIR = "manifest"


class CheckpointError(RuntimeError):
    """No checkpoint of the run can be resumed from, or one could not be written; says why."""


@dataclass
class TrainerState:
    step: int = 0                       # optimizer steps applied or skipped (DeepSpeed's global_steps)
    position: DataPosition = field(default_factory=DataPosition)
    early_stopping: dict = field(default_factory=dict)
    skipped_steps: int = 0              # non-finite steps skipped, in total
    consecutive_skipped: int = 0
    units: float = 0                    # what the family counts as throughput (mel frames, tokens), all workers
    restarts: int = 0                   # times this run resumed from a checkpoint
    stop: StopReason = StopReason.NONE  # set when early stopping, the guard or a sweep ended the run
    stop_reason: str = ""               # the same, in words for the console and the run log

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "stop": self.stop.value}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        data = json.loads(text)
        data["position"] = DataPosition(**data["position"])
        data["stop"] = StopReason(data["stop"]) if "stop" in data else _legacy_stop(data.get("stop_reason", ""))
        return cls(**data)


def _legacy_stop(text: str) -> StopReason:
    """The stop of a trainer_state.json written before StopReason, from its words (only there)."""
    for prefix, reason in (("early stopping", StopReason.EARLY_STOPPING), ("non-finite", StopReason.NON_FINITE),
                           ("stopped by the sweep", StopReason.SCHEDULER)):
        if text.startswith(prefix):
            return reason
    return StopReason.NONE


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(folder: str, *, engines: dict[str, Any], rank: int, state: TrainerState, emas: dict[str, EMA],
         collate_rng: Optional[dict[str, Any]], trainable_only: bool,
         extras: Optional[dict[str, dict[str, Any]]] = None) -> None:
    """Write this rank's part of a checkpoint into the local ``folder`` (``extras``: named states
    the same on every rank, written by rank 0; ``read_extra`` reads one back)."""
    os.makedirs(os.path.join(folder, "rng"), exist_ok=True)
    for name, engine in engines.items():
        engine.save_checkpoint(os.path.join(folder, DS_DIR), tag=name, save_latest=False,
                               exclude_frozen_parameters=trainable_only)
    torch.save({**_rng_state(), "collate": collate_rng}, os.path.join(folder, "rng", f"rank_{rank}.pt"))
    if rank == 0:
        with open(os.path.join(folder, "trainer_state.json"), "w") as handle:
            handle.write(state.to_json())
        os.makedirs(os.path.join(folder, EMA_DIR), exist_ok=True)
        for name, ema in emas.items():
            save_file({k: v.contiguous() for k, v in ema.state_dict().items()},
                      os.path.join(folder, EMA_DIR, f"{name}.safetensors"))
        for name, extra in (extras or {}).items():
            os.makedirs(os.path.join(folder, EXTRA_DIR), exist_ok=True)
            torch.save(extra, os.path.join(folder, EXTRA_DIR, f"{name}.pt"))
    _write_manifest(folder, rank, state.step)


def _write_manifest(folder: str, rank: int, step: int) -> None:
    """MANIFEST_DIR/rank_<r>.json: the files this rank wrote and their sizes, written last."""
    import torch.distributed as dist

    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, folder)] = os.path.getsize(path)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    os.makedirs(os.path.join(folder, MANIFEST_DIR), exist_ok=True)
    with open(os.path.join(folder, MANIFEST_DIR, f"rank_{rank}.json"), "w") as handle:
        json.dump({"rank": rank, "world_size": world, "step": step, "files": files}, handle)


def problem(filesystem, path: str) -> Optional[str]:
    """Why the checkpoint folder ``path`` (on a pyarrow ``filesystem``: local or the run's S3) cannot
    be resumed from, or None when every rank's manifest is there and every file it lists has its
    size. A folder from before manifests existed counts as complete when it has trainer_state.json."""
    from pyarrow.fs import FileSelector, FileType

    infos = filesystem.get_file_info(FileSelector(path, recursive=True, allow_not_found=True))
    sizes = {os.path.relpath(i.path, path): i.size for i in infos if i.type == FileType.File}
    manifests = [json.loads(filesystem.open_input_stream(f"{path}/{name}").read())
                 for name in sorted(sizes) if name.startswith(f"{MANIFEST_DIR}/rank_")]
    if not manifests:
        return None if "trainer_state.json" in sizes else "no rank finished writing its part (no manifest)"
    missing = sorted(set(range(manifests[0]["world_size"])) - {m["rank"] for m in manifests})
    if missing:
        return f"rank {', '.join(map(str, missing))} did not finish writing its part (no {MANIFEST_DIR}/rank_N.json)"
    for manifest in manifests:
        for name, size in sorted(manifest["files"].items()):
            if name not in sizes:
                return f"{name} (rank {manifest['rank']}) is missing"
            if sizes[name] != size:
                return f"{name} (rank {manifest['rank']}) is {sizes[name]:,} bytes, {size:,} written (truncated)"
    return None


def complete(checkpoint) -> tuple[Any, list[tuple[str, str]]]:
    """The checkpoint to resume from: Ray Train's latest (``checkpoint``) when complete, else the
    newest complete one before it in the run folder; and the (folder name, reason) of each skipped.
    Every rank reads the same storage, so every rank picks the same one."""
    from pyarrow.fs import FileSelector, FileType
    from ray.train import Checkpoint

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent, name = path.rsplit("/", 1)
    skipped: list[tuple[str, str]] = []
    reason = problem(fs, path)
    if reason is None:
        return checkpoint, skipped
    skipped.append((name, reason))
    older = sorted((i.base_name for i in fs.get_file_info(FileSelector(parent))
                    if i.type == FileType.Directory and i.base_name.startswith("checkpoint_") and i.base_name < name),
                   reverse=True)
    for candidate in older:
        reason = problem(fs, f"{parent}/{candidate}")
        if reason is None:
            return Checkpoint(f"{parent}/{candidate}", filesystem=fs), skipped
        skipped.append((candidate, reason))
    raise CheckpointError(f"no complete checkpoint to resume from in {parent}: "
                          + "; ".join(f"{n}: {r}" for n, r in skipped)
                          + ". Train into a new --output, or move the run's checkpoint_* folders away to start over")


def load(folder: str, *, engines: dict[str, Any], rank: int, emas: dict[str, EMA],
         trainable_only: bool) -> tuple[TrainerState, Optional[dict[str, Any]]]:
    """Restore engines (optimizers, schedulers), EMAs and RNG from a merged checkpoint folder;
    returns the trainer state and the collate generator's state (None if absent). An EMA keeps
    the run's own decay (``train.ema_decay`` may change on resume); an EMA the checkpoint does not
    hold (turned on at resume) starts from the restored weights (``fresh_emas`` names them)."""
    for name, engine in engines.items():
        path, _ = engine.load_checkpoint(os.path.join(folder, DS_DIR), tag=name, load_optimizer_states=True,
                                         load_lr_scheduler_states=True, load_module_strict=not trainable_only)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint of the engine {name!r} under {folder}/{DS_DIR}/{name}")
    for name, ema in emas.items():
        if name in fresh_emas(folder, emas):
            from voxray.train.engine import gathered

            with gathered(engines[name]):
                ema.restart(engines[name].module)
            continue
        decay = ema.decay
        ema.load_state_dict(load_file(os.path.join(folder, EMA_DIR, f"{name}.safetensors")))
        ema.decay = decay
    collate_rng = None
    rng_file = os.path.join(folder, "rng", f"rank_{rank}.pt")
    if os.path.exists(rng_file):          # absent when resuming with more workers than before
        states = torch.load(rng_file, weights_only=False)
        _set_rng_state(states)
        collate_rng = states.get("collate")
    with open(os.path.join(folder, "trainer_state.json")) as handle:
        return TrainerState.from_json(handle.read()), collate_rng


def read_extra(folder: str, name: str) -> Optional[dict[str, Any]]:
    """A state ``save`` wrote under ``extras[name]``, or None when the checkpoint has none."""
    path = os.path.join(folder, EXTRA_DIR, f"{name}.pt")
    return torch.load(path, weights_only=False) if os.path.exists(path) else None


def fresh_emas(folder: str, emas: dict[str, EMA]) -> list[str]:
    """The engines whose EMA the checkpoint in ``folder`` does not hold."""
    return [name for name in emas if not os.path.exists(os.path.join(folder, EMA_DIR, f"{name}.safetensors"))]


def evaluation_weights(folder: str, engine: str, zero_stage: int, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The weights a run validated and would export at a merged checkpoint ``folder`` (local):
    the EMA's when it kept one (every floating-point entry of the model), else the engine's
    module weights: DeepSpeed's module states at ZeRO 0-2, its partitioned fp32 shards gathered at
    ZeRO-3 (``zero_to_fp32``; no rank's file holds them whole). With ``trainable_only`` (LoRA)
    the engine saved only the trainable parameters: load them over the base weights."""
    ema_file = os.path.join(folder, EMA_DIR, f"{engine}.safetensors")
    if os.path.exists(ema_file):
        state = load_file(ema_file)
        return {k[len("shadow."):]: v for k, v in state.items() if k.startswith("shadow.")}
    return module_weights(folder, engine, zero_stage, trainable_only)


MODEL_STATES = "mp_rank_00_model_states.pt"       # DeepSpeed's module states of an engine (ZeRO 0-2: whole)


def module_weights(folder: str, engine: str, zero_stage: int, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """An engine's module weights at a merged checkpoint ``folder`` (local), never its EMA:
    DeepSpeed's module states at ZeRO 0-2, its partitioned fp32 shards gathered at ZeRO-3."""
    if zero_stage == 3:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(os.path.join(folder, DS_DIR), tag=engine,
                                                        exclude_frozen_parameters=trainable_only)
    states = os.path.join(folder, DS_DIR, engine, MODEL_STATES)
    if not os.path.exists(states):
        raise FileNotFoundError(f"{folder} holds no weights of the engine {engine!r} ({states} is missing)")
    return torch.load(states, map_location="cpu", weights_only=False)["module"]


def optimizer_state_bytes(folder: str, engine: str, zero_stage: int, world_size: int) -> list[int]:
    """Bytes of optimizer state (fp32 master weights and Adam moments) each rank holds, read from
    a merged checkpoint ``folder``: at ZeRO-0 every rank holds the whole state (rank 0 saves it),
    at ZeRO 1-3 each rank its own shard. The benchmarks' one definition of the quantity."""
    def tensor_bytes(obj: Any) -> int:
        if torch.is_tensor(obj):
            return obj.numel() * obj.element_size()
        if isinstance(obj, dict):
            return sum(tensor_bytes(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(tensor_bytes(v) for v in obj)
        return 0

    base = os.path.join(folder, DS_DIR, engine)
    if zero_stage == 0:
        state = torch.load(os.path.join(base, MODEL_STATES), map_location="cpu", weights_only=False)
        return [tensor_bytes(state["optimizer"])] * world_size
    return [tensor_bytes(torch.load(os.path.join(base, f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"),
                                    map_location="cpu", weights_only=False)["optimizer_state_dict"])
            for rank in range(world_size)]


def latest_with_engine(run: str, engine: str) -> Optional[str]:
    """The newest checkpoint folder of the local ``run`` that holds ``engine``'s module states
    (ZeRO 0-2), or None."""
    import glob

    found = sorted(glob.glob(os.path.join(run, "checkpoint_*", DS_DIR, engine, MODEL_STATES)))
    return os.path.dirname(os.path.dirname(os.path.dirname(found[-1]))) if found else None


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """``weights`` (``evaluation_weights``) into ``model``; entries it lacks (the frozen base of a
    LoRA checkpoint, integer buffers an EMA does not average) keep the model's own."""
    own = model.state_dict()
    unknown = sorted(set(weights) - set(own))
    if unknown:
        raise ValueError(f"the checkpoint's weights do not fit the run's model: {unknown[:5]}")
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in weights.items()}})
