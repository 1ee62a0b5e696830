"""Where each rank is when no step comes.

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
from typing import Any, Callable

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


class StackWatch:
    """One rank's watch over its training thread (the thread that creates it)."""

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

    def _loop(self) -> None:
        reported = self._last_step
        while not self._stop.wait(min(1.0, self.stall_seconds / 4)):
            now, last = time.monotonic(), self._last_step
            if now - last < self.stall_seconds or now - max(reported, last) < self.stall_seconds:
                continue
            reported = now
            self.send({"kind": "stack", "rank": self.rank, "pid": os.getpid(), "host": socket.gethostname(),
                       "step": self.step(), "quiet": now - last, "frames": thread_stack(self.thread_id)})
