"""``voxray export RUN --checkpoint best|latest|STEP --output DIR``: a ``final/``-style export of
any checkpoint a run kept, so ``voxray evaluate`` can compare the best checkpoint with the last,
or follow a run's quality over its steps.

The run's own recipe rebuilds the model from the run's config and store (``RUN/config.yaml``,
``RUN/store.json``; ``--data`` for runs older than store.json) exactly as its workers built it,
loads the checkpoint's evaluation weights (the EMA's when the run kept one, else the engine's,
gathered from ZeRO-3 shards where needed) and writes them with the recipe's ``export``: the
output loads wherever a ``final/`` does. Runs on the driver alone, no Ray.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any, Optional

import yaml

from voxray import uri
from voxray.config import build_config
from voxray.train.launch import STORE_FILE, checkpoint_metric
from voxray.train.runlog import METRICS_FILE

PREFIX = "checkpoint_"
BEST_DIR = "best"          # train.export_best's RUN/best/


class CheckpointExportError(ValueError):
    """The asked checkpoint cannot be exported; the message says why."""


def kept_checkpoints(run: str) -> dict[int, str]:
    """{step: folder} of the run's complete checkpoints (every rank's files there, as their
    manifests list them: ``checkpoint.problem``; older ones: holding their trainer state)."""
    from pyarrow.fs import LocalFileSystem

    from voxray.train.checkpoint import problem

    fs, inner = uri.filesystem(run)
    if not fs.isdir(inner):
        raise CheckpointExportError(f"{run} is not a run folder")
    arrow = uri.pyarrow_filesystem(run) or LocalFileSystem()
    kept = {}
    for path in fs.ls(inner, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        folder = uri.join(run, name)
        if name.startswith(PREFIX) and name[len(PREFIX):].isdigit() and \
                problem(arrow, uri.filesystem(folder)[1] if uri.is_remote(folder) else folder) is None:
            kept[int(name[len(PREFIX):])] = folder
    return kept


def validations(run: str) -> dict[int, dict[str, float]]:
    """{step: that step's validation metrics} from RUN/metrics.jsonl."""
    path = uri.join(run, METRICS_FILE)
    if not uri.exists(path):
        return {}
    rows = (json.loads(line) for line in uri.read_text(path).splitlines() if line.strip())
    return {row["step"]: row for row in rows if row.get("kind") == "val"}


def choose(run: str, which: str, metric: str) -> tuple[int, str]:
    """(step, folder) of ``which``: best (lowest ``metric`` among the kept checkpoints), latest,
    or a step number."""
    kept = kept_checkpoints(run)
    if not kept:
        raise CheckpointExportError(f"{run} holds no complete checkpoint")
    steps = ", ".join(map(str, sorted(kept)))
    if which == "latest":
        return max(kept), kept[max(kept)]
    if which == "best":
        scored = {step: row[metric] for step, row in validations(run).items() if step in kept and metric in row}
        if not scored:
            raise CheckpointExportError(f"{run}/{METRICS_FILE} has no {metric} for the kept checkpoints ({steps})")
        best = min(scored, key=scored.get)
        return best, kept[best]
    if not which.isdigit():
        raise CheckpointExportError(f"--checkpoint {which}: give best, latest or a step number")
    if int(which) not in kept:
        raise CheckpointExportError(f"{run} kept no checkpoint of step {which}; it kept steps {steps}")
    return int(which), kept[int(which)]


def export_checkpoint(run: str, which: str, output: str, store: Optional[str] = None) -> dict[str, Any]:
    """Export checkpoint ``which`` of ``run`` into ``output``; returns what was exported."""
    from voxray.train.recipes import recipe

    run, output = uri.absolute(run), uri.absolute(output)
    saved = uri.join(run, "config.yaml")
    if not uri.exists(saved):
        raise CheckpointExportError(f"{run} is not a voxray run (no config.yaml)")
    config = build_config(yaml.safe_load(uri.read_text(saved)))
    family = recipe(config.family)
    if store is None:
        if not uri.exists(uri.join(run, STORE_FILE)):
            raise CheckpointExportError(f"{run} does not record its store (a run from before {STORE_FILE}): "
                                        "give it with --data")
        store = json.loads(uri.read_text(uri.join(run, STORE_FILE)))["store"]
    metric, _ = checkpoint_metric(family, config)
    step, folder = choose(run, which, metric)
    if uri.exists(output) and not uri.is_empty_dir(output):
        raise CheckpointExportError(f"{output} is not empty; choose a new --output")
    plan = family.prepare(store, run, config, open_run=False)
    metrics = validations(run).get(step, {})
    if uri.is_remote(folder):
        with tempfile.TemporaryDirectory(prefix="voxray-export-") as local:
            fs, inner = uri.filesystem(folder)
            fs.get(inner.rstrip("/") + "/", local + "/", recursive=True)
            family.export_checkpoint(plan, local, step, metrics, output)
    else:
        family.export_checkpoint(plan, folder, step, metrics, output)
    return {"run": run, "family": config.family, "checkpoint": folder, "step": step, "metric": metric,
            "value": metrics.get(metric), "output": output}
