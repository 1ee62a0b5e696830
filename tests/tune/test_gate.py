"""The scheduler gate on a real local Ray: workers' questions are answered by the decisions the
sweep driver records, and a gate that cannot answer lets training go on."""

from __future__ import annotations

import threading
import time

import pytest

from voxray.tune.gate import DecisionCallback, SchedulerGate, gate_name, open_decisions


class _Trial:
    trial_id = "t1"


def test_a_recorded_decision_answers_the_worker(ray_cluster, tmp_path):
    sweep = str(tmp_path / "sweep")
    decisions = open_decisions(sweep)
    callback = DecisionCallback(gate_name(sweep), max_steps=20)
    gate = SchedulerGate(gate_name(sweep), "t1", timeout_s=30)
    callback.on_trial_result(1, [], _Trial(), {"step": 5, "val_mel": 1.0})
    # a stop before max_steps holds Tune's loop until the trial's rank 0 has recorded its end
    stopping = threading.Thread(target=callback.on_trial_result,
                                args=(2, [], _Trial(), {"step": 10, "val_mel": 1.2, "done": True}))
    stopping.start()
    callback.on_trial_result(3, [], _Trial(), {"val_mel": 1.2})      # no step: nothing recorded
    assert gate.should_stop(5) is False
    assert gate.should_stop(10) is True
    time.sleep(1)
    assert stopping.is_alive()                                       # Tune has not ended the trial yet
    gate.recorded()
    stopping.join(timeout=30)
    assert not stopping.is_alive()
    # the worker may ask before the driver has decided: it waits for the decision
    waiting = decisions.wait.remote("t1", 15, 30)
    time.sleep(1)
    callback.on_trial_result(4, [], _Trial(), {"step": 15, "val_mel": 1.1})
    import ray

    assert ray.get(waiting, timeout=30) is False
    # the callback survives pickling (Tune saves it with the experiment) without its actor handle
    import pickle

    copy = pickle.loads(pickle.dumps(callback))
    assert copy.name == callback.name and copy._actor is None
    del decisions


def test_no_decision_or_no_driver_lets_training_go_on(ray_cluster, tmp_path, caplog):
    sweep = str(tmp_path / "sweep")
    decisions = open_decisions(sweep)
    started = time.monotonic()
    assert SchedulerGate(gate_name(sweep), "t1", timeout_s=1).should_stop(5) is False
    assert 1 <= time.monotonic() - started < 20
    assert "no scheduler decision" in caplog.text
    assert SchedulerGate(gate_name(str(tmp_path / "other")), "t1").should_stop(5) is False
    assert "is gone" in caplog.text
    del decisions


@pytest.mark.parametrize("sweep", ["/a/sweep", "s3://bucket/sweeps/a"])
def test_gate_names_are_per_sweep(sweep):
    assert gate_name(sweep) == gate_name(sweep) != gate_name(sweep + "2")
