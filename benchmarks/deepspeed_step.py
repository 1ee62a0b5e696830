"""DeepSpeed's own per-step cost, without Ray: the bare PyTorch step against DeepSpeed engines at
ZeRO 0, 1 and 2, in one process (gloo, world size 1), on the same batches, alternating rounds.

    .venv/bin/python benchmarks/deepspeed_step.py [--family acoustic|talker] [--store STORE]
                                                  [--preset tiny] [--batch-size 8] [--steps 40] [--rounds 2]

Separates what `benchmarks/train_acoustic.py` and `benchmarks/train_talker.py` measure (Ray Train
+ DeepSpeed vs a bare loop) into DeepSpeed's part; the rest is Ray's. Prints ms per step and the
ratio to the bare step. The talker's engines get the recipe's parameter groups. ``--store`` must
hold audio codes for the talker.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29561"),
                  RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["acoustic", "talker"], default="acoustic")
    parser.add_argument("--store")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import torch

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    from voxray.config import load_config
    from voxray.data.store import arrow_rows
    from voxray.train.data import bucketed, frames as mel_frames
    from voxray.train.deepspeed_config import deepspeed_config
    from voxray.train.engine import OptimizerSettings, build_engine

    if args.family == "talker":
        from voxray.models import talker as model_module
        from voxray.train.recipes.talker import COLUMNS, collate, losses, parameter_groups, prepare, tokens_and_frames

        config_file, length = str(REPO / "jobs" / "configs" / "talker-cpu.yaml"), tokens_and_frames
        step_loss = lambda model, batch, config: losses(model, batch, config, cpu)            # noqa: E731
        groups = lambda model, config: parameter_groups(model, config.train, model_module.layers(plan.build_args))  # noqa: E731
    else:
        from voxray.models.acoustic import fastspeech2 as model_module
        from voxray.train.recipes.acoustic import COLUMNS, collate, losses, prepare

        config_file, length = None, mel_frames
        step_loss = lambda model, batch, config: losses(model, batch, config, cpu, torch.float32)   # noqa: E731
        groups = lambda model, config: None                                                        # noqa: E731

    store = args.store
    if store is None:
        import ray

        from train_acoustic import ensure_store          # benchmarks/ is on sys.path

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        store = ensure_store(None, tempfile.mkdtemp(prefix="voxray-bench-"))
        if args.family == "talker":
            from train_talker import ensure_codes

            store = ensure_codes(None, os.path.dirname(store))
        ray.shutdown()
    overrides = [f"model.preset={args.preset}", f"train.batch_size={args.batch_size}"]
    plan = prepare(store, os.path.join(tempfile.mkdtemp(), "run"), load_config(config_file, overrides))
    rows = [r for f in sorted(glob.glob(f"{store}/train/*.parquet"))
            for r in arrow_rows(pq.read_table(f, columns=COLUMNS))]
    batches = [collate(plan, b) for b in bucketed(rows, length, args.batch_size, random.Random(0))]
    cpu = torch.device("cpu")

    def bare() -> float:
        torch.manual_seed(0)
        model = model_module.build(**plan.build_args)
        optimizer = torch.optim.AdamW(model.parameters())
        started = time.perf_counter()
        for step in range(args.steps):
            parts = step_loss(model, batches[step % len(batches)], plan.config)
            optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return (time.perf_counter() - started) / args.steps

    def engine_step(stage: int) -> float:
        config = load_config(config_file, [*overrides, f"deepspeed.zero_stage={stage}"])
        torch.manual_seed(0)
        model = model_module.build(**plan.build_args)
        engine, _ = build_engine(model, OptimizerSettings.of(config.train),
                                 deepspeed_config(config.train, config.deepspeed, 1), parameters=groups(model, config))
        started = time.perf_counter()
        for step in range(args.steps):
            parts = step_loss(engine, batches[step % len(batches)], config)
            engine.backward(parts["total"])
            engine.step()
        return (time.perf_counter() - started) / args.steps

    bare()                                              # warm-up
    for round_index in range(args.rounds):
        reference = bare()
        line = [f"round {round_index + 1}: bare {reference * 1000:.1f} ms"]
        for stage in (0, 1, 2):
            seconds = engine_step(stage)
            line.append(f"ZeRO-{stage} {seconds * 1000:.1f} ms ({seconds / reference:.3f}x)")
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
