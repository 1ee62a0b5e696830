"""AdaLoRA against LoRA at the same final rank, fine-tuning voxray's tiny talker (CPU, 1 worker).

    .venv/bin/python benchmarks/adalora.py [--base-steps 150] [--steps 120] [--seeds 1,2]

A base talker is trained on the sample corpus (encoded with a small mel codec), then fine-tuned
from its export with LoRA rank 4 and with AdaLoRA pruned from rank 8 to a mean of 4 (warm-up 20
steps, the last 30 at the final ranks), both at ZeRO-2, the same learning rates and seeds,
interleaved. The table gives the medians over seeds of the last validation cross-entropy, the
code frames per second (the allocator's gradient copies and the regulariser cost time) and the
live singular values at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_talker import ensure_codes, ray_run         # noqa: E402

KINDS = {"LoRA r=4": ["lora.rank=4"],
         "AdaLoRA 8 -> 4": ["lora.rank=8", "lora.adalora=true", "lora.target_rank=4", "lora.adalora_warmup=20",
                            "lora.adalora_final=30", "lora.adalora_interval=5"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-steps", type=int, default=150)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seeds", default="1,2")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="voxray-adalora-")
    store = ensure_codes(None, scratch)
    base = ray_run(store, scratch, "base", [f"train.max_steps={args.base_steps}", "train.val_every=50"])["run"]
    results: dict[str, list[dict]] = {name: [] for name in KINDS}
    common = [f"finetune.init_from={base}/final", "deepspeed.zero_stage=2", f"train.max_steps={args.steps}",
              "train.val_every=40", "train.log_every=10", "train.adapter_lr=5e-3", "train.warmup_steps=10"]
    for seed in args.seeds.split(","):
        for name, overrides in KINDS.items():        # interleaved: the machine's drift hits both alike
            got = ray_run(store, scratch, f"{name.split()[0]}-{seed}", [*common, f"train.seed={seed}", *overrides])
            records = [json.loads(line) for line in Path(got["run"], "metrics.jsonl").read_text().splitlines()]
            val = [r for r in records if r["kind"] == "val"][-1]
            last = [r for r in records if r["kind"] == "train"][-1]
            results[name].append({"val_ce": val["val_ce"], "rate": got["code_frames_per_s"],
                                  "ranks": last.get("adalora_ranks")})
    base_val = [json.loads(line) for line in Path(base, "metrics.jsonl").read_text().splitlines()]
    print(f"base talker val_ce {[r for r in base_val if r['kind'] == 'val'][-1]['val_ce']:.4f}")
    print("| adapters | val_ce | code frames/s | live singular values at the end |")
    print("|---|---|---|---|")
    for name, values in results.items():
        ranks = values[0]["ranks"]
        print(f"| {name} | {statistics.median(v['val_ce'] for v in values):.4f} | "
              f"{statistics.median(v['rate'] for v in values):,.0f} | {'-' if ranks is None else int(ranks)} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
