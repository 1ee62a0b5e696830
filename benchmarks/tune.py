"""Sweep efficiency: Optuna TPE + ASHA against random search without early stopping, side by side.

    .venv/bin/python benchmarks/tune.py [--store STORE] [--trials 8] [--steps 120] [--val-every 20]
                                        [--seeds 0 [1 ...]] [--grace-period 1] [--reduction-factor 3]
                                        [--startup-trials 3] [--search-space FILE]

Both arms run `voxray tune acoustic` on the same feature store (default: the committed sample
corpus, preprocessed first) with the tiny model, the default acoustic search space (learning
rate and four loss weights; or --search-space FILE), the same number of trials, the same steps
per trial and the same sampler seed, for each seed given:

  tpe+asha   TPE sampler (random start-up trials first), ASHA on the validation mel loss
             (grace period and reduction factor from the arguments; rungs count validations)
  random     Optuna's random sampler, every trial runs all its steps (FIFO)

It prints, for each arm, the best validation mel L1 reached and the trial-steps spent (training
steps summed over trials, read from each trial's metrics), then the trial-steps TPE + ASHA needed
until its best-so-far matched random search's best (trials run one at a time, so the order is
the time order), as a ratio of random search's budget, per seed and their median. Target: at
most 0.5. A trial ASHA stops halts at its rung (its workers wait for Tune's decision at every
validation, voxray.tune.gate), so the steps counted are the steps it needed.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from train_acoustic import ensure_store  # noqa: E402


def run_arm(store: str, sweep: str, trials: int, space: str | None, overrides: list[str]) -> None:
    from voxray import cli

    code = cli.main(["tune", "acoustic", "--data", store, "--output", sweep, "--trials", str(trials),
                     "--config", str(REPO / "jobs" / "configs" / "acoustic-cpu.yaml"),
                     *(["--search-space", space] if space else []), *overrides])
    if code != 0:
        raise SystemExit(f"sweep {sweep} failed ({code})")


def trial_curves(sweep: str) -> list[tuple[str, int, list[tuple[int, float]]]]:
    """Per trial, in the order they ran: name, steps trained, (step, val_mel) points."""
    curves = []
    for run in sorted(glob.glob(os.path.join(sweep, "trials", "*"))):
        records = [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()]
        steps = max((r["step"] for r in records if r["kind"] == "train"), default=0)
        points = [(r["step"], r["val_mel"]) for r in records if r["kind"] == "val"]
        curves.append((os.path.basename(run), steps, points))
    return curves


def steps_to_reach(curves, target: float) -> int | None:
    spent = 0
    for _, steps, points in curves:
        for step, value in points:
            if value <= target:
                return spent + step
        spent += steps
    return None


def run_seed(store: str, scratch: str, args, seed: int) -> dict:
    """Both arms at one sampler seed; returns each arm's curves, best, trial-steps and wall time."""
    common = [f"train.max_steps={args.steps}", f"train.val_every={args.val_every}", "train.log_every=5",
              "train.max_failures=0", f"tune.seed={seed}"]
    arms = {
        "tpe+asha": common + ["tune.search=tpe", "tune.scheduler=asha", f"tune.grace_period={args.grace_period}",
                              f"tune.reduction_factor={args.reduction_factor}",
                              f"tune.startup_trials={args.startup_trials}"],
        "random": common + ["tune.search=random", "tune.scheduler=fifo"],
    }
    results = {}
    for name, overrides in arms.items():
        sweep = os.path.join(scratch, f"seed{seed}-{name}")
        started = time.perf_counter()
        run_arm(store, sweep, args.trials, args.search_space, overrides)
        curves = trial_curves(sweep)
        best = min(value for _, _, points in curves for _, value in points)
        results[name] = {"curves": curves, "best": best, "spent": sum(steps for _, steps, _ in curves),
                         "seconds": time.perf_counter() - started}
    return results


def report_seed(seed: int, results: dict) -> float:
    """Prints one seed's arms; returns its ratio (inf when TPE + ASHA never matched random's best)."""
    print(f"\nseed {seed}")
    for name, result in results.items():
        print(f"{name:>9}: best val mel L1 {result['best']:.4f}, trial-steps spent {result['spent']}, "
              f"{result['seconds'] / 60:.1f} min")
        print("           " + " | ".join(f"{steps} {min(v for _, v in points):.4f}"
                                         for _, steps, points in result["curves"]))
    target = results["random"]["best"]
    needed = steps_to_reach(results["tpe+asha"]["curves"], target)
    random_to_best = steps_to_reach(results["random"]["curves"], target)
    if needed is None:
        print(f"tpe+asha never reached random search's best ({target:.4f}): ratio > 1")
        return math.inf
    ratio = needed / results["random"]["spent"]
    print(f"tpe+asha reached random search's best ({target:.4f}) after {needed} trial-steps; random search "
          f"spent {results['random']['spent']} (and reached it after {random_to_best})")
    print(f"ratio tpe+asha / random budget: {ratio:.3f}; vs random's steps to its best: {needed / random_to_best:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--val-every", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA: validations before a stop")
    parser.add_argument("--reduction-factor", type=int, default=3, help="ASHA: keep 1 in this many per rung")
    parser.add_argument("--startup-trials", type=int, default=3, help="TPE: random trials before it models")
    parser.add_argument("--search-space", help="a YAML search space instead of the acoustic default")
    args = parser.parse_args()

    from voxray.cluster import start_local

    start_local(num_cpus=4, log_to_driver=False)
    scratch = tempfile.mkdtemp(prefix="voxray-bench-tune-")
    store = ensure_store(args.store, scratch)
    ratios = {}
    for seed in args.seeds:
        results = run_seed(store, scratch, args, seed)
        ratios[seed] = report_seed(seed, results)
        sys.stdout.flush()

    print(f"\n{args.trials} trials x {args.steps} steps each, validation every {args.val_every} steps, "
          f"ASHA grace {args.grace_period} reduction {args.reduction_factor}, TPE start-up "
          f"{args.startup_trials}, space {args.search_space or 'default'}, store {store}")
    print("ratio per seed: " + ", ".join(f"{seed}: {ratio:.3f}" for seed, ratio in ratios.items()))
    print(f"median ratio tpe+asha / random budget: {statistics.median(ratios.values()):.3f}  (target <= 0.5)")


if __name__ == "__main__":
    main()
