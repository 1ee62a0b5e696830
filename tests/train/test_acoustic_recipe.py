"""The acoustic recipe end to end on a real local Ray: Ray Train workers with real DeepSpeed
engines (CPU accelerator, gloo) training the tiny model on the committed sample corpus."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
import torch

from voxray import cli
from voxray.config import ConfigError, load_config
from voxray.train.engine import NonFiniteError
from tests.train.conftest import REPO, latest_checkpoint, metrics, train, trainer_state

pytestmark = pytest.mark.integration


def test_tiny_model_learns_and_exports(base_run):
    val = metrics(base_run, "val")
    assert [v["step"] for v in val] == [20, 40, 60, 80, 100, 120]
    assert val[-1]["val_mel"] < 0.85 * val[0]["val_mel"], [v["val_mel"] for v in val]
    train_log = metrics(base_run, "train")
    assert train_log[-1]["mel"] < 0.8 * train_log[0]["mel"]
    for record in train_log:
        assert record["mel_frames_per_s"] > 0 and 0 <= record["padding_fraction"] < 0.5
        assert np.isfinite(record["grad_norm"]) and record["lr"] > 0
    # best-k (keep_best 3 by val mel) plus the latest, each holding the DeepSpeed state and the EMA
    kept = sorted(os.path.basename(p) for p in glob.glob(f"{base_run}/checkpoint_*"))
    best3 = sorted(sorted(val, key=lambda v: v["val_mel"])[:3], key=lambda v: v["step"])
    assert set(kept) >= {f"checkpoint_{v['step']:08d}" for v in best3} and "checkpoint_00000120" in kept
    assert len(kept) <= 4
    assert os.path.exists(f"{base_run}/checkpoint_00000120/ds/model/zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert trainer_state(f"{base_run}/checkpoint_00000120")["step"] == 120
    # TensorBoard holds scalars, the mel image and the audio sample
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(f"{base_run}/tensorboard", size_guidance={"images": 0, "audio": 0}).Reload()
    assert {"train/mel", "train/lr", "train/grad_norm", "train/mel_frames_per_s",
            "train/padding_fraction", "val/val_mel"} <= set(events.Tags()["scalars"])
    assert {"val/mel_predicted_vs_target", "val/attention"} <= set(events.Tags()["images"])
    # the learned alignment's health: its soft attention gathers round the monotonic path as it trains
    diagonality = [v["val_attention_diagonality"] for v in val]
    assert all(0 < d <= 1 for d in diagonality) and diagonality[-1] > diagonality[0], diagonality
    assert "val/audio_griffin_lim" in events.Tags()["audio"]
    final = Path(base_run, "final")
    assert {"model.safetensors", "model.json", "config.yaml", "vocab.json", "audio_spec.json",
            "stats.json"} <= {p.name for p in final.iterdir()}
    assert json.loads((final / "model.json").read_text())["speakers"] == ["spk_f", "spk_m"]


def test_synthesize_writes_finite_audio(base_run, tmp_path, capsys):
    out = tmp_path / "hello.wav"
    text = "The quick brown fox jumps over the lazy dog."
    assert cli.main(["synthesize", "--model", f"{base_run}/final", "--text", text,
                     "--speaker", "spk_m", "--language", "en-us", "--out", str(out)]) == 0
    audio, rate = soundfile.read(out)
    assert rate == 22050 and np.isfinite(audio).all() and np.abs(audio).max() > 0.01
    assert 0.8 < len(audio) / rate < 8.0            # nine words
    for args, named in [(["--speaker", "nobody"], "unknown speaker 'nobody'"),
                        (["--language", "fa"], "unknown language 'fa'"),
                        (["--text", "Привет"], "never saw"),
                        (["--text", "   "], "empty")]:
        argv = ["synthesize", "--model", f"{base_run}/final", "--text", text, "--out", str(out), *args]
        assert cli.main(argv) == 2
        assert named in capsys.readouterr().err


@pytest.mark.parametrize("stage, precision", [(3, "bf16")])
def test_two_workers_zero(sample_store, tmp_path, stage, precision):
    """Two workers, every rank's ZeRO shard in each checkpoint; val (5 rows) splits unevenly.
    (ZeRO-2 with two workers, and a worker killed mid-run, are tested once for every family in
    tests/train/test_core.py.) Clipped by the median of the norms seen (train.clip=percentile),
    ZeRO-3's partitioned gradients read per layer for TensorBoard. Stopped at 12 and resumed: the
    clip's recent norms come back with the checkpoint."""
    run = str(tmp_path / "run")
    common = ("train.num_workers=2", f"deepspeed.zero_stage={stage}", f"deepspeed.precision={precision}",
              "train.val_every=12", "train.batch_size=4", "train.clip=percentile", "train.clip_percentile=50",
              "train.log_every=1")
    train(sample_store, run, "train.max_steps=12", *common)
    summary = train(sample_store, run, "train.max_steps=24", *common)
    assert summary["step"] == 24 and np.isfinite(summary["val_mel"])
    assert [r["step"] for r in metrics(run, "resumed")] == [12]
    logged = metrics(run, "train")
    norms = [r["grad_norm"] for r in logged]
    assert [r["step"] for r in logged] == list(range(1, 25))
    for r in logged:        # train.grad_clip until 20 norms are seen (12 of them before the resume), then their median
        expected = 1.0 if r["step"] < 20 else float(np.percentile(norms[: r["step"]], 50))
        assert r["clip_threshold"] == pytest.approx(expected, rel=1e-6), r["step"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(f"{run}/tensorboard", size_guidance={"scalars": 0}).Reload()
    layers = [tag for tag in events.Tags()["scalars"] if tag.startswith("grad_norm/model/")]
    assert "grad_norm/model/encoder.blocks.0" in layers and "grad_norm/model/mel_out" in layers, layers
    at = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in layers}
    for step in (5, 24):    # the layers' norms add up to the global one (ZeRO-3 shards gathered)
        assert math.sqrt(sum(v[step] ** 2 for v in at.values())) == pytest.approx(norms[step - 1], rel=2e-3)
    files = os.listdir(f"{run}/checkpoint_00000024/ds/model")
    prefix = "bf16_" if precision == "bf16" else ""
    for rank in (0, 1):
        assert f"{prefix}zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" in files, files
        if stage == 3:
            assert f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" in files, files
    assert sorted(os.listdir(f"{run}/checkpoint_00000024/rng")) == ["rank_0.pt", "rank_1.pt"]
    assert os.path.exists(f"{run}/final/model.safetensors")


def test_resume_equivalence(sample_store, tmp_path):
    """20 steps straight == 10 steps, then the same command resumed to 20."""
    common = ("train.schedule=constant", "train.warmup_steps=5", "train.val_every=10")
    straight, halves = str(tmp_path / "straight"), str(tmp_path / "halves")
    train(sample_store, straight, "train.max_steps=20", *common)
    train(sample_store, halves, "train.max_steps=10", *common)
    train(sample_store, halves, "train.max_steps=20", *common)
    state = trainer_state(latest_checkpoint(halves))
    assert state["step"] == 20 and state["restarts"] == 1
    a, b = metrics(straight, "train"), metrics(halves, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [5, 10, 15, 20]
    for x, y in zip(a, b):
        assert x["mel"] == pytest.approx(y["mel"], rel=1e-3), (x, y)
        assert x["total"] == pytest.approx(y["total"], rel=1e-3), (x, y)
    assert metrics(straight, "val")[-1]["val_mel"] == pytest.approx(metrics(halves, "val")[-1]["val_mel"], rel=1e-3)
    assert [r["step"] for r in metrics(halves, "resumed")] == [10]
    # A change that no longer fits the checkpoints is refused before anything runs.
    with pytest.raises(ConfigError, match="model.preset"):
        train(sample_store, halves, "train.max_steps=30", "model.preset=small", *common)


def _poisoned_store(store: str, folder: Path, fraction: float) -> str:
    """A copy of ``store`` whose train rows have NaN energy (a corrupted feature store)."""
    shutil.copytree(store, folder)
    for path in sorted(glob.glob(f"{folder}/train/*.parquet")):
        table = pq.read_table(path)
        energy = table.column("energy").to_pylist()
        for i in range(len(energy)):
            if i % round(1 / fraction) == 0:
                energy[i] = [float("nan")] * len(energy[i])
        index = table.schema.get_field_index("energy")
        table = table.set_column(index, table.schema.field(index), pa.array(energy, pa.list_(pa.float32())))
        pq.write_table(table, path)
    return str(folder)


@pytest.mark.parametrize("stage", [0, 2])
def test_nonfinite_steps_are_skipped_and_counted(sample_store, tmp_path, stage):
    store = _poisoned_store(sample_store, tmp_path / "store", fraction=0.1)
    run = str(tmp_path / "run")
    summary = train(store, run, "train.max_steps=20", "train.val_every=20", f"deepspeed.zero_stage={stage}",
                    "train.batch_size=4")
    state = trainer_state(latest_checkpoint(run))
    assert summary["step"] == 20 and state["skipped_steps"] > 0, state
    from safetensors.torch import load_file

    weights = load_file(f"{run}/final/model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_many_nonfinite_steps_in_a_row_stop_the_run(sample_store, tmp_path):
    store = _poisoned_store(sample_store, tmp_path / "store", fraction=1.0)
    run = str(tmp_path / "run")
    with pytest.raises(NonFiniteError, match=r"3 optimizer steps in a row .* train.max_nonfinite_steps=3"):
        train(store, run, "train.max_steps=20", "train.max_nonfinite_steps=3")
    assert not os.path.exists(f"{run}/final")
    assert metrics(run, "aborted")


def test_cli_errors(sample_store, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["train", "acoustic", "--data", sample_store, "--output", run, "train.bogus=1"]) == 2
    assert "train.bogus" in capsys.readouterr().err
    assert cli.main(["train", "acoustic", "--data", str(tmp_path / "nothing"), "--output", run]) == 2
    assert "not a feature store" in capsys.readouterr().err


def test_job_configs_load():
    paths = sorted(glob.glob(str(REPO / "jobs" / "configs" / "*.yaml")))
    assert len(paths) >= 16, paths
    for path in paths:
        assert load_config(path).family in ("acoustic", "vocoder", "talker"), path


def test_trains_from_and_to_s3_and_resumes(sample_store, s3_env):
    """Store on S3 (moto server), run folder on S3: checkpoints, logs, export and resume."""
    import s3fs

    from voxray.synthesize import load_voice, synthesize

    bucket = s3_env
    fs = s3fs.S3FileSystem()
    fs.put(sample_store, f"{bucket}/store", recursive=True)
    store, run = f"s3://{bucket}/store", f"s3://{bucket}/runs/first"
    assert train(store, run, "train.max_steps=6", "train.val_every=3", "train.batch_size=4")["step"] == 6
    assert train(store, run, "train.max_steps=9", "train.val_every=3", "train.batch_size=4")["step"] == 9
    state = json.loads(fs.cat(f"{bucket}/runs/first/checkpoint_00000009/trainer_state.json"))
    assert state["step"] == 9 and state["restarts"] == 1
    log = [json.loads(line) for line in fs.cat(f"{bucket}/runs/first/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "val"] == [3, 6, 9]
    assert fs.find(f"{bucket}/runs/first/tensorboard")
    audio, _ = synthesize(load_voice(f"{run}/final"), "Hello.")
    assert np.isfinite(audio).all() and len(audio) > 0


def test_one_optimizer_step_per_iteration_takes_grad_accum_micro_batches(sample_store, tmp_path):
    """train.grad_accum=2: each of the run's 4 steps is one DeepSpeed optimizer step over two
    micro-batches (the engine's own counters in the checkpoint agree with the trainer's step)."""
    run = str(tmp_path / "accum")
    train(sample_store, run, "train.grad_accum=2", "train.batch_size=4", "train.max_steps=4", "train.val_every=4",
          "train.log_every=2", "deepspeed.zero_stage=0")
    checkpoint = latest_checkpoint(run)
    states = torch.load(f"{checkpoint}/ds/model/mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    assert trainer_state(checkpoint)["step"] == states["global_steps"] == 4
    assert states["global_samples"] == 4 * 2 * 4                 # steps x micro-batches x batch size
    assert [r["step"] for r in metrics(run, "train")] == [2, 4]
