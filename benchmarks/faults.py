"""The faults a long run meets, caused for real: the time from each fault to the console line that
names it, to the run's failure or recovery, and what was lost.

    .venv/bin/python benchmarks/faults.py [--store STORE] [--only hang,kill,...]

Each case is ``voxray train acoustic`` (the tiny model, jobs/configs/acoustic-cpu.yaml, 2 workers
on an embedded local Ray, checkpoints every 4 steps) run as a user runs it, in a subprocess whose
console lines are timestamped as they arrive. The fault is caused by the drill variables of
``voxray.train.worker``; its time is the drill's marker file (written as the drill fires; the kill
drill waits 5 s after it before SIGKILL, counted). Cases:

  hang        rank 1 stops making collectives after step 6 (stall_seconds 10, hang_timeout 60)
  kill        rank 1 SIGKILLed after step 6 (max_failures 1): Ray Train restarts from step 4
  kill-ckpt   rank 1 SIGKILLed with its part of checkpoint 8 written, not reported
  oom         rank 1 outgrows a 192 MiB memory cgroup after step 6; the kernel kills it (needs root)
  truncated   checkpoint 8's rank-1 ZeRO shard truncated after a finished 8-step run; run to 12
  disk-full   the checkpoint folder (a 64 MiB tmpfs; needs root) fills at step 8
  flaky-s3    store and run on S3 (moto) through a proxy failing 20 % of requests, vs direct

The tests (tests/train/test_faults.py) assert the outcomes; this script measures the times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CONFIG = str(REPO / "jobs" / "configs" / "acoustic-cpu.yaml")
COMMON = ["--config", CONFIG, "train.num_workers=2", "train.log_every=1", "train.warmup_steps=0",
          "train.val_every=4", "train.max_failures=0"]


def run_cli(args: list[str], env: dict[str, str]) -> tuple[int, list[tuple[float, str]], float]:
    """(exit code, [(time, line)] of stdout and stderr as they arrived, end time)."""
    process = subprocess.Popen([sys.executable, "-m", "voxray.cli", *args], cwd=REPO, env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in process.stdout:
            lines.append((time.time(), line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    code = process.wait()
    end = time.time()
    reader.join()
    return code, lines, end


def first(lines: list[tuple[float, str]], pattern: str) -> tuple[float, str]:
    for moment, line in lines:
        if re.search(pattern, line):
            return moment, line
    raise RuntimeError(f"no console line matches {pattern!r}:\n" + "\n".join(l for _, l in lines[-30:]))


def train(store: str, run: str, steps: int, *extra: str, env: dict[str, str] | None = None):
    return run_cli(["train", "acoustic", "--data", store, "--output", run, *COMMON, f"train.max_steps={steps}",
                    *extra], env or {})


def resumed_steps(run: str) -> list[int]:
    records = [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["kind"] == "resumed"]


def case_hang(store: str, scratch: str) -> dict:
    run = os.path.join(scratch, "hang")
    code, lines, end = train(store, run, 20, "train.stall_seconds=10", "train.hang_timeout=60",
                             env={"VOXRAY_FAULT_HANG_RANK_AT_STEP": "1:6"})
    fault = os.path.getmtime(os.path.join(run, "fault-hung"))
    named, _ = first(lines, r"^voxray: rank 1 \(pid")
    return {"fault": "hung collective (rank 1 stops after step 6)", "exit": code,
            "to_line_s": named - fault, "to_end_s": end - fault, "outcome": "failed, both ranks' frames named",
            "lost": "the run (steps since checkpoint 4: 2)"}


def case_kill(store: str, scratch: str, in_checkpoint: bool) -> dict:
    run = os.path.join(scratch, "kill-ckpt" if in_checkpoint else "kill")
    variable = "VOXRAY_FAULT_KILL_RANK_IN_CHECKPOINT" if in_checkpoint else "VOXRAY_FAULT_KILL_RANK_AT_STEP"
    at = 8 if in_checkpoint else 6
    started = time.time()
    code, lines, end = train(store, run, 12, "train.max_failures=1", env={variable: f"1:{at}"})
    fault = os.path.getmtime(os.path.join(run, "fault-injected")) + 5          # the drill sleeps 5 s, then dies
    back, _ = first(lines, r"resuming at step")
    step = resumed_steps(run)[0]
    return {"fault": f"rank 1 SIGKILLed {'writing checkpoint 8' if in_checkpoint else 'after step 6'}",
            "exit": code, "to_line_s": back - fault, "to_end_s": end - fault,
            "outcome": f"restarted from step {step}, finished 12 steps", "lost": f"{at - step} steps",
            "run_s": end - started}


def case_oom(store: str, scratch: str) -> dict:
    from voxray.train.worker import memory_cgroup_drill_folder

    folder = memory_cgroup_drill_folder()
    if folder is None:
        return {"fault": "killed for memory", "outcome": "not measured: needs a writable memory cgroup (root)"}
    os.rmdir(folder)
    run = os.path.join(scratch, "oom")
    code, lines, end = train(store, run, 12, "train.max_failures=1", env={"VOXRAY_FAULT_OOM_RANK_AT_STEP": "1:6"})
    for drill in Path(os.path.dirname(folder)).glob("voxray-oom-drill-*"):
        drill.rmdir()
    fault = os.path.getmtime(os.path.join(run, "fault-oom"))
    named, line = first(lines, r"was killed for memory")
    back, _ = first(lines, r"resuming at step")
    step = resumed_steps(run)[0]
    print("   ", line.strip(), flush=True)
    return {"fault": "rank 1 OOM-killed by the kernel (192 MiB cgroup) after step 6", "exit": code,
            "to_line_s": named - fault, "to_end_s": back - fault,
            "outcome": f"named as a memory kill; restarted from step {step} (time to the resumed line), finished",
            "lost": f"{6 - step} steps"}


def case_truncated(store: str, scratch: str) -> dict:
    run = os.path.join(scratch, "truncated")
    code, _, _ = train(store, run, 8)
    assert code == 0
    shard = Path(run, "checkpoint_00000008", "ds", "model", "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    started = time.time()
    code, lines, end = train(store, run, 12)
    skipped, _ = first(lines, r"checkpoint_00000008 skipped")
    return {"fault": "checkpoint 8's rank-1 shard truncated", "exit": code, "to_line_s": skipped - started,
            "to_end_s": end - started, "outcome": f"resumed from step {resumed_steps(run)[-1]}, finished",
            "lost": "4 steps (checkpoint 8)", "time_from": "command start"}


def case_disk_full(store: str, scratch: str) -> dict:
    disk = os.path.join(scratch, "small-disk")
    os.makedirs(disk)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", disk]).returncode:
        return {"fault": "disk full", "outcome": "not measured: mounting a tmpfs needs root"}
    try:
        run = os.path.join(scratch, "disk-full")
        code, lines, end = train(store, run, 12, f"train.checkpoint_tmp={disk}",
                                 env={"VOXRAY_FAULT_DISK_FULL_AT_STEP": "0:8"})
        fault = os.path.getmtime(os.path.join(run, "fault-disk-full"))
        said, _ = first(lines, r"no space left on the device")
    finally:
        subprocess.run(["umount", "-l", disk])
    return {"fault": "checkpoint device full at step 8", "exit": code, "to_line_s": said - fault,
            "to_end_s": end - fault, "outcome": "failed naming the device and free space; checkpoint 4 intact",
            "lost": "4 steps (since checkpoint 4)"}


def case_flaky_s3(store: str, scratch: str) -> dict:
    from tests.flaky_s3 import FlakyS3
    from voxray.cluster import free_port

    port = free_port()
    server = subprocess.Popen([shutil.which("moto_server", path=str(Path(sys.executable).parent)), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    times = {}
    try:
        import boto3
        import s3fs

        for label, share in (("direct", None), ("flaky", 0.2)):
            proxy = FlakyS3(endpoint, share or 0.0, seed=1)
            with proxy:
                url = proxy.endpoint if share else endpoint
                bucket = f"bench-{label}-{os.getpid()}"
                boto3.client("s3", endpoint_url=url, **{"aws_access_key_id": "x", "aws_secret_access_key": "x",
                                                       "region_name": "us-east-1"}).create_bucket(Bucket=bucket)
                fs = s3fs.S3FileSystem(endpoint_url=url, key="x", secret="x", skip_instance_cache=True)
                fs.put(store, f"{bucket}/store", recursive=True)
                started = time.time()
                code, lines, end = run_cli(["train", "acoustic", "--data", f"s3://{bucket}/store", "--output",
                                            f"s3://{bucket}/run", "--config", CONFIG, "train.max_steps=8",
                                            "train.val_every=4", "train.max_failures=0"],
                                           {**env, "AWS_ENDPOINT_URL": url})
                assert code == 0, "\n".join(l for _, l in lines[-20:])
                times[label] = (end - started, sum(proxy.failed.values()), proxy.forwarded)
    finally:
        server.terminate()
    (direct, _, _), (flaky, failed, forwarded) = times["direct"], times["flaky"]
    return {"fault": f"S3 failing 20 % of requests ({failed} of {forwarded} failed)", "exit": 0,
            "to_end_s": flaky, "outcome": f"finished; {flaky:.0f} s vs {direct:.0f} s direct",
            "lost": "nothing"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", help="a preprocessed sample store (default: preprocess the sample corpus)")
    parser.add_argument("--only", default="hang,kill,kill-ckpt,oom,truncated,disk-full,flaky-s3")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="voxray-faults-")
    if args.store:
        store = args.store
    else:
        store = os.path.join(scratch, "store")
        assert run_cli(["preprocess", "--input", str(REPO / "corpus" / "sample"), "--output", store], {})[0] == 0
    cases = {"hang": lambda: case_hang(store, scratch), "kill": lambda: case_kill(store, scratch, False),
             "kill-ckpt": lambda: case_kill(store, scratch, True), "oom": lambda: case_oom(store, scratch), "truncated": lambda: case_truncated(store, scratch),
             "disk-full": lambda: case_disk_full(store, scratch), "flaky-s3": lambda: case_flaky_s3(store, scratch)}
    print("| fault | exit | fault -> console line | fault -> end | outcome | lost |")
    print("|---|---|---|---|---|---|")
    for name in args.only.split(","):
        row = cases[name]()
        line = f"{row['to_line_s']:.1f} s" if "to_line_s" in row else "-"
        if row.get("time_from"):
            line += f" (from {row['time_from']})"
        end = f"{row['to_end_s']:.1f} s" if "to_end_s" in row else "-"
        print(f"| {row['fault']} | {row.get('exit', '-')} | {line} | {end} | {row['outcome']} | {row.get('lost', '-')} |",
              flush=True)


if __name__ == "__main__":
    main()
