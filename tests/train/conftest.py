"""Helpers for training tests (the trained base model fixture, ``base_run``, is in tests/conftest.py)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from tests.conftest import CPU_CONFIG, REPO
from voxray.config import load_config
from voxray.train.recipes import acoustic

__all__ = ["CPU_CONFIG", "REPO", "latest_checkpoint", "metrics", "script_result", "train", "trainer_state"]


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


def script_result(script: str, timeout: int = 300, env: Optional[dict[str, str]] = None) -> dict:
    """Run ``script`` in a fresh Python (its own process group for DeepSpeed) and return the JSON
    it printed on its ``RESULT `` line; its stderr's end when it printed none."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[0][7:])
