"""The contracts between the training core and the families, as types.

- ``Recipe``: what a family gives the core (built at the bottom of each recipe module, listed in
  ``recipes/__init__.py``); the CLI, ``jobs/``, sweeps and ``voxray export`` go through it.
- ``WorkerSettings``: what the driver (``launch.fit``) hands every Ray Train worker; Ray passes
  it inside its ``train_loop_config`` dict under one key, and ``WorkerSettings.of`` takes it out.
- ``StopReason``: why a run ended before ``train.max_steps``, kept in the trainer state; the
  prose beside it (``TrainerState.stop_reason``) is for people, never parsed.

This module imports nothing of voxray's but the config (the recipes, ``launch`` and ``worker``
import it), so it sits below them in the import graph (docs/architecture.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from voxray.config import Config


class StopReason(str, enum.Enum):
    """Why the loop stopped before ``train.max_steps`` (NONE: it has not, or it reached them)."""

    NONE = ""
    EARLY_STOPPING = "early_stopping"       # train.patience validations without improvement: exports
    NON_FINITE = "non_finite"               # train.max_nonfinite_steps skipped in a row: aborts, no export
    SCHEDULER = "scheduler"                 # a sweep's scheduler stopped the trial: checkpoints only


@dataclass(frozen=True)
class WorkerSettings:
    """The driver's hand-over to each worker's ``train_loop``."""

    plan: Any                                # the family's Plan (store, run, resolved config, labels, ...)
    metric: str                              # what best-k, early stopping and a sweep minimise
    gate: Any = None                         # a sweep trial's SchedulerGate
    console: Any = None                      # the driver's console queue (None in a sweep's trials)
    storage_env: dict[str, str] = field(default_factory=dict)     # S3 endpoint and retry variables

    KEY = "settings"                         # its key in Ray's train_loop_config dict

    @classmethod
    def of(cls, loop_config: dict[str, Any]) -> "WorkerSettings":
        return loop_config[cls.KEY]

    @property
    def config(self) -> Config:
        return self.plan.config

    @property
    def run(self) -> str:
        return self.plan.run


@dataclass(frozen=True)
class Recipe:
    """One model family's recipe: the core needs nothing else of it.

    ``prepare(store, run, config, open_run)`` checks the store against the config (and the base
    model when fine-tuning) on the driver and returns the family's Plan (with ``.store``,
    ``.run``, ``.config``); ``columns(plan)`` names the store columns its workers read;
    ``train_loop(loop_config)`` is one Ray Train worker (``WorkerSettings.of(loop_config)``);
    ``search_space(config)`` is a sweep's default space; ``export_checkpoint(plan, folder, step,
    metrics, output)`` writes a kept checkpoint as ``final/`` would be."""

    family: str
    metric: str                              # best-k checkpoints, early stopping, sweeps (lower is better)
    metric_label: str                        # the metric as the console names it
    metrics: tuple[str, ...]                 # what train.checkpoint_metric may name
    prepare: Callable[..., Any]
    columns: Callable[[Any], list[str]]
    train_loop: Callable[[dict[str, Any]], None]
    search_space: Callable[[Config], dict[str, Any]]
    export_checkpoint: Callable[..., None]

    def train(self, store: str, run: str, config: Config, callbacks: Optional[list] = None, gate: Any = None,
              console: bool = True) -> dict[str, Any]:
        """Train (or resume) on Ray; returns a summary. ``callbacks`` and ``gate`` come from a
        sweep (Tune's report callback, the trial's ``voxray.tune.gate.SchedulerGate``)."""
        from voxray.train import launch

        plan = self.prepare(store, run, config)
        return launch.fit_recipe(self, plan, callbacks=callbacks, gate=gate, console=console)
