"""Acoustic-model training throughput and ZeRO memory, measured side by side in one run.

    .venv/bin/python benchmarks/train_acoustic.py [--store STORE] [--steps 150] [--preset tiny]
                                                   [--batch-size 8] [--gpu]

On the same feature store (default: the committed sample corpus, preprocessed first) it reports
mel frames per second of:

  bare loop      one process, plain PyTorch: the same model, batches (length-bucketed, same
                 collate), AdamW, schedule, gradient clipping and EMA; no Ray, no DeepSpeed
  ray+ds 1       `voxray train acoustic` with 1 Ray Train worker (DeepSpeed ZeRO-2 engine)
  ray+ds 2       the same with 2 workers (frames of both workers per wall-second)

Each worker gets one CPU (torch uses one thread), and so does the bare loop. For the Ray runs
the throughput is the one the recipe logs (``mel_frames_per_s`` in metrics.jsonl: frames of all
workers between two log points, validation excluded), averaged over the log intervals after the
first (which holds Ray Data's start-up); the end-to-end wall time including start-up is printed
too. Target: bare / ray+ds 1 <= 1.15.

Then 2-worker runs at ZeRO stages 0-3 report the optimizer-state bytes each rank holds, read
from the DeepSpeed checkpoint shards each rank wrote. With ``--gpu`` (a CUDA machine) it also
runs 1 worker with bf16 on the GPU.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import tempfile
import time

from harness import REPO, gpu_run, optimizer_state_per_rank, ray_run, start     # benchmarks/ is on sys.path


def ensure_store(path: str | None, scratch: str) -> str:
    if path:
        return path
    from voxray.config import load_config
    from voxray.data.pipeline import preprocess

    store = os.path.join(scratch, "store")
    preprocess(str(REPO / "corpus" / "sample"), store, load_config())
    return store


def bare_loop(store: str, steps: int, preset: str, batch_size: int, device: str) -> dict:
    """Plain PyTorch on the same data; returns mel frames/s after 10 warm-up steps."""
    import pyarrow.parquet as pq
    import torch

    from voxray.config import load_config
    from voxray.data.store import arrow_rows
    from voxray.train.data import bucketed, frames as mel_frames
    from voxray.train.recipes.acoustic import COLUMNS, collate, losses, prepare
    from voxray.train.ema import EMA
    from voxray.train.schedules import scheduler

    torch.set_num_threads(1)
    config = load_config(overrides=[f"model.preset={preset}", f"train.batch_size={batch_size}",
                                    f"train.max_steps={steps}"])
    plan = prepare(store, os.path.join(tempfile.mkdtemp(), "bare"), config)
    from voxray.models.acoustic import fastspeech2

    torch.manual_seed(0)
    model = fastspeech2.build(**plan.build_args).to(device)
    ema = EMA(model, config.train.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    schedule = scheduler(optimizer, schedule="cosine", warmup_steps=config.train.warmup_steps, max_steps=steps)
    rows = [r for f in sorted(glob.glob(f"{store}/train/*.parquet")) for r in arrow_rows(pq.read_table(f, columns=COLUMNS))]
    batches, epoch, frames, started = [], 0, 0, None
    for step in range(steps):
        if not batches:
            batches = bucketed(rows, mel_frames, batch_size, random.Random(epoch))
            epoch += 1
        batch = collate(plan, batches.pop())
        if step == 10:
            started, frames = time.perf_counter(), 0
        parts = losses(model, batch, config, torch.device(device), torch.float32)
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        schedule.step()
        ema.update(model, step)
        frames += int(batch["mel_lengths"].sum())
    return {"frames_per_s": frames / (time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gpu", action="store_true", help="also run 1 worker with bf16 on a CUDA GPU")
    args = parser.parse_args()

    scratch = start()
    store = ensure_store(args.store, scratch)
    common = [f"model.preset={args.preset}", f"train.batch_size={args.batch_size}", f"train.max_steps={args.steps}",
              f"train.val_every={args.steps}", "train.log_every=10", "train.cpus_per_worker=1"]

    bare = bare_loop(store, args.steps, args.preset, args.batch_size, "cpu")
    one = ray_run("acoustic", store, scratch, "one", [*common, "train.num_workers=1", "deepspeed.zero_stage=2"])
    one_z0 = ray_run("acoustic", store, scratch, "one_z0", [*common, "train.num_workers=1", "deepspeed.zero_stage=0"])
    two = ray_run("acoustic", store, scratch, "two", [*common, "train.num_workers=2", "deepspeed.zero_stage=2"])
    print(f"\nmel frames/s ({args.preset}, batch {args.batch_size}/worker, {args.steps} steps, 1 CPU per worker)")
    print(f"  bare PyTorch loop                  {bare['frames_per_s']:9.0f}")
    for label, result in [("Ray Train + DS ZeRO-2, 1 worker ", one), ("Ray Train + DS ZeRO-0, 1 worker ", one_z0),
                          ("Ray Train + DS ZeRO-2, 2 workers", two)]:
        print(f"  {label}   {result['rate']:9.0f}   (end to end incl. start-up {result['wall_s']:.1f} s)")
    print(f"  overhead bare / ray 1 worker ZeRO-2: {bare['frames_per_s'] / one['rate']:.3f}, "
          f"ZeRO-0: {bare['frames_per_s'] / one_z0['rate']:.3f}  (target <= 1.15)")
    print(f"  scaling 2 workers / 1 worker (ZeRO-2): {two['rate'] / one['rate']:.2f}")

    print("\noptimizer-state bytes per rank, 2 workers:")
    for stage in (0, 1, 2, 3):
        result = ray_run("acoustic", store, scratch, f"zero{stage}", [*common, "train.max_steps=10", "train.val_every=10",
                                                          "train.num_workers=2", f"deepspeed.zero_stage={stage}"])
        sizes = optimizer_state_per_rank(result["run"])
        print(f"  ZeRO-{stage}: " + ", ".join(f"rank {r} {s / 2**20:.2f} MiB" for r, s in enumerate(sizes)))

    if args.gpu:
        gpu = gpu_run("acoustic", store, scratch, common)
        bare_gpu = bare_loop(store, args.steps, args.preset, args.batch_size, "cuda")
        print(f"\nGPU: bare fp32 {bare_gpu['frames_per_s']:.0f} mel frames/s; Ray Train + DS bf16, 1 worker "
              f"{gpu['rate']:.0f}")


if __name__ == "__main__":
    main()
