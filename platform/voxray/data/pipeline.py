"""The Ray Data preprocessing pipeline: corpus -> feature store.

    plan units (driver, byte ranges of the manifests) -> scan pass: token symbols, speakers,
    languages -> vocabulary -> feature pass: read, clean, extract, write (one streaming pass;
    each task commits its parts with a marker) -> non-empty splits -> rejected.jsonl, stats.json,
    vocab.json, config.yaml

Re-running on the output of an interrupted run continues it (``voxray.data.progress``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import ray

from voxray import uri
from voxray.cluster import ensure_ray, say, verbose
from voxray.config import Config, to_yaml
from voxray.data import codes, progress, readers, store
from voxray.data.process import Context, process_and_write, scan_units
from voxray.data.progress import OutputError  # noqa: F401  (the CLI catches it from here)
from voxray.data.splits import rebalance
from voxray.text import G2P

MAX_BLOCKS = 4096
_BACKPRESSURE_KEY = "backpressure_policies.enabled"


def _remote_args(config: Config) -> dict[str, Any]:
    """Per-task resources, and the storage variables of this process for every task (workers
    of a shared cluster were started without them)."""
    args: dict[str, Any] = {"num_cpus": config.preprocess.num_cpus}
    if config.preprocess.task_resources:
        args["resources"] = dict(config.preprocess.task_resources)
    env = uri.storage_env()
    if env:
        args["runtime_env"] = {"env_vars": env}
    return args


@contextmanager
def _without_backpressure() -> Iterator[None]:
    """Run our datasets without Ray Data's backpressure policies, then restore them.

    Both passes emit only tiny rows (a scan summary, a write task's counts), so there is no
    output to hold back; but the resource-budget policy, not knowing the output size yet, keeps
    the second CPU idle until the first task finishes (measured: 8 x 0.8 s tasks on 2 CPUs take
    4.46 s with the default policies, 3.29 s without; see benchmarks/RESULTS.md).
    """
    context = ray.data.DataContext.get_current()
    previous = context.get_config(_BACKPRESSURE_KEY, None)
    bars = context.enable_progress_bars
    context.set_config(_BACKPRESSURE_KEY, [])
    context.enable_progress_bars = verbose()      # voxray prints its own progress lines
    if not verbose():                            # ... and Ray Data would say it prints none
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars = bars
        if previous is None:
            context.remove_config(_BACKPRESSURE_KEY)
        else:
            context.set_config(_BACKPRESSURE_KEY, previous)


def preprocess(input_uri: str, output: str, config: Config, fmt: Optional[str] = None) -> dict[str, Any]:
    """Build the feature store at ``output``, or finish the interrupted run there (same input and
    settings; ``voxray.data.progress``); returns the stats written to ``stats.json``."""
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = round(now - clock, 3)
        clock = now

    pre = config.preprocess
    fmt = fmt or pre.format
    if fmt == "auto":
        fmt = readers.detect_format(input_uri)
    units = readers.first_rows(readers.plan(input_uri, fmt), pre.max_rows)
    if pre.val_input:           # its rows are the val split, whatever their ids hash to
        val_format = pre.format if pre.format != "auto" else readers.detect_format(pre.val_input)
        units += [{**unit, "split": "val"} for unit in readers.plan(pre.val_input, val_format)]
    if not units:
        raise readers.InputError(f"{input_uri!r} holds no rows")
    ledger = progress.Ledger(output)
    resumed = ledger.open(progress.fingerprint(input_uri, fmt, units, config), pre.overwrite)
    done: set[int] = set()
    removed = 0
    if resumed:
        done = ledger.done_units()
        removed = ledger.remove_unfinished()
    pending = [i for i in range(len(units)) if i not in done]
    rows_done = sum(readers.unit_rows(units[i]) for i in done)
    rows_pending = sum(readers.unit_rows(units[i]) for i in pending)
    if resumed:
        say(f"resuming the interrupted run at {output}: {len(done)} of {len(units)} units ({rows_done} rows) "
            f"done before and kept, {len(pending)} units ({rows_pending} rows) to process"
            + (f"; removed {removed} files of unfinished tasks" if removed else ""))
    phase("plan")
    ensure_ray()
    phase("ray_init")

    context = Context(config)
    saved = ledger.read_json("context.json") if resumed else None      # None: stopped before the scan ended
    with _without_backpressure():
        if saved is None:
            # Pass 1, text only: every symbol must be in the vocabulary before ids are assigned.
            items = _items(units, range(len(units)), config)
            scans = items.map_batches(scan_units, fn_kwargs={"ctx": context}, batch_size=None,
                                      batch_format="pyarrow", **_remote_args(config)).take_all()
            context.absorb(scans)
            ledger.write_json("context.json", context.to_json())
        else:
            context.restore(saved)
        phase("scan_pass")

        # Pass 2: audio and features; each task writes its parts and its marker.
        if pending:
            items = _items(units, pending, config)
            summaries = items.map_batches(process_and_write, fn_kwargs={"ctx": context, "output": output},
                                          batch_size=None, batch_format="pyarrow", **_remote_args(config))
            _follow(summaries, len(pending), rows_pending)
    phase("feature_pass")

    totals = ledger.totals(config.audio.n_mels, context.codebooks)
    _rebalance(output, totals, config, ledger)
    phase("rebalance")

    rejects = ledger.write_rejects(uri.join(output, "rejected.jsonl"))
    stats = _summarise(totals, rejects, output, fmt, input_uri, config, context)
    uri.write_text(uri.join(output, "vocab.json"), context.vocabulary.to_json())
    uri.write_text(uri.join(output, "config.yaml"), to_yaml(config))
    phase("summary")
    stats["phase_seconds"] = phases
    stats["wall_seconds"] = round(sum(phases.values()), 2)
    stats["resume"] = {"resumed": resumed, "units_reused": len(done), "rows_reused": rows_done,
                       "rows_processed": rows_pending, "unfinished_files_removed": removed}
    uri.write_text(uri.join(output, "stats.json"), json.dumps(stats, indent=1, ensure_ascii=False))
    ledger.close()
    return stats


def _items(units: list[dict], indices, config: Config):
    """The units to process as a dataset, ``index`` numbering them in the plan. One block = one
    Ray task: tasks of ~rows_per_task rows keep per-task scheduling cost small; small corpora
    still get two tasks per CPU so that every CPU has work."""
    pre = config.preprocess
    indices = list(indices)
    rows = sum(readers.unit_rows(units[i]) for i in indices)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1) // pre.num_cpus))
    blocks = min(len(indices), MAX_BLOCKS, max(math.ceil(rows / pre.rows_per_task), 2 * cpus))
    return ray.data.from_items([{"unit": json.dumps(units[i]), "index": i} for i in indices],
                               override_num_blocks=blocks)


def _follow(summaries, units: int, rows: int, every: float = 10.0) -> None:
    """Run the feature pass, printing progress (rows, units, x real time, ETA) every ``every`` s."""
    started = last = time.perf_counter()
    done_units = done_rows = 0
    seconds = 0.0
    for batch in summaries.iter_batches(batch_size=None, batch_format="pyarrow"):
        done_units += sum(batch.column("units").to_pylist())
        done_rows += sum(batch.column("rows").to_pylist())
        seconds += sum(batch.column("seconds").to_pylist())
        now = time.perf_counter()
        if now - last >= every or done_units == units:
            elapsed = now - started
            eta = elapsed * (rows - done_rows) / done_rows if done_rows else 0.0
            say(f"features {done_rows}/{rows} rows ({done_units}/{units} units), {seconds:.0f} s of audio, "
                f"{seconds / max(elapsed, 1e-9):.0f}x real time, ETA {int(eta) // 60}:{int(eta) % 60:02d}")
            last = now


def _rebalance(output: str, totals, config: Config, ledger: progress.Ledger) -> None:
    """Leave no wanted split empty: each move journalled in the ledger before it is made, and a
    journal a killed run left replayed first (moves are idempotent)."""
    journal = ledger.read_json("rebalance.json") or []
    for move in journal:
        totals.move(move["from"], move["to"], store.apply_move(output, move))
    for from_split, to_split in rebalance(totals.split_utterances, config.preprocess.split):
        utt_id, part = store.highest_row(output, from_split)
        move = {"from": from_split, "to": to_split, "id": utt_id, "part": part,
                "moved": f"{to_split}/part-rebalanced-{len(journal):02d}.parquet"}
        journal.append(move)
        ledger.write_json("rebalance.json", journal)
        totals.move(from_split, to_split, store.apply_move(output, move))


def _summarise(totals, rejects: int, output: str, fmt: str, input_uri: str, config: Config,
               context: Context) -> dict[str, Any]:
    counts = totals.counts()
    on_disk = store.count_rows(output)
    # Check the promise against what is really on disk, not only against our own counters.
    if not counts["reconciles"] or sum(on_disk.values()) != totals.kept + totals.augmented \
            or rejects != totals.rejected + totals.malformed:
        raise RuntimeError(
            f"counts do not reconcile: {counts}, rows on disk {on_disk}, rejects file {rejects}")
    g2p = G2P(config.preprocess.g2p)
    return {
        "input": {"uri": input_uri, "format": fmt},
        **counts,
        "rows_on_disk": on_disk,
        "audio_seconds": round(sum(totals.split_seconds.values()), 3),
        "splits": totals.splits(),
        "speakers": {name: {"index": i, "utterances": totals.speakers.get(name, 0)}
                     for name, i in context.speakers.items()},
        "languages": {name: {"index": i, "utterances": totals.languages.get(name, 0),
                             "g2p": "textgrid" if config.preprocess.alignments else g2p.backend(name)}
                      for name, i in context.languages.items()},
        "code_switch": {"languages": list(config.preprocess.code_switch),
                        "particles": list(config.preprocess.particles),
                        "margin": config.preprocess.code_switch_margin,
                        "code_switched_utterances": totals.code_switched,
                        "particle_words": {name: totals.particles.get(str(i), 0)
                                           for i, name in enumerate(config.preprocess.particles, start=1)}},
        "augmented": {"utterances": totals.augmented, "audio_seconds": round(totals.augmented_seconds, 3),
                      "by_transform": dict(sorted(totals.transforms.items())),
                      "note": "train rows made by preprocess.augment, on disk next to the kept rows "
                              "(rows_on_disk = kept + augmented); not input rows"},
        "denoise": {"strength": config.preprocess.denoise, "stationary": config.preprocess.denoise_stationary,
                    "utterances": totals.denoised,
                    "noise_floor_lowered_db": round(totals.denoise_db / totals.denoised, 2) if totals.denoised else None},
        "features": totals.features(),
        "audio_spec": config.audio.model_dump(),
        "vocabulary": context.vocabulary.tokens,
        "has_durations": bool(config.preprocess.alignments),
        "codec": None if context.codec is None else {
            **context.codec.describe(), "code_frames": totals.code_frames, "usage": codes.usage(totals.code_counts)},
    }
