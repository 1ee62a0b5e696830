"""The talker recipe on a real local Ray: the tiny talker trained on the sample store encoded with
voxray's mel codec (2 workers, ZeRO-3), spoken through the codec and the session's vocoder from
the CLI; LoRA/DoRA fine-tuning from its export, stopped and resumed."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, TALKER_CPU_CONFIG
from tests.train.conftest import latest_checkpoint, metrics
from voxray import cli
from voxray.config import load_config
from voxray.export import read_final
from voxray.data.store import arrow_rows, read_split
from voxray.train.recipes import talker

pytestmark = pytest.mark.integration


def test_the_talker_learns_exports_and_speaks(talker_run, codes_store, codec_folder, vocoder_run, tmp_path, capsys):
    val = metrics(talker_run, "val")
    assert [v["step"] for v in val] == [30, 60]
    uniform = math.log(65) + 0.3 * math.log(64)          # val_ce of a model that knows nothing (64 codes + end)
    assert val[-1]["val_ce"] < 0.95 * uniform, [v["val_ce"] for v in val]
    assert val[-1]["val_acc_0"] > 3 / 64
    assert {f"val_ce_{k}" for k in range(4)} | {f"val_acc_{k}" for k in range(4)} <= set(val[-1])
    train_log = metrics(talker_run, "train")
    assert {"total", "text", "ce_0", "ce_3", "acc_0", "acc_3", "code_frames_per_s", "lr"} <= set(train_log[-1])
    checkpoint = latest_checkpoint(talker_run)
    for rank in (0, 1):                                   # ZeRO-3: each rank's partition of the weights
        assert os.path.exists(f"{checkpoint}/ds/model/zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
    manifest = json.loads(Path(talker_run, "final", "model.json").read_text())
    assert manifest["family"] == "talker" and manifest["codec"]["codec"] == codec_folder
    assert manifest["codec"]["n_codebooks"] == 4 and manifest["build"]["codebook_head"] == "depth"
    assert 0.5 < manifest["frames_per_token"] < 3

    out = tmp_path / "hello.wav"
    assert cli.main(["synthesize", "--model", f"{talker_run}/final", "--vocoder", f"{vocoder_run}/final",
                     "--text", "Hello there.", "--out", str(out), "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    frames = int(printed.split(" code frames")[0].rsplit(" ", 1)[1])
    audio, rate = soundfile.read(out)
    assert rate == 22050 and len(audio) == frames * 4 * 256 and 0 < frames
    assert cli.main(["synthesize", "--model", f"{talker_run}/final", "--text", "Hello.", "--speaker", "nobody",
                     "--out", str(out)]) == 2
    assert "unknown speaker 'nobody'" in capsys.readouterr().err
    assert cli.main(["synthesize", "--model", f"{talker_run}/final", "--text", "Hello.", "--ref-audio", str(out),
                     "--out", str(out)]) == 2
    assert "knows its speakers by id (model.conditioning=table): use --speaker" in capsys.readouterr().err


def test_a_store_without_codes_is_refused_by_name(sample_store, tmp_path):
    with pytest.raises(ValueError, match="has no audio codes: give audio_codes in the manifest, or encode"):
        talker.prepare(sample_store, str(tmp_path / "run"), load_config(TALKER_CPU_CONFIG))


def test_dora_adapters_fine_tune_stop_resume_and_load_on_the_base(talker_run, codes_store, tmp_path, capsys):
    """DoRA with separate attention / feed-forward ranks from the talker's export, stopped at step 4
    and resumed to 8 from the adapters-only checkpoint (peft's key names must match on resume),
    equal to 8 steps straight; exported adapter-only, then loaded on the base by synthesize --adapter."""
    from voxray.synthesize import load_talker

    run, straight = str(tmp_path / "dora"), str(tmp_path / "straight")
    common = [f"finetune.init_from={talker_run}/final", "finetune.export=adapter", "lora.rank=4", "lora.ff_rank=2",
              "lora.dora=true", "lora.dropout=0.1", "train.val_every=4", "train.log_every=2", "train.max_failures=0",
              "train.warmup_steps=0", "train.adapter_lr=5e-3", "train.schedule=constant"]
    for output, steps in ((run, 4), (run, 8), (straight, 8)):
        assert cli.main(["train", "talker", "--data", codes_store, "--output", output, "--config", TALKER_CPU_CONFIG,
                         f"train.max_steps={steps}", *common]) == 0
    assert [r["step"] for r in metrics(run, "resumed")] == [4]
    assert [v["step"] for v in metrics(run, "val")] == [4, 8]
    resumed, uninterrupted = metrics(run, "train"), metrics(straight, "train")
    assert [r["step"] for r in resumed] == [r["step"] for r in uninterrupted] == [2, 4, 6, 8]
    for a, b in zip(resumed, uninterrupted):                   # the same batches, dropout masks and updates
        assert a["total"] == pytest.approx(b["total"], rel=1e-4) and a["ce_0"] == pytest.approx(b["ce_0"], rel=1e-4)
    assert metrics(run, "val")[-1]["val_ce"] == pytest.approx(metrics(straight, "val")[-1]["val_ce"], rel=1e-4)
    adapter = Path(run, "final", "adapter")
    assert sorted(p.name for p in Path(run, "final").iterdir()) == ["adapter"]
    saved = json.loads((adapter / "adapter.json").read_text())
    assert saved["lora"]["dora"] is True and saved["lora"]["ff_rank"] == 2
    assert (adapter / "adapter.safetensors").stat().st_size < 0.5 * Path(talker_run, "final", "model.safetensors").stat().st_size
    base = load_file(f"{talker_run}/final/model.safetensors")
    tuned = load_talker(f"{talker_run}/final", adapter=str(adapter)).model.state_dict()
    assert set(tuned) == set(base)                              # merged: no adapter keys left
    changed = [k for k in base if not torch.equal(tuned[k], base[k])]
    assert any(".attn.qkv." in k for k in changed) and any(".ffn.up." in k for k in changed)
    assert not any("code_embeddings" in k or k.startswith("heads.") for k in changed)    # frozen
    out = tmp_path / "x.wav"
    assert cli.main(["synthesize", "--model", f"{talker_run}/final", "--adapter", str(adapter), "--text", "Hello.",
                     "--out", str(out), "--seed", "0", "--max-length-factor", "1"]) == 0
    assert cli.main(["synthesize", "--model", f"{talker_run}/final", "--adapter", str(tmp_path), "--text", "Hello.",
                     "--out", str(out)]) == 2
    assert "is not an adapter export" in capsys.readouterr().err

def test_adalora_prunes_to_its_budget_survives_a_killed_rank_and_exports_merged(talker_run, codes_store, tmp_path,
                                                                                monkeypatch):
    """AdaLoRA from the talker's export on 2 workers at ZeRO-2: rank 1 killed after step 6, the run
    resumes from step 4 with the allocator's state from the checkpoint and finishes; the adapters'
    live singular values fall from lora.rank to lora.target_rank per module by the end, the
    logged loss is the one of the uninterrupted steps, and final/ holds the merged plain talker."""
    from voxray.train.worker import KILL_ENV

    run = str(tmp_path / "adalora")
    monkeypatch.setenv(KILL_ENV, "1:6")
    assert cli.main(["train", "talker", "--data", codes_store, "--output", run, "--config", TALKER_CPU_CONFIG,
                     f"finetune.init_from={talker_run}/final", "lora.rank=4", "lora.adalora=true",
                     "lora.target_rank=1", "lora.adalora_warmup=2", "lora.adalora_final=2", "lora.adalora_interval=1",
                     "deepspeed.zero_stage=2", "train.num_workers=2", "train.max_steps=10", "train.val_every=4",
                     "train.log_every=2",
                     "train.max_failures=1", "train.warmup_steps=0", "train.adapter_lr=5e-3"]) == 0
    assert [r["step"] for r in metrics(run, "resumed")] == [4]
    ranks = {r["step"]: r["adalora_ranks"] for r in metrics(run, "train")}
    modules = ranks[2] / 4                                     # lora.rank live per adapted module at first
    assert modules == int(modules) and modules >= 4, ranks
    assert ranks[10] == modules * 1, ranks                     # lora.target_rank per module at the end
    assert ranks[2] > ranks[6] > ranks[10], ranks
    assert Path(latest_checkpoint(run), "extra", "adalora_model.pt").exists()
    final = read_final(f"{run}/final", family="talker")
    assert not any("lora_" in name for name in final.weights)     # merged into the plain weights
    base = load_file(f"{talker_run}/final/model.safetensors")
    assert any(not torch.equal(final.weights[k], base[k]) for k in base if ".attn.qkv." in k)


def test_references_come_from_ref_audio_else_the_same_speaker():
    rows = [{"source": "a.wav", "ref_audio": "c.wav", "speaker_index": 0},
            {"source": "b.wav", "ref_audio": None, "speaker_index": 0},
            {"source": "c.wav", "ref_audio": None, "speaker_index": 1},
            {"source": "d.wav", "ref_audio": None, "speaker_index": 2}]
    assert talker.references(rows, None) == [2, 0, None, None]
    assert talker.references(rows, np.random.default_rng(0))[1] == 0


def test_a_prompted_talker_speaks_from_a_reference_recording(codes_store, codec_folder, vocoder_run, tmp_path, capsys):
    """An (untrained) in-context talker exported next to the session codec: the reference
    recording is cleaned, encoded by the codec and leads the generation; the wrong way of giving
    a voice is refused by name."""
    config = load_config(TALKER_CPU_CONFIG, ["model.conditioning=prompt", "model.reference_frames=16"])
    plan = talker.prepare(codes_store, str(tmp_path / "run"), config)
    rows = arrow_rows(read_split(codes_store, "val", columns=talker.columns(plan.config)))
    batch = talker.collate(plan, [rows[0], rows[0]])              # one speaker: each prompts the other
    assert batch["prompt_frames"].tolist() == [min(16, len(rows[0]["audio_codes"]))] * 2
    assert int(batch["token_lengths"][0]) == 2 * len(rows[0]["token_ids"])
    torch.manual_seed(0)
    talker.export(plan, talker.build_model(plan), 0, 1.2)
    final = str(tmp_path / "run" / "final")
    out, wav = tmp_path / "x.wav", next((REPO / "corpus" / "sample" / "wavs").glob("*.wav"))
    common = ["synthesize", "--model", final, "--text", "Hello.", "--out", str(out), "--seed", "0"]
    assert cli.main([*common, "--ref-audio", str(wav), "--ref-text", "Some words.",
                     "--vocoder", f"{vocoder_run}/final", "--max-length-factor", "1"]) == 0
    assert soundfile.read(out)[1] == 22050
    assert cli.main([*common, "--ref-audio", str(wav)]) == 2
    assert "needs the reference's words: give --ref-text" in capsys.readouterr().err
    assert cli.main([*common, "--ref-audio", str(tmp_path / "none.wav"), "--ref-text", "x"]) == 2
    assert "none.wav does not exist" in capsys.readouterr().err


def test_parameter_groups_set_rates_by_kind_and_depth():
    from voxray.models.talker import build

    train = load_config(TALKER_CPU_CONFIG, ["train.lr=1.0", "train.head_lr=0.5", "train.embedding_lr=2.0",
                                            "train.layer_decay=0.25", "train.weight_decay=0.1"]).train
    net = build("tiny", vocab_size=8, n_speakers=2, n_languages=1, n_codebooks=2, codebook_size=16)
    groups = {g["name"]: g for g in talker.parameter_groups(net, train, layers=2)}
    assert {name: g["lr"] for name, g in groups.items()} == {
        "embeddings": 2.0, "rest/depth1": 0.25, "rest/depth0+rest": 1.0, "heads": 0.5}
    assert groups["embeddings"]["weight_decay"] == 0.0 and groups["heads"]["weight_decay"] == 0.1
    assert sum(len(g["params"]) for g in groups.values()) == len(list(net.parameters()))
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[id(p)] for p in groups["rest/depth1"]["params"]} == {
        n for n in names.values() if n.startswith("decoder.blocks.0.")}
    defaults = talker.parameter_groups(net, load_config(TALKER_CPU_CONFIG).train, layers=2)
    assert [(g["name"], g["weight_decay"]) for g in defaults] == [("embeddings", 0.0), ("rest+heads", 0.1)]


def test_an_adapter_export_needs_adapters():
    from voxray.config import ConfigError

    with pytest.raises(ConfigError, match="finetune.export=adapter needs adapters"):
        load_config(TALKER_CPU_CONFIG, ["finetune.export=adapter"])


def test_lora_train_heads_trains_embeddings_and_heads_in_full_at_their_rates(talker_run, codes_store, tmp_path):
    """The IndexTTS2 recipe under LoRA: lora.train_heads puts the code embeddings and output heads
    in peft's modules_to_save (trained in full, at train.head_lr / embedding_lr); the adapter-only
    export carries them and loads on the base, merged."""
    from voxray.synthesize import load_talker

    config = load_config(TALKER_CPU_CONFIG, [f"finetune.init_from={talker_run}/final", "lora.rank=4",
                                             "lora.train_heads=true", "finetune.export=adapter", "train.lr=1.0",
                                             "train.adapter_lr=0.1", "train.head_lr=0.5", "train.embedding_lr=2.0"])
    plan = talker.prepare(codes_store, str(tmp_path / "run"), config)
    model = talker.build_model(plan)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(".heads.0.modules_to_save." in name for name in trainable)
    assert any(".code_embeddings.1.modules_to_save." in name for name in trainable)
    assert any("lora_A" in name for name in trainable)
    assert not any(".decoder.blocks.0.attn.qkv.base_layer." in name for name in trainable)       # the base stays
    groups = {g["name"]: g["lr"] for g in talker.parameter_groups(model, plan.config.train, 2)}
    assert groups["adapters"] == 0.1 and groups["heads"] == 0.5 and groups["embeddings"] == 2.0, groups
    with torch.no_grad():                                    # as if trained: the heads moved in full
        for name, parameter in model.named_parameters():
            if ".heads.0.modules_to_save." in name:
                parameter.add_(1.0)
    talker.export(plan, model, 0, 1.2)
    adapter = tmp_path / "run" / "final" / "adapter"
    assert json.loads((adapter / "adapter.json").read_text())["modules_to_save"][:1] == ["code_embeddings.0"]
    base = load_file(f"{talker_run}/final/model.safetensors")
    tuned = load_talker(f"{talker_run}/final", adapter=str(adapter)).model.state_dict()
    assert set(tuned) == set(base)
    assert torch.allclose(tuned["heads.0.weight"], base["heads.0.weight"] + 1.0)
