"""The acoustic family on the code-switched store: per-token languages and particles, the
multi-task heads and their losses, a curriculum switching stages and resumed inside one, and
synthesis of a code-switched sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from voxray import cli
from voxray.config import load_config
from voxray.train.recipes import acoustic
from tests.train.conftest import CPU_CONFIG, latest_checkpoint, metrics, train, trainer_state

pytestmark = pytest.mark.integration

CURRICULUM = ("train.curriculum=[{name: monolingual, until_step: 4, where: ['n_languages <= 1']}, "
              "{until_step: 8, where: ['n_languages <= 2']}]")
HEADS = ("loss.language=0.1", "loss.particle=0.2", "loss.particle_prosody=0.2", "loss.mel_mse=1.0")


def test_code_switched_training_with_curriculum_heads_and_resume(codeswitch_store, tmp_path, capsys):
    run = str(tmp_path / "run")
    common = ("train.batch_size=4", "train.val_every=6", "train.warmup_steps=2", CURRICULUM, *HEADS)
    train(codeswitch_store, run, "train.max_steps=6", *common)
    assert trainer_state(latest_checkpoint(run))["position"]["stage"] == 1       # stopped inside stage 2
    train(codeswitch_store, run, "train.max_steps=10", *common)
    printed = capsys.readouterr().out
    assert "curriculum at step 0: stage 1/3 'monolingual' (n_languages <= 1) until step 4" in printed
    assert "curriculum at step 4: stage 2/3 (n_languages <= 2) until step 8" in printed
    assert "curriculum at step 8: stage 3/3 (all rows)" in printed
    # the resumed run lands in stage 2 (announced again at its first step), then moves on
    stages = [(r["step"], r["reason"].split(" (")[0]) for r in metrics(run, "curriculum") if "reason" in r]
    assert stages == [(0, "stage 1/3 'monolingual'"), (4, "stage 2/3"), (6, "stage 2/3"), (8, "stage 3/3")]
    assert [r["stage"] for r in metrics(run, "curriculum") if "stage" in r] == [1, 2, 2, 3]
    assert [r["step"] for r in metrics(run, "resumed")] == [6]
    state = trainer_state(latest_checkpoint(run))
    assert state["step"] == 10 and state["position"]["stage"] == -1
    logged = metrics(run, "train")[-1]
    for name in ("language", "particle", "particle_prosody", "mel_mse", "language_acc", "particle_acc"):
        assert np.isfinite(logged[name]), name
    assert 0 <= logged["language_acc"] <= 1 and "val_language_acc" in metrics(run, "val")[-1]
    manifest = json.loads(open(f"{run}/final/model.json").read())
    assert manifest["build"]["n_particles"] == 10 and manifest["build"]["particle_head"]

    # a code-switched sentence: each word in its language, the particle marked
    from voxray.synthesize import load_voice, tagged_tokens

    voice = load_voice(f"{run}/final")
    tokens = tagged_tokens(voice, "Saya nak pergi shopping lah.", "ms")
    languages = voice.final.manifest["languages"]
    assert {languages[i] for i in tokens.languages} == {"ms", "en"} and 1 in tokens.particles
    out = tmp_path / "mixed.wav"
    assert cli.main(["synthesize", "--model", f"{run}/final", "--text", "Jom kita makan lunch dulu lah.",
                     "--speaker", "spk_f", "--language", "ms", "--out", str(out)]) == 0
    audio, _ = soundfile.read(out)
    assert audio.size > 0 and np.isfinite(audio).all()

    # evaluation of a code-switched store: the heads' accuracy and each particle's prosody
    from voxray.evaluate.run import evaluate

    summary = evaluate(codeswitch_store, str(tmp_path / "eval"), model=f"{run}/final", split="train", limit=3)
    assert summary["failed"] == 0 and 0 <= summary["metrics"]["language_accuracy"] <= 1
    assert 0 <= summary["metrics"]["particle_accuracy"] <= 1
    lah = summary["particles"]["lah"]           # cs_spk_f_001 and its augmented copy: "... shopping lah."
    assert lah["count"] >= 1 and lah["recorded"]["count"] == lah["count"]
    assert lah["expected"] == {"contours": ["rise-fall"], "duration_ratio": [1.2, 1.5]}
    assert set(lah["meets"]) == {"duration_ratio", "contour"} and lah["recorded"]["duration_ratio"] > 0
    assert "Discourse particles" in (tmp_path / "eval" / "report.html").read_text()


def test_heads_need_the_labels_of_a_code_switched_store(sample_store, tmp_path):
    config = load_config(CPU_CONFIG, ["loss.particle=0.2"])
    with pytest.raises(ValueError, match="loss.particle=0.2 needs a store with particle types"):
        acoustic.prepare(sample_store, str(tmp_path / "run"), config)


def test_sweeps_search_the_code_switching_weights_the_config_turns_on():
    space = acoustic.search_space(load_config(CPU_CONFIG, ["loss.particle_prosody=0.5", "loss.language=0.1"]))
    assert {"loss.particle_prosody", "loss.language"} <= set(space) and "loss.particle" not in space
    assert "loss.language" not in acoustic.search_space(load_config(CPU_CONFIG))


def test_lora_refuses_heads_its_base_lacks(base_run, codeswitch_store, tmp_path):
    config = load_config(CPU_CONFIG, [f"finetune.init_from={base_run}/final", "lora.rank=4", "loss.language=0.1"])
    with pytest.raises(ValueError, match="the base model has no language_head"):
        acoustic.prepare(codeswitch_store, str(tmp_path / "run"), config)


MS_PHASES = ["acoustic-ms-1-accent.yaml", "acoustic-ms-2-codeswitch.yaml", "acoustic-ms-3-particles.yaml",
             "acoustic-ms-4-speaker.yaml"]
ON_CPU = ["train.use_gpu=false", "deepspeed.precision=fp32", "train.num_workers=1", "train.cpus_per_worker=1",
          "train.batch_size=4", "train.grad_accum=1", "train.max_steps=2", "train.val_every=2", "train.warmup_steps=0",
          "train.max_failures=0"]


def test_the_malaysian_plan_runs_phase_by_phase_in_miniature(codeswitch_store, tmp_path):
    """The plan's own configs (jobs/configs/acoustic-ms-*.yaml) on the committed code-switched
    corpus, made CPU-sized by overrides only: main training (the tiny preset), then each LoRA r=16
    phase from the one before, two steps each; the particle phase's curriculum selects particle
    rows by the store's n_particles; the speaker phase exports an adapter alone."""
    from tests.conftest import REPO

    configs = REPO / "jobs" / "configs"
    previous = str(tmp_path / "main")
    assert cli.main(["train", "acoustic", "--data", codeswitch_store, "--output", previous, "--config",
                     str(configs / "acoustic-ms-pretrain.yaml"), *ON_CPU, "model.preset=tiny"]) == 0
    for name in MS_PHASES:
        config = load_config(str(configs / name))
        assert config.lora.rank == 16, name
        run = str(tmp_path / name.removesuffix(".yaml"))
        export = ["finetune.export=adapter"] if "speaker" in name else []       # as its header says
        assert cli.main(["train", "acoustic", "--data", codeswitch_store, "--output", run, "--config",
                         str(configs / name), *ON_CPU, f"finetune.init_from={previous}/final", *export]) == 0, name
        assert metrics(run, "val"), name
        previous = run
    assert sorted(p.name for p in (tmp_path / "acoustic-ms-4-speaker" / "final").iterdir()) == ["adapter"]
    stages = [r["reason"] for r in metrics(str(tmp_path / "acoustic-ms-3-particles"), "curriculum") if "reason" in r]
    assert stages and "n_particles >= 1" in stages[0]
