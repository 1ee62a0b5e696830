"""Trials wait at each validation for Tune's decision on it, so a stopped trial stops at the rung.

Ray Train reports reach Tune asynchronously: without a gate the training workers go on while
Tune's scheduler decides, and a trial that ASHA stops keeps training (and holding its GPUs) until
the stop reaches it, several steps past its rung. With the gate, Tune's function-trainable
semantics are back: after reporting a validation, the workers wait until the sweep driver has
decided on that result, then either go on or halt there.

- the sweep driver holds a :class:`Decisions` actor (named after the sweep, owned by the driver:
  it dies with it) and :class:`DecisionCallback` records each of Tune's decisions in it;
- a trial's workers hold a :class:`SchedulerGate` (two strings, picklable) and ask it, after each
  validation report, whether to stop. A gate that cannot be reached (driver gone) or stays
  undecided for ``timeout_s`` lets training go on, as it would without a gate.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Optional

from ray.tune import Callback

NAMESPACE = "voxray"
log = logging.getLogger(__name__)


def gate_name(sweep: str) -> str:
    """The decisions actor's name for one sweep (its URI, hashed)."""
    return "voxray-sweep-gate-" + hashlib.sha1(sweep.encode()).hexdigest()[:16]


class Decisions:
    """Tune's decisions, keyed by (trial id, step); ``wait`` blocks until one is recorded."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, int], asyncio.Event] = {}
        self._stop: dict[tuple[str, int], bool] = {}
        self._recorded: dict[str, asyncio.Event] = {}

    async def recorded(self, trial_id: str) -> None:
        """The trial's rank 0 has written how it ended (its run log closed and synced)."""
        self._recorded.setdefault(trial_id, asyncio.Event()).set()

    async def wait_recorded(self, trial_id: str, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._recorded.setdefault(trial_id, asyncio.Event()).wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    def _event(self, key: tuple[str, int]) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    async def decide(self, trial_id: str, step: int, stop: bool) -> None:
        self._stop[(trial_id, step)] = stop
        self._event((trial_id, step)).set()

    async def wait(self, trial_id: str, step: int, timeout_s: float) -> Optional[bool]:
        """True: stop here; False: go on; None: no decision within ``timeout_s``."""
        key = (trial_id, step)
        try:
            await asyncio.wait_for(self._event(key).wait(), timeout_s)
        except asyncio.TimeoutError:
            return None
        self._events.pop(key, None)
        return self._stop.pop(key)


def open_decisions(sweep: str):
    """Start (or find) the sweep's decisions actor; the calling driver owns it."""
    import ray

    return ray.remote(num_cpus=0)(Decisions).options(
        name=gate_name(sweep), namespace=NAMESPACE, get_if_exists=True).remote()


def _lookup(name: str):
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


@dataclass(frozen=True)
class SchedulerGate:
    """The workers' side: after reporting the validation at ``step``, ``should_stop(step)``."""

    name: str
    trial_id: str
    timeout_s: float = 120.0

    def should_stop(self, step: int) -> bool:
        import ray
        from ray.exceptions import RayActorError

        actor = _lookup(self.name)
        if actor is None:
            log.warning("the sweep's decisions actor %s is gone (driver ended?): training goes on", self.name)
            return False
        try:
            decision = ray.get(actor.wait.remote(self.trial_id, step, self.timeout_s))
        except RayActorError:
            return False
        if decision is None:
            log.warning("no scheduler decision for trial %s at step %d within %.0f s: training goes on",
                        self.trial_id, step, self.timeout_s)
        return bool(decision)

    def recorded(self) -> None:
        """Rank 0, after writing the trial's "stopped" event: Tune may end the trial now."""
        import ray

        actor = _lookup(self.name)
        if actor is not None:
            try:
                ray.get(actor.recorded.remote(self.trial_id), timeout=30)
            except Exception:
                log.warning("could not tell the sweep driver that trial %s recorded its end", self.trial_id)


class DecisionCallback(Callback):
    """Records, for every result with a ``step``, whether Tune stops the trial there (Tune marks
    the result ``done`` before callbacks see it when its scheduler or a stopper said STOP).

    A stop before ``max_steps`` then holds Tune's loop until the trial's rank 0 has written its
    "stopped" event (at most ``record_timeout_s``): Tune ends a stopped trial by killing its actor,
    and without the wait it could do so before the event was written (seen under load)."""

    def __init__(self, name: str, max_steps: int, record_timeout_s: float = 60.0) -> None:
        self.name, self.max_steps, self.record_timeout_s = name, max_steps, record_timeout_s
        self._actor = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_actor": None}              # an actor handle is one driver's only

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if "step" not in result:
            return
        if self._actor is None:
            self._actor = _lookup(self.name)
        if self._actor is None:
            return
        stop, step = bool(result.get("done")), int(result["step"])
        self._actor.decide.remote(trial.trial_id, step, stop)
        if stop and step < self.max_steps:
            import ray

            if not ray.get(self._actor.wait_recorded.remote(trial.trial_id, self.record_timeout_s)):
                log.warning("trial %s did not record its stop at step %d within %.0f s", trial.trial_id, step,
                            self.record_timeout_s)
