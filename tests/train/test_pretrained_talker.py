"""Pretrained talkers in the talker recipe, on tiny random models of the real upstream classes
(built from their config classes, written with ``save_pretrained``, with a BPE tokenizer trained
on the sample corpus): Sesame CSM's loss from store codes equals CSM's own processor path on
audio; it fine-tunes on 2 workers at ZeRO-3 with DoRA, stops and resumes, and its export loads
in transformers; what does not fit is refused by name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from tests.conftest import SAMPLE
from tests.train.conftest import latest_checkpoint, metrics
from voxray import cli
from voxray.codec import pretrained as pretrained_codecs
from voxray.config import ConfigError, load_config
from voxray.losses.talker import talker_losses
from voxray.models.pretrained.tiny import csm_folder
from voxray.models.pretrained.training import talker as pretrained_talker
from voxray.train.recipes import talker

LINES = [line.split("|")[1] for line in (SAMPLE / "metadata.csv").read_text().splitlines()]


@pytest.fixture(scope="module")
def csm(tmp_path_factory) -> dict[str, str]:
    """A tiny CSM (4 Mimi codebooks of 64) and its Mimi alone, as csm-1b and kyutai/mimi ship."""
    root = tmp_path_factory.mktemp("csm")
    return {"csm": csm_folder(str(root / "csm"), LINES, mimi_folder=str(root / "mimi")), "mimi": str(root / "mimi")}


@pytest.fixture(scope="module")
def mimi_store(csm, sample_store, tmp_path_factory) -> str:
    """The sample store encoded with the CSM's Mimi through the CLI."""
    store = str(tmp_path_factory.mktemp("mimi-codes") / "store")
    assert cli.main(["codec", "encode", "--codec", f"pretrained:mimi={csm['mimi']}", "--data", sample_store,
                     "--output", store]) == 0
    return store


def test_csm_loss_and_gradients_equal_its_processor_path(csm):
    """A row's turn built from store codes gives CSM's own inputs, loss and gradients (the processor
    encodes the same audio with the model's Mimi), with per-codebook targets shifted exactly once."""
    from transformers import AutoProcessor

    arch = pretrained_talker(csm["csm"])
    processor = AutoProcessor.from_pretrained(csm["csm"])
    model = arch.load()
    codec = pretrained_codecs.load(f"pretrained:mimi={csm['mimi']}")
    rng = np.random.default_rng(0)
    for samples, text, speaker in ((24000, LINES[0], 1), (31000, LINES[7], 0)):
        audio = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        turn = [{"role": str(speaker), "content": [{"type": "text", "text": text}, {"type": "audio", "path": audio}]}]
        inputs = processor.apply_chat_template(turn, tokenize=True, return_dict=True, output_labels=True)
        model.zero_grad()
        upstream = model(**inputs)
        upstream.loss.backward()
        expected = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

        codes = codec.encode({"audio": audio, "sample_rate": 24000})
        batch = arch.collate([{"audio_codes": codes, "text": text, "speaker_index": speaker}], rng=None)
        assert batch["input_ids"].tolist() == inputs["input_ids"].tolist()
        model.zero_grad()
        out = arch.forward(model, batch)
        parts = talker_losses(out, sub_codebooks=1.0)        # CSM's forward: backbone CE + depth-decoder CE
        parts["total"].backward()
        assert float(parts["total"]) == pytest.approx(float(upstream.loss), abs=1e-5)
        assert float(parts["ce_0"]) == pytest.approx(float(upstream.backbone_loss), abs=1e-5)
        got = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        assert set(got) == set(expected)
        assert max(float((got[k] - expected[k]).abs().max()) for k in got) < 1e-5
        # shifted once: codebook 0 of frame 0 is the first target (predicted at <|end_of_text|>),
        # the end frame the last; every frame and the end are learnt
        first_targets = out["codebooks"][0][1]
        assert first_targets[0] == codes[0, 0] and first_targets[-1] == arch.config["codebook_eos_token_id"]
        assert len(first_targets) == len(codes) + 1


def test_csm_depth_decoder_learns_a_share_of_frames(csm):
    """loss.depth_frames: codebook 0 keeps every frame, the depth decoder the drawn share (CSM's
    processor's -101 frames)."""
    arch = pretrained_talker(csm["csm"])
    codes = np.random.default_rng(0).integers(0, 64, (40, 4))
    row = {"audio_codes": codes, "text": LINES[0], "speaker_index": 0}
    labels = arch.collate([row], np.random.default_rng(1), depth_frames=0.25)["labels"][0]
    audio = labels[:, 0] != -100
    assert int(audio.sum()) == 41                                  # 40 frames + the end
    assert int((labels[:, 1:] != -100).all(-1).sum()) == 41 - int(40 * 0.75)


@pytest.mark.integration
def test_csm_fine_tunes_on_zero3_with_dora_resumes_and_loads_upstream(csm, mimi_store, tmp_path, capsys):
    """2 workers, ZeRO-3 (loaded partitioned), DoRA with the text embeddings and heads trained in
    full: stopped at step 4 and resumed to 8 equals 8 steps straight; the export is CSM's own layout
    (from_pretrained + generate); an adapter export of the same checkpoint on the base gives the
    merged export's logits."""
    from peft import PeftModel
    from transformers import AutoProcessor, CsmForConditionalGeneration

    run, straight = str(tmp_path / "csm-run"), str(tmp_path / "straight")
    common = [f"model.pretrained={csm['csm']}", "train.num_workers=2", "deepspeed.zero_stage=3", "lora.rank=4",
              "lora.dora=true", "lora.train_heads=true", "train.batch_size=4", "train.val_every=4",
              "train.log_every=2", "train.max_failures=0", "train.warmup_steps=0", "train.schedule=constant",
              "train.lr=3e-3", "train.ema_decay=0", "loss.depth_frames=0.5"]
    for output, steps in ((run, 4), (run, 8), (straight, 8)):
        assert cli.main(["train", "talker", "--data", mimi_store, "--output", output, f"train.max_steps={steps}",
                         *common]) == 0
    printed = capsys.readouterr().out
    assert "ZeRO-3" in printed and "resuming at step 4" in printed
    resumed, uninterrupted = metrics(run, "train"), metrics(straight, "train")
    assert [r["step"] for r in resumed] == [r["step"] for r in uninterrupted] == [2, 4, 6, 8]
    for a, b in zip(resumed, uninterrupted):            # same batches, depth-frame draws and updates
        assert a["total"] == pytest.approx(b["total"], rel=1e-4)
    val = metrics(run, "val")
    assert val[-1]["val_ce"] == pytest.approx(metrics(straight, "val")[-1]["val_ce"], rel=1e-4)
    assert val[-1]["val_ce_0"] < val[0]["val_ce_0"]
    checkpoint = latest_checkpoint(run)
    assert os.path.exists(f"{checkpoint}/ds/model/zero_pp_rank_1_mp_rank_00_model_states.pt")

    final = Path(run, "final")
    manifest = json.loads((final / "model.json").read_text())
    assert manifest["format"] == "transformers" and manifest["speaker_ids"] == {"spk_f": 0, "spk_m": 1}
    model = CsmForConditionalGeneration.from_pretrained(final).eval()
    base = CsmForConditionalGeneration.from_pretrained(csm["csm"]).eval()
    changed = {k for k, v in base.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert any("self_attn.q_proj" in k for k in changed) and "embed_text_tokens.weight" in changed
    assert not any(k.startswith("codec_model.") for k in changed)
    processor = AutoProcessor.from_pretrained(final)
    prompt = processor.apply_chat_template([{"role": "1", "content": [{"type": "text", "text": "Hello there."}]}],
                                           tokenize=True, return_dict=True)
    codes = model.generate(**prompt, max_new_tokens=4, do_sample=False, depth_decoder_do_sample=False)
    assert codes.shape[-1] == 4
    wav = tmp_path / "hello.wav"
    assert cli.main(["synthesize", "--model", str(final), "--speaker", "spk_m", "--text", "Hello there.",
                     "--out", str(wav), "--seed", "0", "--max-length-factor", "1"]) == 0
    audio, rate = soundfile.read(wav)
    assert rate == 22050 and len(audio) > 0
    assert cli.main(["synthesize", "--model", str(final), "--ref-audio", str(wav), "--text", "Hi.",
                     "--out", str(wav)]) == 2
    assert "knows its speakers by id: use --speaker" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(final), "--data", mimi_store, "--output", str(tmp_path / "eval"),
                     "--limit", "2"]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["utterances"] == 2 and evaluated["failed"] == 0 and evaluated["metrics"]["mcd_db"] > 0

    # the same checkpoint exported adapter-only: peft's folder on the base equals the merged model
    plan = talker.prepare(mimi_store, run, load_config(None, [*common, "finetune.export=adapter"], family="talker"),
                          open_run=False)
    talker.export_checkpoint(plan, checkpoint, 8, {}, str(tmp_path / "adapter-export"))
    assert (tmp_path / "adapter-export" / "adapter" / "adapter_config.json").exists()
    tuned = PeftModel.from_pretrained(CsmForConditionalGeneration.from_pretrained(csm["csm"]),
                                      str(tmp_path / "adapter-export" / "adapter")).eval()
    batch = pretrained_talker(csm["csm"]).collate(
        [{"audio_codes": np.random.default_rng(0).integers(0, 64, (12, 4)), "text": LINES[3], "speaker_index": 1}],
        rng=None)
    arch = pretrained_talker(csm["csm"])
    with torch.no_grad():
        merged_logits = arch.forward(model, batch)["codebooks"][0][0]
        adapter_logits = arch.forward(tuned, batch)["codebooks"][0][0]
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)


def test_what_does_not_fit_a_pretrained_talker_is_refused(csm, codes_store, tmp_path):
    """A store of another codec, a folder of another model, a folder missing tokenizer files, and
    settings that do not apply: each refused naming what is wrong."""
    config = load_config(None, [f"model.pretrained={csm['csm']}", "train.ema_decay=0"], family="talker")
    with pytest.raises(ValueError, match=r"speaks mimi codes .* this store's are .*'n_codebooks'.*voxray codec "
                                         r"encode --codec pretrained:mimi=FOLDER"):
        talker.prepare(codes_store, str(tmp_path / "run"), config)
    with pytest.raises(ValueError, match=r"holds a 'mimi' model; voxray fine-tunes pretrained talkers of the "
                                         r"kinds csm"):
        pretrained_talker(csm["mimi"])
    partial = tmp_path / "partial"
    shutil.copytree(csm["csm"], partial)
    (partial / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a complete csm model folder: tokenizer.json missing"):
        pretrained_talker(str(partial))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pretrained_talker(str(tmp_path / "nothing"))
    for override, named in [("finetune.init_from=x", "model.pretrained and finetune.init_from"),
                            ("train.ema_decay=0.99", "second full copy"),
                            ("model.conditioning=prompt", "model.conditioning set with model.pretrained"),
                            ("finetune.export=adapter", "needs adapters"),
                            ("deepspeed.precision=fp16", "runs on GPUs only"),
                            ("lora.rank=4 lora.dora=true model.checkpointing=true deepspeed.zero_stage=3",
                             "DoRA reads its adapter weights outside their forward")]:
        with pytest.raises(ConfigError, match=named):
            load_config(None, [f"model.pretrained={csm['csm']}", *override.split()], family="talker")
    with pytest.raises(ConfigError, match="lora.train_heads trains the heads in full next to LoRA adapters"):
        load_config(None, ["lora.train_heads=true"], family="talker")          # voxray's talker, no adapters


# ------------------------------------------------------------------------------------ Qwen3-TTS

@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> str:
    """A tiny Qwen3-TTS-12Hz Base (4 codebooks of 64) with its speech tokenizer, as Qwen ships it."""
    from voxray.models.pretrained.tiny import qwen3_tts_folder

    return qwen3_tts_folder(str(tmp_path_factory.mktemp("qwen3-tts") / "Qwen3-TTS-12Hz-tiny-Base"), LINES)


def recipe_layout(config: dict, text_ids: list[int], codes: np.ndarray) -> dict:
    """One row laid out as Qwen's finetuning/dataset.py writes it (its slices, read off the
    script): text channel, codec channel, codebook-0 labels, frame mask."""
    talker = config["talker_config"]
    n, t = len(text_ids), len(codes)
    length = n + t + 8
    ids = np.zeros((length, 2), dtype=np.int64)
    labels = np.full(length, -100)
    frames = np.zeros(length, dtype=bool)
    ids[:3, 0] = text_ids[:3]
    ids[3:7, 0] = config["tts_pad_token_id"]
    ids[7, 0] = config["tts_bos_token_id"]
    ids[8:8 + n - 3, 0] = text_ids[3:]
    ids[8 + n - 3, 0] = config["tts_eos_token_id"]
    ids[8 + n - 2:8 + n + t, 0] = config["tts_pad_token_id"]
    ids[3:8, 1] = [talker["codec_nothink_id"], talker["codec_think_bos_id"], talker["codec_think_eos_id"], 0,
                   talker["codec_pad_id"]]
    ids[8:8 + n - 2, 1] = talker["codec_pad_id"]
    ids[8 + n - 2, 1] = talker["codec_bos_id"]
    ids[8 + n - 1:8 + n - 1 + t, 1] = codes[:, 0]
    ids[8 + n - 1 + t, 1] = talker["codec_eos_token_id"]
    labels[8 + n - 1:8 + n - 1 + t] = codes[:, 0]
    labels[8 + n - 1 + t] = talker["codec_eos_token_id"]
    frames[8 + n - 1:8 + n - 1 + t] = True
    return {"input_ids": ids, "labels": labels, "frames": frames}


def test_qwen3_tts_inputs_and_loss_follow_the_recipe_shifted_once(qwen):
    """voxray's inputs are the recipe's layout, its speaker slot the model's own speaker encoder over
    the reference, its codebook-0 loss the talker's; the recipe's code-predictor term is the
    double-shifted cross-entropy (position j scored against codebook j+2), voxray's is shifted once."""
    import torch.nn.functional as F

    from voxray.models.pretrained.qwen3_tts_compat import import_qwen_tts

    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    arch = pretrained_talker(qwen)
    rng = np.random.default_rng(0)
    voice = (0.1 * rng.standard_normal(24000)).astype(np.float32)
    rows = [{"id": "a", "source": "a.wav", "ref_audio": "b.wav", "text": LINES[2], "speaker_index": 0,
             "audio_codes": rng.integers(0, 64, (11, 4)), "audio": voice, "sample_rate": 24000},
            {"id": "b", "source": "b.wav", "ref_audio": None, "text": LINES[9], "speaker_index": 0,
             "audio_codes": rng.integers(0, 64, (7, 4)), "audio": voice[:18000], "sample_rate": 24000}]
    batch = arch.collate(rows, rng=None)
    for i, row in enumerate(rows):
        expected = recipe_layout(arch.config, arch.text_ids(row["text"]), row["audio_codes"])
        length = len(expected["labels"])
        assert batch["input_ids"][i, :length].numpy().tolist() == expected["input_ids"].tolist()
        assert batch["labels"][i, :length].numpy().tolist() == expected["labels"].tolist()
        assert batch["codec_mask"][i, :length].numpy().tolist() == expected["frames"].tolist()
    model = Qwen3TTSForConditionalGeneration.from_pretrained(qwen).eval()       # with its speaker encoder
    mels = mel_spectrogram(torch.from_numpy(voice[:18000])[None], n_fft=1024, num_mels=128, sampling_rate=24000,
                           hop_size=256, win_size=1024, fmin=0, fmax=12000).transpose(1, 2)
    with torch.no_grad():
        recipe_speaker = model.speaker_encoder(mels)[0]
    assert torch.allclose(batch["speaker_embeddings"][0], recipe_speaker, atol=1e-5)    # a's reference is b

    out = arch.forward(model, batch)
    parts = talker_losses(out, sub_codebooks=0.3)
    hidden = model.talker(inputs_embeds=arch.embed(model, batch), attention_mask=batch["attention_mask"],
                          labels=batch["labels"], output_hidden_states=True)
    assert float(parts["ce_0"]) == pytest.approx(float(hidden.loss), abs=1e-5)
    frames = batch["codec_ids"][batch["sub_mask"]]
    logits, recipe_sub = model.talker.forward_sub_talker_finetune(
        frames, hidden.hidden_states[0][-1][:, :-1][batch["sub_mask"][:, 1:]])
    vocab = logits.shape[-1]
    double = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), frames[:, 2:].reshape(-1))
    once = F.cross_entropy(logits.reshape(-1, vocab), frames[:, 1:].reshape(-1))
    assert float(recipe_sub) == pytest.approx(float(double), abs=1e-5)
    assert float(out["upstream_loss"]) == pytest.approx(float(hidden.loss) + 0.3 * float(recipe_sub), abs=1e-5)
    sub = torch.stack([parts[f"ce_{k}"] for k in (1, 2, 3)]).mean()
    assert float(sub) == pytest.approx(float(once), abs=1e-5)
    assert float(parts["total"]) == pytest.approx(float(hidden.loss) + 0.3 * float(once), abs=1e-5)


@pytest.fixture(scope="module")
def qwen_store(qwen, sample_store, tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("qwen-codes") / "store")
    assert cli.main(["codec", "encode", "--codec", f"pretrained:qwen3-tts-12hz={qwen}/speech_tokenizer", "--data",
                     sample_store, "--output", store]) == 0
    return store


@pytest.mark.integration
def test_qwen3_tts_fine_tunes_on_zero3_with_dora_resumes_and_speaks_as_a_custom_voice(qwen, qwen_store, tmp_path,
                                                                                      capsys):
    """2 workers at ZeRO-3 with DoRA, stopped at step 3 and resumed to 6 = 6 steps straight; the
    export is Qwen's custom-voice layout: qwen_tts loads it, lists the store's speakers and speaks as
    one; each speaker's codec-embedding row is the speaker encoder's embedding of its reference
    recording; voxray synthesize speaks through its codec and voxray evaluate scores it."""
    from voxray.models.pretrained.qwen3_tts import embed_speaker, reference_audio, speaker_encoder
    from voxray.models.pretrained.qwen3_tts_compat import import_qwen_tts

    run, straight = str(tmp_path / "qwen-run"), str(tmp_path / "qwen-straight")
    common = [f"model.pretrained={qwen}", "train.num_workers=2", "deepspeed.zero_stage=3", "lora.rank=4",
              "lora.dora=true", "train.batch_size=4", "train.val_every=3", "train.log_every=3", "train.max_failures=0",
              "train.warmup_steps=0", "train.schedule=constant", "train.lr=3e-3"]
    for output, steps in ((run, 3), (run, 6), (straight, 6)):
        assert cli.main(["train", "talker", "--data", qwen_store, "--output", output, f"train.max_steps={steps}",
                         *common]) == 0
    assert [r["step"] for r in metrics(run, "resumed")] == [3]
    for a, b in zip(metrics(run, "train"), metrics(straight, "train")):   # the same references drawn, the same updates
        assert a["step"] == b["step"] and a["total"] == pytest.approx(b["total"], rel=1e-4)
    val = metrics(run, "val")
    assert {"val_ce", "val_ce_0", "val_ce_3"} <= set(val[-1])
    assert val[-1]["val_ce"] == pytest.approx(metrics(straight, "val")[-1]["val_ce"], rel=1e-4)
    final = Path(run, "final")
    config = json.loads((final / "config.json").read_text())
    assert config["tts_model_type"] == "custom_voice"
    rows = config["talker_config"]["spk_id"]
    assert rows == {"spk_f": 1016, "spk_m": 1017}                   # vocab_size - 72 on (3000 of 3072)
    import_qwen_tts()
    from qwen_tts import Qwen3TTSModel
    from safetensors.torch import load_file

    tts = Qwen3TTSModel.from_pretrained(str(final))
    assert sorted(tts.get_supported_speakers()) == ["spk_f", "spk_m"]
    wavs, rate = tts.generate_custom_voice(text="Hello there.", speaker="spk_m", language="english",
                                           max_new_tokens=6)
    assert rate == 24000 and len(wavs[0]) > 0
    weights = load_file(str(final / "model.safetensors"))
    assert not any(key.startswith("speaker_encoder.") for key in weights)
    encoder = speaker_encoder(qwen)
    for name, (audio, sample_rate) in reference_audio(qwen_store, ["spk_f", "spk_m"]).items():
        assert torch.allclose(weights["talker.model.codec_embedding.weight"][rows[name]],
                              embed_speaker(encoder, audio, sample_rate), atol=1e-5)
    wav = tmp_path / "q.wav"
    assert cli.main(["synthesize", "--model", str(final), "--speaker", "spk_f", "--text", "Hello there.",
                     "--out", str(wav), "--seed", "0", "--max-length-factor", "1"]) == 0
    assert "code frames" in capsys.readouterr().out
    assert cli.main(["evaluate", "--model", str(final), "--data", qwen_store, "--output", str(tmp_path / "eval"),
                     "--limit", "2"]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["utterances"] == 2 and evaluated["failed"] == 0


def test_a_store_of_another_codec_and_an_adapter_export_are_refused_for_qwen3_tts(qwen, mimi_store, qwen_store,
                                                                                   tmp_path):
    config = load_config(None, [f"model.pretrained={qwen}"], family="talker")
    with pytest.raises(ValueError, match=r"speaks qwen3-tts-12hz codes .*this store's are \{'name': 'mimi'"):
        talker.prepare(mimi_store, str(tmp_path / "run"), config)
    adapter = load_config(None, [f"model.pretrained={qwen}", "lora.rank=4", "finetune.export=adapter"], family="talker")
    with pytest.raises(ValueError, match="custom-voice export writes each speaker into config.json"):
        talker.prepare(qwen_store, str(tmp_path / "run"), adapter, open_run=False)


def test_sweeps_of_a_pretrained_talker_search_the_lora_rank_under_lora(csm):
    full = load_config(None, [f"model.pretrained={csm['csm']}"], family="talker")
    adapters = load_config(None, [f"model.pretrained={csm['csm']}", "lora.rank=8"], family="talker")
    assert "lora.rank" not in talker.search_space(full)
    assert {"train.lr", "loss.sub_codebooks"} <= set(talker.search_space(full))
    assert talker.search_space(adapters)["lora.rank"] == {"choice": [4, 8, 16, 32, 64]}
