"""Sweeps end to end on a real local Ray: Tune + Optuna TPE + ASHA, each trial a Ray Train +
DeepSpeed run of the tiny acoustic model on the sample store.

One 4-trial sweep writes to S3 (the moto server): it is interrupted (its driver SIGKILLed after the
first trial ended) and resumed by re-running the same command; the tests then check the finished
sweep's outputs. A second, small sweep fine-tunes the session's base model and searches the LoRA
rank, into a local folder."""

from __future__ import annotations

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CPU_CONFIG, REPO, s3_bucket
from voxray import cli
from voxray.config import load_config
from voxray.tune.study import study_file

SPACE = """\
# a wide learning-rate range: some trials learn slowly, and ASHA should stop them
train.lr: {loguniform: [1.0e-5, 1.0e-2]}
loss.duration: {uniform: [0.1, 1.0]}
"""
MAX_STEPS = 20
OVERRIDES = [f"train.max_steps={MAX_STEPS}", "train.val_every=5", "train.log_every=1", "train.batch_size=4",
             "train.max_failures=0", "tune.grace_period=1", "tune.reduction_factor=2"]


def _command(store: str, sweep: str, space: Path, trials: int = 4) -> list[str]:
    return ["tune", "acoustic", "--data", store, "--output", str(sweep), "--trials", str(trials),
            "--config", CPU_CONFIG, "--search-space", str(space), *OVERRIDES]


def _ended_trials(fs, sweep: str) -> list[str]:
    """Trial ids that Tune's saved experiment state records as ended (what a resume trusts)."""
    ended = []
    fs.invalidate_cache()                             # s3fs caches listings; the sweep writes on
    for path in fs.glob(f"{sweep}/experiment_state-*.json"):
        try:
            state = json.loads(fs.cat(path))
        except (OSError, json.JSONDecodeError):       # being rewritten right now
            continue
        for trial_json, _ in state["trial_data"]:
            trial = json.loads(trial_json)
            if trial["status"] == "TERMINATED":
                ended.append(trial["trial_id"])
    return ended


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _complete_trials(path: Path) -> int:
    import optuna

    study = optuna.load_study(study_name="voxray", storage=f"sqlite:///{path}")
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.fixture(scope="module")
def bucket(s3_server):
    with s3_bucket(s3_server) as name:
        yield name


@pytest.fixture(scope="module")
def sweep(ray_cluster, sample_store, bucket, tmp_path_factory) -> dict:
    """Start the sweep as a separate driver on the session's cluster, SIGKILL it once a trial has
    ended, then re-run the same command to resume it. The output is on S3; the session's Ray
    cluster was started before the AWS variables were set, so its trials get them only from the
    sweep driver. Before the resume the driver's local copy of the Optuna study is removed, as when
    the driver comes back on another machine. The finished sweep is then downloaded to read."""
    import s3fs

    fs = s3fs.S3FileSystem()
    folder = tmp_path_factory.mktemp("sweep")
    space = folder / "space.yaml"
    space.write_text(SPACE)
    key = f"{bucket}/sweeps/first"
    uri = f"s3://{key}"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    driver = subprocess.Popen([sys.executable, "-m", "voxray.cli", *_command(sample_store, uri, space)],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    deadline = time.time() + 420
    try:
        while not _ended_trials(fs, key):
            assert driver.poll() is None, f"the sweep ended before it was killed: {driver.stderr.read()[-3000:]}"
            assert time.time() < deadline, "no trial ended within 7 minutes"
            time.sleep(1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    ended_before = _ended_trials(fs, key)
    first = sorted(fs.ls(f"{key}/trials"))[0]
    first_metrics = fs.cat(f"{first}/metrics.jsonl").decode()
    assert not fs.exists(f"{key}/trials.csv")
    # the study is under SWEEP_URI while the sweep runs, with the trial that ended
    fs.get(f"{key}/optuna.db", str(folder / "during.db"))
    complete_during = _complete_trials(folder / "during.db")
    os.remove(study_file(uri))

    code = cli.main(_command(sample_store, uri, space))        # the same command, again
    assert code == 0
    out = folder / "sweep"
    fs.invalidate_cache()
    fs.get(key, str(out), recursive=True)
    return {"out": out, "uri": uri, "ended_before": ended_before, "complete_during": complete_during,
            "first": out / "trials" / os.path.basename(first), "first_metrics": first_metrics}


def test_resume_after_driver_kill_repeats_no_finished_trial(sweep):
    import optuna

    out = sweep["out"]
    rows = _read_csv(out / "trials.csv")
    assert len(rows) == 4 and len({row["trial"] for row in rows}) == 4
    assert len(glob.glob(str(out / "trials" / "*"))) == 4
    assert sweep["ended_before"] and sweep["complete_during"] >= len(sweep["ended_before"])
    for trial_id in sweep["ended_before"]:
        assert [row for row in rows if row["trial"].endswith(trial_id)], trial_id
    # the restarted driver's table has the trial that ended before the kill as it ended then
    before = [json.loads(line) for line in sweep["first_metrics"].splitlines()]
    first = next(row for row in rows if row["trial"] == Path(sweep["first"]).name.removeprefix("trial_"))
    assert int(first["steps"]) == max(r["step"] for r in before if r["kind"] == "val")
    assert float(first["best_val_mel"]) == pytest.approx(min(r["val_mel"] for r in before if r["kind"] == "val"))
    ends = [r["kind"] for r in before if r["kind"] in ("stopped", "finished")]
    assert ends == [first["status"]], (ends, first)
    # the trial that had ended before the kill did not train again
    assert Path(sweep["first"], "metrics.jsonl").read_text() == sweep["first_metrics"]
    # the Optuna study (what optuna-dashboard opens) holds 4 told trials, none still running, each
    # told the last validation Tune saw of it (Ray's OptunaSearch reports a trial's final result)
    study = optuna.load_study(study_name="voxray", storage=f"sqlite:///{out}/optuna.db")
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials), [t.state for t in study.trials]
    last = [json.loads(Path(path).read_text().splitlines()[-1])["val_mel"]
            for path in glob.glob(str(out / "trial_*" / "result.json"))]
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(last))


def test_asha_stops_a_trial_early_and_the_table_says_so(sweep):
    rows = _read_csv(sweep["out"] / "trials.csv")
    assert list(rows[0]) == ["trial", "train.lr", "loss.duration", "best_val_mel", "steps", "status"]
    stopped = [row for row in rows if row["status"] == "stopped"]
    finished = [row for row in rows if row["status"] == "finished"]
    assert stopped, rows
    assert all(int(row["steps"]) < MAX_STEPS for row in stopped)
    assert finished and all(int(row["steps"]) == MAX_STEPS for row in finished)
    # a stopped trial halted at its rung: its workers waited for Tune's decision there, and no
    # training step (logged every step) came after the validation ASHA stopped it at
    events = []
    for row in stopped:
        run = glob.glob(str(sweep["out"] / "trials" / f"*{row['trial'][-8:]}"))[0]
        records = [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in records if r["kind"] == "train") == int(row["steps"]), row
        assert [r["kind"] for r in records if r["kind"] in ("stopped", "finished")] == ["stopped"], row
        assert int(row["steps"]) % 5 == 0
        events += [r for r in records if r["kind"] == "stopped"]
    assert len(events) == len(stopped) and all("stopped by the sweep's scheduler" in e["reason"] for e in events)
    for row in rows:
        assert 1e-5 <= float(row["train.lr"]) <= 1e-2 and 0.1 <= float(row["loss.duration"]) <= 1.0
        assert 0 < float(row["best_val_mel"]) < 10
    # the sampled values reached the training runs
    for row in rows:
        run = glob.glob(str(sweep["out"] / "trials" / f"*{row['trial'][-8:]}"))[0]
        config = load_config(os.path.join(run, "config.yaml"))
        assert config.train.lr == pytest.approx(float(row["train.lr"]))
        assert config.loss.duration == pytest.approx(float(row["loss.duration"]))


def test_sweep_picture_draws_every_trial_and_the_best(sweep):
    from PIL import Image

    image = Image.open(sweep["out"] / "sweep.png")
    assert image.size[0] > 600 and image.size[1] > 300
    drawn = json.loads(image.text["Description"])
    rows = _read_csv(sweep["out"] / "trials.csv")
    validated = [row for row in rows if row.get("best_val_mel") not in (None, "")]
    assert drawn["metric"] == "val_mel" and len(drawn["trials"]) == len(validated) >= 2
    for row in validated:           # each trial's curve reaches its best validation
        assert min(drawn["trials"][row["trial"]]) == pytest.approx(float(row["best_val_mel"]), rel=1e-6)
    assert drawn["best"] == pytest.approx(min(float(row["best_val_mel"]) for row in validated), rel=1e-6)


def test_best_yaml_is_the_best_trial_and_trains(sweep, sample_store, tmp_path):
    rows = _read_csv(sweep["out"] / "trials.csv")
    best = min(rows, key=lambda row: float(row["best_val_mel"]))
    config = load_config(f"{sweep['uri']}/best.yaml")     # as the sweep's closing line prints it
    assert config.train.lr == pytest.approx(float(best["train.lr"]))
    assert config.loss.duration == pytest.approx(float(best["loss.duration"]))
    assert config.train.max_steps == MAX_STEPS and config.model.preset == "tiny"
    code = cli.main(["train", "acoustic", "--data", sample_store, "--output", str(tmp_path / "run"),
                     "--config", f"{sweep['uri']}/best.yaml", "train.max_steps=5", "train.val_every=5"])
    assert code == 0
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_fine_tuning_sweep_searches_the_lora_rank(ray_cluster, sample_store, base_run, tmp_path):
    """... and minimises the metric ``tune.metric`` names (a quality metric), by which the trials
    rank their checkpoints too."""
    out = tmp_path / "lora-sweep"
    code = cli.main(["tune", "acoustic", "--data", sample_store, "--output", str(out), "--trials", "2",
                     "--config", CPU_CONFIG, f"finetune.init_from={base_run}/final", "train.max_steps=5",
                     "train.val_every=5", "train.batch_size=4", "train.max_failures=0", "tune.metric=val_mcd_mel_db"])
    assert code == 0
    rows = _read_csv(out / "trials.csv")
    assert list(rows[0])[1:8] == ["train.lr", "loss.mel", "loss.duration", "loss.pitch", "loss.energy", "lora.rank",
                                  "best_val_mcd_mel_db"]
    for row in rows:
        assert int(row["lora.rank"]) in (4, 8, 16, 32, 64) and float(row["best_val_mcd_mel_db"]) > 0
        run = glob.glob(str(out / "trials" / f"*{row['trial'][-8:]}"))[0]
        config = load_config(os.path.join(run, "config.yaml"))
        assert config.lora.rank == int(row["lora.rank"]) and config.train.checkpoint_metric == "val_mcd_mel_db"
    assert load_config(str(out / "best.yaml")).finetune.init_from == f"{base_run}/final"


@pytest.mark.parametrize("space, message", [
    ("train.lrr: {loguniform: [1.0e-4, 1.0e-3]}\n", "train.lrr"),
    ("train.lr: {loguniform: [1.0e-3, 1.0e-4]}\n", "train.lr"),
    ("loss.mel: {uniform: [1.0]}\n", "loss.mel"),
    ("train.batch_size: {int: [0, 4]}\n", "train.batch_size"),
    ("train.lr: {normal: [0, 1]}\n", "train.lr"),
])
def test_bad_search_space_fails_before_any_trial(space, message, tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(space)
    out = tmp_path / "sweep"
    code = cli.main(["tune", "acoustic", "--data", str(tmp_path / "no-store"), "--output", str(out),
                     "--trials", "2", "--search-space", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("voxray tune:") and "error" in err and message in err
    assert not out.exists()


def test_sweep_on_the_embedded_ray_of_this_machine(sample_store, tmp_path):
    """No RAY_ADDRESS: the command starts its own Ray, sized to this machine (2 cores in CI), and a
    trial's Ray Data tasks still get a whole CPU next to the trial driver's token share."""
    out = tmp_path / "sweep"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "voxray.cli", "tune", "acoustic", "--data", sample_store,
                           "--output", str(out), "--trials", "1", "--config", CPU_CONFIG, "train.max_steps=5",
                           "train.val_every=5", "train.batch_size=4", "train.max_failures=0"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _read_csv(out / "trials.csv")
    assert [row["status"] for row in rows] == ["finished"] and rows[0]["steps"] == "5"
