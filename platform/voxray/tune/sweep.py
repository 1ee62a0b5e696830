"""``voxray tune acoustic``: Ray Tune + Optuna (TPE) + ASHA around the acoustic training recipe.

Each trial is one ``voxray train acoustic`` run (a TorchTrainer with DeepSpeed workers) started
from inside the trial, per Ray's Train + Tune integration; Ray Train's reports reach Tune through
``TuneReportCallback``, so ASHA sees the validation mel loss at every validation.

SWEEP_URI holds the Tune experiment (re-running the same command resumes it without repeating
finished trials), one run folder per trial under ``trials/``, the Optuna study (``optuna.db``,
SQLite: ``optuna-dashboard sqlite:///SWEEP/optuna.db``), and at the end ``best.yaml``,
``trials.csv`` and ``sweep.png``.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from typing import Any, Optional

from voxray import uri
from voxray.config import Config, to_yaml
from voxray.tune.space import Dimension, apply, describe, optional_space, to_tune

METRIC = "val_mel"
STUDY = "voxray"


def _trial(params: dict[str, Any], *, store: str, sweep: str, base: Config) -> None:
    """One trial: the training recipe with the sampled keys, reporting to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from voxray.train.recipes import acoustic

    config = apply(base, params)
    run = uri.join(sweep, "trials", tune.get_context().get_trial_id())
    acoustic.train(store, run, config, callbacks=[TuneReportCallback()])


def _study_storage(sweep: str) -> tuple[str, Any]:
    """The Optuna study's SQLite file: inside SWEEP_URI when local, else a local copy that is
    uploaded at the end."""
    import optuna

    path = os.path.join(sweep, "optuna.db") if not uri.is_remote(sweep) else os.path.join(
        tempfile.mkdtemp(prefix="voxray-optuna-"), "optuna.db")
    if uri.is_remote(sweep) and uri.exists(uri.join(sweep, "optuna.db")):
        with open(path, "wb") as handle:
            handle.write(uri.read_bytes(uri.join(sweep, "optuna.db")))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path, optuna.storages.RDBStorage(f"sqlite:///{path}")


def tune_acoustic(store: str, sweep: str, trials: int, base: Config,
                  space_path: Optional[str] = None) -> dict[str, Any]:
    """Run (or resume) the sweep; returns a summary with the best config."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from voxray.data.pipeline import ensure_ray
    from voxray.train.data import pyarrow_filesystem

    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    dimensions = optional_space(space_path, base)        # fails here, before any trial, on a bad space
    store, sweep = uri.absolute(store), uri.absolute(sweep)
    ensure_ray()
    validations = max(1, -(-base.train.max_steps // base.train.val_every))
    trainable = tune.with_parameters(_trial, store=store, sweep=sweep, base=base)
    fs_sweep = uri.filesystem(sweep)[1] if uri.is_remote(sweep) else sweep
    run_config = tune.RunConfig(name=os.path.basename(fs_sweep.rstrip("/")),
                                storage_path=os.path.dirname(fs_sweep.rstrip("/")),
                                storage_filesystem=pyarrow_filesystem(sweep))
    db_path, storage = _study_storage(sweep)
    experiment = uri.join(sweep, "tuner.pkl")
    if uri.exists(experiment):
        tuner = tune.Tuner.restore(sweep, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=pyarrow_filesystem(sweep))
    else:
        search = OptunaSearch(metric=METRIC, mode="min", sampler=optuna.samplers.TPESampler(seed=base.tune.seed),
                              storage=storage, study_name=STUDY)
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=validations,
                                  grace_period=min(base.tune.grace_period, validations),
                                  reduction_factor=base.tune.reduction_factor)
        tuner = tune.Tuner(
            trainable, param_space=to_tune(dimensions),
            tune_config=tune.TuneConfig(metric=METRIC, mode="min", search_alg=search, scheduler=scheduler,
                                        num_samples=trials, max_concurrent_trials=base.tune.concurrent_trials),
            run_config=run_config)
    results = tuner.fit()
    rows = _rows(results, dimensions)
    finished = [r for r in rows if r["best_val_mel"] is not None]
    if not finished:
        raise RuntimeError(f"no trial of the sweep {sweep} reported a validation; see its trials")
    best = min(finished, key=lambda r: r["best_val_mel"])
    best_config = apply(base, {d.key: best[d.key] for d in dimensions})
    uri.write_text(uri.join(sweep, "best.yaml"), to_yaml(best_config))
    uri.write_text(uri.join(sweep, "trials.csv"), _csv(rows, dimensions))
    uri.write_bytes(uri.join(sweep, "sweep.png"), _plot(results))
    if uri.is_remote(sweep):
        with open(db_path, "rb") as handle:
            uri.write_bytes(uri.join(sweep, "optuna.db"), handle.read())
    return {"sweep": sweep, "space": describe(dimensions), "trials": rows, "best": best,
            "best_yaml": uri.join(sweep, "best.yaml")}


def _rows(results, dimensions: list[Dimension]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        values = frame[METRIC].dropna() if frame is not None and METRIC in frame else []
        steps = int(frame["step"].max()) if frame is not None and "step" in frame and len(frame) else 0
        status = "error" if result.error else ("stopped" if steps < _max_steps(result) else "finished")
        rows.append({"trial": os.path.basename(result.path), **{d.key: result.config.get(d.key) for d in dimensions},
                     "best_val_mel": float(min(values)) if len(values) else None,
                     "steps": steps, "status": status})
    return rows


def _max_steps(result) -> int:
    return int(result.config.get("train.max_steps", 0)) or 10**12


def _csv(rows: list[dict[str, Any]], dimensions: list[Dimension]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["trial", *[d.key for d in dimensions], "best_val_mel", "steps", "status"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _plot(results) -> bytes:
    """Validation mel loss of every trial over wall time, best so far highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    points = []
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or METRIC not in frame or "timestamp" not in frame:
            continue
        frame = frame.dropna(subset=[METRIC])
        axes.plot(frame["timestamp"], frame[METRIC], marker="o", markersize=3, linewidth=1, alpha=0.6,
                  label=os.path.basename(result.path)[-12:])
        points += list(zip(frame["timestamp"], frame[METRIC]))
    if points:
        points.sort()
        start = points[0][0]
        best, xs, ys = float("inf"), [], []
        for time_point, value in points:
            best = min(best, value)
            xs.append(time_point)
            ys.append(best)
        axes.step(xs, ys, where="post", color="black", linewidth=2.5, label="best so far")
        ticks = axes.get_xticks()
        axes.set_xticks(ticks, [f"{t - start:.0f}" for t in ticks])
    axes.set_xlabel("seconds since the first validation")
    axes.set_ylabel("validation mel L1")
    axes.set_title("voxray sweep")
    axes.legend(fontsize=7, ncol=2)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
