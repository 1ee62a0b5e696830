"""A fourth model family, added as docs/adding-a-family.md says: a config root, a model, a loss
and a recipe ending with its RECIPE; the test registers it where the package's one dispatch line
and config table would (``test_adding_a_family.py``). The model predicts each mel frame from the
one before; small enough to train in seconds, complete enough to go through the CLI, resume,
validation, checkpoints, ``final/`` and ``voxray export``.

Sections below are what a real family puts in separate files:
config/toy.py, models/toy.py, losses/toy.py, train/recipes/toy.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn

from voxray import uri
from voxray.config import Config
from voxray.config.sections import Strict
from voxray.export import FINAL_DIR, write_final
from voxray.train import launch
from voxray.train.checkpoint import evaluation_weights, load_weights
from voxray.train.contract import Recipe, WorkerSettings
from voxray.train.deepspeed_config import deepspeed_config
from voxray.train.distributed import Sums
from voxray.train.engine import OptimizerSettings, build_engine, grad_norm, parameter_counts
from voxray.train.meter import Meter
from voxray.train.worker import start


# ------------------------------------------------------------------------ config/toy.py

class ToyModel(Strict):
    hidden: int = Field(32, ge=1, description="width of the next-frame predictor's hidden layer")


class ToyLoss(Strict):
    l1: float = Field(1.0, gt=0, description="weight of the next frame's L1")


class ToyConfig(Config):
    family: Literal["toy"] = Field("toy", description="model family: toy")
    model: ToyModel = ToyModel()
    loss: ToyLoss = ToyLoss()


# ------------------------------------------------------------------------ models/toy.py

def build(n_mels: int, hidden: int) -> nn.Module:
    """Next mel frame from the current one (flat, typed arguments; no config inside)."""
    return nn.Sequential(nn.Linear(n_mels, hidden), nn.Tanh(), nn.Linear(hidden, n_mels))


# ------------------------------------------------------------------------ losses/toy.py

def toy_losses(predicted: torch.Tensor, target: torch.Tensor, *, l1: float) -> dict[str, torch.Tensor]:
    """predicted, target [B, T, n_mels] -> ``total`` and ``l1`` (means)."""
    error = (predicted - target).abs().mean()
    return {"total": l1 * error, "l1": error}


# ------------------------------------------------------------------------ train/recipes/toy.py

FAMILY = "toy"
METRIC = "val_l1"
METRIC_LABEL = "val next-frame L1"
METRICS = ("val_l1",)
COLUMNS = ["id", "n_frames", "mel"]
SEGMENT = 16


@dataclass(frozen=True)
class Plan:
    store: str
    run: str
    config: Config
    n_mels: int


def prepare(store: str, run: str, config: Config, open_run: bool = True) -> Plan:
    store, run = uri.absolute(store), uri.absolute(run)
    stats = launch.store_stats(store)
    config = launch.steps_of_epochs(config, stats)
    if open_run:
        launch.open_run(run, config, store)
    return Plan(store=store, run=run, config=config, n_mels=int(stats["audio_spec"]["n_mels"]))


def collate(plan: Plan, rows: list[dict[str, Any]], rng: Optional[np.random.Generator]) -> torch.Tensor:
    """SEGMENT-frame crops [B, SEGMENT, n_mels] (random with the stream's generator, else the start)."""
    crops = np.zeros((len(rows), SEGMENT, plan.n_mels), dtype=np.float32)
    for i, row in enumerate(rows):
        mel = np.asarray(row["mel"], dtype=np.float32).reshape(int(row["n_frames"]), -1)
        begin = int(rng.integers(0, max(1, len(mel) - SEGMENT + 1))) if rng is not None else 0
        piece = mel[begin: begin + SEGMENT]
        crops[i, : len(piece)] = piece
    return torch.from_numpy(crops)


@torch.no_grad()
def validate(plan: Plan, worker, val_shard, model: nn.Module) -> dict[str, float]:
    sums = Sums(["l1_sum", "frames"])
    for rows in val_shard.batches(plan.config.train.batch_size):
        mels = collate(plan, rows, None).to(worker.device)
        error = toy_losses(model(mels[:, :-1]), mels[:, 1:], l1=1.0)["l1"]
        sums.add({"l1_sum": error * mels[:, 1:].shape[0] * mels[:, 1:].shape[1], "frames": mels[:, 1:].shape[0] *
                  mels[:, 1:].shape[1]})
    totals = sums.reduce(worker.device)
    return {METRIC: totals["l1_sum"] / max(totals["frames"], 1)}


def train_loop(loop_config: dict[str, Any]) -> None:
    settings = WorkerSettings.of(loop_config)
    plan: Plan = settings.plan
    config, train = plan.config, plan.config.train
    worker = start(settings)
    model = build(plan.n_mels, config.model.hidden).to(worker.device)
    engine, lr_schedule = build_engine(model, OptimizerSettings.of(train),
                                       deepspeed_config(train, config.deepspeed, worker.world_size))
    worker.restore({"model": engine})
    stream = worker.train_stream(lambda rows, rng: collate(plan, rows, rng), batch_size=train.batch_size)
    val_shard = worker.val_shard()
    worker.started({"model": parameter_counts(model)}, progress=("total",))
    meter = Meter(("total", "l1"), unit="mel_frames")
    while worker.training():                          # one optimizer step per iteration
        skipped_before = engine.skipped_steps
        for _ in range(train.grad_accum):
            mels = stream.next().to(worker.device)
            parts = toy_losses(engine(mels[:, :-1]), mels[:, 1:], l1=config.loss.l1)
            engine.backward(worker.regularised(parts["total"]))
            if engine.is_gradient_accumulation_boundary():
                worker.before_step(engine)
            engine.step()
            meter.add(parts, units=mels.shape[0] * (mels.shape[1] - 1))
        worker.after_step(engine)
        worker.count_step(skipped=engine.skipped_steps > skipped_before)
        if worker.due(train.log_every):
            worker.log(meter.reduce(worker.device), lr=lr_schedule.get_last_lr()[0], grad_norm=grad_norm(engine))
            meter.reset()
        if worker.validation_due():
            worker.checkpoint(validate(plan, worker, val_shard, engine.module), engines={"model": engine}, emas={},
                              stream=stream)
            meter.reset()
    worker.finish(lambda: export(plan, engine.module, worker.state.step))


def export(plan: Plan, model: nn.Module, step: int, folder: Optional[str] = None) -> None:
    write_final(folder or uri.join(plan.run, FINAL_DIR), weights=model.state_dict(), config=plan.config,
                manifest={"family": FAMILY, "step": step, "build": {"n_mels": plan.n_mels,
                                                                    "hidden": plan.config.model.hidden}})


def export_checkpoint(plan: Plan, checkpoint: str, step: int, metrics: dict[str, float], output: str) -> None:
    model = build(plan.n_mels, plan.config.model.hidden)
    load_weights(model, evaluation_weights(checkpoint, "model", plan.config.deepspeed.zero_stage, False))
    export(plan, model, step, output)


def search_space(config: Config) -> dict[str, Any]:
    return {"train.lr": {"loguniform": [1.0e-4, 1.0e-2]}, "model.hidden": {"choice": [16, 32, 64]}}


RECIPE = Recipe(family=FAMILY, metric=METRIC, metric_label=METRIC_LABEL, metrics=METRICS, prepare=prepare,
                columns=lambda plan: COLUMNS, train_loop=train_loop, search_space=search_space,
                export_checkpoint=export_checkpoint)
