"""The Malaysian plan's loss weights against voxray's defaults, on the committed code-switched corpus.

    .venv/bin/python benchmarks/ms_plan_weights.py [--steps 300] [--seeds 1234,7]

The plan weighs duration 1.5, pitch 2.0, energy 1.5 next to mel 1.0; voxray's defaults are 0.1
each. Both train the tiny model with jobs/configs/acoustic-ms-cpu.yaml (the plan's curriculum,
heads and losses in miniature) on the corpus preprocessed with code-switching and one augmented
copy per train row, the same seeds; the table gives the last validation's mel L1, MCD on the
mels, F0 RMSE and duration MAE (lower is better), the median over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "jobs" / "configs" / "acoustic-ms-cpu.yaml")
WEIGHTS = {"voxray 0.1 / 0.1 / 0.1": ["loss.duration=0.1", "loss.pitch=0.1", "loss.energy=0.1"],
           "plan 1.5 / 2.0 / 1.5": ["loss.duration=1.5", "loss.pitch=2.0", "loss.energy=1.5"]}
METRICS = ("val_mel", "val_mcd_mel_db", "val_f0_rmse_hz", "val_duration_mae_ms")


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "voxray.cli", *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="1234,7")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="voxray-ms-weights-")
    store = os.path.join(scratch, "store")
    cli("preprocess", "--input", str(REPO / "corpus" / "codeswitch"), "--output", store,
        "preprocess.code_switch=ms,en", "preprocess.augment.copies=1")
    results: dict[str, list[dict]] = {name: [] for name in WEIGHTS}
    for seed in args.seeds.split(","):
        for name, overrides in WEIGHTS.items():        # interleaved: the machine's drift hits both alike
            run = os.path.join(scratch, f"{name.split()[0]}-{seed}")
            cli("train", "acoustic", "--data", store, "--output", run, "--config", CONFIG,
                f"train.max_steps={args.steps}", f"train.seed={seed}", *overrides)
            records = [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()]
            results[name].append([r for r in records if r["kind"] == "val"][-1])
    print(f"| weights (duration / pitch / energy) | {' | '.join(METRICS)} |")
    print("|---|" + "---|" * len(METRICS))
    for name, values in results.items():
        cells = [f"{statistics.median(v[m] for v in values):.3f}" for m in METRICS]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
