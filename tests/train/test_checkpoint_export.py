"""``voxray export RUN --checkpoint``: a final/-style export of a kept checkpoint, on the session's
runs of the three families (an EMA at ZeRO-2, a GAN's generator at ZeRO-2 without an EMA, a
talker at ZeRO-3 on two workers: its weights gathered from the shards)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from voxray import cli
from voxray.export import read_final
from voxray.train.checkpoint_export import CheckpointExportError, export_checkpoint, kept_checkpoints, validations


def weights(folder: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "model.safetensors"))


@pytest.mark.parametrize("run_fixture", ["base_run", "vocoder_run", "talker_run"])
def test_the_latest_checkpoint_exports_what_final_holds(run_fixture, request, tmp_path):
    run = request.getfixturevalue(run_fixture)
    output = str(tmp_path / "latest")
    assert cli.main(["export", run, "--checkpoint", "latest", "--output", output]) == 0
    exported, final = weights(output), weights(os.path.join(run, "final"))
    assert exported.keys() == final.keys()
    for name, value in final.items():
        torch.testing.assert_close(exported[name], value, rtol=0, atol=1e-6, msg=name)
    ours, theirs = read_final(output), read_final(os.path.join(run, "final"))
    assert ours.family == theirs.family and ours.manifest["step"] == theirs.manifest["step"] == max(kept_checkpoints(run))
    if ours.family == "talker":          # generation's length limit, from that step's validation
        assert ours.manifest["frames_per_token"] == pytest.approx(theirs.manifest["frames_per_token"])


def test_best_and_a_chosen_step_of_an_acoustic_run(base_run, tmp_path, capsys):
    kept = kept_checkpoints(base_run)
    scores = {step: row["val_mel"] for step, row in validations(base_run).items() if step in kept}
    assert len(kept) >= 3 and set(scores) == set(kept)
    best = min(scores, key=scores.get)
    done = export_checkpoint(base_run, "best", str(tmp_path / "best"))
    assert done["step"] == best and done["value"] == pytest.approx(scores[best])
    assert read_final(str(tmp_path / "best")).manifest["step"] == best
    # train.export_best=true wrote the same at the end of the run
    at_end = weights(os.path.join(base_run, "best"))
    assert read_final(os.path.join(base_run, "best")).manifest["step"] == best
    assert all(torch.equal(at_end[name], value) for name, value in weights(str(tmp_path / "best")).items())
    earliest = min(kept)
    assert cli.main(["export", base_run, "--checkpoint", str(earliest), "--output", str(tmp_path / "early")]) == 0
    assert f"step {earliest}" in capsys.readouterr().out
    if earliest != max(kept):
        early, final = weights(str(tmp_path / "early")), weights(os.path.join(base_run, "final"))
        assert any(not torch.equal(early[name], final[name]) for name in final)
    # the export is a model like final/: synthesis reads it
    wav = str(tmp_path / "best.wav")
    assert cli.main(["synthesize", "--model", str(tmp_path / "best"), "--text", "Hello.", "--speaker", "spk_f",
                     "--language", "en-us", "--out", wav]) == 0 and os.path.getsize(wav) > 1000


def test_exports_that_cannot_be_made_say_why(base_run, tmp_path, capsys):
    def refused(*args: str) -> str:
        assert cli.main(["export", *args]) == 2
        return capsys.readouterr().err

    missing = max(kept_checkpoints(base_run)) + 1
    assert "kept no checkpoint of step" in refused(base_run, "--checkpoint", str(missing), "--output", str(tmp_path / "a"))
    assert "best, latest or a step" in refused(base_run, "--checkpoint", "newest", "--output", str(tmp_path / "b"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert "not empty" in refused(base_run, "--output", str(busy))
    assert (busy / "keep.txt").read_text() == "mine"
    assert "not a voxray run" in refused(str(tmp_path), "--output", str(tmp_path / "c"))
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "config.yaml").write_text(open(os.path.join(base_run, "config.yaml")).read())
    assert "give it with --data" in refused(str(old), "--output", str(tmp_path / "d"))
    # a checkpoint with a truncated file is not kept (latest is the one before)
    damaged = tmp_path / "damaged"
    shutil.copytree(base_run, damaged, ignore=shutil.ignore_patterns("final", "eval", "tensorboard"))
    last = max(kept_checkpoints(base_run))
    shard = damaged / f"checkpoint_{last:08d}" / "ds" / "model" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    assert sorted(kept_checkpoints(str(damaged))) == sorted(kept_checkpoints(base_run))[:-1]
    with pytest.raises(CheckpointExportError, match="no complete checkpoint"):
        export_checkpoint(str(old), "latest", str(tmp_path / "e"), store=json.load(
            open(os.path.join(base_run, "store.json")))["store"])
