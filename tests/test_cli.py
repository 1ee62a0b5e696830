import json
import subprocess
import sys

import pytest

from voxray.cli import main
from tests.conftest import make_ljspeech, sample_lines

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
    assert "not empty" in capsys.readouterr().err
