"""Where each rank is when no step comes, and how much memory it uses.

Every rank of a run with a console starts a ``StackWatch``: a daemon thread that, when the rank
has counted no optimizer step for ``train.stall_seconds`` (and again after each further
``stall_seconds``), reads its training thread's Python stack (``sys._current_frames``: no
ptrace, works in a container and on every node) and sends it to the driver's console queue. A
rank blocked in a collective waits inside C++ with the GIL released, so its watch still runs.

The driver prints each rank's stack under the stall line and keeps the last one per rank, so a
run that then fails at ``train.hang_timeout`` (the process group's timeout: gloo raises, NCCL's
watchdog aborts) names the ranks and the frames they were stuck in.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional

import psutil

FRAMES = 8                 # innermost frames shown per rank
_RUNNER = "ray/train/"     # Ray Train's frames around the loop


def short_path(path: str) -> str:
    """``.../site-packages/deepspeed/x.py`` -> ``deepspeed/x.py``; ``.../platform/voxray/x.py`` -> ``voxray/x.py``."""
    for marker in ("site-packages/", "platform/"):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    return path


def thread_stack(thread_id: int, limit: int = FRAMES) -> list[str]:
    """The innermost ``limit`` frames of a thread, outermost first: ``file:line in function``."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return ["(the training thread has ended)"]
    frames = [(short_path(f.filename), f.lineno, f.name) for f in traceback.extract_stack(frame)]
    while len(frames) > 1 and (frames[0][0].startswith(_RUNNER) or frames[0][0].endswith("/threading.py")):
        frames.pop(0)                       # the thread and Ray Train's runner around the training loop
    return [f"{path}:{line} in {name}" for path, line, name in frames[-limit:]]


def where(frames: list[str]) -> str:
    """One line for a rank's stack: its innermost frame, and its innermost voxray frame when that
    is another one (the caller a person can read)."""
    if not frames:
        return "(no stack)"
    ours = next((f for f in reversed(frames) if f.startswith("voxray/")), None)
    return frames[-1] if ours in (None, frames[-1]) else f"{frames[-1]} (from {ours})"


def memory_cgroups() -> list[tuple[str, bool]]:
    """This process's memory cgroup folders, each with whether it is cgroup v2 ([] off Linux)."""
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            found.append((f"/sys/fs/cgroup{path}", True))
        elif "memory" in controllers.split(","):
            found.append((f"/sys/fs/cgroup/memory{path}", False))
    return found


def _cgroup_memory() -> Optional[tuple[float, float]]:
    """(used, limit) in MiB of this process's memory cgroup when it has a limit (a container, a
    Kubernetes pod, a test's drill), else None. cgroup v2 and v1."""
    for folder, v2 in memory_cgroups():
        files = ("memory.current", "memory.max") if v2 else ("memory.usage_in_bytes", "memory.limit_in_bytes")
        try:
            used, limit = (open(os.path.join(folder, name)).read().strip() for name in files)
        except OSError:
            continue
        if limit != "max" and int(limit) < psutil.virtual_memory().total:
            return int(used) / 2**20, int(limit) / 2**20
    return None


def memory_sample() -> dict[str, Any]:
    """This process's RSS and the memory it may use: its cgroup's usage and limit when it has
    one, else the node's used and total memory (what Ray's memory monitor watches)."""
    rss = psutil.Process().memory_info().rss / 2**20
    cgroup = _cgroup_memory()
    if cgroup is not None:
        return {"rss_mb": rss, "used_mb": cgroup[0], "limit_mb": cgroup[1], "of": "its memory cgroup"}
    node = psutil.virtual_memory()
    return {"rss_mb": rss, "used_mb": (node.total - node.available) / 2**20, "limit_mb": node.total / 2**20,
            "of": "the node"}


MEMORY_DIED = ("SIGKILL", "died unexpectedly", "ActorDiedError", "UNEXPECTED_SYSTEM_EXIT", "has died",
               "exited unexpectedly", "connection error")


def killed_for_memory(error: str, memory: Optional[dict[str, Any]], now: float) -> Optional[str]:
    """Why a rank's failure looks like a kill for memory, or None: Ray's memory monitor says so in
    its error; the kernel's OOM killer only SIGKILLs, so a process that died that way within 30 s
    of a memory sample at 80 % or more of what it may use is taken to be its victim."""
    if "OutOfMemoryError" in error or "low on memory" in error:
        return "Ray's memory monitor killed it: the node ran low on memory"
    if memory is None or not any(sign in error for sign in MEMORY_DIED) or now - memory["time"] > 30:
        return None
    share = memory["used_mb"] / memory["limit_mb"]
    if share < 0.8:
        return None
    return (f"its process was killed (SIGKILL) with {memory['of']} at {share:.0%} of {memory['limit_mb']:,.0f} MiB "
            f"{now - memory['time']:.1f} s before: the kernel's OOM killer")


class StackWatch:
    """One rank's watch over its training thread (the thread that creates it), and its memory:
    a sample goes to the console when it grew by 2 % of the limit, and every tick above 80 %."""

    def __init__(self, rank: int, stall_seconds: float, send: Callable[[dict[str, Any]], None],
                 step: Callable[[], int]) -> None:
        self.rank, self.stall_seconds, self.send, self.step = rank, stall_seconds, send, step
        self.thread_id = threading.get_ident()
        self._last_step = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"voxray-stack-watch-{rank}", daemon=True)

    def start(self) -> "StackWatch":
        self._thread.start()
        return self

    def stepped(self) -> None:
        self._last_step = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _memory(self) -> None:
        sample = memory_sample()
        self._peak = max(self._peak, sample["rss_mb"])
        high = sample["used_mb"] >= 0.8 * sample["limit_mb"]
        if high or sample["used_mb"] - self._sent_used >= 0.02 * sample["limit_mb"]:
            self._sent_used = sample["used_mb"]
            self.send({"kind": "memory", "rank": self.rank, "time": time.time(), "peak_rss_mb": self._peak, **sample})

    def _loop(self) -> None:
        reported = self._last_step
        self._peak, self._sent_used = 0.0, -1e9
        while not self._stop.wait(min(0.5, self.stall_seconds / 4)):
            try:
                self._memory()
            except Exception:                 # a sample is a help, never a failure
                pass
            now, last = time.monotonic(), self._last_step
            if now - last < self.stall_seconds or now - max(reported, last) < self.stall_seconds:
                continue
            reported = now
            self.send({"kind": "stack", "rank": self.rank, "pid": os.getpid(), "host": socket.gethostname(),
                       "step": self.step(), "quiet": now - last, "frames": thread_stack(self.thread_id)})
