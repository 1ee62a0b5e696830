"""Ray for a voxray command: join ``RAY_ADDRESS`` when it is set, else start a Ray of its own,
sized for what the command will run; check that a training run fits the cluster before it
starts; keep Ray's INFO wall off the console unless ``--verbose``.

Without ``RAY_ADDRESS`` every command starts its own Ray (``address="local"``), even when another
Ray runs on the machine: Ray's default would join the last cluster started here (another
command's, a test's, a ``ray start``) and die with it. ``RAY_ADDRESS=auto`` joins that one.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import ray

VERBOSE_ENV = "VOXRAY_VERBOSE"
# Ray loggers whose INFO lines (start-up banners, dataset execution plans, worker group starts)
# make the console unreadable; they still reach Ray's log files.
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.air", "ray.util")
# Warnings known to be harmless here (Ray 2.60), hidden unless --verbose.
HARMLESS = ("Token authentication is enabled", "`ExecutionOptions.exclude_resources` is deprecated",
            "PYTHON worker processes have been started on node", "Progress bars disabled")

_started_here = False


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def set_verbose(on: bool) -> None:
    """``--verbose``: everything Ray prints reaches the console. Inherited by subprocesses."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"
    quiet_ray_logging()


class _Harmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in HARMLESS)


def quiet_ray_logging() -> None:
    """Ray's loggers in this process at WARNING, known harmless warnings dropped (not --verbose).

    The raylet's messages to the driver (``(raylet) WARNING: ...``) do not go through logging:
    Ray prints them with ``ray._private.worker.print_to_stdstream``, which is wrapped here to drop
    the harmless ones; every other message, errors included, still prints."""
    if verbose():
        return
    # Ray Data reconfigures its loggers on import and per dataset; this variable outranks its
    # config (its file logs keep WARNING and up too).
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, _Harmless) for f in target.filters):
                target.addFilter(_Harmless())
    for text in HARMLESS:
        warnings.filterwarnings("ignore", message=f".*{text}")
    import ray._private.worker as ray_worker

    printer = ray_worker.print_to_stdstream
    if not getattr(printer, "voxray_filtered", False):
        def filtered(data, ignore_prefix: bool):
            lines = [line for line in data.get("lines", []) if not any(text in line for text in HARMLESS)]
            if lines:
                printer({**data, "lines": lines}, ignore_prefix)

        filtered.voxray_filtered = True
        ray_worker.print_to_stdstream = filtered


def say(line: str) -> None:
    print(f"voxray: {line}", flush=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_local(**init_kwargs: Any) -> None:
    """Start a new Ray here (never join another) with its dashboard on a free 127.0.0.1 port, and
    point Ray's state API at it.

    Ray Train's placement-group cleaner (which frees the worker group of a trainer whose
    controller died, as happens to every trial Tune stops) asks the state API; without an address
    that API looks for *the* Ray on the machine and gives up when there are two (a second local
    cluster, a test's `ray start --head`), and the worker group leaks. Setting
    RAY_API_SERVER_ADDRESS before Ray starts reaches every process of this cluster: Ray's daemons
    inherit this process's environment and pass it on to the workers they start."""
    global _started_here
    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    init_kwargs.setdefault("log_to_driver", verbose())
    init_kwargs.setdefault("logging_level", logging.INFO if verbose() else logging.WARNING)
    quiet_ray_logging()
    ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
             **init_kwargs)
    _started_here = True
    quiet_ray_logging()          # Ray (re)configures its loggers while it starts


def ensure_ray(cpus: float = 0.0) -> None:
    """Join ``RAY_ADDRESS`` when set (``ray job submit``, a cluster), else start a Ray here that
    declares ``max(cores, cpus)`` logical CPUs: a run's training workers plus the CPUs its data
    path needs (logical CPUs beyond the cores share them: slower, never stuck)."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        quiet_ray_logging()
        ray.init(address=address, log_to_driver=verbose(),
                 logging_level=logging.INFO if verbose() else logging.WARNING)
        quiet_ray_logging()
        say(f"joined the Ray cluster at {address} (RAY_ADDRESS)")
        return
    cores = os.cpu_count() or 1
    declared = max(cores, math.ceil(cpus - 1e-9))
    start_local(num_cpus=declared)
    extra = f", {declared - cores} more than the {cores} cores, for the run's data path" if declared > cores else ""
    say(f"started a local Ray for this command ({declared} CPUs{extra}); set RAY_ADDRESS to use a running cluster")


def settle(timeout: float = 2.0) -> None:
    """Wait, at most ``timeout`` seconds, until Ray's view of the cluster shows a free CPU. A parquet
    read samples its files in short tasks when it is built, Ray's count of free CPUs lags their end,
    and Ray Data's check at the start of a run then warns "The Dataset job will hang unless more
    CPUs are freed up" on a small cluster when it would not (every `voxray evaluate` and `codec
    encode` on 2 CPUs). On a cluster that is really full the wait ends and Ray's warning stands."""
    deadline = time.monotonic() + timeout
    while not ray.available_resources().get("CPU") and time.monotonic() < deadline:
        time.sleep(0.05)


# ----------------------------------------------------------------------------------- fit check

class ClusterFitError(ValueError):
    """The run cannot fit this cluster; the message names the numbers and the keys to change."""


@dataclass(frozen=True)
class Demand:
    """What a training run asks of the cluster."""

    workers: int
    per_worker: dict[str, float]          # {"CPU": 1, "GPU": 1, custom...}
    data_cpus: float                      # kept free for Ray Data's reads

    def total(self) -> dict[str, float]:
        total = {name: amount * self.workers for name, amount in self.per_worker.items()}
        total["CPU"] = total.get("CPU", 0.0) + self.data_cpus
        return total


def _capacity() -> tuple[dict[str, float], Optional[str]]:
    """(the resources the cluster can offer, how we know that is the most it will have; None when
    it may still grow: a cluster joined through RAY_ADDRESS whose autoscaler did not publish its
    node types)."""
    if _started_here:
        return ray.cluster_resources(), "this command's local Ray"
    # The autoscaler's node types, as Ray Train's own worker-group check reads them (a private
    # call: Ray has no public one); None on clusters whose autoscaler does not publish them.
    from ray._private.state import state

    try:
        most = state.get_max_resources_from_cluster_config()
    except Exception:       # an old GCS without the key: treat as unknown
        most = None
    if most:
        return {k: float(v) for k, v in most.items()}, "the cluster's autoscaler node types"
    return ray.cluster_resources(), None


def check_fit(demand: Demand) -> Optional[str]:
    """Raise ClusterFitError when the run cannot fit; return a warning when it does not fit what
    the cluster has now but the cluster may grow; None when it fits."""
    have, known_most = _capacity()
    short = {name: (need, have.get(name, 0.0)) for name, need in demand.total().items()
             if need > have.get(name, 0.0) + 1e-9}
    if not short:
        return None
    details = "; ".join(f"{name}: needs {need:g}, has {got:g}" for name, (need, got) in short.items())
    shape = (f"{demand.workers} workers x {_resources(demand.per_worker)} + CPU {demand.data_cpus:g} "
             f"for Ray Data")
    keys = ["train.num_workers", "train.cpus_per_worker", "train.data_cpus"]
    keys += ["train.use_gpu"] if "GPU" in short else []
    keys += ["train.worker_resources"] if set(short) - {"CPU", "GPU"} else []
    keys = ", ".join(keys)
    if known_most is None:
        return (f"the cluster has {_resources(have)} now; this run needs {shape} ({details}); it will wait "
                f"for nodes to join (an autoscaler); change {keys} if none will")
    raise ClusterFitError(f"this run needs {shape}, more than {known_most} can offer ({details}); "
                          f"change {keys}")


def _resources(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if k in ("CPU", "GPU") or not k.startswith(("node:", "memory",
                                                                                            "object_store"))}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + "}"


def describe_waiting() -> str:
    """What a run that makes no step waits for, from Ray's state: pending placement groups
    (training workers), tasks waiting for a node (Ray Data's reads), free resources."""
    total, free = ray.cluster_resources(), ray.available_resources()
    parts = []
    try:
        from ray.util.state import list_placement_groups, list_tasks

        groups = list_placement_groups(filters=[("state", "=", "PENDING")], detail=True, timeout=10,
                                       raise_on_missing_output=False)
        for group in groups:
            bundles = [_resources(b.get("unit_resources", {})) for b in (group.bundles or [])]
            parts.append(f"a placement group waits for resources ({len(bundles)} x {bundles[0] if bundles else '?'}: "
                         f"the training workers)")
        tasks = list_tasks(filters=[("state", "=", "PENDING_NODE_ASSIGNMENT")], detail=True, timeout=10,
                           raise_on_missing_output=False)
        if tasks:
            names = sorted({t.name for t in tasks})
            needs = _resources(tasks[0].required_resources or {})
            parts.append(f"{len(tasks)} tasks wait for a node with {needs} ({', '.join(names[:3])})")
    except Exception as exc:        # no dashboard (state API): say what we can
        parts.append(f"(Ray's state API did not answer: {type(exc).__name__})")
    cpu = f"CPU {free.get('CPU', 0):g} of {total.get('CPU', 0):g} free"
    gpu = f", GPU {free.get('GPU', 0):g} of {total.get('GPU', 0):g} free" if total.get("GPU") else ""
    return "; ".join(parts + [cpu + gpu])

