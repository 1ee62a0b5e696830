"""What makes preprocessing resumable: ``OUTPUT/_progress/``, written as the run goes and removed
when ``stats.json`` is written.

    run.json           what the run is over: the input's units (their SHA-256s, per source file),
                       the format and the config keys that shape the store; a re-run compares
    context.json       the scan pass's result (vocabulary, speaker/language ids, codec), so a
                       resumed run assigns the same ids without scanning again
    done/uNNNNNNN.json one per finished feature task (named by its first unit): the units it
                       covered, the parts it wrote, its partial counts and feature moments.
                       Written last: a task without one did not happen
    rejects/uNNNNNNN.jsonl  that task's rejects ledger rows, sorted (merged into rejected.jsonl)
    rebalance.json     the split moves, journalled before each is made (replayed idempotently)

A re-run of the same command on the same output reads ``done/``, deletes parts no marker names
(a task killed between its parquet write and its marker), processes only the units no marker
covers, then finishes as an uninterrupted run does. The driver streams markers and rejects:
neither the corpus nor the whole ledger is ever held in its memory.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import posixpath
from typing import Any, Iterable, Iterator, Optional

from voxray import uri
from voxray.config import Config
from voxray.data.stats import PartialStats

PROGRESS_DIR = "_progress"
PART_PREFIX = "part-u"
# Settings that change how the work is scheduled, not what the store holds: a resumed run may
# change them (e.g. on a cluster of another size).
OPERATIONAL_KEYS = {"preprocess.overwrite", "preprocess.num_cpus", "preprocess.task_resources",
                    "preprocess.rows_per_task", "preprocess.format"}
MERGE_FAN_IN = 64


class OutputError(ValueError):
    """The output cannot be written (not empty, or an interrupted run of something else)."""


def task_name(first_unit: int) -> str:
    return f"u{first_unit:07d}"


def reject_key(row: dict) -> tuple[str, str]:
    """The order of ``rejected.jsonl``: by source, then id."""
    return (row.get("source") or "", row.get("id") or "")


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _flat(f"{prefix}.{key}" if prefix else str(key), value[key])
    else:
        yield prefix, value


def fingerprint(input_uri: str, fmt: str, units: list[dict], config: Config) -> dict[str, Any]:
    """What a resumed run must share with the run it continues. Audio files are not read: a
    changed manifest line, parquet row group or setting is detected; a wav replaced in place
    under the same name is not."""
    files: dict[str, Any] = {}
    for unit in units:
        source = unit.get("file") or uri.join(unit["base"], unit["name"])
        entry = files.setdefault(source, {"units": 0, "rows": 0, "sha": hashlib.sha256()})
        entry["units"] += 1
        entry["rows"] += unit.get("rows", 1)
        entry["sha"].update(unit["sha"].encode())
    sections = {name: getattr(config, name).model_dump(mode="json") for name in ("audio", "preprocess", "codec")}
    settings = {k: v for k, v in _flat("", sections) if k not in OPERATIONAL_KEYS}
    return {"input": input_uri, "format": fmt, "units": len(units),
            "files": {name: {**e, "sha": e["sha"].hexdigest()} for name, e in files.items()},
            "config": settings}


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What changed between the interrupted run and this one, in words."""
    said = []
    for key in ("input", "format"):
        if before.get(key) != now.get(key):
            said.append(f"{key}: {before.get(key)!r} -> {now.get(key)!r}")
    old_files, new_files = before.get("files", {}), now.get("files", {})
    for name in sorted(set(old_files) | set(new_files)):
        old, new = old_files.get(name), new_files.get(name)
        if old is None:
            said.append(f"{name}: new input file")
        elif new is None:
            said.append(f"{name}: gone from the input")
        elif old != new:
            said.append(f"{name}: contents changed ({old['rows']} -> {new['rows']} rows)")
    old_config, new_config = before.get("config", {}), now.get("config", {})
    for key in sorted(set(old_config) | set(new_config)):
        if old_config.get(key) != new_config.get(key):
            said.append(f"{key}: {old_config.get(key)!r} -> {new_config.get(key)!r}")
    return said


class Ledger:
    """``OUTPUT/_progress``: the run's record of itself (see the module's docstring)."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.root = uri.join(output, PROGRESS_DIR)

    def path(self, *parts: str) -> str:
        return uri.join(self.root, *parts)

    def read_json(self, name: str) -> Optional[Any]:
        path = self.path(name)
        return json.loads(uri.read_text(path)) if uri.exists(path) else None

    def write_json(self, name: str, value: Any) -> None:
        uri.write_text(self.path(name), json.dumps(value, ensure_ascii=False))

    # ---------------------------------------------------------------- starting or resuming

    def open(self, run: dict[str, Any], overwrite: bool) -> bool:
        """Start a run at the output, or continue the interrupted one there; True when resuming.
        Refuses a non-empty output that is not an interrupted run of the same input and config."""
        if overwrite:
            uri.remove_tree(self.output)
        before = None if overwrite else self.read_json("run.json")
        if before is None:
            if not uri.is_empty_dir(self.output):
                finished = uri.exists(uri.join(self.output, "stats.json"))
                raise OutputError(
                    f"output {self.output!r} " + ("holds a finished feature store" if finished else "is not empty")
                    + "; choose another path or pass preprocess.overwrite=true")
            self.write_json("run.json", run)
            return False
        changed = differences(before, run)
        if changed:
            raise OutputError(
                f"output {self.output!r} holds an interrupted run of other input or settings; "
                f"changed: {'; '.join(changed)}. Re-run with what it started with to continue it, "
                "or pass preprocess.overwrite=true to start afresh")
        return True

    # ---------------------------------------------------------------- finished tasks

    def markers(self) -> Iterator[dict[str, Any]]:
        """Each finished task's marker, one at a time."""
        folder = self.path("done")
        if not uri.exists(folder):
            return
        for path in uri.find(folder, (".json",)):
            yield json.loads(uri.read_text(path))

    def done_units(self) -> set[int]:
        return {unit for marker in self.markers() for unit in marker["units"]}

    def remove_unfinished(self) -> int:
        """Delete parts and rejects no marker names (tasks killed before their marker); returns how
        many files went."""
        named = set()
        for marker in self.markers():
            named.update(marker["parts"])
            if marker["rejects"]:
                named.add(marker["rejects"])
        candidates = [p for split in ("train", "val", "test") if uri.exists(uri.join(self.output, split))
                      for p in uri.find(uri.join(self.output, split), (".parquet",))
                      if posixpath.basename(p).startswith(PART_PREFIX)]
        if uri.exists(self.path("rejects")):
            candidates += uri.find(self.path("rejects"), (".jsonl",))
        removed = 0
        for path in candidates:
            if _tail(path) not in named:
                fs, inner = uri.filesystem(path)
                fs.rm(inner)
                removed += 1
        if removed:
            uri.filesystem(self.output)[0].invalidate_cache()
        return removed

    def totals(self, n_mels: int, codebooks: Optional[tuple[int, int]]) -> PartialStats:
        """Every finished task's counts and moments, merged marker by marker."""
        merged = PartialStats(n_mels, codebooks)
        for marker in self.markers():
            merged.merge(PartialStats.from_json(marker["stats"], n_mels, codebooks))
        return merged

    # ---------------------------------------------------------------- the rejects ledger

    def write_rejects(self, target: str) -> int:
        """Merge the tasks' sorted rejects files into ``target`` in order, streaming (a bounded
        number open at once); returns the rows written."""
        folder = self.path("rejects")
        paths = uri.find(folder, (".jsonl",)) if uri.exists(folder) else []
        level = 0
        while len(paths) > MERGE_FAN_IN:
            merged = []
            for start in range(0, len(paths), MERGE_FAN_IN):
                out = self.path("merge", f"level{level}", f"{start:07d}.jsonl")
                _merge(paths[start: start + MERGE_FAN_IN], out)
                merged.append(out)
            paths, level = merged, level + 1
        return _merge(paths, target)

    def close(self) -> None:
        """The run is complete: its record goes."""
        uri.remove_tree(self.root)


def _tail(path: str) -> str:
    """``folder/name`` of a file, as markers name their files (``train/part-u0000008.parquet``,
    ``rejects/u0000008.jsonl``), whatever form the output path was given in."""
    return "/".join(path.replace(os.sep, "/").rstrip("/").split("/")[-2:])


def _lines(path: str) -> Iterator[tuple[tuple[str, str], str]]:
    fs, inner = uri.filesystem(path)
    with fs.open(inner, "rb") as handle:
        for raw in handle:
            if raw.strip():
                line = raw.decode("utf-8").rstrip("\n")
                yield reject_key(json.loads(line)), line


def _merge(paths: Iterable[str], target: str) -> int:
    fs, inner = uri.filesystem(target)
    if not uri.is_remote(target):
        fs.makedirs(posixpath.dirname(inner), exist_ok=True)
    written = 0
    with fs.open(inner, "wb") as out:
        for _, line in heapq.merge(*(_lines(p) for p in paths), key=lambda pair: pair[0]):
            out.write((line + "\n").encode("utf-8"))
            written += 1
    return written
