"""What a person sees while a run trains: rank 0 sends small records to a queue the driver owns,
and the driver prints one line per record (start, progress, validation, end). When no record
arrives for ``train.stall_seconds``, the driver says what the run waits for.

Records are plain dicts: ``{"kind": "start" | "train" | "val" | "event" | "beat" | "warning" | "stack", ...}``;
every rank sends its "stack" records (``watchdog.StackWatch``), the rest come from rank 0.
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any, Callable, Optional

from voxray.cluster import say
from voxray.train.watchdog import killed_for_memory, where


def _number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def format_record(record: dict[str, Any]) -> Optional[str]:
    """One console line for a record (None for heartbeats)."""
    match record["kind"]:
        case "start":
            workers = record["workers"]
            device = "GPU" if record["use_gpu"] else "CPU"
            models = ", ".join(f"{name} {total:,} parameters ({trainable:,} trainable)"
                               for name, (total, trainable) in record["parameters"].items())
            resumed = f"; resuming at step {record['step']}" if record["step"] else ""
            return (f"train {record['family']}: {workers} worker{'s' if workers > 1 else ''} ({device}), "
                    f"ZeRO-{record['zero_stage']}, {record['precision']}; {models}; "
                    f"{record['max_steps']} steps; run {record['run']}{resumed}")
        case "train":
            eta = ""
            if record.get("steps_per_s"):
                seconds = (record["max_steps"] - record["step"]) / record["steps_per_s"]
                eta = f"  ETA {datetime.timedelta(seconds=round(seconds))}"
            values = "  ".join(f"{name} {_number(value)}" for name, value in record["values"].items())
            unit = record["unit"].replace("_", " ")
            return (f"step {record['step']}/{record['max_steps']}  {values}  lr {record['lr']:.2e}  "
                    f"{record['rate']:,.0f} {unit}/s{eta}")
        case "val":
            values = "  ".join(f"{name} {_number(value)}" for name, value in record["values"].items())
            best = " (best)" if record.get("best") else ""
            return f"validation at step {record['step']}: {values}{best}"
        case "event":
            detail = f": {record['reason']}" if record.get("reason") else ""
            return f"{record['event']} at step {record['step']}{detail}"
        case "warning":
            return f"warning: {record['text']}"
        case "failure":
            first_line = record["error"].strip().splitlines()[-1] if record["error"].strip() else "?"
            return f"rank {record['rank']} failed: {first_line[:400]}"
        case "stack":
            frames = "\n".join(f"    {frame}" for frame in record["frames"])
            return (f"rank {record['rank']} (pid {record['pid']} on {record['host']}): no step for "
                    f"{record['quiet']:.0f} s after step {record['step']}; its training thread is in\n{frames}")
    return None


class Console:
    """Driver side: a thread that prints the queue's records and watches for a stalled run."""

    def __init__(self, queue, stall_seconds: float, describe_waiting: Callable[[], str],
                 write: Callable[[str], None] = say, memory_advice: str = "") -> None:
        self.queue = queue
        self.stall_seconds = stall_seconds
        self.describe_waiting = describe_waiting
        self.write = write
        self.memory_advice = memory_advice
        self.last_step: Optional[int] = None
        self.stacks: dict[int, dict[str, Any]] = {}      # each rank's last "stack" record
        self.memory: dict[int, dict[str, Any]] = {}      # each rank's last "memory" sample
        self.memory_kills: list[str] = []                # one line per rank killed for memory
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="voxray-console", daemon=True)

    def start(self) -> "Console":
        self._last_record = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Print what is left in the queue, then end the thread."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                record = self.queue.get(block=True, timeout=1.0)
            except Empty:
                if self._stop.is_set():
                    return
                self._check_stall()
                continue
            except Exception:           # the queue's actor is gone (Ray shut down)
                return
            line = format_record(record)
            if record["kind"] == "memory":
                self.memory[record["rank"]] = record
                continue
            if record["kind"] == "failure":
                line += self._memory_verdict(record)
                self.write(line)
                continue
            if record["kind"] == "stack":      # a stuck rank's stack is not a sign of life
                before = self.stacks.get(record["rank"])
                self.stacks[record["rank"]] = record
                if before is not None and before["frames"] == record["frames"]:
                    line = (f"rank {record['rank']}: no step for {record['quiet']:.0f} s after step {record['step']}, "
                            f"still in {where(record['frames'])}")
            else:
                self._last_record = time.monotonic()
                self.last_step = record.get("step", self.last_step)
            if line:
                self.write(line)

    def _check_stall(self) -> None:
        quiet = time.monotonic() - self._last_record
        if quiet < self.stall_seconds:
            return
        where = "before the first step" if self.last_step is None else f"after step {self.last_step}"
        try:
            waiting = self.describe_waiting()
        except Exception as exc:
            waiting = f"(could not ask Ray: {exc})"
        self.write(f"no training step for {quiet:.0f} s {where} (train.stall_seconds={self.stall_seconds:g}); "
                   f"waiting for: {waiting}")
        self._last_record = time.monotonic()       # say it again after another stall_seconds

    def _memory_verdict(self, record: dict[str, Any]) -> str:
        """"; killed for memory: ..." with the rank's peak and the settings to change, when the
        failure looks like one (recorded for the run's final error too)."""
        memory = self.memory.get(record["rank"])
        why = killed_for_memory(record["error"], memory, record["time"])
        if why is None:
            return ""
        peak = f"; its peak RSS was {memory['peak_rss_mb']:,.0f} MiB" if memory else ""
        verdict = f"rank {record['rank']} was killed for memory: {why}{peak}. {self.memory_advice}"
        self.memory_kills.append(verdict)
        return f"\n    {verdict}"

    def where_ranks_were(self) -> str:
        """Each rank's last reported stack in one line per rank ("" when none was reported)."""
        return "; ".join(f"rank {rank} after step {record['step']} in {where(record['frames'])}"
                         for rank, record in sorted(self.stacks.items()))
