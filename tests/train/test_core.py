"""The shared training core below any model family: several engines per run, frozen modules,
randomness that resumes, kill and recovery with two engines on two workers."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from tests.train import two_engines
from tests.train.conftest import latest_checkpoint, metrics, trainer_state
from voxray.config import load_config
from voxray.train.data import BatchStream
from voxray.train.engine import frozen
from voxray.train.worker import KILL_ENV


def test_frozen_keeps_a_module_out_of_another_modules_backward():
    generator, discriminator = nn.Linear(4, 4), nn.Linear(4, 1)
    discriminator.bias.requires_grad_(False)           # already frozen before: stays frozen after
    with frozen(discriminator):
        assert not any(p.requires_grad for p in discriminator.parameters())
        discriminator(generator(torch.randn(3, 4))).sum().backward()
    assert generator.weight.grad is not None
    assert discriminator.weight.grad is None and discriminator.bias.grad is None
    assert discriminator.weight.requires_grad and not discriminator.bias.requires_grad


def _crops(rows, rng):
    return [(row["id"], int(rng.integers(0, 1000))) for row in rows]


def test_a_resumed_stream_draws_the_crops_of_the_uninterrupted_one(ray_cluster):
    """Position and the collate generator's state restored: the next batches and the random
    numbers collate draws are those of the stream that was never interrupted."""
    import ray.data

    table = pa.table({"id": [f"u{i:02d}" for i in range(40)], "n_frames": [10 + i % 7 for i in range(40)]})
    dataset = ray.data.from_arrow(table)

    def stream(**kw):
        return BatchStream(lambda: dataset, _crops, batch_size=4, seed=3, rank=0, device=torch.device("cpu"),
                           pool=2, **kw)

    straight = stream()
    expected = [straight.next() for _ in range(25)]          # crosses into epoch 2 (10 batches an epoch)
    first = stream()
    seen = [first.next() for _ in range(13)]
    resumed = stream(position=first.position)
    resumed.set_rng_state(first.rng_state())
    assert seen + [resumed.next() for _ in range(12)] == expected
    unrestored = stream(position=first.position)             # position alone: other crops
    assert [unrestored.next() for _ in range(12)] != expected[13:]


OVERRIDES = ["train.num_workers=2", "train.max_steps=16", "train.val_every=4", "train.log_every=2",
             "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=0", "train.schedule=constant",
             "train.max_failures=1"]


@pytest.fixture(scope="module")
def straight(sample_store, tmp_path_factory) -> str:
    """The two-engine run without a failure (ZeRO-0: in fp32 the stages compute the same steps)."""
    run = str(tmp_path_factory.mktemp("two-engines") / "straight")
    assert two_engines.train(sample_store, run, load_config(overrides=[*OVERRIDES, "deepspeed.zero_stage=0"]))["step"] == 16
    return run


@pytest.mark.integration
def test_two_engines_killed_and_resumed(sample_store, straight, tmp_path, monkeypatch):
    """Generator and discriminator engines on 2 workers at ZeRO-2; rank 1 dies (SIGKILL) after
    step 10, between the checkpoints at 8 and 12; Ray Train restarts the workers from step 8 and
    the run ends at the same step count with losses close to a straight run's (at ZeRO-0: in fp32
    the stages compute the same steps). ZeRO-0 checkpoints resume in the talker's tests
    (talker-cpu.yaml)."""
    killed = str(tmp_path / "killed")
    monkeypatch.setenv(KILL_ENV, "1:10")
    summary = two_engines.train(sample_store, killed, load_config(overrides=[*OVERRIDES, "deepspeed.zero_stage=2"]))
    assert summary["step"] == 16 and os.path.exists(f"{killed}/fault-injected")
    assert [r["step"] for r in metrics(killed, "resumed")] == [8]
    assert trainer_state(latest_checkpoint(killed))["restarts"] == 1
    a, b = metrics(straight, "train"), metrics(killed, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(2, 17, 2))      # no step twice
    for x, y in zip(a, b):
        for name in ("generator", "discriminator"):
            assert y[name] == pytest.approx(x[name], rel=0.15), (name, x, y)
    # each engine in its own folder, every rank's ZeRO shard of each persisted
    for engine in ("generator", "discriminator"):
        files = os.listdir(f"{latest_checkpoint(killed)}/ds/{engine}")
        assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= set(files), files
    assert sorted(os.listdir(f"{latest_checkpoint(killed)}/rng")) == ["rank_0.pt", "rank_1.pt"]
    assert np.isfinite(summary["val_l1"]) and os.path.exists(f"{killed}/final.txt")
