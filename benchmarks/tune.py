"""Sweep efficiency: Optuna TPE + ASHA against random search without early stopping, side by side.

    .venv/bin/python benchmarks/tune.py [--store STORE] [--trials 8] [--steps 60] [--val-every 10]
                                        [--seed 0] [--grace-period 1] [--reduction-factor 2]

Both arms run `voxray tune acoustic` on the same feature store (default: the committed sample
corpus, preprocessed first) with the tiny model, the default acoustic search space (learning
rate and four loss weights), the same number of trials, the same steps per trial and the same
sampler seed:

  tpe+asha   TPE sampler (3 random start-up trials), ASHA on the validation mel loss
             (grace period and reduction factor from the arguments; rungs count validations)
  random     Optuna's random sampler, every trial runs all its steps (FIFO)

It prints, for each arm, the best validation mel L1 reached and the trial-steps spent (training
steps summed over trials, read from each trial's metrics), then the trial-steps TPE + ASHA needed
until its best-so-far matched random search's best (trials run one at a time, so the order is
the time order), as a ratio of random search's budget. Target: at most 0.5.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from train_acoustic import ensure_store  # noqa: E402


def run_arm(store: str, sweep: str, trials: int, overrides: list[str]) -> None:
    from voxray import cli

    code = cli.main(["tune", "acoustic", "--data", store, "--output", sweep, "--trials", str(trials),
                     "--config", str(REPO / "jobs" / "configs" / "acoustic-cpu.yaml"), *overrides])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--val-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA: validations before a stop")
    parser.add_argument("--reduction-factor", type=int, default=2, help="ASHA: keep 1 in this many per rung")
    args = parser.parse_args()

    from voxray.cluster import start_local

    start_local(num_cpus=4, log_to_driver=False)
    scratch = tempfile.mkdtemp(prefix="voxray-bench-tune-")
    store = ensure_store(args.store, scratch)
    common = [f"train.max_steps={args.steps}", f"train.val_every={args.val_every}", "train.log_every=5",
              "train.max_failures=0", f"tune.seed={args.seed}"]
    arms = {
        "tpe+asha": common + ["tune.search=tpe", "tune.scheduler=asha", f"tune.grace_period={args.grace_period}",
                              f"tune.reduction_factor={args.reduction_factor}"],
        "random": common + ["tune.search=random", "tune.scheduler=fifo"],
    }
    results = {}
    for name, overrides in arms.items():
        sweep = os.path.join(scratch, name)
        run_arm(store, sweep, args.trials, overrides)
        curves = trial_curves(sweep)
        best = min(value for _, _, points in curves for _, value in points)
        results[name] = {"curves": curves, "best": best, "spent": sum(steps for _, steps, _ in curves)}

    print(f"\n{args.trials} trials x {args.steps} steps each, validation every {args.val_every} steps, "
          f"seed {args.seed}, ASHA grace {args.grace_period} reduction {args.reduction_factor}, store {store}")
    for name, result in results.items():
        print(f"{name:>9}: best val mel L1 {result['best']:.4f}, trial-steps spent {result['spent']}")
        for trial, steps, points in result["curves"]:
            print(f"           {trial}: {steps:>3} steps, best {min(v for _, v in points):.4f}")
    target = results["random"]["best"]
    needed = steps_to_reach(results["tpe+asha"]["curves"], target)
    random_to_best = steps_to_reach(results["random"]["curves"], target)
    if needed is None:
        print(f"tpe+asha never reached random search's best ({target:.4f}): ratio > 1 (target <= 0.5 missed)")
        return
    print(f"tpe+asha reached random search's best ({target:.4f}) after {needed} trial-steps; random search "
          f"spent {results['random']['spent']} (and reached it after {random_to_best})")
    print(f"ratio tpe+asha / random budget: {needed / results['random']['spent']:.3f}  (target <= 0.5); "
          f"vs random's steps to its best: {needed / random_to_best:.3f}")


if __name__ == "__main__":
    main()
