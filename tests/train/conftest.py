"""Fixtures and helpers for training tests: one trained tiny base model per session."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest

from voxray import cli
from voxray.config import load_config
from voxray.train.recipes import acoustic

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = str(REPO / "jobs" / "configs" / "acoustic-cpu.yaml")


def metrics(run: str, kind: str) -> list[dict]:
    lines = Path(run, "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def trainer_state(checkpoint: str) -> dict:
    return json.loads(Path(checkpoint, "trainer_state.json").read_text())


def latest_checkpoint(run: str) -> str:
    return sorted(glob.glob(os.path.join(run, "checkpoint_0*")))[-1]


def train(store: str, run: str, *overrides: str) -> dict:
    config = load_config(CPU_CONFIG, ["train.max_failures=0", "train.log_every=5", *overrides])
    return acoustic.train(store, run, config)


@pytest.fixture(scope="session")
def base_run(sample_store, tmp_path_factory) -> str:
    """120 steps of the tiny model through the CLI and the CPU config from jobs/configs, with a
    relative --output as a user would type it (Ray workers run in another directory)."""
    folder = tmp_path_factory.mktemp("base")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        code = cli.main(["train", "acoustic", "--data", sample_store, "--output", "run", "--config", CPU_CONFIG,
                         "train.max_steps=120", "train.val_every=20", "train.max_failures=0"])
    finally:
        os.chdir(cwd)
    assert code == 0
    return str(folder / "run")
