"""voxray's mel codec: reconstruction against the number of codebooks, and encode throughput.

    .venv/bin/python benchmarks/codec.py [--store STORE] [--codebook-size 1024] [--steps 300] [--copies 16]

Fits the mel codec (8 codebooks) on the store's train split with Ray Data and reports, on its
val split, the mel L1 of the reconstruction from the first 1, 2, 4 and 8 codebooks (each a
prefix of the same residual quantizer, as a talker predicting fewer codebooks would use it), and
each level's usage. Then it encodes a store of ``copies`` x the sample corpus (large enough for
several Ray Data blocks a split) through Ray Data at 1 and 2 CPUs and reports x real time per
core (seconds of audio encoded per wall second, divided by the CPUs), cold (the actors start)
and warm (a second run on the same cluster, as on a long-running one).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store")
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--copies", type=int, default=16)
    args = parser.parse_args()

    import ray

    from preprocess import build_corpus              # benchmarks/ is on sys.path
    from train_acoustic import ensure_store
    from voxray.codec import fit
    from voxray.config import load_config
    from voxray.data.pipeline import preprocess

    scratch = tempfile.mkdtemp(prefix="voxray-bench-codec-")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    store = ensure_store(args.store, scratch)
    folder = os.path.join(scratch, "codec")
    started = time.perf_counter()
    report = fit.fit(store, folder, load_config(overrides=[
        "codec.n_codebooks=8", f"codec.codebook_size={args.codebook_size}", f"codec.fit_steps={args.steps}"]))
    print(f"\nfit: {report['vectors']:,} stacked frames, {args.steps} steps, {time.perf_counter() - started:.0f} s")
    print("val mel L1 by codebooks used (natural-log mel; lower is better):")
    for levels in ("1", "2", "4", "8"):
        print(f"  {levels} codebook{'s' if levels != '1' else ''}: {report['val_mel_l1_by_codebooks'][levels]:.4f}")
    print("val usage per level (codes used / perplexity): " + ", ".join(
        f"{u['used']}/{u['perplexity']:.0f}" for u in report["val_usage"]))
    build_corpus(Path(scratch, "copies"), args.copies)
    big = os.path.join(scratch, "copies-store")
    preprocess(os.path.join(scratch, "copies"), big, load_config())
    seconds = json.loads(Path(big, "stats.json").read_text())["audio_seconds"]
    ray.shutdown()

    print(f"\nencode throughput, {args.copies} x the sample corpus, {seconds:.0f} s of audio (all splits):")
    for cpus in (1, 2):
        ray.init(num_cpus=cpus + 1, include_dashboard=False, log_to_driver=False)
        rates = []
        for run in ("cold", "warm"):
            started = time.perf_counter()
            fit.encode(folder, big, os.path.join(scratch, f"encoded-{cpus}-{run}"), actors=cpus)
            rates.append(seconds / (time.perf_counter() - started) / cpus)
        print(f"  {cpus} CPU{'s' if cpus > 1 else ''} ({cpus} actor{'s' if cpus > 1 else ''}): "
              f"cold {rates[0]:.0f}x, warm {rates[1]:.0f}x real time per core")
        ray.shutdown()


if __name__ == "__main__":
    main()
