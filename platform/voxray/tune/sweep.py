"""``voxray tune FAMILY``: Ray Tune + Optuna (TPE) + ASHA around a family's training recipe.

Each trial is one ``voxray train FAMILY`` run (a TorchTrainer with DeepSpeed workers) started
from inside the trial, per Ray's Train + Tune integration; Ray Train's reports reach Tune through
``TuneReportCallback``, so ASHA sees the recipe's metric (``METRIC``: val_mel for the acoustic
model) at every validation; the default search space is the recipe's too.

SWEEP_URI holds the Tune experiment (re-running the same command resumes it without repeating
finished trials), one run folder per trial under ``trials/``, the Optuna study (``optuna.db``,
SQLite: ``optuna-dashboard sqlite:///SWEEP/optuna.db``; for an ``s3://`` sweep a copy kept in step
with the experiment state, ``voxray.tune.study``), and at the end ``best.yaml``, ``trials.csv``
and ``sweep.png``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Optional

from voxray import uri
from voxray.cluster import verbose
from voxray.config import Config, to_yaml
from voxray.tune.gate import DecisionCallback, SchedulerGate, gate_name, open_decisions
from voxray.tune.progress import ProgressLines
from voxray.tune.space import Dimension, apply, describe, optional_space, to_tune

TRIAL_DRIVER = {"CPU": 0.01}



class SweepError(RuntimeError):
    """A sweep that produced nothing to choose from (every trial failed before a validation)."""

def _trial(params: dict[str, Any], *, store: str, sweep: str, base: Config, gated: bool,
           storage_env: dict[str, str]) -> None:
    """One trial: the training recipe with the sampled keys, reporting to Tune (and, when the
    scheduler can stop trials early, waiting for its decision at each validation)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from voxray.train.recipes import recipe

    # The trial runs in an actor of the cluster, which has the cluster's environment, not the
    # sweep driver's: the driver's storage variables (an S3 endpoint, keys) reach it here, and
    # through the recipe its training workers and Ray Data tasks.
    os.environ.update(storage_env)
    config = apply(base, params)
    context = tune.get_context()
    name = os.path.basename(context.get_trial_dir().rstrip("/")).removeprefix("trial_")
    run = uri.join(sweep, "trials", name)
    gate = SchedulerGate(gate_name(sweep), context.get_trial_id()) if gated else None
    recipe(config.family).train(store, run, config, callbacks=[TuneReportCallback()], gate=gate, console=False)


def tune(store: str, sweep: str, trials: int, base: Config, space_path: Optional[str] = None) -> dict[str, Any]:
    """Run (or resume) a sweep of ``base.family``'s recipe; returns a summary with the best config."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from voxray.cluster import ensure_ray
    from voxray.train.launch import checkpoint_metric
    from voxray.train.recipes import recipe
    from voxray.tune.study import StudySearch, open_study_file

    if base.tune.metric:                                 # the trials rank their checkpoints by it too
        base = apply(base, {"train.checkpoint_metric": base.tune.metric})
    metric, label = checkpoint_metric(recipe(base.family), base)

    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    dimensions = optional_space(space_path, base)        # fails here, before any trial, on a bad space
    store, sweep = uri.absolute(store), uri.absolute(sweep)
    # Tune saves the experiment state (which trials ended) at most every 10 s by default; a driver
    # killed in that window would re-run a finished trial on resume. The state is a small file and
    # trials last minutes: save it every 2 s.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # Embedded Ray: CPUs for the concurrent trials' workers and their token driver shares (below),
    # plus the data path's; without the shares' extra CPU a 1-worker trial on a 2-core machine
    # leaves Ray Data 0.99 CPU and stalls.
    train = base.train
    ensure_ray(cpus=base.tune.concurrent_trials * (train.num_workers * train.cpus_per_worker
                                                   + TRIAL_DRIVER["CPU"]) + max(train.data_cpus, 1.0))
    validations = max(1, -(-base.train.max_steps // base.train.val_every))
    # The trial function only drives its TorchTrainer (whose workers take the config's CPUs/GPUs):
    # it holds a token CPU share, so a trial's placement group never starves its own training
    # workers or their Ray Data tasks of a whole core. tune.concurrent_trials bounds parallelism.
    # ASHA stops trials at its rungs: their workers wait at each validation for Tune's decision
    # (voxray.tune.gate), recorded by a callback in an actor this driver owns.
    gated = base.tune.scheduler == "asha"
    decisions = open_decisions(sweep) if gated else None    # a named actor lives while a handle does
    trainable = tune.with_resources(
        tune.with_parameters(_trial, store=store, sweep=sweep, base=base, gated=gated,
                             storage_env=uri.storage_env()), TRIAL_DRIVER)
    storage_path, name, filesystem = uri.ray_storage(sweep)
    callbacks = [ProgressLines(metric)] + ([DecisionCallback(gate_name(sweep), base.train.max_steps)] if gated else [])
    run_config = tune.RunConfig(name=name, storage_path=storage_path, storage_filesystem=filesystem,
                                callbacks=callbacks, verbose=None if verbose() else 0)
    resuming = uri.exists(uri.join(sweep, "tuner.pkl"))
    study_path = open_study_file(sweep, resuming)           # before a restore unpickles the searcher
    if resuming:
        tuner = tune.Tuner.restore(f"{storage_path}/{name}", trainable, resume_unfinished=True,
                                   resume_errored=True, storage_filesystem=filesystem)
    else:
        search = StudySearch(path=study_path, copy_to_checkpoints=uri.is_remote(sweep),
                             metric=metric, mode="min", sampler=_sampler(base))
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=validations,
                                  grace_period=min(base.tune.grace_period, validations),
                                  reduction_factor=base.tune.reduction_factor) if base.tune.scheduler == "asha" else None
        tuner = tune.Tuner(
            trainable, param_space=to_tune(dimensions),
            tune_config=tune.TuneConfig(metric=metric, mode="min", search_alg=search, scheduler=scheduler,
                                        num_samples=trials, max_concurrent_trials=base.tune.concurrent_trials,
                                        trial_dirname_creator=_trial_dirname),
            run_config=run_config)
    results = tuner.fit()
    del decisions
    rows = _rows(results, dimensions, base.train.max_steps, metric)
    finished = [r for r in rows if r[f"best_{metric}"] is not None]
    if not finished:
        raise SweepError(f"no trial of the sweep {sweep} reported a validation; see its trials")
    best = min(finished, key=lambda r: r[f"best_{metric}"])
    best_config = apply(base, {d.key: best[d.key] for d in dimensions})
    uri.write_text(uri.join(sweep, "best.yaml"), to_yaml(best_config))
    uri.write_text(uri.join(sweep, "trials.csv"), _csv(rows, dimensions, metric))
    uri.write_bytes(uri.join(sweep, "sweep.png"), _plot(results, metric))
    return {"sweep": sweep, "space": describe(dimensions), "trials": rows, "best": best, "metric": metric,
            "metric_label": label, "best_yaml": uri.join(sweep, "best.yaml")}


def _sampler(base: Config):
    import optuna

    if base.tune.search == "random":
        return optuna.samplers.RandomSampler(seed=base.tune.seed)
    return optuna.samplers.TPESampler(seed=base.tune.seed, n_startup_trials=base.tune.startup_trials)


def _trial_dirname(trial) -> str:
    """``trial_<index>_<id>``: folders sort in the order trials started."""
    return f"trial_{trial.experiment_tag.split('_', 1)[0]:0>3}_{trial.trial_id}"


def _rows(results, dimensions: list[Dimension], max_steps: int, metric: str) -> list[dict[str, Any]]:
    """One row per trial: its parameters, best value of the metric, steps run and how it ended
    (finished: ran max_steps; stopped: ASHA stopped it early; error: it failed)."""
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        values = frame[metric].dropna() if frame is not None and metric in frame else []
        steps = int(frame["step"].max()) if frame is not None and "step" in frame and len(frame) else 0
        status = "error" if result.error else ("finished" if steps >= max_steps else "stopped")
        rows.append({"trial": os.path.basename(result.path).removeprefix("trial_"),
                     **{d.key: result.config.get(d.key) for d in dimensions},
                     f"best_{metric}": float(min(values)) if len(values) else None,
                     "steps": steps, "status": status})
    return sorted(rows, key=lambda row: row["trial"])


def _csv(rows: list[dict[str, Any]], dimensions: list[Dimension], metric: str) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["trial", *[d.key for d in dimensions], f"best_{metric}", "steps",
                                                "status"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _plot(results, metric: str) -> bytes:
    """The metric of every trial over wall time, best so far highlighted; the PNG's Description
    holds what was drawn (each trial's values and the best), so a reader or a test can check it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    curves = []
    for result in results:
        frame = result.metrics_dataframe
        if frame is not None and metric in frame and "timestamp" in frame:
            frame = frame.dropna(subset=[metric])
            curves.append((os.path.basename(result.path).removeprefix("trial_"),
                           list(frame["timestamp"]), list(frame[metric])))
    points = sorted((t, v) for _, times, values in curves for t, v in zip(times, values))
    start = points[0][0] if points else 0
    for name, times, values in sorted(curves):
        axes.plot([t - start for t in times], values, marker="o", markersize=3, linewidth=1, alpha=0.6, label=name)
    best, xs, ys = float("inf"), [], []
    for time_point, value in points:
        best = min(best, value)
        xs.append(time_point - start)
        ys.append(best)
    if points:
        axes.step(xs, ys, where="post", color="black", linewidth=2.5, label="best so far")
    axes.set_xlabel("seconds since the first validation")
    axes.set_ylabel(metric)
    axes.set_title("voxray sweep")
    axes.legend(fontsize=7, ncol=2)
    buffer = io.BytesIO()
    figure.tight_layout()
    plotted = {"metric": metric, "trials": {name: values for name, _, values in curves}, "best": ys[-1] if ys else None}
    figure.savefig(buffer, format="png", metadata={"Description": json.dumps(plotted)})   # the picture's own data
    plt.close(figure)
    return buffer.getvalue()
