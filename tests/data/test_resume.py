"""Preprocessing that dies in the middle resumes: the driver SIGKILLed (re-run the same command,
here onto a real S3 server) and one Ray worker SIGKILLed (Ray retries its task). Either way the
store equals an uninterrupted run's, and the re-run does only what was left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from voxray import uri
from voxray.data.splits import SPLITS
from tests.conftest import SAMPLE, s3_bucket

pytestmark = pytest.mark.integration

COPIES = 8
SETTINGS = ["preprocess.rows_per_task=16"]          # 33 tasks: a kill lands between them
VOLATILE = ("phase_seconds", "wall_seconds", "resume")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """COPIES x the sample corpus (hard links) and two rows the pipeline rejects."""
    folder = tmp_path_factory.mktemp("resume") / "corpus"
    (folder / "wavs").mkdir(parents=True)
    lines = []
    for line in (SAMPLE / "metadata.csv").read_text().splitlines():
        utt_id, rest = line.split("|", 1)
        for copy in range(COPIES):
            os.link(SAMPLE / "wavs" / f"{utt_id}.wav", folder / "wavs" / f"{utt_id}_c{copy}.wav")
            lines.append(f"{utt_id}_c{copy}|{rest}")
    lines[100:100] = ["gone|A file nobody has.|A file nobody has.|spk_m|en-us"]
    lines[300:300] = [f"{lines[5].split('|')[0]}x|  |  |spk_m|en-us"]
    os.link(folder / "wavs" / f"{lines[5].split('|')[0]}.wav", folder / "wavs" / f"{lines[5].split('|')[0]}x.wav")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> str:
    """An uninterrupted run of the same command."""
    out = str(tmp_path_factory.mktemp("resume") / "reference")
    done = _cli(corpus, out)
    assert done.wait(timeout=600) == 0
    return out


def _cli(corpus: Path, out: str, env: dict | None = None) -> subprocess.Popen:
    """``voxray preprocess`` as a user runs it: its own process, its own local Ray."""
    code = "import sys; from voxray.cli import main; sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", code, "preprocess", "--input", str(corpus), "--output", out,
                             *SETTINGS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


def _markers(out: str) -> int:
    folder = uri.join(out, "_progress", "done")
    return len(uri.find(folder, (".json",))) if uri.exists(folder) else 0


def _wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _contents(out: str) -> tuple[dict, str, dict]:
    """Every split's rows sorted by id (all columns), the rejects ledger, stats.json less timings."""
    rows = {}
    for split in SPLITS:
        tables = []
        for path in uri.find(uri.join(out, split), (".parquet",)):
            fs, inner = uri.filesystem(path)
            with fs.open(inner, "rb") as handle:
                tables.append(pq.read_table(handle))
        table = pa.concat_tables(tables)
        rows[split] = table.sort_by("id").to_pylist()
    stats = json.loads(uri.read_text(uri.join(out, "stats.json")))
    for key in VOLATILE:
        stats.pop(key)
    return rows, uri.read_text(uri.join(out, "rejected.jsonl")), stats


def _assert_same_store(out: str, reference: str) -> None:
    rows, rejects, stats = _contents(out)
    ref_rows, ref_rejects, ref_stats = _contents(reference)
    for split in SPLITS:
        assert [r["id"] for r in rows[split]] == [r["id"] for r in ref_rows[split]], split
        assert rows[split] == ref_rows[split], split
    assert rejects == ref_rejects and len(rejects.splitlines()) == 2
    # Feature moments are sums merged task by task: equal up to the order of float additions.
    features, ref_features = stats.pop("features"), ref_stats.pop("features")
    assert stats == ref_stats
    _assert_close(features, ref_features)
    assert not uri.exists(uri.join(out, "_progress"))


def _assert_close(value, expected) -> None:
    if isinstance(expected, dict):
        assert value.keys() == expected.keys()
        for key in expected:
            _assert_close(value[key], expected[key])
    elif isinstance(expected, list):
        assert len(value) == len(expected)
        for a, b in zip(value, expected):
            _assert_close(a, b)
    else:
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


def test_driver_killed_mid_run_then_the_same_command_finishes_it(corpus, reference, s3_server):
    with s3_bucket(s3_server) as bucket:
        out = f"s3://{bucket}/store"
        first = _cli(corpus, out)
        try:
            _wait_for(lambda: _markers(out) >= 4 or first.poll() is not None, "the first finished tasks")
            assert first.poll() is None, f"the run ended before it could be killed:\n{first.stdout.read()}"
            first.send_signal(signal.SIGKILL)                     # the driver only, as a reclaimed node
            first.wait(timeout=60)
        finally:
            _kill(first)
        before = _markers(out)
        assert 4 <= before < 33 and not uri.exists(uri.join(out, "stats.json"))

        second = _cli(corpus, out)
        printed, _ = second.communicate(timeout=600)
        assert second.returncode == 0, printed
        stats = json.loads(uri.read_text(uri.join(out, "stats.json")))
        resume = stats["resume"]
        assert resume["resumed"] and resume["units_reused"] >= 4 * 2        # 16-row tasks of 8-row units
        assert resume["rows_reused"] + resume["rows_processed"] == stats["input_rows"] == 8 * 64 + 2
        assert resume["rows_processed"] < stats["input_rows"]
        assert f"{resume['units_reused']} of 65 units ({resume['rows_reused']} rows) done before" in printed
        _assert_same_store(out, reference)

        # Finished: the same command again is refused, and says so.
        third = _cli(corpus, out)
        printed, _ = third.communicate(timeout=300)
        assert third.returncode == 2 and "holds a finished feature store" in printed


def test_a_worker_killed_mid_task_is_retried_and_nothing_is_lost(corpus, reference, tmp_path):
    out = str(tmp_path / "store")
    run = _cli(corpus, out)
    try:
        _wait_for(lambda: _markers(out) >= 2 or run.poll() is not None, "the first finished tasks")
        victims = []

        def busy_worker() -> bool:
            victims[:] = [p for p in psutil.Process(run.pid).children(recursive=True)
                          if "process_and_write" in " ".join(_cmdline(p))]
            return bool(victims) or run.poll() is not None

        _wait_for(busy_worker, "a worker running a feature task")
        assert run.poll() is None and victims, "the run ended before a worker could be killed"
        victims[0].send_signal(signal.SIGKILL)
        printed, _ = run.communicate(timeout=600)
    finally:
        _kill(run)
    assert run.returncode == 0, printed
    _assert_same_store(out, reference)


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []
