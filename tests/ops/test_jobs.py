"""The jobs/ entrypoints submitted with `ray job submit` to a real local cluster (`ray start --head`
on 127.0.0.1, with the token authentication Ray 2.60 sets up), from the repository root exactly
as the README shows: preprocess the committed sample corpus, then train on the store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

BIN = Path(sys.executable).parent
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _ray(*args: str, env: dict, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "ray"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`ray start --head --block` in its own process group and temp dir; stopped (that group and
    every process of its session) at the end, also when a test failed. `ray stop` is not used: it
    would stop every Ray on the machine, the test session's own cluster included."""
    temp = tmp_path_factory.mktemp("ray-head")
    dashboard = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"        # an activated venv: jobs run its python
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(free_port()), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--dashboard-agent-listen-port", str(free_port()), "--num-cpus", "3", "--temp-dir", str(temp),
         "--disable-usage-stats"],
        cwd=REPO, env=env, stdout=open(temp / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    client = {**env, "RAY_AUTH_MODE": "token"}               # send the token `ray start` set up
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 90
        while _ray("job", "list", "--address", address, env=client, check=False).returncode != 0:
            assert head.poll() is None, (temp / "head.log").read_text()[-3000:]
            assert time.time() < deadline, "the head node's job server did not come up in 90 s"
            time.sleep(2)
        yield {"address": address, "env": client}
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        subprocess.run(["pkill", "-9", "-f", str(temp)], check=False)


def _submit(cluster: dict, submission_id: str, *command: str) -> None:
    _ray("job", "submit", "--address", cluster["address"], "--submission-id", submission_id, "--no-wait",
         "--working-dir", ".", "--runtime-env", "jobs/runtime_env.yaml", "--", "python", *command,
         env=cluster["env"])


def _wait(cluster: dict, submission_id: str, timeout: float = 420) -> tuple[str, str]:
    deadline = time.time() + timeout
    while True:
        out = _ray("job", "status", "--address", cluster["address"], submission_id, env=cluster["env"]).stdout
        # running: "Status for job 'ID': RUNNING"; ended: "Job 'ID' succeeded" (or failed, stopped)
        status = re.search(r"Status for job '[^']+': (\w+)|Job '[^']+' (succeeded|failed|stopped)", out)
        state = status and (status.group(1) or status.group(2)).upper()
        if state in TERMINAL:
            break
        assert time.time() < deadline, f"job {submission_id} still not done after {timeout} s: {out[-500:]}"
        time.sleep(3)
    logs = _ray("job", "logs", "--address", cluster["address"], submission_id, env=cluster["env"]).stdout
    return state, logs


def test_preprocess_then_train_jobs(cluster, tmp_path):
    store, run = tmp_path / "store", tmp_path / "run"
    _submit(cluster, "voxray-preprocess", "jobs/preprocess.py", "--input", "corpus/sample", "--output", str(store))
    status, logs = _wait(cluster, "voxray-preprocess")
    assert status == "SUCCEEDED", logs[-4000:]
    # voxray came with the job (py_modules of jobs/runtime_env.yaml), not from an installed copy
    shipped = re.search(r"voxray from (\S+)\)", logs).group(1)
    assert "runtime_resources" in shipped and "py_modules_files" in shipped, shipped
    stats = json.loads((store / "stats.json").read_text())
    assert stats["kept"] == 64 and stats["rows_on_disk"] == {"train": 50, "val": 5, "test": 9}
    assert list((store / "train").glob("*.parquet"))

    _submit(cluster, "voxray-train", "jobs/train.py", "--data", str(store), "--output", str(run),
            "--config", "jobs/configs/acoustic-cpu.yaml", "train.max_steps=10", "train.val_every=10",
            "train.max_failures=0")
    status, logs = _wait(cluster, "voxray-train")
    assert status == "SUCCEEDED", logs[-4000:]
    assert "val mel L1" in logs
    assert (run / "final" / "model.safetensors").exists() and (run / "final" / "config.yaml").exists()
    assert list(run.glob("checkpoint_*"))


def test_tune_job(cluster, sample_store, tmp_path):
    """jobs/tune.py as the README submits it: the code Tune runs and unpickles on the cluster (the
    trial function, the searcher, the gate's callback) comes with the job too."""
    sweep = tmp_path / "sweep"
    _submit(cluster, "voxray-tune", "jobs/tune.py", "--data", sample_store, "--output", str(sweep), "--trials", "1",
            "--config", "jobs/configs/acoustic-cpu.yaml", "train.max_steps=5", "train.val_every=5",
            "train.batch_size=4", "train.max_failures=0")
    status, logs = _wait(cluster, "voxray-tune")
    assert status == "SUCCEEDED", logs[-4000:]
    rows = (sweep / "trials.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].endswith(",5,finished"), rows
    assert (sweep / "best.yaml").exists() and (sweep / "optuna.db").exists()


def test_a_failing_job_is_reported_failed_with_the_cli_error(cluster, tmp_path):
    _submit(cluster, "voxray-bad", "jobs/train.py", "--data", str(tmp_path / "no-store"), "--output",
            str(tmp_path / "run"), "--config", "jobs/configs/acoustic-cpu.yaml", "train.no_such_key=1")
    status, logs = _wait(cluster, "voxray-bad", timeout=180)
    assert status == "FAILED"
    assert "no_such_key" in logs


def test_the_job_server_refuses_a_wrong_token(cluster):
    result = _ray("job", "list", "--address", cluster["address"], env={**cluster["env"], "RAY_AUTH_TOKEN": "wrong"},
                  check=False)
    assert result.returncode != 0
    assert "token" in (result.stdout + result.stderr).lower()


@pytest.mark.parametrize("script, args, command, said", [
    ("preprocess", ["--input", "/nonexistent", "--output", "/tmp/voxray-job-o"], "preprocess --input",
     "voxray preprocess: error: input '/nonexistent' does not exist"),
    ("train", ["--data", "/nonexistent", "--output", "/tmp/voxray-job-o", "bogus.key=1"], "train acoustic --data",
     "voxray train: config error: unknown config key 'bogus'"),
    ("tune", ["vocoder", "--data", "/nonexistent", "--output", "/tmp/voxray-job-o", "--trials", "1", "model.preset=x"],
     "tune vocoder --data", "voxray tune: config error: invalid config: model.preset = 'x': Input should be 'tiny', 'v3'"),
    ("evaluate", ["--data", "/nonexistent", "--output", "/tmp/voxray-job-o", "--audio", "/nonexistent"],
     "evaluate --data", "voxray evaluate: error: /nonexistent is not a feature store")])
def test_entrypoints_run_the_cli_commands_with_the_jobs_arguments(script, args, command, said):
    """Each jobs/ script is the CLI command of its name: its arguments reach that command (the
    family defaults to acoustic, a given one is kept) and its errors and exit status are the CLI's."""
    result = subprocess.run([sys.executable, f"jobs/{script}.py", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert said in result.stderr, result.stderr[-2000:]
    assert f"voxray job: {command}" in result.stdout
