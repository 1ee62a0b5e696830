"""Voice quality for a fixed CPU budget: the acoustic model (``small``) and a vocoder trained on a
generated single-speaker corpus, evaluated on its test split with ``voxray evaluate``.

    .venv/bin/python benchmarks/quality.py [--sentences 300] [--acoustic-steps 500] [--batch-size 8]
                                           [--vocoder-steps 400]
                                           [--scratch DIR] [--gpu]

1. ``scripts/make_quality_corpus.py``: ``--sentences`` espeak-ng sentences, one voice (~16 min
   for 300), then ``voxray preprocess`` (80/10/10 splits).
2. ``voxray train acoustic`` (``small`` preset, ``--batch-size``, one worker) and ``voxray train vocoder``
   (``tiny`` HiFi-GAN, one worker), each for its number of steps; the wall time is the budget.
3. ``voxray evaluate`` on the test split: the acoustic model through the vocoder and through
   Griffin-Lim; the vocoder alone and Griffin-Lim alone by copy synthesis of the stored mels.

Prints one table (the users' targets after fine-tuning: MCD 5.5-6.5 dB, F0 RMSE 15-25 Hz,
duration MAE 30-50 ms). Re-running with the same ``--scratch`` resumes finished runs. With
``--gpu`` both models train on one GPU in bf16 (the ``base`` acoustic preset, HiFi-GAN V1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("mcd_db", "f0_rmse_hz", "vuv_error", "duration_mae_ms", "pesq", "stoi", "wer", "wer_recorded",
           "speaker_similarity")


def voxray(*args: str) -> float:
    """Run a voxray command as a user would; returns its wall seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "voxray.cli", *args], check=True, cwd=REPO)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--acoustic-steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=8, help="the acoustic model's")
    parser.add_argument("--vocoder-steps", type=int, default=400)
    parser.add_argument("--scratch", help="working folder (default: a new temporary one)")
    parser.add_argument("--gpu", action="store_true", help="train on one GPU in bf16 (base preset, HiFi-GAN V1)")
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="voxray-quality-"))
    corpus, store = scratch / "corpus", scratch / "store"
    if not (corpus / "metadata.csv").exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_quality_corpus.py"), str(corpus),
                        "--sentences", str(args.sentences)], check=True)
    if not (store / "stats.json").exists():
        voxray("preprocess", "--input", str(corpus), "--output", str(store))
    gpu = ["train.use_gpu=true", "deepspeed.precision=bf16"] if args.gpu else []
    acoustic, vocoder = scratch / "acoustic", scratch / "vocoder"
    walls = {
        "acoustic": voxray("train", "acoustic", "--data", str(store), "--output", str(acoustic), "--config",
                           str(REPO / "jobs" / "configs" / "acoustic-cpu.yaml"),
                           f"model.preset={'base' if args.gpu else 'small'}", f"train.batch_size={args.batch_size}",
                           f"train.max_steps={args.acoustic_steps}", f"train.warmup_steps={args.acoustic_steps // 10}",
                           f"train.val_every={max(args.acoustic_steps // 5, 1)}", "train.log_every=25", *gpu),
        "vocoder": voxray("train", "vocoder", "--data", str(store), "--output", str(vocoder), "--config",
                          str(REPO / "jobs" / "configs" / "vocoder-cpu.yaml"),
                          f"train.max_steps={args.vocoder_steps}", f"train.val_every={max(args.vocoder_steps // 5, 1)}",
                          "train.log_every=50", *(["model.preset=v1", *gpu] if args.gpu else [])),
    }
    cases = {
        "acoustic + vocoder": ["--model", f"{acoustic}/final", "--vocoder", f"{vocoder}/final"],
        "acoustic + Griffin-Lim": ["--model", f"{acoustic}/final", "--vocoder", "griffin-lim"],
        "vocoder, copy synthesis": ["--vocoder", f"{vocoder}/final"],
        "Griffin-Lim, copy synthesis": ["--vocoder", "griffin-lim"],
    }
    results = {}
    for name, given in cases.items():
        output = scratch / "eval" / name.replace(" ", "_").replace(",", "").replace("+", "and")
        voxray("evaluate", *given, "--data", str(store), "--output", str(output), "--overwrite")
        results[name] = json.loads((output / "metrics.json").read_text())

    stats = json.loads((store / "stats.json").read_text())
    print(f"\ncorpus: {args.sentences} sentences, {stats['audio_seconds'] / 60:.1f} min; splits "
          + ", ".join(f"{k} {v['utterances']}" for k, v in stats["splits"].items()))
    print(f"budget: acoustic {args.acoustic_steps} steps in {walls['acoustic'] / 60:.1f} min, vocoder "
          f"{args.vocoder_steps} steps in {walls['vocoder'] / 60:.1f} min (wall, this machine, "
          f"{os.cpu_count()} cores{', GPU' if args.gpu else ''})")
    widths = [max(9, len(c) + 2) for c in COLUMNS]
    print(f"{'':30}" + "".join(f"{c:>{w}}" for c, w in zip(COLUMNS, widths)))
    for name, summary in results.items():
        values = summary["metrics"]
        print(f"{name:30}" + "".join(f"{values[c]:>{w}.3f}" if c in values else f"{'-':>{w}}"
                                     for c, w in zip(COLUMNS, widths)))
    targets = {"mcd_db": "5.5-6.5", "f0_rmse_hz": "15-25", "duration_mae_ms": "30-50"}
    print(f"{'users target':30}" + "".join(f"{targets.get(c, ''):>{w}}" for c, w in zip(COLUMNS, widths)))


if __name__ == "__main__":
    main()
