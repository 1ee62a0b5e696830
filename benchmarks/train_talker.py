"""Talker training throughput and memory, measured side by side in one run.

    .venv/bin/python benchmarks/train_talker.py [--store STORE] [--steps 300] [--batch-size 8] [--small-steps 36]
                                                [--zero-stage 2] [--memory-steps 6] [--no-memory] [--gpu]

On the committed sample corpus (preprocessed, then voxray's mel codec fitted and applied: 4
codebooks of 64 codes at ~21.5 Hz), or a store with ``audio_codes`` given by ``--store``:

  bare loop      one process, plain PyTorch: the recipe's collate, model (tiny, depth head), loss,
                 AdamW and schedule over length-bucketed batches; no Ray, no DeepSpeed
  ray+ds 1 / 2   ``voxray train talker`` with 1 and 2 Ray Train workers (DeepSpeed ZeRO-2), the
                 code frames/s the recipe logs after the first log interval

for the ``tiny`` preset (batch 8) and the ``small`` one (batch 4), the bare loop and the 1-worker
run alternated ``--rounds`` times (medians: one pair of runs moves ~10 % on a shared VM). Target:
bare / ray+ds 1 worker <= 1.15. Then the ``small`` preset (8 x 512) on 2 workers at ZeRO
0, 1, 2 and 3, fully trained and with LoRA (rank 16) from a small export: each rank's peak memory
(the process's peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on a GPU), as the recipe logs
it (``peak_memory_mb``, rank 0), and the checkpoint's optimizer-state bytes per rank. Each trainer
gets one CPU (one torch thread). With ``--gpu`` (a CUDA machine): bf16 code frames/s of the
``base`` preset on one GPU.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import statistics
import tempfile
import time

from harness import CONFIGS, gpu_run, optimizer_state_per_rank, ray_run, start     # benchmarks/ is on sys.path

CPU_CONFIG = CONFIGS["talker"]


def ensure_codes(store: str | None, scratch: str) -> str:
    """A store with audio codes: ``store``, else the sample corpus preprocessed and encoded."""
    if store:
        return store
    from train_acoustic import ensure_store          # benchmarks/ is on sys.path

    from voxray import cli

    plain = ensure_store(None, scratch)
    codec, codes = os.path.join(scratch, "codec"), os.path.join(scratch, "codes")
    assert cli.main(["codec", "fit", "--data", plain, "--output", codec, "codec.n_codebooks=4",
                     "codec.codebook_size=64", "codec.fit_vectors=2000", "codec.fit_steps=60"]) == 0
    assert cli.main(["codec", "encode", "--codec", codec, "--data", plain, "--output", codes]) == 0
    return codes


def bare_loop(store: str, steps: int, batch_size: int, device: str, preset: str = "tiny") -> dict:
    """Plain PyTorch on the same data; code frames/s after 10 warm-up steps."""
    import pyarrow.parquet as pq
    import torch

    from voxray.config import load_config
    from voxray.data.store import arrow_rows
    from voxray.models import talker as talker_model
    from voxray.train.data import bucketed
    from voxray.train.recipes.talker import COLUMNS, collate, losses, parameter_groups, prepare, tokens_and_frames
    from voxray.train.schedules import scheduler

    torch.set_num_threads(1)
    config = load_config(CPU_CONFIG, [f"train.batch_size={batch_size}", f"train.max_steps={steps}",
                                      f"model.preset={preset}"])
    plan = prepare(store, os.path.join(tempfile.mkdtemp(), "bare"), config)
    train = config.train
    torch.manual_seed(0)
    model = talker_model.build(**plan.build_args).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, train, talker_model.layers(plan.build_args)),
                                  lr=train.lr, betas=train.betas, eps=train.eps, weight_decay=train.weight_decay)
    schedule = scheduler(optimizer, schedule=train.schedule, warmup_steps=train.warmup_steps, max_steps=steps)
    rows = [r for f in sorted(glob.glob(f"{store}/train/*.parquet")) for r in arrow_rows(pq.read_table(f, columns=COLUMNS))]
    batches, epoch, frames, started = [], 0, 0, None
    for step in range(steps):
        if not batches:
            batches = bucketed(rows, tokens_and_frames, batch_size, random.Random(epoch))
            epoch += 1
        batch = collate(plan, batches.pop())
        if step == min(10, steps // 3):
            started, frames = time.perf_counter(), 0
        parts = losses(model, batch, plan.config, torch.device(device))     # the plan resolves loss.sub_codebooks
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        schedule.step()
        frames += int(batch["code_lengths"].sum())
    return {"code_frames_per_s": frames / (time.perf_counter() - started)}


def alternated(title: str, rounds: int, *, bare, one, two) -> None:
    """The bare loop and the 1-worker run alternated ``rounds`` times (both sides see the same
    machine; medians), then 2 workers once: code frames/s and the overhead ratio, printed."""
    bares, ones, ratios = [], [], []
    for round_ in range(rounds):
        bares.append(bare())
        ones.append(one(round_))
        ratios.append(bares[-1] / ones[-1])
    twos = two()
    median_one = statistics.median(ones)
    print(f"\ncode frames/s ({title}; medians of {rounds} alternated rounds)")
    for label, value, each in (("bare PyTorch loop", statistics.median(bares), bares),
                               ("Ray Train + DS, 1 worker", median_one, ones), ("Ray Train + DS, 2 workers", twos, [twos])):
        print(f"  {label:28}{value:>10,.0f}   ({', '.join(f'{v:,.0f}' for v in each)})")
    print(f"  overhead bare / ray 1 worker {statistics.median(ratios):.3f} (target <= 1.15; rounds: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}); 2 workers / 1 worker {twos / median_one:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store")
    parser.add_argument("--steps", type=int, default=300,
                        help="steps of the tiny preset's throughput runs (60 measure ~1 s of training: too noisy)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--small-steps", type=int, default=36, help="steps of the small preset's throughput runs")
    parser.add_argument("--memory-steps", type=int, default=6)
    parser.add_argument("--zero-stage", type=int, default=2, help="ZeRO stage of the throughput runs")
    parser.add_argument("--no-memory", action="store_true", help="throughput only")
    parser.add_argument("--rounds", type=int, default=3,
                        help="bare loop and 1-worker run alternated this many times; medians reported (a single "
                             "pair moves ~10%% here from one minute to the next)")
    parser.add_argument("--gpu", action="store_true", help="also the base preset in bf16 on a CUDA GPU")
    args = parser.parse_args()

    scratch = start()
    store = ensure_codes(args.store, scratch)
    for preset, batch_size, steps in (("tiny", args.batch_size, args.steps), ("small", 4, args.small_steps)):
        common = [f"train.batch_size={batch_size}", f"train.max_steps={steps}", f"train.val_every={steps}",
                  f"train.log_every={max(steps // 6, 1)}", "train.cpus_per_worker=1",
                  f"deepspeed.zero_stage={args.zero_stage}",
                  f"model.preset={preset}"]
        alternated(f"{preset}, depth head, batch {batch_size} per worker, {steps} steps, 1 CPU per worker, "
                   f"ZeRO-{args.zero_stage}", args.rounds,
                   bare=lambda: bare_loop(store, max(30, steps), batch_size, "cpu", preset)["code_frames_per_s"],
                   one=lambda r: ray_run("talker", store, scratch, f"{preset}-1-{r}", [*common, "train.num_workers=1"])
                   ["code_frames_per_s"],
                   two=lambda: ray_run("talker", store, scratch, f"{preset}-2", [*common, "train.num_workers=2"])
                   ["code_frames_per_s"])

    if args.no_memory:
        return
    steps = args.memory_steps
    memory = ["train.batch_size=4", f"train.max_steps={steps}", f"train.val_every={steps}", "train.log_every=2",
              "train.cpus_per_worker=1", "train.num_workers=2", "model.preset=small", "train.warmup_steps=0"]
    base = ray_run("talker", store, scratch, "small-base", [*memory[:-2], "train.num_workers=1", "train.warmup_steps=0"])
    print(f"\nsmall preset, 2 workers, batch 4 per worker, {steps} steps: rank 0's peak RSS (MB) and optimizer "
          "state per rank (MB)")
    print(f"  {'ZeRO':6}{'full':>10}{'optim/rank':>12}{'LoRA r16':>12}{'optim/rank':>12}")
    for stage in (0, 1, 2, 3):
        cells = []
        for name, extra in ((f"small-z{stage}", []),
                            (f"small-z{stage}-lora", [f"finetune.init_from={base['run']}/final", "lora.rank=16"])):
            try:
                result = ray_run("talker", store, scratch, name, [*memory, f"deepspeed.zero_stage={stage}", *extra])
                cells += [f"{result['peak_memory_mb']:>10,.0f}",
                          f"{statistics.mean(optimizer_state_per_rank(result['run'])) / 2**20:>12.2f}"]
            except Exception as exc:                       # a stage that cannot run says why, the table goes on
                cells += [f"{'failed':>10}", f"{type(exc).__name__:>12}"]
                print(f"  ZeRO-{stage} {name}: {exc}")
        print(f"  {stage:<6}{cells[0]}{cells[1]}  {cells[2]}{cells[3]}")

    if args.gpu:
        gpu = gpu_run("talker", store, scratch, ["train.batch_size=16", f"train.max_steps={args.steps}",
                                                 f"train.val_every={args.steps}", "train.log_every=10",
                                                 "model.preset=base"])
        print(f"\nGPU: base preset, bf16, 1 worker: {gpu['code_frames_per_s']:,.0f} code frames/s, "
              f"peak {gpu['peak_memory_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
