"""The faults a long run meets, each caused for real from the CLI: what the console says, how the
run ends or recovers, and that nothing is lost. Times are measured in benchmarks/faults.py, not here."""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import s3_bucket
from tests.flaky_s3 import FlakyS3
from tests.train.conftest import CPU_CONFIG, latest_checkpoint, metrics, trainer_state
from voxray import cli
from voxray.train.worker import DISK_FULL_ENV, HANG_ENV, KILL_IN_CHECKPOINT_ENV, OOM_ENV

ACOUSTIC_2 = ["--config", CPU_CONFIG, "train.num_workers=2", "train.max_failures=0", "train.log_every=1",
              "train.warmup_steps=0"]


@pytest.mark.integration
def test_a_hung_collective_shows_each_ranks_stack_then_fails_at_hang_timeout(sample_store, tmp_path, monkeypatch,
                                                                            capsys):
    """Rank 1 stops making collectives after step 3 while rank 0 waits in its next one: within
    train.stall_seconds the console shows both ranks' stacks (rank 1 in the drill, rank 0 in a
    collective), and at train.hang_timeout the run fails with both named instead of waiting for
    the process group's default half hour."""
    monkeypatch.setenv(HANG_ENV, "1:3")
    code = cli.main(["train", "acoustic", "--data", sample_store, "--output", str(tmp_path / "run"), *ACOUSTIC_2,
                     "train.max_steps=20", "train.val_every=10", "train.stall_seconds=3", "train.hang_timeout=12"])
    out = capsys.readouterr()
    assert code == 2, out.err
    assert "rank 1 (pid " in out.out and "voxray/train/worker.py" in out.out and " in _hang" in out.out, out.out
    assert "rank 0 (pid " in out.out and "its training thread is in" in out.out
    assert "a collective waited train.hang_timeout=12 s" in out.err, out.err
    assert "rank 0 after step 3 in " in out.err and "rank 1 after step 3 in " in out.err
    assert "_hang" in out.err.split("rank 1 after step 3 in ", 1)[1]


@pytest.mark.integration
def test_an_unfinished_or_damaged_checkpoint_is_never_resumed_from(sample_store, tmp_path, monkeypatch, capsys):
    """Rank 1 dies with its part of checkpoint 8 written but not reported: Ray Train never registers
    it and the restarted run resumes at 4. Then checkpoint 8's ZeRO shard is truncated on disk: the
    next resume skips it with a line naming the file and starts from 4."""
    run = str(tmp_path / "run")

    def train(steps: int, *overrides: str) -> int:
        return cli.main(["train", "acoustic", "--data", sample_store, "--output", run, *ACOUSTIC_2,
                         f"train.max_steps={steps}", "train.val_every=4", *overrides])

    monkeypatch.setenv(KILL_IN_CHECKPOINT_ENV, "1:8")
    assert train(8, "train.max_failures=1") == 0
    assert [r["step"] for r in metrics(run, "resumed")] == [4]
    monkeypatch.delenv(KILL_IN_CHECKPOINT_ENV)

    shard = Path(run, "checkpoint_00000008", "ds", "model", "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    written = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[: written // 2])
    assert train(12) == 0
    out = capsys.readouterr().out
    assert (f"checkpoint_00000008 skipped, it is incomplete: ds/model/zero_pp_rank_1_mp_rank_00_optim_states.pt "
            f"(rank 1) is {written // 2:,} bytes, {written:,} written (truncated); resuming from the checkpoint of "
            "step 4") in out, out
    assert [r["step"] for r in metrics(run, "resumed")] == [4, 4]
    assert [r["checkpoint"] for r in metrics(run, "checkpoint_skipped")] == ["checkpoint_00000008"]
    assert trainer_state(latest_checkpoint(run))["step"] == 12 and Path(run, "final").is_dir()


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 MiB filesystem (tmpfs) to fill; the test needs the right to mount one (root)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("filling a disk needs a small filesystem to fill: mounting a tmpfs needs root")
    yield str(folder)
    subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.integration
def test_a_full_disk_fails_the_checkpoint_clearly_and_keeps_the_one_before(sample_store, small_disk, tmp_path,
                                                                           monkeypatch, capsys):
    """The device a rank writes its checkpoint part on fills up at step 8: the run fails saying so,
    with the free space; the checkpoint of step 4 is intact and the next run resumes from it."""
    run = str(tmp_path / "run")
    args = ["train", "acoustic", "--data", sample_store, "--output", run, "--config", CPU_CONFIG, "train.max_steps=8",
            "train.val_every=4", "train.max_failures=0", f"train.checkpoint_tmp={small_disk}"]
    monkeypatch.setenv(DISK_FULL_ENV, "0:8")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"no space left on the device writing rank 0's part of the checkpoint of step 8 in {small_disk}/" in err, err
    assert "MiB free of 64 MiB): the previous checkpoint is intact" in err
    monkeypatch.delenv(DISK_FULL_ENV)
    os.remove(os.path.join(small_disk, "disk-full-drill"))
    assert cli.main(args) == 0
    assert [r["step"] for r in metrics(run, "resumed")] == [4]


@pytest.mark.integration
def test_flaky_s3_is_retried_and_an_outage_names_the_uri(sample_store, s3_server, monkeypatch, capsys):
    """A proxy in front of the S3 server fails a fifth of all requests (503 SlowDown or a dropped
    connection): the store is copied up, trained from and checkpointed to through it, and nothing
    fails. Then every request fails: the run stops with an error naming the URI and the retries."""
    import s3fs

    with FlakyS3(s3_server, share=0.2, seed=1) as proxy, s3_bucket(proxy.endpoint) as bucket:
        fs = s3fs.S3FileSystem()
        store, run = f"s3://{bucket}/store", f"s3://{bucket}/run"
        fs.put(sample_store, f"{bucket}/store", recursive=True)
        args = ["train", "acoustic", "--data", store, "--output", run, "--config", CPU_CONFIG, "train.max_steps=4",
                "train.val_every=2", "train.max_failures=0"]
        assert cli.main(args) == 0, capsys.readouterr().err
        assert sum(proxy.failed.values()) >= 20 and min(proxy.failed.values()) > 0, proxy.failed
        fs.invalidate_cache()
        assert fs.exists(f"{bucket}/run/checkpoint_00000004/manifest/rank_0.json")
        assert fs.exists(f"{bucket}/run/final/model.safetensors")

        proxy.share = 1.0
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        monkeypatch.setattr(s3fs.S3FileSystem, "retries", 2)       # s3fs's own, over botocore's
        s3fs.S3FileSystem.clear_instance_cache()                    # clients made with the default attempts
        assert cli.main([*args, "train.max_steps=6"]) == 2
        err = capsys.readouterr().err
        assert f"storage error: s3://{bucket}/" in err and "storage kept failing after 2 attempts per request" in err, err


@pytest.fixture
def memory_cgroups():
    """The right to make memory cgroups (root and a memory controller); the drills' are removed after."""
    from voxray.train.worker import memory_cgroup_drill_folder

    folder = memory_cgroup_drill_folder()
    if folder is None:
        pytest.skip("killing a worker for memory needs a memory cgroup to put it in: root and a memory controller")
    os.rmdir(folder)
    parent = os.path.dirname(folder)
    yield parent
    for drill in glob.glob(os.path.join(parent, "voxray-oom-drill-*")):
        os.rmdir(drill)


@pytest.mark.integration
def test_a_worker_killed_for_memory_is_named_and_the_run_restarts(sample_store, memory_cgroups, tmp_path,
                                                                  monkeypatch, capsys):
    """Rank 1 outgrows its memory cgroup after step 3 and the kernel's OOM killer kills it: the
    console says rank 1 was killed for memory, with its peak and the settings to change, and
    train.max_failures restarts the run from its last checkpoint."""
    run = str(tmp_path / "run")
    monkeypatch.setenv(OOM_ENV, "1:3")
    assert cli.main(["train", "acoustic", "--data", sample_store, "--output", run, *ACOUSTIC_2, "train.max_steps=6",
                     "train.val_every=2", "train.max_failures=1"]) == 0
    out = capsys.readouterr().out
    assert "rank 1 failed: " in out, out
    assert "rank 1 was killed for memory: its process was killed (SIGKILL) with its memory cgroup at " in out, out
    assert "the kernel's OOM killer; its peak RSS was " in out and "Lower train.batch_size (now " in out
    assert [r["step"] for r in metrics(run, "resumed")] == [2]
    assert trainer_state(latest_checkpoint(run))["step"] == 6
