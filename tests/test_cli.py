import json
import subprocess
import sys

import pytest

from voxray import cli
from voxray.cli import main
from tests.conftest import SAMPLE, make_ljspeech, sample_lines

VOXRAY = [sys.executable, "-m", "voxray.cli"]


def test_unknown_config_key_fails_before_any_work(tmp_path):
    result = subprocess.run(VOXRAY + ["preprocess", "--input", "x", "--output", str(tmp_path / "o"),
                                      "preprocess.min_secs=1"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown config key 'preprocess.min_secs'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_missing_input_is_a_clear_error(tmp_path):
    result = subprocess.run(VOXRAY + ["preprocess", "--input", str(tmp_path / "nope"),
                                      "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


@pytest.mark.integration
def test_preprocess_command(ray_cluster, tmp_path, capsys):
    corpus = make_ljspeech(tmp_path / "corpus", sample_lines(5))
    config = tmp_path / "c.yaml"
    config.write_text("preprocess:\n  min_seconds: 0.6\n")
    out = tmp_path / "store"
    code = main(["preprocess", "--input", str(corpus), "--output", str(out), "--format", "ljspeech",
                 "--config", str(config), "preprocess.rows_per_task=2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "input rows 5: kept 5, rejected 0, malformed 0" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 5
    assert "min_seconds: 0.6" in (out / "config.yaml").read_text()
    assert main(["preprocess", "--input", str(corpus), "--output", str(out)]) == 2
    assert "holds a finished feature store" in capsys.readouterr().err


@pytest.mark.integration
def test_two_commands_at_once_each_start_their_own_ray(ray_cluster, tmp_path):
    """Without RAY_ADDRESS a command starts its own Ray, even with others running on the machine
    (the test session's, and here a first command's): a second command once joined the first
    one's Ray and died with it (OwnerDiedError) when the first finished."""
    import os

    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    small = make_ljspeech(tmp_path / "small", sample_lines(4))
    first = subprocess.Popen(VOXRAY + ["preprocess", "--input", str(small), "--output", str(tmp_path / "a")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = ""
    while "started a local Ray" not in started and first.poll() is None:
        started += first.stdout.readline()            # until its Ray is up: then start the second
    second = subprocess.Popen(VOXRAY + ["preprocess", "--input", str(SAMPLE), "--output", str(tmp_path / "b")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_first = started + first.communicate(timeout=300)[0]
    out_second = second.communicate(timeout=300)[0]
    assert first.returncode == 0 and second.returncode == 0, (out_first[-2000:], out_second[-2000:])
    for out in (out_first, out_second):
        assert "voxray: started a local Ray for this command" in out and "Connecting to existing" not in out
    assert json.loads((tmp_path / "a" / "stats.json").read_text())["kept"] == 4
    assert json.loads((tmp_path / "b" / "stats.json").read_text())["kept"] == 64


def test_help_config_lists_every_key_with_default_and_meaning(capsys):
    from voxray.config import AcousticConfig, leaf_keys

    assert main(["train", "acoustic", "--help-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {line.split(" = ")[0] for line in lines} == leaf_keys(AcousticConfig)
    assert "train.betas = [0.9, 0.98]  # AdamW betas" in lines
    assert "train.max_steps = 2000  # optimizer steps (replaced by epochs when that is set) [>= 1]" in lines
    assert all("  # " in line for line in lines)


def test_one_error_path_a_user_error_is_one_line_and_a_bug_its_traceback(monkeypatch, capsys):
    """Every command goes through main's one error-to-exit path: a user's error (a named error
    type, a ValueError, a missing file) is one line and status 2; anything else, a bare
    RuntimeError among them, is a bug and propagates with its traceback."""
    from voxray.tune.sweep import SweepError

    def failing(exc):
        def command(args):
            raise exc
        return command

    argv = ["export", "RUN", "--checkpoint", "best", "--output", "OUT"]
    for exc in (ValueError("bad value"), FileNotFoundError("no such run"), SweepError("no trial reported")):
        monkeypatch.setitem(cli.COMMANDS, "export", failing(exc))
        assert cli.main(argv) == 2
        assert capsys.readouterr().err.strip() == f"voxray export: error: {exc}"
    monkeypatch.setitem(cli.COMMANDS, "export", failing(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(argv)
