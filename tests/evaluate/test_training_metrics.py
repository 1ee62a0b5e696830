"""Quality metrics during training: the cheap validation measures, the metric that ranks
checkpoints, and the evaluation at the end of a run."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from voxray import cli
from voxray.config import ConfigError, load_config
from voxray.evaluate.metrics import mel_mcd_sums
from voxray.models.acoustic import fastspeech2
from voxray.train.launch import checkpoint_metric
from voxray.train.recipes import recipe
from voxray.train.recipes.acoustic import quality_sums


def test_mel_mcd_counts_speech_frames_only_and_ignores_level():
    torch.manual_seed(0)
    target = torch.randn(2, 50, 80) - 2.0
    target[1, :10] = -11.5                                      # digital silence (log floor)
    lengths = torch.tensor([50, 40])                             # the rest of row 1 is padding
    assert mel_mcd_sums(target, target, lengths) == (0.0, 80.0)
    assert mel_mcd_sums(target + 3.0, target, lengths)[0] == pytest.approx(0, abs=1e-3)   # c0 only: the level
    distance, frames = mel_mcd_sums(target + torch.linspace(-1, 1, 80), target, lengths)  # a spectral tilt
    assert frames == 80 and distance / frames > 1


def test_validation_quality_sums_of_a_teacher_forced_batch():
    """Exact predictions measure zero; durations one frame long per token, 1 frame of MAE."""
    model = fastspeech2.build("tiny", vocab_size=10, n_mels=80, n_speakers=1, n_languages=1, rotary=True,
                              swiglu=True, learn_alignment=False, pitch_stats=(150.0, 40.0))
    durations = torch.tensor([[3, 2, 4, 0], [2, 2, 0, 0]])
    mels = torch.randn(2, 9, 80)
    pitch = torch.zeros(2, 9)
    pitch[0, :5] = 120.0                                         # tokens 0 and 1 of row 0 are voiced
    out = {"text_mask": durations == 0, "durations": durations, "log_duration": torch.log(durations + 1.0),
           "pitch": torch.zeros(2, 4), "token_pitch": torch.zeros(2, 4), "mel": mels}
    moved = {"pitch": pitch, "mels": mels, "mel_lengths": durations.sum(1)}
    sums = quality_sums(model, out, moved)
    assert {k: sums[k] for k in ("duration_error_frames", "tokens", "f0_squared_error", "voiced_tokens",
                                 "mcd_db_sum")} == {"duration_error_frames": 0.0, "tokens": 5.0, "f0_squared_error": 0.0,
                                                    "voiced_tokens": 2.0, "mcd_db_sum": 0.0}
    assert sums["speech_frames"] > 0
    assert sums["attention_near_path"] == sums["attention_mass"] == 0.0    # given durations: no attention to judge
    out = {**out, "log_duration": torch.log(durations + 2.0), "pitch": out["pitch"] + 0.5}
    sums = quality_sums(model, out, moved)
    assert sums["duration_error_frames"] / sums["tokens"] == 1.0
    assert math.sqrt(sums["f0_squared_error"] / sums["voiced_tokens"]) == pytest.approx(0.5 * 40.0)


def test_checkpoint_metric_is_the_familys_or_one_it_validates(tmp_path, capsys):
    acoustic = recipe("acoustic")
    assert checkpoint_metric(acoustic, load_config(family="acoustic")) == ("val_mel", "val mel L1")
    assert checkpoint_metric(recipe("talker"), load_config(family="talker"))[0] == "val_ce"
    chosen = load_config(overrides=["train.checkpoint_metric=val_f0_rmse_hz"], family="acoustic")
    assert checkpoint_metric(acoustic, chosen) == ("val_f0_rmse_hz", "val f0 rmse hz")
    with pytest.raises(ConfigError, match="talker family validates val_ce, val_loss"):
        checkpoint_metric(recipe("talker"), load_config(overrides=["train.checkpoint_metric=val_mcd_mel_db"],
                                                        family="talker"))


def test_a_run_logs_quality_at_validation_and_evaluates_at_the_end(base_run):
    """The session's acoustic run (train.evaluate_at_end=true, 2 utterances)."""
    rows = [json.loads(line) for line in open(os.path.join(base_run, "metrics.jsonl"))]
    last = [r for r in rows if r["kind"] == "val"][-1]
    assert 0 < last["val_duration_mae_ms"] < 200 and 0 < last["val_f0_rmse_hz"] < 200 and 0 < last["val_mcd_mel_db"]
    summary = json.load(open(os.path.join(base_run, "eval", "metrics.json")))
    assert summary["utterances"] == 2 and summary["model"].endswith("final") and summary["vocoder"] == "griffin-lim"
    assert os.path.exists(os.path.join(base_run, "eval", "report.html"))
