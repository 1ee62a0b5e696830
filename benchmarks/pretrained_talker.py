"""Pretrained-talker fine-tuning (Sesame CSM) throughput and memory, measured side by side in one run.

    .venv/bin/python benchmarks/pretrained_talker.py [--store STORE] [--steps 60] [--rounds 3] [--memory-steps 6]

On the committed sample corpus (preprocessed, encoded with the tiny CSM's Mimi), a tiny random
CSM of the real class (``voxray.models.pretrained.tiny.csm_folder``: backbone 2 x 64, depth decoder
1 x 32, 4 codebooks of 64), batch 4:

  bare loop      one process, plain PyTorch: the same collate (CSM's chat template and tokenizer),
                 CSM's forward(labels=) loss, AdamW, no Ray, no DeepSpeed (the single-GPU scripts'
                 loop)
  ray+ds 1 / 2   ``voxray train talker model.pretrained=...`` on 1 and 2 Ray Train workers (ZeRO-0 by
                 default, as jobs/configs/talker-cpu.yaml; ``--zero-stage``),
                 the code frames/s the recipe logs after the first log interval

the bare loop and the 1-worker run alternated ``--rounds`` times (medians). Target: bare / ray+ds
1 worker <= 1.15. Then 2 workers at ZeRO-2 and ZeRO-3, full fine-tuning and LoRA (r 16): rank 0's
peak memory as the recipe logs it and each rank's optimizer state in the checkpoint. The real
csm-1b sizes need a GPU machine; none was lent to the sessions so far (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from harness import optimizer_state_per_rank, ray_run, start          # benchmarks/ is on sys.path
from train_talker import alternated


def ensure_mimi_codes(store: str | None, scratch: str) -> tuple[str, str]:
    """(a store of the tiny CSM's Mimi codes, the tiny CSM's folder)."""
    from train_acoustic import ensure_store

    from voxray import cli
    from voxray.models.pretrained.tiny import csm_folder

    plain = ensure_store(store, scratch)
    lines = [line.split("|")[1] for line in open(os.path.join(os.path.dirname(__file__), "..", "corpus", "sample",
                                                              "metadata.csv"))]
    csm = csm_folder(os.path.join(scratch, "csm"), lines, mimi_folder=os.path.join(scratch, "mimi"))
    codes = os.path.join(scratch, "mimi-codes")
    assert cli.main(["codec", "encode", "--codec", f"pretrained:mimi={scratch}/mimi", "--data", plain,
                     "--output", codes]) == 0
    return codes, csm


def bare_loop(store: str, csm: str, steps: int, batch_size: int) -> float:
    """Plain PyTorch over the same batches; code frames/s after 10 warm-up steps."""
    import glob

    import pyarrow.parquet as pq
    import torch

    from voxray.data.store import arrow_rows
    from voxray.models.pretrained.training import talker
    from voxray.train.data import bucketed
    from voxray.train.recipes.talker import tokens_and_frames

    torch.set_num_threads(1)
    arch = talker(csm)
    torch.manual_seed(0)
    model = arch.load()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rows = [r for f in sorted(glob.glob(f"{store}/train/*.parquet"))
            for r in arrow_rows(pq.read_table(f, columns=arch.columns))]
    batches, epoch, frames, started = [], 0, 0, None
    for step in range(steps):
        if not batches:
            batches = bucketed(rows, tokens_and_frames, batch_size, random.Random(epoch))
            epoch += 1
        batch = arch.collate(batches.pop(), rng=None)
        if step == min(10, steps // 3):
            started, frames = time.perf_counter(), 0
        loss = arch.forward(model, batch)["upstream_loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        frames += int(batch["code_lengths"].sum())
    return frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, default=6)
    parser.add_argument("--zero-stage", type=int, default=0,
                        help="ZeRO stage of the throughput runs (0: with one worker ZeRO-2 partitions nothing and "
                             "its bookkeeping costs 1.4-1.5x per step on models this small; RESULTS.md)")
    parser.add_argument("--no-memory", action="store_true", help="throughput only")
    args = parser.parse_args()

    scratch = start("voxray-bench-csm-")
    store, csm = ensure_mimi_codes(args.store, scratch)
    steps = args.steps
    common = [f"model.pretrained={csm}", f"train.batch_size={args.batch_size}", f"train.max_steps={steps}",
              f"train.val_every={steps}", f"train.log_every={max(steps // 6, 1)}", "train.cpus_per_worker=1",
              f"deepspeed.zero_stage={args.zero_stage}", "train.lr=1e-4", "train.warmup_steps=0"]
    alternated(f"tiny CSM, batch {args.batch_size} per worker, {steps} steps, 1 CPU per worker, "
               f"ZeRO-{args.zero_stage}", args.rounds,
               bare=lambda: bare_loop(store, csm, max(30, steps), args.batch_size),
               one=lambda r: ray_run("talker", store, scratch, f"one-{r}", [*common, "train.num_workers=1"])["code_frames_per_s"],
               two=lambda: ray_run("talker", store, scratch, "two", [*common, "train.num_workers=2"])["code_frames_per_s"])
    if args.no_memory:
        return

    memory = [f"model.pretrained={csm}", "train.batch_size=4", f"train.max_steps={args.memory_steps}",
              f"train.val_every={args.memory_steps}", "train.log_every=2", "train.cpus_per_worker=1",
              "train.num_workers=2", "train.warmup_steps=0"]
    print(f"\ntiny CSM, 2 workers, batch 4 per worker, {args.memory_steps} steps: rank 0's peak RSS (MB) and "
          "optimizer state per rank (MB)")
    print(f"  {'ZeRO':6}{'full':>10}{'optim/rank':>12}{'LoRA r16':>12}{'optim/rank':>12}")
    for stage in (2, 3):
        cells = []
        for name, extra in ((f"z{stage}", []), (f"z{stage}-lora", ["lora.rank=16"])):
            result = ray_run("talker", store, scratch, name, [*memory, f"deepspeed.zero_stage={stage}", *extra])
            cells += [f"{result['peak_memory_mb']:>10,.0f}",
                      f"{statistics.mean(optimizer_state_per_rank(result['run'])) / 2**20:>12.3f}"]
        print(f"  {stage:<6}{cells[0]}{cells[1]}  {cells[2]}{cells[3]}", flush=True)


if __name__ == "__main__":
    main()
