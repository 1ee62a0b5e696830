"""A tiny two-engine recipe on the shared training core, the shape of a GAN: a "generator" that
predicts the next mel frame and a "discriminator" that tells real frames from predicted ones,
each its own DeepSpeed engine with its own AdamW, schedule and config. Its collate crops random
segments with the stream's generator, so a resumed run must restore that generator too.

It exists to test the core below any real family: named engines in checkpoints, the
discriminator step then the generator step with the discriminator frozen, kill and resume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from voxray import uri
from voxray.config import Config
from voxray.train import launch
from voxray.train.deepspeed_config import deepspeed_config
from voxray.train.distributed import all_reduce_sum
from voxray.train.engine import OptimizerSettings, build_engine, frozen, parameter_counts
from voxray.train.meter import Meter
from voxray.train.contract import WorkerSettings
from voxray.train.worker import start

COLUMNS = ["id", "n_frames", "mel"]
SEGMENT = 12
N_MELS = 80
LOSS_NAMES = ("generator", "discriminator", "l1", "adversarial")


def collate(rows: list[dict[str, Any]], rng: np.random.Generator) -> torch.Tensor:
    """Random SEGMENT-frame crops [B, SEGMENT, n_mels], zero-padded when an utterance is shorter."""
    crops = np.zeros((len(rows), SEGMENT, N_MELS), dtype=np.float32)
    for i, row in enumerate(rows):
        mel = np.asarray(row["mel"], dtype=np.float32).reshape(int(row["n_frames"]), -1)
        begin = int(rng.integers(0, max(1, len(mel) - SEGMENT + 1)))
        piece = mel[begin: begin + SEGMENT]
        crops[i, : len(piece)] = piece
    return torch.from_numpy(crops)


@dataclass(frozen=True)
class Plan:
    store: str
    run: str
    config: Config


def train_loop(loop_config: dict[str, Any]) -> None:
    settings = WorkerSettings.of(loop_config)
    config, run = settings.config, settings.run
    train = config.train
    worker = start(settings)
    generator = nn.Sequential(nn.Linear(N_MELS, 32), nn.Tanh(), nn.Linear(32, N_MELS))
    discriminator = nn.Sequential(nn.Linear(N_MELS, 32), nn.LeakyReLU(0.1), nn.Linear(32, 1))
    ds = deepspeed_config(train, config.deepspeed, worker.world_size)
    g_engine, g_schedule = build_engine(generator, OptimizerSettings.of(train), ds)
    d_engine, _ = build_engine(discriminator, OptimizerSettings.of(train), ds)
    engines = {"generator": g_engine, "discriminator": d_engine}
    worker.restore(engines)
    stream = worker.train_stream(collate, batch_size=train.batch_size)
    val_shard = worker.val_shard()
    worker.started({"generator": parameter_counts(generator), "discriminator": parameter_counts(discriminator)},
                   progress=("generator", "discriminator"))
    meter = Meter(LOSS_NAMES, unit="frames")
    while worker.training():
        real = stream.next()
        inputs, target = real[:, :-1], real[:, 1:]
        fake = g_engine(inputs)
        # The discriminator's step: real vs the generator's frames, detached.
        d_loss = ((d_engine(target) - 1) ** 2).mean() + (d_engine(fake.detach()) ** 2).mean()
        d_engine.backward(d_loss)
        d_engine.step()
        # The generator's step, through the discriminator frozen (no grads, no ZeRO hooks there).
        with frozen(d_engine.module):
            adversarial = ((d_engine.module(fake) - 1) ** 2).mean()
            l1 = (fake - target).abs().mean()
            g_loss = l1 + 0.1 * adversarial
            g_engine.backward(g_loss)
        skipped = g_engine.skipped_steps
        g_engine.step()
        meter.add({"generator": g_loss, "discriminator": d_loss, "l1": l1, "adversarial": adversarial},
                  units=real.shape[0] * real.shape[1])
        worker.count_step(skipped=g_engine.skipped_steps > skipped)
        if worker.due(train.log_every):
            worker.log(meter.reduce(worker.device), lr=g_schedule.get_last_lr()[0])
            meter.reset()
        if worker.validation_due():
            sums = [0.0, 0.0]
            with torch.no_grad():
                for rows in val_shard.batches(train.batch_size):
                    real = collate(rows, np.random.default_rng(0))
                    sums[0] += float((generator(real[:, :-1]) - real[:, 1:]).abs().sum())
                    sums[1] += real[:, 1:].numel()
            total, count = all_reduce_sum(sums, worker.device)
            worker.checkpoint({"val_l1": total / count}, engines=engines, emas={}, stream=stream)
            meter.reset()
    worker.finish(lambda: uri.write_text(uri.join(run, "final.txt"), f"step {worker.state.step}\n"))


def train(store: str, run: str, config: Config) -> dict[str, Any]:
    run, store = uri.absolute(run), uri.absolute(store)
    launch.open_run(run, config, store)
    return launch.fit(train_loop, plan=Plan(store, run, config), columns=COLUMNS, metric="val_l1")
