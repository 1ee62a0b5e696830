"""Where a short training run's wall time goes, and what the parquet datasource costs before the
first batch, measured side by side in one run.

    .venv/bin/python benchmarks/run_startup.py [--store STORE] [--rounds 3] [--steps 10]

1. Ray Data alone, on a 2-CPU local Ray with one CPU held by an actor (as a Train worker holds
   it): the train and val splits of the store read as ``voxray.train`` reads them (a streaming
   split each, consumed at once), time from ``read_parquet`` to each split's first batch, with
   Ray Data's first parquet datasource (what ``voxray.data.store.read_parts`` uses) and its second
   (Ray 2.60's default), alternated ``--rounds`` times.
2. ``voxray.train.recipes.acoustic.train`` of the tiny model for ``--steps`` steps: the time to
   the first logged step, the steps, and from the last record to ``train`` returning (Ray Train's
   teardown), from the run's metrics.jsonl timestamps.

On the sample corpus (preprocessed into a scratch folder) unless ``--store`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["id", "n_frames", "mel", "token_ids"]


def first_batches(store: str, second: bool) -> dict[str, float]:
    """Seconds from read_parquet to the first batch of each split's streaming split."""
    import ray

    from voxray.data.store import split_files

    context = ray.data.DataContext.get_current()
    context.use_datasource_v2 = second
    started = time.perf_counter()
    datasets = {split: ray.data.read_parquet(split_files(store, split), columns=COLUMNS) for split in ("train", "val")}
    splits = {name: d.streaming_split(1, equal=name == "train")[0] for name, d in datasets.items()}
    seen: dict[str, float] = {}

    def first(name: str) -> None:
        for _ in splits[name].iter_batches(batch_size=64, batch_format="pyarrow"):
            seen[name] = time.perf_counter() - started
            break

    threads = [threading.Thread(target=first, args=(name,)) for name in splits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    scratch = tempfile.mkdtemp(prefix="voxray-bench-")
    store = args.store
    if store is None:
        from train_acoustic import ensure_store          # benchmarks/ is on sys.path

        store = ensure_store(None, scratch)

    @ray.remote(num_cpus=1)
    class Holder:                                      # the Train worker's CPU
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    ray.get(holder.ready.remote())
    results: dict[str, list[float]] = {"first": [], "second": []}
    for round_ in range(args.rounds):
        for name in ("first", "second"):
            seen = first_batches(store, second=name == "second")
            results[name].append(max(seen.values()))
            print(f"round {round_ + 1}, {name} datasource: first batch of train {seen['train']:.2f} s, "
                  f"val {seen['val']:.2f} s", flush=True)
    ray.data.DataContext.get_current().use_datasource_v2 = True
    ray.kill(holder)
    first, second = statistics.median(results["first"]), statistics.median(results["second"])
    print(f"both splits' first batch, median of {args.rounds}: first datasource {first:.2f} s, second {second:.2f} s "
          f"({second - first:+.2f} s)")

    from voxray.config import load_config
    from voxray.train.recipes.acoustic import train

    run = os.path.join(scratch, "run")
    config = load_config(str(REPO / "jobs" / "configs" / "acoustic-cpu.yaml"),
                         [f"train.max_steps={args.steps}", f"train.val_every={args.steps}", "train.log_every=1",
                          "train.max_failures=0"])
    called = time.time()
    train(store, run, config, console=False)
    returned = time.time()
    records = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    steps = [r["time"] for r in records if r["kind"] == "train"]
    print(f"tiny acoustic run, {args.steps} steps, 1 worker: first step at {steps[0] - called:.1f} s, steps "
          f"{steps[-1] - steps[0]:.1f} s, last record to return {returned - max(r['time'] for r in records):.1f} s, "
          f"total {returned - called:.1f} s")


if __name__ == "__main__":
    main()
