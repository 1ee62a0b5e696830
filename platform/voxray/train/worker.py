"""The worker side of every training run: what a recipe's loop needs from Ray Train, in one place.

    worker = start(WorkerSettings.of(loop_config))  # distributed set-up, device, seeds
    worker.restore(engines, emas)                   # latest checkpoint, if Ray Train has one
    stream = worker.train_stream(collate, ...)      # this rank's shard, resumed where it was
    while worker.training():
        ... forward, backward, engine.step() ...
        if worker.count_step(skipped=...): update_ema(...)
        if worker.due(train.log_every): worker.log(meter.reduce(worker.device), lr=...)
        if worker.validation_due(): worker.checkpoint(metrics, engines, emas, stream)
    worker.finish(export)

``checkpoint`` writes this rank's part, reports it (Ray Train merges the parts), updates early
stopping on the recipe's metric and, in a sweep, waits for the scheduler's decision. Only this
module and ``launch.py`` (the driver side) call Ray Train.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from voxray import uri
from voxray.config import Config
from voxray.train import checkpoint as ckpt
from voxray.train import curriculum
from voxray.train.adalora import AdaLoraSteps
from voxray.train.contract import StopReason, WorkerSettings
from voxray.train.data import BatchStream, DataPosition, PrefetchedShard, frames
from voxray.train.distributed import all_reduce_sum, init_deepspeed_distributed
from voxray.train.early_stopping import EarlyStopping
from voxray.train.ema import EMA
from voxray.train.gradients import ExplosionWatch, PercentileClip, layer_norms, set_clip
from voxray.train.meter import Reading
from voxray.train.runlog import RunLog
from voxray.train.watchdog import StackWatch

# Fault injection for recovery drills, each "RANK:STEP" and once per run folder: after that optimizer
# step that rank's process dies (SIGKILL; Ray Train must recover the run), or stops making collectives
# (it sleeps while the others wait in theirs: a hung collective, which must fail at train.hang_timeout).
KILL_ENV = "VOXRAY_FAULT_KILL_RANK_AT_STEP"
HANG_ENV = "VOXRAY_FAULT_HANG_RANK_AT_STEP"
KILL_IN_CHECKPOINT_ENV = "VOXRAY_FAULT_KILL_RANK_IN_CHECKPOINT"     # dies with its part written, not reported
DISK_FULL_ENV = "VOXRAY_FAULT_DISK_FULL_AT_STEP"     # its checkpoint write meets a full device
OOM_ENV = "VOXRAY_FAULT_OOM_RANK_AT_STEP"     # it outgrows a memory cgroup and the kernel's OOM killer kills it
ABORTED_FILE = "aborted.json"        # written by rank 0 when the non-finite guard stops the run
SCHEDULER_STOP = "stopped by the sweep's scheduler"
HEARTBEAT_S = 10.0                   # rank 0 tells the driver it is alive at least this often


@dataclass
class Worker:
    """One rank's view of the run: who it is, the trainer state, and the run's outputs."""

    run: str
    config: Config
    metric: str                              # what early stopping and best-k rank by (lower is better)
    family: str
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    gate: Any = None                         # a sweep's SchedulerGate
    console: Any = None                      # the driver's queue of console records
    watch: Optional[StackWatch] = None       # sends this rank's stack to the console when no step comes
    state: ckpt.TrainerState = field(default_factory=ckpt.TrainerState)
    runlog: Optional[RunLog] = None
    restored: bool = False
    _collate_rng: Optional[dict] = None
    _stopper: Optional[EarlyStopping] = None
    _last_log: tuple[int, float] = (0, 0.0)
    _last_beat: float = 0.0
    _progress: tuple[str, ...] = ()
    _layer_norms: dict = field(default_factory=dict)        # engine -> layer -> norm, for the next log
    _explosions: dict = field(default_factory=dict)         # engine -> ExplosionWatch
    _clips: dict = field(default_factory=dict)              # engine -> PercentileClip
    _adalora: dict = field(default_factory=dict)            # engine -> AdaLoraSteps (lora.adalora)
    _val_progress: Optional[tuple[str, ...]] = None

    @property
    def train(self):
        return self.config.train

    # ------------------------------------------------------------------------------ start

    def restore(self, engines: dict[str, Any], emas: Optional[dict[str, EMA]] = None,
                trainable_only: bool = False) -> None:
        """Load the latest checkpoint when Ray Train has one (a resumed or restarted run), else
        seed this rank's RNGs (different dropout masks per rank); open the run log on rank 0."""
        import ray.train

        restored = ray.train.get_checkpoint()
        self._adalora = {name: steps for name, engine in engines.items()
                         if (steps := AdaLoraSteps.of(engine.module)) is not None}
        fresh: list[str] = []
        skipped: list[tuple[str, str]] = []
        if restored is not None:
            restored, skipped = ckpt.complete(restored)
            with restored.as_directory() as folder:
                fresh = ckpt.fresh_emas(folder, emas or {})
                self.state, self._collate_rng = ckpt.load(folder, engines=engines, rank=self.rank,
                                                          emas=emas or {}, trainable_only=trainable_only)
                for name, steps in self._adalora.items():
                    saved = ckpt.read_extra(folder, f"adalora_{name}")
                    if saved is None:
                        raise ckpt.CheckpointError(f"the checkpoint of step {self.state.step} holds no AdaLoRA "
                                                   f"allocator state for {name}: it was not trained with lora.adalora")
                    steps.load(saved, self.device)
                self._clips = self._saved_clips(folder, engines)
            self.state.restarts += 1
            self.restored = True
        else:
            seed = self.train.seed + self.rank
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        self._stopper = EarlyStopping(self.train.patience, self.train.min_delta, **self.state.early_stopping)
        if self.rank == 0:
            self.runlog = RunLog(self.run, resumed_step=self.state.step)
            for name, reason in skipped:
                self.runlog.event(self.state.step, "checkpoint_skipped", checkpoint=name, reason=reason)
                self.warn(f"{name} skipped, it is incomplete: {reason}; resuming from the checkpoint of step "
                          f"{self.state.step}")
            if self.restored:
                self.runlog.event(self.state.step, "resumed", restarts=self.state.restarts,
                                  epoch=self.state.position.epoch)
            if fresh:
                self.warn(f"the checkpoint of step {self.state.step} holds no EMA of {', '.join(fresh)}: "
                          f"train.ema_decay={self.train.ema_decay} starts averaging from its weights now")
        self._last_log = (self.state.step, time.perf_counter())

    def train_stream(self, collate: Callable, *, batch_size: int, length: Callable[[dict], int] = frames
                     ) -> BatchStream:
        """This rank's endless stream of training batches, at the restored position."""
        import ray.train

        def open_stream(name: str, position: DataPosition) -> BatchStream:
            return BatchStream(lambda: ray.train.get_dataset_shard(name), collate, batch_size=batch_size,
                               seed=self.train.seed, rank=self.rank, device=self.device, position=position,
                               cache_bytes=self.train.shard_cache_mb << 20, length=length)

        if self.train.curriculum:
            stream = curriculum.CurriculumStream(self.train.curriculum, lambda: self.state.step, open_stream,
                                                 self.state.position, self._curriculum_stage)
        else:
            stream = open_stream("train", self.state.position)
        if self._collate_rng is not None:
            stream.set_rng_state(self._collate_rng)
        return stream

    def _curriculum_stage(self, stage: int) -> None:
        """The console and TensorBoard say which curriculum stage trains from this step."""
        if self.runlog is not None:
            self._event("curriculum", reason=curriculum.describe(self.train.curriculum, stage))
            number = len(self.train.curriculum) + 1 if stage == curriculum.EVERYTHING else stage + 1
            self.runlog.scalars(self.state.step, {"stage": number}, kind="curriculum")

    def val_shard(self) -> PrefetchedShard:
        """This rank's share of the validation split (every row counted once over all ranks)."""
        import ray.train

        return PrefetchedShard(lambda: ray.train.get_dataset_shard("val"), self.train.shard_cache_mb << 20)

    def started(self, parameters: dict[str, tuple[int, int]], progress: tuple[str, ...],
                val_progress: Optional[tuple[str, ...]] = None) -> None:
        """The console's start line: ``parameters`` {module: (total, trainable)}; ``progress`` the
        logged values the progress lines show; ``val_progress`` the validation metrics the
        validation lines show (None: all of them)."""
        self._progress = progress
        self._val_progress = val_progress
        self._send({"kind": "start", "family": self.family, "workers": self.world_size,
                    "use_gpu": self.train.use_gpu, "zero_stage": self.config.deepspeed.zero_stage,
                    "precision": self.config.deepspeed.precision, "parameters": parameters,
                    "max_steps": self.train.max_steps, "run": self.run, "step": self.state.step})

    # ------------------------------------------------------------------------------- loop

    def training(self) -> bool:
        return self.state.step < self.train.max_steps and self.state.stop is StopReason.NONE

    def count_step(self, skipped: bool) -> bool:
        """Count one optimizer step; True when it was applied (update the EMA), False when the
        engine skipped it (non-finite); too many skipped in a row stop the run."""
        state = self.state
        state.step += 1
        if skipped:
            state.skipped_steps += 1
            state.consecutive_skipped += 1
            if state.consecutive_skipped >= self.train.max_nonfinite_steps:
                state.stop, state.stop_reason = StopReason.NON_FINITE, (f"non-finite: {state.consecutive_skipped} optimizer steps in a row had a "
                                     f"non-finite loss or gradient (last at step {state.step}; "
                                     f"train.max_nonfinite_steps={self.train.max_nonfinite_steps})")
        else:
            state.consecutive_skipped = 0
        if self.watch is not None:
            self.watch.stepped()
        if os.environ.get(KILL_ENV) == f"{self.rank}:{state.step}":
            _inject_fault(self.run)
        if os.environ.get(HANG_ENV) == f"{self.rank}:{state.step}":
            _hang(self.run)
        if os.environ.get(OOM_ENV) == f"{self.rank}:{state.step}":
            _outgrow_memory(self.run)
        if self.rank == 0 and time.monotonic() - self._last_beat > HEARTBEAT_S:
            self._send({"kind": "beat", "step": state.step})
        return not skipped

    def _saved_clips(self, folder: str, engines: dict[str, Any]) -> dict[str, PercentileClip]:
        """The percentile clip's recent norms from the checkpoint (the global norm: the same on
        every rank); none when it was saved without train.clip=percentile (they build up again)."""
        clips = {}
        if self.train.clip == "percentile":
            for name in engines:
                clips[name] = self._new_clip()
                saved = ckpt.read_extra(folder, f"clip_{name}")
                if saved is not None:
                    clips[name].load(saved)
        return clips

    def _new_clip(self) -> PercentileClip:
        return PercentileClip(self.train.clip_percentile, self.train.clip_window, self.train.grad_clip)

    def regularised(self, total: torch.Tensor, name: str = "model") -> torch.Tensor:
        """The loss to step on: ``total`` plus AdaLoRA's orthogonality term when the engine has one."""
        steps = self._adalora.get(name)
        return total if steps is None else total + steps.penalty()

    def before_step(self, engine, name: str = "model") -> None:
        """Between an optimizer step's backward and ``engine.step()`` (every rank): the percentile
        clip's threshold (``train.clip=percentile``), AdaLoRA's gradients kept for its allocator
        and, when the step is a log step, each layer's gradient norm (``train.layer_grad_norms``),
        with a warning for an exploded one."""
        train = self.train
        if name in self._adalora:
            self._adalora[name].before_step()
        if train.clip == "percentile":
            clip = self._clips.setdefault(name, self._new_clip())
            set_clip(engine, clip.threshold())
        if train.layer_grad_norms and (self.state.step + 1) % train.log_every == 0:
            norms = layer_norms(engine.module)
            self._layer_norms[name] = norms
            for layer, norm, median in self._explosions.setdefault(name, ExplosionWatch()).check(norms):
                self.warn(f"step {self.state.step + 1}: the gradient norm of {name} layer {layer} is {norm:.3g}, "
                          f"{norm / median:.0f}x its recent median {median:.3g} (train.clip, train.grad_clip, train.lr)")

    def after_step(self, engine, name: str = "model") -> None:
        """After ``engine.step()``: AdaLoRA's rank allocation for the step, and the step's global
        norm joins the percentile clip's history."""
        if name in self._adalora:
            self._adalora[name].after_step(self.state.step + 1)
        if self.train.clip == "percentile":
            from voxray.train.engine import grad_norm

            self._clips[name].add(grad_norm(engine))

    def due(self, every: int) -> bool:
        return self.state.step % every == 0

    def validation_due(self) -> bool:
        """Every ``train.val_every`` steps and at the last one (not after the guard stopped the run)."""
        return self.state.stop is StopReason.NONE and (self.due(self.train.val_every)
                                               or self.state.step == self.train.max_steps)

    def log(self, reading: Reading, **scalars: float) -> None:
        """A log point (every rank calls it after reducing its meter): rank 0 writes the meter's
        ``reading`` and ``scalars`` (lr, grad norm, ...) and sends the console's progress line."""
        self.state.units += reading.units
        if self.rank != 0:
            return
        step, now = self.state.step, time.perf_counter()
        steps_per_s = (step - self._last_log[0]) / max(now - self._last_log[1], 1e-9)
        self._last_log = (step, now)
        clips = {f"clip_threshold_{name}" if len(self._clips) > 1 else "clip_threshold": clip.threshold()
                 for name, clip in self._clips.items()}
        clips.update({f"adalora_ranks_{name}" if len(self._adalora) > 1 else "adalora_ranks": float(steps.ranks())
                      for name, steps in self._adalora.items()})
        self.runlog.scalars(step, {**reading.scalars(), **scalars, **clips, "epoch": self.state.position.epoch,
                                   "skipped_steps": self.state.skipped_steps, "peak_memory_mb": self.peak_memory_mb()})
        if self._layer_norms:
            self.runlog.layer_norms(step, self._layer_norms)
            self._layer_norms = {}
        self._send({"kind": "train", "step": step, "max_steps": self.train.max_steps,
                    "values": {k: reading.means[k] for k in self._progress if k in reading.means},
                    "lr": scalars.get("lr", float("nan")), "rate": reading.units_per_s, "unit": reading.unit,
                    "steps_per_s": steps_per_s})

    def peak_memory_mb(self) -> float:
        """This rank's peak memory so far: the GPU's allocated peak, else the process's peak RSS."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # kB on Linux

    def checkpoint(self, metrics: dict[str, float], *, engines: dict[str, Any], emas: dict[str, EMA],
                   stream: BatchStream, trainable_only: bool = False) -> None:
        """After a validation: early stopping on the metric, this rank's part of the checkpoint
        reported to Ray Train, and in a sweep the scheduler's decision on it."""
        import ray.train
        from ray.train import Checkpoint

        state, value = self.state, metrics[self.metric]
        improved = self._stopper.improves(value)
        if self._stopper.update(value):
            state.stop, state.stop_reason = StopReason.EARLY_STOPPING, (f"early stopping: {self.metric} did not improve by {self.train.min_delta} for "
                                 f"{self.train.patience} validations (best {self._stopper.best:.4f})")
        state.position = stream.position
        state.early_stopping = self._stopper.state()
        if self.runlog is not None:
            self.runlog.scalars(state.step, metrics, kind="val")
            self.runlog.sync()
            shown = metrics if self._val_progress is None else {k: metrics[k] for k in self._val_progress if k in metrics}
            self._send({"kind": "val", "step": state.step, "values": shown, "best": improved})
        with tempfile.TemporaryDirectory(prefix="voxray-ckpt-", dir=self.train.checkpoint_tmp or None) as folder:
            if os.environ.get(DISK_FULL_ENV) == f"{self.rank}:{state.step}":
                _fill_disk(self.run, folder)
            try:
                ckpt.save(folder, engines=engines, rank=self.rank, state=state, emas=emas,
                          collate_rng=stream.rng_state(), trainable_only=trainable_only,
                          extras={**{f"adalora_{name}": steps.state() for name, steps in self._adalora.items()},
                                  **{f"clip_{name}": clip.state() for name, clip in self._clips.items()}})
            except Exception as exc:
                if not _no_space(exc, folder):
                    raise
                raise _no_space_error(exc, folder, self.rank, state.step) from exc
            if os.environ.get(KILL_IN_CHECKPOINT_ENV) == f"{self.rank}:{state.step}":
                _inject_fault(self.run)
            ray.train.report({**metrics, "step": state.step, "epoch": state.position.epoch,
                              "skipped_steps": state.skipped_steps, "restarts": state.restarts},
                             checkpoint=Checkpoint.from_directory(folder),
                             checkpoint_dir_name=f"checkpoint_{state.step:08d}")
        if self.gate is not None and state.step < self.train.max_steps and state.stop is StopReason.NONE:
            # In a sweep, wait for the scheduler's decision on this validation: a trial it
            # stops halts here, at the rung, instead of training on until the stop lands.
            stop = self.gate.should_stop(state.step) if self.rank == 0 else False
            if all_reduce_sum([float(stop)], self.device)[0] > 0:
                state.stop, state.stop_reason = StopReason.SCHEDULER, f"{SCHEDULER_STOP} at step {state.step}"

    # -------------------------------------------------------------------------------- end

    def finish(self, export: Callable[[], None]) -> None:
        """Rank 0 records how the run ended and, when it ran to its end (or stopped early on its
        own), writes ``final/`` with ``export``. A run the guard aborted leaves ABORTED_FILE for the
        driver; a run a sweep's scheduler stopped keeps only its checkpoints."""
        state = self.state
        if self.watch is not None:
            self.watch.stop()
        if self.runlog is None:
            return
        if state.stop is StopReason.NON_FINITE:
            self._event("aborted", reason=state.stop_reason)
            uri.write_text(uri.join(self.run, ABORTED_FILE),
                           json.dumps({"step": state.step, "reason": state.stop_reason}))
        elif state.stop is StopReason.SCHEDULER:
            self._event("stopped", reason=state.stop_reason)
        else:
            self._event("finished", reason=state.stop_reason or "max_steps", skipped_steps=state.skipped_steps)
            export()
        self.runlog.close()
        if self.gate is not None and state.stop is StopReason.SCHEDULER:
            self.gate.recorded()             # the sweep's driver holds Tune's stop until now

    def warn(self, text: str) -> None:
        """A warning the person at the console should see (rank 0)."""
        self._send({"kind": "warning", "text": text})

    def _event(self, event: str, **fields: Any) -> None:
        self.runlog.event(self.state.step, event, **fields)
        self._send({"kind": "event", "event": event, "step": self.state.step, "reason": fields.get("reason")})

    def _send(self, record: dict[str, Any]) -> None:
        if self.console is None or self.rank != 0:
            return
        self._last_beat = time.monotonic()
        try:
            self.console.put_nowait(record)
        except Exception:               # the driver's queue is gone: training goes on without it
            self.console = None


def start(settings: WorkerSettings) -> Worker:
    """This process as a rank of the run: storage variables, DeepSpeed on Ray Train's process
    group, the device, and the same initial weights on every rank (seeded before model build)."""
    import ray.train

    config, run = settings.config, settings.run
    os.environ.update(settings.storage_env)
    context = ray.train.get_context()
    rank, local_rank, world_size = context.get_world_rank(), context.get_local_rank(), context.get_world_size()
    init_deepspeed_distributed(rank, local_rank, world_size)
    device = torch.device("cpu")
    if config.train.use_gpu and torch.cuda.is_available():
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    torch.manual_seed(config.train.seed)
    worker = Worker(run=run, config=config, metric=settings.metric, family=config.family, rank=rank,
                    local_rank=local_rank, world_size=world_size, device=device, gate=settings.gate,
                    console=settings.console)
    queue = settings.console
    if queue is not None:                    # every rank: its stack when no step comes (a sweep has no console)
        def send(record: dict[str, Any]) -> None:
            try:
                queue.put_nowait(record)
            except Exception:
                pass

        worker.watch = StackWatch(rank, config.train.stall_seconds, send, lambda: worker.state.step).start()
    return worker


def _first_time(run: str, marker: str) -> bool:
    """True the first time a drill fires in this run folder: it leaves RUN/<marker> (a restarted
    or resumed run does not meet the same fault again)."""
    path = uri.join(run, marker)
    if uri.exists(path):
        return False
    uri.write_text(path, "")
    return True


def _inject_fault(run: str) -> None:
    """KILL_ENV's drill, once per run folder (a marker file there): wait until the controller has
    surely taken the last checkpoint's reports (Ray Train collects them asynchronously; a worker
    that dies right after reporting can take its checkpoint with it), then die like a lost node."""
    if not _first_time(run, "fault-injected"):
        return
    time.sleep(5)
    os.kill(os.getpid(), signal.SIGKILL)


NO_SPACE_MIB = 16        # a write that failed with less than this free on its device failed for space


def _no_space(exc: Exception, folder: str) -> bool:
    """Whether a failed checkpoint write failed for space: the kernel said so (ENOSPC, EDQUOT), or,
    as torch.save and DeepSpeed lose the errno ("iostream error", "file write failed"), the device
    has next to nothing left."""
    import errno
    import shutil

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < NO_SPACE_MIB * 2**20
    except OSError:
        return False


def _no_space_error(exc: Exception, folder: str, rank: int, step: int) -> Exception:
    import shutil

    usage = shutil.disk_usage(folder)
    return ckpt.CheckpointError(
        f"no space left on the device writing rank {rank}'s part of the checkpoint of step {step} in {folder} "
        f"({usage.free / 2**20:,.0f} MiB free of {usage.total / 2**20:,.0f} MiB): the previous checkpoint is intact "
        f"and a resume starts from it. Free space there, or set train.checkpoint_tmp to a larger local disk. "
        f"({type(exc).__name__}: {exc})")


def _fill_disk(run: str, folder: str) -> None:
    """DISK_FULL_ENV's drill, once per run folder: fill the device of the checkpoint's folder (a
    small test filesystem, train.checkpoint_tmp; the drill refuses one over 256 MiB) so that the
    checkpoint's writes fail as on a full disk."""
    import shutil

    if not _first_time(run, "fault-disk-full"):
        return
    if shutil.disk_usage(folder).total > 256 * 2**20:
        raise RuntimeError(f"{DISK_FULL_ENV} fills only a small test filesystem; {folder} is on a larger one")
    with open(os.path.join(os.path.dirname(folder), "disk-full-drill"), "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 2**20)
                handle.flush()
        except OSError:
            pass


def memory_cgroup_drill_folder() -> Optional[str]:
    """A new memory cgroup under this process's own (cgroup v1 or v2), or None when this machine
    gives no writable one (the OOM drill needs root and a memory controller)."""
    from voxray.train.watchdog import memory_cgroups

    for parent, v2 in memory_cgroups():
        if not os.path.isdir(parent):
            continue
        folder = os.path.join(parent, f"voxray-oom-drill-{os.getpid()}")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            continue
        if os.path.exists(os.path.join(folder, "memory.max" if v2 else "memory.limit_in_bytes")):
            return folder
        os.rmdir(folder)
    return None


def _outgrow_memory(run: str, limit_mib: int = 192) -> None:
    """OOM_ENV's drill, once per run folder: this process moves into a memory cgroup of its own
    with room for ``limit_mib`` more MiB, then grows 8 MiB every 0.25 s (as a leak or a growing
    batch would) until the kernel's OOM killer kills it (SIGKILL)."""
    if not _first_time(run, "fault-oom"):
        return
    folder = memory_cgroup_drill_folder()
    if folder is None:
        raise RuntimeError(f"{OOM_ENV} needs a writable memory cgroup (root)")
    v2 = os.path.exists(os.path.join(folder, "memory.max"))
    with open(os.path.join(folder, "memory.max" if v2 else "memory.limit_in_bytes"), "w") as handle:
        handle.write(str(limit_mib << 20))
    with open(os.path.join(folder, "cgroup.procs"), "w") as handle:
        handle.write(str(os.getpid()))
    held = []
    while True:
        held.append(np.ones(8 << 20, dtype=np.uint8))
        time.sleep(0.25)          # its last 20 % lasts ~1.2 s: two or more of the rank's 0.5 s memory samples see it


def _hang(run: str) -> None:
    """HANG_ENV's drill, once per run folder: this rank stops making collectives (the other ranks
    wait in their next one, as when ranks disagree on how many collectives a step makes)."""
    if not _first_time(run, "fault-hung"):
        return
    while True:
        time.sleep(1.0)
