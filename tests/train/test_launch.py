"""The driver side of a run as a person meets it: the command on this machine's own Ray, what
the console shows, a run that cannot fit refused before it starts, a run that waits says why."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.train.conftest import CPU_CONFIG, REPO, train
from voxray.cluster import ClusterFitError, Demand, check_fit
from voxray.train.console import format_record

VOXRAY = [sys.executable, "-m", "voxray.cli"]


def _env_without_ray_address() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}


@pytest.mark.integration
def test_two_workers_on_this_machines_own_ray_train_and_the_console_reads_well(sample_store, tmp_path):
    """As the CLI runs without RAY_ADDRESS: Ray started here at the machine's real size (2 cores
    in CI, where both training workers once took every CPU and Ray Data's reads never ran), next
    to the test session's Ray, which it must not join. The console holds voxray's lines only."""
    run = tmp_path / "run"
    done = subprocess.run([*VOXRAY, "train", "acoustic", "--data", sample_store, "--output", str(run),
                           "--config", CPU_CONFIG, "train.num_workers=2", "train.max_steps=10",
                           "train.val_every=5", "train.log_every=5", "train.batch_size=4", "train.max_failures=0"],
                          cwd=REPO, env=_env_without_ray_address(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    lines = out.splitlines()
    assert any(line.startswith("voxray: started a local Ray for this command") for line in lines), out
    start = next(line for line in lines if line.startswith("voxray: train acoustic: 2 workers (CPU), ZeRO-2, fp32"))
    assert "trainable" in start and str(run) in start
    progress = [line for line in lines if line.startswith("voxray: step ")]
    assert [line.split()[2] for line in progress] == ["5/10", "10/10"], out
    assert all("mel frames/s" in line and "ETA" in line and "lr " in line for line in progress)
    assert sum(line.startswith("voxray: validation at step") for line in lines) == 2
    assert "voxray: finished at step 10: max_steps" in out and "val mel L1" in out
    # a 10-step run of a config with 20 warm-up steps is told it never trains at its learning rate
    assert "voxray: warning: train.warmup_steps=20 >= train.max_steps=10: the learning rate never reaches " \
           "train.lr (at most 50% of it" in out, out
    noise = [line for line in (out + done.stderr).splitlines()
             if " INFO " in line or "(RayTrainWorker" in line or "(TrainController" in line
             or "Connecting to existing Ray cluster" in line or "SplitCoordinator" in line]
    assert not noise, noise[:10]


def test_fit_check_names_the_numbers_and_the_keys(ray_cluster):
    """The session's Ray (4 CPUs, no GPU, started here: it cannot grow) refuses what cannot fit."""
    assert check_fit(Demand(workers=2, per_worker={"CPU": 1.0}, data_cpus=1.0)) is None
    with pytest.raises(ClusterFitError, match=r"CPU: needs 5, has 4.*train\.num_workers, train\.cpus_per_worker, "
                                              r"train\.data_cpus"):
        check_fit(Demand(workers=4, per_worker={"CPU": 1.0}, data_cpus=1.0))
    with pytest.raises(ClusterFitError, match=r"GPU: needs 2, has 0.*train\.use_gpu"):
        check_fit(Demand(workers=2, per_worker={"CPU": 1.0, "GPU": 1.0}, data_cpus=1.0))
    with pytest.raises(ClusterFitError, match=r"train_node: needs 1, has 0.*train\.worker_resources"):
        check_fit(Demand(workers=1, per_worker={"CPU": 1.0, "train_node": 1.0}, data_cpus=1.0))


def test_settle_waits_for_rays_view_of_a_free_cpu_and_gives_up_on_a_full_cluster(ray_cluster):
    """cluster.settle: what keeps Ray Data's "the Dataset job will hang" false alarm off the console
    of `voxray evaluate` and `codec encode` (a read's sampling tasks had just ended)."""
    from voxray.cluster import settle

    ray = ray_cluster

    @ray.remote(num_cpus=ray.cluster_resources()["CPU"])
    class Hold:
        def ping(self) -> int:
            return 1

    hold = Hold.remote()
    try:
        assert ray.get(hold.ping.remote(), timeout=60) == 1
        deadline = time.monotonic() + 10
        while ray.available_resources().get("CPU") and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        settle(0.5)
        assert 0.5 <= time.monotonic() - started < 3          # full: it waits its timeout, then goes on
    finally:
        ray.kill(hold)
    started = time.monotonic()
    settle(10)
    assert ray.available_resources().get("CPU") and time.monotonic() - started < 10


@pytest.mark.integration
def test_a_run_that_cannot_fit_is_refused_before_training(sample_store, tmp_path):
    run = str(tmp_path / "run")
    with pytest.raises(ClusterFitError, match="GPU: needs 1, has 0"):
        train(sample_store, run, "train.use_gpu=true")
    assert not os.path.exists(f"{run}/metrics.jsonl")


@pytest.mark.integration
def test_a_run_waiting_for_resources_says_what_it_waits_for(ray_cluster, sample_store, tmp_path):
    """Joined through RAY_ADDRESS, the cluster might still grow, so a run larger than it starts
    with a warning; with no step for train.stall_seconds it says what it waits for (again after
    each further stall_seconds: at the first, Ray Train's controller may not have asked for its
    placement group yet)."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    proc = subprocess.Popen([*VOXRAY, "train", "acoustic", "--data", sample_store, "--output", str(tmp_path / "run"),
                             "--config", CPU_CONFIG, "train.num_workers=5", "train.stall_seconds=4"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "no training step for" in line and "placement group" in line:
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    text = "\n".join(lines)
    assert "warning: the cluster has {CPU: 4" in text and "CPU: needs 6, has 4" in text, text
    waiting = [line for line in lines if "no training step for" in line][-1]
    assert "before the first step (train.stall_seconds=4)" in waiting
    assert "a placement group waits for resources (5 x {CPU: 1}: the training workers)" in waiting, waiting
    assert "CPU " in waiting and " free" in waiting


def test_settings_that_make_a_run_useless_are_named():
    from voxray.config import load_config
    from voxray.train.launch import useless_settings

    def notes(*overrides: str) -> list[str]:
        return useless_settings(load_config(CPU_CONFIG, list(overrides)))

    assert notes("train.max_steps=300", "train.warmup_steps=20", "train.val_every=100") == []
    warm, = notes("train.max_steps=60", "train.warmup_steps=200", "train.val_every=20")
    assert warm.startswith("train.warmup_steps=200 >= train.max_steps=60") and "at most 30% of it" in warm
    once, = notes("train.max_steps=300", "train.warmup_steps=20", "train.val_every=500")
    assert once.startswith("train.val_every=500 > train.max_steps=300") and "no early stopping" in once
    patient, = notes("train.max_steps=300", "train.warmup_steps=20", "train.val_every=100", "train.patience=3")
    assert "train.patience=3 needs more than 3 validations; the run makes 3" in patient
    hang, = notes("train.max_steps=300", "train.warmup_steps=20", "train.val_every=100", "train.hang_timeout=60",
                  "train.stall_seconds=120")
    assert hang.startswith("train.hang_timeout=60 <= train.stall_seconds=120")


def test_epochs_become_steps_from_the_stores_rows(capsys):
    from voxray.config import load_config
    from voxray.train.launch import steps_of_epochs

    stats = {"splits": {"train": {"utterances": 50}}}
    config = load_config(CPU_CONFIG, ["train.epochs=3", "train.batch_size=8", "train.num_workers=2",
                                      "train.max_steps=999"])
    assert steps_of_epochs(config, stats).train.max_steps == 3 * 4               # ceil(50 / 16) = 4 steps an epoch
    assert "train.epochs=3: max_steps=12 (50 train rows / 16 per optimizer step" in capsys.readouterr().out
    assert steps_of_epochs(load_config(CPU_CONFIG, ["train.max_steps=77"]), stats).train.max_steps == 77


def test_console_lines():
    start = format_record({"kind": "start", "family": "vocoder", "workers": 1, "use_gpu": True, "zero_stage": 0,
                           "precision": "bf16", "parameters": {"generator": (13_900_000, 13_900_000),
                                                               "discriminator": (70_700_000, 70_700_000)},
                           "max_steps": 1000, "run": "s3://b/r", "step": 200})
    assert start == ("train vocoder: 1 worker (GPU), ZeRO-0, bf16; generator 13,900,000 parameters (13,900,000 "
                     "trainable), discriminator 70,700,000 parameters (70,700,000 trainable); 1000 steps; "
                     "run s3://b/r; resuming at step 200")
    progress = format_record({"kind": "train", "step": 250, "max_steps": 1000, "values": {"total": 1.23456},
                              "lr": 2e-4, "rate": 12345.6, "unit": "mel_frames", "steps_per_s": 2.5})
    assert progress == "step 250/1000  total 1.235  lr 2.00e-04  12,346 mel frames/s  ETA 0:05:00"
    assert format_record({"kind": "event", "event": "finished", "step": 9, "reason": "max_steps"}) == \
        "finished at step 9: max_steps"
    assert format_record({"kind": "beat", "step": 3}) is None


def test_a_run_saved_before_a_key_existed_resumes_and_a_changed_key_is_refused(tmp_path):
    """A run's config.yaml written before keys were added to voxray (here lora.adalora and its
    schedule) resumes: the missing keys take their defaults, as they had then. A key that does
    differ is still refused, by name."""
    import yaml

    from voxray.config import ConfigError, load_config
    from voxray.train.launch import open_run

    run = tmp_path / "run"
    (run / "checkpoint_00000010").mkdir(parents=True)
    config = load_config(overrides=["lora.rank=4"])
    written = config.model_dump(mode="json")
    for key in ("adalora", "target_rank", "adalora_warmup", "adalora_final", "adalora_interval", "orthogonality"):
        del written["lora"][key]
    (run / "config.yaml").write_text(yaml.safe_dump(written))
    open_run(str(run), config, str(tmp_path / "store"))
    (run / "config.yaml").write_text(yaml.safe_dump(written))
    with pytest.raises(ConfigError, match=r"lora.rank: 4 -> 8"):
        open_run(str(run), load_config(overrides=["lora.rank=8"]), str(tmp_path / "store"))
