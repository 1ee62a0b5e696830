"""The vocoder recipe on a real local Ray: a GAN on two DeepSpeed engines (CPU, gloo) training the
tiny HiFi-GAN on the committed sample corpus; its gradients against plain PyTorch DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import REPO, VOCODER_CPU_CONFIG
from tests.train.conftest import latest_checkpoint, metrics
from voxray import cli
from voxray.audio import AudioSpec
from voxray.data.store import read_split
from voxray.models.vocoder import build_generator
from voxray.config import ConfigError, load_config
from voxray.train.recipes import vocoder

pytestmark = pytest.mark.integration


def train(store: str, run: str, *overrides: str) -> dict:
    config = load_config(VOCODER_CPU_CONFIG, ["train.max_failures=0", *overrides])
    return vocoder.train(store, run, config)


@pytest.mark.parametrize("stage, precision", [(0, "fp32"), (2, "fp32"), (2, "bf16")])
def test_discriminator_gradients_equal_ddp_and_the_generator_step_leaves_them(stage, precision, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tests.train.vocoder_gradients", str(stage), precision, str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    results = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank_*.json"))]
    assert len(results) == 2, done.stderr[-3000:]
    for result in results:            # DDP computes in the engines' precision: the same numbers
        assert result["worst_relative_error"] < 1e-3, result
        assert result["d_loss"] == pytest.approx(result["reference_loss"], rel=1e-4)
        assert result["discriminator_untouched"] and result["trainable_again"], result
        assert np.isfinite(result["generator_loss"])


def val_mel_l1(store: str, generator: torch.nn.Module, spec: AudioSpec) -> float:
    """Frame-weighted mel L1 of the generator over the store's val split, as validation computes it."""
    rows = read_split(store, "val").to_pylist()
    total = frames = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), 8):
            batch = vocoder.segments(rows[i: i + 8], None, max(int(r["n_frames"]) for r in rows[i: i + 8]), spec)
            count = float(batch["frames"].sum())
            total += float(vocoder.generated_mel_l1(generator.eval()(batch["mel"]), batch, spec)) * count
            frames += count
    return total / frames


def test_the_vocoder_learns_and_exports_the_generator(sample_store, vocoder_run):
    val = metrics(vocoder_run, "val")
    assert [v["step"] for v in val] == [20, 40]
    final = Path(vocoder_run, "final")
    build = json.loads((final / "model.json").read_text())["build"]
    spec = AudioSpec(**json.loads((final / "audio_spec.json").read_text()))
    torch.manual_seed(0)
    untrained = val_mel_l1(sample_store, build_generator(build), spec)        # ~1.8-2.1 on the sample corpus
    exported = build_generator(build)
    exported.load_state_dict(load_file(final / "model.safetensors"))
    trained = val_mel_l1(sample_store, exported, spec)
    assert trained == pytest.approx(val[-1]["val_mel"], rel=1e-3)             # the export is what validation saw
    assert trained < 0.85 * untrained, (trained, untrained)                   # 40 steps: ~1.36
    train_log = metrics(vocoder_run, "train")
    assert {"generator", "discriminator", "mel", "adversarial", "feature", "samples_per_s", "lr",
            "discriminator_lr", "grad_norm"} <= set(train_log[-1])
    assert train_log[-1]["lr"] < train_log[0]["lr"]                       # exponential decay
    checkpoint = latest_checkpoint(vocoder_run)
    for engine in ("generator", "discriminator"):
        assert os.path.exists(f"{checkpoint}/ds/{engine}/zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert {"model.safetensors", "model.json", "config.yaml", "audio_spec.json"} <= {p.name for p in final.iterdir()}
    manifest = json.loads((final / "model.json").read_text())
    assert manifest["family"] == "vocoder" and manifest["build"]["generator"] == "hifigan"
    assert not any(k.startswith(("periods", "scales")) for k in load_file(final / "model.safetensors"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(f"{vocoder_run}/tensorboard", size_guidance={"images": 0, "audio": 0}).Reload()
    assert {"train/generator", "train/discriminator", "val/val_mel"} <= set(events.Tags()["scalars"])
    assert {"val/audio_0", "val/audio_1"} <= set(events.Tags()["audio"])
    assert "val/mel_0_generated_vs_target" in events.Tags()["images"]


def test_resume_is_exact(sample_store, vocoder_run, tmp_path):
    """The session run's first 20 steps again, stopped at 10 and resumed: the same crops, the same
    losses (validation draws nothing, so validating more often changes no training step)."""
    run = str(tmp_path / "run")
    common = ("train.val_every=10", "train.log_every=10")
    train(sample_store, run, "train.max_steps=10", *common)
    train(sample_store, run, "train.max_steps=20", *common)
    straight = [r for r in metrics(vocoder_run, "train") if r["step"] <= 20]
    resumed = metrics(run, "train")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == [10, 20]
    for a, b in zip(straight, resumed):
        for name in ("generator", "discriminator", "mel"):
            assert b[name] == pytest.approx(a[name], rel=1e-4), (name, a, b)
    assert [r["step"] for r in metrics(run, "resumed")] == [10]


def test_synthesize_through_the_vocoder(base_run, vocoder_run, tmp_path, capsys):
    out = tmp_path / "hello.wav"
    assert cli.main(["synthesize", "--model", f"{base_run}/final", "--vocoder", f"{vocoder_run}/final",
                     "--text", "Hello from voxray.", "--out", str(out)]) == 0
    assert f"(vocoder {vocoder_run}/final)" in capsys.readouterr().out
    audio, rate = soundfile.read(out)
    assert rate == 22050 and np.isfinite(audio).all() and np.abs(audio).max() > 1e-3
    other = tmp_path / "other"
    shutil.copytree(f"{vocoder_run}/final", other)
    spec = json.loads((other / "audio_spec.json").read_text())
    (other / "audio_spec.json").write_text(json.dumps({**spec, "fmax": 7600.0}))
    assert cli.main(["synthesize", "--model", f"{base_run}/final", "--vocoder", str(other),
                     "--text", "Hello.", "--out", str(out)]) == 2
    assert "audio.fmax: acoustic model 8000.0, vocoder 7600.0" in capsys.readouterr().err
    assert cli.main(["synthesize", "--model", f"{vocoder_run}/final", "--text", "Hello.", "--out", str(out)]) == 2
    assert "'vocoder' family; a 'acoustic' model is needed" in capsys.readouterr().err


def test_predicted_mels_then_fine_tuning_from_the_trained_vocoder(sample_store, base_run, vocoder_run, tmp_path,
                                                                   capsys):
    """voxray predict-mels writes the store's rows with the acoustic model's teacher-forced mels
    (frame for frame with the audio); the vocoder fine-tunes on them from its trained generator
    and its run's discriminator."""
    from voxray.data.store import count_rows, read_split

    predicted = str(tmp_path / "predicted")
    assert cli.main(["predict-mels", "--model", f"{base_run}/final", "--data", sample_store,
                     "--output", predicted]) == 0
    assert count_rows(predicted) == count_rows(sample_store) == {"train": 50, "val": 5, "test": 9}
    before, after = read_split(sample_store, "val"), read_split(predicted, "val")
    assert after.schema.equals(before.schema)
    rows = {row["id"]: row for row in before.to_pylist()}
    for row in after.to_pylist():
        original = rows[row["id"]]
        mel, target = np.asarray(row["mel"]), np.asarray(original["mel"])
        assert mel.shape == target.shape == (original["n_frames"], 80)
        assert row["audio"] == original["audio"] and row["token_ids"] == original["token_ids"]
        assert 0 < np.abs(mel - target).mean() < 2.5 and np.corrcoef(mel.ravel(), target.ravel())[0, 1] > 0.5
    assert json.loads(Path(predicted, "stats.json").read_text())["mels"]["predicted_by"] == f"{base_run}/final"
    assert cli.main(["predict-mels", "--model", f"{base_run}/final", "--data", sample_store,
                     "--output", predicted]) == 2
    assert "not empty" in capsys.readouterr().err

    run = str(tmp_path / "run")
    summary = train(predicted, run, f"finetune.init_from={vocoder_run}/final", "train.max_steps=4",
                    "train.val_every=4")
    first = metrics(run, "val")[0]["val_mel"]
    assert first < metrics(vocoder_run, "val")[0]["val_mel"]               # not from scratch
    assert summary["step"] == 4 and "starts fresh" not in capsys.readouterr().out
    saved = yaml.safe_load(Path(run, "config.yaml").read_text())
    assert saved["family"] == "vocoder" and saved["finetune"]["init_from"] == f"{vocoder_run}/final"


def test_acoustic_validation_audio_goes_through_a_given_vocoder(sample_store, vocoder_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.train.conftest import train as train_acoustic

    run = str(tmp_path / "acoustic")
    train_acoustic(sample_store, run, "train.max_steps=2", "train.val_every=2", f"train.vocoder={vocoder_run}/final")
    audio = EventAccumulator(f"{run}/tensorboard", size_guidance={"audio": 0}).Reload().Tags()["audio"]
    assert audio == ["val/audio_vocoder"]
    with pytest.raises(ValueError, match="holds a model of the 'acoustic' family; a 'vocoder' model"):
        train_acoustic(sample_store, str(tmp_path / "other"), f"train.vocoder={run}/final")


def test_bad_setups_are_refused_before_training(sample_store, tmp_path):
    run = str(tmp_path / "run")
    with pytest.raises(ValueError, match=r"model.upsample_rates \[8, 8, 2\] multiply to 128, but audio.hop_length "
                                         r"is 256"):
        train(sample_store, run, "model.upsample_rates=[8,8,2]", "model.upsample_kernel_sizes=[16,16,4]")
    no_audio = tmp_path / "store"
    shutil.copytree(sample_store, no_audio)
    saved = yaml.safe_load((no_audio / "config.yaml").read_text())
    saved["preprocess"]["store_audio"] = False
    (no_audio / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ValueError, match="preprocess.store_audio=false"):
        train(str(no_audio), run)
    for override, named in [("train.grad_accum=2", "train.grad_accum=2"), ("deepspeed.zero_stage=3", "zero_stage=3"),
                            ("deepspeed.precision=fp16", "precision=fp16"), ("loss.duration=1", "acoustic family")]:
        with pytest.raises(ConfigError, match=named):
            load_config(VOCODER_CPU_CONFIG, [override])
