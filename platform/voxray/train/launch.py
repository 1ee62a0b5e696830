"""The driver side of every training run: open the run folder, check that a resume still fits
its checkpoints and that the run fits the cluster, start and ``fit`` Ray Train's TorchTrainer,
print the run's console lines, and turn Ray's failures into ours.

Only this module and ``worker.py`` (the worker side) call Ray Train.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Optional

import yaml
from ray.train import DataConfig

from voxray import uri
from voxray.cluster import Demand, check_fit, describe_waiting, ensure_ray, say
from voxray.config import Config, ConfigError, build_config, save_config
from voxray.config.root import check_adalora
from voxray.train.contract import Recipe, WorkerSettings
from voxray.export import FINAL_DIR
from voxray.train.data import store_datasets
from voxray.train.engine import NonFiniteError
from voxray.train.worker import ABORTED_FILE

# Keys that must not change when a run resumes: they change the model, its shards or its labels.
RESUME_FIXED = ("family", "model", "lora", "finetune", "deepspeed.zero_stage", "train.num_workers", "audio")
STORE_FILE = "store.json"      # RUN/store.json: the store the run trains on (voxray export reads it)


class TrainingError(RuntimeError):
    """The run failed; the message says why and where to look."""


class ShardConfig(DataConfig):
    """Train split: equal shards in a fixed order; val split: every row exactly once."""

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name, dataset in datasets.items():
            dataset = dataset.copy(dataset)
            options = copy.deepcopy(self.default_ingest_options())
            options.preserve_order = True
            dataset.context.execution_options = options
            dataset.context.enable_progress_bars = False     # the recipe logs its own progress
            splits = dataset.streaming_split(world_size, equal=name.startswith("train"))   # curriculum stages too
            for rank, split in enumerate(splits):
                output[rank][name] = split
        return output


def training_datasets(store: str, columns: list[str], stages) -> dict[str, Any]:
    """The train and val splits (reading ``columns``), and one filtered train split per curriculum stage.
    A recipe that reads mels does not see the rows kept for their codes alone (no audio, 0 frames:
    ``preprocess.codes_without_audio``)."""
    from voxray.train import curriculum

    extra = [c for c in curriculum.columns(stages) + ["n_frames"] * ("mel" in columns) if c not in columns]
    datasets = store_datasets(store, columns + list(dict.fromkeys(extra)))
    if "mel" in columns:
        datasets = {name: data.filter(expr="n_frames > 0") for name, data in datasets.items()}
    return {**datasets, **curriculum.stage_datasets(datasets["train"], stages)}


# ------------------------------------------------------------------------------------ run folder

def store_stats(store: str) -> dict[str, Any]:
    """The feature store's stats.json; an error unless it has train and val utterances."""
    path = uri.join(store, "stats.json")
    if not uri.exists(path):
        raise FileNotFoundError(f"{store} is not a feature store (no stats.json); run voxray preprocess first")
    stats = json.loads(uri.read_text(path))
    for split in ("train", "val"):
        if not stats["splits"].get(split, {}).get("utterances"):
            raise ValueError(f"the feature store {store} has no {split} utterances")
    return stats


def _differences(old: dict, new: dict, keys: tuple[str, ...]) -> list[str]:
    """Dotted leaf keys under ``keys`` whose values differ between two config dicts."""
    changed = []

    def compare(key: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                compare(f"{key}.{name}", a.get(name), b.get(name))
        elif a != b:
            changed.append(f"{key}: {a!r} -> {b!r}")

    for key in keys:
        a, b = old, new
        for part in key.split("."):
            a, b = (a or {}).get(part), (b or {}).get(part)
        compare(key, a, b)
    return changed


def _has_checkpoints(run: str) -> bool:
    fs, inner = uri.filesystem(run)
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(inner, detail=False)] if fs.isdir(inner) else []
    return any(name.startswith("checkpoint_") for name in names)


def open_run(run: str, config: Config, store: str, fixed: tuple[str, ...] = RESUME_FIXED) -> None:
    """Refuse a resume whose ``fixed`` keys changed (naming them), save the resolved config to
    RUN_URI/config.yaml and the store to RUN_URI/store.json, and clear an earlier abort so that a
    re-run tries again."""
    saved = uri.join(run, "config.yaml")
    if _has_checkpoints(run) and uri.exists(saved):
        old = yaml.safe_load(uri.read_text(saved))
        old.setdefault("family", config.family)          # configs saved before families existed
        try:             # keys added to voxray since the run started take their defaults, as they did
            old = build_config(old).model_dump(mode="json")
        except ValueError:
            pass         # a key since removed or renamed: compare the file as written
        changed = _differences(old, config.model_dump(mode="json"), fixed)
        if changed:
            raise ConfigError(f"{run} holds checkpoints of a run with a different setup; resuming would "
                              f"not fit them ({'; '.join(changed)}). Use a new --output.")
    save_config(config, saved)
    uri.write_text(uri.join(run, STORE_FILE), json.dumps({"store": store}))
    if uri.exists(uri.join(run, ABORTED_FILE)):
        uri.remove_tree(uri.join(run, ABORTED_FILE))


# ---------------------------------------------------------------------------------------- fit

def steps_of_epochs(config: Config, stats: dict[str, Any], console: bool = True) -> Config:
    """``config`` with ``train.max_steps`` from ``train.epochs`` and the store's train rows (as the
    Qwen3-TTS guide counts epochs); unchanged when ``train.epochs`` is 0. A row is one sample of a
    batch in every family (curriculum stages and length bucketing move the epoch boundary by a
    batch or so)."""
    train = config.train
    if not train.epochs:
        return config
    rows = int(stats["splits"]["train"]["utterances"])
    per_step = train.batch_size * train.num_workers * train.grad_accum
    steps = train.epochs * -(-rows // per_step)
    if console:
        say(f"train.epochs={train.epochs}: max_steps={steps} ({rows} train rows / {per_step} per optimizer step, "
            f"x {train.epochs})")
    config = config.model_copy(update={"train": train.model_copy(update={"max_steps": steps})})
    check_adalora(config, steps_known=True)
    return config


def useless_settings(config: Config) -> list[str]:
    """Settings that make a run far less useful than its config suggests, each naming its keys
    (the console prints them as warnings when the run starts)."""
    from voxray.train.schedules import lr_multiplier

    train, notes = config.train, []
    if train.warmup_steps >= train.max_steps:
        peak = lr_multiplier(train.max_steps - 1, schedule=train.schedule, warmup_steps=train.warmup_steps,
                             max_steps=train.max_steps)
        notes.append(f"train.warmup_steps={train.warmup_steps} >= train.max_steps={train.max_steps}: the learning "
                     f"rate never reaches train.lr (at most {peak:.0%} of it, at the last step); lower "
                     "train.warmup_steps")
    validations = train.max_steps // train.val_every + (train.max_steps % train.val_every > 0)
    if train.val_every > train.max_steps:
        notes.append(f"train.val_every={train.val_every} > train.max_steps={train.max_steps}: the run validates "
                     "only at its last step (one checkpoint, no best of several, no early stopping)")
    elif train.patience and validations <= train.patience:
        notes.append(f"train.patience={train.patience} needs more than {train.patience} validations; the run makes "
                     f"{validations} (train.max_steps / train.val_every): early stopping can never stop it")
    if train.hang_timeout <= train.stall_seconds:
        notes.append(f"train.hang_timeout={train.hang_timeout} <= train.stall_seconds={train.stall_seconds:g}: a hung "
                     "collective fails the run before the console shows where each rank is; lower train.stall_seconds")
    return notes


def memory_advice(config: Config) -> str:
    """What to change when a rank is killed for memory, with the run's current values."""
    family_keys = {"vocoder": " or vocoder.segment_frames (shorter segments)",
                   "talker": ", turn on model.checkpointing (activation checkpointing)"}
    return (f"Lower train.batch_size (now {config.train.batch_size}){family_keys.get(config.family, '')}, "
            f"raise deepspeed.zero_stage (now {config.deepspeed.zero_stage}), or use workers with more memory; "
            f"train.max_failures={config.train.max_failures} restarts from the last checkpoint")


def _failure_callback(queue):
    """A Ray Train callback (it runs in the run's controller) that sends each worker failure to the
    console queue as it happens, before Ray Train restarts the workers or gives up."""
    import time

    from ray.train import UserCallback

    class FailureLines(UserCallback):
        def after_exception(self, run_context, worker_exceptions) -> None:
            for rank, exc in worker_exceptions.items():
                try:
                    queue.put_nowait({"kind": "failure", "rank": rank, "time": time.time(),
                                      "error": f"{type(exc).__name__}: {exc}"[-4000:]})
                except Exception:
                    pass

    return FailureLines()


def hang_error(exc: Exception, train, printer) -> str:
    """The failure's message, naming each rank's last stack when the console had them; a
    collective that timed out is said to be one, with the setting and the likely causes."""
    text = str(exc)
    stacks = printer.where_ranks_were() if printer is not None else ""
    timed_out = any(sign in text for sign in ("Timed out", "timed out", "Watchdog caught collective", "Timeout"))
    message = f"training failed after {train.max_failures} restarts"
    if timed_out:
        message = (f"a collective waited train.hang_timeout={train.hang_timeout} s for the other ranks and the run "
                   f"failed (after {train.max_failures} restarts): the ranks stopped making the same collectives "
                   "(a rank stuck in data, I/O or a deadlock, a lost node, or ranks that call the model a different "
                   "number of times)")
    where = f"\nwhere each rank was: {stacks}" if stacks else ""
    memory = "".join(f"\n{line}" for line in (printer.memory_kills if printer is not None else []))
    return f"{message}.{memory}{where}\n{text}"


def demand(config: Config) -> Demand:
    train = config.train
    per_worker = {"CPU": train.cpus_per_worker, **({"GPU": 1.0} if train.use_gpu else {}), **train.worker_resources}
    return Demand(workers=train.num_workers, per_worker=per_worker, data_cpus=train.data_cpus)


def fit(train_loop: Callable[[dict[str, Any]], None], *, plan: Any, columns: list[str], metric: str,
        gate: Any = None, callbacks: Optional[list] = None, console: bool = True) -> dict[str, Any]:
    """Train (or resume) ``train_loop`` on Ray Train workers over the store's train/val splits
    (``plan.store``, into ``plan.run``, by ``plan.config``); each worker gets a ``WorkerSettings``;
    best-k checkpoints by ``metric`` (lower is better). Returns a summary; raises TrainingError,
    NonFiniteError, ClusterFitError. ``callbacks`` are Ray Train callbacks (a sweep's reporter);
    ``console`` prints the run's progress lines here (a sweep's trials do not)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    run, config, store = plan.run, plan.config, plan.store
    train = config.train
    needs = demand(config)
    ensure_ray(cpus=needs.total()["CPU"])
    warning = check_fit(needs)
    if warning and console:
        say(f"warning: {warning}")
    for note in useless_settings(config) if console else []:
        say(f"warning: {note}")
    printer, queue = None, None
    if console:
        from voxray.train.console import Console

        queue = Queue(actor_options={"num_cpus": 0})       # never waits for a CPU the run needs
        printer = Console(queue, train.stall_seconds, describe_waiting, memory_advice=memory_advice(config)).start()
        callbacks = [*(callbacks or []), _failure_callback(queue)]
    storage_path, name, filesystem = uri.ray_storage(run)
    env = uri.storage_env()
    workers_env = {**env, **({"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"} if train.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop,
        torch_config=TorchConfig(timeout_s=train.hang_timeout),     # a hung collective fails, named
        train_loop_config={WorkerSettings.KEY: WorkerSettings(plan=plan, metric=metric, gate=gate, console=queue,
                                                              storage_env=env)},
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                     resources_per_worker=needs.per_worker),
        run_config=RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=train.keep_best, checkpoint_score_attribute=metric,
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=train.max_failures),
            worker_runtime_env={"env_vars": workers_env} if workers_env else None,
            callbacks=callbacks),
        datasets=training_datasets(store, columns, train.curriculum),
        dataset_config=ShardConfig(),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise TrainingError(hang_error(exc, train, printer)) from exc
    finally:
        if printer is not None:
            printer.stop()
    aborted = uri.join(run, ABORTED_FILE)
    if uri.exists(aborted):
        raise NonFiniteError(json.loads(uri.read_text(aborted))["reason"])
    metrics = result.metrics or {}
    return {"run": run, "final": uri.join(run, FINAL_DIR), "step": metrics.get("step"), "metric": metric,
            metric: metrics.get(metric), "metrics": metrics,
            "best": [(c.path, m.get(metric), m.get("step")) for c, m in (result.best_checkpoints or [])]}


def checkpoint_metric(recipe: Recipe, config: Config) -> tuple[str, str]:
    """(the metric that ranks checkpoints and stops early, its console label): ``train.checkpoint_metric``
    when set, else the recipe's ``metric``; an error naming the recipe's ``metrics`` otherwise."""
    name = config.train.checkpoint_metric or recipe.metric
    if name not in recipe.metrics:
        raise ConfigError(f"train.checkpoint_metric={name!r}: the {recipe.family} family validates "
                          f"{', '.join(recipe.metrics)}")
    return name, recipe.metric_label if name == recipe.metric else name.replace("_", " ")


def fit_recipe(recipe: Recipe, plan: Any, *, callbacks: Optional[list] = None, gate: Any = None,
               console: bool = True) -> dict[str, Any]:
    """A recipe's ``train_loop`` on Ray Train with its plan (``plan.run``, ``plan.store``,
    ``plan.config``), ranked by ``checkpoint_metric``; then, with ``train.evaluate_at_end``, the
    final model evaluated on the test split into ``RUN/eval/``."""
    metric, label = checkpoint_metric(recipe, plan.config)
    summary = fit(recipe.train_loop, plan=plan, columns=recipe.columns(plan), metric=metric, gate=gate,
                  callbacks=callbacks, console=console)
    summary["metric_label"] = label
    if plan.config.train.export_best:
        summary["best_export"] = export_best(plan.run, plan.store, console)
    if plan.config.train.evaluate_at_end:
        summary["evaluation"] = evaluate_final(recipe.family, plan.store, plan.run, plan.config, console)
    return summary


def export_best(run: str, store: str, console: bool = True) -> dict[str, Any]:
    """RUN/best/: the best checkpoint's export (``train.export_best``), replacing an earlier one."""
    from voxray.train.checkpoint_export import BEST_DIR, export_checkpoint

    folder = uri.join(run, BEST_DIR)
    if uri.exists(folder):
        uri.remove_tree(folder)
    done = export_checkpoint(run, "best", folder, store=store)
    if console:
        say(f"best checkpoint (step {done['step']}, {done['metric']} {done['value']:.4f}) exported to {folder}")
    return done


def evaluate_final(family: str, store: str, run: str, config: Config, console: bool = True) -> dict[str, Any]:
    """``voxray evaluate`` of RUN/final on the test split (a vocoder by copy synthesis) into RUN/eval."""
    from voxray.evaluate.run import evaluate

    final, train = uri.join(run, FINAL_DIR), config.train
    model, vocoder = (None, final) if family == "vocoder" else (final, train.evaluate_vocoder or None)
    if console:
        say(f"evaluating {final} on the test split into {uri.join(run, 'eval')}")
    return evaluate(store, uri.join(run, "eval"), model=model, vocoder=vocoder, split="test",
                    limit=train.evaluate_limit or None, overwrite=True)
