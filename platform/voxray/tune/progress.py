"""A sweep's console: one line per trial start, validation and end (Tune's own status table is
off unless ``--verbose``)."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from voxray.cluster import say


def trial_label(trial) -> str:
    """``trial 003`` (the order trials started, as their folders are named)."""
    return f"trial {trial.experiment_tag.split('_', 1)[0]:0>3}"


class ProgressLines(Callback):
    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.best: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
        say(f"{trial_label(trial)} started: {params}")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if self.metric not in result:
            return
        value = result[self.metric]
        best = min(value, self.best.get(trial.trial_id, float("inf")))
        self.best[trial.trial_id] = best
        overall = min(self.best.values())
        say(f"{trial_label(trial)} step {result.get('step')}: {self.metric} {value:.4f}"
            + ("  (best of the sweep)" if value == overall else ""))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        best = self.best.get(trial.trial_id)
        say(f"{trial_label(trial)} ended" + (f": best {self.metric} {best:.4f}" if best is not None else ""))

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        say(f"{trial_label(trial)} failed; its error is in {trial.local_path or trial.path}")
