"""The faults a long run meets, each caused for real from the CLI: what the console says, how the
run ends or recovers, and that nothing is lost. Times are measured in benchmarks/faults.py, not here."""

from __future__ import annotations

import pytest

from tests.train.conftest import CPU_CONFIG
from voxray import cli
from voxray.train.worker import HANG_ENV

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
                     "train.max_steps=20", "train.val_every=10", "train.stall_seconds=4", "train.hang_timeout=20"])
    out = capsys.readouterr()
    assert code == 2, out.err
    assert "rank 1 (pid " in out.out and "voxray/train/worker.py" in out.out and " in _hang" in out.out, out.out
    assert "rank 0 (pid " in out.out and "its training thread is in" in out.out
    assert "a collective waited train.hang_timeout=20 s" in out.err, out.err
    assert "rank 0 after step 3 in " in out.err and "rank 1 after step 3 in " in out.err
    assert "_hang" in out.err.split("rank 1 after step 3 in ", 1)[1]
