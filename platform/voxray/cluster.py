"""Ray in this process, for the embedded default (no RAY_ADDRESS): the CLI, `make demo`, tests
and benchmarks on one machine."""

from __future__ import annotations

import os
import socket
from typing import Any

import ray


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_local(**init_kwargs: Any) -> None:
    """Start Ray here with its dashboard on a free 127.0.0.1 port, and point Ray's state API at it.

    Ray Train's placement-group cleaner (which frees the worker group of a trainer whose
    controller died, as happens to every trial Tune stops) asks the state API; without an address
    that API looks for *the* Ray on the machine and gives up when there are two (a second local
    cluster, a test's `ray start --head`), and the worker group leaks. Setting
    RAY_API_SERVER_ADDRESS before Ray starts reaches every process of this cluster: Ray's daemons
    inherit this process's environment and pass it on to the workers they start."""
    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, **init_kwargs)


def ensure_ray(extra_cpus: int = 0) -> None:
    """Join ``RAY_ADDRESS`` when set (``ray job submit``), else start Ray in this process, with
    ``extra_cpus`` logical CPUs more than the machine has (a sweep's trial drivers hold token CPU
    shares that would otherwise leave Ray Data less than one whole CPU on a small machine)."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    elif extra_cpus:
        start_local(num_cpus=(os.cpu_count() or 1) + extra_cpus)
    else:
        start_local()
