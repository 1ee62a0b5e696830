"""Voice quality for a fixed CPU budget: the acoustic model (``tiny`` and ``small``) and a vocoder
trained on a generated single-speaker corpus, evaluated on its test split with ``voxray evaluate``
(the calibrated MCD, F0 with gross pitch errors apart, predicted MOS, PESQ/STOI).

    .venv/bin/python benchmarks/quality.py [--sentences 300] [--acoustic-steps 500] [--batch-size 8]
                                           [--vocoder-steps 400]
                                           [--scratch DIR] [--gpu]

1. ``scripts/make_quality_corpus.py``: ``--sentences`` espeak-ng sentences, one voice (~16 min
   for 300), then ``voxray preprocess`` (80/10/10 splits).
2. ``voxray train acoustic`` (``tiny`` and ``small`` presets, ``--batch-size``, one worker) and
   ``voxray train vocoder`` (``tiny`` HiFi-GAN, one worker), each for its number of steps; the wall
   time is the budget.
3. ``voxray evaluate`` on the test split: each acoustic model through the vocoder and through
   Griffin-Lim; the vocoder alone and Griffin-Lim alone by copy synthesis of the stored mels.

Prints one table, with the recordings' own predicted MOS and the verdicts against the users'
default targets (MCD 5.5-6.5 dB, F0 RMSE 15-25 Hz, duration MAE 30-50 ms, MOS 3.5-4.2).
Re-running with the same ``--scratch`` resumes finished runs. With ``--gpu`` the models train on
one GPU in bf16 (``base`` instead of ``small``, HiFi-GAN V1).
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
COLUMNS = ("mcd_db", "f0_rmse_hz", "gross_pitch_error", "f0_fine_rmse_hz", "vuv_error", "duration_mae_ms", "mos",
           "pesq", "stoi", "speaker_similarity")


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
    presets = ("tiny", "base" if args.gpu else "small")
    vocoder = scratch / "vocoder"
    walls = {}
    for preset in presets:
        walls[preset] = voxray("train", "acoustic", "--data", str(store), "--output", str(scratch / f"acoustic-{preset}"),
                               "--config", str(REPO / "jobs" / "configs" / "acoustic-cpu.yaml"),
                               f"model.preset={preset}", f"train.batch_size={args.batch_size}",
                               f"train.max_steps={args.acoustic_steps}", f"train.warmup_steps={args.acoustic_steps // 10}",
                               f"train.val_every={max(args.acoustic_steps // 5, 1)}", "train.log_every=25", *gpu)
    walls.update({
        "vocoder": voxray("train", "vocoder", "--data", str(store), "--output", str(vocoder), "--config",
                          str(REPO / "jobs" / "configs" / "vocoder-cpu.yaml"),
                          f"train.max_steps={args.vocoder_steps}", f"train.val_every={max(args.vocoder_steps // 5, 1)}",
                          "train.log_every=50", *(["model.preset=v1", *gpu] if args.gpu else [])),
    })
    cases = {}
    for preset in presets:
        cases[f"{preset} + vocoder"] = ["--model", f"{scratch}/acoustic-{preset}/final", "--vocoder", f"{vocoder}/final"]
        cases[f"{preset} + Griffin-Lim"] = ["--model", f"{scratch}/acoustic-{preset}/final", "--vocoder", "griffin-lim"]
    cases.update({
        "vocoder, copy synthesis": ["--vocoder", f"{vocoder}/final"],
        "Griffin-Lim, copy synthesis": ["--vocoder", "griffin-lim"],
    })
    results = {}
    for name, given in cases.items():
        output = scratch / "eval" / name.replace(" ", "_").replace(",", "").replace("+", "and")
        voxray("evaluate", *given, "--data", str(store), "--output", str(output), "--overwrite")
        results[name] = json.loads((output / "metrics.json").read_text())

    stats = json.loads((store / "stats.json").read_text())
    print(f"\ncorpus: {args.sentences} sentences, {stats['audio_seconds'] / 60:.1f} min; splits "
          + ", ".join(f"{k} {v['utterances']}" for k, v in stats["splits"].items()))
    print("budget: " + ", ".join(f"acoustic {p} {args.acoustic_steps} steps in {walls[p] / 60:.1f} min" for p in presets)
          + f", vocoder {args.vocoder_steps} steps in {walls['vocoder'] / 60:.1f} min (wall, this machine, "
          f"{os.cpu_count()} cores{', GPU' if args.gpu else ''})")
    widths = [max(9, len(c) + 2) for c in COLUMNS]
    print(f"{'':30}" + "".join(f"{c:>{w}}" for c, w in zip(COLUMNS, widths)))
    for name, summary in results.items():
        values = summary["metrics"]
        print(f"{name:30}" + "".join(f"{values[c]:>{w}.3f}" if c in values else f"{'-':>{w}}"
                                     for c, w in zip(COLUMNS, widths)))
    recorded = next(iter(results.values()))["metrics"]
    print(f"{'the recordings':30}" + "".join(f"{recorded['mos_recorded']:>{w}.3f}" if c == "mos" else f"{'':>{w}}"
                                             for c, w in zip(COLUMNS, widths)))
    targets = next(iter(results.values()))["targets"]
    print(f"{'users target':30}" + "".join(f"{targets.get(c, ''):>{w}}" for c, w in zip(COLUMNS, widths)))
    print("verdicts: " + "; ".join(f"{name}: " + ", ".join(f"{k} {v['verdict']}" for k, v in s["verdicts"].items())
                                  for name, s in results.items()))


if __name__ == "__main__":
    main()
