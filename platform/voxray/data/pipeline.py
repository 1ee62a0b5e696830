"""The Ray Data preprocessing pipeline: corpus -> feature store.

    plan units (driver, text only) -> scan pass: token symbols, speakers, languages
    -> vocabulary -> feature pass: read, clean, extract, write (one streaming pass)
    -> rejected.jsonl, non-empty splits, stats.json, vocab.json, config.yaml
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import ray

from voxray import uri
from voxray.cluster import ensure_ray
from voxray.config import Config, to_yaml
from voxray.data import codes, readers, store
from voxray.data.process import Context, process_units, scan_units
from voxray.data.splits import rebalance
from voxray.text import G2P

MAX_BLOCKS = 4096
_BACKPRESSURE_KEY = "backpressure_policies.enabled"


class OutputError(ValueError):
    pass


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
    context.set_config(_BACKPRESSURE_KEY, [])
    try:
        yield
    finally:
        if previous is None:
            context.remove_config(_BACKPRESSURE_KEY)
        else:
            context.set_config(_BACKPRESSURE_KEY, previous)


def _prepare_output(output: str, overwrite: bool) -> None:
    if uri.is_empty_dir(output):
        return
    if not overwrite:
        raise OutputError(
            f"output {output!r} is not empty; choose another path or pass preprocess.overwrite=true"
        )
    uri.remove_tree(output)


def preprocess(input_uri: str, output: str, config: Config, fmt: Optional[str] = None) -> dict[str, Any]:
    """Build the feature store at ``output``; returns the stats written to ``stats.json``."""
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
    units = readers.plan(input_uri, fmt)
    if not units:
        raise readers.InputError(f"{input_uri!r} holds no rows")
    _prepare_output(output, pre.overwrite)
    phase("plan")
    ensure_ray()
    phase("ray_init")

    # One block = one Ray task. Tasks of ~rows_per_task rows keep per-task scheduling cost
    # small; small corpora still get two tasks per CPU so that every CPU has work.
    rows = sum(readers.unit_rows(u) for u in units)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1) // pre.num_cpus))
    blocks = min(len(units), MAX_BLOCKS, max(math.ceil(rows / pre.rows_per_task), 2 * cpus))
    remote = _remote_args(config)
    context = Context(config)

    with _without_backpressure():
        items = ray.data.from_items([{"unit": json.dumps(u)} for u in units],
                                    override_num_blocks=blocks)
        # Pass 1, text only: every symbol must be in the vocabulary before ids are assigned.
        scans = items.map_batches(scan_units, fn_kwargs={"ctx": context}, batch_size=None,
                                  batch_format="pyarrow", **remote).take_all()
        context.absorb(scans)
        phase("scan_pass")

        # Pass 2: audio and features, written as they stream.
        codec = context.codec
        sink = store.FeatureStoreSink(output, config.audio.n_mels,
                                      (codec.n_codebooks, codec.codebook_size) if codec else None)
        items.map_batches(process_units, fn_kwargs={"ctx": context}, batch_size=None,
                          batch_format="pyarrow", **remote).write_datasink(sink, ray_remote_args=remote)
    totals = sink.stats
    if totals is None:
        raise RuntimeError("the feature pass finished without reporting its counts")
    phase("feature_pass")

    for step, (from_split, to_split) in enumerate(rebalance(totals.split_utterances, pre.split)):
        seconds = store.move_row(output, from_split, to_split, f"part-rebalanced-{step:02d}.parquet")
        totals.move(from_split, to_split, seconds)
    phase("rebalance")

    stats = _summarise(totals, output, fmt, input_uri, config, context)
    uri.write_text(uri.join(output, "vocab.json"), context.vocabulary.to_json())
    uri.write_text(uri.join(output, "config.yaml"), to_yaml(config))
    phase("summary")
    stats["phase_seconds"] = phases
    stats["wall_seconds"] = round(sum(phases.values()), 2)
    uri.write_text(uri.join(output, "stats.json"), json.dumps(stats, indent=1, ensure_ascii=False))
    return stats


def _summarise(totals, output: str, fmt: str, input_uri: str, config: Config,
               context: Context) -> dict[str, Any]:
    counts = totals.counts()
    on_disk = store.count_rows(output)
    rejects = len(store.read_rejects(output))
    # Check the promise against what is really on disk, not only against our own counters.
    if not counts["reconciles"] or sum(on_disk.values()) != totals.kept \
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
        "features": totals.features(),
        "audio_spec": config.audio.model_dump(),
        "vocabulary": context.vocabulary.tokens,
        "has_durations": bool(config.preprocess.alignments),
        "codec": None if context.codec is None else {
            **context.codec.describe(), "code_frames": totals.code_frames, "usage": codes.usage(totals.code_counts)},
    }
