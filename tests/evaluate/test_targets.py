"""The users' targets: phases, overrides, verdicts and the notes on measures that mean little."""

from __future__ import annotations

import pytest

from voxray.evaluate import targets


def test_phases_and_overrides():
    default = targets.resolve()
    assert {name: t.describe() for name, t in default.items()} == {
        "mcd_db": "5.5-6.5 dB", "f0_rmse_hz": "15-25 Hz", "duration_mae_ms": "30-50 ms", "mos": "3.5-4.2"}
    assert targets.resolve("pretraining")["mcd_db"].describe() == "7-8 dB" and "mos" not in targets.resolve("pretraining")
    assert targets.resolve("main")["mos"].describe() == "3.5-3.8"
    tuned = targets.resolve("finetuned", ["mcd_db=4-5", "speaker_similarity=0.8"])
    assert tuned["mcd_db"].describe() == "4-5 dB" and tuned["speaker_similarity"].higher_is_better
    for bad, message in (("mcd_db=x-y", "NAME=LOW-HIGH"), ("volume=1-2", "has no target"), ("mcd_db=5-4", "above")):
        with pytest.raises(targets.TargetError, match=message):
            targets.resolve(None, [bad])
    with pytest.raises(targets.TargetError, match="the phases are"):
        targets.resolve("warmup")


def test_verdicts_pass_at_or_better_than_the_worse_end():
    goals = targets.resolve()
    means = {"mcd_db": 5.0, "f0_rmse_hz": 25.5, "duration_mae_ms": 50.0, "mos": 3.4, "wer": 0.2}
    verdicts = targets.verdicts(means, goals, {"mos": "a proxy"})
    assert {name: v["verdict"] for name, v in verdicts.items()} == {
        "mcd_db": "pass", "f0_rmse_hz": "fail", "duration_mae_ms": "pass", "mos": "fail"}
    assert verdicts["mos"]["note"] == "a proxy" and verdicts["mcd_db"]["value"] == 5.0
    assert "mos" not in targets.verdicts({"mcd_db": 6.0, "mos": float("nan")}, goals, {})


def test_notes_say_when_a_measure_does_not_mean_much():
    goals = targets.resolve()
    notes = targets.caveats({"wer": 0.9, "wer_recorded": 0.85, "mos_recorded": 3.1}, goals, "pocketsphinx", "DNSMOS")
    assert "misreads the recordings themselves (WER 0.85" in notes["wer"] and "cer" in notes
    assert "proxy" in notes["mos"] and "cannot be met on this corpus" in notes["mos"]
    trusted = targets.caveats({"wer": 0.1, "wer_recorded": 0.05, "mos_recorded": 4.0}, goals, "x", "y")
    assert "wer" not in trusted and "cannot be met" not in trusted["mos"]
