"""LoRA fine-tuning of the trained tiny base model to a new speaker and a new language (Hausa,
character G2P: tokens the base model never saw), on a real local Ray with DeepSpeed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import make_ljspeech, sample_lines
from tests.train.conftest import CPU_CONFIG, latest_checkpoint, metrics, train, trainer_state
from voxray.config import load_config
from voxray.data.pipeline import preprocess
from voxray.models.acoustic import fastspeech2
from voxray.synthesize import load_voice, synthesize
from voxray.train.recipes import acoustic
from voxray.train.ema import EMA

pytestmark = pytest.mark.integration
TARGETED = re.compile(acoustic.LORA_TARGETS[:-1] + r"\.weight$")


@pytest.fixture(scope="module")
def hausa_store(ray_cluster, tmp_path_factory) -> str:
    """16 sample utterances relabelled as a new speaker speaking Hausa."""
    lines = []
    for line in sample_lines(16, language="en-us"):
        fields = line.split("|")
        lines.append("|".join([*fields[:3], "spk_new", "ha"]))
    folder = make_ljspeech(tmp_path_factory.mktemp("hausa") / "corpus", lines)
    store = str(folder.parent / "store")
    preprocess(str(folder), store, load_config())
    return store


@pytest.fixture(scope="module")
def lora_run(base_run, hausa_store, tmp_path_factory) -> tuple[str, list[str]]:
    run = str(tmp_path_factory.mktemp("lora") / "run")
    overrides = [f"finetune.init_from={base_run}/final", "lora.rank=4", "train.val_every=10", "train.batch_size=4"]
    train(hausa_store, run, "train.max_steps=10", *overrides)
    train(hausa_store, run, "train.max_steps=20", *overrides)        # resumes with the adapters
    return run, overrides


def test_lora_resumes_and_trains_only_adapters_and_new_rows(base_run, hausa_store, lora_run):
    run, overrides = lora_run
    state = trainer_state(latest_checkpoint(run))
    assert state["step"] == 20 and state["restarts"] == 1
    assert [r["step"] for r in metrics(run, "resumed")] == [10]

    plan = acoustic.prepare(hausa_store, run, load_config(CPU_CONFIG, ["train.max_steps=20", *overrides]))
    assert plan.added["token_embedding"] and plan.added["speaker_embedding"] == [2]
    assert plan.added["language_embedding"] == [2] and plan.speakers == ["spk_f", "spk_m", "spk_new"]
    model = acoustic.build_model(plan)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens_delta" in n for n in trainable), trainable

    base = load_file(f"{base_run}/final/model.safetensors")
    tuned = load_file(f"{run}/final/model.safetensors")
    assert set(base) == set(tuned)
    changed = {name for name in base if base[name].shape != tuned[name].shape
               or not torch.equal(base[name], tuned[name])}
    assert changed >= {name for name in base if TARGETED.match(name)}    # adapters merged in
    embeddings = {"token_embedding.weight", "speaker_embedding.weight", "language_embedding.weight"}
    assert changed - embeddings == {name for name in base if TARGETED.match(name)}
    for name in embeddings:                       # known rows unchanged, new rows trained
        rows = base[name].shape[0]
        assert torch.equal(tuned[name][:rows], base[name])
        assert tuned[name].shape[0] > rows


def test_merged_export_matches_the_adapter_model(hausa_store, lora_run):
    run, overrides = lora_run
    plan = acoustic.prepare(hausa_store, run, load_config(CPU_CONFIG, ["train.max_steps=20", *overrides]))
    adapter_model = acoustic.build_model(plan)
    ema = EMA(adapter_model, 0.999)
    ema.load_state_dict(load_file(f"{latest_checkpoint(run)}/ema/model.safetensors"))
    ema.copy_to(adapter_model)
    adapter_model.eval()
    manifest = json.loads(open(f"{run}/final/model.json").read())
    merged = fastspeech2.build(**manifest["build"])
    merged.load_state_dict(load_file(f"{run}/final/model.safetensors"))
    merged.eval()
    new_tokens = plan.added["token_embedding"]
    tokens = torch.tensor([[*new_tokens[:6], 4, 5, 6, *new_tokens[:3]]])
    args = (tokens, torch.tensor([tokens.shape[1]]), torch.tensor([2]), torch.tensor([2]))
    with torch.no_grad():
        mel_a, lengths_a = adapter_model.base_model.model.infer(*args)
        mel_b, lengths_b = merged.infer(*args)
    assert torch.equal(lengths_a, lengths_b)
    torch.testing.assert_close(mel_a, mel_b, atol=1e-4, rtol=1e-4)


def test_finetuned_voice_speaks_the_new_language(lora_run):
    run, _ = lora_run
    voice = load_voice(f"{run}/final")
    audio, mel = synthesize(voice, "Sannu da zuwa", speaker="spk_new", language="ha")
    assert np.isfinite(audio).all() and len(audio) == len(mel) * 256 and len(mel) > 5
    audio, _ = synthesize(voice, "Hello there.", speaker="spk_f", language="en-us")   # base voices kept
    assert np.isfinite(audio).all()


def test_adapter_only_export_speaks_on_its_base(base_run, hausa_store, lora_run, tmp_path, capsys):
    """The same trained adapters exported alone (finetune.export=adapter): the base model plus the
    adapter says what the merged export says; the CLI takes --adapter for acoustic models too."""
    from voxray import cli

    run, overrides = lora_run
    config = load_config(CPU_CONFIG, ["train.max_steps=20", *overrides, "finetune.export=adapter"])
    voice_run = str(tmp_path / "voice")
    plan = acoustic.prepare(hausa_store, voice_run, config)
    model = acoustic.build_model(plan)
    ema = EMA(model, 0.999)
    ema.load_state_dict(load_file(f"{latest_checkpoint(run)}/ema/model.safetensors"))
    ema.copy_to(model)
    acoustic.export(plan, model.eval(), 20)
    adapter = f"{voice_run}/final/adapter"
    assert sorted(p.name for p in (tmp_path / "voice" / "final" / "adapter").iterdir()) == \
        ["adapter.json", "adapter.safetensors"]
    on_base = load_voice(f"{base_run}/final", adapter=adapter)
    merged = load_voice(f"{run}/final")
    assert on_base.final.manifest["speakers"] == merged.final.manifest["speakers"]
    _, mel_a = synthesize(on_base, "Sannu da zuwa", speaker="spk_new", language="ha")
    _, mel_b = synthesize(merged, "Sannu da zuwa", speaker="spk_new", language="ha")
    torch.testing.assert_close(mel_a, mel_b, atol=1e-4, rtol=1e-4)
    out = tmp_path / "hausa.wav"
    assert cli.main(["synthesize", "--model", f"{base_run}/final", "--adapter", adapter, "--text", "Sannu da zuwa",
                     "--speaker", "spk_new", "--language", "ha", "--out", str(out)]) == 0
    with pytest.raises(ValueError, match="finetune.export=adapter needs adapters"):
        load_config(CPU_CONFIG, ["finetune.export=adapter"])
