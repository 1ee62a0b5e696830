"""What the training benchmarks share: one Ray for the script, a family's recipe run on Ray Train
+ DeepSpeed and measured as the recipe logs it, the GPU block, and one definition of "optimizer
state per rank" (``checkpoint.optimizer_state_bytes``: fp32 master weights and Adam moments each
rank holds; at ZeRO-0 every rank holds them all)."""

from __future__ import annotations

import glob
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
UNITS = {"acoustic": "mel_frames", "talker": "code_frames", "vocoder": "samples"}     # what each family counts
CONFIGS = {"acoustic": None, "talker": str(REPO / "jobs" / "configs" / "talker-cpu.yaml"),
           "vocoder": str(REPO / "jobs" / "configs" / "vocoder-cpu.yaml")}


def start(prefix: str = "voxray-bench-") -> str:
    """Ray for the whole script (4 CPUs, quiet) and a scratch folder."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    return tempfile.mkdtemp(prefix=prefix)


def ray_run(family: str, store: str, scratch: str, name: str, overrides: list[str]) -> dict:
    """``voxray train FAMILY`` into scratch/name: the rate the recipe logs (``<unit>_per_s``, the
    first log point left out: it holds the warm-up), end-to-end wall time and peak memory."""
    from voxray.config import load_config
    from voxray.train.recipes import recipe

    run = os.path.join(scratch, name)
    config = load_config(CONFIGS[family], ["train.max_failures=0", *overrides], family=family)
    started = time.perf_counter()
    recipe(family).train(store, run, config, console=False)
    wall = time.perf_counter() - started
    logged = [r for r in map(json.loads, open(os.path.join(run, "metrics.jsonl"))) if r["kind"] == "train"]
    key = f"{UNITS[family]}_per_s"
    rates = [r[key] for r in logged][1:] or [r[key] for r in logged]
    rate = statistics.mean(rates) if rates else float("nan")
    return {"run": run, "rate": rate, key: rate, "wall_s": wall,
            "peak_memory_mb": max((r["peak_memory_mb"] for r in logged), default=float("nan"))}


def gpu_run(family: str, store: str, scratch: str, overrides: list[str]) -> dict:
    """The GPU block: one worker, bf16, on a CUDA device (an error without one)."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device here")
    return ray_run(family, store, scratch, "gpu", [*overrides, "train.num_workers=1", "train.use_gpu=true",
                                                   "deepspeed.precision=bf16"])


def optimizer_state_per_rank(run: str) -> list[int]:
    """Each rank's optimizer-state bytes in the run's last checkpoint."""
    from voxray.train.checkpoint import optimizer_state_bytes

    config = yaml.safe_load(Path(run, "config.yaml").read_text())
    last = sorted(glob.glob(os.path.join(run, "checkpoint_0*")))[-1]
    return optimizer_state_bytes(last, "model", config["deepspeed"]["zero_stage"], config["train"]["num_workers"])
